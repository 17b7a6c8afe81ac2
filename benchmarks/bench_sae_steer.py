"""Benchmark sae_steer_ (fused SAE clamping per row) against its PyTorch reference in h's dtype.

Each of 4 configurations clamps 8 features of a JumpReLU-shaped SAE. Rows draw configurations
0..4 at random (T > 64; variant "clamp8x4cfg") or 1..4 (T <= 64: every row steered, as a decode
step of steered requests). From T = 4096 also the layout of a packed prefill, each request's rows
together (1024-row requests with ids 0, 1, 2, ...; variant "clamp8x4cfg-requests1024").
Small T: CUDA-graph replay µs per site (target <= 3 µs for T <= 16); with the CUDA extension
loaded also backend "cuda" (csrc/sae_steer.cu's row kernel, the default at T <= 16). Larger T:
% of the floor = read + write of h plus, once, the encoder and decoder rows of the configurations
(2 * 4 * 8 * d elements), at the measured copy bandwidth (target >= 70%). Also reported: the
no-reuse floor that reads the 16 selected rows per token (``pct_floor_noreuse``).

With --sweep, each launch configuration in kernels/sae_steer.py SWEEP (T >= 4096) or SWEEP_SMALL
(smaller T) is timed too (variant "...:cfg=BT,MP,BD,warps,DOT", with ",row" for the row kernel or
",group,G,num_stages[,CH]" for the group kernel), to pick the defaults.

Usage: python benchmarks/bench_sae_steer.py [--T 1,4,16,64,4096,16384] [--d 2304,4096] [--sweep]
"""
import importlib
import sys

import torch

sys.path.insert(0, __import__("os").path.dirname(__file__))
from sae_common import DTYPES, Run, parser, times  # noqa: E402

from steerkit import ops  # noqa: E402
from steerkit.ops.sae_steer import _cuda_refusal  # noqa: E402
from steerkit.steering.sae_table import SaeSteeringTable  # noqa: E402


CUDA = False  # the CUDA extension loaded (its row kernel is the default at T <= 16)


def main(argv=None):
    global CUDA
    try:
        from steerkit import _cuda_ext

        _cuda_ext.load()
        CUDA = True
    except RuntimeError as e:
        print(f"# no CUDA extension: {e}", flush=True)
    p = parser(__doc__, "1,4,16,64,4096,16384")
    p.set_defaults(F=[16384])
    p.add_argument("--sweep", action="store_true", help="also time kernels/sae_steer.py SWEEP / SWEEP_SMALL")
    a = p.parse_args(argv)
    run = Run("sae-steer", a.deadline, a.out)
    dt, M, n_cfg = DTYPES[a.dtype], 8, 4
    for d in a.d:
        for F in a.F:
            W_enc = (torch.randn(d, F, device="cuda") / d ** 0.5).to(dt)
            W_dec = (torch.randn(F, d, device="cuda") / d ** 0.5).to(dt)
            b_enc, b_dec = torch.zeros(F, device="cuda", dtype=dt), torch.zeros(d, device="cuda", dtype=dt)
            thr = torch.full((F,), 0.1, device="cuda", dtype=dt)
            table = SaeSteeringTable(W_enc, b_enc, W_dec, b_dec, thr, activation="jumprelu", capacity=n_cfg,
                                     max_features=M)
            for c in range(1, n_cfg + 1):
                feats = torch.randint(0, F, (M,)).tolist()
                table.set(c, clamp={f: 0.0 for f in feats})  # ablate: repeated calls keep h bounded
            cases = [(T, "") for T in a.T] + [(T, "-requests1024") for T in a.T if T >= 4096]
            for T, layout in cases:
                if not run.time_left():
                    break
                h = torch.randn(T, d, device="cuda", dtype=dt)
                cfg = torch.randint(0 if T > 64 else 1, n_cfg + 1, (T,), device="cuda", dtype=torch.int32)
                if layout:
                    cfg = (torch.arange(T, device="cuda", dtype=torch.int32) // 1024) % (n_cfg + 1)
                backends = ("triton", "torch") + (("cuda",) if CUDA and _cuda_refusal(h, table) is None else ())
                calls = {b: (lambda b=b: ops.sae_steer_(h, cfg, table, backend=b, validate=False))
                         for b in backends}
                want = ops.sae_steer(h, cfg, table, backend="torch").float()
                KS = importlib.import_module("steerkit.kernels.sae_steer")

                sweep = (KS.SWEEP if T >= 4096 else KS.SWEEP_SMALL) if a.sweep else []
                # every result checked first: the Triton default and sweep entries, the CUDA row kernel
                for c in [None] + sweep + list(backends[2:]):
                    if c == "cuda":
                        got = ops.sae_steer(h, cfg, table, backend="cuda")
                    else:
                        got = h.clone()
                        KS.sae_steer(got, got, cfg, *[t_.contiguous() for t_ in table.tensors()], cfg=c)
                    err = float((got.float() - want).abs().max() / want.abs().max())
                    same = bool(torch.equal(got[cfg == 0], h[cfg == 0]))
                    if err > 3e-2 or not same:
                        print(f"# MISMATCH cfg={c} T={T}{layout} d={d}: max rel. error {err:.2e}, untouched rows "
                              f"identical: {same}", flush=True)
                if sweep:
                    tens = [t_.contiguous() for t_ in table.tensors()]
                    for c in sweep:
                        calls["cfg=" + ",".join(map(str, c))] = (
                            lambda c=c: KS.sae_steer(h, h, cfg, *tens, cfg=c))
                t = times(calls, graph=True)
                elt = h.element_size()
                nbytes = 2 * T * d * elt + 2 * n_cfg * M * d * elt
                noreuse = 2 * T * d * elt + T * 2 * M * d * elt
                for name, (us, gus) in t.items():
                    best = min(us, gus) if gus else us
                    run.add(op="sae_steer", variant=f"clamp{M}x{n_cfg}cfg{layout}" + (f":{name}" if "=" in name else ""),
                            T=T, d=d, F=F, dtype=a.dtype, backend="triton" if "=" in name else name,
                            eager_us=round(us, 2), graph_us=None if gus is None else round(gus, 2),
                            floor_bytes=nbytes, gbps=round(nbytes / 1e3 / best, 1),
                            pct_floor=round(100 * nbytes / 1e3 / run.copy_gbps / best, 1),
                            pct_floor_noreuse=round(100 * noreuse / 1e3 / run.copy_gbps / best, 1),
                            speedup=round(t["torch"][0] / us, 2))
            torch.cuda.empty_cache()
    run.write(a.out)


if __name__ == "__main__":
    main()
