"""Input checks, run before any kernel.

Metadata checks (shape, dtype, device) always run; they are free and trace under
``torch.compile``. Value checks (NaN/Inf, index range, zero or non-orthonormal directions) read
tensor contents, which costs a host sync: they run where data enters (eager calls with
``validate=True``, the table's setters) and never under compilation or CUDA-graph capture.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
INDEX_DTYPES = (torch.int32, torch.int64)


class SteerkitInputError(ValueError):
    """An argument of a steerkit op is not what the op expects."""


def fail(op: str, arg: str, msg: str):
    raise SteerkitInputError(f"steerkit.ops.{op}: argument '{arg}' {msg}")


def values_checkable(h: torch.Tensor) -> bool:
    """False while compiling or capturing a CUDA graph, when reading values is not allowed."""
    if torch.compiler.is_compiling():
        return False
    if h.is_cuda and torch.cuda.is_current_stream_capturing():
        return False
    return True


def activation(op: str, h) -> None:
    if not isinstance(h, torch.Tensor):
        fail(op, "h", f"must be a torch.Tensor, got {type(h).__name__}")
    if h.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        fail(op, "h", f"must be float32, float16 or bfloat16, got {h.dtype}")
    if h.dim() < 1 or h.shape[-1] == 0:
        fail(op, "h", f"must have shape [..., d] with d > 0, got {tuple(h.shape)}")


def same_device(op: str, arg: str, t: torch.Tensor, h: torch.Tensor) -> None:
    if t.device != h.device:
        fail(op, arg, f"is on {t.device} but h is on {h.device}")


def row_param(op: str, arg: str, p, h: torch.Tensor, validate: bool) -> None:
    """A scalar, or a floating tensor of shape h.shape[:-1] (one value per row)."""
    if isinstance(p, torch.Tensor):
        if p.dtype not in FLOAT_DTYPES:
            fail(op, arg, f"must be a floating tensor, got {p.dtype}")
        if tuple(p.shape) != tuple(h.shape[:-1]):
            fail(op, arg, f"must be a scalar or have shape h.shape[:-1] = {tuple(h.shape[:-1])}, got {tuple(p.shape)}")
        same_device(op, arg, p, h)
        if validate and values_checkable(h):
            finite(op, arg, p)
    elif isinstance(p, (float, int)) and not isinstance(p, bool):
        if not math.isfinite(p):
            fail(op, arg, f"must be finite, got {p}")
    else:
        fail(op, arg, f"must be a number or a tensor, got {type(p).__name__}")


def vector(op: str, arg: str, v, h: torch.Tensor, shape: Sequence[int], validate: bool) -> None:
    """A floating tensor of the given shape (-1: any size >= 1) on h's device, last dim d."""
    if not isinstance(v, torch.Tensor):
        fail(op, arg, f"must be a torch.Tensor, got {type(v).__name__}")
    if v.dtype not in FLOAT_DTYPES:
        fail(op, arg, f"must be a floating tensor, got {v.dtype}")
    ok = v.dim() == len(shape) and all(s == -1 and n >= 1 or s == n for s, n in zip(shape, v.shape))
    if not ok:
        want = "[" + ", ".join("n" if s == -1 else str(s) for s in shape) + "]"
        fail(op, arg, f"must have shape {want} (d = h.shape[-1] = {h.shape[-1]}), got {tuple(v.shape)}")
    same_device(op, arg, v, h)
    if validate and values_checkable(h):
        finite(op, arg, v)


def finite(op: str, arg: str, t: torch.Tensor) -> None:
    if t.numel() and not bool(torch.isfinite(t).all()):
        fail(op, arg, "contains NaN or Inf")


def index(op: str, arg: str, idx, h: torch.Tensor, n: int, validate: bool, allow_negative: bool = True) -> None:
    """Integer tensor of shape h.shape[:-1]; values < n (negative = untouched when allowed)."""
    if not isinstance(idx, torch.Tensor):
        fail(op, arg, f"must be a torch.Tensor, got {type(idx).__name__}")
    if idx.dtype not in INDEX_DTYPES:
        fail(op, arg, f"must be int32 or int64, got {idx.dtype}")
    if tuple(idx.shape) != tuple(h.shape[:-1]):
        fail(op, arg, f"must have shape h.shape[:-1] = {tuple(h.shape[:-1])}, got {tuple(idx.shape)}")
    same_device(op, arg, idx, h)
    if validate and values_checkable(h) and idx.numel():
        hi = int(idx.max())
        if hi >= n:
            fail(op, arg, f"has value {hi} but must be < {n} (the number of rows it selects from)")
        if not allow_negative and int(idx.min()) < 0:
            fail(op, arg, f"has negative value {int(idx.min())}; must be in [0, {n})")


def ortho_tolerance(dtype: torch.dtype) -> float:
    return 1e-3 if dtype in (torch.float32, torch.float64) else 2e-2


def directions(op: str, arg: str, u: torch.Tensor, validate: bool) -> None:
    """Every direction nonzero; several directions orthonormal once normalised."""
    if not (validate and values_checkable(u)):
        return
    u2 = u.detach().double().reshape(-1, u.shape[-1])
    norms = u2.norm(dim=-1)
    if bool((norms == 0).any()):
        fail(op, arg, f"has a zero direction (row {int((norms == 0).nonzero()[0])})")
    if u2.shape[0] > 1:
        units = u2 / norms[:, None]
        gram = units @ units.T
        err = float((gram - torch.eye(u2.shape[0], dtype=gram.dtype, device=gram.device)).abs().max())
        tol = ortho_tolerance(u.dtype)
        if err > tol:
            fail(op, arg, f"rows must be orthogonal (largest |u_i . u_j| for i != j after normalising is {err:.3g} > {tol})")


def no_overlap(op: str, arg: str, src: torch.Tensor, h: torch.Tensor) -> None:
    """src must not share memory with h (the kernel reads src while writing h)."""
    if torch.compiler.is_compiling():  # no data pointers while tracing
        return
    if src.untyped_storage().data_ptr() != h.untyped_storage().data_ptr() or src.numel() == 0 or h.numel() == 0:
        return

    def span(t: torch.Tensor):
        lo = t.data_ptr()
        hi = lo + sum((s - 1) * st for s, st in zip(t.shape, t.stride())) * t.element_size() + t.element_size()
        return lo, hi

    (a0, a1), (b0, b1) = span(src), span(h)
    if a0 < b1 and b0 < a1:
        fail(op, arg, "overlaps h in memory; pass a copy (src.clone())")


def config_table(op: str, h, config, table, kind: str, marker: str, validate: bool):
    """Checks shared by the per-row table ops (steer, sae_steer): ``table`` is a ``kind`` (it has
    ``tensors`` and ``marker``), as wide as h's rows and on h's device; ``config`` int32 ids in
    range. Returns the table's tensors."""
    activation(op, h)
    if not (hasattr(table, "tensors") and hasattr(table, marker)):
        fail(op, "table", f"must be a {kind}, got {type(table).__name__}")
    if table.d != h.shape[-1]:
        fail(op, "table", f"steers rows of width {table.d} but h has d = {h.shape[-1]}")
    if table.device != h.device:
        fail(op, "table", f"is on {table.device} but h is on {h.device}")
    if isinstance(config, torch.Tensor) and config.dtype != torch.int32:
        fail(op, "config", f"must be int32, got {config.dtype}")
    tensors = table.tensors()
    index(op, "config", config, h, tensors[0].shape[0], validate, allow_negative=False)
    return tensors
