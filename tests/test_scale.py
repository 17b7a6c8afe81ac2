import pytest
import torch

from helpers import (BACKENDS, DTYPES, FAST_BACKENDS, LAYOUTS, SHAPES, activation,
                     assert_matches_reference, randn, run_both)
from steerkit import ops
from steerkit.ops import reference


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T,d", SHAPES)
@pytest.mark.parametrize("per_row", [False, True])
def test_scale_matches_reference(backend, dtype, T, d, per_row):
    h = activation(T, d, dtype)
    s = randn(T) if per_row else -0.37
    ref = reference.scale(h.float(), s)
    a, b = run_both(lambda x, be: ops.scale_(x, s, backend=be), lambda x, be: ops.scale(x, s, backend=be), h, backend)
    assert_matches_reference(a, ref, dtype)
    assert_matches_reference(b, ref, dtype)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("param_dtype", [torch.float64, torch.float16])
def test_scale_layouts_and_param_dtypes(backend, layout, param_dtype):
    h = activation(13, 40, torch.float16, layout)
    base = h  # a view: in-place must write through it
    s = randn(*h.shape[:-1]).to(param_dtype)
    ref = reference.scale(h.float(), s)
    expect_other = None
    if layout in ("cols", "rows"):
        expect_other = h._base.clone()
    ops.scale_(base, s, backend=backend)
    assert_matches_reference(base, ref, torch.float16)
    if expect_other is not None:  # memory outside the view is untouched
        mask = torch.ones_like(h._base, dtype=torch.bool)
        if layout == "cols":
            mask[:, 3:3 + 40] = False
        else:
            mask[::2] = False
        assert torch.equal(h._base[mask], expect_other[mask])


def test_scale_gradients():
    h = randn(5, 16).requires_grad_()
    s = randn(5).requires_grad_()
    for backend in BACKENDS:
        y = ops.scale(h, s, backend=backend)
        g = torch.randn_like(y)
        gh, gs = torch.autograd.grad(y, (h, s), g)
        torch.testing.assert_close(gh, g * s.detach()[:, None])
        torch.testing.assert_close(gs, (g * h.detach()).sum(-1))
