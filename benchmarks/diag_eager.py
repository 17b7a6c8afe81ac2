"""Where does eager steering's host time go in a real decode step?

Usage: python benchmarks/diag_eager.py [shape] [batch] [rounds] [--time-sites]
(--time-sites: also time inside the sites' functions, which adds two timer calls per site)."""
import cProfile, io, pstats, statistics, sys, time, gc
import torch
from steerkit.bench import model_bench as M
from steerkit.integrations import hf

args = [a for a in sys.argv[1:] if not a.startswith("--")]
shape = args[0] if args else "llama-3.2-1b"
B = int(args[1]) if len(args) > 1 else 1
ROUNDS = int(args[2]) if len(args) > 2 else 100
in_hook = [0.0]
orig_hook = hf.Steering._hook
def timed_hook(self, *a):  # time inside each site's function
    fn = orig_hook(self, *a)
    def g(h):
        t0 = time.perf_counter(); r = fn(h); in_hook[0] += time.perf_counter() - t0; return r
    return g
if "--time-sites" in sys.argv:
    hf.Steering._hook = timed_hook

probe = M.EagerProbe(shape, B)  # after the patch above: its sites are timed
model, params, sk, ids, step, sync = probe.model, probe.params, probe.sk, probe.ids, probe.step, probe.sync
dev = probe.device
hk = M._HookVariant(model, "add", params)
parked = {"sk": M._Parked(sk.handle._handles), "hk": M._Parked(hk.handles)}
from steerkit.kernels._launch import Prepared
real_bound = Prepared.bound
mode = {"launch": True}
stub = lambda x: True  # noqa: E731  (sk-nolaunch: a site's launch does nothing)
Prepared.bound = lambda self: real_bound(self) if mode["launch"] else stub
def use(name):
    sk.off(); hk.off()
    mode["launch"] = name != "sk-nolaunch"
    for k, p in parked.items():
        (p.unpark if k == name[:2] else p.park)()
    if name in ("sk", "sk-nolaunch"): sk.on(ids)
    if name == "hk": hk.on(ids)

with torch.no_grad():
    names = ["none", "sk", "sk-nolaunch", "sk-off", "hk"]
    for n in names:
        use(n); [step() for _ in range(5)]
    sync()
    gc.disable()
    t = {n: [] for n in names}; g = {n: [] for n in names}; hooks = {n: [] for n in names}
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(2)] if dev == "cuda" else None
    for r in range(ROUNDS):
        for n in names:
            use(n); step(); sync()  # the step after the first: steady state
            in_hook[0] = 0.0
            if ev: ev[0].record()
            t0 = time.perf_counter(); step(); t1 = time.perf_counter()
            if ev: ev[1].record(); ev[1].synchronize(); g[n].append(1000 * ev[0].elapsed_time(ev[1]))
            t[n].append((t1 - t0) * 1e6)
            hooks[n].append(in_hook[0] * 1e6)
    gc.enable()
    med = {n: statistics.median(x) for n, x in t.items()}
    for n in names:
        paired = statistics.median([a / b - 1 for a, b in zip(t[n], t["none"])]) * 100
        q = statistics.quantiles(t[n], n=10)
        gpu = statistics.median(g[n]) if g[n] else 0.0
        print(f"{n:11s} host {med[n]:9.1f} us  p10 {q[0]:9.1f}  p90 {q[-1]:9.1f}  paired {paired:+6.2f}%  "
              f"GPU (events) {gpu:9.1f} us  in sites {statistics.median(hooks[n]):8.1f} us")
    for n in ["none", "sk"]:
        use(n)
        pr = cProfile.Profile(); pr.enable()
        for _ in range(30): step()
        pr.disable(); sync()
        s = io.StringIO(); pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(30)
        print(f"==== profile {n} (30 steps)"); print("\n".join(s.getvalue().splitlines()[:45]))
