"""sae_encode_selected(x, W_enc, b_enc, features, ...) -> [..., S]: activations of selected SAE
features only, reading only their encoder columns.

``out[..., j] = act((x - b_dec) . W_enc[:, features[j]] + b_enc[features[j]])`` with ``act``:
"relu", "jumprelu" (``pre * (pre > threshold)``, needs ``threshold [F]``), "topk" (the activation
the feature would have if it were among the top k: ReLU; whether it is in the top k is not
checked) or "none" (the pre-activation). Output in x's dtype. Forward only.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import _checks as C
from . import _sae
from . import reference_sae as R

OP = "sae_encode_selected"
_NAMES = {v: k for k, v in R.ACTIVATIONS.items() if k != "topk"}


@torch.library.custom_op("steerkit::sae_encode_selected", mutates_args=())
def _op(x: Tensor, W_enc: Tensor, b_enc: Tensor, features: Tensor, b_dec: Optional[Tensor],
        threshold: Optional[Tensor], act: int, backend: str) -> Tensor:
    if backend == "torch":
        return R.sae_encode_selected(x, W_enc, b_enc, features, b_dec, _NAMES[act], threshold).contiguous()
    import steerkit.kernels as K

    out = x.new_empty((x.shape[0], features.shape[0]))
    x2 = x if x.stride(-1) == 1 else x.contiguous()
    K.sae_encode_selected(x2, W_enc, b_enc.contiguous(), _sae.opt_contig(b_dec), _sae.opt_contig(threshold),
                          features.contiguous(), act, out)
    return out


@_op.register_fake
def _(x, W_enc, b_enc, features, b_dec, threshold, act, backend):
    return x.new_empty((x.shape[0], features.shape[0]))


def sae_encode_selected(x: Tensor, W_enc: Tensor, b_enc: Tensor, features: Tensor, b_dec: Optional[Tensor] = None,
                        activation: str = "relu", threshold: Optional[Tensor] = None, *,
                        backend: Optional[str] = None, validate: bool = True) -> Tensor:
    """Activations ``[..., S]`` of the features ``features [S]`` (int32/int64) for x ``[..., d]``."""
    if activation not in R.ACTIVATIONS:
        C.fail(OP, "activation", f"must be one of {sorted(R.ACTIVATIONS)}, got {activation!r}")
    F = _sae.encoder(OP, x, W_enc, b_enc, b_dec, threshold, validate, need_threshold=activation == "jumprelu")
    if not isinstance(features, torch.Tensor) or features.dtype not in C.INDEX_DTYPES or features.dim() != 1:
        C.fail(OP, "features", "must be a 1-D int32 or int64 tensor of feature indices")
    C.same_device(OP, "features", features, x)
    if validate and C.values_checkable(x) and features.numel():
        lo, hi = int(features.min()), int(features.max())
        if lo < 0 or hi >= F:
            C.fail(OP, "features", f"has values in [{lo}, {hi}] but must be in [0, {F})")
    thr = threshold if activation == "jumprelu" else None
    lead = x.shape[:-1]
    x2 = _sae.rows2d(x)
    if torch.compiler.is_compiling():
        out = R.sae_encode_selected(x2, W_enc, b_enc, features, b_dec, activation, thr)
    else:
        out = _op(x2, W_enc, b_enc, features, b_dec, thr, R.ACTIVATIONS[activation], _sae.backend_for(OP, x, backend))
    return out.reshape(*lead, features.shape[0])
