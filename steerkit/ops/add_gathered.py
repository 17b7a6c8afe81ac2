"""add_gathered_(h, bank, index, alpha): row t gets alpha[t] * bank[index[t]] added.

``index`` (int32/int64, shape h.shape[:-1]) < 0 leaves the row bit-identical; ``alpha`` is None
(1), a number, or one value per row.
"""
from __future__ import annotations

from typing import Optional

import torch

from . import _checks as C
from . import reference
from ._registry import call, per_row, register, rows_for_kernels


def _reference(h, bank, index, alpha, alpha0):
    return reference.add_gathered(h, bank, index, alpha0 if alpha is None else alpha)


def _prepare(x, bank, index, alpha, alpha0):
    return rows_for_kernels(bank, x), index.reshape(-1).contiguous(), per_row(alpha), alpha0


register("add_gathered", "Tensor bank, Tensor index, Tensor? alpha, float alpha0", _reference, _prepare)


def _params(op, h, bank, index, alpha, validate):
    C.activation(op, h)
    C.vector(op, "bank", bank, h, [-1, h.shape[-1]], validate)
    C.index(op, "index", index, h, bank.shape[0], validate)
    if alpha is None:
        alpha = 1.0
    C.row_param(op, "alpha", alpha, h, validate)
    if isinstance(alpha, torch.Tensor):
        return bank, index, alpha, 1.0
    return bank, index, None, float(alpha)


def add_gathered_(h: torch.Tensor, bank: torch.Tensor, index: torch.Tensor, alpha=None, *,
                  backend: Optional[str] = None, validate: bool = True) -> torch.Tensor:
    """In place. ``bank``: [B, d]; ``index``: h.shape[:-1], < 0 = untouched. Returns h."""
    return call("add_gathered", True, h, _params("add_gathered_", h, bank, index, alpha, validate), backend)


def add_gathered(h: torch.Tensor, bank: torch.Tensor, index: torch.Tensor, alpha=None, *,
                 backend: Optional[str] = None, validate: bool = True) -> torch.Tensor:
    """Out of place (differentiable in h, bank, alpha)."""
    return call("add_gathered", False, h, _params("add_gathered", h, bank, index, alpha, validate), backend)
