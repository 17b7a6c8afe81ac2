"""Eager decode with a position rule against rule "all": paired single steps of a
Llama-3.2-1B-shaped model (random weights, bf16, add at all 16 resid_post sites, batch 1).
With positions="generated" every forward brings new position_ids, and the per-token ids are
rebuilt once per step on the device; the sites keep their launches.

Usage (GPU): python benchmarks/probe_eager_rules.py [batch] [rounds]"""
import gc, statistics, sys, time
import torch
from steerkit.bench import _git_commit, model_bench as M

print("# commit", _git_commit())  # STEERKIT_COMMIT where the tree has no (current) .git
B = int(sys.argv[1]) if len(sys.argv) > 1 else 1
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 200
probe = M.EagerProbe("llama-3.2-1b", B)
sk, ids, step = probe.sk, probe.ids, probe.step
mask = torch.ones_like(probe.prompt)
parked = M._Parked(sk.handle._handles)
def use(name):
    if name == "none":
        sk.off(); parked.park(); return
    parked.unpark()
    if name == "all":
        sk.handle.assign(ids)
    else:
        sk.handle.assign(ids, positions="generated", attention_mask=mask)
names = ["none", "all", "generated"]
for n in names:
    use(n); [step() for _ in range(5)]
torch.cuda.synchronize()
t = {n: [] for n in names}
gc.disable()
for r in range(ROUNDS):
    for n in names:
        use(n); step(); torch.cuda.synchronize()
        t0 = time.perf_counter(); step(); torch.cuda.synchronize(); t[n].append((time.perf_counter() - t0) * 1e6)
gc.enable()
for n in names:
    paired = sorted(100 * (a / b - 1) for a, b in zip(t[n], t["none"]))
    q = statistics.quantiles(paired, n=4)
    print(f"{n:10s} step {statistics.median(t[n]):9.1f} us  paired {statistics.median(paired):+6.2f}% [{q[0]:+.2f}, {q[2]:+.2f}]")
