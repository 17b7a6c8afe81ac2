"""The SAE module: one class for ReLU, JumpReLU and TopK sparse autoencoders.

Conventions (shared with the SAE ops in ``steerkit.ops``):

- Weights ``W_enc [d, F]``, ``b_enc [F]``, ``W_dec [F, d]``, ``b_dec [d]``; JumpReLU SAEs also
  have ``threshold [F]``.
- ``pre = (n(x) - b_dec) @ W_enc + b_enc``, where ``n`` is the optional input normalisation and
  the ``b_dec`` subtraction is switched off with ``apply_b_dec_to_input=False`` (Gemma Scope,
  dictionary_learning JumpReLU).
- Activations: ``relu``: ``max(pre, 0)``; ``jumprelu``: ``pre * (pre > threshold)``; ``topk``:
  keep the k largest pre-activations of each row, then ReLU (so fewer than k may be non-zero).
- ``decode(f) = n^-1(f @ W_dec + b_dec)``.
- Input normalisation (SAELens' ``normalize_activations``): ``"none"``; ``"constant_norm_rescale"``
  (``x * sqrt(d) / |x|``, undone by dividing by the same factor); ``"layer_norm"`` (``(x - mean) /
  (std + 1e-5)`` with the unbiased std, undone by ``y * std + mean``). Both depend on the input row,
  so ``decode`` needs that input (``decode(f, x)``) when normalisation is on.

Math is float32; ``encode`` returns the input's dtype and ``decode`` the features' dtype. The
dense PyTorch code sits behind ``pre_acts`` / ``activate`` / ``decode`` so that fused kernels can
replace it later without changing callers.
"""
from __future__ import annotations

import math
import re
from typing import Any, Dict, Optional

import torch

ACTIVATIONS = ("relu", "jumprelu", "topk")
NORMALIZATIONS = ("none", "constant_norm_rescale", "layer_norm")
_LN_EPS = 1e-5
_SITE = re.compile(r"^(resid_pre|resid_post|attn_out|mlp_out|attn_heads)\.(\d+)$")


class SAE(torch.nn.Module):
    """A sparse autoencoder.

    Args:
        d, F: input width and number of features.
        activation: "relu", "jumprelu" (needs ``threshold``) or "topk" (needs ``k``).
        apply_b_dec_to_input: subtract ``b_dec`` from the input before encoding.
        normalize: "none", "constant_norm_rescale" or "layer_norm" (see the module doc).
        site: the steerkit site the SAE reads (``resid_post.6``, ...), if known.
        metadata: anything else worth keeping (model name, the format's own hook name, ...).
    """

    def __init__(self, d: int, F: int, activation: str = "relu", k: Optional[int] = None,
                 apply_b_dec_to_input: bool = True, normalize: str = "none", site: Optional[str] = None,
                 metadata: Optional[Dict[str, Any]] = None, device=None, dtype=torch.float32):
        super().__init__()
        if not (isinstance(d, int) and d > 0 and isinstance(F, int) and F > 0):
            raise ValueError(f"SAE: d and F must be positive ints, got d={d!r}, F={F!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"SAE: activation must be one of {ACTIVATIONS}, got {activation!r}")
        if activation == "topk":
            if not (isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= F):
                raise ValueError(f"SAE: activation='topk' needs an int k in 1..F={F}, got k={k!r}")
        elif k is not None:
            raise ValueError(f"SAE: k is only used with activation='topk' (got activation={activation!r})")
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"SAE: normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
        if site is not None and not (_SITE.match(site) or site.startswith("module:")):
            raise ValueError(f"SAE: site must look like 'resid_post.6' or 'module:<path>', got {site!r}")
        self.d, self.F, self.activation, self.k = d, F, activation, k
        self.apply_b_dec_to_input = bool(apply_b_dec_to_input)
        self.normalize = normalize
        self.site = site
        self.metadata: Dict[str, Any] = dict(metadata or {})
        kw = dict(device=device, dtype=dtype)
        self.W_enc = torch.nn.Parameter(torch.zeros(d, F, **kw))
        self.b_enc = torch.nn.Parameter(torch.zeros(F, **kw))
        self.W_dec = torch.nn.Parameter(torch.zeros(F, d, **kw))
        self.b_dec = torch.nn.Parameter(torch.zeros(d, **kw))
        self.threshold = torch.nn.Parameter(torch.zeros(F, **kw)) if activation == "jumprelu" else None

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_weights(cls, W_enc: torch.Tensor, b_enc: torch.Tensor, W_dec: torch.Tensor, b_dec: torch.Tensor,
                     threshold: Optional[torch.Tensor] = None, **kw) -> "SAE":
        """An SAE holding copies of the given weights (shapes as in the module doc). The activation
        defaults to "jumprelu" when ``threshold`` is given, else "relu" (pass ``activation`` and
        ``k`` for TopK)."""
        for name, t in (("W_enc", W_enc), ("b_enc", b_enc), ("W_dec", W_dec), ("b_dec", b_dec)):
            if not isinstance(t, torch.Tensor) or not t.is_floating_point():
                raise ValueError(f"SAE.from_weights: {name} must be a floating tensor, got {type(t).__name__}"
                                 + (f" of {t.dtype}" if isinstance(t, torch.Tensor) else ""))
        if W_enc.dim() != 2:
            raise ValueError(f"SAE.from_weights: W_enc must be [d, F], got shape {tuple(W_enc.shape)}")
        d, F = W_enc.shape
        expect = {"b_enc": (b_enc, (F,)), "W_dec": (W_dec, (F, d)), "b_dec": (b_dec, (d,))}
        if threshold is not None:
            expect["threshold"] = (threshold, (F,))
        for name, (t, shape) in expect.items():
            if tuple(t.shape) != shape:
                raise ValueError(f"SAE.from_weights: {name} must have shape {shape} (W_enc is [d={d}, F={F}]), "
                                 f"got {tuple(t.shape)}")
        kw.setdefault("activation", "jumprelu" if threshold is not None else "relu")
        if kw["activation"] == "jumprelu" and threshold is None:
            raise ValueError("SAE.from_weights: activation='jumprelu' needs threshold [F]")
        if kw["activation"] != "jumprelu" and threshold is not None:
            raise ValueError(f"SAE.from_weights: threshold given but activation={kw['activation']!r}")
        kw.setdefault("dtype", W_enc.dtype)
        kw.setdefault("device", W_enc.device)
        sae = cls(int(d), int(F), **kw)
        with torch.no_grad():
            sae.W_enc.copy_(W_enc)
            sae.b_enc.copy_(b_enc)
            sae.W_dec.copy_(W_dec)
            sae.b_dec.copy_(b_dec)
            if threshold is not None:
                sae.threshold.copy_(threshold)
        return sae

    @property
    def layer(self) -> Optional[int]:
        """The decoder block of ``site`` (None for module sites or an unknown site)."""
        m = _SITE.match(self.site or "")
        return int(m.group(2)) if m else None

    def config(self) -> Dict[str, Any]:
        """Everything but the weights (JSON-serialisable)."""
        return dict(d=self.d, F=self.F, activation=self.activation, k=self.k,
                    apply_b_dec_to_input=self.apply_b_dec_to_input, normalize=self.normalize,
                    site=self.site, metadata=dict(self.metadata))

    def extra_repr(self) -> str:
        k = f", k={self.k}" if self.k is not None else ""
        return (f"d={self.d}, F={self.F}, activation={self.activation!r}{k}, "
                f"apply_b_dec_to_input={self.apply_b_dec_to_input}, normalize={self.normalize!r}, site={self.site!r}")

    # -- the math -----------------------------------------------------------------------------
    def _check_input(self, x: torch.Tensor, name: str, width: int) -> None:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise ValueError(f"SAE: {name} must be a floating tensor [..., {width}], got "
                             f"{x.dtype if isinstance(x, torch.Tensor) else type(x).__name__}")
        if x.dim() < 1 or x.shape[-1] != width:
            raise ValueError(f"SAE: {name} must have shape [..., {width}], got {tuple(x.shape)}")
        if x.device != self.W_enc.device:
            raise ValueError(f"SAE: {name} is on {x.device} but the SAE is on {self.W_enc.device}")

    def _norm_stats(self, x: torch.Tensor):
        """Per-row statistics of the input normalisation (float32), or None."""
        xf = x.float()
        if self.normalize == "constant_norm_rescale":
            return (math.sqrt(self.d) / xf.norm(dim=-1, keepdim=True),)
        if self.normalize == "layer_norm":
            mu = xf.mean(dim=-1, keepdim=True)
            return mu, (xf - mu).std(dim=-1, keepdim=True)
        return None

    def _normalize_in(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        if self.normalize == "constant_norm_rescale":
            return xf * self._norm_stats(x)[0]
        if self.normalize == "layer_norm":
            mu, std = self._norm_stats(x)
            return (xf - mu) / (std + _LN_EPS)
        return xf

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-activations ``(n(x) - b_dec) @ W_enc + b_enc``: [..., F] float32."""
        self._check_input(x, "x", self.d)
        xf = self._normalize_in(x)
        if self.apply_b_dec_to_input:
            xf = xf - self.b_dec.float()
        return xf @ self.W_enc.float() + self.b_enc.float()

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        """The activation function on pre-activations (dense, float32)."""
        if self.activation == "relu":
            return pre.clamp_min(0)
        if self.activation == "jumprelu":
            return pre * (pre > self.threshold.float())
        vals, idx = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, idx, vals.clamp_min(0))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations [..., F] in x's dtype."""
        return self.activate(self.pre_acts(x)).to(x.dtype)

    def decode(self, f: torch.Tensor, x: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Reconstruction ``f @ W_dec + b_dec`` [..., d] in f's dtype. With input normalisation,
        ``x`` (the input the features belong to) is needed to undo it."""
        self._check_input(f, "f", self.F)
        y = f.float() @ self.W_dec.float() + self.b_dec.float()
        if self.normalize != "none":
            if x is None:
                raise ValueError(f"SAE.decode: this SAE normalises its input ({self.normalize!r}); pass the input "
                                 f"x the features came from: decode(f, x)")
            self._check_input(x, "x", self.d)
            stats = self._norm_stats(x)
            y = y / stats[0] if self.normalize == "constant_norm_rescale" else y * stats[1] + stats[0]
        return y.to(f.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction of x (x's dtype)."""
        return self.decode(self.encode(x), x)

    # -- weight conventions -------------------------------------------------------------------
    @torch.no_grad()
    def fold_b_dec_into_b_enc(self) -> "SAE":
        """Switch off the b_dec subtraction without changing any output:
        ``b_enc -= b_dec @ W_enc``."""
        if self.apply_b_dec_to_input:
            self.b_enc.copy_((self.b_enc.float() - self.b_dec.float() @ self.W_enc.float()).to(self.b_enc.dtype))
            self.apply_b_dec_to_input = False
        return self

    @torch.no_grad()
    def unfold_b_dec_from_b_enc(self) -> "SAE":
        """Switch on the b_dec subtraction without changing any output:
        ``b_enc += b_dec @ W_enc``."""
        if not self.apply_b_dec_to_input:
            self.b_enc.copy_((self.b_enc.float() + self.b_dec.float() @ self.W_enc.float()).to(self.b_enc.dtype))
            self.apply_b_dec_to_input = True
        return self

    @torch.no_grad()
    def normalize_decoder_rows(self) -> torch.Tensor:
        """Give every decoder row unit norm, scaling the encoder (and threshold) so that
        reconstructions are unchanged; feature activations scale by the old row norms (returned).
        Not for TopK SAEs (rescaled pre-activations would select other features)."""
        if self.activation == "topk":
            raise ValueError("SAE.normalize_decoder_rows: rescaling features changes a TopK SAE's selection")
        n = self.W_dec.float().norm(dim=1).clamp_min(torch.finfo(torch.float32).tiny)
        self.W_dec.copy_((self.W_dec.float() / n[:, None]).to(self.W_dec.dtype))
        self.W_enc.copy_((self.W_enc.float() * n).to(self.W_enc.dtype))
        self.b_enc.copy_((self.b_enc.float() * n).to(self.b_enc.dtype))
        if self.threshold is not None:
            self.threshold.copy_((self.threshold.float() * n).to(self.threshold.dtype))
        return n
