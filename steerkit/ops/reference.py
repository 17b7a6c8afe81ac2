"""Pure-PyTorch definition of every steerkit op.

This file *is* the specification: the CPU path, the oracle every fast path is tested against,
the baseline of the benchmarks, and what the ops lower to under ``torch.compile`` (where
Inductor fuses it into neighbouring kernels). No speed tricks here.

Conventions shared by all ops:
- ``x`` is the activation, any leading shape ``[..., d]``; every function returns a new tensor
  of ``x``'s dtype and shape. Math is float32: inputs are upcast, the result is rounded once.
- Per-row parameters (``s``, ``alpha``, ``weight``, ``index``, ``config``) have shape
  ``x.shape[:-1]``; a Python float means "the same for every row".
- Rows that an op leaves untouched (negative or out-of-range index, configuration 0) come back
  bit-identical: they are selected from ``x`` itself, never recomputed.
"""
from __future__ import annotations

from typing import Optional, Union

import torch

Scalar = Union[float, int]
RowParam = Union[Scalar, torch.Tensor]

# Bits of SteeringTable.flags (kept here so every layer agrees on them).
FLAG_DYNAMIC = 1  # apply the dynamic scale (w . x + b)
FLAG_VECTOR = 2  # add strength * vector
# a steering table's tensors, in the order steer() and the kernels take them (one list for the
# table, its stack and the op)
TABLE_TENSORS = ("scale", "flags", "dyn_w", "dyn_b", "dirs", "dir_val", "n_dirs", "vec", "strength")


def _row(p: RowParam, x: torch.Tensor):
    """A per-row parameter as float32 of shape x.shape[:-1] + (1,); a scalar stays a Python float
    (no host-to-device copy, so the reference can be captured in a CUDA graph)."""
    if isinstance(p, torch.Tensor):
        return p.to(device=x.device, dtype=torch.float32).unsqueeze(-1)
    return float(p)


def _touched(index: torch.Tensor, n: int) -> torch.Tensor:
    """Rows whose index selects one of n entries, as a [..., 1] bool mask."""
    return ((index >= 0) & (index < n)).unsqueeze(-1)


def _safe_index(index: torch.Tensor, n: int) -> torch.Tensor:
    """Index clamped into [0, n) so that a gather never goes out of bounds (masked later)."""
    return index.long().clamp(0, max(n - 1, 0))


def scale(x: torch.Tensor, s: RowParam) -> torch.Tensor:
    """``x * s``; ``s`` a scalar or one value per row."""
    return (x.float() * _row(s, x)).to(x.dtype)


def add(x: torch.Tensor, v: torch.Tensor, alpha: RowParam = 1.0) -> torch.Tensor:
    """``x + alpha * v``; ``v`` of shape [d], ``alpha`` a scalar or one value per row."""
    return (x.float() + _row(alpha, x) * v.float()).to(x.dtype)


def unit_rows(u: torch.Tensor) -> torch.Tensor:
    """Directions [d] or [r, d] as float32 unit rows [r, d]."""
    u = u.float().reshape(-1, u.shape[-1])
    return u / u.norm(dim=-1, keepdim=True)


def project_out(x: torch.Tensor, u: torch.Tensor, value: RowParam = 0.0) -> torch.Tensor:
    """Set the component of every row along each direction of ``u`` to ``value``.

    ``u`` is [d] or [r, d] (normalised here; rows orthonormal for r > 1); ``value`` a scalar or
    one value per direction ([r]). Directions are applied one after the other:
    ``y = y - (y . u_k - value_k) * u_k``. With value 0 this is directional ablation.
    """
    units = unit_rows(u)
    r = units.shape[0]
    if isinstance(value, torch.Tensor):
        values = value.to(device=x.device, dtype=torch.float32).reshape(r)
    else:
        values = torch.full((r,), float(value), dtype=torch.float32, device=x.device)
    y = x.float()
    for k in range(r):
        coef = (y * units[k]).sum(-1, keepdim=True) - values[k]
        y = y - coef * units[k]
    return y.to(x.dtype)


def add_gathered(
    x: torch.Tensor, bank: torch.Tensor, index: torch.Tensor, alpha: Optional[RowParam] = None
) -> torch.Tensor:
    """Row t gets ``alpha[t] * bank[index[t]]`` added; rows with index < 0 (or >= len(bank)) are
    untouched. ``alpha`` defaults to 1."""
    n = bank.shape[0]
    a = _row(1.0 if alpha is None else alpha, x)
    y = x.float() + a * bank[_safe_index(index, n)].float()
    return torch.where(_touched(index, n), y.to(x.dtype), x)


def patch(x: torch.Tensor, src: torch.Tensor, index: torch.Tensor, weight: RowParam = 1.0) -> torch.Tensor:
    """Rows with 0 <= index[t] < len(src) become ``(1 - w) * x[t] + w * src[index[t]]``; the others
    are untouched. ``weight`` is a scalar or one value per row."""
    n = src.shape[0]
    w = _row(weight, x)
    y = (1.0 - w) * x.float() + w * src[_safe_index(index, n)].float()
    return torch.where(_touched(index, n), y.to(x.dtype), x)


def steer(
    x: torch.Tensor,
    config: torch.Tensor,
    scale: torch.Tensor,
    flags: torch.Tensor,
    dyn_w: torch.Tensor,
    dyn_b: torch.Tensor,
    dirs: torch.Tensor,
    dir_val: torch.Tensor,
    n_dirs: torch.Tensor,
    vec: torch.Tensor,
    strength: torch.Tensor,
) -> torch.Tensor:
    """The fused per-row op on a SteeringTable's tensors (N configurations, R direction slots).

    Row t uses configuration ``i = config[t]``; i == 0 (the reserved identity) and i outside
    [0, N) leave the row untouched. With x the row:
      y = scale[i] * (dyn_w[i] . x + dyn_b[i] if flags[i] & FLAG_DYNAMIC else 1) * x
      for k < n_dirs[i]:  y = y - (y . dirs[i, k] - dir_val[i, k]) * dirs[i, k]   (unit dirs)
      if flags[i] & FLAG_VECTOR:  y = y + strength[i] * vec[i]
    Shapes: scale, dyn_b, strength [N] float32; flags, n_dirs [N] int32; dyn_w, vec [N, d];
    dirs [N, R, d]; dir_val [N, R].
    """
    return steer_uses(x, config, scale, flags, dyn_w, dyn_b, dirs, dir_val, n_dirs, vec, strength,
                      uses=(True, True, dirs.shape[1], True))


def steer_uses(x, config, scale, flags, dyn_w, dyn_b, dirs, dir_val, n_dirs, vec, strength, *, uses):
    """``steer`` restricted to the parts a table uses: ``uses = (scale, dynamic, directions,
    vector)`` says whether any configuration has a scale != 1, a dynamic scale, how many
    direction slots any configuration fills, and whether any adds a vector. The parts left out
    are the identity for every configuration, so the result is the same bit for bit; under
    torch.compile this is what keeps an add-only table as cheap as ``h + v``. Tensors of the
    parts left out are not read at all (they may be None): a compiled graph does not take them
    as inputs."""
    use_scale, use_dyn, r_used, use_vec = uses
    n = flags.shape[0]
    i = _safe_index(config, n)
    xf = x.float()
    y = xf
    f = flags[i].unsqueeze(-1)
    if use_scale or use_dyn:
        c = scale[i].float().unsqueeze(-1)
        if use_dyn:
            dyn = (dyn_w[i].float() * xf).sum(-1, keepdim=True) + dyn_b[i].float().unsqueeze(-1)
            c = c * torch.where((f & FLAG_DYNAMIC) != 0, dyn, torch.ones_like(dyn))
        y = c * xf
    if r_used:
        nd = n_dirs[i].unsqueeze(-1)
        for k in range(min(r_used, dirs.shape[1])):
            u = dirs[i, k].float()
            coef = (y * u).sum(-1, keepdim=True) - dir_val[i, k].float().unsqueeze(-1)
            y = torch.where(nd > k, y - coef * u, y)
    if use_vec:
        add_v = strength[i].float().unsqueeze(-1) * vec[i].float()
        y = torch.where((f & FLAG_VECTOR) != 0, y + add_v, y)
    touched = ((config > 0) & (config < n)).unsqueeze(-1)
    return torch.where(touched, y.to(x.dtype), x)
