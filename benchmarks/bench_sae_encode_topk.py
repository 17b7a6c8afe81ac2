"""Benchmark sae_encode_topk (and sae_encode_jumprelu) against the bare matrix product and the
eager ``torch.topk(x @ W_enc + b_enc, k)``; bf16, k = 64. Floor: 2*T*d*F FLOPs at the measured
bf16 matmul rate. Also reports peak memory beyond inputs and outputs, as % of the bf16 [T, F]
matrix (target < 5% at T >= 4096), and the time relative to the bare product (target <= 1.15x).

Variant "triton" is the Triton backend's default path ("gemm" from T = 1024: cuBLAS chunks and a
Triton selection kernel); "cuda" the same chunks with the CUDA selection kernel
(csrc/sae_encode_topk.cu; from T = 1024, when the extension builds); "candidates" the fused
candidate path. With --sweep, the fused-matmul tiles in
kernels/sae_encode_topk.py SWEEP are timed too at T = 4096 (variant
"cfg=BT,BF,BK,GROUP,warps,stages"), and the GEMM path's chunk shapes ("gemm=TcxFc") and
selection tiles ("select=BT,BF,BF0,CP,warps"), to pick the defaults.

Usage: python benchmarks/bench_sae_encode_topk.py [--T 1,64,4096,16384] [--d 2304,4096] [--F ...] [--sweep]
"""
import importlib
import sys

import torch

sys.path.insert(0, __import__("os").path.dirname(__file__))
from sae_common import DTYPES, Run, parser, peak_extra_bytes, times  # noqa: E402

from steerkit import ops  # noqa: E402


def main(argv=None):
    p = parser(__doc__, "1,64,4096,16384")
    p.add_argument("--no-jumprelu", action="store_true", help="skip sae_encode_jumprelu")
    p.add_argument("--sweep", action="store_true", help="also time kernels/sae_encode_topk.py SWEEP at T = 4096")
    a = p.parse_args(argv)
    run = Run("sae-encode-topk", a.deadline, a.out)
    dt, k = DTYPES[a.dtype], a.k
    from steerkit import _cuda_ext

    cuda_ok = _cuda_ext.reason() is None
    if cuda_ok:
        _cuda_ext.load()
    else:
        print(f"# no cuda variants: {_cuda_ext.reason()}", flush=True)
    for d in a.d:
        for F in a.F:
            W = (torch.randn(d, F, device="cuda") / d ** 0.5).to(dt)
            b = (torch.randn(F, device="cuda") * 0.1).to(dt)
            bd = (torch.randn(d, device="cuda") * 0.1).to(dt)
            thr = torch.full((F,), 2.5, device="cuda", dtype=dt)  # ~1% active: capacity 2k fits most rows
            for T in a.T:
                if not run.time_left():
                    break
                x = torch.randn(T, d, device="cuda", dtype=dt)
                KM = importlib.import_module("steerkit.kernels.sae_encode_topk")
                calls = {
                    "triton": lambda: ops.sae_encode_topk(x, W, b, k, backend="triton", validate=False),
                    "triton+b_dec": lambda: ops.sae_encode_topk(x, W, b, k, bd, backend="triton", validate=False),
                    "matmul": lambda: x @ W,
                    "matmul+topk": lambda: torch.topk(x @ W + b, k, dim=-1),
                }
                if T >= KM.GEMM_MIN_T and cuda_ok:
                    calls["cuda"] = lambda: ops.sae_encode_topk(x, W, b, k, backend="cuda", validate=False)
                    calls["cuda+b_dec"] = lambda: ops.sae_encode_topk(x, W, b, k, bd, backend="cuda", validate=False)
                if T >= 64 and not a.no_jumprelu:
                    calls["jumprelu"] = lambda: ops.sae_encode_jumprelu(x, W, b, thr, 2 * k, backend="triton",
                                                                        validate=False)
                if T >= 64:  # the fused kernel's bare matmul: what the selection adds beyond it
                    calls["triton-matmul"] = lambda: KM.matmul_only(x, W, b)
                vs = torch.empty(T, k, device="cuda", dtype=dt)
                ix = torch.empty(T, k, device="cuda", dtype=torch.int64)
                if T >= KM.GEMM_MIN_T:  # the fused candidate path (the default before the GEMM path)
                    calls["candidates"] = lambda: KM.sae_encode_topk(x, W, b, None, k, vs, ix, path="candidates") or (vs, ix)
                if a.sweep and T == 4096:
                    for c in KM.SWEEP:
                        calls["cfg=" + ",".join(map(str, c))] = (
                            lambda c=c: KM.sae_encode_topk(x, W, b, None, k, vs, ix, tiles=c) or (vs, ix))
                if a.sweep and T >= KM.GEMM_MIN_T:  # GEMM path: chunk shapes within the memory cap, selection tiles
                    budget = 0.05 * 2 * T * F
                    for tc, fc in [(1024, 4096), (2048, 4096), (2048, 2048), (4096, 1024), (4096, 2048)]:
                        if tc <= T and fc <= F and tc * fc * 2 + tc * (64 + KM.GEMM_SELECT[3]) * 8 <= budget:
                            calls[f"gemm={tc}x{fc}"] = (
                                lambda c=(tc, fc): KM.sae_encode_topk(x, W, b, None, k, vs, ix, chunks=c) or (vs, ix))
                    for sel in [(4, 1024, 4096, 512, 4), (2, 1024, 4096, 1024, 4), (2, 2048, 4096, 512, 4)]:
                        def call(sel=sel):
                            keep, KM.GEMM_SELECT = KM.GEMM_SELECT, sel
                            try:
                                return KM.sae_encode_topk(x, W, b, None, k, vs, ix, path="gemm") or (vs, ix)
                            finally:
                                KM.GEMM_SELECT = keep
                        calls["select=" + ",".join(map(str, sel))] = call
                fb0 = KM.STATS["fallback_rows"]
                v, i = calls["triton"]()
                fallback = KM.STATS["fallback_rows"] - fb0
                rv = torch.topk((x @ W + b).float(), k, dim=-1).values.clamp_min(0)
                err = float((v.float() - rv).abs().max() / rv.abs().max().clamp_min(1))
                vb = calls["triton+b_dec"]()[0].float()
                rvb = torch.topk(((x.float() - bd.float()) @ W.float() + b.float()), k, dim=-1).values.clamp_min(0)
                err_b = float((vb - rvb).abs().max() / rvb.abs().max().clamp_min(1))
                print(f"# T={T} d={d} F={F}: fallback rows {fallback}, max rel. value error {err:.2e}, "
                      f"with b_dec {err_b:.2e}{'  MISMATCH' if max(err, err_b) > 3e-2 else ''}", flush=True)
                t = times(calls)
                mm = t["matmul"][0]
                floor_us = 2 * T * d * F / 1e6 / run.mm_tflops
                dense = 2 * T * F
                for name, (us, _) in t.items():
                    extra = peak_extra_bytes(calls[name])
                    if name.startswith(("cfg=", "gemm=", "select=", "candidates", "cuda")):  # same selection
                        sv = calls[name]()[0].float()
                        ref = vb if name.endswith("+b_dec") else v.float()
                        if float((sv - ref).abs().max() / rv.abs().max().clamp_min(1)) > 3e-2:
                            print(f"# MISMATCH {name}", flush=True)
                    run.add(op="sae_encode_jumprelu" if name == "jumprelu" else "sae_encode_topk",
                            variant=name, T=T, d=d, F=F, k=k, dtype=a.dtype,
                            backend="eager" if name.startswith("matmul") else "cuda" if name.startswith("cuda") else "triton",
                            eager_us=round(us, 2), tflops=round(2 * T * d * F / 1e6 / us, 1),
                            pct_floor=round(100 * floor_us / us, 1), vs_matmul=round(us / mm, 3),
                            speedup=round(t["matmul+topk"][0] / us, 2), extra_mem_bytes=extra,
                            fallback_rows=fallback if name == "triton" else None, max_rel_err=err,
                            extra_mem_pct=round(100 * extra / dense, 2))
            torch.cuda.empty_cache()
    run.write(a.out)


if __name__ == "__main__":
    main()
