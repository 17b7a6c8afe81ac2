"""patch_(h, src, index, weight): activation patching and interpolation.

Rows with index[t] >= 0 become ``(1 - w) * h[t] + w * src[index[t]]``; rows with a negative
index are untouched. ``src`` is [S, d] and must not overlap h; ``weight`` is a number or one
value per row (1 = replace, 0 < w < 1 = interpolate).
"""
from __future__ import annotations

from typing import Optional

import torch

from . import _checks as C
from . import reference
from ._registry import call, per_row, register, rows_for_kernels


def _reference(h, src, index, weight, weight0):
    return reference.patch(h, src, index, weight0 if weight is None else weight)


def _prepare(x, src, index, weight, weight0):
    return rows_for_kernels(src, x), index.reshape(-1).contiguous(), per_row(weight), weight0


register("patch", "Tensor src, Tensor index, Tensor? weight, float weight0", _reference, _prepare)


def _params(op, h, src, index, weight, validate):
    C.activation(op, h)
    C.vector(op, "src", src, h, [-1, h.shape[-1]], validate)
    C.no_overlap(op, "src", src, h)
    C.index(op, "index", index, h, src.shape[0], validate)
    C.row_param(op, "weight", weight, h, validate)
    if isinstance(weight, torch.Tensor):
        return src, index, weight, 1.0
    return src, index, None, float(weight)


def patch_(h: torch.Tensor, src: torch.Tensor, index: torch.Tensor, weight=1.0, *,
           backend: Optional[str] = None, validate: bool = True) -> torch.Tensor:
    """In place. ``src``: [S, d]; ``index``: h.shape[:-1], < 0 = untouched. Returns h."""
    return call("patch", True, h, _params("patch_", h, src, index, weight, validate), backend)


def patch(h: torch.Tensor, src: torch.Tensor, index: torch.Tensor, weight=1.0, *,
          backend: Optional[str] = None, validate: bool = True) -> torch.Tensor:
    """Out of place (differentiable in h, src, weight)."""
    return call("patch", False, h, _params("patch", h, src, index, weight, validate), backend)
