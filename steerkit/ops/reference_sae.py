"""Pure-PyTorch definition of the SAE ops: the CPU path, the test oracle, the benchmark baseline
and what the ops lower to under ``torch.compile``. No speed tricks here.

Conventions (shared with ``steerkit.sae``):
- ``W_enc [d, F]``, ``b_enc [F]``, ``W_dec [F, d]``, ``b_dec [d]``, JumpReLU ``threshold [F]``;
  ``x`` is ``[T, d]`` (the public ops accept ``[..., d]``).
- Pre-activation ``pre = (x - b_dec) @ W_enc + b_enc``; pass ``b_dec=None`` to skip the
  subtraction.
- Activations: ReLU ``max(pre, 0)``; JumpReLU ``pre * (pre > threshold)``; TopK keeps the k
  largest pre-activations of a row, then applies ReLU.
- Orders: selected entries are sorted by value, largest first; equal values keep the lower
  feature index first. Math is float32; float outputs are rounded once to the output dtype.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

# activation codes of sae_encode_selected (kernel constants)
ACTIVATIONS = {"none": 0, "relu": 1, "topk": 1, "jumprelu": 2}

# SaeSteeringTable slot kinds (bits of the ``kind`` table)
KIND_CLAMP = 1  # h += (target - f(h)) * W_dec[i]
KIND_ADD = 2  # h += strength * W_dec[i]
KIND_ONLY_ACTIVE = 4  # with KIND_CLAMP: only where the feature is active


def pre_activation(x: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor,
                   b_dec: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``(x - b_dec) @ W_enc + b_enc`` in float32, shape [T, F]."""
    x = x.float()
    if b_dec is not None:
        x = x - b_dec.float()
    return x @ W_enc.float() + b_enc.float()


def _sorted_desc(v: torch.Tensor, n: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The n largest entries of each row of v, largest first, ties by lower index (stable sort)."""
    vals, idx = torch.sort(v, dim=-1, descending=True, stable=True)
    return vals[:, :n], idx[:, :n]


def sae_encode_topk(x: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, k: int,
                    b_dec: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """TopK encode: ``(values [T, k] in x's dtype, indices [T, k] int64)``: the k largest
    pre-activations of each row (largest first, ties by lower index), then ReLU. The
    pre-activations are rounded to x's dtype (once, from float32) before they are compared, so
    the order is that of the values returned: equal values come by lower index."""
    pre = pre_activation(x, W_enc, b_enc, b_dec).to(x.dtype).float()
    vals, idx = _sorted_desc(pre, k)
    return vals.clamp_min(0).to(x.dtype), idx


def sae_encode_jumprelu(x: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, threshold: torch.Tensor,
                        capacity: int, b_dec: Optional[torch.Tensor] = None):
    """JumpReLU encode into a fixed-capacity sparse output.

    Active features of a row: ``pre > threshold``. Returns ``(values [T, capacity], indices
    [T, capacity] int64, counts [T] int32, overflow [T] int32)``: the active features with the
    largest values first (ties by lower index), at most ``capacity`` of them; unused entries hold
    value 0 and index -1; ``counts`` = entries used, ``overflow`` = active features dropped.
    """
    pre = pre_activation(x, W_enc, b_enc, b_dec)
    active = pre > threshold.float()
    n_active = active.sum(-1)
    vals, idx = _sorted_desc(torch.where(active, pre, float("-inf")), capacity)
    used = torch.arange(capacity, device=x.device) < n_active[:, None]
    counts = n_active.clamp(max=capacity)
    values = torch.where(used, vals, 0.0).to(x.dtype)
    indices = torch.where(used, idx, -1)
    return values, indices, counts.to(torch.int32), (n_active - counts).to(torch.int32)


def activate(pre: torch.Tensor, activation: str, threshold: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Elementwise activation of pre-activations (TopK's is ReLU: "as if among the top k")."""
    code = ACTIVATIONS[activation]
    if code == 0:
        return pre
    if code == 1:
        return pre.clamp_min(0)
    return torch.where(pre > threshold.float(), pre, 0.0)


def sae_encode_selected(x: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, features: torch.Tensor,
                        b_dec: Optional[torch.Tensor] = None, activation: str = "relu",
                        threshold: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Activations of the selected features only: ``[T, S]`` in x's dtype, column j for feature
    ``features[j]``. ``activation`` is "relu", "jumprelu" (needs threshold [F]), "topk" (the
    activation as if the feature were among the top k, i.e. ReLU) or "none" (pre-activation)."""
    f = features.long()
    xf = x.float()
    if b_dec is not None:
        xf = xf - b_dec.float()
    pre = xf @ W_enc.float().index_select(1, f) + b_enc.float().index_select(0, f)
    thr = None if threshold is None else threshold.float().index_select(0, f)
    return activate(pre, activation, thr).to(x.dtype)


def sae_decode(values: torch.Tensor, indices: torch.Tensor, W_dec: torch.Tensor,
               b_dec: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Sparse decode ``sum_j values[t, j] * W_dec[indices[t, j]] + b_dec``, [T, d] in W_dec's
    dtype. Entries whose index is negative or >= F contribute nothing."""
    F = W_dec.shape[0]
    ok = (indices >= 0) & (indices < F)
    rows = W_dec.float()[indices.long().clamp(0, F - 1)]  # [T, k, d]
    w = torch.where(ok, values.float(), 0.0)
    out = torch.einsum("tk,tkd->td", w, rows)
    if b_dec is not None:
        out = out + b_dec.float()
    return out.to(W_dec.dtype)


def sae_steer(h: torch.Tensor, config: torch.Tensor, n_feat: torch.Tensor, kind: torch.Tensor,
              value: torch.Tensor, enc: torch.Tensor, b_eff: torch.Tensor, thr: torch.Tensor,
              dec: torch.Tensor) -> torch.Tensor:
    """Fused SAE steering per row, on the tensors of a ``SaeSteeringTable`` (N configurations,
    M feature slots each). Row t uses configuration c = config[t]; slot s < n_feat[c] holds a
    feature with encoder column ``enc[c, s]`` (= W_enc[:, i]), effective bias ``b_eff[c, s]``
    (= b_enc[i] - b_dec . W_enc[:, i]), threshold ``thr[c, s]`` (0 for ReLU and TopK SAEs) and
    decoder row ``dec[c, s]`` (= W_dec[i]). With ``pre = h . enc + b_eff``, ``active = pre > thr``
    and ``f = pre if active else 0`` (all computed on the input row):

        clamp:  h += (target - f) * dec      (skipped where inactive if KIND_ONLY_ACTIVE)
        add:    h += strength * dec

    Configuration 0 and configurations outside [0, N) leave the row bit-identical.
    """
    N, M = kind.shape
    x = h.float()
    ok = ((config >= 1) & (config < N)).unsqueeze(-1)
    c = config.long().clamp(0, N - 1)
    kd = kind[c]  # [..., M]
    on = (torch.arange(M, device=h.device) < n_feat[c].unsqueeze(-1)) & (kd != 0)
    pre = torch.einsum("...d,...md->...m", x, enc[c].float()) + b_eff[c].float()
    active = pre > thr[c].float()
    f = torch.where(active, pre, 0.0)
    clamp = (kd & KIND_CLAMP) != 0
    val = value[c].float()
    coef = torch.where(clamp, val - f, val)
    skip = clamp & ((kd & KIND_ONLY_ACTIVE) != 0) & ~active
    coef = torch.where(on & ~skip, coef, 0.0)
    y = x + torch.einsum("...m,...md->...d", coef, dec[c].float())
    return torch.where(ok, y.to(h.dtype), h)
