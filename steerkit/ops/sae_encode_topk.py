"""sae_encode_topk(x, W_enc, b_enc, k, b_dec=None) -> (values, indices): TopK SAE encode.

``pre = (x - b_dec) @ W_enc + b_enc`` (no subtraction when ``b_dec`` is None); each row keeps its
k largest pre-activations, largest first, equal values by lower feature index, then ReLU. The
pre-activations are compared as rounded (once) to x's dtype, the values returned.
values ``[..., k]`` in x's dtype, indices ``[..., k]`` int64. Shapes: W_enc [d, F], b_enc [F],
b_dec [d]. The Triton paths never write the [T, F] matrix (kernels/sae_encode_topk.py); they
multiply in W_enc's dtype with fp32 accumulation (float32 inputs: exact fp32 products): from
1,024 rows cuBLAS products in chunks and a selection kernel; from 65 rows a sampled threshold
and a fused matmul that keeps only the candidates above it (eager calls sync once with the
host to recompute exactly the rare rows it missed; not under CUDA-graph capture); up to 64
rows running lists (docs/sae_ops.md). ``backend="cuda"`` (and ``auto`` once the CUDA extension is
loaded): the GEMM path with the CUDA selection kernel (csrc/sae_encode_topk.cu), for 16-bit
inputs from 1,024 rows. Forward only (no autograd). Under torch.compile the op
is its reference.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from . import _sae
from . import reference_sae as R

OP = "sae_encode_topk"


@torch.library.custom_op("steerkit::sae_encode_topk", mutates_args=())
def _op(x: Tensor, W_enc: Tensor, b_enc: Tensor, b_dec: Optional[Tensor], k: int, backend: str) -> Tuple[Tensor, Tensor]:
    if backend == "torch":
        v, i = R.sae_encode_topk(x, W_enc, b_enc, k, b_dec)
        return v.contiguous(), i.contiguous()
    import steerkit.kernels as K

    x2 = x if x.stride(-1) == 1 else x.contiguous()
    values = x.new_empty((x.shape[0], k))
    indices = torch.empty((x.shape[0], k), device=x.device, dtype=torch.int64)
    if backend == "cuda":
        from steerkit import _cuda_ext

        _cuda_ext.load()
        K.sae_encode_topk(x2, W_enc, b_enc.contiguous(), _sae.opt_contig(b_dec), k, values, indices, path="gemm",
                          select="cuda")
    else:
        K.sae_encode_topk(x2, W_enc, b_enc.contiguous(), _sae.opt_contig(b_dec), k, values, indices)
    return values, indices


def cuda_refusal(x: Tensor, W_enc: Tensor, b_enc: Tensor, k: int) -> Optional[str]:
    """Why the CUDA selection (the GEMM path with csrc/sae_encode_topk.cu) cannot take these
    inputs, or None: it needs GEMM_MIN_T rows or more (below, chunked products are host-bound),
    x, W_enc and b_enc in one 16-bit dtype (it selects from the 16-bit product), and k within
    the lists' width (``k_refusal``, as Triton)."""
    from steerkit.kernels.sae_encode_topk import GEMM_MIN_T

    T = x.numel() // x.shape[-1] if x.shape[-1] else 0
    if T < GEMM_MIN_T:
        return f"{T} rows, fewer than {GEMM_MIN_T} (the CUDA selection serves the GEMM path only)"
    if not (x.dtype == W_enc.dtype == b_enc.dtype and x.dtype in (torch.float16, torch.bfloat16)):
        return (f"x, W_enc and b_enc must share a 16-bit dtype for the CUDA selection, got {x.dtype}, {W_enc.dtype}, "
                f"{b_enc.dtype}")
    return k_refusal(k)


def k_refusal(k: int) -> Optional[str]:
    """Why the fast kernels cannot keep a top-k this long, or None."""
    from steerkit.kernels.sae_encode_topk import MAX_K

    return f"k={k} exceeds {MAX_K}, the longest running top-k the kernel keeps" if k > MAX_K else None


@_op.register_fake
def _(x, W_enc, b_enc, b_dec, k, backend):
    return x.new_empty((x.shape[0], k)), x.new_empty((x.shape[0], k), dtype=torch.int64)


def sae_encode_topk(x: Tensor, W_enc: Tensor, b_enc: Tensor, k: int, b_dec: Optional[Tensor] = None, *,
                    backend: Optional[str] = None, validate: bool = True) -> Tuple[Tensor, Tensor]:
    """TopK encode of x ``[..., d]``: ``(values [..., k], indices [..., k] int64)`` (see module doc)."""
    F = _sae.encoder(OP, x, W_enc, b_enc, b_dec, None, validate)
    _sae.count(OP, "k", k, 1, F)
    lead = x.shape[:-1]
    x2 = _sae.rows2d(x)
    if torch.compiler.is_compiling():
        v, i = R.sae_encode_topk(x2, W_enc, b_enc, k, b_dec)
    else:
        chosen = _sae.backend_for(OP, x, backend, k_refusal(k), cuda_refusal(x2, W_enc, b_enc, k))
        v, i = _op(x2, W_enc, b_enc, b_dec, k, chosen)
    return v.reshape(*lead, k), i.reshape(*lead, k)
