"""End-to-end steered generation: ``steerkit bench-generate`` / ``benchmarks/bench_generate.py``.

Llama-shaped models with random weights (model_bench.SHAPES), bf16 on a GPU. Each measurement
generates ``new_tokens`` greedy tokens for ``batch`` prompts of ``prompt`` random tokens (no early
stop) and reports:

- ``tok_s``: batch * new_tokens / wall time of the whole generation (prefill included);
- ``ms_per_token``: per-token decode latency, (T(new_tokens) - T(1)) / (new_tokens - 1), where
  T(1) is a generation of one token (the prefill); ``decode_tok_s`` = batch / ms_per_token;
- ``replay_ms`` (engine paths, CUDA graphs): one captured decode step replayed alone, back to
  back: the GPU's time per step without the host loop around it;
- ``floor_ms``: the weight-read floor of one decode step (bytes of the weights over the measured
  device copy bandwidth) and ``pct_of_floor`` = floor / latency.

Paths: ``engine`` (steerkit.integrations.engine: slots, per-slot static cache, compiled decode
step captured in a CUDA graph per bucket), ``hf-compiled`` (transformers' generate with the static
cache, which it compiles with CUDA graphs on a GPU), ``hf-eager`` (generate, dynamic cache),
``repeng`` and ``steering-vectors`` (their hooks around eager generate, one shared vector: they
have no per-request steering). Steering (at every decoder block output, ``resid_post.{l}``):
``unsteered``; ``shared`` (one mix configuration for every request); ``distinct-<kind>`` (a
configuration per request; kind add, scale, ablate or mix = scale + dynamic scale + ablation + add);
``hook-add`` (a distinct vector per request added by a plain PyTorch forward hook).

Work runs in the order of ``plan``: the headline numbers first, so that a run cut by ``deadline_s``
keeps them. Rows are written as they are measured.
"""
from __future__ import annotations

import fnmatch
import gc
import json
import os
import statistics
import time
import types
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from .model_bench import SHAPES, _HookVariant, _Params, build_model  # noqa: F401 (SHAPES: for the CLI)

PATHS = ("engine", "engine-plain", "engine-tuned", "engine-autotune", "hf-compiled", "hf-eager", "repeng",
         "steering-vectors")
# the engine's Inductor options per engine path: ENGINE_INDUCTOR (the default), Inductor's own
# defaults, ENGINE_INDUCTOR with coordinate-descent tuning of the Triton kernels, and with the
# matmuls autotuned (minutes of compilation)
ENGINE_PATHS = {"engine": None, "engine-plain": {}, "engine-tuned": "tuned", "engine-autotune": "autotune"}
STEERS = ("unsteered", "shared", "distinct-add", "distinct-scale", "distinct-ablate", "distinct-mix", "hook-add")
HEADLINE_1B, HEADLINE_8B = "llama-3.2-1b", "llama-3.1-8b"
EXPECT = {"add": dict(vector=True), "scale": dict(scale=True), "ablate": dict(directions=1),
          "mix": dict(scale=True, dynamic=True, directions=1, vector=True)}


def supported(path: str, steer: str) -> bool:
    if path in ("repeng", "steering-vectors"):
        return steer == "shared"
    if path in ENGINE_PATHS:
        return steer != "hook-add"
    if steer == "hook-add":
        return path == "hf-eager"
    return True


def plan(shapes: Sequence[str], batches: Sequence[int], variants: Sequence[str] = ("*",)) -> List[Tuple]:
    """(shape, path, steer, batch) work items, headline first, filtered by ``variants`` (patterns
    of 'path:steer', e.g. 'engine:*' or '*:distinct-mix'). When every pattern names its batch
    and optionally its shape ('llama-3.2-1b/engine:unsteered@1'), the items are exactly those, in
    the patterns' order."""
    items: List[Tuple] = []
    if variants and all("@" in v for v in variants):
        for v in variants:
            where, _, b = v.rpartition("@")
            shape_pat, _, ps = where.rpartition("/")
            for shape in shapes:
                for path in PATHS:
                    for steer in STEERS:
                        item = (shape, path, steer, int(b))
                        if (fnmatch.fnmatch(shape, shape_pat or "*") and fnmatch.fnmatch(f"{path}:{steer}", ps)
                                and supported(path, steer) and item not in items):
                            items.append(item)
        return items

    def add(shape, path, steer, B):
        item = (shape, path, steer, B)
        if (shape in shapes and B in batches and supported(path, steer) and item not in items
                and any(fnmatch.fnmatch(f"{path}:{steer}", v) for v in variants)):
            items.append(item)

    for steer in ("unsteered", "distinct-mix"):
        for B in (1, 64, 256):
            add(HEADLINE_1B, "engine", steer, B)
    add(HEADLINE_8B, "engine", "unsteered", 1)
    add(HEADLINE_8B, "engine", "distinct-mix", 1)
    add(HEADLINE_1B, "hf-compiled", "unsteered", 64)
    add(HEADLINE_1B, "hf-eager", "hook-add", 64)
    add(HEADLINE_1B, "hf-eager", "unsteered", 64)
    add(HEADLINE_1B, "repeng", "shared", 64)
    add(HEADLINE_1B, "steering-vectors", "shared", 64)
    for shape in shapes:  # then everything else, grouped by shape (one model in memory at a time)
        for path in PATHS:  # and by batch (steered transformers items of one batch share a compilation)
            for B in batches:
                for steer in STEERS:
                    add(shape, path, steer, B)
    return items


class _Timer:
    def __init__(self, device: str):
        self.device = device

    def __call__(self, fn: Callable[[], None]) -> float:
        """Seconds of fn (synchronised), with the garbage collector held off."""
        gc.collect()
        gc.disable()
        try:
            if self.device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if self.device == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - t0
        finally:
            gc.enable()


def _peer_import(name: str):
    """Import a peer (repeng, steering_vectors). Both import scikit-learn at module import time,
    for training vectors only (PCA, regressions); the benchmark only applies a given vector. Where
    scikit-learn is not installed (a compiled package that cannot be carried), stand-ins that
    refuse to be used are registered under its module names, so the import works. Pure-Python
    dependencies missing here (tqdm, yaml) are looked up in .peers/fallback last."""
    import importlib
    import importlib.machinery
    import sys

    stubs = []
    try:
        import sklearn  # noqa: F401
    except ImportError:
        class _NeedsSklearn:
            def __init__(self, *a, **k):
                raise ImportError("scikit-learn is not installed: training vectors with repeng / "
                                  "steering-vectors needs it (applying a vector does not)")

        for mod, names in (("sklearn", ()), ("sklearn.decomposition", ("PCA",)),
                           ("sklearn.linear_model", ("LinearRegression", "LogisticRegression"))):
            m = types.ModuleType(mod)
            m.__path__, m.__spec__ = [], importlib.machinery.ModuleSpec(mod, None, is_package=True)
            for n in names:
                setattr(m, n, type(n, (_NeedsSklearn,), {}))
            sys.modules[mod] = m
            stubs.append(mod)
    fallback = os.path.join(os.getcwd(), ".peers", "fallback")
    if os.path.isdir(fallback) and fallback not in sys.path:
        sys.path.append(fallback)
    try:
        return importlib.import_module(name)
    finally:  # the stand-ins live only during the peer's import (its modules keep their names)
        for mod in stubs:
            del sys.modules[mod]


def _repeng_module():
    import numpy as np

    added = "float_" not in np.__dict__
    if added:  # repeng 0.4.0 names np.float_ (removed in NumPy 2) at import time
        np.float_ = np.float64
    try:
        repeng = _peer_import("repeng")
    finally:
        if added:
            del np.float_
    return repeng


class _Shape:
    """One model and everything built on it (engines per steering kind, hooks)."""

    def __init__(self, shape: str, device: str, max_batch: int, prompt: int, new_tokens: int, log,
                 specialise: bool = False):
        self.shape, self.device, self.log = shape, device, log
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        self.model = build_model(shape, device, dtype)
        self.n_layers = self.model.config.num_hidden_layers
        self.sites = [f"resid_post.{i}" for i in range(self.n_layers)]
        self.max_batch, self.prompt, self.new_tokens = max_batch, prompt, new_tokens
        self.params = _Params(max_batch, self.model.config.hidden_size, device)
        self.engines: Dict[str, object] = {}
        self.kinds: Dict[str, str] = {}  # steered engine (or "hf") -> the kind its tables hold now
        self.hf: Optional[Tuple[Tuple[str, int], object]] = None  # ((path, batch), steerkit attachment)
        self.specialise = specialise
        self.weight_bytes = sum(p.numel() * p.element_size() for p in self.model.parameters())
        g = torch.Generator(device="cpu").manual_seed(2)
        self.ids = torch.randint(3, self.model.config.vocab_size, (max_batch, prompt), generator=g)

    def engine(self, kind: Optional[str], path: str = "engine"):
        """The engine of ``path`` (its Inductor options) without steering (kind None) or with
        tables (in the model's dtype) at every site holding ``kind`` configurations
        1..max_batch. Steered engines are built for every kind (the engine's default ``expect``),
        so one engine (one compilation per bucket) serves every steered variant, as in serving,
        where requests of every kind share the graphs; with ``specialise`` each kind gets an engine
        compiled for that kind only."""
        from steerkit.integrations import attach
        from steerkit.integrations.engine import ENGINE_INDUCTOR, Engine

        self._drop_hf()  # the engine compiles the model without transformers' paths' hooks
        built = "none" if kind is None else (kind if self.specialise else "all")
        key = f"{path}/{built}"
        if key not in self.engines:
            t0 = time.time()
            buckets = tuple(b for b in (1, 16, 64, 256) if b <= self.max_batch)
            opts = ENGINE_PATHS[path]
            if opts == "autotune":
                opts = dict(ENGINE_INDUCTOR, max_autotune=True)
            elif opts == "tuned":
                opts = dict(ENGINE_INDUCTOR, coordinate_descent_tuning=True)
            kw = dict(max_batch=self.max_batch, max_len=self.prompt + self.new_tokens, buckets=buckets,
                      inductor=opts)
            if kind is None:
                self.engines[key] = Engine(self.model, None, **kw)
            else:
                handle = attach(self.model, self.sites, capacity=self.max_batch, max_directions=1,
                                dtype=self.model.dtype)
                self.engines[key] = Engine(self.model, handle, expect=EXPECT[kind] if self.specialise else None, **kw)
            self.log(f"# {self.shape}: engine '{key}' built in {time.time() - t0:.1f} s")
        eng = self.engines[key]
        if kind is not None and self.kinds.get(key) != kind:  # (re)write the configurations
            for j in range(self.max_batch):
                eng.steering.set(j + 1, {s: self.params.spec(kind, j) for s in self.sites})
            self.kinds[key] = kind
        return eng

    def hf_steering(self, path: str, B: int, kind: str):
        """transformers' paths: steerkit at every site, tables (in the model's dtype) built for
        every kind and holding ``kind`` configurations 1..max_batch. One attachment, and so one
        compilation of transformers' compiled forward, serves every steered item of the same path
        and batch (as in serving, where requests of every kind share the graphs); the model is
        restored first (``untouched``) when the path or batch changes. With ``specialise`` each
        item gets its own attachment, compiled for its kind only."""
        from steerkit.integrations import attach

        key = (path, B)
        if self.hf is None or self.hf[0] != key or self.specialise:
            self.untouched()
            handle = attach(self.model, self.sites, capacity=self.max_batch, max_directions=1, dtype=self.model.dtype)
            for t in handle.tables.values():
                t.expect(**(EXPECT[kind] if self.specialise else EXPECT["mix"]))
            self.hf = (key, handle)
        handle = self.hf[1]
        if self.kinds.get("hf") != kind:
            for j in range(self.max_batch):
                handle.set(j + 1, {s: self.params.spec(kind, j) for s in self.sites})
            self.kinds["hf"] = kind
        return handle

    def close(self):
        """Close every engine and the transformers paths' attachment: hooks detached, graphs and
        caches freed."""
        for e in self.engines.values():
            e.close()
            if e.steering is not None:
                e.steering.detach()
        self.engines.clear()
        self._drop_hf()
        self.kinds.clear()

    def _drop_hf(self):
        if self.hf is not None:
            self.hf[1].detach()
            self.hf = None
            self.kinds.pop("hf", None)

    def untouched(self):
        """The model as built, for a path other than the engine: engines closed (their hooks off
        the model), Dynamo's compilations and CUDA graph trees dropped, transformers' compiled
        forward and static-cache length forgotten. Checked: no hook left, 'sdpa' attention."""
        self.close()
        for name in ("_compiled_call", "_last_compile_config", "_previous_max_cache_length"):
            if name in self.model.__dict__:
                delattr(self.model, name)
        torch._dynamo.reset()
        gc.collect()
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
        hooked = [n for n, m in self.model.named_modules() if m._forward_hooks or m._forward_pre_hooks]
        attn = self.model.config._attn_implementation
        if hooked or attn != "sdpa":
            raise RuntimeError(f"model not restored: hooks on {hooked[:3]}, attention {attn!r}")


def _replay_ms(graph, n: int = 50) -> float:
    """Median of 3 timings of n back-to-back replays of a captured decode step, ms per replay.
    The replays advance the slots' tokens and positions (clamped to the cache), which every
    later prefill overwrites."""
    out = []
    for _ in range(3):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        graph.replay()
        start.record()
        for _ in range(n):
            graph.replay()
        end.record()
        end.synchronize()
        out.append(start.elapsed_time(end) / n)
    return statistics.median(out)


def _measure(sh: _Shape, path: str, steer: str, B: int, rounds: int, timer: _Timer) -> dict:
    """Warm up (compile, capture), then time T(1) and T(new_tokens), ``rounds`` times each."""
    N = sh.new_tokens
    ids = sh.ids[:B]
    model = sh.model
    cleanup: List[Callable[[], None]] = []
    kind = steer.split("-", 1)[1] if steer.startswith("distinct-") else ("mix" if steer == "shared" else None)
    config_ids = (list(range(1, B + 1)) if steer.startswith("distinct-") else [1] * B) if kind else [None] * B
    if path in ENGINE_PATHS:
        eng = sh.engine(kind, path)
        prompts = [row.tolist() for row in ids]

        def gen(n):
            eng.generate(prompts, steering=config_ids, max_new_tokens=n, stop=())
    else:
        if not (path in ("hf-compiled", "hf-eager") and kind):
            sh.untouched()
        dev_ids = ids.to(sh.device)
        mask = torch.ones_like(dev_ids)
        kw = dict(attention_mask=mask, do_sample=False, pad_token_id=0)
        if path == "hf-compiled":
            # one cache length for the warm-up and the timed calls: else the first long call
            # recompiles (with a dynamic cache length) inside the timing
            kw.update(cache_implementation="static", max_cache_len=sh.prompt + N)
        target = model
        if path in ("hf-compiled", "hf-eager") and kind:
            handle = sh.hf_steering(path, B, kind)
            handle.assign(torch.tensor(config_ids, dtype=torch.int32, device=sh.device))
            cleanup.append(lambda: handle.assign(None))
        elif steer == "hook-add":
            hv = _HookVariant(model, "add", sh.params)
            hv.on(torch.arange(1, B + 1, device=sh.device))
            cleanup.append(lambda: [h.remove() for h in hv.handles])
        elif path == "repeng":
            repeng = _repeng_module()
            vec = sh.params.vec[0].float().cpu().numpy()
            cv = repeng.ControlVector(model_type="llama", directions={i: vec for i in range(sh.n_layers)})
            target = repeng.ControlModel(model, list(range(sh.n_layers)))
            target.set_control(cv, 1.0)
            cleanup.append(lambda: (target.reset(), target.unwrap()))
            kw["position_ids"] = torch.arange(ids.shape[1], device=sh.device).expand(ids.shape)
        elif path == "steering-vectors":
            SteeringVector = _peer_import("steering_vectors").SteeringVector

            sv = SteeringVector(layer_activations={i: sh.params.vec[0].float() for i in range(sh.n_layers)},
                                layer_type="decoder_block")
            ctx = sv.apply(model, multiplier=1.0)
            ctx.__enter__()
            cleanup.append(lambda: ctx.__exit__(None, None, None))

        def gen(n):
            with torch.no_grad():
                target.generate(dev_ids, max_new_tokens=n, min_new_tokens=n, **kw)
    try:
        t0 = time.time()
        # warm-up: compile and capture; eager paths generate all N tokens, so that the caching
        # allocator holds the growing dynamic cache's blocks before the timed rounds (else the
        # first item after ``untouched`` pays cudaMalloc calls in its first long round)
        gen(min(3, N) if path in ENGINE_PATHS or path == "hf-compiled" else N)
        warm = time.time() - t0
        t1 = [timer(lambda: gen(1)) for _ in range(rounds)]
        tn = [timer(lambda: gen(N)) for _ in range(rounds)]
    finally:
        for fn in cleanup:
            fn()
    T1, TN = statistics.median(t1), statistics.median(tn)
    ms = 1000.0 * (TN - T1) / max(N - 1, 1)
    row = dict(shape=sh.shape, path=path, steer=steer, batch=B, prompt=sh.prompt, new_tokens=N,
               total_s=TN, prefill_s=T1, tok_s=B * N / TN, ms_per_token=ms, decode_tok_s=1000.0 * B / ms,
               warmup_s=warm, rounds=rounds, total_s_spread=[min(tn), max(tn)],
               layers_steered=0 if steer == "unsteered" else sh.n_layers,
               dtype=str(next(model.parameters()).dtype).replace("torch.", ""))
    if path in ENGINE_PATHS:
        eng = sh.engine(kind, path)
        row["captures"] = eng.captures
        graph = eng._graphs.get((next(b for b in eng.buckets if b >= B), False))
        if graph is not None:  # the GPU time of one step alone, without the host's loop around it
            row["replay_ms"] = _replay_ms(graph)
        row["inductor"] = ENGINE_PATHS[path] if isinstance(ENGINE_PATHS[path], str) else (
            "engine" if ENGINE_PATHS[path] is None else "default")
    steering = eng.steering if path in ENGINE_PATHS else (sh.hf[1] if sh.hf is not None else None)
    if kind is not None and steering is not None:
        row["built_for"] = kind if sh.specialise else "all"
        row["table_dtype"] = str(steering.tables[sh.sites[0]].vec.dtype).replace("torch.", "")
    return row


def run(shapes: Sequence[str] = (HEADLINE_1B, HEADLINE_8B), batches: Sequence[int] = (1, 16, 64, 256),
        variants: Sequence[str] = ("*",), prompt: int = 128, new_tokens: int = 128, rounds: int = 2,
        deadline_s: Optional[float] = None, device: Optional[str] = None, specialise: bool = False,
        emit: Callable[[dict], None] = lambda row: None, log: Callable[[str], None] = print) -> List[dict]:
    """Measure the plan's items in order; ``emit`` gets each row as soon as it is measured."""
    from .timing import copy_bandwidth_gbps

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    t_start = time.time()
    bw = copy_bandwidth_gbps(device, 1 << 30 if device == "cuda" else 1 << 26)
    log(f"# device copy bandwidth {bw:.0f} GB/s")
    items = plan(shapes, batches, variants)
    log(f"# {len(items)} measurements planned: " + ", ".join(f"{s}/{p}:{t}/B={b}" for s, p, t, b in items))
    timer = _Timer(device)
    rows: List[dict] = []
    sh: Optional[_Shape] = None
    for shape, path, steer, B in items:
        if deadline_s is not None and time.time() - t_start > deadline_s:
            log(f"# deadline reached ({deadline_s:.0f} s): stopping before {shape} {path}:{steer} B={B}")
            break
        if sh is None or sh.shape != shape:
            if sh is not None:
                sh.close()
                sh = None
                gc.collect()
                if device == "cuda":
                    torch.cuda.empty_cache()
            sh = _Shape(shape, device, max(batches), prompt, new_tokens, log, specialise)
            floor_ms = sh.weight_bytes / (bw * 1e9) * 1e3
            log(f"# {shape}: {sh.weight_bytes / 1e9:.2f} GB of weights, decode floor {floor_ms:.3f} ms")
        try:
            row = _measure(sh, path, steer, B, rounds, timer)
        except Exception as e:  # a peer that fails (or cannot import) is reported and skipped
            log(f"# {shape} {path}:{steer} B={B} failed: {type(e).__name__}: {e}")
            continue
        row.update(floor_ms=floor_ms, pct_of_floor=100.0 * floor_ms / row["ms_per_token"], copy_gbps=bw)
        rows.append(row)
        emit(row)
        log(f"{shape:13} {path:16} {steer:15} B={B:<4} {row['tok_s']:10.0f} tok/s  decode {row['ms_per_token']:7.3f} "
            f"ms/token ({row['decode_tok_s']:9.0f} tok/s, {row['pct_of_floor']:5.1f}% of floor)  "
            f"warm-up {row['warmup_s']:.0f} s" + (f"  replay {row['replay_ms']:.3f} ms" if "replay_ms" in row else ""))
    if sh is not None:
        sh.close()
    return rows


# -- plot -----------------------------------------------------------------------------------------
def load_rows(paths: Sequence[str]) -> List[dict]:
    rows = []
    for p in paths:
        with open(p) as f:
            rows += [json.loads(line) for line in f if line.strip()]
    return rows


def plot(rows: List[dict], out: str, key: str = "decode_tok_s") -> str:
    """Tokens/s against batch size, one line per (shape, path, steering). A PNG through matplotlib
    when it is installed, else a self-contained SVG (the extension of ``out`` is set to match)."""
    series: Dict[str, Dict[int, float]] = {}
    for r in rows:
        series.setdefault(f"{r['shape']} {r['path']}:{r['steer']}", {})[int(r["batch"])] = float(r[key])
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        out = os.path.splitext(out)[0] + ".svg"
        _svg(series, out, key)
        return out
    out = os.path.splitext(out)[0] + ".png"
    fig, ax = plt.subplots(figsize=(9, 6))
    for name, pts in sorted(series.items()):
        xs = sorted(pts)
        ax.plot(xs, [pts[x] for x in xs], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel(key.replace("_", " "))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    return out


def _svg(series: Dict[str, Dict[int, float]], out: str, key: str) -> None:
    import math

    W, H, L, R, T, Bm = 900, 560, 70, 330, 20, 50  # size and margins (legend on the right)
    xs = sorted({x for pts in series.values() for x in pts}) or [1]
    ys = [y for pts in series.values() for y in pts.values() if y > 0] or [1.0]
    x0, x1 = math.log2(xs[0]), math.log2(xs[-1]) if xs[-1] > xs[0] else math.log2(xs[0]) + 1
    y0, y1 = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)))
    y1 = y1 if y1 > y0 else y0 + 1
    px = lambda x: L + (math.log2(x) - x0) / (x1 - x0) * (W - L - R)  # noqa: E731
    py = lambda y: H - Bm - (math.log10(y) - y0) / (y1 - y0) * (H - T - Bm)  # noqa: E731
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
              "#bcbd22", "#17becf"]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" '
             f'font-size="11"><rect width="{W}" height="{H}" fill="white"/>']
    for x in xs:
        parts.append(f'<line x1="{px(x):.1f}" y1="{T}" x2="{px(x):.1f}" y2="{H - Bm}" stroke="#ddd"/>'
                     f'<text x="{px(x):.1f}" y="{H - Bm + 15}" text-anchor="middle">{x}</text>')
    for e in range(y0, y1 + 1):
        parts.append(f'<line x1="{L}" y1="{py(10 ** e):.1f}" x2="{W - R}" y2="{py(10 ** e):.1f}" stroke="#ddd"/>'
                     f'<text x="{L - 5}" y="{py(10 ** e) + 4:.1f}" text-anchor="end">1e{e}</text>')
    parts.append(f'<text x="{(W - R + L) / 2}" y="{H - 12}" text-anchor="middle">batch size</text>'
                 f'<text x="15" y="{H / 2}" transform="rotate(-90 15 {H / 2})" text-anchor="middle">'
                 f'{key.replace("_", " ")}</text>')
    # one colour per path:steering, one dash pattern per shape
    kinds = sorted({n.split(" ", 1)[-1] for n in series})
    shapes = sorted({n.split(" ", 1)[0] for n in series})
    for i, (name, pts) in enumerate(sorted(series.items())):
        shape, _, kind = name.partition(" ")
        c = colors[kinds.index(kind) % len(colors)] if kind else colors[i % len(colors)]
        dash = ' stroke-dasharray="6 3"' if shapes.index(shape) % 2 else ""
        coords = " ".join(f"{px(x):.1f},{py(pts[x]):.1f}" for x in sorted(pts) if pts[x] > 0)
        parts.append(f'<polyline points="{coords}" fill="none" stroke="{c}" stroke-width="2"{dash}/>')
        parts += [f'<circle cx="{px(x):.1f}" cy="{py(pts[x]):.1f}" r="3" fill="{c}"/>' for x in pts if pts[x] > 0]
        ly = T + 14 * i + 10
        parts.append(f'<line x1="{W - R + 10}" y1="{ly - 4}" x2="{W - R + 30}" y2="{ly - 4}" stroke="{c}" '
                     f'stroke-width="2"{dash}/><text x="{W - R + 35}" y="{ly}">{name}</text>')
    parts.append("</svg>")
    with open(out, "w") as f:
        f.write("\n".join(parts))


def run_and_write(out_dir: Optional[str] = None, **kw) -> List[dict]:
    """``run`` with every row appended, as soon as it is measured, to
    ``<out_dir>/generate-<shape>-<gpu>-<time>.jsonl`` (with the environment: GPU, versions, commit)."""
    import datetime

    from . import _environment

    device = kw.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
    env = _environment(device)
    tag = "".join(ch if ch.isalnum() else "-" for ch in env["gpu"].lower()).strip("-") or device
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    files: Dict[str, str] = {}

    def emit(row: dict) -> None:
        if not out_dir:
            return
        os.makedirs(out_dir, exist_ok=True)
        path = files.setdefault(row["shape"], os.path.join(out_dir, f"generate-{row['shape']}-{tag}-{stamp}.jsonl"))
        with open(path, "a") as f:
            f.write(json.dumps(dict(row, **env)) + "\n")

    rows = run(emit=emit, **kw)
    for path in files.values():
        print(f"# rows in {path}")
    return rows
