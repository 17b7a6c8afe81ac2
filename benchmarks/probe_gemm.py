"""Probe (GPU): cuBLAS time for the TopK-encode GEMM path's chunked products (float32 out) against one whole
product, for chunk shapes within the 5% memory cap (benchmarks/results/probe-gemm-h100.txt). python benchmarks/probe_gemm.py"""
import statistics

import torch
dev = "cuda"
print(torch.__version__, torch.cuda.get_device_name())
a = torch.randn(256, 512, device=dev, dtype=torch.bfloat16); b = torch.randn(512, 1024, device=dev, dtype=torch.bfloat16)
try:
    o = torch.empty(256, 1024, device=dev, dtype=torch.float32)
    torch.mm(a, b[:, 256:768], out_dtype=torch.float32, out=o[:, :512])
    ref = a.float() @ b[:, 256:768].float()
    print("mm out_dtype+out ok, err", (o[:, :512] - ref).abs().max().item())
except Exception as e:
    print("mm out_dtype+out FAILED", repr(e)[:300])
try:
    o2 = torch.mm(a, b, out_dtype=torch.float32); print("mm out_dtype ok", o2.dtype)
    o3 = torch.mm(a.half(), b.half(), out_dtype=torch.float32); print("fp16 out_dtype ok", o3.dtype)
except Exception as e:
    print("mm out_dtype FAILED", repr(e)[:300])

def timeit(fn, reps=5):
    fn(); torch.cuda.synchronize()
    xs = []
    for _ in range(reps):
        s, e = torch.cuda.Event(True), torch.cuda.Event(True)
        s.record(); fn(); e.record(); torch.cuda.synchronize(); xs.append(s.elapsed_time(e) * 1e3)
    return statistics.median(xs)

for (T, d, F) in [(4096, 4096, 65536), (16384, 4096, 65536), (4096, 2304, 16384), (16384, 2304, 16384), (4096, 4096, 131072), (4096, 2304, 65536)]:
    x = torch.randn(T, d, device=dev, dtype=torch.bfloat16)
    W = torch.randn(d, F, device=dev, dtype=torch.bfloat16) / d ** 0.5
    full = timeit(lambda: torch.mm(x, W))
    budget = 0.05 * 2 * T * F
    print(f"\nT={T} d={d} F={F} full bf16 mm {full:.1f} us  budget {budget/2**20:.1f} MiB", flush=True)
    for Tc in (256, 512, 1024, 2048, 4096, 8192, 16384):
        for Fc in (256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192):
            if Tc > T or Fc > F or T % Tc or F % Fc:
                continue
            mem = Tc * Fc * 4 + Tc * d * 2
            if mem > budget:
                continue
            P = torch.empty(Tc, Fc, device=dev, dtype=torch.float32)
            def run():
                for t0 in range(0, T, Tc):
                    xs = x[t0:t0 + Tc]
                    for f0 in range(0, F, Fc):
                        torch.mm(xs, W[:, f0:f0 + Fc], out_dtype=torch.float32, out=P)
            us = timeit(run, 3)
            print(f"  Tc={Tc:6d} Fc={Fc:5d} mem {mem/2**20:5.1f} MiB chunks {T//Tc*F//Fc:4d}  {us:9.1f} us  x{us/full:.3f}", flush=True)
