"""project_out_(h, u, value): set the component of h along each direction of u to value.

``u`` is [d] or [r, d]; the op normalises each direction; several directions must be orthonormal
once normalised (checked). ``value`` is a number or one value per direction ([r]). Applied in
order: ``h = h - (h . u_k - value_k) * u_k``. value = 0 is directional ablation.
"""
from __future__ import annotations

from typing import Optional

import torch

from . import _checks as C
from . import reference
from ._registry import call, register, rows_for_kernels


def _reference(h, u, value, value0):
    return reference.project_out(h, u, value0 if value is None else value)


def _prepare(x, u, value, value0):
    u2 = rows_for_kernels(u.reshape(-1, u.shape[-1]), x)
    return u2, None if value is None else value.reshape(-1).to(torch.float32).contiguous(), value0


register("project_out", "Tensor u, Tensor? value, float value0", _reference, _prepare)


def _params(op, h, u, value, validate):
    C.activation(op, h)
    d = h.shape[-1]
    if isinstance(u, torch.Tensor) and u.dim() == 1:
        C.vector(op, "u", u, h, [d], validate)
    else:
        C.vector(op, "u", u, h, [-1, d], validate)
    C.directions(op, "u", u, validate)
    r = 1 if u.dim() == 1 else u.shape[0]
    if isinstance(value, torch.Tensor):
        C.vector(op, "value", value.reshape(-1) if value.dim() == 0 else value, h, [r], validate)
        return u, value, 0.0
    C.row_param(op, "value", value, h, validate)
    return u, None, float(value)


def project_out_(h: torch.Tensor, u: torch.Tensor, value=0.0, *, backend: Optional[str] = None,
                 validate: bool = True) -> torch.Tensor:
    """In place. ``u``: [d] or [r, d]; ``value``: a number or [r]. Returns h."""
    return call("project_out", True, h, _params("project_out_", h, u, value, validate), backend)


def project_out(h: torch.Tensor, u: torch.Tensor, value=0.0, *, backend: Optional[str] = None,
                validate: bool = True) -> torch.Tensor:
    """Out of place (differentiable in h, u, value)."""
    return call("project_out", False, h, _params("project_out", h, u, value, validate), backend)
