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
def test_add_matches_reference(backend, dtype, T, d, per_row):
    h = activation(T, d, dtype)
    v = randn(d)
    alpha = randn(T) if per_row else 2.5
    ref = reference.add(h.float(), v, alpha)
    a, b = run_both(lambda x, be: ops.add_(x, v, alpha, backend=be),
                    lambda x, be: ops.add(x, v, alpha, backend=be), h, backend)
    assert_matches_reference(a, ref, dtype)
    assert_matches_reference(b, ref, dtype)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("vec_dtype", [torch.float64, torch.float16, torch.float32])
def test_add_layouts_and_param_dtypes(backend, layout, vec_dtype):
    h = activation(11, 72, torch.float32, layout)
    v = randn(72).to(vec_dtype)
    alpha = randn(*h.shape[:-1])
    ref = reference.add(h.float(), v, alpha)
    out = ops.add(h, v, alpha, backend=backend)
    ops.add_(h, v, alpha, backend=backend)
    assert_matches_reference(out, ref, torch.float32)
    assert_matches_reference(h, ref, torch.float32)


def test_add_gradients():
    h = randn(6, 10).requires_grad_()
    v = randn(10).requires_grad_()
    alpha = randn(6).requires_grad_()
    for backend in BACKENDS:
        y = ops.add(h, v, alpha, backend=backend)
        g = torch.randn_like(y)
        gh, gv, ga = torch.autograd.grad(y, (h, v, alpha), g)
        torch.testing.assert_close(gh, g)
        torch.testing.assert_close(gv, (g * alpha.detach()[:, None]).sum(0))
        torch.testing.assert_close(ga, g @ v.detach())
