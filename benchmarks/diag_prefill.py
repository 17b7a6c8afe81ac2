"""Where does steering's prefill overhead go? Per-kernel GPU time and SM clock of one prefill forward,
unsteered against steered, eager and compiled.

Usage: python benchmarks/diag_prefill.py [shape] [batch] [seq] [--compiled | --graphs] [--rounds N]
       [--variants none,steerkit-add,...] [--idle S]
(--compiled: torch.compile's default mode; --graphs: mode="reduce-overhead", CUDA graphs, as
bench-model compiles; --idle S: the GPU idles S seconds before each round, whose first sample is
the unsteered one, as after bench-model's garbage collection between rounds).

For each variant (none, steerkit add at strength 1 and 0, steerkit mix, plain-hook add) it times
interleaved forwards (CUDA events) while sampling the SM clock and power (nvidia-smi, every 50
ms), then profiles one forward and sums the kernels' GPU time by name. Printed: time, mean clock
and power per variant, GPU time by kernel class (matrix products, attention, steerkit, other),
and the kernels whose total time moved most against the unsteered forward."""
import collections
import datetime
import statistics
import subprocess
import sys
import threading
import time

import torch

from steerkit.bench import model_bench as M
from steerkit.bench import _git_commit

args = [a for a in sys.argv[1:] if not a.startswith("--")]
shape = args[0] if args else "llama-3.1-8b"
B = int(args[1]) if len(args) > 1 else 16
S = int(args[2]) if len(args) > 2 else 2048
ROUNDS = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 3
IDLE = float(sys.argv[sys.argv.index("--idle") + 1]) if "--idle" in sys.argv else 0.0
GRAPHS = "--graphs" in sys.argv
COMPILED = "--compiled" in sys.argv or GRAPHS
dev = "cuda" if torch.cuda.is_available() else "cpu"


class Clocks:
    """SM clock (MHz) and power (W) from nvidia-smi every 50 ms, as (time, mhz, watts)."""

    def __init__(self):
        self.rows, self.proc = [], None
        try:
            self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=timestamp,clocks.sm,power.draw",
                                          "--format=csv,noheader,nounits", "-lms", "50"],
                                         stdout=subprocess.PIPE, text=True)
        except OSError:
            return
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                ts, mhz, w = [p.strip() for p in line.split(",")]
                t = datetime.datetime.strptime(ts, "%Y/%m/%d %H:%M:%S.%f").timestamp()
                self.rows.append((t, float(mhz), float(w)))
            except ValueError:
                pass

    def mean(self, t0, t1):
        sel = [r for r in self.rows if t0 <= r[0] <= t1]
        if not sel:
            return float("nan"), float("nan")
        return statistics.mean(r[1] for r in sel), statistics.mean(r[2] for r in sel)

    def stop(self):
        if self.proc:
            self.proc.terminate()


def kind_of(name: str) -> str:
    """A kernel's class by its name: Inductor's generated kernels (named after the ops they fuse,
    attention's included) are "other"; attention before matrix products (cuDNN's attention
    kernels carry "sm90" too)."""
    n = name.lower()
    if "steer" in n:
        return "steerkit"
    if n.startswith("triton_"):
        return "other"
    if any(k in n for k in ("flash", "fmha", "attention", "sdpa")):
        return "attention"
    if any(k in n for k in ("gemm", "nvjet", "cutlass", "xmma", "sm90", "splitk", "cublas")):
        return "matmul"
    return "other"


model = M.build_model(shape, dev, torch.bfloat16 if dev == "cuda" else torch.float32)
d = model.config.hidden_size
backend = None if dev == "cuda" else "triton"
p1, p0 = M._Params(B, d, dev, 1.0), M._Params(B, d, dev, 0.0)
variants = {"none": None,
            "steerkit-add": M._SteerkitVariant(model, "add", p1, B, backend),
            "steerkit-add-s0": M._SteerkitVariant(model, "add", p0, B, backend),
            "steerkit-mix": M._SteerkitVariant(model, "mix", p1, B, backend),
            "hook-add": M._HookVariant(model, "add", p1)}
if "--variants" in sys.argv:
    keep = ["none"] + [v for v in sys.argv[sys.argv.index("--variants") + 1].split(",") if v != "none"]
    for name in list(variants):
        if name not in keep:
            v = variants.pop(name)
            if isinstance(v, M._SteerkitVariant):
                v.handle.detach()
            elif isinstance(v, M._HookVariant):
                for h in v.handles:
                    h.remove()
ids = torch.arange(1, B + 1, dtype=torch.int32, device=dev)
x = torch.randint(0, model.config.vocab_size, (B, S), device=dev)
fwd = (torch.compile(model, fullgraph=True, dynamic=False, mode="reduce-overhead" if GRAPHS else None)
       if COMPILED else model)
print(f"# diag_prefill {shape} B={B} S={S} {'compiled, CUDA graphs' if GRAPHS else 'compiled' if COMPILED else 'eager'} on "
      f"{torch.cuda.get_device_name() if dev == 'cuda' else 'cpu'}, commit {_git_commit()}", flush=True)


def use(name):
    for v in variants.values():
        if v is not None:
            v.off()
    if variants[name] is not None:
        variants[name].on(ids)


def sync():
    if dev == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def forward():
    fwd(input_ids=x, logits_to_keep=1, use_cache=False)


clocks = Clocks() if dev == "cuda" else None
t0 = time.time()
for name in variants:  # warm-up (compiles each variant)
    use(name)
    forward()
    forward()
sync()
print(f"# warm-up {time.time() - t0:.0f} s; idle before each round {IDLE} s", flush=True)
times = collections.defaultdict(list)
windows = collections.defaultdict(list)
for _ in range(ROUNDS):
    time.sleep(IDLE)
    for name in variants:
        use(name)
        sync()
        a = time.time()
        t = time.perf_counter()
        forward()
        sync()
        times[name].append(1e3 * (time.perf_counter() - t))
        windows[name].append((a, time.time()))
time.sleep(0.2)
base = statistics.median(times["none"])
print(f"{'variant':18} {'ms':>9} {'vs none':>8} {'SM MHz':>7} {'W':>6}")
for name in variants:
    mhz = [clocks.mean(*w) for w in windows[name]] if clocks else [(float("nan"),) * 2]
    med = statistics.median(times[name])
    print(f"{name:18} {med:9.2f} {100 * (med / base - 1):+7.2f}% {statistics.mean(m for m, _ in mhz):7.0f} "
          f"{statistics.mean(w for _, w in mhz):6.0f}   rounds {' '.join(f'{t:.1f}' for t in times[name])}", flush=True)

acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if dev == "cuda" else [])
per = {}
for name in variants:
    use(name)
    forward()
    sync()
    with torch.profiler.profile(activities=acts) as prof:
        forward()
        sync()
    k = collections.Counter()
    for e in prof.key_averages():
        if dev == "cuda":
            if e.device_type != torch.autograd.DeviceType.CUDA:
                continue  # kernels only
            t = getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)
        else:
            t = e.self_cpu_time_total
        k[e.key] += t / 1e3  # ms
    per[name] = k
use("none")
print("\n# GPU time per forward by kernel class (ms)")
print(f"{'variant':18} " + " ".join(f"{c:>10}" for c in ("matmul", "attention", "steerkit", "other", "total")))
for name, k in per.items():
    cls = collections.Counter()
    for key, t in k.items():
        cls[kind_of(key)] += t
    print(f"{name:18} " + " ".join(f"{cls[c]:10.2f}" for c in ("matmul", "attention", "steerkit", "other"))
          + f" {sum(k.values()):10.2f}")
for name in list(variants)[1:]:
    diff = {key: per[name].get(key, 0.0) - per["none"].get(key, 0.0) for key in set(per[name]) | set(per["none"])}
    top = sorted(diff.items(), key=lambda kv: -abs(kv[1]))[:8]
    print(f"\n# {name}: kernels whose time moved most against none (ms; none -> {name})")
    for key, dt in top:
        print(f"  {dt:+8.2f}  {per['none'].get(key, 0.0):8.2f} -> {per[name].get(key, 0.0):8.2f}  {key[:110]}")
if clocks:
    clocks.stop()
