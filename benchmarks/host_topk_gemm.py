"""Host time (GPU machine) of the TopK-encode GEMM path per chunk: torch.mm with out_dtype, the
slicing, one whole call, and how many selection launches take Triton's generic path.
python benchmarks/host_topk_gemm.py (results/host-topk-gemm-h100.txt)."""
import cProfile
import importlib
import pstats
import time

import torch

M = importlib.import_module("steerkit.kernels.sae_encode_topk")
T, d, F = 4096, 2304, 16384
dt = torch.bfloat16
W = (torch.randn(d, F, device="cuda") / d ** 0.5).to(dt); b = (torch.randn(F, device="cuda") * 0.1).to(dt)
x = torch.randn(T, d, device="cuda", dtype=dt)
P = torch.empty(256 * 4096, device="cuda")
p = P.view(256, 4096)
xs = x[:256]
for _ in range(3): torch.mm(xs, W[:, :4096], out_dtype=torch.float32, out=p)
torch.cuda.synchronize()
t0 = time.perf_counter()
for j in range(64): torch.mm(xs, W[:, (j % 4) * 4096:(j % 4 + 1) * 4096], out_dtype=torch.float32, out=p)
t1 = time.perf_counter(); torch.cuda.synchronize()
print(f"mm out_dtype host {1e6*(t1-t0)/64:.1f} us/call")
t0 = time.perf_counter()
for j in range(64): W[:, (j % 4) * 4096:(j % 4 + 1) * 4096]; P[:256*4096].view(256, 4096); x[0:256]
t1 = time.perf_counter()
print(f"slicing host {1e6*(t1-t0)/64:.1f} us/iter")
v = torch.empty(T, 64, device="cuda", dtype=dt); i = torch.empty(T, 64, device="cuda", dtype=torch.int64)
calls = {"n": 0, "generic": 0}
orig = M.Repeat.__call__
def counting(self, grid, args):
    calls["n"] += 1
    return orig(self, grid, args)
M.Repeat.__call__ = counting
K = M._gemm_select_kernel
orig_run = type(K).run
def run_count(self, *a, **k):
    calls["generic"] += 1
    return orig_run(self, *a, **k)
type(K).run = run_count
for _ in range(2): M.sae_encode_topk(x, W, b, None, 64, v, i, path="gemm")
torch.cuda.synchronize(); calls.update(n=0, generic=0)
t0 = time.perf_counter(); M.sae_encode_topk(x, W, b, None, 64, v, i, path="gemm"); t1 = time.perf_counter(); torch.cuda.synchronize(); t2 = time.perf_counter()
print(f"encode host {1e6*(t1-t0):.0f} us wall {1e6*(t2-t0):.0f}; repeat calls {calls['n']}, generic launches {calls['generic']}")
pr = cProfile.Profile(); pr.enable(); M.sae_encode_topk(x, W, b, None, 64, v, i, path="gemm"); pr.disable()
pstats.Stats(pr).sort_stats("tottime").print_stats(8)
