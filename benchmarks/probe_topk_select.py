"""Probe (GPU): the GEMM path's selection kernel alone on [1024, 4096] chunks, timed in
CUDA-graph replay (no host cost): the first chunk of features (the top KW by bisection), the
first two, a chunk where almost nothing beats the running lists, and a whole row block (16
chunks of fresh random values: 65536 features, the beats thinning as in real use), for the
16-bit product (bf16 chunk with the bias in it) and the float32 one (bias added and rounded in
the kernel), against a bare read of the chunk. Also: that cuBLAS's addmm rounds the
bias-added product once, and the chunked products alone against the whole product.

python benchmarks/probe_topk_select.py [--ncu]   (--ncu: a few plain launches for Nsight Compute)
"""
import importlib
import statistics
import sys

import torch
import triton
import triton.language as tl

M = importlib.import_module("steerkit.kernels.sae_encode_topk")
torch.manual_seed(0)
tc, fc, F, k, kw = 1024, 4096, 65536, 64, 64


@triton.jit
def _read(p_ptr, out_ptr, NF, stride, thr, BT: tl.constexpr, BF: tl.constexpr):
    rows = tl.program_id(0) * BT + tl.arange(0, BT)
    n = tl.zeros([BT], tl.int32)
    for c0 in range(0, NF, BF):
        cols = c0 + tl.arange(0, BF)
        x = tl.load(p_ptr + rows[:, None].to(tl.int64) * stride + cols[None, :]).to(tl.float32)
        n += tl.sum((x > thr).to(tl.int32), axis=1)
    tl.store(out_ptr + rows, n)


def t(fn, reps=20, n=10):
    fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(n):
            fn()
    g.replay()
    torch.cuda.synchronize()
    xs = []
    for _ in range(reps):
        s, e = torch.cuda.Event(True), torch.cuda.Event(True)
        s.record()
        g.replay()
        e.record()
        torch.cuda.synchronize()
        xs.append(s.elapsed_time(e) * 1e3 / n)
    return statistics.median(xs)


def rounding_check():
    """addmm(b, x, W) in bf16 against the float32 product plus bias rounded once / twice."""
    x = torch.randn(1024, 4096, device="cuda").bfloat16()
    W = (torch.randn(4096, 4096, device="cuda") / 64).bfloat16()
    b = (torch.randn(4096, device="cuda") * 0.1).bfloat16()
    got = torch.addmm(b, x, W)
    acc = torch.mm(x, W, out_dtype=torch.float32)
    once = (acc + b.float()).bfloat16()
    twice = (acc.bfloat16().float() + b.float()).bfloat16()
    n = got.numel()
    print(f"addmm bf16 vs fp32 product + bias rounded once: {int((got != once).sum())} of {n} differ; "
          f"vs rounded twice: {int((got != twice).sum())}", flush=True)


def products():
    """T = 4096, d = 4096, F = 65536: the chunked addmm products (as the GEMM path issues them)
    against the whole product, graph replay."""
    T, d, F = 4096, 4096, 65536
    x = torch.randn(T, d, device="cuda").bfloat16()
    W = (torch.randn(d, F, device="cuda") / 64).bfloat16()
    b = (torch.randn(F, device="cuda") * 0.1).bfloat16()
    whole = t(lambda: x @ W, reps=5, n=2)
    res = {}
    for tcc, fcc in [(1024, 4096), (2048, 4096), (4096, 2048)]:
        p = torch.empty(tcc * fcc, device="cuda", dtype=torch.bfloat16)

        def chunks(tcc=tcc, fcc=fcc, p=p):
            for t0 in range(0, T, tcc):
                for f0 in range(0, F, fcc):
                    torch.addmm(b[f0:f0 + fcc], x[t0:t0 + tcc], W[:, f0:f0 + fcc], out=p.view(tcc, fcc))
        res[f"{tcc}x{fcc}"] = round(t(chunks, reps=5, n=2), 1)
    print(f"products T={T} d={d} F={F}: whole x @ W {whole:.1f} us; chunked addmm {res}", flush=True)


def main(ncu=False):
    P32 = torch.randn(tc, fc, device="cuda") * 0.5
    b = (torch.randn(F, device="cuda") * 0.1).to(torch.bfloat16)
    P16 = (P32 + b[:fc].float()).bfloat16()
    run = torch.empty(tc, kw, device="cuda", dtype=torch.int64)
    cnt = torch.empty(tc, device="cuda", dtype=torch.int32)
    v = torch.empty(tc, k, device="cuda", dtype=torch.bfloat16)
    i = torch.empty(tc, k, device="cuda", dtype=torch.int64)
    if not ncu:
        rounding_check()
        products()
        print("bare read+count [1024 x 4096]:", {f"{p.dtype} BT={bt},BF={bf}": round(t(
            lambda p=p, bt=bt, bf=bf: _read[(tc // bt,)](p, cnt, fc, fc, 2.0, BT=bt, BF=bf, num_warps=4)), 1)
            for p in (P32, P16) for bt, bf in [(1, 4096), (2, 1024), (8, 1024)]}, flush=True)
    sels = [(2, 1024, 4096, 512, 4), (4, 1024, 4096, 512, 4), (2, 2048, 4096, 512, 4), (2, 1024, 4096, 1024, 4),
            (1, 4096, 4096, 512, 4), (2, 1024, 4096, 512, 8)]
    fresh16 = [(torch.randn(tc, fc, device="cuda") * 0.5 + b[j * fc:(j + 1) * fc].float()).bfloat16() for j in range(16)]
    fresh32 = [f.float() for f in fresh16]
    for P, pre, name in [(P16, -1, "bf16 chunk"), (P32, 1, "fp32 chunk")]:
        for sel in sels[:2] if ncu else sels:
            bt, bf, bf0, cp, warps = sel
            pend = torch.empty(tc, cp, device="cuda", dtype=torch.int64)

            def launch(first, p, f0, last=False, bt=bt, bf=bf, bf0=bf0, cp=cp, warps=warps, pend=pend, pre=pre):
                rows = 1 if first else bt  # as encode_gemm: the first chunk one row per program
                M._gemm_select_kernel[(tc // rows,)](
                    p, b, run, pend, cnt, v, i, tc, fc, f0, k, fc, v.stride(0), i.stride(0),
                    FIRST=first, LAST=last, SORT_NET=True, PRE=pre, SHIFT=16, BT=rows, BF=bf, BF0=bf0, KW=kw, CP=cp,
                    num_warps=warps)

            def block(fresh=fresh16 if pre == -1 else fresh32, launch=launch):
                for j, p in enumerate(fresh):
                    launch(j == 0, p, j * fc, j == 15)
            low = P - 1.0  # a later chunk with lower values: almost nothing beats the lists
            if ncu:  # first, second, a late chunk with few beats, a chunk with none
                fresh = fresh16 if pre == -1 else fresh32
                launch(True, fresh[0], 0)
                launch(False, fresh[1], fc)
                for j in range(2, 15):
                    launch(False, fresh[j], j * fc)
                launch(False, low, 8192)
                torch.cuda.synchronize()
                continue
            first = t(lambda: launch(True, P, 0))
            two = t(lambda: (launch(True, P, 0), launch(False, P, 4096)))
            launch(True, P, 0)
            late = t(lambda: launch(False, low, 8192))
            whole = t(block, n=2)
            print(f"{name} select {sel}: first chunk {first:.1f} us, first+second {two:.1f} us, "
                  f"a chunk with ~no beats {late:.1f} us, 16 fresh chunks {whole:.1f} us", flush=True)


if __name__ == "__main__":
    main("--ncu" in sys.argv)
