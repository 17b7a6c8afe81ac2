"""Benchmark sae_steer_ (fused SAE clamping per row) against its PyTorch reference in h's dtype.

Each of 4 configurations clamps 8 features of a JumpReLU-shaped SAE; rows draw configurations
0..4 at random. Small T: CUDA-graph replay µs per site (target <= 3 µs for T <= 16). Larger T:
% of the floor = read + write of h plus, once, the encoder and decoder rows of the configurations
(2 * 4 * 8 * d elements), at the measured copy bandwidth (target >= 70%). Also reported: the
no-reuse floor that reads the 16 selected rows per token (``pct_floor_noreuse``).

Usage: python benchmarks/bench_sae_steer.py [--T 1,4,16,64,4096,16384] [--d 2304,4096]
"""
import sys

import torch

sys.path.insert(0, __import__("os").path.dirname(__file__))
from sae_common import DTYPES, Run, parser, times  # noqa: E402

from steerkit import ops  # noqa: E402
from steerkit.steering.sae_table import SaeSteeringTable  # noqa: E402


def main(argv=None):
    p = parser(__doc__, "1,4,16,64,4096,16384")
    p.set_defaults(F=[16384])
    a = p.parse_args(argv)
    run = Run("sae-steer", a.deadline)
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
            for T in a.T:
                if not run.time_left():
                    break
                h = torch.randn(T, d, device="cuda", dtype=dt)
                cfg = torch.randint(0, n_cfg + 1, (T,), device="cuda", dtype=torch.int32)
                calls = {b: (lambda b=b: ops.sae_steer_(h, cfg, table, backend=b, validate=False))
                         for b in ("triton", "torch")}
                t = times(calls, graph=True)
                elt = h.element_size()
                nbytes = 2 * T * d * elt + 2 * n_cfg * M * d * elt
                noreuse = 2 * T * d * elt + T * 2 * M * d * elt
                for name, (us, gus) in t.items():
                    best = min(us, gus) if gus else us
                    run.add(op="sae_steer", variant=f"clamp{M}x{n_cfg}cfg", T=T, d=d, F=F, dtype=a.dtype,
                            backend=name, eager_us=round(us, 2), graph_us=None if gus is None else round(gus, 2),
                            floor_bytes=nbytes, gbps=round(nbytes / 1e3 / best, 1),
                            pct_floor=round(100 * nbytes / 1e3 / run.copy_gbps / best, 1),
                            pct_floor_noreuse=round(100 * noreuse / 1e3 / run.copy_gbps / best, 1),
                            speedup=round(t["torch"][0] / us, 2))
            torch.cuda.empty_cache()
    run.write(a.out)


if __name__ == "__main__":
    main()
