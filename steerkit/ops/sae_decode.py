"""sae_decode(values, indices, W_dec, b_dec=None) -> [..., d]: sparse SAE decode.

``out[t] = sum_j values[t, j] * W_dec[indices[t, j]] + b_dec``: gathers only the active
decoder rows. Entries with a negative index (e.g. the -1 padding of sae_encode_jumprelu) add
nothing; indices >= F are an error in eager calls (``validate``) and add nothing otherwise.
values ``[..., k]`` float, indices ``[..., k]`` int32/int64, W_dec [F, d], b_dec [d]; output in
W_dec's dtype. Forward only. Under torch.compile the op is its reference.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import _checks as C
from . import _sae
from . import reference_sae as R

OP = "sae_decode"


@torch.library.custom_op("steerkit::sae_decode", mutates_args=())
def _op(values: Tensor, indices: Tensor, W_dec: Tensor, b_dec: Optional[Tensor], backend: str) -> Tensor:
    if backend == "torch":
        return R.sae_decode(values, indices, W_dec, b_dec).contiguous()
    import steerkit.kernels as K

    out = W_dec.new_empty((indices.shape[0], W_dec.shape[1]))
    W = W_dec if W_dec.stride(-1) == 1 else W_dec.contiguous()
    K.sae_decode(values.contiguous(), indices.contiguous(), W, _sae.opt_contig(b_dec), out)
    return out


@_op.register_fake
def _(values, indices, W_dec, b_dec, backend):
    return W_dec.new_empty((indices.shape[0], W_dec.shape[1]))


def sae_decode(values: Tensor, indices: Tensor, W_dec: Tensor, b_dec: Optional[Tensor] = None, *,
               backend: Optional[str] = None, validate: bool = True) -> Tensor:
    """Sparse decode (see module doc)."""
    if not isinstance(values, torch.Tensor) or values.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        C.fail(OP, "values", "must be a float32, float16 or bfloat16 tensor [..., k]")
    if values.dim() < 1 or values.shape[-1] == 0:
        C.fail(OP, "values", f"must have shape [..., k] with k > 0, got {tuple(values.shape)}")
    if not isinstance(indices, torch.Tensor) or indices.dtype not in C.INDEX_DTYPES:
        C.fail(OP, "indices", "must be an int32 or int64 tensor")
    if indices.shape != values.shape:
        C.fail(OP, "indices", f"must have the shape of values {tuple(values.shape)}, got {tuple(indices.shape)}")
    C.same_device(OP, "indices", indices, values)
    _sae.weights(OP, "W_dec", W_dec, values, (None, None), ("F", "d"))
    F, d = W_dec.shape
    if b_dec is not None:
        _sae.weights(OP, "b_dec", b_dec, values, (d,), (f"d={d}",))
    if validate and C.values_checkable(values):
        if indices.numel() and int(indices.max()) >= F:
            C.fail(OP, "indices", f"has value {int(indices.max())} but must be < F = {F} (negative: skipped)")
        C.finite(OP, "values", values)
        if b_dec is not None:
            C.finite(OP, "b_dec", b_dec)
    lead, k = values.shape[:-1], values.shape[-1]
    v2, i2 = values.reshape(-1, k), indices.reshape(-1, k)
    if torch.compiler.is_compiling():
        out = R.sae_decode(v2, i2, W_dec, b_dec)
    else:
        out = _op(v2, i2, W_dec, b_dec, _sae.backend_for(OP, W_dec, backend))
    return out.reshape(*lead, d)
