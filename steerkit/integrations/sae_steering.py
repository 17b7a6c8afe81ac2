"""Per-request SAE feature steering inside a transformers model (the fused ``ops.sae_steer_``).

    handle = attach_sae(model, "resid_post.6", sae, capacity=16)
    a = handle.set(1, clamp={1234: 8.0, 77: 0.0})     # clamp feature 1234 to 8, ablate 77
    b = handle.set(2, add={500: 4.0})                  # add 4 * W_dec[500]
    handle.assign([a, 0, b])                           # per sequence of the coming batches
    model.generate(...)
    handle.detach()                                    # the model is exactly as before

At the site, row t of the activation gets configuration ``config[t]`` of a
``steerkit.steering.sae_table.SaeSteeringTable`` (0 = untouched, bit for bit): a clamp
``h += (target - f_i(h)) * W_dec[i]`` (the SAE's error term stays in the model, as in
``sae_splice.splice(..., edit={i: target})``) or an addition ``h += strength * W_dec[i]``, up to
``max_features`` features per configuration, one launch for the batch. TopK SAEs:
``f_i(h) = ReLU(pre_i)``, the activation the feature would have were it among the top k.

Where the ids come from (one of):
- ``assign(ids)``: [batch] ids (or one int for every row), checked, copied to the device;
- ``use_ids(tensor)``: a caller-owned int32 [batch] tensor read where it is at every forward (a
  serving engine's per-slot buffer: compiled and captured graphs see updates made in place);
- ``follow(steering)``: the ids of a ``hf.Steering`` for the current forward (its ``assign``,
  ``assign_tokens``, position rules, or the ids a ``steerkit.integrations.engine.Engine`` gives it
  per forward). Id i is then the same request here and there (unset ids here are the identity).

Eagerly the hook runs the op in place without autograd (Triton on a GPU); when gradients flow,
and under ``torch.compile`` (the op's PyTorch reference, which Inductor fuses), out of place.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence, Union

import torch

from steerkit import ops
from steerkit.steering.sae_table import SaeSteeringTable

from .hf import SiteHook, Steering, hook_site, resolve_site, site_width

Ids = Union[int, Sequence[int], torch.Tensor, None]


def _table_for(sae_or_table, capacity: int, max_features: int, dtype: Optional[torch.dtype]) -> SaeSteeringTable:
    """The table to steer with: given as is, or built from an SAE."""
    if isinstance(sae_or_table, SaeSteeringTable):
        return sae_or_table
    sae = sae_or_table
    if not all(hasattr(sae, n) for n in ("W_enc", "b_enc", "W_dec")):
        raise TypeError(f"attach_sae: sae_or_table must be a SaeSteeringTable or an SAE with W_enc, b_enc, W_dec; "
                        f"got {type(sae).__name__}")
    return SaeSteeringTable.from_sae(sae, capacity=capacity, max_features=max_features, dtype=dtype)


class SaeSteering(SiteHook):
    """Fused SAE steering attached at one site of a model (see the module doc). Also a context
    manager: leaving the ``with`` block detaches it."""

    def __init__(self, model: torch.nn.Module, site: str, sae_or_table, capacity: int = 16, max_features: int = 8,
                 dtype: Optional[torch.dtype] = None, backend: Optional[str] = None):
        module, kind = resolve_site(model, site)
        width = site_width(model, site)
        sae_site = getattr(sae_or_table, "site", None)
        if isinstance(sae_site, str) and sae_site != site:
            raise ValueError(f"attach_sae: the SAE was trained at {sae_site!r}, not {site!r} "
                             f"(set sae.site = None to force)")
        table = _table_for(sae_or_table, capacity, max_features, dtype)
        if table.d != width:
            raise ValueError(f"attach_sae: sae_or_table steers {table.d}-wide activations but site {site!r} "
                             f"is {width} wide")
        self.device = next(model.parameters()).device
        if table.device != self.device:
            raise ValueError(f"attach_sae: sae_or_table is on {table.device} but the model is on {self.device}")
        self.model, self.site, self.table, self.backend = model, site, table, backend
        self._ids: Optional[torch.Tensor] = None  # [batch] int32, or 0-d: one id for every row
        self._follow: Optional[Steering] = None
        self._handle = hook_site(module, kind, self._apply)

    # -- configurations (the table's) -----------------------------------------------------------
    @property
    def capacity(self) -> int:
        return self.table.capacity

    @property
    def max_features(self) -> int:
        return self.table.max_features

    def set(self, i: int, *, clamp: Optional[Mapping[int, float]] = None, add: Optional[Mapping[int, float]] = None,
            only_active: bool = False) -> int:
        """Set configuration i (1..capacity): ``clamp`` {feature: target}, ``add`` {feature:
        strength}; ``only_active``: clamps act only where the feature is active. Returns i."""
        return self.table.set(i, clamp=clamp, add=add, only_active=only_active)

    def add_config(self, **config) -> int:
        """Store a configuration (``set``'s keywords) in a free id and return the id."""
        return self.table.add_config(**config)

    def set_value(self, i: int, feature: int, value: float) -> None:
        """Change one target or strength of configuration i in place."""
        self.table.set_value(i, feature, value)

    def clear(self, i: int) -> None:
        """Configuration i becomes the identity again."""
        self.table.clear(i)

    # -- which sequence gets which configuration ------------------------------------------------
    def assign(self, ids: Ids) -> None:
        """Configuration per sequence of the coming batches ([batch] ids, 0 = unsteered), one int
        for every row, or None (off: the hook returns at once)."""
        self._follow = None
        if ids is None:
            self._ids = None
            return
        t = torch.as_tensor(ids, dtype=torch.int32)
        if t.dim() > 1:
            raise ValueError(f"SaeSteering.assign: ids must be an int or a 1-d sequence, got shape {tuple(t.shape)}")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) > self.capacity):
            raise ValueError(f"SaeSteering.assign: ids must be in 0..{self.capacity}, got {t.tolist()}")
        self._ids = t.to(self.device)

    def use_ids(self, ids: Optional[torch.Tensor]) -> None:
        """Read the per-sequence ids from ``ids``, an int32 [batch] (or 0-d) tensor on the model's
        device that the caller owns and updates in place between steps; compiled and captured
        graphs keep reading it where it is. No value check: the caller keeps ids in 0..capacity
        (larger ids leave their rows untouched). None: off."""
        self._follow = None
        if ids is not None:
            if not isinstance(ids, torch.Tensor) or ids.dtype != torch.int32 or ids.dim() > 1:
                raise ValueError(f"SaeSteering.use_ids: ids must be an int32 tensor of shape [batch] or [], got "
                                 f"{ids.dtype if isinstance(ids, torch.Tensor) else type(ids).__name__}"
                                 f"{'' if not isinstance(ids, torch.Tensor) else f' of shape {tuple(ids.shape)}'}")
            if ids.device != self.device:
                raise ValueError(f"SaeSteering.use_ids: ids are on {ids.device} but the model is on {self.device}")
        self._ids = ids

    def follow(self, steering: Optional[Steering]) -> None:
        """Take the ids of ``steering`` (a ``hf.Steering`` on the same model) at every forward:
        whatever it steers with (its assign / assign_tokens / position rules, an Engine's
        per-slot ids) picks configurations here too; off whenever it is off. None: stop."""
        if steering is not None:
            if not isinstance(steering, Steering):
                raise TypeError(f"SaeSteering.follow: steering must be a steerkit hf.Steering, got "
                                f"{type(steering).__name__}")
            if steering.model is not self.model:
                raise ValueError("SaeSteering.follow: the Steering is attached to another model")
        self._ids = None
        self._follow = steering

    def _config(self, h: torch.Tensor) -> Optional[torch.Tensor]:
        """Per-row configuration ids for h (shape h.shape[:-1]), or None when off."""
        st = self._follow
        if st is not None:
            if st._ids is None:  # the Steering is off for this forward
                return None
            return st._config_for(h)  # built once per forward and shared with its own sites
        ids = self._ids
        if ids is None:
            return None
        if ids.dim() == 0:
            return ids.expand(h.shape[:-1])
        if h.dim() < 2 or h.shape[0] != ids.shape[0]:
            raise ValueError(f"SaeSteering: {ids.shape[0]} sequence ids but the batch at {self.site!r} has shape "
                             f"{tuple(h.shape[:-1])}")
        return ids.view((-1,) + (1,) * (h.dim() - 2)).expand(h.shape[:-1])

    # -- hooks --------------------------------------------------------------------------------
    def _apply(self, h: torch.Tensor) -> Optional[torch.Tensor]:
        config = self._config(h)
        if config is None:
            return None
        # out of place under torch.compile (the reference, fused by Inductor) and when gradients
        # flow; in place (one fused launch on a GPU) otherwise
        if torch.compiler.is_compiling() or (torch.is_grad_enabled() and h.requires_grad):
            return ops.sae_steer(h, config, self.table, backend=self.backend, validate=False)
        ops.sae_steer_(h, config, self.table, backend=self.backend, validate=False)
        return None

    def __repr__(self) -> str:
        src = "off" if self._ids is None and self._follow is None else ("follows a Steering" if self._follow else "ids")
        return f"SaeSteering(site={self.site!r}, {src}, {self.table!r})"


def attach_sae(model: torch.nn.Module, site: str, sae_or_table, capacity: int = 16, max_features: int = 8,
               **kw) -> SaeSteering:
    """Attach fused per-request SAE steering at ``site`` (see the module doc). ``sae_or_table``:
    a ``steerkit.sae.SAE`` (or any object with W_enc, b_enc, W_dec, optional b_dec, threshold
    and activation), whose table of ``capacity`` configurations of up to ``max_features``
    features is built here, or a ``SaeSteeringTable`` used as it is. Keywords: ``dtype`` (of the
    table's copied rows; default the SAE's), ``backend`` (of the eager op)."""
    return SaeSteering(model, site, sae_or_table, capacity=capacity, max_features=max_features, **kw)


__all__ = ["SaeSteering", "attach_sae"]
