"""Two questions about sae_encode_topk's GEMM path with the CUDA selection (H100, bf16, k = 64):

1. Host and GPU time per chunk product at d = 2304 (512 x 4096 chunks, where the path is
   host-bound): addmm with the 1-D bias (what the path runs), mm without it, and a copy of the
   bias into the chunk followed by a beta = 1 addmm (it rounds differently: printed).
2. Does the selection gain from running on a second stream beside the next chunk's product?
   The path is rebuilt here with N chunk buffers: '/1' one buffer on one stream, '/Ns2' N
   buffers on two streams; each entry is [time / bare product, equal to the op, chunk memory
   as % of the bf16 [T, F] matrix]. (Measured: no gain; benchmarks/results/exp-overlap-h100.txt.)

Usage: python benchmarks/probe_topk_overlap.py
"""
import importlib
import json
import time

import torch

from steerkit import _cuda_ext, ops
KM = importlib.import_module("steerkit.kernels.sae_encode_topk")
_cuda_ext.load()
select = torch.ops.steerkit_cuda.sae_encode_topk_select
dt = torch.bfloat16

def med(f, reps=15, warm=3):
    for _ in range(warm): f()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); f(); b.record(); b.synchronize(); ts.append(a.elapsed_time(b) * 1e3)
    ts.sort(); return ts[len(ts) // 2]

# (1) host cost per call of the product variants at d = 2304 chunk 512 x 4096
d, F, tc, fc = 2304, 16384, 512, 4096
W = (torch.randn(d, F, device="cuda") / d ** 0.5).to(dt); bias = (torch.randn(F, device="cuda") * .1).to(dt)
a = torch.randn(tc, d, device="cuda", dtype=dt); P = torch.empty(tc, fc, device="cuda", dtype=dt)
Wc, bc = W[:, 4096:8192], bias[4096:8192]
def v_addmm(): torch.addmm(bc, a, Wc, out=P)
def v_mm(): torch.mm(a, Wc, out=P)
def v_copy_addmm(): P.copy_(bc.expand(tc, fc)); torch.addmm(P, a, Wc, out=P)
for name, f in [("addmm_bias1d", v_addmm), ("mm", v_mm), ("copy+addmm_2d", v_copy_addmm)]:
    for _ in range(20): f()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(200): f()
    host = (time.perf_counter() - t0) / 200 * 1e6
    torch.cuda.synchronize()
    gpu = med(lambda: [f() for _ in range(50)]) / 50
    print(json.dumps(dict(exp="product_host", variant=name, host_us=round(host, 2), gpu_us=round(gpu, 2))), flush=True)
ref = torch.addmm(bc, a, Wc); v_copy_addmm(); print("copy+addmm equal to addmm:", torch.equal(ref, P), flush=True)

# (2) overlap of the chunk products and the selection on two streams
def path(x, W, b, k, tc, fc, nbuf, two_streams):
    T, F = x.shape[0], W.shape[1]
    kw = 64
    g = torch.cuda.current_stream()
    s = torch.cuda.Stream() if two_streams else g
    Ps = [torch.empty(tc * fc, device=x.device, dtype=x.dtype) for _ in range(nbuf)]
    run = torch.empty(tc, kw, device=x.device, dtype=torch.int64)
    vals = torch.empty(T, k, device=x.device, dtype=x.dtype); idx = torch.empty(T, k, device=x.device, dtype=torch.int64)
    freed = [None] * nbuf
    c = 0
    s.wait_stream(g)
    for t0 in range(0, T, tc):
        t1 = min(T, t0 + tc)
        for f0 in range(0, F, fc):
            f1 = min(F, f0 + fc); j = c % nbuf
            if freed[j] is not None: g.wait_event(freed[j])
            p = Ps[j][:(t1 - t0) * (f1 - f0)].view(t1 - t0, f1 - f0)
            torch.addmm(b[f0:f1], x[t0:t1], W[:, f0:f1], out=p)
            e = torch.cuda.Event(); e.record(g)
            with torch.cuda.stream(s):
                s.wait_event(e)
                select(p, run, vals[t0:t1], idx[t0:t1], f0, k, f0 == 0, f1 == F)
                fr = torch.cuda.Event(); fr.record(s); freed[j] = fr
            c += 1
    g.wait_stream(s)
    return vals, idx

for T, d, F in [(4096, 4096, 65536), (16384, 4096, 65536), (4096, 2304, 16384)]:
    torch.manual_seed(0)
    W = (torch.randn(d, F, device="cuda") / d ** 0.5).to(dt); b = (torch.randn(F, device="cuda") * .1).to(dt)
    x = torch.randn(T, d, device="cuda", dtype=dt)
    bare = med(lambda: x @ W)
    cur = med(lambda: ops.sae_encode_topk(x, W, b, 64, backend="cuda", validate=False))
    rv, ri = ops.sae_encode_topk(x, W, b, 64, backend="cuda", validate=False)
    tc0, fc0, _ = KM.gemm_config(T, d, F, 64, 0, x.device, select="cuda")
    out = dict(exp="overlap", T=T, d=d, F=F, bare_us=round(bare, 1), current_us=round(cur, 1), current_x=round(cur / bare, 3), chunk=f"{tc0}x{fc0}")
    for tc, fc, nbuf in [(tc0, fc0, 1), (tc0 // 2, fc0, 2), (tc0, fc0, 2), (tc0 // 2, fc0, 3)]:
        for two in (False, True):
            if not two and nbuf > 1: continue
            tt = med(lambda: path(x, W, b, 64, tc, fc, nbuf, two))
            v, i = path(x, W, b, 64, tc, fc, nbuf, two)
            ok = torch.equal(v, rv) and torch.equal(i, ri)
            mem = nbuf * tc * fc * 2 / (2 * T * F) * 100
            out[f"{tc}x{fc}/{nbuf}{'s2' if two else ''}"] = [round(tt / bare, 3), ok, round(mem, 1)]
    print(json.dumps(out), flush=True)
    torch.cuda.empty_cache()
