"""Host cost of each part of an eager steering site in a warm loop (µs per call): steerkit's site
function, its checks alone, the prepared Triton launch, the bare C launcher, and single torch
calls for scale. Inside a real decode step each costs several times more (probe_eager_floor.py).

Usage (GPU): python benchmarks/probe_site_host.py"""
import time, statistics, torch
from steerkit.bench import _git_commit, model_bench as M
from steerkit.ops._registry import bump_versions
print("# commit", _git_commit())  # STEERKIT_COMMIT where the tree has no (current) .git
dev = "cuda"
model = M.build_model("llama-3.2-1b", dev, torch.bfloat16)
params = M._Params(4, model.config.hidden_size, dev)
sk = M._SteerkitVariant(model, "add", params, 4, None)
B = 1
ids = torch.ones(B, dtype=torch.int32, device=dev)
sk.on(ids)
tok = torch.randint(0, 1000, (B, 1), device=dev)
with torch.no_grad():
    model(input_ids=tok)
    model(input_ids=tok)
blk = model.model.layers[0]
fn = blk.__dict__["_steerkit_calls"].post[0]
h = torch.randn(B, 1, model.config.hidden_size, device=dev, dtype=torch.bfloat16)
v = torch.randn(model.config.hidden_size, device=dev, dtype=torch.bfloat16)
N = 20000
def bench(name, f, *a):
    ts = []
    for _ in range(7):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(N):
            f(*a)
        torch.cuda.synchronize()
        ts.append((time.perf_counter() - t0) / N * 1e6)
    print(f"{name:40s} {statistics.median(ts):7.2f} µs  (min {min(ts):.2f})", flush=True)
with torch.no_grad():
    fn(h); fn(h)
    h.zero_()
    handle = sk.handle
    def noop(x): return None
    bench("python noop call", noop, h)
    bench("h.add_(v)", h.add_, v)
    bench("site fn (check + launch)", fn, h)
    kept = [c.cell_contents for c in fn.__closure__ if isinstance(c.cell_contents, list)][0]
    entry = kept[0]
    kept[0] = entry[:8] + ((lambda x: True),) + entry[9:]
    bench("site fn, launch stubbed", fn, h)
    kept[0] = entry
    launch = next(e[3] for e in sk.handle.tables["resid_post.0"]._launches.values()).prepared
    print("launch type", type(launch).__name__)
    bench("Prepared.__call__", launch, h)
    hd = launch.head
    full = (hd[0], hd[1], hd[2], launch.stream(launch.device), *hd[4:], h.data_ptr(), h.data_ptr(), *launch.tail)
    bench("raw C launch (prebuilt args)", launch.launch, *full)
    bench("stream lookup", launch.stream, launch.device)
    bench("get_device", launch.get_device)
    bench("h.data_ptr", h.data_ptr)
    bench("bump_versions", bump_versions, (h,))
    bench("h.shape ==", lambda x: x.shape == h.shape, h)
    bench("h.get_device()", h.get_device)
    bench("torch.is_grad_enabled", torch.is_grad_enabled)
    bench("torch.compiler.is_compiling", torch.compiler.is_compiling)
    bench("h.is_contiguous()", h.is_contiguous)
    # the whole module call: block forward with the wrapper vs its own forward
    x = torch.randn(B, 1, model.config.hidden_size, device=dev, dtype=torch.bfloat16)
    pos = model.model.rotary_emb(x, torch.zeros(B, 1, dtype=torch.long, device=dev))
    mlp = blk.mlp
    bench("mlp(x) (3 matmuls + act)", mlp, x)
