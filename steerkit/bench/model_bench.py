"""Steering overhead on whole models: ``steerkit bench-model`` / ``benchmarks/bench_model.py``.

Llama-shaped transformers models with random weights (speed does not depend on the weights), bf16,
steered at the output of every decoder block (``resid_post.{l}``), against the same model
unsteered and against the same intervention written as a plain PyTorch forward hook:

- decode: one new token per sequence after a ``prompt``-token prefill, static KV cache; eager, or
  compiled like transformers' generate compiles it (``torch.compile(model, fullgraph=True,
  mode="reduce-overhead")``: CUDA graphs). Time per decode step, greedy token fed back.
- prefill: one forward over ``[batch, prompt]`` tokens (only the last position's logits).

Every variant's hooks are registered once and switched on and off (a switched-off hook returns at
once, and compiles away), so the compiled variants stay cached side by side and the rounds can be
interleaved: each round measures every variant once; rows report the median and the spread, and
the paired difference (``paired_pct``: the median over rounds of each round's sample against the
same round's unsteered one, with its quartiles), which the host's slow periods do not skew. In
eager mode the switched-off variants' hooks are also taken out of the modules (parked), so the
unsteered baseline runs no hook at all and a steered variant runs only its own.

Variants: ``none``; ``steerkit-<kind>`` and ``hook-<kind>`` for kind in add, scale, ablate,
dynamic, mix; each with one shared configuration (``shared``) or a distinct one per sequence
(``distinct``).
"""
from __future__ import annotations

import gc
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch

SHAPES = {
    # Llama-3.2-1B and Llama-3.1-8B layer shapes (rope scaling does not change the speed)
    "llama-3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                         num_key_value_heads=8, head_dim=64, vocab_size=128256, tie_word_embeddings=True),
    "llama-3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, head_dim=128, vocab_size=128256, tie_word_embeddings=False),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, vocab_size=256, tie_word_embeddings=True),
}
KINDS = ("add", "scale", "ablate", "dynamic", "mix")


def build_model(shape: str, device: str, dtype=torch.bfloat16):
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(**SHAPES[shape], rope_theta=500000.0, max_position_embeddings=8192)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    return model.eval().requires_grad_(False)


class _Params:
    """Random intervention parameters for up to ``n`` configurations (row j = configuration j+1)."""

    def __init__(self, n: int, d: int, device, strength: float = 1.0):
        g = torch.Generator(device="cpu").manual_seed(1)
        r = lambda *s: torch.randn(*s, generator=g).to(device)  # noqa: E731
        self.vec = r(n, d) * 0.05 * strength  # strength 0: the same work, activations unchanged
        self.scale = 0.8 + 0.4 * torch.rand(n, generator=g).to(device)
        u = r(n, d)
        self.dir = u / u.norm(dim=-1, keepdim=True)
        self.dyn_w = r(n, d) / d ** 0.5 * 0.1
        self.dyn_b = torch.ones(n, device=device)

    def spec(self, kind: str, j: int) -> dict:
        add = dict(vector=self.vec[j], strength=1.0)
        scale = dict(scale=float(self.scale[j]))
        ablate = dict(directions=self.dir[j])
        dynamic = dict(dynamic=(self.dyn_w[j], float(self.dyn_b[j])))
        return {"add": add, "scale": scale, "ablate": ablate, "dynamic": dynamic,
                "mix": {**scale, **dynamic, **ablate, **add}}[kind]


class _SteerkitVariant:
    """steerkit at every resid_post, one table per site, one kind of intervention."""

    def __init__(self, model, kind: str, params: _Params, capacity: int, backend: Optional[str] = None):
        from steerkit.integrations import attach

        self.handle = attach(model, [f"resid_post.{l}" for l in range(model.config.num_hidden_layers)],
                             capacity=capacity, max_directions=1, dtype=model.dtype, backend=backend)
        for j in range(capacity):
            self.handle.set(j + 1, {s: params.spec(kind, j) for s in self.handle.sites})
        self.handle.assign(None)

    def on(self, ids: torch.Tensor):
        self.handle.assign(ids)

    def off(self):
        self.handle.assign(None)


class _HookVariant:
    """The same intervention as a plain PyTorch forward hook on every decoder block."""

    def __init__(self, model, kind: str, params: _Params):
        self.kind, self.p, self.ids = kind, params, None
        self.handles = [blk.register_forward_hook(self._hook) for blk in model.model.layers]

    def on(self, ids: torch.Tensor):
        self.ids = ids.long()

    def off(self):
        self.ids = None

    def _hook(self, module, args, out):
        if self.ids is None:
            return None
        h = out[0] if isinstance(out, tuple) else out
        p, j = self.p, self.ids - 1  # configuration ids 1..n -> rows 0..n-1, one per sequence
        v, c, u = p.vec[j].unsqueeze(1), p.scale[j].view(-1, 1, 1), p.dir[j].unsqueeze(1)
        w, b = p.dyn_w[j].unsqueeze(1), p.dyn_b[j].view(-1, 1, 1)
        hf = h.float()
        if self.kind == "add":
            y = hf + v
        elif self.kind == "scale":
            y = c * hf
        elif self.kind == "ablate":
            y = hf - (hf * u).sum(-1, keepdim=True) * u
        elif self.kind == "dynamic":
            y = ((hf * w).sum(-1, keepdim=True) + b) * hf
        else:
            y = c * ((hf * w).sum(-1, keepdim=True) + b) * hf
            y = y - (y * u).sum(-1, keepdim=True) * u + v
        y = y.to(h.dtype)
        return (y,) + tuple(out[1:]) if isinstance(out, tuple) else y


class _Parked:
    """Takes a variant's hooks out of their modules and puts them back (eager runs: a hook that
    is only switched off still costs a Python call per module). steerkit's site handles park
    themselves; plain torch hooks are taken out of their modules' hook dicts."""

    def __init__(self, handles):
        self.sites = [h for h in handles if hasattr(h, "park")]
        self.entries = [(h.hooks_dict_ref(), h.id) for h in handles if not hasattr(h, "park")]
        self.parked: Dict[int, Callable] = {}

    def park(self):
        for h in self.sites:
            h.park()
        for hooks, i in self.entries:
            if hooks is not None and i in hooks:
                self.parked[i] = hooks.pop(i)

    def unpark(self):
        for h in self.sites:
            h.unpark()
        for hooks, i in self.entries:
            if i in self.parked:
                hooks[i] = self.parked.pop(i)


def _handles(variant) -> list:
    return variant.handle._handles if isinstance(variant, _SteerkitVariant) else variant.handles


STEP_SPAN = 512  # pair="step": decode steps on one KV cache before it is filled again


class DecodeSteps:
    """Single eager decode steps on a KV cache of ``length`` positions that runs on
    (``pair="step"`` and the eager diagnostics): ``room(n)`` fills the cache with the prompt
    ``ids`` again when fewer than n steps are left in it, ``step()`` runs the next step (greedy
    token fed back)."""

    def __init__(self, model, cache, length: int, ids: torch.Tensor):
        self.model, self.cache, self.length, self.ids = model, cache, length, ids
        self.pos, self.tok = None, None

    @torch.no_grad()
    def room(self, n: int) -> None:
        S = self.ids.shape[1]
        if self.pos is None or self.pos + n > self.length:
            self.cache.reset()
            out = self.model(input_ids=self.ids, past_key_values=self.cache,
                             cache_position=torch.arange(S, device=self.ids.device), logits_to_keep=1)
            self.pos, self.tok = S, out.logits[:, -1:].argmax(-1)

    @torch.no_grad()
    def step(self):
        pos = torch.full((1,), self.pos, device=self.ids.device, dtype=torch.long)
        self.pos += 1
        out = self.model(input_ids=self.tok, past_key_values=self.cache, cache_position=pos,
                         position_ids=pos.expand(self.ids.shape[0], 1))
        self.tok = out.logits[:, -1:].argmax(-1)
        return out


class EagerProbe:
    """The eager diagnostics' common start (``benchmarks/diag_eager.py``, ``probe_eager_*.py``): a
    model of ``shape`` (bf16 on a GPU, float32 and Triton's interpreter on the CPU) with steerkit's
    add at every resid_post (off until ``sk.on(ids)``), ``ids`` giving every sequence
    configuration 1, and ``step()``: one decode step on a running KV cache, refilled once in
    ``span`` steps."""

    def __init__(self, shape: str = "llama-3.2-1b", batch: int = 1, prompt: int = 32, span: int = 4000):
        from transformers import StaticCache

        self.device = dev = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = build_model(shape, dev, torch.bfloat16 if dev == "cuda" else torch.float32)
        self.params = _Params(4, self.model.config.hidden_size, dev)
        self.sk = _SteerkitVariant(self.model, "add", self.params, 4, None if dev == "cuda" else "triton")
        self.ids = torch.ones(batch, dtype=torch.int32, device=dev)
        self.prompt = torch.randint(0, self.model.config.vocab_size, (batch, prompt), device=dev)
        cache = StaticCache(config=self.model.config, max_cache_len=prompt + span)
        self.decode = DecodeSteps(self.model, cache, prompt + span, self.prompt)

    def step(self):
        self.decode.room(1)
        return self.decode.step()

    def sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()


def _timer(device: str, host: Optional[List[float]] = None):
    """Wall time of fn in µs (CUDA events on a GPU); Python's garbage collector is held off
    during the measurement so that its pauses do not land in one variant's sample (the rounds
    collect once each, between samples). With ``host``
    (a list), the CPU time of this thread during fn (µs) is appended to it: eager decode is bound
    by the host, and the thread's CPU time is not inflated by the machine's other tenants the way
    wall time is (it excludes time the thread was not running)."""
    def run(fn: Callable[[], None]) -> float:
        gc.disable()
        try:
            c0 = time.thread_time()
            if device == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                torch.cuda.synchronize()
                start.record()
                fn()
                end.record()
                c1 = time.thread_time()
                end.synchronize()
                us = 1000.0 * start.elapsed_time(end)
            else:
                t0 = time.perf_counter()
                fn()
                c1 = time.thread_time()
                us = 1e6 * (time.perf_counter() - t0)
            if host is not None:
                host.append(1e6 * (c1 - c0))
            return us
        finally:
            gc.enable()
    return run


def run(shape: str = "llama-3.2-1b", batches: Sequence[int] = (1, 16, 64, 256), modes: Sequence[str] = ("eager",),
        phases: Sequence[str] = ("decode",), kinds: Sequence[str] = KINDS, hook_kinds: Sequence[str] = KINDS,
        assigns: Sequence[str] = ("shared", "distinct"), prompt: int = 128, steps: int = 16, rounds: int = 3,
        prefill_batch: int = 16, prefill_len: int = 2048, device: Optional[str] = None,
        deadline_s: Optional[float] = None, dynamic: Optional[bool] = None, backend: Optional[str] = None,
        strength: float = 1.0, pair: str = "round", reheat: bool = True, log: Callable[[str], None] = print,
        emit: Optional[Callable[[List[dict]], None]] = None) -> List[dict]:
    """Measure and return rows (one per shape, mode, phase, batch, variant, assignment).
    ``dynamic`` goes to torch.compile: None (transformers' default: static first, then a dynamic
    batch dimension from the second batch size on) or True (one dynamic graph for every size).
    ``backend``: steerkit's eager backend (None: automatic; "cuda" builds or loads the CUDA
    extension first, whose launches cost the host less than Triton's). ``emit`` gets each batch
    size's rows as soon as they are measured.

    ``pair``: what each sample's paired difference is taken against. "round": the unsteered
    sample of the same round (one per round, measured first). "adjacent": an unsteered sample
    measured right before it (a round then measures the unsteered model before every variant,
    twice the time): on a host whose speed drifts within a round (eager decode is host-bound),
    the two samples of a pair are then a fraction of a second apart. "step" (eager decode; other
    cases pair as "adjacent"): a sample is one decode step, and each steered step is paired with
    an unsteered step right before it, both timed alone after an untimed step that follows the
    switch, on one KV cache that runs on across samples (re-filled every ``STEP_SPAN`` steps):
    the two steps of a pair are tens of ms apart, not a second, so the host's drift, which moves single steps by
    tens of percent on the H100 machine, cancels best. ``rounds`` is then the number of pairs.

    ``reheat``: each round starts with an untimed sample of the unsteered model, after the round's
    garbage collection. On a GPU at its power limit (the H100 runs 8B prefill at 700 W), the idle
    gap of the collection lets the clock rise, and whatever ran first in the round ran faster:
    the unsteered sample, which every pair is measured against. 8B prefill, add: +1.1% to +5.1%
    in five runs without it, +0.43% eager and +0.02% compiled with it; ``benchmarks/diag_prefill.py``
    gave +1.75% with a 0.3 s idle gap before each round and +0.01% without one."""
    if pair not in ("round", "adjacent", "step"):
        raise ValueError(f"pair must be 'round', 'adjacent' or 'step', got {pair!r}")
    from transformers import StaticCache

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    t_start = time.time()
    if backend == "cuda":
        from steerkit import _cuda_ext

        _cuda_ext.load()
    model = build_model(shape, device)
    n_layers, d = model.config.num_hidden_layers, model.config.hidden_size
    cap = max(list(batches) + ([prefill_batch] if "prefill" in phases else []))
    params = _Params(cap, d, device, strength)
    variants: Dict[str, object] = {"none": None}
    for k in kinds:
        variants[f"steerkit-{k}"] = _SteerkitVariant(model, k, params, cap, backend)
    for k in hook_kinds:
        variants[f"hook-{k}"] = _HookVariant(model, k, params)
    log(f"# {shape}: {n_layers} layers, d={d}, {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B params, "
        f"device {device}, variants {list(variants)}")
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 128)
    if hasattr(torch._dynamo.config, "recompile_limit"):
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 128)
    host_us: List[float] = []  # the thread's CPU time of each measure() (eager: the host-bound cost)
    timer = _timer(device, host_us)
    rows: List[dict] = []

    parked = {name: _Parked(_handles(v)) for name, v in variants.items() if v is not None}
    id_tensors: Dict[tuple, torch.Tensor] = {}

    def switch(name: str, assign: str, B: int, eager: bool = False):
        for other, v in variants.items():
            if v is not None:
                v.off()
                if eager and other != name:
                    parked[other].park()
                else:
                    parked[other].unpark()
        if variants[name] is not None:
            # one ids tensor per assignment, reused: switching a variant back on re-assigns the same
            # tensor, which keeps the sites' launches (as in a loop of generate calls)
            key = (assign, B)
            if key not in id_tensors:
                ids = torch.ones(B, dtype=torch.int32) if assign == "shared" else torch.arange(1, B + 1, dtype=torch.int32)
                id_tensors[key] = ids.to(device)
            variants[name].on(id_tensors[key])

    cases = [("none", "-")] + [(n, a) for n in variants if n != "none" for a in assigns]
    for mode in modes:
        compiled = (torch.compile(model, fullgraph=True, mode="reduce-overhead", dynamic=dynamic)
                    if mode == "compiled" else model)
        for phase in phases:
            for B in (batches if phase == "decode" else [prefill_batch]):
                if deadline_s is not None and time.time() - t_start > deadline_s:
                    log(f"# deadline reached: skipping {mode} {phase} batch {B} and later")
                    return rows
                S = prompt if phase == "decode" else prefill_len
                stepping = pair == "step" and mode == "eager" and phase == "decode"
                reheating = reheat and not stepping  # step samples are host-bound single steps
                ids0 = torch.randint(0, model.config.vocab_size, (B, S), device=device)
                span = max(steps, STEP_SPAN) if stepping else steps
                cache = StaticCache(config=model.config, max_cache_len=S + span + 2) if phase == "decode" else None
                stepper = DecodeSteps(model, cache, S + span + 2, ids0) if stepping else None

                def one_step(case) -> float:
                    """Switch to ``case``, run one untimed decode step, then time one."""
                    switch(case[0], case[1], B, True)
                    stepper.room(2)
                    stepper.step()
                    return timer(stepper.step)

                def measure() -> float:
                    if phase == "prefill":
                        with torch.no_grad():
                            return timer(lambda: compiled(input_ids=ids0, logits_to_keep=1, use_cache=False))
                    cache.reset()
                    with torch.no_grad():
                        out = model(input_ids=ids0, past_key_values=cache, cache_position=torch.arange(S, device=device),
                                    logits_to_keep=1)
                    tok = out.logits[:, -1:].argmax(-1)

                    def decode():
                        nonlocal tok
                        with torch.no_grad():
                            for s in range(steps):
                                pos = torch.full((1,), S + s, device=device, dtype=torch.long)
                                o = compiled(input_ids=tok, past_key_values=cache, cache_position=pos,
                                             position_ids=pos.expand(B, 1))
                                tok = o.logits[:, -1:].argmax(-1)
                    return timer(decode) / steps

                samples: Dict[tuple, List[float]] = {c: [] for c in cases}
                host: Dict[tuple, List[float]] = {c: [] for c in cases}
                t0 = time.time()
                for name, assign in cases:  # warm up: compile and capture each variant
                    switch(name, assign, B, mode == "eager")
                    measure()
                    measure()
                log(f"# {mode} {phase} B={B}: warm-up {time.time() - t0:.0f} s")
                before: Dict[tuple, List[float]] = {c: [] for c in cases}  # the unsteered sample each pairs with
                per_step = steps if phase == "decode" and not stepping else 1

                def sample(case):
                    if stepping:
                        samples[case].append(one_step(case))
                        host[case].append(host_us[-1])
                        return samples[case][-1]
                    switch(case[0], case[1], B, mode == "eager")
                    samples[case].append(measure())
                    host[case].append(host_us[-1] / per_step)
                    return samples[case][-1]

                for _ in range(rounds):
                    gc.collect()
                    if reheating:  # untimed: the collection's idle gap favours what runs next
                        switch(cases[0][0], cases[0][1], B, mode == "eager")
                        measure()
                    if pair == "round" or len(cases) == 1:
                        base_now = sample(cases[0])
                    for case in cases[1:]:
                        if pair != "round":
                            base_now = sample(cases[0])
                        before[case].append(base_now)
                        sample(case)
                before[cases[0]] = samples[cases[0]]
                switch("none", "-", B)  # every hook back in place
                base_xs = samples[("none", "-")]
                base = statistics.median(base_xs)
                host_base = statistics.median(host[("none", "-")])
                for (name, assign), xs in samples.items():
                    med = statistics.median(xs)
                    # paired: each sample against its unsteered sample (the round's, or the one
                    # right before it), so the host's slow and fast periods (eager runs are
                    # host-bound) cancel
                    paired = sorted(100.0 * (x / b - 1.0) for x, b in zip(xs, before[(name, assign)]))
                    row = dict(shape=shape, mode=mode, phase=phase, batch=B, seq=S, variant=name, assign=assign,
                               strength=strength, reheat=reheating,
                               us=med, us_min=min(xs), us_max=max(xs), rounds=rounds, steps=per_step,
                               overhead_pct=100.0 * (med / base - 1.0), paired_pct=statistics.median(paired),
                               paired_q1=paired[len(paired) // 4], paired_q3=paired[(3 * len(paired)) // 4],
                               pair="adjacent" if pair == "step" and not stepping else pair,
                               layers_steered=0 if name == "none" else n_layers,
                               dynamic=str(dynamic) if mode == "compiled" else "-",
                               backend=(backend or "auto") if mode == "eager" else "-",
                               host_us=statistics.median(host[(name, assign)]),
                               host_overhead_pct=100.0 * (statistics.median(host[(name, assign)]) / host_base - 1.0))
                    if phase == "decode":
                        row["tok_s"] = B * 1e6 / med
                    rows.append(row)
                    log(f"{shape:13} {mode:8} {phase:7} B={B:<4} {name:17} {assign:8} {med:10.1f} us "
                        f"[{min(xs):.1f}-{max(xs):.1f}] {row['overhead_pct']:+6.2f}%  paired {row['paired_pct']:+6.2f}% "
                        f"[{row['paired_q1']:+.1f}, {row['paired_q3']:+.1f}]  host CPU {row['host_us']:.0f} us "
                        f"{row['host_overhead_pct']:+6.2f}%")
                if emit is not None:
                    emit(rows[-len(samples):])
                cache = None  # free the KV cache before the next size
        if mode == "compiled":
            torch._dynamo.reset()
    for v in variants.values():
        if isinstance(v, _SteerkitVariant):
            v.handle.detach()
        elif isinstance(v, _HookVariant):
            for h in v.handles:
                h.remove()
    return rows
