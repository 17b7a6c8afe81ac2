"""SaeSteeringTable: persistent per-site tables of SAE feature interventions for sae_steer_.

Each configuration (ids 1..capacity; 0 is the reserved identity) holds up to ``max_features``
slots; a slot names a feature i of the SAE and either

- clamps it to a target: ``h += (target - f_i(h)) * W_dec[i]`` (the SAE's error term is kept),
  optionally only on rows where the feature is active (``only_active``), or
- adds its decoder row with a strength: ``h += strength * W_dec[i]``.

All f_i are computed on the row before any change. ``f_i(h) = act(pre_i)`` with
``pre_i = (h - b_dec) . W_enc[:, i] + b_enc[i]``; JumpReLU SAEs: active = ``pre_i > threshold_i``;
ReLU SAEs: active = ``pre_i > 0``; TopK SAEs: f_i is the feature's activation as if it were among
the top k, i.e. ``ReLU(pre_i)`` (whether it would make the top k is not checked).

The table copies, per slot, the feature's encoder column, effective bias
``b_enc[i] - b_dec . W_enc[:, i]``, threshold and decoder row when the configuration is set
(contiguous rows: one read per slot, however the SAE's matrices are laid out). If the SAE's
weights change afterwards, call ``refresh()``. All tensors are allocated once and updated in
place, so compiled graphs and captured CUDA graphs stay valid across updates.
"""
from __future__ import annotations

import math
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import torch

from steerkit.ops import _checks as C
from steerkit.ops.reference_sae import KIND_ADD, KIND_CLAMP, KIND_ONLY_ACTIVE

Number = Union[int, float]
_ACTIVATIONS = ("relu", "jumprelu", "topk")


class SaeSteeringTable:
    """Preallocated SAE feature interventions for ``steerkit.ops.sae_steer_``.

    Args:
        W_enc [d, F], b_enc [F], W_dec [F, d], b_dec [d] or None: the SAE (referenced, not copied;
            the selected columns and rows are copied into the table by ``set``).
        activation: "relu", "jumprelu" (needs ``threshold [F]``) or "topk".
        capacity: number of configurations; max_features: slots per configuration (default 8).
        dtype: dtype of the copied encoder / decoder rows (default W_dec's); scalars are float32.
    """

    def __init__(self, W_enc: torch.Tensor, b_enc: torch.Tensor, W_dec: torch.Tensor,
                 b_dec: Optional[torch.Tensor] = None, threshold: Optional[torch.Tensor] = None, *,
                 activation: str = "relu", capacity: int = 16, max_features: int = 8,
                 dtype: Optional[torch.dtype] = None):
        op = "SaeSteeringTable"
        if activation not in _ACTIVATIONS:
            C.fail(op, "activation", f"must be one of {_ACTIVATIONS}, got {activation!r}")
        for name, t, dims in (("W_enc", W_enc, 2), ("W_dec", W_dec, 2), ("b_enc", b_enc, 1)):
            if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.dim() != dims:
                C.fail(op, name, f"must be a floating {dims}-D tensor")
        d, F = W_enc.shape
        if tuple(W_dec.shape) != (F, d):
            C.fail(op, "W_dec", f"must have shape [F={F}, d={d}] (W_enc is [d, F]), got {tuple(W_dec.shape)}")
        if tuple(b_enc.shape) != (F,):
            C.fail(op, "b_enc", f"must have shape [F={F}], got {tuple(b_enc.shape)}")
        if b_dec is not None and tuple(b_dec.shape) != (d,):
            C.fail(op, "b_dec", f"must have shape [d={d}], got {tuple(b_dec.shape)}")
        if activation == "jumprelu":
            if threshold is None or tuple(threshold.shape) != (F,):
                C.fail(op, "threshold", f"must be given with shape [F={F}] for a JumpReLU SAE")
        if capacity < 1 or max_features < 1:
            raise ValueError(f"{op}: need capacity >= 1 and max_features >= 1, got {capacity}, {max_features}")
        dtype = dtype or W_dec.dtype
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            C.fail(op, "dtype", f"must be float32, float16 or bfloat16, got {dtype}")
        self.W_enc, self.b_enc, self.W_dec, self.b_dec = W_enc, b_enc, W_dec, b_dec
        self.threshold = threshold if activation == "jumprelu" else None
        self.activation = activation
        dev = W_dec.device
        n, m = capacity + 1, max_features
        f32 = dict(device=dev, dtype=torch.float32)
        self.n_feat = torch.zeros(n, device=dev, dtype=torch.int32)
        self.kind = torch.zeros(n, m, device=dev, dtype=torch.int32)
        self.value = torch.zeros(n, m, **f32)
        self.enc = torch.zeros(n, m, d, device=dev, dtype=dtype)
        self.b_eff = torch.zeros(n, m, **f32)
        self.thr = torch.zeros(n, m, **f32)
        self.dec = torch.zeros(n, m, d, device=dev, dtype=dtype)
        self.features = torch.full((n, m), -1, device=dev, dtype=torch.int64)  # bookkeeping, not read by the op
        for t in self.tensors():  # updated in place: compiled CUDA graphs read them where they are
            torch._dynamo.mark_static_address(t)
        self._used = set()

    @classmethod
    def from_sae(cls, sae, **kw) -> "SaeSteeringTable":
        """From any object with attributes W_enc, b_enc, W_dec and optionally b_dec, threshold,
        activation (a str), apply_b_dec_to_input (False: b_dec is not subtracted before encoding,
        as in Gemma Scope; b_dec cancels out of every clamp and addition) and normalize (an SAE
        that normalises its input is refused: the fused op does not)."""
        if getattr(sae, "normalize", "none") != "none":
            raise ValueError(f"SaeSteeringTable.from_sae: the SAE normalises its input ({sae.normalize!r}), which "
                             f"fused SAE steering does not do; splice it (steerkit.integrations.sae_splice)")
        kw.setdefault("activation", getattr(sae, "activation", "relu"))
        b_dec = getattr(sae, "b_dec", None) if getattr(sae, "apply_b_dec_to_input", True) else None
        return cls(sae.W_enc, sae.b_enc, sae.W_dec, b_dec, getattr(sae, "threshold", None), **kw)

    # -- shape -------------------------------------------------------------------------------
    @property
    def d(self) -> int:
        return self.dec.shape[2]

    @property
    def n_features(self) -> int:
        return self.W_dec.shape[0]

    @property
    def capacity(self) -> int:
        return self.n_feat.shape[0] - 1

    @property
    def max_features(self) -> int:
        return self.kind.shape[1]

    @property
    def device(self) -> torch.device:
        return self.dec.device

    def __len__(self) -> int:
        return len(self._used)

    def in_use(self) -> Sequence[int]:
        return sorted(self._used)

    def tensors(self) -> Tuple[torch.Tensor, ...]:
        """The tensors in the order the op and kernels take them."""
        return (self.n_feat, self.kind, self.value, self.enc, self.b_eff, self.thr, self.dec)

    # -- writing -----------------------------------------------------------------------------
    def _slot(self, i: int) -> int:
        if isinstance(i, bool) or not isinstance(i, int):
            raise TypeError(f"SaeSteeringTable: configuration id must be an int, got {type(i).__name__}")
        if not 1 <= i <= self.capacity:
            raise IndexError(f"SaeSteeringTable: configuration id {i} is outside 1..{self.capacity} "
                             f"(0 is the reserved identity)")
        return i

    def _entries(self, op: str, arg: str, m: Optional[Mapping]) -> Dict[int, float]:
        if m is None:
            return {}
        if not isinstance(m, Mapping):
            C.fail(op, arg, "must be a dict {feature index: value}")
        out = {}
        for f, v in m.items():
            if isinstance(f, torch.Tensor):
                f = int(f)
            if isinstance(f, bool) or not isinstance(f, int) or not 0 <= f < self.n_features:
                C.fail(op, arg, f"has feature {f!r}; features must be ints in [0, {self.n_features})")
            v = float(v)
            if not math.isfinite(v):
                C.fail(op, arg, f"has a non-finite value {v} for feature {f}")
            out[f] = v
        return out

    def set(self, i: int, *, clamp: Optional[Mapping[int, Number]] = None,
            add: Optional[Mapping[int, Number]] = None, only_active: bool = False) -> int:
        """Set (or replace) configuration ``i``: ``clamp`` = {feature: target},
        ``add`` = {feature: strength}; ``only_active``: clamps act only where the feature is
        active. At most ``max_features`` features in all. Returns i."""
        i = self._slot(i)
        op = "SaeSteeringTable.set"
        clamps, adds = self._entries(op, "clamp", clamp), self._entries(op, "add", add)
        n = len(clamps) + len(adds)
        if n > self.max_features:
            C.fail(op, "clamp/add", f"name {n} features but a configuration holds at most {self.max_features} "
                                    f"(max_features)")
        slots = [(f, KIND_CLAMP | (KIND_ONLY_ACTIVE if only_active else 0), v) for f, v in clamps.items()]
        slots += [(f, KIND_ADD, v) for f, v in adds.items()]
        with torch.no_grad():
            self._reset(i)
            for s, (f, kind, v) in enumerate(slots):
                self.kind[i, s] = kind
                self.value[i, s] = v
                self.features[i, s] = f
                self._copy_feature(i, s, f)
            self.n_feat[i] = len(slots)
        self._used.add(i)
        return i

    def add_config(self, **config) -> int:
        """Store a configuration in the first free slot and return its id (see ``set``)."""
        free = next((i for i in range(1, self.capacity + 1) if i not in self._used), None)
        if free is None:
            raise RuntimeError(f"SaeSteeringTable: all {self.capacity} configurations are in use")
        return self.set(free, **config)

    def set_value(self, i: int, feature: int, value: Number) -> None:
        """Change the target (clamp) or strength (add) of ``feature`` in configuration i."""
        i = self._slot(i)
        v = self._entries("SaeSteeringTable.set_value", "value", {feature: value})[feature]
        hits = (self.features[i, : int(self.n_feat[i])] == feature).nonzero()
        if hits.numel() == 0:
            raise KeyError(f"SaeSteeringTable: configuration {i} has no slot for feature {feature}")
        with torch.no_grad():
            self.value[i, int(hits[0])] = v

    def clear(self, i: int) -> None:
        """Make configuration i the identity again and free its id."""
        with torch.no_grad():
            self._reset(self._slot(i))
        self._used.discard(i)

    def refresh(self) -> None:
        """Copy the SAE's current weights for every slot in use (after the SAE changed)."""
        with torch.no_grad():
            for i in self._used:
                for s in range(int(self.n_feat[i])):
                    self._copy_feature(i, s, int(self.features[i, s]))

    def _copy_feature(self, i: int, s: int, f: int) -> None:
        e = self.W_enc[:, f].detach().float()
        b = self.b_enc[f].detach().float()
        if self.b_dec is not None:
            b = b - self.b_dec.detach().float() @ e
        self.enc[i, s].copy_(e)
        self.b_eff[i, s] = b
        self.thr[i, s] = 0.0 if self.threshold is None else float(self.threshold[f])
        self.dec[i, s].copy_(self.W_dec[f].detach())

    def _reset(self, i: int) -> None:
        self.n_feat[i] = 0
        self.kind[i].zero_()
        self.value[i].zero_()
        self.enc[i].zero_()
        self.b_eff[i].zero_()
        self.thr[i].zero_()
        self.dec[i].zero_()
        self.features[i].fill_(-1)

    def __repr__(self) -> str:
        return (f"SaeSteeringTable(d={self.d}, F={self.n_features}, activation={self.activation!r}, "
                f"capacity={self.capacity}, max_features={self.max_features}, in_use={len(self)}, "
                f"device={self.device}, dtype={self.dec.dtype})")
