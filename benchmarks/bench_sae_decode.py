"""Benchmark sae_decode against ``F.embedding_bag(indices, W_dec, per_sample_weights=values,
mode="sum")``, bf16, k = 64, with uniform indices and with heavy-tailed (Zipf-like, exponent 1)
indices like real SAE activations. Gather floor (no reuse): read T*k*d decoder elements plus the
values and indices, write T*d outputs, at the measured copy bandwidth. Targets at T = 4096:
>= 3x embedding_bag and >= 70% of the floor.

With --sweep, each launch configuration in kernels/sae_decode.py SWEEP is timed too at T >= 4096
(variant "<indices>:cfg=ROWS,BJ,BD,warps"), to pick the default.

Usage: python benchmarks/bench_sae_decode.py [--T 1,64,4096,16384] [--d 2304,4096] [--F ...] [--sweep]
"""
import importlib
import sys

import torch
import torch.nn.functional as Fn

sys.path.insert(0, __import__("os").path.dirname(__file__))
from sae_common import DTYPES, Run, parser, times  # noqa: E402

from steerkit import ops  # noqa: E402


def indices(kind, T, k, F):
    if kind == "uniform":
        return torch.randint(0, F, (T, k), device="cuda")
    p = 1.0 / torch.arange(1, F + 1, device="cuda", dtype=torch.float32)  # frequency ~ 1 / rank
    draw = torch.multinomial(p, T * k, replacement=True).view(T, k)
    return torch.randperm(F, device="cuda")[draw]  # popular features spread over the dictionary


def main(argv=None):
    p = parser(__doc__, "1,64,4096,16384")
    p.add_argument("--sweep", action="store_true", help="also time kernels/sae_decode.py SWEEP at T >= 4096")
    a = p.parse_args(argv)
    run = Run("sae-decode", a.deadline, a.out)
    dt, k = DTYPES[a.dtype], a.k
    for d in a.d:
        for F in a.F:
            W = (torch.randn(F, d, device="cuda") / d ** 0.5).to(dt)
            bias = torch.randn(d, device="cuda").to(dt)
            for T in a.T:
                for kind in ("uniform", "heavy-tailed"):
                    if not run.time_left():
                        break
                    idx = indices(kind, T, k, F)
                    val = torch.rand(T, k, device="cuda").to(dt)
                    calls = {
                        "triton": lambda: ops.sae_decode(val, idx, W, bias, backend="triton", validate=False),
                        "embedding_bag": lambda: Fn.embedding_bag(idx, W, per_sample_weights=val, mode="sum") + bias,
                    }
                    if a.sweep and T >= 4096:
                        KD = importlib.import_module("steerkit.kernels.sae_decode")

                        out = torch.empty(T, d, device="cuda", dtype=dt)
                        for cfg in KD.SWEEP:
                            calls["cfg=" + ",".join(map(str, cfg))] = (
                                lambda cfg=cfg: KD.sae_decode(val, idx, W, bias, out, cfg=cfg) or out)
                    ref = calls["embedding_bag"]().float()
                    for name, f in calls.items():  # correctness first (every kernel configuration)
                        err = float((f().float() - ref).abs().max() / ref.abs().max())
                        if err > 2e-2:
                            print(f"# MISMATCH {name} T={T} d={d} F={F} {kind}: max rel. error {err:.2e}", flush=True)
                    t = times(calls, graph=T <= 64)
                    nbytes = T * k * d * W.element_size() + T * k * (val.element_size() + 8) + T * d * W.element_size()
                    floor_us = nbytes / 1e3 / run.copy_gbps
                    for name, (us, gus) in t.items():
                        run.add(op="sae_decode", variant=kind if ":" not in name and "=" not in name
                                else f"{kind}:{name}", T=T, d=d, F=F, k=k, dtype=a.dtype,
                                backend="eager:" + name if name == "embedding_bag" else "triton",
                                eager_us=round(us, 2), graph_us=None if gus is None else round(gus, 2),
                                floor_bytes=nbytes, gbps=round(nbytes / 1e3 / us, 1),
                                pct_floor=round(100 * floor_us / us, 1),
                                speedup=round(t["embedding_bag"][0] / us, 2))
            torch.cuda.empty_cache()
    run.write(a.out)


if __name__ == "__main__":
    main()
