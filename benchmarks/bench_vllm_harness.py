"""The cost of steerkit's vLLM steering per decode step, in a harness with vLLM's contract (GPU).

vLLM cannot be installed on the GPU machine, so this builds what matters of it: a stack of
Llama-3.2-1B-shaped decoder layers (random bf16 weights) that pass the residual stream split as
``(hidden_states, residual)`` and add the halves in the next fused add + RMSNorm, attention over
a per-sequence KV cache, the whole forward compiled with torch.compile and captured in a CUDA
graph (as vLLM's compiled decode runs). Steering attaches exactly as the plugin does: a forward
hook on chosen layers calling ``steerkit.integrations.vllm.steer_split`` on a slice of one
persistent per-token id buffer.

Variants per batch size (1, 64, 256 decode tokens):
  plain           no steering code at all
  <kinds>/off     steering compiled in, every token at configuration 0 (unsteered requests)
  <kinds>/shared  every request with the same configuration
  <kinds>/distinct  a different configuration per request (table capacity >= batch)
where kinds is "vector" (vectors only: the add goes into hidden_states alone) or "all" (scale,
dynamic scale, one direction and a vector: steer(h + r) into hidden_states, zeros into residual).
The same compiled graph serves off/shared/distinct (only buffer contents change).

Floor of the steering work itself (per site and step, decode tokens T, width d, bf16):
  vector: read h + write h = 4*T*d bytes, plus T*d*4 bytes of float32 table rows
  all:    read h, r + write h, r = 8*T*d bytes, plus about 3*T*d*4 bytes of table rows
At T = 256, d = 2048 that is about 4.2 MB (vector) / 10.5 MB (all): 1.4 / 3.5 µs at 2.98 TB/s.
Rows report µs per step, µs per token, the overhead over plain (target: at most 2 %) and the
added time as a multiple of that floor.

  python benchmarks/bench_vllm_harness.py --out benchmarks/results [--layers 16 --sites 8]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time

import torch
import torch.nn.functional as F

from steerkit import SteeringTable
from steerkit.bench import _environment, _write
from steerkit.bench.timing import GraphTimer
from steerkit.integrations.vllm import steer_split

# Llama-3.2-1B
D, FF, HEADS, KV_HEADS, HEAD_DIM = 2048, 8192, 32, 8, 64


def rms(x, w, eps=1e-5):
    return (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w.float())


def fused_add_rmsnorm(h, r, w):
    """vLLM's fused add + RMSNorm: the sum in float32, the new residual rounded once."""
    x = h.float() + r.float()
    return rms(x, w).to(h.dtype), x.to(h.dtype)


class Layer(torch.nn.Module):
    def __init__(self, ctx: int, batch: int):
        super().__init__()
        g = dict(device="cuda", dtype=torch.bfloat16)
        self.ln1 = torch.nn.Parameter(torch.ones(D, **g))
        self.ln2 = torch.nn.Parameter(torch.ones(D, **g))
        self.qkv = torch.nn.Parameter(torch.randn((HEADS + 2 * KV_HEADS) * HEAD_DIM, D, **g) / math.sqrt(D))
        self.o = torch.nn.Parameter(torch.randn(D, HEADS * HEAD_DIM, **g) / math.sqrt(D))
        self.up = torch.nn.Parameter(torch.randn(2 * FF, D, **g) / math.sqrt(D))
        self.down = torch.nn.Parameter(torch.randn(D, FF, **g) / math.sqrt(FF))
        # a KV cache of ctx positions per sequence (decode attends to it)
        self.register_buffer("k", torch.randn(batch, KV_HEADS, ctx, HEAD_DIM, **g))
        self.register_buffer("v", torch.randn(batch, KV_HEADS, ctx, HEAD_DIM, **g))

    def forward(self, positions, h, residual):
        h, residual = fused_add_rmsnorm(h, residual, self.ln1)
        T = h.shape[0]
        qkv = F.linear(h, self.qkv)
        q = qkv[:, : HEADS * HEAD_DIM].view(T, HEADS, 1, HEAD_DIM)
        a = F.scaled_dot_product_attention(q, self.k[:T], self.v[:T], enable_gqa=True)
        h = F.linear(a.reshape(T, HEADS * HEAD_DIM), self.o)
        h, residual = fused_add_rmsnorm(h, residual, self.ln2)
        gate, up = F.linear(h, self.up).chunk(2, dim=-1)
        return F.linear(F.silu(gate) * up, self.down), residual


class Stack(torch.nn.Module):
    def __init__(self, layers: int, ctx: int, batch: int):
        super().__init__()
        self.layers = torch.nn.ModuleList([Layer(ctx, batch) for _ in range(layers)])
        self.norm = torch.nn.Parameter(torch.ones(D, device="cuda", dtype=torch.bfloat16))

    def forward(self, h):
        residual = torch.zeros_like(h)  # stands in for the embedding's residual
        for layer in self.layers:
            h, residual = layer(None, h, residual)
        return fused_add_rmsnorm(h, residual, self.norm)[0]


def make_table(kinds: str, capacity: int) -> SteeringTable:
    t = SteeringTable(D, capacity, 1, device="cuda", dtype=torch.float32)
    g = torch.Generator(device="cuda").manual_seed(0)
    for i in range(1, capacity + 1):
        v = torch.randn(D, device="cuda", generator=g)
        if kinds == "vector":
            t.set(i, vector=v, strength=1.0 + i / capacity)
        else:
            t.set(i, scale=0.9, dynamic=(torch.randn(D, device="cuda", generator=g) / D, 1.0),
                  directions=torch.randn(D, device="cuda", generator=g), vector=v, strength=2.0)
    return t


def attach(stack: Stack, sites, table: SteeringTable, ids: torch.Tensor):
    def hook(module, args, out):
        h, r = out
        return steer_split(h, r, ids[: h.shape[0]], table)
    return [stack.layers[i].register_forward_hook(hook) for i in sites]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batches", default="1,64,256")
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--sites", default="8", help="comma-separated layer indices steered (resid_post)")
    p.add_argument("--kinds", default="vector,all")
    p.add_argument("--ctx", type=int, default=512, help="KV positions per sequence")
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_vllm_harness: needs a CUDA GPU", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    batches = [int(b) for b in a.batches.split(",")]
    sites = [int(s) for s in a.sites.split(",")]
    bmax = max(batches)
    stack = Stack(a.layers, a.ctx, bmax).eval()
    ids = torch.zeros(bmax + 64, dtype=torch.int32, device="cuda")  # the plugin's persistent buffer
    env = _environment("cuda")
    rows, t_start = [], time.time()
    floor_bytes = {"vector": lambda T: 4 * T * D + 4 * T * D, "all": lambda T: 8 * T * D + 12 * T * D}
    variants = [("plain", None)] + [(k, k) for k in a.kinds.split(",")]
    base_us = {}
    for name, kinds in variants:
        handles, table = [], None
        if kinds:
            table = make_table(kinds, bmax)
            handles = attach(stack, sites, table, ids)
        torch._dynamo.reset()
        fn = torch.compile(stack, dynamic=True)
        with torch.no_grad():
            for B in batches:
                x = torch.randn(B, D, device="cuda", dtype=torch.bfloat16)
                torch._dynamo.mark_dynamic(x, 0)
                timer = GraphTimer(lambda: fn(x), n=1)
                modes = ["-"] if kinds is None else ["off", "shared", "distinct"]
                for mode in modes:
                    if mode == "off":
                        ids.zero_()
                    elif mode == "shared":
                        ids[:B] = 1
                    elif mode == "distinct":
                        ids[:B] = torch.arange(1, B + 1, device="cuda", dtype=torch.int32)
                    us = sorted(timer.us(a.reps) for _ in range(5))[2]
                    if kinds is None:
                        base_us[B] = us
                    over = 100.0 * (us - base_us[B]) / base_us[B]
                    fl = None if kinds is None else len(sites) * floor_bytes[kinds](B) / 2.98e6  # µs
                    added = us - base_us[B]
                    row = dict(op="vllm_harness", variant=name if kinds is None else f"{kinds}/{mode}",
                               batch=B, layers=a.layers, sites=len(sites), d=D, dtype="bf16",
                               us_per_step=round(us, 2), us_per_token=round(us / B, 3),
                               overhead_pct=round(over, 2), floor_us=None if fl is None else round(fl, 2),
                               added_over_floor=None if fl is None else round(added / fl, 2), **env)
                    rows.append(row)
                    print(f"{row['variant']:16s} B={B:4d}  {us:9.1f} µs/step  {us / B:8.3f} µs/token  "
                          f"overhead {over:+6.2f} %" + ("" if fl is None else f"  floor {fl:.2f} µs"), flush=True)
                del timer
        for h in handles:
            h.remove()
        ids.zero_()
        print(f"# {name}: done at {time.time() - t_start:.0f} s", flush=True)
    worst = max((r["overhead_pct"] for r in rows if r["variant"] != "plain"), default=0.0)
    print(f"# worst overhead {worst:.2f} % (target <= 2 %)")
    if a.out:
        _write(rows, a.out, env, "cuda", prefix="vllm-harness")
    print(json.dumps({"worst_overhead_pct": worst}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
