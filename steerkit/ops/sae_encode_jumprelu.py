"""sae_encode_jumprelu(x, W_enc, b_enc, threshold, capacity, b_dec=None): JumpReLU SAE encode
into a fixed-capacity sparse output (fixed shapes; capturable in CUDA graphs, see below).

``pre = (x - b_dec) @ W_enc + b_enc``; feature i of a row is active when ``pre_i > threshold_i``
and then has the value ``pre_i`` (JumpReLU ``pre * (pre > threshold)``). Returns
``(values [..., capacity], indices [..., capacity] int64, counts [...] int32, overflow [...] int32)``:
the active features with the largest values first (equal values: lower index first), at most
``capacity`` per row; unused entries have value 0 and index -1 (sae_decode skips them);
``counts`` = entries used, ``overflow`` = active features that did not fit (0 when none).
Triton: eager calls sync once with the host to recompute exactly the rare rows with more active
features than the kernel's candidate buffer; under CUDA-graph capture those rows are not
recomputed (kernels/sae_encode_topk.py, docs/sae_ops.md). Forward only. Under torch.compile
the op is its reference.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from . import _sae
from . import reference_sae as R

OP = "sae_encode_jumprelu"


@torch.library.custom_op("steerkit::sae_encode_jumprelu", mutates_args=())
def _op(x: Tensor, W_enc: Tensor, b_enc: Tensor, threshold: Tensor, b_dec: Optional[Tensor], capacity: int,
        backend: str) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    if backend == "torch":
        return tuple(t.contiguous() for t in R.sae_encode_jumprelu(x, W_enc, b_enc, threshold, capacity, b_dec))
    import steerkit.kernels as K

    T = x.shape[0]
    x2 = x if x.stride(-1) == 1 else x.contiguous()
    values = x.new_empty((T, capacity))
    indices = torch.empty((T, capacity), device=x.device, dtype=torch.int64)
    counts = torch.empty((T,), device=x.device, dtype=torch.int32)
    overflow = torch.empty((T,), device=x.device, dtype=torch.int32)
    K.sae_encode_jumprelu(x2, W_enc, b_enc.contiguous(), _sae.opt_contig(b_dec), threshold.contiguous(), capacity,
                          values, indices, counts, overflow)
    return values, indices, counts, overflow


@_op.register_fake
def _(x, W_enc, b_enc, threshold, b_dec, capacity, backend):
    T = x.shape[0]
    return (x.new_empty((T, capacity)), x.new_empty((T, capacity), dtype=torch.int64),
            x.new_empty((T,), dtype=torch.int32), x.new_empty((T,), dtype=torch.int32))


def sae_encode_jumprelu(x: Tensor, W_enc: Tensor, b_enc: Tensor, threshold: Tensor, capacity: int,
                        b_dec: Optional[Tensor] = None, *, backend: Optional[str] = None,
                        validate: bool = True) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """JumpReLU encode of x ``[..., d]`` (see module doc)."""
    F = _sae.encoder(OP, x, W_enc, b_enc, b_dec, threshold, validate, need_threshold=True)
    _sae.count(OP, "capacity", capacity, 1, F)
    lead = x.shape[:-1]
    x2 = _sae.rows2d(x)
    if torch.compiler.is_compiling():
        out = R.sae_encode_jumprelu(x2, W_enc, b_enc, threshold, capacity, b_dec)
    else:
        from steerkit.kernels.sae_encode_topk import MAX_K

        too_big = f"capacity={capacity} exceeds {MAX_K}, the longest list the kernel keeps" if capacity > MAX_K else None
        out = _op(x2, W_enc, b_enc, threshold, b_dec, capacity, _sae.backend_for(OP, x, backend, too_big))
    v, i, c, o = out
    return v.reshape(*lead, capacity), i.reshape(*lead, capacity), c.reshape(lead), o.reshape(lead)
