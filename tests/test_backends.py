"""Backend choice: automatic order, STEERKIT_BACKEND, forced backends that refuse, explain()."""
import pytest
import torch

from helpers import DEVICE, GPU, randn
from steerkit import ops
from steerkit.ops import _backend


def test_explain_lists_every_backend_with_a_reason():
    h = randn(3, 8)
    verdict = ops.explain("steer", h)
    assert set(verdict) == {"cuda", "triton", "torch"}
    assert verdict["torch"] == "ok"
    if not GPU:
        assert "not a CUDA tensor" in verdict["cuda"]


def test_auto_on_cpu_is_the_reference():
    assert _backend.resolve("add", torch.randn(2, 4), None) == "torch"


@pytest.mark.skipif(GPU, reason="CPU-only behaviour")
def test_forced_backend_that_refuses_names_itself_and_the_reason():
    h = torch.randn(2, 4)
    with pytest.raises(ops.BackendError, match=r"backend 'cuda' cannot run steerkit.ops.scale.*not a CUDA tensor"):
        ops.scale_(h, 2.0, backend="cuda")


@pytest.mark.skipif(GPU, reason="CPU-only behaviour")
def test_environment_variable_forces_a_backend(monkeypatch):
    h = torch.randn(2, 4)
    monkeypatch.setenv("STEERKIT_BACKEND", "cuda")
    with pytest.raises(ops.BackendError, match="cuda"):
        ops.add_(h, torch.randn(4))
    monkeypatch.setenv("STEERKIT_BACKEND", "torch")
    before = h.clone()
    ops.add_(h, torch.ones(4))
    torch.testing.assert_close(h, before + 1)


def test_unknown_backend_is_a_clear_error(monkeypatch):
    with pytest.raises(ValueError, match="backend must be one of"):
        ops.scale(randn(2, 4), 1.0, backend="metal")
    monkeypatch.setenv("STEERKIT_BACKEND", "bogus")
    with pytest.raises(ValueError, match="bogus"):
        ops.scale(randn(2, 4), 1.0)


def test_triton_refusals(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert "TRITON_INTERPRET" in _backend._refuse("triton", "add", cpu, torch.float32, 8)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert _backend._refuse("triton", "add", cpu, torch.float32, 8) is None
    assert "exceeds" in _backend._refuse("triton", "steer", cpu, torch.float32, 1 << 20)
    assert "dtype" in _backend._refuse("triton", "add", cpu, torch.float64, 8)


@pytest.mark.skipif(not GPU, reason="needs a GPU")
def test_auto_on_gpu_is_a_fast_backend():
    assert _backend.resolve("steer", randn(2, 64), None) in ("cuda", "triton")
    assert DEVICE == "cuda"
