"""sae_steer_(h, config, table) / sae_steer: fused SAE feature steering per row.

Row t applies configuration ``config[t]`` (int32, shape h.shape[:-1]) of a
``steerkit.steering.sae_table.SaeSteeringTable``: for each of its feature slots, clamp the
feature to a target (``h += (target - f_i(h)) * W_dec[i]``, error term kept; optionally only
where the feature is active) or add its decoder row with a strength (``h += s * W_dec[i]``).
All f_i are computed on the input row. For TopK SAEs f_i(h) = ReLU(pre_i): the activation the
feature would have if it were among the top k. One launch for the batch, no host sync;
configuration 0 leaves rows bit-identical. Out of place it is differentiable in h and in the
table's float tensors (through the reference). Under torch.compile the op is its reference.
"""
from __future__ import annotations

from typing import Optional

import torch

from . import _checks as C
from . import _sae
from . import reference_sae as R
from ._registry import call, register

OP = "sae_steer"
_TABLE = "Tensor n_feat, Tensor kind, Tensor value, Tensor enc, Tensor b_eff, Tensor thr, Tensor dec"


def _prepare(x, config, n_feat, kind, value, enc, b_eff, thr, dec):
    def rows(t):  # encoder / decoder rows in float32 or x's dtype, contiguous
        return (t if t.dtype in (torch.float32, x.dtype) else t.float()).contiguous()

    return (config.reshape(-1).contiguous(), n_feat, kind, value, rows(enc), b_eff, thr, rows(dec))


register(OP, "Tensor config, " + _TABLE, R.sae_steer, _prepare)


CUDA_ROWS = (2304, 4096)  # the row widths csrc/sae_steer.cu is built for
CUDA_MAX_SLOTS = 8
CUDA_STEER_MAX_T = 16  # auto takes the CUDA row kernel up to here (H100: 2.5-3.0 µs a row against 3.2-3.6)


def _cuda_refusal(h, table) -> Optional[str]:
    """Why csrc/sae_steer.cu cannot take this call (None: it can): 16-bit rows of a width it is
    built for, the table's rows in h's dtype, at most CUDA_MAX_SLOTS slots, 16-byte aligned rows."""
    d = h.shape[-1]
    if h.dtype not in (torch.float16, torch.bfloat16) or table.enc.dtype != h.dtype:
        return f"the CUDA row kernel takes float16 / bfloat16 rows with a table of the same dtype, got {h.dtype} " \
               f"rows and a {table.enc.dtype} table"
    if d not in CUDA_ROWS or table.max_features > CUDA_MAX_SLOTS:
        return f"the CUDA row kernel is built for d in {CUDA_ROWS} and at most {CUDA_MAX_SLOTS} slots, got d={d}, " \
               f"{table.max_features} slots"
    rows_aligned = h.dim() < 2 or h.shape[-2] <= 1 or h.stride(-2) % 8 == 0
    if h.data_ptr() % 16 or not rows_aligned:
        return "the CUDA row kernel needs 16-byte aligned rows"
    return None


def _params(op, h, config, table, backend, validate):
    tensors = C.config_table(op, h, config, table, "steerkit SaeSteeringTable", "kind", validate)
    b = None
    if not torch.compiler.is_compiling():
        from steerkit.kernels._launch import MAX_D

        wide = f"d={h.shape[-1]} exceeds {MAX_D}, the widest row the kernel keeps" if h.shape[-1] > MAX_D else None
        rows = h.numel() // max(1, h.shape[-1])
        b = _sae.backend_for(op, h, backend, wide, _cuda_refusal(h, table), cuda_preferred=rows <= CUDA_STEER_MAX_T)
    return (config, *tensors), b


def sae_steer_(h: torch.Tensor, config: torch.Tensor, table, *, backend: Optional[str] = None,
               validate: bool = True) -> torch.Tensor:
    """In place: row t of h gets configuration config[t] of ``table``. Returns h."""
    params, b = _params("sae_steer_", h, config, table, backend, validate)
    return call(OP, True, h, params, b)


def sae_steer(h: torch.Tensor, config: torch.Tensor, table, *, backend: Optional[str] = None,
              validate: bool = True) -> torch.Tensor:
    """Out of place (see module doc)."""
    params, b = _params("sae_steer", h, config, table, backend, validate)
    return call(OP, False, h, params, b)
