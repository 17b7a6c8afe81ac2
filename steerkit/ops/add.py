"""add_(h, v, alpha): h += alpha * v, with v of shape [d] and alpha a scalar or one value per row."""
from __future__ import annotations

from typing import Optional

import torch

from . import _checks as C
from . import reference
from ._registry import call, per_row, register, vector_for_kernels


def _reference(h, v, alpha, alpha0):
    return reference.add(h, v, alpha0 if alpha is None else alpha)


def _prepare(x, v, alpha, alpha0):
    return vector_for_kernels(v, x), per_row(alpha), alpha0


register("add", "Tensor v, Tensor? alpha, float alpha0", _reference, _prepare)


def _params(op, h, v, alpha, validate):
    C.activation(op, h)
    C.vector(op, "v", v, h, [h.shape[-1]], validate)
    C.row_param(op, "alpha", alpha, h, validate)
    return (v, alpha, 1.0) if isinstance(alpha, torch.Tensor) else (v, None, float(alpha))


def add_(h: torch.Tensor, v: torch.Tensor, alpha=1.0, *, backend: Optional[str] = None,
         validate: bool = True) -> torch.Tensor:
    """In place: ``h += alpha * v``. ``v``: [d]; ``alpha``: a number or one value per row. Returns h."""
    return call("add", True, h, _params("add_", h, v, alpha, validate), backend)


def add(h: torch.Tensor, v: torch.Tensor, alpha=1.0, *, backend: Optional[str] = None,
        validate: bool = True) -> torch.Tensor:
    """Out of place (differentiable in h, v, alpha): ``h + alpha * v``."""
    return call("add", False, h, _params("add", h, v, alpha, validate), backend)
