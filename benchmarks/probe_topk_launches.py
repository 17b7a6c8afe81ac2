"""Where a call of sae_encode_topk's CUDA path spends its time (H100, bf16, k = 64): the bare
product, the chunked products alone (the Python loop of _product) and the whole path, timed
interleaved one call at a time (so host time that the GPU waits for counts); then one call under
the profiler: every selection launch in order (the first chunk, the second with about 64
newcomers a row, then fewer and fewer), the GPU's busy time and its idle time between the first
and the last kernel.

Usage: python benchmarks/probe_topk_launches.py
"""
import json, sys, os, torch
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from steerkit import _cuda_ext, ops
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from probe_topk_cuda import shape_setup  # noqa: E402
_cuda_ext.load()
def ev(f):
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record(); f(); b.record(); b.synchronize(); return a.elapsed_time(b) * 1e3
dt, k = torch.bfloat16, 64
from torch.profiler import ProfilerActivity, profile
for T, d, F in [(4096, 4096, 65536), (16384, 4096, 65536), (4096, 4096, 131072), (4096, 2304, 16384)]:
    x, W, b, tc, fc, prods = shape_setup(T, d, F, k, dt)
    fs = dict(bare=lambda: x @ W, prods=prods, path=lambda: ops.sae_encode_topk(x, W, b, k, backend="cuda", validate=False))
    ts = {n: [] for n in fs}
    for n, f in fs.items():
        for _ in range(3): f()
    for _ in range(15):
        for n, f in fs.items():
            ts[n].append(ev(f))
    med = {n: sorted(v)[len(v) // 2] for n, v in ts.items()}
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        ops.sae_encode_topk(x, W, b, k, backend="cuda", validate=False)
        torch.cuda.synchronize()
    evs = sorted([e for e in prof.events() if e.device_type.name == "CUDA"], key=lambda e: e.time_range.start)
    sel = [round(e.time_range.elapsed_us(), 1) for e in evs if "topk_select" in e.name]
    busy = sum(e.time_range.elapsed_us() for e in evs)
    span = evs[-1].time_range.end - evs[0].time_range.start
    row = dict(T=T, d=d, F=F, chunk=f"{tc}x{fc}", bare_us=round(med["bare"], 1), prods_vs_bare=round(med["prods"] / med["bare"], 3),
               path_vs_bare=round(med["path"] / med["bare"], 3), path_us=round(med["path"], 1),
               path_spread=[round(min(ts["path"]) / med["bare"], 3), round(max(ts["path"]) / med["bare"], 3)],
               ratios=[round(p / q, 3) for p, q in zip(ts["path"], ts["bare"])],
               sel_total=round(sum(sel)), sel_us=sel, busy_us=round(busy), span_us=round(span), idle_us=round(span - busy))
    print(json.dumps(row), flush=True)
    W = None  # free before the next shape
    torch.cuda.empty_cache()
