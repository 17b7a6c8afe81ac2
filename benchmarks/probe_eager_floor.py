"""How low can an eager steering site go? Paired single decode steps of a Llama-3.2-1B-shaped
model (random weights, bf16, all 16 resid_post sites steered with add), against the unsteered step:

  sk    steerkit's sites as they are
  raw   each site replaced by a bare call of the Triton kernel's C launcher with every argument
        fixed: the floor of one launch per layer, no checks
  lean  steerkit's checks written inline in one closure around that C launch

Usage (GPU): python benchmarks/probe_eager_floor.py [batch] [rounds]"""
import statistics, sys, time, gc
import torch
from steerkit.bench import _git_commit, model_bench as M
from steerkit.integrations import hf
print("# commit", _git_commit())  # STEERKIT_COMMIT where the tree has no (current) .git
B = int(sys.argv[1]) if len(sys.argv) > 1 else 1
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 200
probe = M.EagerProbe("llama-3.2-1b", B)
model, params, sk, ids, step, sync = probe.model, probe.params, probe.sk, probe.ids, probe.step, probe.sync
blocks = list(model.model.layers)
with torch.no_grad():
    sk.on(ids); step(); step(); sync()
    preps = []
    for l in range(len(blocks)):
        t = sk.handle.tables[f"resid_post.{l}"]
        runs = [e[3] for e in t._launches.values()]
        preps.append(runs[-1].prepared)
    print("launch types", {type(p).__name__ for p in preps})
    v = params.vec[0].to(torch.bfloat16)
    def raw_fn(p):
        hd = p.head
        head = (hd[0], hd[1], hd[2], p.stream(p.device)) + tuple(hd[4:])
        tail, C = p.tail, p.launch
        def f(h):
            ptr = h.data_ptr()
            C(*head, ptr, ptr, *tail)
        return f
    def prep_fn(p):
        def f(h):
            p(h)
        return f
    def add_fn(h):
        h.add_(v)
    from triton import knobs
    from steerkit.ops._registry import bump_versions
    kr = knobs.runtime
    state = [object()]
    ids_t = sk.handle._ids
    def lean_fn(p, blk):
        hd = p.head
        head = (hd[0], hd[1], hd[2], p.stream(p.device)) + tuple(hd[4:])
        tail, C = p.tail, p.launch
        enter, exit_ = p.enter, p.exit
        e = (state[0], ids_t._version, torch.Size((B, 1, 2048)), torch.bfloat16, 0)
        gd = torch._C._cuda_getDevice
        ige = torch.is_grad_enabled
        def f(h):
            if (e[0] is state[0] and e[1] == ids_t._version and h.shape == e[2] and h.dtype is e[3]
                    and type(h) is torch.Tensor and h.get_device() == e[4] and not ige() and h.is_contiguous()
                    and kr.launch_enter_hook is enter and not enter.calls and kr.launch_exit_hook is exit_
                    and not exit_.calls and gd() == 0):
                ptr = h.data_ptr()
                C(*head, ptr, ptr, *tail)
                bump_versions((h,))
                return None
            raise RuntimeError("lean miss")
        return f
    variants = {
        "raw": [hf.hook_site(b, "out", raw_fn(p)) for b, p in zip(blocks, preps)],
        "prep": [hf.hook_site(b, "out", prep_fn(p)) for b, p in zip(blocks, preps)],
        "lean": [hf.hook_site(b, "out", lean_fn(p, b)) for b, p in zip(blocks, preps)],
        "add_": [hf.hook_site(b, "out", add_fn) for b in blocks],
        "noop": [hf.hook_site(b, "out", lambda h: None) for b in blocks],
    }
    for hs in variants.values():
        for x in hs: x.park()
    skp = M._Parked(sk.handle._handles)
    names = ["none", "sk", "raw", "lean"]
    def use(n):
        skp.park()
        for hs in variants.values():
            for x in hs: x.park()
        if n == "sk": skp.unpark()
        elif n in variants:
            for x in variants[n]: x.unpark()
    for n in names:
        use(n); [step() for _ in range(5)]
    sync()
    gc.disable()
    t = {n: [] for n in names}
    for r in range(ROUNDS):
        for n in names:
            use(n); step(); sync()
            t0 = time.perf_counter(); step(); t1 = time.perf_counter()
            sync()
            t[n].append((t1 - t0) * 1e6)
    gc.enable()
    for n in names:
        paired = [a / b - 1 for a, b in zip(t[n], t["none"])]
        q = statistics.quantiles(paired, n=4)
        print(f"{n:6s} host {statistics.median(t[n]):9.1f} us  paired {100*statistics.median(paired):+6.2f}%  "
              f"[{100*q[0]:+.2f}, {100*q[2]:+.2f}]  diff {statistics.median([a-b for a,b in zip(t[n], t['none'])]):+8.1f} us")
