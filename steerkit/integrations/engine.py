"""A steered generation engine for transformers causal LMs: fixed slots, a per-slot static KV
cache, one CUDA graph per batch-size bucket for the whole decode step, per-request steering.

    engine = Engine(model, steering=["resid_post.6"], max_batch=64, max_len=512)
    rid = engine.submit(prompt_ids, steering={"resid_post.6": dict(vector=v, strength=4.0)},
                        max_new_tokens=64)
    for rid, token in engine.stream():
        ...

How it works (see docs/generate.md):
- Slots. ``max_batch`` slots, each holding at most one request. Requests join a free slot between
  steps (their prompt is prefilled into that slot's cache, eagerly) and leave when they stop.
- Cache. Per layer, keys and values [max_batch, kv_heads, max_len, head_dim]. Every slot has its
  own position: a forward writes row i's new keys at (slot_i, start_i + t). Decode attends over
  all ``max_len`` positions of the slot with a boolean mask built on the device from positions.
- Decode step. Model forward on one token per slot of the bucket (the first B slots), greedy
  argmax or sampling, the next token written into the input buffer, positions advanced; all of
  it reads and writes persistent buffers, so on a GPU it is captured once per (bucket, greedy or
  sampling) in a CUDA graph and replayed. The forward is compiled with torch.compile
  (fullgraph) before capture. Host work per step: one small copy of the new tokens (a step
  behind with ``overlap``), stop conditions, slot bookkeeping.
- Steering. The hooks of a ``steerkit.integrations.Steering`` read a persistent per-slot
  configuration-id buffer; a request's configuration lives in the steering tables. Joining,
  leaving and changing steering write to those tensors in place: nothing recompiles or
  recaptures. Tables are declared (``expect``) for every kind of intervention up front; if a
  table later holds a kind the graphs were not built for, the graphs are dropped and captured
  again (counted in ``captures``).
- Sampling. Gumbel-max with noise from a counter-based hash of (request seed, position, token):
  reproducible per request whatever the batch around it, no generator state in the graph.
  ``temperature`` 0 is greedy; ``top_p`` keeps the smallest set of tokens whose probability
  reaches p.
"""
from __future__ import annotations

import collections
import contextlib
import itertools
import random
import types
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from .hf import Steering, attach

Prompt = Union[Sequence[int], torch.Tensor, str]
SteeringSpec = Union[None, int, Mapping[str, Mapping[str, object]]]

# -- attention ------------------------------------------------------------------------------------
_ATTN = {}  # name registered with transformers -> the model's own implementation it falls back to


def _attention_name(original: str) -> str:
    """Register (once) the slot attention that falls back to ``original`` ('sdpa' or 'eager')."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    name = f"steerkit_slots_{original}"
    if name in _ATTN:
        return name
    if original == "sdpa":
        fallback = sdpa_attention_forward
    else:
        from transformers.models.llama.modeling_llama import eager_attention_forward as fallback

    def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kw):
        """query [B, Hq, S, D]; key, value [B, Hkv, max_len, D] (the slots' caches);
        attention_mask bool [B, 1, S, max_len] (True: attend)."""
        B, Hq, S, D = query.shape
        Hkv = key.shape[1]
        if S == 1 and kw.get("softcap") is None and dropout == 0.0:
            # decode: the query heads that share a kv head become that head's S = Hq / Hkv
            # "queries", so the cache is read once without repeating kv heads
            q = query.reshape(B, Hkv, Hq // Hkv, D)
            out = F.scaled_dot_product_attention(q, key, value, attn_mask=attention_mask, scale=scaling)
            return out.reshape(B, Hq, 1, D).transpose(1, 2), None
        mask = attention_mask
        if original == "eager":  # additive float mask
            mask = torch.zeros(mask.shape, dtype=query.dtype, device=query.device).masked_fill(
                ~mask, torch.finfo(query.dtype).min)
        return fallback(module, query, key, value, mask, scaling=scaling, dropout=dropout, **kw)

    AttentionInterface.register(name, attention)
    _ATTN[name] = original
    return name


class SlotCache:
    """Static per-slot KV cache (transformers' ``Cache.update`` protocol).

    Before a forward, set ``rows`` ([n] slot of each batch row, or None: rows are slots 0..n-1)
    and ``start`` ([n] int64 position of each row's first token). ``update`` writes the new keys
    and values of every row at its own positions and returns the rows' whole caches.
    Callers keep start + seq_len <= max_len (the engine checks prompts and token budgets)."""

    def __init__(self, n_layers: int, slots: int, kv_heads: int, max_len: int, head_dim: int, device, dtype):
        shape = (slots, kv_heads, max_len, head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layers)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layers)]
        for t in self.keys + self.values:
            torch._dynamo.mark_static_address(t)
        self.max_len = max_len
        self.steps = torch.arange(max_len, device=device)
        self.slot_ids = torch.arange(slots, device=device)
        self.rows: Optional[torch.Tensor] = None
        self.start: Optional[torch.Tensor] = None
        self.is_compileable = True

    def update(self, key_states, value_states, layer_idx, cache_kwargs=None):
        n, _, S, _ = key_states.shape
        k, v = self.keys[layer_idx], self.values[layer_idx]
        pos = self.start.view(n, 1) + self.steps[:S].view(1, S)  # [n, S]
        slots = self.slot_ids[:n] if self.rows is None else self.rows
        rows = slots.view(n, 1).expand(n, S)
        # k[rows, :, pos] is [n, S, heads, head_dim]. Written into the whole cache, never into a
        # view of the bucket's slots: Inductor turned a write into k[:n] into a copy of the view
        # (at 256 slots, bucket 64: 0.6 ms of a 2.7 ms H100 decode step)
        k[rows, :, pos] = key_states.transpose(1, 2).to(k.dtype)
        v[rows, :, pos] = value_states.transpose(1, 2).to(v.dtype)
        if self.rows is None:
            return k[:n], v[:n]  # decode reads the bucket's slots in place
        return k[self.rows], v[self.rows]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0  # positions are per slot; the engine always passes position_ids and a 4-D mask


# -- sampling -------------------------------------------------------------------------------------
_M32 = 0xFFFFFFFF


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (xor-shift-multiply) on int64 tensors holding values < 2^32; both
    multipliers are < 2^31, so no product overflows int64 (same bits on every device)."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x5BD1E995) & _M32
    return x ^ (x >> 16)


def gumbel_noise(seed: torch.Tensor, pos: torch.Tensor, vocab: int) -> torch.Tensor:
    """[B, vocab] standard Gumbel noise, a pure function of (seed[b], pos[b], token)."""
    h = _mix32(_mix32(seed & _M32) ^ (pos & _M32))
    tok = torch.arange(vocab, device=seed.device, dtype=torch.int64)
    x = _mix32((h.view(-1, 1) + tok.view(1, -1) * 0x9E3779B1) & _M32)
    u = ((x >> 8).to(torch.float32) + 0.5) * (1.0 / (1 << 24))  # in (0, 1)
    return -torch.log(-torch.log(u))


def argmax_rows(x: torch.Tensor, chunks: int = 64) -> torch.Tensor:
    """``x.argmax(-1)`` of a [B, V] tensor (the first index of each row's maximum), in two stages:
    a whole-vocabulary argmax is one long serial reduction per row (measured on the H100 at
    B = 64, V = 128256: 103 us of a 2.1 ms decode step); chunks of the row reduce in parallel,
    then the first chunk holding the maximum wins (indices rise within and across chunks)."""
    B, V = x.shape
    if V < 64 * chunks:
        return x.argmax(-1)
    C = -(-V // chunks)
    padded = F.pad(x, (0, chunks * C - V), value=float("-inf"))
    vals, idx = padded.view(B, chunks, C).max(-1)
    j = vals.argmax(-1, keepdim=True)
    return (j * C + idx.gather(-1, j)).squeeze(-1)


def choose(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor, seed: torch.Tensor,
           pos: torch.Tensor, sample: bool) -> torch.Tensor:
    """Next token per row from float32 logits [B, V]: argmax where temperature is 0, else a sample
    of softmax(logits / temperature) restricted to the top-p nucleus (Gumbel-max)."""
    greedy = argmax_rows(logits)
    if not sample:
        return greedy
    z = logits / temperature.clamp(min=1e-6).view(-1, 1)
    probs = torch.softmax(z, dim=-1)
    sp = probs.sort(dim=-1, descending=True).values
    before = sp.cumsum(-1) - sp  # probability mass ranked above each token
    p = top_p.view(-1, 1)
    thr = torch.where(before < p, sp, torch.ones_like(sp)).amin(-1, keepdim=True)  # least kept prob
    thr = torch.where(p >= 1.0, torch.zeros_like(thr), thr)
    z = z.masked_fill(probs < thr, float("-inf"))
    picked = argmax_rows(z + gumbel_noise(seed, pos, logits.shape[-1]))
    return torch.where(temperature > 0, picked, greedy)


# -- compilation ----------------------------------------------------------------------------------
# Inductor options for the decode step: kernel names that say which op they come from (profiles)
# and compiled graphs cached on disk. With these defaults the engine compiles buckets of two sizes
# differently (H100, 1B shape; benchmarks/results/generate-1b-h100-session5.txt and
# probe-engine-256-h100.txt):
# - below SMALL_BUCKET (latency-bound steps): coordinate-descent tuning of the Triton kernels'
#   block sizes, as gpt-fast sets it; it took the batch-1 step from 1.59 to 1.35 ms;
# - from SMALL_BUCKET up: no tuning (within 1.1% there, and 2.5x the compile time), and rows
#   up to PERSISTENT_ROW_LIMIT elements normalised by one persistent reduction: each row is loaded
#   once and kept in registers. Inductor's own limit is 1024 elements, so wider rows (2048 and 4096
#   in the benchmark shapes) were reduced by loops that load the row, and every table row the
#   steering (which Inductor fuses into the RMSNorm) gathers, once per dependent reduction: a
#   distinct mixed configuration per request cost 1.8% of the batch-256 step, now 0.8%.
ENGINE_INDUCTOR = {"triton.unique_kernel_names": True, "fx_graph_cache": True}
SMALL_BUCKET = 16
PERSISTENT_ROW_LIMIT = 8192
_ENGINE_IDS = itertools.count()


def _own_code(method):
    """``method`` bound to a copy of its function with a code object of its own: Dynamo keeps its
    compiled code per code object, so no engine ever reuses (or is limited by) another engine's
    compilations of the same model (another steering, other shapes, other options)."""
    fn = method.__func__
    code = fn.__code__.replace(co_name=f"{fn.__name__}_{next(_ENGINE_IDS)}")
    own = types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__, fn.__closure__)
    return types.MethodType(own, method.__self__)


def _row_reductions():
    """Inductor's heuristics with persistent reductions for rows up to PERSISTENT_ROW_LIMIT
    elements (a context manager; a no-op where this torch lacks the interface)."""
    try:
        from torch._inductor.choices import InductorChoices
        from torch._inductor.runtime.hints import ReductionHint
        from torch._inductor.virtualized import V
    except ImportError:
        return contextlib.nullcontext()

    class RowChoices(InductorChoices):
        @staticmethod
        def should_use_persistent_reduction(features, cooperative_reduction):
            if not cooperative_reduction and features.get_reduction_hint() == ReductionHint.INNER:
                return V.graph.sizevars.statically_known_leq(features.reduction_numel, PERSISTENT_ROW_LIMIT)
            return InductorChoices.should_use_persistent_reduction(features, cooperative_reduction)

    return V.set_choices_handler(RowChoices())


@contextlib.contextmanager
def _compile_context(persistent_rows: bool):
    """Settings for the engine's compilations only (not global): Dynamo guards on module hooks, so
    hooks attached or removed after a compilation recompile instead of being silently ignored
    (Dynamo skips those guards by default); room for one compilation per bucket; persistent row
    reductions (``_row_reductions``) if asked."""
    cfg = torch._dynamo.config
    patch = {"skip_nnmodule_hook_guards": False}
    for name in ("cache_size_limit", "recompile_limit"):
        if hasattr(cfg, name):
            patch[name] = max(getattr(cfg, name), 64)
    with cfg.patch(**patch), (_row_reductions() if persistent_rows else contextlib.nullcontext()):
        yield


# -- requests -------------------------------------------------------------------------------------
@dataclass
class Request:
    rid: int
    prompt: List[int]
    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int
    stop: frozenset
    config: int  # steering configuration id (0: unsteered)
    owns_config: bool  # the engine added the configuration for this request (cleared at the end)
    steer_prompt: bool
    tokens: List[int] = field(default_factory=list)
    slot: int = -1
    done: bool = False


class Engine:
    """Batched, steered generation over fixed slots (see the module doc).

    Args:
        model: a transformers causal LM (Llama, Mistral, Qwen2/3, Phi-3 and others with rotary
            positions and 'sdpa' or 'eager' attention; no sliding window shorter than max_len).
        steering: None (no steering), a ``Steering`` from ``attach`` (configurations the caller
            manages, plus those the engine adds for requests), or site names to attach.
        max_batch: slots (requests in flight). max_len: prompt + new tokens per request, at most.
        buckets: batch sizes with a graph each; a step runs the smallest bucket holding every
            busy slot (requests fill the lowest free slots). ``max_batch`` is always a bucket.
        compile: True (torch.compile, Inductor), False (eager), or a torch.compile backend;
            default: True on a CUDA device, False elsewhere.
        cuda_graphs: capture the decode step (default: on a CUDA device).
        overlap: launch step t+1 before reading step t's tokens (default: with CUDA graphs). A
            steering change made after seeing token k then applies from token k+2.
        capacity, max_directions, dtype: of the tables when ``steering`` is site names
            (capacity default: max_batch).
        expect: ``SteeringTable.expect`` keyword arguments for every table (default: every kind).
        prefill_tokens: padded tokens per prefill forward (requests joining together).
        tokenizer: to accept text prompts.
        dynamic: torch.compile's ``dynamic`` (default False: a static graph per bucket).
        inductor: Inductor options of the decode step's compilation. Default ``ENGINE_INDUCTOR``,
            with coordinate-descent tuning for buckets below ``SMALL_BUCKET`` and persistent row
            reductions for the others. Options given here apply to every bucket, with persistent
            row reductions: {} for Inductor's defaults; add ``max_autotune=True`` to autotune
            the matmuls (minutes of compilation).
    """

    def __init__(self, model, steering: Union[None, Steering, Iterable[str]] = None, *, max_batch: int = 64,
                 max_len: int = 512, buckets: Sequence[int] = (1, 16, 64, 256), compile: Union[None, bool, str] = None,
                 cuda_graphs: Optional[bool] = None, overlap: Optional[bool] = None, capacity: Optional[int] = None,
                 max_directions: int = 1, dtype: torch.dtype = torch.float32, expect: Optional[dict] = None,
                 prefill_tokens: int = 8192, tokenizer=None, dynamic: Optional[bool] = False,
                 inductor: Optional[Mapping[str, object]] = None):
        cfg = model.config
        if max_batch < 1 or max_len < 2:
            raise ValueError(f"Engine: max_batch must be >= 1 and max_len >= 2, got {max_batch}, {max_len}")
        attn = cfg._attn_implementation
        if attn not in ("sdpa", "eager"):
            raise ValueError(f"Engine: the model's attention implementation must be 'sdpa' or 'eager' "
                             f"(it gets a 4-D mask), got {attn!r}; load it with attn_implementation='sdpa'")
        window = getattr(cfg, "sliding_window", None)
        if "sliding_attention" in (getattr(cfg, "layer_types", None) or ()) and window and window < max_len:
            raise ValueError(f"Engine: sliding-window layers (window {window}) are not supported with "
                             f"max_len {max_len} > window")
        self.model = model
        self.device = next(model.parameters()).device
        self.tokenizer = tokenizer
        self.max_batch, self.max_len = int(max_batch), int(max_len)
        self.buckets = sorted({int(b) for b in buckets if 0 < int(b) < max_batch} | {self.max_batch})
        self.cuda_graphs = self.device.type == "cuda" if cuda_graphs is None else bool(cuda_graphs)
        if self.cuda_graphs and self.device.type != "cuda":
            raise ValueError("Engine: cuda_graphs=True needs the model on a CUDA device")
        self.overlap = self.cuda_graphs if overlap is None else bool(overlap)
        self.prefill_tokens = int(prefill_tokens)
        self._attn = _attention_name(attn)

        # steering
        self._owns_steering = False
        if steering is not None and not isinstance(steering, Steering):
            steering = attach(model, list(steering), capacity=capacity or max_batch, max_directions=max_directions,
                              dtype=dtype)
            self._owns_steering = True
        self.steering: Optional[Steering] = steering
        if steering is not None:
            steering.use_ids(None)
            for t in steering.tables.values():
                t.expect(**(expect if expect is not None else
                            dict(scale=True, dynamic=True, directions=t.max_directions, vector=True)))

        # the cache and the per-slot state the decode step reads and writes
        heads = cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
        kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
        dev = self.device
        cache_len = -(-self.max_len // 16) * 16  # aligned rows for the attention kernels' masks
        self.cache = SlotCache(cfg.num_hidden_layers, self.max_batch, kv_heads, cache_len, head_dim, dev,
                               next(model.parameters()).dtype)
        n = self.max_batch
        self._tok = torch.zeros(n, 1, dtype=torch.int64, device=dev)  # next input token per slot
        self._pos = torch.zeros(n, dtype=torch.int64, device=dev)  # its position
        self._cfg = torch.zeros(n, dtype=torch.int32, device=dev)  # steering configuration id
        self._temp = torch.zeros(n, dtype=torch.float32, device=dev)
        self._top_p = torch.ones(n, dtype=torch.float32, device=dev)
        self._seed = torch.zeros(n, dtype=torch.int64, device=dev)
        for t in (self._tok, self._pos, self._cfg, self._temp, self._top_p, self._seed):
            torch._dynamo.mark_static_address(t)
        self._host = [torch.zeros(n, dtype=torch.int64, pin_memory=self.cuda_graphs) for _ in range(2)]

        if compile is None:
            compile = self.device.type == "cuda"
        self.compiled = bool(compile)
        self._compile_kw = None
        self._small_below = 0  # buckets below this size compile as small ones (see SMALL_BUCKET)
        if compile:
            kw = dict(fullgraph=True, dynamic=dynamic)
            if compile is not True:  # a backend name or callable
                kw["backend"] = compile
            else:  # Inductor, with its options (ENGINE_INDUCTOR unless given; {} for Inductor's defaults)
                opts = dict(ENGINE_INDUCTOR if inductor is None else inductor)
                if opts:
                    kw["options"] = opts
                if inductor is None:
                    self._small_below = SMALL_BUCKET
            self._compile_kw = kw
        self._fns: Dict[bool, Callable] = {}
        self._graphs: Dict[Tuple[int, bool], torch.cuda.CUDAGraph] = {}
        self._pool = None
        self._uses_at_capture = None
        self.captures = 0  # CUDA graphs captured so far
        self.steps = 0  # decode steps run

        self._slots: List[Optional[Request]] = [None] * n
        self._waiting: collections.deque = collections.deque()
        self._requests: Dict[int, Request] = {}
        self._ids = itertools.count(1)
        self._pending = None  # (host buffer, event, [(slot, request)]) of the step in flight
        self._flip = 0
        self._rng = random.Random(0)

    # -- public API -----------------------------------------------------------------------------
    def submit(self, prompt: Prompt, steering: SteeringSpec = None, *, max_new_tokens: int = 64,
               temperature: float = 0.0, top_p: float = 1.0, seed: Optional[int] = None,
               stop: Optional[Iterable[int]] = None, steer_prompt: bool = True) -> int:
        """Queue a request; it joins a slot at the next step. Returns its id.

        prompt: token ids ([n] list or tensor) or text (needs ``tokenizer``).
        steering: None (unsteered), a configuration id of ``self.steering`` (shared, managed by the
            caller), or {site: SteeringTable.set kwargs} (a configuration of its own, freed when
            the request ends).
        stop: token ids that end the request (emitted, then stop); None: the model's eos tokens.
        steer_prompt: False steers only the generated tokens (the prompt's forward is unsteered).
        """
        ids = self._prompt_ids(prompt)
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"submit: max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
        if len(ids) + max_new_tokens > self.max_len:
            raise ValueError(f"submit: prompt ({len(ids)} tokens) + max_new_tokens ({max_new_tokens}) exceeds "
                             f"max_len {self.max_len}")
        if not (temperature >= 0.0 and temperature < float("inf")):
            raise ValueError(f"submit: temperature must be a finite number >= 0, got {temperature!r}")
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"submit: top_p must be in (0, 1], got {top_p!r}")
        if stop is None:
            eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
            stop = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
        stop = frozenset(int(s) for s in stop)
        config, owns = self._config(steering, "submit")
        rid = next(self._ids)
        seed = self._rng.getrandbits(32) if seed is None else int(seed)
        r = Request(rid, ids, max_new_tokens, float(temperature), float(top_p), seed, stop, config, owns,
                    bool(steer_prompt))
        self._requests[rid] = r
        self._waiting.append(r)
        return rid

    def set_steering(self, rid: int, steering: SteeringSpec) -> None:
        """Change a request's steering between steps (a new configuration, a shared id, or None)."""
        r = self._request(rid)
        if r.done:
            raise ValueError(f"set_steering: request {rid} has finished")
        if r.owns_config and isinstance(steering, Mapping):
            self.steering.set(r.config, steering)  # rewrite its tables in place
        else:
            config, owns = self._config(steering, "set_steering")
            self._release(r)
            r.config, r.owns_config = config, owns
        if r.slot >= 0:
            self._cfg[r.slot] = r.config

    def cancel(self, rid: int) -> None:
        """End a request now (its slot is free for the next one)."""
        r = self._request(rid)
        if not r.done:
            self._waiting = collections.deque(w for w in self._waiting if w is not r)
            self._finish(r)

    def tokens(self, rid: int) -> List[int]:
        return list(self._request(rid).tokens)

    def done(self, rid: int) -> bool:
        return self._request(rid).done

    @property
    def busy(self) -> bool:
        return bool(self._waiting) or any(r is not None for r in self._slots) or self._pending is not None

    def step(self) -> List[Tuple[int, int]]:
        """Admit waiting requests, run one decode step, return the new (request id, token) events
        (with ``overlap``, those of the previous step)."""
        events: List[Tuple[int, int]] = []
        with torch.no_grad():
            self._admit(events)
            active = [(s, r) for s, r in enumerate(self._slots) if r is not None]
            launched = None
            if active:
                B = next(b for b in self.buckets if b > active[-1][0])
                self._decode(B, any(r.temperature > 0 for _, r in active))
                launched = self._copy_out(B, active)
            if self._pending is not None:
                events += self._collect(self._pending)
            self._pending = launched
            if not self.overlap and self._pending is not None:
                events += self._collect(self._pending)
                self._pending = None
        return events

    def stream(self) -> Iterator[Tuple[int, int]]:
        """(request id, token) events until every submitted request has finished."""
        while self.busy:
            yield from self.step()

    def generate(self, prompts: Sequence[Prompt], steering: Union[SteeringSpec, Sequence[SteeringSpec]] = None,
                 **kw) -> List[List[int]]:
        """Submit every prompt (steering: one spec for all or one per prompt), run to the end and
        return the generated tokens of each. A ``seed`` gives prompt i the seed ``seed + i``."""
        per = list(steering) if isinstance(steering, (list, tuple)) else [steering] * len(prompts)
        if len(per) != len(prompts):
            raise ValueError(f"generate: {len(per)} steering specs for {len(prompts)} prompts")
        seed = kw.pop("seed", None)
        rids = [self.submit(p, s, seed=None if seed is None else seed + i, **kw)
                for i, (p, s) in enumerate(zip(prompts, per))]
        for _ in self.stream():
            pass
        return [self.tokens(r) for r in rids]

    def close(self) -> None:
        """Detach the steering the engine attached and drop the graphs."""
        self._graphs.clear()
        if self.steering is not None:
            self.steering.use_ids(None)
            if self._owns_steering:
                self.steering.detach()

    # -- requests -------------------------------------------------------------------------------
    def _request(self, rid: int) -> Request:
        if rid not in self._requests:
            raise KeyError(f"no request with id {rid}")
        return self._requests[rid]

    def _prompt_ids(self, prompt: Prompt) -> List[int]:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError("submit: a text prompt needs Engine(..., tokenizer=...)")
            prompt = self.tokenizer(prompt)["input_ids"]
        ids = [int(t) for t in (prompt.reshape(-1).tolist() if isinstance(prompt, torch.Tensor) else prompt)]
        if not ids:
            raise ValueError("submit: prompt is empty")
        vocab = self.model.config.vocab_size
        if min(ids) < 0 or max(ids) >= vocab:
            raise ValueError(f"submit: prompt token ids must be in 0..{vocab - 1}")
        return ids

    def _config(self, steering: SteeringSpec, what: str) -> Tuple[int, bool]:
        if steering is None or (isinstance(steering, int) and not isinstance(steering, bool) and steering == 0):
            return 0, False
        if self.steering is None:
            raise ValueError(f"{what}: steering given but the engine has no steering (Engine(..., steering=sites))")
        if isinstance(steering, Mapping):
            return self.steering.add(steering), True
        if isinstance(steering, int) and not isinstance(steering, bool):
            if not 1 <= steering <= self.steering.capacity:
                raise ValueError(f"{what}: steering id must be in 0..{self.steering.capacity}, got {steering}")
            return steering, False
        raise TypeError(f"{what}: steering must be None, a configuration id or {{site: spec}}, "
                        f"got {type(steering).__name__}")

    def _release(self, r: Request) -> None:
        if r.owns_config:
            self.steering.clear(r.config)
            r.owns_config = False

    def _finish(self, r: Request) -> None:
        r.done = True
        self._release(r)
        if r.slot >= 0 and self._slots[r.slot] is r:
            self._slots[r.slot] = None

    def _after_token(self, r: Request, token: int) -> None:
        r.tokens.append(token)
        if token in r.stop or len(r.tokens) >= r.max_new_tokens:
            self._finish(r)

    # -- prefill --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _mode(self, config_ids: torch.Tensor, rows: Optional[torch.Tensor], start: torch.Tensor):
        """The model, cache and steering set up for one engine forward."""
        cfg = self.model.config
        old = cfg._attn_implementation
        cfg._attn_implementation = self._attn
        self.cache.rows, self.cache.start = rows, start
        if self.steering is not None:
            self.steering.use_ids(config_ids)
        try:
            yield
        finally:
            cfg._attn_implementation = old
            if self.steering is not None:
                self.steering.use_ids(None)

    def _admit(self, events: List[Tuple[int, int]]) -> None:
        free = [s for s, r in enumerate(self._slots) if r is None]
        joining = []
        while self._waiting and free:
            r = self._waiting.popleft()
            r.slot = free.pop(0)
            self._slots[r.slot] = r
            joining.append(r)
        joining.sort(key=lambda r: len(r.prompt))
        i = 0
        while i < len(joining):  # chunks of at most prefill_tokens padded tokens
            j = i + 1
            while j < len(joining) and (j + 1 - i) * len(joining[j].prompt) <= self.prefill_tokens:
                j += 1
            chunk = joining[i:j]
            for r, t in zip(chunk, self._prefill(chunk)):
                events.append((r.rid, t))
                self._after_token(r, t)
            i = j

    def _prefill(self, reqs: List[Request]) -> List[int]:
        dev, n = self.device, len(reqs)
        lens = torch.tensor([len(r.prompt) for r in reqs])
        S = int(lens.max())
        ids = torch.zeros(n, S, dtype=torch.int64)
        for i, r in enumerate(reqs):
            ids[i, :len(r.prompt)] = torch.tensor(r.prompt)
        slots = torch.tensor([r.slot for r in reqs], device=dev)
        start = torch.zeros(n, dtype=torch.int64, device=dev)
        pos = start.view(n, 1) + self.cache.steps[:S].view(1, S)
        mask = self.cache.steps.view(1, 1, 1, -1) <= pos.view(n, 1, S, 1)  # causal, per row
        cfg = torch.tensor([r.config if r.steer_prompt else 0 for r in reqs], dtype=torch.int32, device=dev)
        last = lens - 1
        keep = torch.unique(last)  # logits only at the rows' last prompt positions
        at = torch.searchsorted(keep, last)
        with self._mode(cfg, slots, start):
            out = self.model(input_ids=ids.to(dev), attention_mask=mask, position_ids=pos,
                             past_key_values=self.cache, use_cache=True, logits_to_keep=keep.to(dev))
        logits = out.logits[torch.arange(n, device=dev), at.to(dev)].float()
        temp = torch.tensor([r.temperature for r in reqs], device=dev)
        top_p = torch.tensor([r.top_p for r in reqs], device=dev)
        seed = torch.tensor([r.seed for r in reqs], dtype=torch.int64, device=dev)
        first = choose(logits, temp, top_p, seed, last.to(dev), any(r.temperature > 0 for r in reqs))
        self._tok[slots, 0] = first
        self._pos[slots] = lens.to(dev)
        self._cfg[slots] = torch.tensor([r.config for r in reqs], dtype=torch.int32, device=dev)
        self._temp[slots], self._top_p[slots], self._seed[slots] = temp, top_p, seed
        return first.tolist()

    # -- decode ---------------------------------------------------------------------------------
    def _decode_body(self, tok, temp, top_p, seed, sample: bool):
        """One decode step on the first B slots; pos is the cache's ``start`` (persistent)."""
        pos = self.cache.start
        B = tok.shape[0]
        mask = self.cache.steps.view(1, 1, 1, -1) <= pos.view(B, 1, 1, 1)
        out = self.model(input_ids=tok, attention_mask=mask, position_ids=pos.view(B, 1),
                         past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        logits = out.logits[:, -1]
        # greedy: argmax of the model's own logits (casting first changes no argmax, costs a pass)
        nxt = choose(logits.float(), temp, top_p, seed, pos, True) if sample else argmax_rows(logits)
        tok.copy_(nxt.view(B, 1))
        pos.copy_((pos + 1).clamp(max=self.cache.max_len - 1))  # a finished slot may run on: stay in bounds

    def _forward_decode(self, B: int, sample: bool) -> None:
        small = B < self._small_below
        with self._mode(self._cfg[:B], None, self._pos[:B]), (_compile_context(not small) if self.compiled
                                                              else contextlib.nullcontext()):
            self._fn(small)(self._tok[:B], self._temp[:B], self._top_p[:B], self._seed[:B], sample)

    def _fn(self, small: bool):
        """The decode step: eager, or compiled (small buckets, see SMALL_BUCKET, have a compiled
        function of their own, with tuned Triton kernels)."""
        if self._compile_kw is None:
            return self._decode_body
        fn = self._fns.get(small)
        if fn is None:
            kw = dict(self._compile_kw)
            if small:
                kw["options"] = dict(kw["options"], coordinate_descent_tuning=True)
            fn = self._fns[small] = torch.compile(_own_code(self._decode_body), **kw)
        return fn

    def _uses(self):
        return None if self.steering is None else tuple(t.uses for t in self.steering.tables.values())

    def _decode(self, B: int, sample: bool) -> None:
        self.steps += 1
        if not self.cuda_graphs:
            self._forward_decode(B, sample)
            return
        if self._graphs and self._uses() != self._uses_at_capture:
            warnings.warn("steerkit Engine: a steering table now holds a kind of intervention the captured "
                          "graphs were not built for; recompiling and capturing again (declare kinds with "
                          "Engine(expect=...) to avoid this)")
            self._graphs.clear()
        graph = self._graphs.get((B, sample))
        if graph is None:
            graph = self._capture(B, sample)
        graph.replay()

    def _capture(self, B: int, sample: bool) -> "torch.cuda.CUDAGraph":
        """Warm up (compile) on a side stream, then capture one decode step for bucket B. The
        warm-up steps run for real, so the slots' tokens and positions are restored after them
        (their cache writes land at positions that are written again before being read)."""
        saved = self._tok.clone(), self._pos.clone()
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(2):
                self._forward_decode(B, sample)
        torch.cuda.current_stream().wait_stream(s)
        self._tok.copy_(saved[0])
        self._pos.copy_(saved[1])
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            self._forward_decode(B, sample)
        self._graphs[(B, sample)] = graph
        self._uses_at_capture = self._uses()
        self.captures += 1
        return graph

    def _copy_out(self, B: int, active):
        host = self._host[self._flip][:B]
        self._flip ^= 1
        if self.cuda_graphs:
            host.copy_(self._tok[:B, 0], non_blocking=True)
            event = torch.cuda.Event()
            event.record()
        else:
            host.copy_(self._tok[:B, 0])
            event = None
        return host, event, active

    def _collect(self, pending) -> List[Tuple[int, int]]:
        host, event, active = pending
        if event is not None:
            event.synchronize()
        toks = host.tolist()
        events = []
        for s, r in active:
            if r.done:  # finished while this step was in flight: its token is dropped
                continue
            events.append((r.rid, toks[s]))
            self._after_token(r, toks[s])
        return events
