"""Probe (H100): sae_encode_topk's CUDA path with other chunk shapes than gemm_config's, with
and without b_dec. x - b_dec is a [Tc, d] buffer inside the 5% memory budget, so with b_dec
the default chunk has half the rows (d = 4096: 1024 x 4096 at T = 4096); a chunk twice as wide
(the selection takes any width: one warp per row, a 4096-column segment at a time) keeps the
area. Each variant's result is checked against the default's (exact paths: equal bits), its
peak memory beyond inputs and outputs reported against the bf16 [T, F] matrix, and the calls
timed interleaved, one at a time with CUDA events, against the bare product x @ W_enc.

Usage: python benchmarks/probe_topk_chunk_shape.py"""
import importlib
import json

import torch

from steerkit import _cuda_ext

KT = importlib.import_module("steerkit.kernels.sae_encode_topk")
_cuda_ext.load()
dt, k = torch.bfloat16, 64


def ev(f):
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    f()
    b.record()
    b.synchronize()
    return a.elapsed_time(b) * 1e3


SHAPES = {  # (T, d, F): chunk shapes (None: gemm_config's)
    (4096, 4096, 65536): [None, (1024, 8192), (512, 16384)],
    (16384, 4096, 65536): [None, (4096, 8192)],
    (4096, 4096, 131072): [None, (1024, 8192), (512, 16384)],
    (4096, 2304, 16384): [None, (256, 8192), (128, 16384)],
}
for (T, d, F), shapes in SHAPES.items():
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(T, d, device="cuda", dtype=dt, generator=g)
    W = (torch.randn(d, F, device="cuda", dtype=dt, generator=g) / d ** 0.5).to(dt)
    b = (torch.randn(F, device="cuda", dtype=dt, generator=g) * 0.1).to(dt)
    bd = (torch.randn(d, device="cuda", dtype=dt, generator=g) * 0.1).to(dt)
    fs, want = {"bare": lambda: x @ W}, {}
    for use_bd in (False, True):
        for ch in shapes:
            bdec = bd if use_bd else None
            tc, fc = ch or KT.gemm_config(T, d, F, k, KT._shifted_bytes(x, W, bdec), x.device, select="cuda")[:2]
            name = f"{'bdec ' if use_bd else ''}{tc}x{fc}{'' if ch else ' (default)'}"
            v = torch.empty(T, k, device="cuda", dtype=dt)
            i = torch.empty(T, k, device="cuda", dtype=torch.int64)
            f = (lambda bdec=bdec, tc=tc, fc=fc, v=v, i=i:
                 KT.encode_gemm(x, W, b, bdec, k, v, i, chunks=(tc, fc), select="cuda"))
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            f()
            torch.cuda.synchronize()
            extra = (torch.cuda.max_memory_allocated() - base) / (2 * T * F)
            key = use_bd
            if key not in want:
                want[key] = (v.clone(), i.clone())
            same = torch.equal(want[key][0], v) and torch.equal(want[key][1], i)
            print(f"# T={T} d={d} F={F} {name}: extra memory {100 * extra:.2f}% of [T, F] bf16, "
                  f"same result as the default: {same}", flush=True)
            fs[name] = f
    ts = {n: [] for n in fs}
    for n, f in fs.items():
        for _ in range(3):
            f()
    for _ in range(15):
        for n, f in fs.items():
            ts[n].append(ev(f))
    med = {n: sorted(v)[len(v) // 2] for n, v in ts.items()}
    for n in fs:
        r = [round(p / q, 3) for p, q in zip(ts[n], ts["bare"])]
        print(json.dumps(dict(T=T, d=d, F=F, variant=n, us=round(med[n], 1), vs_bare=round(med[n] / med["bare"], 3),
                              ratio_median=sorted(r)[len(r) // 2], ratio_range=[min(r), max(r)])), flush=True)
    x = W = fs = None  # free before the next shape
    torch.cuda.empty_cache()
