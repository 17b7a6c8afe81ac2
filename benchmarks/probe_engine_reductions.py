"""Probe (GPU): the engine's distinct-mix overhead at batch 256 by steering-table dtype and Inductor
reduction strategy (looped, persistent rows, multi-kernel), and coordinate-descent tuning ('fast')
against none at batch 1 and 64. Every variant is an engine compiled for one bucket with explicit
Inductor options; the engine's own persistent-row override is switched off except in the
'persist' variants. Replays timed interleaved. Results: benchmarks/results/probe-engine-256-h100.txt.
    python benchmarks/probe_engine_reductions.py [variant ...]"""
import contextlib
import json, os, statistics, sys, time
import torch
from torch._inductor.choices import InductorChoices
from torch._inductor.virtualized import V
from steerkit.bench.model_bench import build_model, _Params
from steerkit.bench.generate_bench import _replay_ms
from steerkit.integrations import attach
import steerkit.integrations.engine as engine_mod
from steerkit.integrations.engine import ENGINE_INDUCTOR, Engine

FAST_INDUCTOR = dict(ENGINE_INDUCTOR, coordinate_descent_tuning=True)

T0 = time.time(); DEADLINE = float(os.environ.get("DEADLINE", 430))
class Persist(InductorChoices):
    @staticmethod
    def should_use_persistent_reduction(features, cooperative_reduction):
        from torch._inductor.runtime.hints import ReductionHint
        if features.get_reduction_hint() == ReductionHint.INNER and not cooperative_reduction:
            return V.graph.sizevars.statically_known_leq(features.reduction_numel, 8192)
        return InductorChoices.should_use_persistent_reduction(features, cooperative_reduction)

dev = "cuda"
model = build_model("llama-3.2-1b", dev)
d, L = model.config.hidden_size, model.config.num_hidden_layers
sites = [f"resid_post.{i}" for i in range(L)]
P = _Params(256, d, dev)
g = torch.Generator().manual_seed(2)
prompts = torch.randint(3, 1000, (256, 128), generator=g).tolist()
NOCACHE = {"fx_graph_cache": False}
VARIANTS = [  # name, B, kind, table dtype, inductor options, choices
    ("none/plain@256", 256, None, None, NOCACHE, None),
    ("mix-f32/plain@256", 256, "mix", torch.float32, NOCACHE, None),
    ("mix-bf16/plain@256", 256, "mix", torch.bfloat16, NOCACHE, None),
    ("none/persist@256", 256, None, None, NOCACHE, Persist),
    ("mix-bf16/persist@256", 256, "mix", torch.bfloat16, NOCACHE, Persist),
    ("mix-f32/persist@256", 256, "mix", torch.float32, NOCACHE, Persist),
    ("none/multik@256", 256, None, None, dict(NOCACHE, **{"triton.multi_kernel": 1}), None),
    ("mix-bf16/multik@256", 256, "mix", torch.bfloat16, dict(NOCACHE, **{"triton.multi_kernel": 1}), None),
    ("none/fast@1", 1, None, None, dict(FAST_INDUCTOR, fx_graph_cache=False), None),
    ("none/plain@1", 1, None, None, NOCACHE, None),
    ("none/fast@64", 64, None, None, dict(FAST_INDUCTOR, fx_graph_cache=False), None),
    ("none/plain@64", 64, None, None, NOCACHE, None),
]
only = sys.argv[1:] 
graphs = {}
for name, B, kind, tdt, opts, choices in VARIANTS:
    if only and name not in only: continue
    if time.time() - T0 > DEADLINE:
        print("# deadline: skip", name, flush=True); continue
    t = time.time()
    kw = dict(max_batch=B, max_len=256, buckets=(B,), inductor=opts)
    if kind is None:
        eng = Engine(model, None, **kw); ids = None
    else:
        h = attach(model, sites, capacity=B, max_directions=1, dtype=tdt)
        for j in range(B):
            h.set(j + 1, {s: P.spec(kind, j) for s in sites})
        eng = Engine(model, h, **kw); ids = list(range(1, B + 1))
    engine_mod._row_reductions = contextlib.nullcontext  # only the probe's own choices below
    ctx = V.set_choices_handler(choices()) if choices else None
    try:
        if ctx: ctx.__enter__()
        eng.generate(prompts[:B], steering=ids, max_new_tokens=3, stop=())
    finally:
        if ctx: ctx.__exit__(None, None, None)
    graphs[name] = eng._graphs[(B, False)]
    print(f"# {name}: built+compiled+captured in {time.time()-t:.1f} s", flush=True)
    # keep eng alive
    graphs[name].eng = eng
res = {n: [] for n in graphs}
for r in range(7):
    for n, gph in graphs.items():
        res[n].append(_replay_ms(gph, 40))
out = open(os.path.join(os.environ.get("OUT", "."), "probe256.jsonl"), "w")
base = {}
for n, v in res.items():
    m = statistics.median(v)
    if n.startswith("none/"): base[n.split("/")[1]] = m
for n, v in res.items():
    m = statistics.median(v); b = base.get(n.split("/")[1])
    rel = f"{100*(m/b-1):+.2f}%" if b and not n.startswith("none/") else ""
    print(f"{n:24s} replay {m*1000:8.1f} us  spread {min(v)*1000:.1f}-{max(v)*1000:.1f}  {rel}")
    out.write(json.dumps(dict(variant=n, replay_ms=m, spread=[min(v), max(v)], rel=rel)) + "\n")
print(f"# total {time.time()-T0:.0f} s")
