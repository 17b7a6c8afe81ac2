"""Probe sae_steer's launch configurations under CUDA-graph replay (H100 work for issue 5's
targets; the benchmark proper is bench_sae_steer.py). Every configuration's result is checked
against the reference first ("MISMATCH" lines).

- large: group kernel configurations at T = 4096 / 16384, with configurations drawn at random
  per row (from 0..4, or 0..16: "random16") and with each request's rows together (1024 per request,
  as in a packed prefill), the rows sorted by configuration in chunks (9th entry) or not, as % of
  the floor (read + write of h, once the table's rows); a plain copy of h (``h2.copy_(h)``) shows
  the bandwidth reachable.
- small: the row kernel at T = 1..16 per assignment of configurations to rows ("bench": 0..4 at
  random, "same": all 1, "cycle": 1..4 in turn), µs per call.
- latency: one steered row (T = 1, d = 4096) against simpler work in the same graph chain (a
  torch in-place add, a minimal Triton row kernel, steer_'s kernel) and 1-16 clamps per row.
small and latency also time the CUDA row kernel (csrc/sae_steer.cu, "cuda") when the CUDA
extension loads. (probe-sae-steer-cuda-*-h100.txt are runs of earlier versions of this probe with
the kernel variants it then had, named there.)

Usage: python benchmarks/probe_sae_steer.py [large|small|both|latency|order]
"""
import importlib
import sys

import torch
import triton
import triton.language as tl

from steerkit import ops
from steerkit.bench.timing import GraphTimer, copy_bandwidth_gbps
from steerkit.steering.sae_table import SaeSteeringTable

KS = importlib.import_module("steerkit.kernels.sae_steer")

M, N_CFG, F = 8, 4, 16384


def table_for(d, capacity=N_CFG, m=M, seed=None):
    """A JumpReLU-shaped SAE's steering table: configurations 1..capacity clamp m features to 0
    (random features; with ``seed`` given, features 0..m-1)."""
    g = torch.Generator().manual_seed(d if seed is None else seed)
    W_enc = (torch.randn(d, F, generator=g) / d ** 0.5).to("cuda", torch.bfloat16)
    W_dec = (torch.randn(F, d, generator=g) / d ** 0.5).to("cuda", torch.bfloat16)
    z = torch.zeros(F, device="cuda", dtype=torch.bfloat16)
    tab = SaeSteeringTable(W_enc, z, W_dec, torch.zeros(d, device="cuda", dtype=torch.bfloat16),
                           torch.full((F,), 0.1, device="cuda", dtype=torch.bfloat16), activation="jumprelu",
                           capacity=capacity, max_features=m)
    for c in range(1, capacity + 1):
        feats = torch.randint(0, F, (m,), generator=g).tolist() if seed is None else list(range(m))
        tab.set(c, clamp={f: 0.0 for f in feats})
    return tab


def run_cfg(x, cfg, tens, c):
    """One launch: kernels/sae_steer.py with launch configuration c, or the CUDA row kernel
    (c = "cuda")."""
    if c == "cuda":
        torch.ops.steerkit_cuda.sae_steer(x, x, cfg, *tens)
    else:
        KS.sae_steer(x, x, cfg, *tens, cfg=c)


def check_and_time(h, cfg, tab, cfgs):
    tens = [t.contiguous() for t in tab.tensors()]
    want = ops.sae_steer(h, cfg, tab, backend="torch").float()
    for c in cfgs:  # every check before any timing (the timed calls change h in place)
        got = h.clone()
        run_cfg(got, cfg, tens, c)
        err = float((got.float() - want).abs().max() / want.abs().max())
        if err > 3e-2 or not torch.equal(got[cfg == 0], h[cfg == 0]):
            print(f"# MISMATCH cfg={c} T={h.shape[0]} d={h.shape[1]}: {err:.2e}", flush=True)
    out = {c: GraphTimer(lambda c=c: run_cfg(h, cfg, tens, c)) for c in cfgs}
    res = {c: [] for c in cfgs}
    for _ in range(5):  # interleaved rounds, medians
        for c, t in out.items():
            res[c].append(t.us())
    return {c: sorted(v)[len(v) // 2] for c, v in res.items()}


G = (True, "group")
LARGE = [None, (16, 8, 256, 4) + G + (2, 3), (32, 8, 256, 4) + G + (2, 4), (32, 8, 256, 4) + G + (2, 3, 256),
         (16, 8, 256, 4) + G + (2, 4, 256), (32, 8, 256, 4) + G + (2, 5, 256), (32, 8, 256, 8) + G + (2, 4, 256),
         (32, 8, 256, 4) + G + (2, 4, 128), (32, 8, 256, 4) + G + (4, 4, 128), (32, 8, 256, 4) + G + (4, 4, 64)]


def large(copy_gbps):
    for d in (4096, 2304):
        tabs = {N_CFG: table_for(d), 16: table_for(d, capacity=16)}
        for T, layout in [(4096, "random"), (16384, "random"), (4096, "requests"), (16384, "requests"),
                          (4096, "random16"), (16384, "random16")]:
            n_cfg = 16 if layout == "random16" else N_CFG
            h = torch.randn(T, d, device="cuda", dtype=torch.bfloat16)
            cfg = torch.randint(0, n_cfg + 1, (T,), device="cuda", dtype=torch.int32)
            if layout == "requests":  # a packed prefill: each request's rows together (1024 per request)
                cfg = (torch.arange(T, device="cuda", dtype=torch.int32) // 1024) % (N_CFG + 1)
            h2 = torch.empty_like(h)
            copy = GraphTimer(lambda: h2.copy_(h)).us()
            nbytes = 2 * T * d * 2 + 2 * n_cfg * M * d * 2
            floor = nbytes / 1e3 / copy_gbps
            print(f"T={T} d={d} {layout}: floor {floor:.1f} us, copy_ of h {copy:.1f} us ({100 * floor / copy:.0f}%)", flush=True)
            for c, us in sorted(check_and_time(h, cfg, tabs[n_cfg], LARGE).items(), key=lambda kv: kv[1]):
                print(f"  {str(c):48s} {us:8.2f} us  {100 * floor / us:5.1f}% of floor", flush=True)


def order():
    """What the group kernel's in-block sort of a 256-row chunk costs: the default configuration
    with ids drawn at random per row, the same ids with each chunk already in order ("presorted":
    the in-order check skips the sort, blocks hold the same ids), and 1024-row requests. The
    presorted row is the ceiling of any cheaper way to order a chunk. (At 757ff55 this mode also
    timed blocks that found their rows by rank, each key's position the count of keys below it,
    32 compared at a time: 24.0 µs against tl.sort's 18.3 at T = 4096, d = 2304;
    probe-sae-steer-order-h100.txt.)"""
    gbps = copy_bandwidth_gbps("cuda")
    for d in (2304, 4096):
        tab = table_for(d)
        for T in (4096, 16384):
            for layout in ("random", "presorted", "requests"):
                h = torch.randn(T, d, device="cuda", dtype=torch.bfloat16)
                cfg = torch.randint(0, N_CFG + 1, (T,), device="cuda", dtype=torch.int32)
                if layout == "presorted":
                    cfg = cfg.view(-1, KS.SORT_CH).sort(dim=1).values.reshape(-1).contiguous()
                if layout == "requests":
                    cfg = (torch.arange(T, device="cuda", dtype=torch.int32) // 1024) % (N_CFG + 1)
                floor = (2 * T * d * 2 + 2 * N_CFG * M * d * 2) / 1e3 / gbps
                us = check_and_time(h, cfg, tab, [None])[None]
                print(f"T={T} d={d} {layout:9s}: default {us:6.2f} us  {100 * floor / us:5.1f}% of floor", flush=True)


def small():
    for d in (4096, 2304):
        tab = table_for(d)
        for T in (1, 2, 4, 8, 16):
            for name in ("bench", "same", "cycle"):
                g = torch.Generator().manual_seed(T)
                cfg = {"bench": torch.randint(0, N_CFG + 1, (T,), generator=g), "same": torch.ones(T),
                       "cycle": torch.arange(T) % N_CFG + 1}[name].to("cuda", torch.int32)
                h = torch.randn(T, d, device="cuda", dtype=torch.bfloat16)
                cfgs = [None, (1, 8, None, 8, False, "row"), (1, 8, None, 16, False, "row")] + CUDA
                r = check_and_time(h, cfg, tab, cfgs)
                label = lambda c: "default" if c is None else c if isinstance(c, str) else f"{c[3]} warps"  # noqa: E731
                print(f"T={T:2d} d={d} {name:5s} ({int((cfg > 0).sum())} steered): "
                      + "  ".join(f"{label(c)} {us:.2f}" for c, us in r.items()), flush=True)


@triton.jit
def _touch_row(x_ptr, cfg_ptr, d, BD: tl.constexpr):
    """The smallest in-place row op: read the row's id, and if it is > 0 read the row and write
    it back plus one (two dependent round trips and a store, like the row kernel's)."""
    row = tl.program_id(0)
    c = tl.load(cfg_ptr + row)
    if c > 0:
        cols = tl.arange(0, BD)
        at = x_ptr + row.to(tl.int64) * d + cols
        tl.store(at, tl.load(at, mask=cols < d) + 1.0, mask=cols < d)


def latency():
    """Graph-replay µs of a steered row (T = 1, d = 4096) against simpler work in the same chain."""
    from steerkit.steering.table import SteeringTable

    d = 4096
    h = torch.randn(1, d, device="cuda", dtype=torch.bfloat16)
    one, zero = torch.ones(1, device="cuda", dtype=torch.int32), torch.zeros(1, device="cuda", dtype=torch.int32)
    st = SteeringTable(d, 2, device="cuda")
    st.set(1, vector=torch.randn(d), strength=0.5)
    calls = {"h.add_(1) (torch)": lambda: h.add_(1.0),
             "touch row, id 0": lambda: _touch_row[(1,)](h, zero, d, BD=4096, num_warps=8),
             "touch row, id 1": lambda: _touch_row[(1,)](h, one, d, BD=4096, num_warps=8),
             "steer_ (vector add)": lambda: ops.steer_(h, one, st, validate=False)}
    for m in (1, 2, 4, 8, 16):
        tens = [t.contiguous() for t in table_for(d, capacity=1, m=m, seed=m).tensors()]
        for w in (4, 8):
            calls[f"sae_steer row kernel, {m} clamps, {w} warps"] = (
                lambda tens=tens, w=w, m=m: KS.sae_steer(h, h, one, *tens, cfg=(1, triton.next_power_of_2(m), None,
                                                                               w, False, "row")))
        for c in CUDA:
            if m <= 8:
                calls[f"sae_steer CUDA row kernel, {m} clamps"] = (
                    lambda tens=tens, c=c: run_cfg(h, one, tens, c))
    timers = {k: GraphTimer(f) for k, f in calls.items()}
    res = {k: sorted(t.us() for _ in range(5))[2] for k, t in timers.items()}
    for k, us in res.items():
        print(f"  {k:44s} {us:6.2f} us", flush=True)


CUDA = []  # ["cuda"] once the CUDA extension loads


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "both"
    try:
        from steerkit import _cuda_ext

        _cuda_ext.load()
        CUDA.append("cuda")
    except RuntimeError as e:
        print(f"# no CUDA extension: {e}", flush=True)
    gbps = copy_bandwidth_gbps("cuda")
    print(f"# probe_sae_steer on {torch.cuda.get_device_name()}: copy {gbps:.0f} GB/s", flush=True)
    if what == "latency":
        latency()
    if what == "order":
        order()
    if what in ("small", "both"):
        small()
    if what in ("large", "both"):
        large(gbps)
