"""Splicing an SAE into a transformers model at a site (``resid_post.6``, ``mlp_out.3``, ...).

At the site the activation ``h`` becomes, with ``f = sae.encode(h)`` and ``f' = edit(f)``:

- ``error_term=True`` (default): ``h + (decode(f') - decode(f))``: only the change the edit makes
  to the reconstruction is added, so the SAE's reconstruction error stays in the model. Without
  an edit the hook leaves ``h`` untouched (the output is bit-identical to the unspliced model).
- ``error_term=False``: ``decode(f')``: the model runs on the SAE's reconstruction.

``edit`` is a function of the features ([..., F] -> [..., F]) or a dict of clamps
``{feature: value}`` (the feature is set to the value at every token). Math is float32; the
result is rounded once to h's dtype.
"""
from __future__ import annotations

from typing import Callable, Mapping, Optional, Union

import torch

from .hf import SiteHook, hook_site, resolve_site, site_width

Edit = Union[None, Callable[[torch.Tensor], torch.Tensor], Mapping[int, float]]


def _clamp_edit(clamps: Mapping[int, float], F: int) -> Callable[[torch.Tensor], torch.Tensor]:
    items = sorted(clamps.items())
    for i, v in items:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < F:
            raise ValueError(f"splice: edit clamp feature {i!r} must be an int in 0..{F - 1}")
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not torch.isfinite(torch.tensor(float(v))):
            raise ValueError(f"splice: edit clamp value for feature {i} must be a finite number, got {v!r}")
    idx = torch.tensor([i for i, _ in items], dtype=torch.long)
    val = torch.tensor([float(v) for _, v in items])

    def edit(f: torch.Tensor) -> torch.Tensor:
        out = f.clone()
        out[..., idx.to(f.device)] = val.to(device=f.device, dtype=f.dtype)
        return out

    return edit


class SAESplice(SiteHook):
    """An SAE spliced into a model (see the module doc). ``set_edit`` changes the edit in place,
    ``detach`` (or leaving the ``with`` block) removes the hook: the model is exactly as before.
    With ``record=True`` the features of the last forward are kept in ``features`` (float32)."""

    def __init__(self, model: torch.nn.Module, site: str, sae, error_term: bool = True, edit: Edit = None,
                 record: bool = False):
        module, kind = resolve_site(model, site)
        width = site_width(model, site)
        if sae.d != width:
            raise ValueError(f"splice: the SAE reads {sae.d}-wide activations but site {site!r} is {width} wide")
        if sae.site is not None and sae.site != site:
            raise ValueError(f"splice: the SAE was trained at {sae.site!r}, not {site!r} (set sae.site = None to force)")
        self.model, self.site, self.sae = model, site, sae
        self.error_term = bool(error_term)
        self.record = record
        self.features: Optional[torch.Tensor] = None
        self.set_edit(edit)
        self._handle = hook_site(module, kind, self.apply)

    def set_edit(self, edit: Edit) -> None:
        """Replace the edit (a function of the features, a dict of clamps, or None)."""
        if edit is None or callable(edit):
            self._edit = edit
        elif isinstance(edit, Mapping):
            self._edit = _clamp_edit(edit, self.sae.F)
        else:
            raise ValueError(f"splice: edit must be None, a function of the features or a dict {{feature: value}}, "
                             f"got {type(edit).__name__}")

    def apply(self, h: torch.Tensor) -> Optional[torch.Tensor]:
        """The spliced activation for h (None when h is left as it is)."""
        if self.error_term and self._edit is None and not self.record:
            return None
        sae = self.sae
        hs = h.to(sae.W_enc.dtype)
        f = sae.encode(hs).float()
        if self.record:
            self.features = f.detach()
        if self.error_term and self._edit is None:
            return None
        f2 = f if self._edit is None else self._edit(f)
        if not isinstance(f2, torch.Tensor) or f2.shape != f.shape:
            raise ValueError(f"splice: edit must return a tensor of shape {tuple(f.shape)}, got "
                             f"{tuple(f2.shape) if isinstance(f2, torch.Tensor) else type(f2).__name__}")
        if not self.error_term:
            return sae.decode(f2.float(), hs.float()).to(h.dtype)
        delta = sae.decode(f2.float(), hs.float()) - sae.decode(f, hs.float())
        return (h.float() + delta).to(h.dtype)



def splice(model: torch.nn.Module, site: Optional[str], sae, error_term: bool = True, edit: Edit = None,
           record: bool = False) -> SAESplice:
    """Splice ``sae`` into ``model`` at ``site`` (default: the SAE's own ``site``). Returns a
    handle that is also a context manager:

    >>> with splice(model, "resid_post.6", sae, edit={1234: 8.0}):
    ...     model.generate(...)
    """
    site = site or sae.site
    if site is None:
        raise ValueError("splice: the SAE has no site; pass site='resid_post.<layer>' (or another site name)")
    return SAESplice(model, site, sae, error_term=error_term, edit=edit, record=record)


def features(model: torch.nn.Module, site: Optional[str], sae, **inputs) -> torch.Tensor:
    """Run the model once on ``inputs`` and return the SAE features at ``site`` ([batch, seq, F],
    float32), leaving the model's output untouched."""
    with torch.no_grad(), splice(model, site, sae, record=True) as handle:
        model(**inputs)
    return handle.features


__all__ = ["SAESplice", "splice", "features"]
