import pytest
import torch

from helpers import (BACKENDS, DEVICE, DTYPES, FAST_BACKENDS, LAYOUTS, SHAPES, activation,
                     assert_matches_reference, assert_untouched, randn, run_both)
from steerkit import ops
from steerkit.ops import reference


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T,d", SHAPES)
@pytest.mark.parametrize("weight_kind", ["replace", "scalar", "per-row"])
def test_patch_matches_reference(backend, dtype, T, d, weight_kind):
    h = activation(T, d, dtype)
    src = randn(T + 3, d, dtype=dtype)
    idx = torch.randint(-1, T + 3, (T,), device=DEVICE)
    idx[0] = T + 2  # boundary
    weight = {"replace": 1.0, "scalar": 0.3, "per-row": torch.rand(T, device=DEVICE)}[weight_kind]
    ref = reference.patch(h.float(), src, idx, weight)
    a, b = run_both(lambda x, be: ops.patch_(x, src, idx, weight, backend=be),
                    lambda x, be: ops.patch(x, src, idx, weight, backend=be), h, backend)
    assert_matches_reference(a, ref, dtype)
    assert_matches_reference(b, ref, dtype)
    assert_untouched(a, h, idx < 0)
    if weight_kind == "replace":  # weight 1 copies the source rows exactly
        assert torch.equal(a[idx >= 0], src[idx[idx >= 0]])


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_patch_layouts(backend, layout):
    h = activation(9, 33, torch.float32, layout)
    src = randn(20, 40)[::2, :33]  # strided source rows
    idx = torch.randint(-1, 10, h.shape[:-1], device=DEVICE, dtype=torch.int32)
    ref = reference.patch(h, src, idx, 0.75)
    ops.patch_(h, src, idx, 0.75, backend=backend)
    assert_matches_reference(h, ref, torch.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_patch_out_of_range_is_untouched(backend):
    h = randn(16, 8)
    src = randn(2, 8)
    idx = torch.tensor([0, 1, 2, 99, -1, 2 ** 40, -(2 ** 40), 1] * 2, device=DEVICE)
    y = ops.patch(h, src, idx, backend=backend, validate=False)
    ok = (idx >= 0) & (idx < 2)
    assert_untouched(y, h, ~ok)
    assert torch.equal(y[ok], src[idx[ok]])


def test_patch_gradients():
    h = randn(6, 12).requires_grad_()
    src = randn(4, 12).requires_grad_()
    w = torch.rand(6, device=DEVICE).requires_grad_()
    idx = torch.tensor([3, -1, 0, 0, 2, -1], device=DEVICE)
    g = torch.randn(6, 12, device=DEVICE)
    want = torch.autograd.grad(reference.patch(h, src, idx, w), (h, src, w), g)
    for backend in BACKENDS:
        got = torch.autograd.grad(ops.patch(h, src, idx, w, backend=backend), (h, src, w), g)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b)
    # d/dw of row 0 = (src[3] - h[0]) . g[0]
    torch.testing.assert_close(want[2][0], ((src[3] - h[0]) * g[0]).sum().detach())
    assert float(want[2][1]) == 0.0  # untouched row
