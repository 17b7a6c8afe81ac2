"""scale_(h, s): h *= s, with s a scalar or one value per row (shape h.shape[:-1])."""
from __future__ import annotations

from typing import Optional

import torch

from . import _checks as C
from . import reference
from ._registry import call, per_row, register


def _reference(h, s, s0):
    return reference.scale(h, s0 if s is None else s)


def _prepare(x, s, s0):
    return per_row(s), s0


register("scale", "Tensor? s, float s0", _reference, _prepare)


def _params(op, h, s, validate):
    C.activation(op, h)
    C.row_param(op, "s", s, h, validate)
    return (s, 1.0) if isinstance(s, torch.Tensor) else (None, float(s))


def scale_(h: torch.Tensor, s, *, backend: Optional[str] = None, validate: bool = True) -> torch.Tensor:
    """In place: ``h *= s``. ``s``: a number or a tensor of shape ``h.shape[:-1]``. Returns h."""
    return call("scale", True, h, _params("scale_", h, s, validate), backend)


def scale(h: torch.Tensor, s, *, backend: Optional[str] = None, validate: bool = True) -> torch.Tensor:
    """Out of place (differentiable in h and s): ``h * s``."""
    return call("scale", False, h, _params("scale", h, s, validate), backend)
