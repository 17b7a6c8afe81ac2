"""Would sae_encode_topk's CUDA selection gain from more warps per row? (H100, bf16, k = 64)

At T = 4096 a selection launch has 2048 rows (one warp each, about 16 warps an SM) and is
latency-bound: a later chunk took ~10 µs for 2048 rows against ~32 µs for 8192
(probe-topk-launches-h100.txt). Here one block of rows runs all its feature chunks' selections
with each row split into S pieces (the chunk [R, NF] viewed as [R * S, NF / S], one list per
piece; merging the S lists of a row at the end is not timed), S = 1 being what the op runs.
Each piece's result is checked against torch.topk of that piece's features. Kernel times from
the profiler, summed per pass; medians over 5 passes.

Usage: python benchmarks/probe_topk_split.py
"""
import json
import os
import sys

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from probe_topk_cuda import shape_setup  # noqa: E402

from steerkit import _cuda_ext  # noqa: E402

_cuda_ext.load()
select = torch.ops.steerkit_cuda.sae_encode_topk_select
dt, k, KW = torch.bfloat16, 64, 64

for T, d, F in [(4096, 4096, 65536), (4096, 2304, 16384)]:
    x, W, b, tc, fc, _ = shape_setup(T, d, F, k, dt)
    chunks = [torch.addmm(b[f0:f0 + fc], x[:tc], W[:, f0:f0 + fc]) for f0 in range(0, F, fc)]
    for S in (1, 2, 4):
        R, nf = tc * S, fc // S
        views = [c.view(R, nf) for c in chunks]
        run = torch.empty(R, KW, device="cuda", dtype=torch.int64)
        values = torch.empty(R, k, device="cuda", dtype=dt)
        indices = torch.empty(R, k, device="cuda", dtype=torch.int64)

        def one_pass():
            for j, v in enumerate(views):
                select(v, run, values, indices, j * nf, k, j == 0, j == len(views) - 1)

        one_pass()
        torch.cuda.synchronize()
        want = torch.cat(views, dim=1).float().topk(k, dim=1).values
        ok = torch.equal(values.float(), want)
        passes = []
        for _ in range(5):
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                one_pass()
                torch.cuda.synchronize()
            evs = sorted([e for e in prof.events() if e.device_type.name == "CUDA" and "topk_select" in e.name],
                         key=lambda e: e.time_range.start)
            passes.append([e.time_range.elapsed_us() for e in evs])
        tot = sorted(sum(p) for p in passes)[2]
        per = [round(sorted(p[i] for p in passes)[2], 1) for i in range(len(passes[0]))]
        print(json.dumps(dict(T=T, d=d, F=F, rows=tc, split=S, launch=f"{R}x{nf}", values_ok=ok,
                              select_us_per_block=round(tot, 1), per_launch_us=per)), flush=True)
