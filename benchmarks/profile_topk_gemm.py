"""Profile (GPU): the TopK-encode GEMM path's GPU time by kernel (cuBLAS chunks against the
selection kernel) and host time per call, at three shapes. python benchmarks/profile_topk_gemm.py
(results/prof-topk-gemm-run*-h100.txt)."""
import importlib
import time

import torch
from torch.profiler import ProfilerActivity, profile

M = importlib.import_module("steerkit.kernels.sae_encode_topk")
for (T, d, F) in [(4096, 4096, 65536), (16384, 4096, 65536), (4096, 2304, 16384)]:
    dt = torch.bfloat16
    W = (torch.randn(d, F, device="cuda") / d ** 0.5).to(dt); b = (torch.randn(F, device="cuda") * 0.1).to(dt)
    x = torch.randn(T, d, device="cuda", dtype=dt)
    v = torch.empty(T, 64, device="cuda", dtype=dt); i = torch.empty(T, 64, device="cuda", dtype=torch.int64)
    for _ in range(2):
        M.sae_encode_topk(x, W, b, None, 64, v, i, path="gemm")
    torch.cuda.synchronize()
    t0 = time.perf_counter(); M.sae_encode_topk(x, W, b, None, 64, v, i, path="gemm"); t1 = time.perf_counter(); torch.cuda.synchronize(); t2 = time.perf_counter()
    print(f"T={T} d={d} F={F} cfg {M.gemm_config(T, d, F, 64, 0, x.device)} host {1e6*(t1-t0):.0f} us, wall {1e6*(t2-t0):.0f} us")
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        M.sae_encode_topk(x, W, b, None, 64, v, i, path="gemm"); torch.cuda.synchronize()
    tot = {}
    for e in prof.events():
        if e.device_type.name == "CUDA":
            key = "select" if "select" in e.name else ("gemm" if ("gemm" in e.name.lower() or "sm90" in e.name or "cutlass" in e.name or "nvjet" in e.name) else e.name[:40])
            tot[key] = tot.get(key, 0) + e.device_time
    print("  GPU us by kernel:", {k: round(v) for k, v in tot.items()})
    # correctness vs torch
    rv, ri = torch.topk((x.float() @ W.float() + b.float()), 64, dim=-1)
    print("  max rel err", float((v.float() - rv.clamp_min(0)).abs().max() / rv.abs().max()), "idx agree", float((i == ri).float().mean()))
