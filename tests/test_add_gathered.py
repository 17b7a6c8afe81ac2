import pytest
import torch

from helpers import (BACKENDS, DEVICE, DTYPES, FAST_BACKENDS, LAYOUTS, SHAPES, activation,
                     assert_matches_reference, assert_untouched, randn, run_both)
from steerkit import ops
from steerkit.ops import reference


def _index(shape, n, dtype=torch.int64):
    """Repeated indices, both boundaries (0 and n - 1) and untouched rows (-1, -7)."""
    idx = torch.randint(-2, n, shape, device=DEVICE)
    flat = idx.view(-1)
    flat[: min(4, flat.numel())] = torch.tensor([0, n - 1, -1, -7], device=DEVICE)[: min(4, flat.numel())]
    return idx.to(dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T,d", SHAPES)
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("alpha_kind", ["none", "scalar", "per-row"])
def test_add_gathered_matches_reference(backend, dtype, T, d, index_dtype, alpha_kind):
    h = activation(T, d, dtype)
    bank = randn(5, d)
    idx = _index((T,), 5, index_dtype)
    alpha = {"none": None, "scalar": -0.5, "per-row": randn(T)}[alpha_kind]
    ref = reference.add_gathered(h.float(), bank, idx, alpha)
    a, b = run_both(lambda x, be: ops.add_gathered_(x, bank, idx, alpha, backend=be),
                    lambda x, be: ops.add_gathered(x, bank, idx, alpha, backend=be), h, backend)
    assert_matches_reference(a, ref, dtype)
    assert_matches_reference(b, ref, dtype)
    keep = idx < 0
    assert_untouched(a, h, keep)
    assert_untouched(b, h, keep)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_add_gathered_layouts(backend, layout):
    h = activation(12, 48, torch.float16, layout)
    bank = randn(9, 60, dtype=torch.float16)[:, 5:53]  # strided bank rows
    idx = _index(h.shape[:-1], 9, torch.int32)
    ref = reference.add_gathered(h.float(), bank, idx, 2.0)
    before = h.clone()
    ops.add_gathered_(h, bank, idx, 2.0, backend=backend)
    assert_matches_reference(h, ref, torch.float16)
    assert_untouched(h, before, idx < 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_add_gathered_out_of_range_is_untouched(backend):
    """Without validation, indices past the bank never read or write out of bounds."""
    h = randn(40, 24)
    bank = randn(3, 24)
    idx = torch.tensor([0, 1, 2, 3, 1000, 2 ** 31 - 1, -1, -(2 ** 31)] * 5, device=DEVICE, dtype=torch.int32)
    y = h.clone()
    ops.add_gathered_(y, bank, idx, backend=backend, validate=False)
    ok = (idx >= 0) & (idx < 3)
    assert_untouched(y, h, ~ok)
    torch.testing.assert_close(y[ok], h[ok] + bank[idx[ok].long()])


def test_add_gathered_gradients():
    h = randn(8, 16).requires_grad_()
    bank = randn(3, 16).requires_grad_()
    alpha = randn(8).requires_grad_()
    idx = torch.tensor([0, 2, -1, 2, 2, 1, -1, 0], device=DEVICE)
    g = torch.randn(8, 16, device=DEVICE)
    want = torch.autograd.grad(reference.add_gathered(h, bank, idx, alpha), (h, bank, alpha), g)
    for backend in BACKENDS:
        got = torch.autograd.grad(ops.add_gathered(h, bank, idx, alpha, backend=backend), (h, bank, alpha), g)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b)
    # bank row 2 receives the alpha-weighted gradient of rows 1, 3, 4
    torch.testing.assert_close(want[1][2], (alpha.detach()[[1, 3, 4], None] * g[[1, 3, 4]]).sum(0))
