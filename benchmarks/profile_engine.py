"""Kernel-level breakdown of the engine's captured decode step (torch.profiler over graph replays).

    python benchmarks/profile_engine.py --shape llama-3.2-1b --batches 1,64 [--inductor engine|plain]

Prints, per batch bucket, the replay time, the per-token latency through generate, and the
kernels sorted by GPU time per step, so it is clear where a step's time goes beyond the
weight-read floor.
"""
import argparse
import time

import torch

from steerkit.bench.generate_bench import _replay_ms
from steerkit.bench.model_bench import build_model
from steerkit.integrations.engine import Engine


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="llama-3.2-1b")
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--max-len", type=int, default=256)
    ap.add_argument("--inductor", default="engine", choices=("engine", "plain"),
                    help="the engine's default compilation, or Inductor's defaults for every bucket")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--max-batch", type=int, default=0, help="engine slots (default: the largest batch)")
    ap.add_argument("--steer", default="none", choices=("none", "add", "scale", "ablate", "mix"),
                    help="a distinct configuration of this kind per slot at every layer, in an engine built "
                         "for every kind with tables in the model's dtype (as bench-generate)")
    ap.add_argument("--generate", type=int, default=1, help="also time generate per token (0: no)")
    a = ap.parse_args()
    batches = [int(b) for b in a.batches.split(",")]
    model = build_model(a.shape, "cuda")
    opts = None if a.inductor == "engine" else {}
    slots = a.max_batch or max(batches)
    kw = dict(max_batch=slots, max_len=a.max_len, buckets=batches, inductor=opts)
    if a.steer == "none":
        eng = Engine(model, None, **kw)
    else:
        from steerkit.bench.model_bench import _Params
        from steerkit.integrations import attach

        params = _Params(slots, model.config.hidden_size, "cuda")
        sites = [f"resid_post.{i}" for i in range(model.config.num_hidden_layers)]
        handle = attach(model, sites, capacity=slots, max_directions=1, dtype=model.dtype)
        for j in range(slots):
            handle.set(j + 1, {s: params.spec(a.steer, j) for s in sites})
        eng = Engine(model, handle, **kw)
    wb = sum(p.numel() * p.element_size() for p in model.parameters())
    for B in batches:
        t0 = time.time()
        ids = list(range(1, B + 1)) if a.steer != "none" else None
        eng.generate([[5] * 16] * B, steering=ids, max_new_tokens=4, stop=())
        g = eng._graphs[(B, False)]
        print(f"# {a.shape} B={B}: warm-up {time.time() - t0:.1f} s; weights {wb / 1e9:.2f} GB")
        print(f"# B={B}: replay {_replay_ms(g) * 1000:.0f} us per step")
        # the benchmark's per-token latency: (T(N) - T(1)) / (N - 1) through generate
        prompts = [[5 + i] * 128 for i in range(B)]
        wall = {}
        for N in ((1, 128, 1, 128) if a.generate else ()):
            torch.cuda.synchronize()
            w0 = time.perf_counter()
            eng.generate(prompts, steering=ids, max_new_tokens=N, stop=())
            torch.cuda.synchronize()
            wall[N] = time.perf_counter() - w0
        if wall:
            print(f"# B={B}: generate {(wall[128] - wall[1]) / 127 * 1e6:.0f} us per token")
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(10):
                g.replay()
            torch.cuda.synchronize()
        rows = []
        for ev in prof.key_averages():
            t = getattr(ev, "device_time_total", None) or getattr(ev, "cuda_time_total", 0)
            if t > 0:
                rows.append((t / 10, ev.count // 10, ev.key))
        rows.sort(reverse=True)
        total = sum(r[0] for r in rows)
        print(f"# B={B}: kernels sum {total:.0f} us per step")
        for t, c, k in rows[:a.top]:
            print(f"  {t:8.1f} us  x{c:<4d} {k[:120]}")
    eng.close()


if __name__ == "__main__":
    main()
