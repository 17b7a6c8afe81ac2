"""Host cost of one eager call: how long Python takes to issue each op (µs per call).

Eager decode is bound by the host, not the GPU: a decode-sized op ([64, 2048] bf16) runs in about
2 µs on the GPU, so what steering adds to an eager step is the time the CPU spends issuing it.
This measures that time per call for steerkit's ops on each backend, for the hf integration's
hook, and for the plain PyTorch it replaces, by issuing many calls back to back (no sync inside a
sample; the GPU keeps up) and taking the median over samples.

Usage: python benchmarks/bench_host.py [--T 64] [--d 2048] [--calls 400] [--samples 25] [--out DIR]
"""
import argparse
import json
import os
import statistics
import time

import torch


def per_call_us(fn, calls: int, samples: int, sync) -> float:
    for _ in range(20):
        fn()
    sync()
    xs = []
    for _ in range(samples):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        xs.append((time.perf_counter() - t0) / calls * 1e6)
        sync()
    return statistics.median(xs)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--T", type=int, default=64)
    p.add_argument("--d", type=int, default=2048)
    p.add_argument("--calls", type=int, default=400)
    p.add_argument("--samples", type=int, default=25)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)

    from steerkit import SteeringTable, ops
    from steerkit.ops._backend import explain

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    if dev == "cuda":
        try:
            from steerkit import _cuda_ext
            _cuda_ext.load()
        except Exception as e:  # noqa: BLE001  (report and measure the rest)
            print(f"# cuda backend unavailable: {e}")
    h = torch.randn(a.T, 1, a.d, device=dev, dtype=dtype)
    v = torch.randn(a.d, device=dev, dtype=dtype)
    table = SteeringTable(a.d, 256, 1, device=dev)
    table.set(1, vector=torch.randn(a.d), strength=0.01)
    table.set(2, scale=0.999, directions=torch.randn(a.d), values=0.0, vector=torch.randn(a.d), strength=0.01)
    config = torch.ones(a.T, 1, dtype=torch.int32, device=dev)

    cases = {"torch h.add_(v)": lambda: h.add_(v),
             "torch hook add (h + v)": lambda: h + v}
    verdict = explain("steer", h)
    for b in ("torch", "triton", "cuda"):
        if verdict[b] != "ok":
            print(f"# steer on {b}: {verdict[b]}")
            continue
        cases[f"ops.steer_ {b}"] = (lambda b=b: ops.steer_(h, config, table, backend=b, validate=False))
        cases[f"ops.add_ {b}"] = (lambda b=b: ops.add_(h, v, alpha=0.01, backend=b, validate=False))

    if verdict["cuda"] == "ok":  # the split: the registered CUDA op alone, on prepared arguments
        from steerkit.ops import _registry as R

        x2 = h.view(-1, a.d)
        args = R.OPS["steer"].prepare(x2, config, *table.tensors())
        raw = torch.ops.steerkit_cuda.steer.default
        cases["torch.ops.steerkit_cuda.steer (prepared)"] = lambda: raw(x2, x2, *args)
        raw_add = torch.ops.steerkit_cuda.add.default
        cases["torch.ops.steerkit_cuda.add (prepared)"] = lambda: raw_add(x2, x2, v, None, 0.01)

    if verdict["triton"] == "ok":  # Triton's generic launch path, which the prepared launch skips
        table2 = SteeringTable(a.d, 256, 1, device=dev)
        table2.set(1, vector=torch.randn(a.d), strength=0.01)
        with torch.no_grad():
            ops.steer_(h, config, table2, backend="triton", validate=False)
        table2._launches[id(config)][3].prepared = False
        cases["ops.steer_ triton, generic launch"] = lambda: ops.steer_(h, config, table2, backend="triton", validate=False)

    # the hf integration's hook, as a decoder block's output passes through it, alone and as a
    # forward hook on a module (an Identity: what the hook machinery itself costs)
    from steerkit.integrations.hf import Steering, hook_site

    steering = Steering.__new__(Steering)  # only the hook path: no model needed
    steering._ids, steering._tokens, steering._rule, steering._pad = torch.ones(a.T, dtype=torch.int32, device=dev), None, "all", None
    steering._pos, steering._configs, steering.backend, steering._epoch = None, {}, None, 0
    hook = steering._hook(table, 0, 0)  # what the site hook runs on the hidden states
    cases["hf Steering hook (auto backend)"] = lambda: hook(h)
    plain, noop, steered = torch.nn.Identity(), torch.nn.Identity(), torch.nn.Identity()
    noop.register_forward_hook(lambda m, args, out: None)
    hook_site(steered, "out", hook)
    cases["Identity module, no hook"] = lambda: plain(h)
    cases["Identity module, no-op forward hook"] = lambda: noop(h)
    cases["Identity module, hf Steering hook"] = lambda: steered(h)

    rows = []
    with torch.no_grad():
        for name, fn in cases.items():
            us = per_call_us(fn, a.calls, a.samples, sync)
            rows.append(dict(bench="host", case=name, T=a.T, d=a.d, dtype=str(dtype).replace("torch.", ""),
                             host_us_per_call=round(us, 2), device=torch.cuda.get_device_name() if dev == "cuda" else "cpu",
                             torch=torch.__version__, commit=os.environ.get("STEERKIT_COMMIT", "")))
            print(f"{name:34} {us:8.2f} µs per call")
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        path = os.path.join(a.out, f"host-{dev}-{time.strftime('%Y%m%d-%H%M%S')}.jsonl")
        with open(path, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        print(f"# wrote {len(rows)} rows to {path}")


if __name__ == "__main__":
    main()
