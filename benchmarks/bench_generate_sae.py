"""Per-request SAE clamp steering in the steered-generation engine: decode ms/token with and
without a 65,536-feature TopK SAE (k=64) clamping 8 features per sequence at one layer, a
distinct configuration per sequence (issue target: at most 3% per token on Llama-3.1-8B).

Variants, per batch size B (same engine options, same prompts, greedy, no early stop):
  base        Engine(model) without any steering: the unsteered decode step.
  sae         Engine(model, steering) where ``steering`` (hf.Steering at the SAE's site, identity
              configurations, nothing declared: ``expect={}``) carries the engine's per-slot ids
              and an ``attach_sae`` handle follows it (``SaeSteering.follow``): request j gets id
              j, whose SAE configuration clamps 8 random features to random targets.
  sae-zero    the same engine and captured graphs with every request on id 0. Under compile the
              SAE op is its reference, which computes every row whatever its id, so this costs
              what ``sae`` costs: it shows that switching ids neither recompiles nor recaptures
              (``recaptures``), not the unsteered speed (that is ``base``).
ms/token = (T(new_tokens) - T(1)) / (new_tokens - 1) as in bench_generate (T(1): the prefill),
medians over interleaved rounds; ``overhead_pct`` = sae / base - 1. ``sae_floor_us``: bytes the
clamp must move per step (h read + written, 8 encoder + 8 decoder rows per sequence) over the
measured copy bandwidth. ``changed_seqs``: sequences whose tokens the clamps changed (vs sae-zero).

Compilation (GPU) is per (engine, bucket): about a minute each at the 8B shape, so a pair of
variants at one B needs two. Items whose compilation would pass ``--deadline`` are skipped.

Usage:
  python benchmarks/bench_generate_sae.py --shape tiny                      # CPU, seconds
  python benchmarks/bench_generate_sae.py --shape llama-3.1-8b --batches 64 --deadline 120
  python benchmarks/bench_generate_sae.py --shape llama-3.1-8b --batches 64,1,256 --deadline 500
Rows: benchmarks/results/generate-sae-<shape>-<gpu>-<time>.jsonl
"""
import argparse
import datetime
import gc
import inspect
import json
import os
import statistics
import sys
import time

import torch

from steerkit.bench import _environment
from steerkit.bench.model_bench import SHAPES, build_model
from steerkit.bench.timing import copy_bandwidth_gbps
from steerkit.integrations import attach
from steerkit.integrations.engine import Engine
from steerkit.integrations.sae_steering import attach_sae
from steerkit.steering.sae_table import SaeSteeringTable

M = 8  # features clamped per configuration


def _timer(device):
    def timed(fn):
        gc.collect()
        gc.disable()
        try:
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = fn()
            if device == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - t0, out
        finally:
            gc.enable()
    return timed


def random_topk_table(d, F, capacity, device, dtype, seed=0):
    """A random TopK SAE (W_enc [d, F], W_dec [F, d] with unit-norm rows, biases) as a steering
    table of ``capacity`` configurations (the SAE's weights stay referenced, not copied)."""
    g = torch.Generator(device=device).manual_seed(seed)
    W_enc = (torch.randn(d, F, device=device, generator=g) / d ** 0.5).to(dtype)
    W_dec = torch.randn(F, d, device=device, generator=g)
    W_dec = (W_dec / W_dec.norm(dim=1, keepdim=True)).to(dtype)
    b_enc = (torch.randn(F, device=device, generator=g) * 0.01).to(dtype)
    b_dec = torch.zeros(d, device=device, dtype=dtype)
    return SaeSteeringTable(W_enc, b_enc, W_dec, b_dec, activation="topk", capacity=capacity, max_features=M,
                            dtype=dtype)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="llama-3.1-8b", choices=sorted(SHAPES))
    p.add_argument("--batches", default="64,1", help="comma-separated batch sizes, measured in this order")
    p.add_argument("--features", type=int, default=65536)
    p.add_argument("--k", type=int, default=64, help="the SAE's k (metadata: clamping does not depend on it)")
    p.add_argument("--layer", type=int, default=16, help="site resid_post.<layer> (clipped to the model)")
    p.add_argument("--prompt", type=int, default=None, help="prompt tokens (default 128; tiny: 8)")
    p.add_argument("--new-tokens", type=int, default=None, help="generated tokens (default 128; tiny: 8)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3; tiny: 1)")
    p.add_argument("--inductor", default="engine", choices=("engine", "plain"),
                   help="the engine's Inductor options: its default, or Inductor's own ({})")
    p.add_argument("--deadline", type=float, default=None, help="seconds: start no compilation that would end later")
    p.add_argument("--compile-estimate", type=float, default=None,
                   help="seconds a new (engine, bucket) compilation is assumed to take before one was measured "
                        "(default 70 on a GPU, 0 on a CPU)")
    p.add_argument("--out", default="benchmarks/results")
    a = p.parse_args(argv)

    tiny = a.shape == "tiny"
    a.prompt = a.prompt or (8 if tiny else 128)
    a.new_tokens = a.new_tokens or (8 if tiny else 128)
    a.rounds = a.rounds or (1 if tiny else 3)
    t_start = time.time()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    batches = [int(b) for b in a.batches.split(",") if b.strip()]
    max_b = max(batches)
    bw = copy_bandwidth_gbps(device, 1 << 30 if device == "cuda" else 1 << 26)
    model = build_model(a.shape, device, dtype)
    cfg = model.config
    d, n_layers = cfg.hidden_size, cfg.num_hidden_layers
    layer = min(a.layer, n_layers - 1) if a.shape != "tiny" else n_layers // 2
    site = f"resid_post.{layer}"
    F = a.features if a.shape != "tiny" else min(a.features, 512)
    weight_bytes = sum(t.numel() * t.element_size() for t in model.parameters())
    floor_ms = weight_bytes / (bw * 1e9) * 1e3
    print(f"# {a.shape} on {device} ({dtype}): {weight_bytes / 1e9:.2f} GB of weights, decode floor {floor_ms:.3f} ms; "
          f"copy {bw:.0f} GB/s; SAE TopK F={F} k={a.k} at {site}, {M} clamps per sequence", flush=True)

    # the SAE, its steering table, the Steering that carries the engine's per-slot ids
    table = random_topk_table(d, F, max_b, device, dtype)
    g = torch.Generator().manual_seed(1)
    steering = attach(model, [site], capacity=max_b)
    sae = attach_sae(model, site, table)
    for i in range(1, max_b + 1):
        steering.set(i, {})  # identity at the Steering's own site: the id only selects the SAE configuration
        feats = torch.randperm(F, generator=g)[:M].tolist()
        targets = (torch.rand(M, generator=g) * 10 - 2).tolist()
        sae.set(i, clamp=dict(zip(feats, targets)))
    sae.follow(steering)

    kw = dict(max_batch=max_b, max_len=a.prompt + a.new_tokens, buckets=tuple(batches))
    if a.inductor == "plain" and "inductor" in inspect.signature(Engine.__init__).parameters:
        kw["inductor"] = {}
    engines = {"base": Engine(model, None, **kw), "sae": Engine(model, steering, expect={}, **kw)}
    engines["sae-zero"] = engines["sae"]
    compiled = set()  # (engine, B) pairs warmed up
    default_estimate = a.compile_estimate if a.compile_estimate is not None else (70.0 if device == "cuda" else 0.0)
    measured = []  # warm-up seconds of each first (engine, bucket) use: the compile estimate
    prompts_all = torch.randint(3, cfg.vocab_size, (max_b, a.prompt), generator=torch.Generator().manual_seed(2))
    timed = _timer(device)
    env = _environment(device)
    tag = "".join(ch if ch.isalnum() else "-" for ch in env["gpu"].lower()).strip("-") or device
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = os.path.join(a.out, f"generate-sae-{a.shape}-{tag}-{stamp}.jsonl")
    N = a.new_tokens

    def gen(name, B, n):
        ids = list(range(1, B + 1)) if name == "sae" else None
        prompts = [row.tolist() for row in prompts_all[:B]]
        return engines[name].generate(prompts, steering=ids, max_new_tokens=n, stop=())

    def left():
        return float("inf") if a.deadline is None else a.deadline - (time.time() - t_start)

    rows = []
    for B in batches:
        warm = {}
        for name in ("base", "sae"):
            estimate = max(measured) if measured else default_estimate
            if (name, B) not in compiled and left() < estimate:
                print(f"# B={B}: skipping '{name}' and what follows at this B: its compilation (~{estimate:.0f} s) "
                      f"would pass the deadline ({left():.0f} s left)", flush=True)
                break
            t0 = time.time()
            gen(name, B, min(3, N))  # compile and capture (first time), warm caches
            warm[name] = time.time() - t0
            if (name, B) not in compiled:
                compiled.add((name, B))
                measured.append(warm[name])
        names = [n for n in ("base", "sae", "sae-zero") if n in warm or (n == "sae-zero" and "sae" in warm)]
        if not names:
            break
        caps0 = engines["sae"].captures
        t1 = {n: [] for n in names}
        tn = {n: [] for n in names}
        toks = {}
        for _ in range(a.rounds):  # interleaved: drifts hit every variant alike
            for n in names:
                t1[n].append(timed(lambda: gen(n, B, 1))[0])
                s, toks[n] = timed(lambda: gen(n, B, N))
                tn[n].append(s)
        recaptures = engines["sae"].captures - caps0
        ms = {n: 1000.0 * (statistics.median(tn[n]) - statistics.median(t1[n])) / max(N - 1, 1) for n in names}
        elt = torch.finfo(dtype).bits // 8
        sae_bytes = 2 * B * d * elt + B * 2 * M * d * table.dec.element_size()
        for n in names:
            row = dict(shape=a.shape, variant=n, batch=B, site=site, features=F, k=a.k, clamps=M,
                       prompt=a.prompt, new_tokens=N, rounds=a.rounds, ms_per_token=ms[n],
                       decode_tok_s=1000.0 * B / ms[n], prefill_s=statistics.median(t1[n]),
                       total_s_spread=[min(tn[n]), max(tn[n])], floor_ms=floor_ms,
                       pct_of_floor=100.0 * floor_ms / ms[n], warmup_s=warm.get(n, 0.0),
                       dtype=str(dtype).replace("torch.", ""), copy_gbps=bw, inductor=a.inductor,
                       compiled=engines[n].compiled, cuda_graphs=engines[n].cuda_graphs)
            if n != "base":
                row.update(captures=engines[n].captures, recaptures=recaptures, sae_floor_us=sae_bytes / (bw * 1e3))
                if "base" in ms:
                    row["overhead_pct"] = 100.0 * (ms[n] / ms["base"] - 1.0)
            if n == "sae" and "sae-zero" in toks:
                row["changed_seqs"] = sum(x != y for x, y in zip(toks["sae"], toks["sae-zero"]))
            rows.append(row)
            os.makedirs(a.out, exist_ok=True)
            with open(path, "a") as f:
                f.write(json.dumps(dict(row, **env)) + "\n")
            extra = f"  overhead {row['overhead_pct']:+6.2f}%" if "overhead_pct" in row else ""
            print(f"{a.shape:13} {n:9} B={B:<4} decode {ms[n]:8.3f} ms/token ({row['decode_tok_s']:9.0f} tok/s, "
                  f"{row['pct_of_floor']:5.1f}% of floor){extra}  warm-up {row['warmup_s']:.0f} s"
                  + (f"  recaptures {recaptures}" if n == "sae-zero" else "")
                  + (f"  changed {row['changed_seqs']}/{B}" if "changed_seqs" in row else ""), flush=True)
    engines["base"].close()
    engines["sae"].close()
    sae.detach()
    steering.detach()
    print(f"# {len(rows)} rows in {path} ({time.time() - t_start:.0f} s)" if rows else "# no rows", flush=True)
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
