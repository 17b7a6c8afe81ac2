"""Steering Hugging Face transformers causal LMs at named sites.

Sites (``l`` = decoder block index):
  resid_pre.{l}   input of block l
  resid_post.{l}  output of block l (applied before resid_pre.{l+1} when both are used)
  attn_out.{l}    attention output before it joins the residual stream (after the post-attention
                  norm in Gemma 2/3, whose normed output is what joins)
  mlp_out.{l}     MLP output before it joins the residual stream (after Gemma's post-MLP norm)
  attn_heads.{l}  the per-head attention outputs before the output projection, concatenated
                  ([n_heads * head_dim]; head h is the slice h*head_dim:(h+1)*head_dim). Vectors and
                  directions may be given as [n_heads, head_dim]; see ``head_vector``.
  module:<path>   the output of any submodule, by its dotted path (for unsupported architectures)

Every site holds a SteeringTable; configuration ids are shared across sites (id i is the same
request everywhere, the identity at sites it does not steer), so one per-sequence id tensor drives
all of them. The sites run the fused op in place (out of place when gradients are needed) inside a
replacement of the module's ``forward`` (see ``_Calls``: no torch hook, whose dispatch costs every
call of the module host time), and eagerly each site reuses one of its last two launches while
its inputs are unchanged (``Steering._hook``). The tables of all sites of one width live in one TableStack:
under torch.compile the sites read their rows out of its stacked tensors (ops.steer_stacked), so
a compiled model's inputs and guards do not grow with the number of sites.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import torch

from steerkit import ops
from steerkit.ops._registry import bump_versions
from steerkit.ops.steer import prepared_launch
from steerkit.steering import SteeringTable

# model_type -> (path of the decoder block list, attention output projection in a block,
#                attention output site child, mlp output site child)
FAMILIES = {
    "llama": ("model.layers", "self_attn.o_proj", "self_attn", "mlp"),
    "mistral": ("model.layers", "self_attn.o_proj", "self_attn", "mlp"),
    "qwen2": ("model.layers", "self_attn.o_proj", "self_attn", "mlp"),
    "qwen3": ("model.layers", "self_attn.o_proj", "self_attn", "mlp"),
    "phi3": ("model.layers", "self_attn.o_proj", "self_attn", "mlp"),
    "gemma2": ("model.layers", "self_attn.o_proj", "post_attention_layernorm", "post_feedforward_layernorm"),
    "gemma3_text": ("model.layers", "self_attn.o_proj", "post_attention_layernorm", "post_feedforward_layernorm"),
    "gpt2": ("transformer.h", "attn.c_proj", "attn", "mlp"),
    "gpt_neox": ("gpt_neox.layers", "attention.dense", "attention", "mlp"),
}
SITE_KINDS = ("resid_pre", "resid_post", "attn_out", "mlp_out", "attn_heads")

Spec = Mapping[str, object]  # keyword arguments of SteeringTable.set


class UnsupportedModelError(ValueError):
    pass


def _get(root: torch.nn.Module, path: str) -> torch.nn.Module:
    mod = root
    for part in path.split("."):
        mod = mod[int(part)] if part.isdigit() else getattr(mod, part)
    return mod


def _family(model) -> tuple:
    mt = getattr(getattr(model, "config", None), "model_type", None)
    if mt not in FAMILIES:
        raise UnsupportedModelError(
            f"steerkit cannot name sites in model_type {mt!r}; supported: {sorted(FAMILIES)}. "
            f"For another architecture name sites by module path, e.g. 'module:model.layers.3.mlp' "
            f"(the output of that submodule is steered).")
    return FAMILIES[mt]


def num_layers(model) -> int:
    return len(_get(model, _family(model)[0]))


def hidden_size(model) -> int:
    cfg = model.config
    return int(getattr(cfg, "hidden_size", None) or cfg.n_embd)


def resolve_site(model, site: str):
    """(module, hook kind) for a site name; hook kind is 'pre' (block input) or 'out'."""
    if site.startswith("module:"):
        try:
            return _get(model, site[len("module:"):]), "out"
        except (AttributeError, IndexError, ValueError) as e:
            raise ValueError(f"site {site!r}: no submodule at that path ({e})") from None
    kind, _, idx = site.partition(".")
    if kind not in SITE_KINDS or not idx.isdigit():
        raise ValueError(f"site {site!r} is not one of {[k + '.<layer>' for k in SITE_KINDS]} or 'module:<path>'")
    layers_path, o_proj, attn_site, mlp_site = _family(model)
    layers = _get(model, layers_path)
    layer = int(idx)
    if not 0 <= layer < len(layers):
        raise ValueError(f"site {site!r}: the model has decoder blocks 0..{len(layers) - 1}")
    block = layers[layer]
    if kind == "resid_pre":
        return block, "pre"
    if kind == "resid_post":
        return block, "out"
    if kind == "attn_heads":
        return _get(block, o_proj), "pre"
    return getattr(block, attn_site if kind == "attn_out" else mlp_site), "out"


def num_heads(model) -> int:
    cfg = model.config
    return int(getattr(cfg, "num_attention_heads", None) or cfg.n_head)


def site_width(model, site: str) -> int:
    """Width of the activation at a site: hidden_size, or n_heads * head_dim for attn_heads."""
    if site.startswith("attn_heads."):
        proj, _ = resolve_site(model, site)
        w = getattr(proj, "in_features", None) or getattr(proj, "nx", None)  # Linear, or GPT-2's Conv1D
        if w is None:
            raise UnsupportedModelError(f"site {site!r}: cannot tell the width of {type(proj).__name__}")
        return int(w)
    if site.startswith("module:"):  # a Linear's output width, else the residual width
        return int(getattr(resolve_site(model, site)[0], "out_features", None) or hidden_size(model))
    return hidden_size(model)


def head_vector(model, head: int, v: torch.Tensor, layer: int = 0) -> torch.Tensor:
    """A vector for an ``attn_heads`` site that is ``v`` ([head_dim]) in head ``head`` and zero in
    every other head (use it as a vector, or as a direction to ablate within one head)."""
    width, n = site_width(model, f"attn_heads.{layer}"), num_heads(model)
    hd = width // n
    if not 0 <= head < n:
        raise ValueError(f"head {head} out of range: the model has {n} attention heads")
    if v.shape != (hd,):
        raise ValueError(f"head_vector: v must have shape ({hd},) (head_dim), got {tuple(v.shape)}")
    out = v.new_zeros(width)
    out[head * hd:(head + 1) * hd] = v
    return out


def _flat_heads(site: str, spec: Spec) -> Spec:
    """attn_heads sites accept [n_heads, head_dim] vectors and [r, n_heads, head_dim] directions."""
    if not site.startswith("attn_heads."):
        return spec
    spec = dict(spec)
    v = spec.get("vector")
    if isinstance(v, torch.Tensor) and v.dim() == 2:
        spec["vector"] = v.reshape(-1)
    u = spec.get("directions")
    if isinstance(u, torch.Tensor) and u.dim() == 3:
        spec["directions"] = u.reshape(u.shape[0], -1)
    return spec


def _replace_first(x, new):
    if isinstance(x, tuple):
        return (new,) + tuple(x[1:])
    if isinstance(x, list):
        return [new] + list(x[1:])
    return new


class _Calls:
    """steerkit's functions at one module, run by a replacement of its ``forward`` (an instance
    attribute, so ``type(module).forward`` is untouched): ``pre`` functions see the call's
    (args, kwargs) before the module's own forward and may return new ones; ``post`` functions
    see its output and may return a new one; each list runs in the order added. A forward hook
    would do the same, but any registered hook sends every call of the module through torch's
    general hook dispatch (about 1 µs warm per call, several inside a real decode step); this
    costs one Python call. When the last function is removed the module's own forward is back
    (or, if something replaced ``forward`` after steerkit did, this one stays as a pass-through)."""

    def __init__(self, module: torch.nn.Module):
        self.module = module
        self.own = module.__dict__.get("forward")  # an instance forward set before us (accelerate's)
        inner = module.forward
        self.pre: List[Callable] = []  # fn(args, kwargs) -> None or (args, kwargs)
        self.post: List[Callable] = []  # fn(h) -> None or a new h, h: the output's first element

        def forward(*args, **kwargs):
            for fn in self.pre:
                new = fn(args, kwargs)
                if new is not None:
                    args, kwargs = new
            out = inner(*args, **kwargs)
            for fn in self.post:
                new = fn(out[0] if isinstance(out, (tuple, list)) else out)
                if new is not None:
                    out = _replace_first(out, new)
            return out

        self.forward = forward
        module.forward = forward
        module.__dict__[_KEY] = self  # on the module, not in a global table: dropped with it

    @staticmethod
    def at(module: torch.nn.Module) -> "_Calls":
        calls = module.__dict__.get(_KEY)
        return calls if calls is not None else _Calls(module)

    def remove(self, fn) -> None:
        for fns in (self.pre, self.post):
            fns[:] = [f for f in fns if f is not fn]
        if self.pre or self.post or self.module.__dict__.get("forward") is not self.forward:
            return  # still in use, or wrapped by someone else since: stays, a pass-through once empty
        if self.own is None:
            del self.module.forward
        else:
            self.module.forward = self.own
        del self.module.__dict__[_KEY]


_KEY = "_steerkit_calls"


class SiteHandle:
    """Removes one function from a module's steerkit calls (``hook_site``); ``park`` / ``unpark``
    take it out and put it back (benchmarks switching variants)."""

    def __init__(self, module: torch.nn.Module, kind: str, fn: Callable):
        self.module, self.kind, self.fn = module, kind, fn
        self.active = False
        self.unpark()

    def unpark(self) -> None:
        if not self.active:
            calls = _Calls.at(self.module)
            (calls.pre if self.kind == "pre" else calls.post).append(self.fn)
            self.active = True

    def park(self) -> None:
        if self.active:
            self.module.__dict__[_KEY].remove(self.fn)
            self.active = False

    remove = park


def site_calls(module: torch.nn.Module, kind: Optional[str] = None) -> int:
    """How many steerkit functions run at ``module`` (0: its own forward runs as it is); of one
    ``kind`` only: "pre" (before its forward) or "out" (on its output)."""
    calls = module.__dict__.get(_KEY)
    if calls is None:
        return 0
    return {None: len(calls.pre) + len(calls.post), "pre": len(calls.pre), "out": len(calls.post)}[kind]


def hook_site(module: torch.nn.Module, kind: str, fn: Callable[[torch.Tensor], Optional[torch.Tensor]]) -> SiteHandle:
    """Run ``fn`` at a resolved site (``resolve_site``) on the site's hidden states h; a returned
    tensor replaces h, None leaves it (fn may have edited it in place). ``kind`` "pre": the
    module's input (positional or ``hidden_states=``); else its output (the first element of a
    tuple output). Returns the handle (``remove()``)."""
    if kind == "pre":
        def pre(args, kwargs):
            if args:
                new = fn(args[0])
                return None if new is None else ((new,) + tuple(args[1:]), kwargs)
            new = fn(kwargs["hidden_states"])
            return None if new is None else (args, {**kwargs, "hidden_states": new})
        return SiteHandle(module, "pre", pre)

    return SiteHandle(module, "out", fn)


class SiteHook:
    """Base of the one-hook handles (SAE splicing, SAE steering): ``detach`` removes the hook
    (the model computes exactly what it did before); also a context manager."""
    _handle = None

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.detach()
        return False


class Steering:
    """Steering attached to a model: per-site tables, shared configuration ids, hooks.

    Use ``add``/``set``/``clear`` to manage configurations ({site: SteeringTable.set kwargs}),
    ``assign`` to give each sequence of the next batches its configuration (0 = unsteered), and
    ``detach`` (or the context manager) to restore the model exactly.
    """

    def __init__(self, model: torch.nn.Module, sites: Iterable[str], capacity: int = 16,
                 max_directions: int = 1, dtype: torch.dtype = torch.float32,
                 backend: Optional[str] = None):
        self.model = model
        self.backend = backend
        param = next(model.parameters())
        self.device = param.device
        self.sites: List[str] = list(dict.fromkeys(sites))
        if not self.sites:
            raise ValueError("Steering needs at least one site")
        self.tables: Dict[str, SteeringTable] = {}
        self._handles = []
        self._ids: Optional[torch.Tensor] = None  # per sequence, int32, or a 0-d id for all rows
        self._tokens: Optional[torch.Tensor] = None  # or one id per token (packed batches)
        self._rule = "all"  # which absolute positions are steered (see assign)
        self._prompt_len: Optional[torch.Tensor] = None  # [batch] real prompt tokens
        self._pad: Optional[torch.Tensor] = None  # [batch, prompt length] True on padding
        self._pos: Optional[torch.Tensor] = None  # position_ids of the current forward
        self._configs = {}  # eager: per-token ids per (leading shape, device); see _config_for
        self._epoch = 0  # counts assignments: the sites' kept launches (see _hook) hold while it stands
        self._assignment = None  # what the current epoch was made for (see _assigned)
        self._used = set()
        self._pos_handle = None  # the positions hook, registered once a position rule needs it
        # the tables of all sites of one width live in one TableStack: compiled, the hooks read
        # their rows out of its stacked tensors, a few graph inputs for all sites together
        width = {site: site_width(model, site) for site in self.sites}  # also checks the names
        widths = list(dict.fromkeys(width.values()))
        stacked = {w: SteeringTable.stacked(list(width.values()).count(w), w, capacity, max_directions,
                                            device=self.device, dtype=dtype) for w in widths}
        free = {w: iter(tables) for w, tables in stacked.items()}
        self.tables = {site: next(free[width[site]]) for site in self.sites}
        self._stacks = [stacked[w][0].stack for w in widths]  # hooks name theirs by index
        try:
            for site in self.sites:
                module, kind = resolve_site(model, site)
                table = self.tables[site]
                self._handles.append(hook_site(module, kind, self._hook(table, widths.index(width[site]), table.slot)))
        except Exception:
            self.detach()
            raise

    # -- configurations ------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        return next(iter(self.tables.values())).capacity

    def set(self, i: int, config: Mapping[str, Spec]) -> int:
        """Set configuration i: {site: SteeringTable.set keyword arguments}; sites not named
        are the identity for i."""
        unknown = set(config) - set(self.tables)
        if unknown:
            raise ValueError(f"sites {sorted(unknown)} are not attached; attached: {self.sites}")
        for site, table in self.tables.items():
            if site in config:
                table.set(i, **dict(_flat_heads(site, config[site])))
            else:
                table.clear(i)  # identity at the sites this configuration does not steer
        self._used.add(i)
        return i

    def add(self, config: Mapping[str, Spec]) -> int:
        """Store a configuration in a free id and return the id."""
        free = next((i for i in range(1, self.capacity + 1) if i not in self._used), None)
        if free is None:
            raise RuntimeError(f"all {self.capacity} configurations are in use; clear one or attach with a larger capacity")
        return self.set(free, config)

    def clear(self, i: int) -> None:
        for table in self.tables.values():
            table.clear(i)
        self._used.discard(i)

    # -- which sequence gets which configuration ----------------------------------------------
    def assign(self, ids: Union[int, Sequence[int], torch.Tensor, None], positions: Union[str, int] = "all",
               attention_mask: Optional[torch.Tensor] = None) -> None:
        """Configuration per sequence of the coming batches ([batch] ids, 0 = unsteered), one id
        for every row (an int), or None (steering off: hooks return at once).

        positions: which absolute token positions are steered: "all", "prompt", "generated",
        "last_prompt" (the last prompt token), or an int p (positions >= p). "prompt",
        "generated" and "last_prompt" need ``attention_mask`` (the prompt batch's mask), which
        also keeps padding tokens untouched.
        """
        if ids is None:
            self._tokens = self._ids = None
            return
        t = torch.as_tensor(ids, dtype=torch.int32)
        if t.dim() > 1:
            raise ValueError(f"assign: ids must be an int or a 1-d sequence, got shape {tuple(t.shape)}")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) > self.capacity):
            raise ValueError(f"assign: ids must be in 0..{self.capacity}")
        rules = ("all", "prompt", "generated", "last_prompt")
        if not (positions in rules or (isinstance(positions, int) and not isinstance(positions, bool) and positions >= 0)):
            raise ValueError(f"assign: positions must be one of {rules} or an int >= 0, got {positions!r}")
        if positions in ("prompt", "generated", "last_prompt") and attention_mask is None:
            raise ValueError(f"assign: positions={positions!r} needs the prompt batch's attention_mask")
        if (positions != "all" or attention_mask is not None) and self._pos_hook_missing():
            raise ValueError("assign: position rules need a supported model family (position_ids of its blocks)")
        if positions != "all" or attention_mask is not None:
            self._watch_positions()
        self._rule = positions
        if attention_mask is not None:
            mask = attention_mask.to(self.device).bool()
            self._pad, self._prompt_len = ~mask, mask.sum(dim=1)
        else:
            self._pad = self._prompt_len = None
        self._tokens, self._ids = None, t.to(self.device)
        self._assigned()

    def assign_tokens(self, config: torch.Tensor) -> None:
        """One configuration id per token, shaped like the hidden states without d: [batch, seq],
        e.g. [1, total] for a packed batch (see ``packed``). Replaces ``assign``."""
        t = torch.as_tensor(config, dtype=torch.int32)
        if t.numel() and (int(t.min()) < 0 or int(t.max()) > self.capacity):
            raise ValueError(f"assign_tokens: ids must be in 0..{self.capacity}")
        self._rule, self._pad, self._prompt_len = "all", None, None
        self._tokens = t.to(self.device)
        self._ids = self._tokens  # steering on
        self._assigned()

    def use_ids(self, ids: Optional[torch.Tensor]) -> None:
        """Read the per-sequence configuration ids from ``ids``, an int32 [batch] tensor on the
        model's device that the caller owns and updates in place between steps (a serving
        engine's slot table: compiled and captured graphs keep reading it where it is). No value
        check here: the caller keeps the ids in 0..capacity. None: steering off."""
        self._tokens, self._rule, self._pad, self._prompt_len = None, "all", None, None
        self._ids = ids
        if ids is not None:
            self._assigned()

    def _assigned(self) -> None:
        """A new epoch (the sites' kept launches lapse) unless this assignment is the one the
        current epoch was made for: the same ids (or tokens) and padding tensors and the same
        rule. Switching steering off and on again with the same ids tensor keeps the launches;
        in-place writes to the ids are seen by the sites themselves (their version)."""
        now = (self._ids, self._tokens, self._pad, self._rule)
        last = self._assignment
        if last is None or any(a is not b for a, b in zip(now[:3], last[:3])) or now[3] != last[3]:
            self._epoch += 1
            self._assignment = now  # holds the tensors: identity stays meaningful

    @staticmethod
    def packed(ids: Sequence[int], lengths: Sequence[int]) -> torch.Tensor:
        """Per-token ids [1, sum(lengths)] of a packed batch: sequence i's id over its tokens."""
        ids_t = torch.as_tensor(ids, dtype=torch.int32)
        lens = torch.as_tensor(lengths, dtype=torch.long)
        if ids_t.shape != lens.shape:
            raise ValueError(f"packed: {ids_t.numel()} ids for {lens.numel()} sequence lengths")
        return torch.repeat_interleave(ids_t, lens).view(1, -1)

    def _pos_hook_missing(self) -> bool:
        mt = getattr(getattr(self.model, "config", None), "model_type", None)
        return mt not in FAMILIES

    def _watch_positions(self) -> None:
        """Register the hook that reads each forward's position_ids (every block gets the same
        ones: read at block 0). Only position rules need it. Without it a compiled model has
        one route fewer to this object for Dynamo to re-check on every call, and in eager mode
        the per-forward configuration (keyed on position_ids) survives between decode steps."""
        if self._pos_handle is None:
            mt = self.model.config.model_type
            first_block = _get(self.model, FAMILIES[mt][0])[0]
            self._pos_handle = SiteHandle(first_block, "pre", self._positions_hook)
            self._handles.append(self._pos_handle)

    def _positions_hook(self, args, kwargs):
        self._pos = kwargs.get("position_ids")

    def _config_for(self, h: torch.Tensor) -> torch.Tensor:
        """Per-token configuration ids for h. Eagerly, one tensor per leading shape (a model's
        prefill and its decode steps each have theirs), rebuilt only when the ids, their
        in-place version, the rule or this forward's position_ids change; without gradients it
        is rewritten in place, so it stays the same object and ``ops.steer_`` keeps reusing its
        prepared launches for it (with gradients a new tensor is made: one saved for backward
        must not be overwritten)."""
        if torch.compiler.is_compiling():
            return self._build_config(h)
        ids = self._tokens if self._tokens is not None else self._ids
        src = (ids, ids._version, self._rule, self._pad, self._pos)
        key = (h.shape[:-1], h.get_device())  # get_device: an int, cheaper than a device object
        e = self._configs.get(key)
        if e is not None:
            s = e[0]
            if s[0] is ids and s[1] == src[1] and s[2] == src[2] and s[3] is src[3] and s[4] is src[4]:
                return e[1]
        config = self._build_config(h)
        if e is not None and e[2] and not torch.is_grad_enabled():
            config = e[1].copy_(config)
        else:
            if len(self._configs) >= 8:  # prompts of many lengths: keep the few latest shapes
                self._configs.pop(next(iter(self._configs)))
            config = config.clone(memory_format=torch.contiguous_format)  # never a view of the ids
        self._configs[key] = (src, config, not torch.is_grad_enabled())
        return config

    def _build_config(self, h: torch.Tensor) -> torch.Tensor:
        if self._tokens is not None:
            if tuple(self._tokens.shape) != tuple(h.shape[:-1]):
                raise ValueError(f"steerkit: per-token ids of shape {tuple(self._tokens.shape)} assigned but the "
                                 f"hidden states have shape {tuple(h.shape[:-1])}")
            return self._tokens
        ids = self._ids
        if ids.dim() == 0:
            config = ids.expand(h.shape[:-1])
        elif h.dim() < 2 or h.shape[0] != ids.shape[0]:
            raise ValueError(f"steerkit: {ids.shape[0]} sequence ids assigned but the batch has "
                             f"shape {tuple(h.shape[:-1])}")
        else:
            config = ids.view((-1,) + (1,) * (h.dim() - 2)).expand(h.shape[:-1])
        if self._rule == "all" and self._pad is None:
            return config
        keep = self._position_mask(h)
        return torch.where(keep, config, torch.zeros_like(config))

    def _position_mask(self, h: torch.Tensor) -> torch.Tensor:
        """[batch, seq] True where the rule steers (absolute positions; padding never)."""
        B, S = h.shape[0], h.shape[1]
        pos = self._pos
        if pos is None or pos.shape[-1] != S:
            raise ValueError("steerkit: position rules need the position_ids of this forward")
        pos = pos.to(h.device).expand(B, S)
        rule, n = self._rule, None if self._prompt_len is None else self._prompt_len.view(-1, 1)
        if rule == "all":
            keep = torch.ones_like(pos, dtype=torch.bool)
        elif rule == "prompt":
            keep = pos < n
        elif rule == "generated":
            keep = pos >= n
        elif rule == "last_prompt":
            keep = pos == n - 1
        else:
            keep = pos >= rule
        if self._pad is not None and S == self._pad.shape[1]:  # the prompt's forward: skip padding
            keep = keep & ~self._pad
        return keep

    def _hook(self, table: SteeringTable, stack: int, slot: int):
        """The function a site runs on its hidden states h.

        Eagerly, each site keeps its last two launches (``steerkit.ops.steer.prepared_launch``) and
        reuses one while its inputs are the same: no new assignment (``_epoch``), the ids unwritten (their
        version), the same position_ids object or per-token ids rewritten in place for new ones
        (``_config_for``), the same backend request and table tensors, and
        h of the same type, shape, dtype and device, without autograd. That is every layer of
        every eager decode step after the first, where this is the only host work steering adds,
        so it checks those few things and launches; anything else takes the general path."""
        # kept[i]: (epoch, ids version, position_ids, shape, dtype, device, backend, table
        # replacements, launch, config), or None; two of them, the latest first, so that a
        # prefill does not evict the decode steps' launch. Inside a decode step every attribute
        # lookup and method call costs several times what it does in a warm loop, so the checks
        # read closure variables where they can and the launch is a plain closure (Prepared.bound).
        kept = [None, None]
        is_compiling, grad_on, bump, Tensor = torch.compiler.is_compiling, torch.is_grad_enabled, bump_versions, torch.Tensor

        def fn(h):
            ids = self._ids
            if ids is None:
                return None
            if is_compiling():
                # out of place (a new output, as a plain hook returns, fuses best), through self,
                # not the table: one route to the stacked tensors for every site's hook
                return ops.steer_stacked(h, self._build_config(h), self._stacks[stack], slot)
            for e in kept:
                # new position_ids (position rules: every forward) rewrite the per-token ids in place,
                # the same tensor the launch reads, so the launch holds while _config_for returns it
                if (e is not None and e[0] == self._epoch and e[1] == ids._version
                        and e[3] == h.shape and e[4] is h.dtype and type(h) is Tensor and e[5] == h.get_device()
                        and e[6] == self.backend and e[7] == table._replaced and not grad_on()
                        and h.is_contiguous() and (e[2] is self._pos or self._config_for(h) is e[9]) and e[8](h)):
                    if e is not kept[0]:
                        kept.reverse()
                    bump((h,))
                    return None
            config = self._config_for(h)
            if h.requires_grad and grad_on():  # out of place when gradients flow
                return ops.steer(h, config, table, backend=self.backend, validate=False)
            ops.steer_(h, config, table, backend=self.backend, validate=False)
            run = prepared_launch(h, config, table, self.backend)
            launch = None if run is None else run.direct()
            if launch is not None:  # holds config too: a prepared launch keeps only its address
                kept[1], kept[0] = kept[0], (self._epoch, ids._version, self._pos, h.shape, h.dtype, h.get_device(),
                                             self.backend, table._replaced, launch, config)
            return None
        return fn

    # -- lifetime -------------------------------------------------------------------------------
    def detach(self) -> None:
        """Remove every hook: the model computes exactly what it did before attaching."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self._pos_handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.detach()
        return False


def attach(model, sites: Iterable[str], capacity: int = 16, max_directions: int = 1, **kw) -> Steering:
    """Attach steering tables at ``sites`` of a transformers causal LM (see the module doc)."""
    return Steering(model, sites, capacity, max_directions, **kw)


@contextmanager
def steer(model, config: Mapping[str, Spec], positions: Union[str, int] = "all",
          attention_mask: Optional[torch.Tensor] = None, **kw):
    """Steer every sequence with one configuration inside the ``with`` block (``positions`` and
    ``attention_mask`` as in ``Steering.assign``).

    >>> with steerkit.integrations.steer(model, {"resid_post.5": dict(vector=v, strength=4.0)}):
    ...     model.generate(...)
    """
    r = max((1 if s["directions"].dim() == 1 else s["directions"].shape[0]
             for s in config.values() if s.get("directions") is not None), default=1)
    handle = Steering(model, config.keys(), capacity=1, max_directions=r, **kw)
    try:
        handle.set(1, config)
        handle.assign(1, positions=positions, attention_mask=attention_mask)
        yield handle
    finally:
        handle.detach()


@torch.no_grad()
def capture(model, sites: Iterable[str], **inputs) -> Dict[str, torch.Tensor]:
    """Run the model once on ``inputs`` (input_ids, attention_mask, ...) and return the
    activation at every site ([batch, seq, d], detached copies)."""
    got: Dict[str, torch.Tensor] = {}
    handles = []
    try:
        for site in dict.fromkeys(sites):
            module, kind = resolve_site(model, site)  # after any steering there (registered earlier)
            handles.append(hook_site(module, kind, lambda h, site=site: got.__setitem__(site, h.detach().clone())))
        model(**inputs)
    finally:
        for h in handles:
            h.remove()
    return got
