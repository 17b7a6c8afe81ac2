"""Probe (GPU): the GEMM path's selection kernel alone on one [1024, 4096] float32 chunk, timed in
CUDA-graph replay (no host cost): the first chunk of features, the first two, and a chunk where
almost nothing beats the running lists, for a few (BT, BF, BF0, CP, warps) settings, against a
bare read of the chunk. python benchmarks/probe_topk_select.py (results/select-probe-h100.txt)."""
import importlib
import statistics

import torch
import triton
import triton.language as tl

M = importlib.import_module("steerkit.kernels.sae_encode_topk")
torch.manual_seed(0)
tc, fc, F, k, kw = 1024, 4096, 65536, 64, 64
P = torch.randn(tc, fc, device="cuda") * 0.5
b = (torch.randn(F, device="cuda") * 0.1).to(torch.bfloat16)
run = torch.empty(tc, kw, device="cuda", dtype=torch.int64)
cnt = torch.empty(tc, device="cuda", dtype=torch.int32)
v = torch.empty(tc, k, device="cuda", dtype=torch.bfloat16); i = torch.empty(tc, k, device="cuda", dtype=torch.int64)

@triton.jit
def _read(p_ptr, out_ptr, NF, stride, thr, BT: tl.constexpr, BF: tl.constexpr):
    rows = tl.program_id(0) * BT + tl.arange(0, BT)
    n = tl.zeros([BT], tl.int32)
    for c0 in range(0, NF, BF):
        cols = c0 + tl.arange(0, BF)
        x = tl.load(p_ptr + rows[:, None].to(tl.int64) * stride + cols[None, :])
        n += tl.sum((x > thr).to(tl.int32), axis=1)
    tl.store(out_ptr + rows, n)

def t(fn, reps=20, n=10):
    fn(); torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(n):
            fn()
    g.replay(); torch.cuda.synchronize()
    xs = []
    for _ in range(reps):
        s, e = torch.cuda.Event(True), torch.cuda.Event(True)
        s.record(); g.replay(); e.record(); torch.cuda.synchronize(); xs.append(s.elapsed_time(e) * 1e3 / n)
    return statistics.median(xs)

print("bare read+count [1024 x 4096] fp32:", {f"BT={bt},BF={bf}": round(t(lambda: _read[(tc // bt,)](P, cnt, fc, fc, 2.0, BT=bt, BF=bf, num_warps=4)), 1) for bt, bf in [(4, 512), (1, 4096), (8, 1024)]})
for sel in [(4, 512, 1024, 512, 4), (2, 1024, 1024, 512, 4), (4, 512, 2048, 512, 8), (8, 512, 1024, 512, 8), (4, 512, 512, 512, 4)]:
    bt, bf, bf0, cp, warps = sel
    pend = torch.empty(tc, cp, device="cuda", dtype=torch.int64)
    def launch(first, last, f0):
        M._gemm_select_kernel[(tc // bt,)](P, b, run, pend, cnt, v, i, tc, fc, f0, k, fc, v.stride(0), i.stride(0),
                                           FIRST=first, LAST=last, SORT_NET=True, BT=bt, BF=bf, BF0=bf0, KW=kw, CP=cp, num_warps=warps)
    first = t(lambda: launch(True, False, 0))
    mid1 = t(lambda: (launch(True, False, 0), launch(False, False, 4096)))  # second chunk after the first
    # a late chunk: run holds the top of 15 chunks already -> few beats. emulate by raising P's copy
    launch(True, False, 0)
    P2 = P - 1.0  # later chunk with lower values: almost nothing beats
    def late():
        M._gemm_select_kernel[(tc // bt,)](P2, b, run, pend, cnt, v, i, tc, fc, 8192, k, fc, v.stride(0), i.stride(0),
                                           FIRST=False, LAST=False, SORT_NET=True, BT=bt, BF=bf, BF0=bf0, KW=kw, CP=cp, num_warps=warps)
    print(f"select {sel}: first chunk {first:.1f} us, first+second {mid1:.1f} us, a chunk with ~no beats {t(late):.1f} us", flush=True)
