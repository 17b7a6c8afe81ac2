"""Where the time of sae_encode_topk's GEMM path with the CUDA selection goes (H100, bf16, k = 64).

Per shape: the bare product ``x @ W_enc``; the same chunked cuBLAS products the path runs, with
no selection; the whole path (backend "cuda"); and the selection kernel alone on one chunk of
fresh random pre-activations, as the first chunk of features (lists start) and as a later one
(lists already hold the top 64 of 15 earlier chunks' worth of values), with % of its read floor
(the chunk's bytes at the copy rate measured here). Medians of CUDA-event timings.

Usage: python benchmarks/probe_topk_cuda.py [--out DIR]
"""
import argparse
import json
import os
import re
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def med_us(f, reps=20, warm=3):
    for _ in range(warm):
        f()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        f()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) * 1e3)
    ts.sort()
    return ts[len(ts) // 2], ts[0], ts[-1]


def shape_setup(T, d, F, k, dt):
    """Random x, W_enc, b_enc (seed 0), the CUDA path's chunk shape (tc, fc), and a function
    running its chunked cuBLAS products alone (the Python loop of ``_product``)."""
    import importlib

    KM = importlib.import_module("steerkit.kernels.sae_encode_topk")  # the package exports a function of that name
    torch.manual_seed(0)
    W = (torch.randn(d, F, device="cuda") / d ** 0.5).to(dt)
    b = (torch.randn(F, device="cuda") * 0.1).to(dt)
    x = torch.randn(T, d, device="cuda", dtype=dt)
    tc, fc, _ = KM.gemm_config(T, d, F, k, 0, x.device, select="cuda")
    P = torch.empty(tc * fc, device="cuda", dtype=dt)

    def products():
        for t0 in range(0, T, tc):
            for f0 in range(0, F, fc):
                KM._product(x[t0:t0 + tc], W[:, f0:f0 + fc], b[f0:f0 + fc], P.view(min(tc, T - t0), fc))
    return x, W, b, tc, fc, products


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    from steerkit import _cuda_ext, ops

    _cuda_ext.load()
    select = torch.ops.steerkit_cuda.sae_encode_topk_select
    dt, k = torch.bfloat16, 64
    rows = []
    buf = torch.empty(1 << 28, dtype=torch.uint8, device="cuda")
    copy_us = med_us(lambda: buf[: 1 << 27].copy_(buf[1 << 27:]))[0]
    copy_tbs = 2 * (1 << 27) / copy_us / 1e6
    print(f"# copy rate {copy_tbs:.2f} TB/s ({torch.cuda.get_device_name()})", flush=True)
    for T, d, F in [(4096, 4096, 65536), (16384, 4096, 65536), (4096, 4096, 131072), (4096, 2304, 16384),
                    (16384, 2304, 16384)]:
        x, W, b, tc, fc, products = shape_setup(T, d, F, k, dt)

        bare = med_us(lambda: x @ W)
        chunked = med_us(products)
        whole = med_us(lambda: ops.sae_encode_topk(x, W, b, k, backend="cuda", validate=False))
        # GPU time per kernel kind inside one call (profiler)
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            ops.sae_encode_topk(x, W, b, k, backend="cuda", validate=False)
            torch.cuda.synchronize()
        kinds = {}
        for e in prof.key_averages():
            t = getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)
            if "topk_select_kernel" in e.key:  # before the filter below: its name holds "steerkit::"
                # the first chunk of features (template FIRST = true) apart from the later ones
                kind = "select_first" if re.search(r"topk_select_kernel<\d+, \w+, true>", e.key) else "select"
            elif t <= 0 or e.key.startswith(("aten::", "cuda", "Memcpy", "Memset")) or "steerkit::" in e.key:
                continue
            else:
                kind = "gemm" if ("gemm" in e.key or "sm90" in e.key) else "other"
            kinds[kind] = kinds.get(kind, 0.0) + t
            kinds[f"n_{kind}"] = kinds.get(f"n_{kind}", 0) + e.count
        # the selection alone on one chunk: first (lists start), then a later one
        C = (torch.randn(tc, fc, device="cuda") * 1.0).to(dt)
        run = torch.empty(tc, 64, device="cuda", dtype=torch.int64)
        v = torch.empty(tc, k, device="cuda", dtype=dt)
        i = torch.empty(tc, k, device="cuda", dtype=torch.int64)
        first = med_us(lambda: select(C, run, v, i, 0, k, True, False))
        # lists as after 15 chunks: the top 64 of 16 chunks' worth, then a fresh chunk at f0 = 15 * fc
        big = (torch.randn(tc, 16 * fc, device="cuda")).to(dt)
        for j in range(16):
            select(big[:, j * fc:(j + 1) * fc], run, v, i, j * fc, k, j == 0, False)
        saved = run.clone()

        def later():
            run.copy_(saved)
            select(C, run, v, i, 16 * fc, k, False, False)
        restore = med_us(lambda: run.copy_(saved))[0]
        later_us = med_us(later)
        floor = tc * fc * 2 / (copy_tbs * 1e6)
        n_chunks = -(-T // tc) * -(-F // fc)
        row = dict(T=T, d=d, F=F, k=k, chunk=f"{tc}x{fc}", n_chunks=n_chunks, bare_us=round(bare[0], 1),
                   chunked_products_us=round(chunked[0], 1), cuda_path_us=round(whole[0], 1),
                   products_vs_bare=round(chunked[0] / bare[0], 3), path_vs_bare=round(whole[0] / bare[0], 3),
                   select_first_us=round(first[0], 2), select_later_us=round(later_us[0] - restore, 2),
                   select_floor_us=round(floor, 2), later_pct_floor=round(100 * floor / (later_us[0] - restore), 1),
                   spread_path_us=[round(whole[1], 1), round(whole[2], 1)],
                   profile_us={key: round(val, 1) for key, val in kinds.items()})
        rows.append(row)
        print(json.dumps(row), flush=True)
        torch.cuda.empty_cache()
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        path = os.path.join(a.out, f"probe-topk-cuda-{time.strftime('%Y%m%d-%H%M%S')}.jsonl")
        with open(path, "w") as f:
            for r in rows:
                f.write(json.dumps(dict(r, device=torch.cuda.get_device_name(),
                                        commit=os.environ.get("STEERKIT_COMMIT", ""))) + "\n")


if __name__ == "__main__":
    main()
