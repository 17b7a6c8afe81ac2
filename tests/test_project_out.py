import pytest
import torch

from helpers import (BACKENDS, DTYPES, FAST_BACKENDS, LAYOUTS, SHAPES, activation,
                     assert_matches_reference, randn, run_both)
from steerkit import ops
from steerkit.ops import reference


def _directions(r, d):
    """r orthonormal directions (scaled: the op normalises), or one when r == 0 ([d] form)."""
    if r == 0:
        return randn(d) * 4.0
    q = torch.linalg.qr(torch.randn(d, r, dtype=torch.float64))[0].T
    return (q * torch.rand(r, 1, dtype=torch.float64).add(0.5)).float().to(randn(1).device)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T,d", SHAPES)
@pytest.mark.parametrize("r,value", [(0, 0.0), (1, 1.25), (3, "per-direction")])
def test_project_out_matches_reference(backend, dtype, T, d, r, value):
    if r > d:
        pytest.skip("more directions than dimensions")
    h = activation(T, d, dtype)
    u = _directions(r, d)
    if value == "per-direction":
        value = randn(r)
    ref = reference.project_out(h.float(), u, value)
    a, b = run_both(lambda x, be: ops.project_out_(x, u, value, backend=be),
                    lambda x, be: ops.project_out(x, u, value, backend=be), h, backend)
    assert_matches_reference(a, ref, dtype)
    assert_matches_reference(b, ref, dtype)


def test_project_out_semantics():
    """After the op the component along each unit direction equals its value (float32)."""
    h = randn(9, 64)
    u = _directions(3, 64)
    vals = randn(3)
    y = ops.project_out(h, u, vals)
    units = u / u.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(y @ units.T, vals.expand(9, 3), atol=1e-5, rtol=1e-5)
    # the orthogonal complement is unchanged
    p = torch.eye(64, device=h.device) - units.T @ units
    torch.testing.assert_close(y @ p, h @ p, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_project_out_layouts(backend, layout):
    h = activation(10, 96, torch.float32, layout)
    u = _directions(2, 96).half()  # directions in another dtype
    ref = reference.project_out(h.float(), u, 0.0)
    ops.project_out_(h, u, backend=backend)
    assert_matches_reference(h, ref, torch.float32)


def test_project_out_gradients_match_reference_autograd():
    h = randn(4, 32).requires_grad_()
    u = _directions(2, 32).requires_grad_()
    value = randn(2).requires_grad_()
    g = torch.randn(4, 32, device=h.device)
    want = torch.autograd.grad(reference.project_out(h, u, value), (h, u, value), g)
    for backend in FAST_BACKENDS:
        got = torch.autograd.grad(ops.project_out(h, u, value, backend=backend), (h, u, value), g)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b)
    # d y / d value_k = u_k (unit) summed against g over rows
    units = (u / u.norm(dim=-1, keepdim=True)).detach()
    torch.testing.assert_close(want[2], (g @ units.T).sum(0), atol=1e-5, rtol=1e-5)
