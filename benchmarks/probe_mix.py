"""Probe (run on a GPU: python benchmarks/probe_mix.py [shape] [batch] [blocks]; default
llama-3.2-1b 256 8): compiled steerkit-mix against a plain hook-mix in decode, with a distinct
configuration per sequence. A Llama of that shape cut to a few blocks, reduce-overhead compile;
each variant compiled in turn, then 15 samples of 16 decode steps; kernel counts.
Variants: none, hook-mix (bench-model's plain hook), steerkit-mix (the lowering as shipped),
steerkit-mix-x (every reduction reads x), steerkit-mix-full (no per-row flags or direction counts:
isolates what serving any configuration per row costs against the hook's one hard-coded kind)."""
import statistics
import sys
import time

import torch
from transformers import StaticCache
from steerkit.bench import model_bench as mb
from steerkit.ops import reference as ref

def steer_uses_x(x, config, scale, flags, dyn_w, dyn_b, dirs, dir_val, n_dirs, vec, strength, *, uses):
    # restructured: every reduction reads x only (coef_0 = c * (x . u_0) - val_0), so Inductor can
    # compute them in one pass
    use_scale, use_dyn, r_used, use_vec = uses
    n = scale.shape[0]
    i = ref._safe_index(config, n)
    xf = x.float()
    f = flags[i].unsqueeze(-1)
    c = None
    if use_scale or use_dyn:
        c = scale[i].float().unsqueeze(-1)
        if use_dyn:
            dyn = (dyn_w[i].float() * xf).sum(-1, keepdim=True) + dyn_b[i].float().unsqueeze(-1)
            c = c * torch.where((f & ref.FLAG_DYNAMIC) != 0, dyn, torch.ones_like(dyn))
    y = xf if c is None else c * xf
    nd = n_dirs[i].unsqueeze(-1)
    for k in range(min(r_used, dirs.shape[1])):
        u = dirs[i, k].float()
        if k == 0:
            xu = (xf * u).sum(-1, keepdim=True)
            coef = (xu if c is None else c * xu) - dir_val[i, k].float().unsqueeze(-1)
        else:
            coef = (y * u).sum(-1, keepdim=True) - dir_val[i, k].float().unsqueeze(-1)
        y = torch.where(nd > k, y - coef * u, y)
    if use_vec:
        y = torch.where((f & ref.FLAG_VECTOR) != 0, y + strength[i].float().unsqueeze(-1) * vec[i].float(), y)
    touched = ((config > 0) & (config < n)).unsqueeze(-1)
    return torch.where(touched, y.to(x.dtype), x)

def steer_uses_full(x, config, scale, flags, dyn_w, dyn_b, dirs, dir_val, n_dirs, vec, strength, *, uses):
    # for tables whose every configuration holds every part the table uses (this probe's mix
    # tables): the per-row flags and direction counts select nothing, so they are not read and
    # no part is chosen per row; untouched rows still come from x
    use_scale, use_dyn, r_used, use_vec = uses
    n = scale.shape[0]
    i = ref._safe_index(config, n)
    xf = x.float()
    y = xf
    if use_scale or use_dyn:
        c = scale[i].float().unsqueeze(-1)
        if use_dyn:
            c = c * ((dyn_w[i].float() * xf).sum(-1, keepdim=True) + dyn_b[i].float().unsqueeze(-1))
        y = c * xf
    for k in range(min(r_used, dirs.shape[1])):
        u = dirs[i, k].float()
        y = y - ((y * u).sum(-1, keepdim=True) - dir_val[i, k].float().unsqueeze(-1)) * u
    if use_vec:
        y = y + strength[i].float().unsqueeze(-1) * vec[i].float()
    touched = ((config > 0) & (config < n)).unsqueeze(-1)
    return torch.where(touched, y.to(x.dtype), x)

SHAPE = sys.argv[1] if len(sys.argv) > 1 else "llama-3.2-1b"
mb.SHAPES["probe"] = dict(mb.SHAPES[SHAPE], num_hidden_layers=int(sys.argv[3]) if len(sys.argv) > 3 else 8)
dev = "cuda"
model = mb.build_model("probe", dev)
B, S, steps = int(sys.argv[2]) if len(sys.argv) > 2 else 256, 128, 16
params = mb._Params(B, mb.SHAPES[SHAPE]["hidden_size"], dev)
print(f"# {SHAPE} cut to {mb.SHAPES['probe']['num_hidden_layers']} blocks, batch {B}", flush=True)
sk = mb._SteerkitVariant(model, "mix", params, B)
hk = mb._HookVariant(model, "mix", params)
ids = torch.arange(1, B + 1, dtype=torch.int32, device=dev)
orig = ref.steer_uses
import importlib
sm = importlib.import_module("steerkit.ops.steer")
variants = {}
def make(name):
    torch._dynamo.reset()
    return torch.compile(model, fullgraph=True, mode="reduce-overhead")
cache = StaticCache(config=model.config, max_cache_len=S + steps + 2)
ids0 = torch.randint(0, 1000, (B, S), device=dev)
def measure(compiled):
    cache.reset()
    with torch.no_grad():
        out = model(input_ids=ids0, past_key_values=cache, cache_position=torch.arange(S, device=dev), logits_to_keep=1)
        tok = out.logits[:, -1:].argmax(-1)
        torch.cuda.synchronize(); t0 = time.perf_counter()
        for s in range(steps):
            pos = torch.full((1,), S + s, device=dev, dtype=torch.long)
            tok = compiled(input_ids=tok, past_key_values=cache, cache_position=pos, position_ids=pos.expand(B, 1)).logits[:, -1:].argmax(-1)
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps * 1e6
res = {}
LOWERINGS = {"steerkit-mix-x": steer_uses_x, "steerkit-mix-full": steer_uses_full}
for name in ["none", "hook-mix", "steerkit-mix", "steerkit-mix-x", "steerkit-mix-full"]:
    sk.off(); hk.off()
    sm.reference.steer_uses = LOWERINGS.get(name, orig)
    if name.startswith("steerkit"): sk.on(ids)
    if name == "hook-mix": hk.on(ids)
    torch._dynamo.reset()
    from torch._inductor import metrics
    metrics.reset()
    c = torch.compile(model, fullgraph=True, mode="reduce-overhead")
    t0 = time.time(); measure(c); measure(c)
    kc = metrics.generated_kernel_count
    xs = [measure(c) for _ in range(15)]
    res[name] = statistics.median(xs)
    print(f"{name:16} {res[name]:8.1f} us/step  kernels generated {kc}  compile {time.time()-t0:.0f}s", flush=True)
for n, v in res.items():
    print(f"{n:16} {100*(v/res['none']-1):+.2f}%")
