"""Steering under torch.compile: is steerkit ever slower than plain PyTorch there?

The neighbourhood is a decoder layer's residual join: ``h = x + r`` (the residual add), the
intervention on h, then the next RMSNorm reads h. Inductor fuses a plain-PyTorch intervention
into that add + norm; steerkit lowers its ops to the reference under compile so that the same
fusion happens. For comparison the opaque kernels are called directly (what a custom op that
Inductor cannot see would cost). Variants, per intervention:
  none           no intervention
  plain          the intervention written in plain PyTorch (what a forward hook would do)
  steerkit       steerkit.ops.* (lowered to the reference under compile)
  opaque-<b>     torch.ops.steerkit.*_ with backend b, an opaque call inside the compiled graph
"""
from __future__ import annotations

import statistics
from typing import Dict, List, Optional

import torch

from steerkit import ops
from steerkit.bench.cases import _steer_table
from steerkit.bench.timing import GraphTimer, eager_us, spread


def _rms(h, w):
    hf = h.float()
    return (hf * torch.rsqrt(hf.pow(2).mean(-1, keepdim=True) + 1e-6) * w).to(h.dtype)


def _variants(kind: str, T: int, d: int, dtype, backends: List[str]):
    dev = "cuda"
    x, r = (torch.randn(T, d, device=dev, dtype=dtype) for _ in range(2))
    w = torch.ones(d, device=dev, dtype=dtype)
    v = torch.randn(d, device=dev, dtype=dtype) * 1e-3
    table = _steer_table(d, dtype, dev, "mix", 256)
    config = (torch.arange(T, device=dev, dtype=torch.int32) % 256) + 1
    st = table.tensors()

    def layer(intervene):
        def f(x, r):
            h = x + r
            intervene(h)
            return h, _rms(h, w)
        return f

    if kind == "add":
        fns = {
            "none": layer(lambda h: None),
            "plain": lambda x, r: (lambda h: (h, _rms(h, w)))(x + r + 0.5 * v),
            "steerkit": layer(lambda h: ops.add_(h, v, 0.5)),
        }
        for b in backends:
            fns[f"opaque-{b}"] = layer(lambda h, b=b: torch.ops.steerkit.add_.default(h, v, None, 0.5, b))
    else:  # fused per-row steering with 256 distinct mixed configurations
        from steerkit.ops.reference import steer as ref_steer

        fns = {
            "none": layer(lambda h: None),
            "plain": lambda x, r: (lambda h: (h, _rms(h, w)))(ref_steer(x + r, config, *st)),
            "steerkit": layer(lambda h: ops.steer_(h, config, table)),
        }
        for b in backends:
            fns[f"opaque-{b}"] = layer(lambda h, b=b: torch.ops.steerkit.steer_.default(h, config, *st, b))
    return {name: torch.compile(fn, fullgraph=True) for name, fn in fns.items()}, (x, r)


def run(Ts=(1, 64, 4096, 16384), d: int = 4096, dtype=torch.bfloat16, rounds: int = 5,
        backends: Optional[List[str]] = None) -> List[dict]:
    backends = backends or ["triton"]
    print(f"# steering under torch.compile, residual add + intervention + RMSNorm, d={d}, {dtype}; "
          f"{rounds} interleaved rounds, medians [min-max]")
    print(f"{'kind':<7}{'T':>6} {'variant':<14}{'eager us':>10} {'[spread]':<16}{'graph us':>9} {'vs none':>8}")
    rows = []
    import torch._dynamo

    for kind in ("add", "steer"):
        for T in Ts:
            # the variants share one function body: start each group with an empty cache so that
            # dynamo's recompile limit (8 per code object) is never reached
            torch._dynamo.reset()
            fns, (x, r) = _variants(kind, T, d, dtype, backends)
            calls = {n: (lambda f=f, x=x, r=r: f(x, r)) for n, f in fns.items()}
            for c in calls.values():  # compile outside the timing
                c()
            timers = {n: GraphTimer(c, n=10) for n, c in calls.items()}
            e: Dict[str, List[float]] = {n: [] for n in calls}
            g: Dict[str, List[float]] = {n: [] for n in calls}
            for _ in range(rounds):
                for n, c in calls.items():
                    e[n].append(eager_us(c, "cuda"))
                    g[n].append(timers[n].us())
            base = statistics.median(g["none"])
            for n in calls:
                em, gm = statistics.median(e[n]), statistics.median(g[n])
                rows.append(dict(bench="compile", kind=kind, T=T, d=d, dtype=str(dtype).split(".")[-1],
                                 variant=n, eager_us=round(em, 3), graph_us=round(gm, 3),
                                 graph_us_min=round(min(g[n]), 3), graph_us_max=round(max(g[n]), 3),
                                 eager_us_min=round(min(e[n]), 3), eager_us_max=round(max(e[n]), 3),
                                 graph_vs_none=round(gm / base, 3)))
                print(f"{kind:<7}{T:>6} {n:<14}{em:10.2f} [{spread(e[n]):<14}]{gm:9.2f} {gm / base:7.3f}x", flush=True)
            del timers
    return rows
