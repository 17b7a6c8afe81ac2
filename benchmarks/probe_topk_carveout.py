"""Probe (H100): can the CUDA selection of feature chunk c run beside the product of chunk c + 1
if cuBLAS leaves it a few SMs (torch._C._set_sm_carveout_experimental, honoured by cublasLt's
addmm with a bias)? d = 4096, F = 65536, one block of 2048 rows, 16 chunks of 4096 features.
Times (CUDA events, medians of 15): one chunk's addmm at each carve-out, one later chunk's
selection alone, and the 16 chunks run (a) in order on one stream (what the op does), (b) with
two chunk buffers and the selections on a second stream, at each carve-out. Experiment only:
(b) uses two chunk buffers, over the op's memory cap at T = 4096. (b)'s results are checked
against (a)'s.

Usage: python benchmarks/probe_topk_carveout.py"""
import json
import os
import sys

import torch

from steerkit import _cuda_ext

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from probe_topk_cuda import med_us  # noqa: E402

_cuda_ext.load()
sel = torch.ops.steerkit_cuda.sae_encode_topk_select
dt, k, tc, d, F, fc = torch.bfloat16, 64, 2048, 4096, 65536, 4096
g = torch.Generator(device="cuda").manual_seed(0)
x = torch.randn(tc, d, device="cuda", dtype=dt, generator=g)
W = (torch.randn(d, F, device="cuda", dtype=dt, generator=g) / d ** 0.5).to(dt)
b = (torch.randn(F, device="cuda", dtype=dt, generator=g) * 0.1).to(dt)
P = [torch.empty(tc, fc, device="cuda", dtype=dt) for _ in range(2)]
run = torch.empty(tc, 64, device="cuda", dtype=torch.int64)
side = torch.cuda.Stream()
n = F // fc


def med(f):
    return med_us(f, reps=15)[0]


def in_order(v, i):
    for j in range(n):
        torch.addmm(b[j * fc:(j + 1) * fc], x, W[:, j * fc:(j + 1) * fc], out=P[0])
        sel(P[0], run, v, i, j * fc, k, j == 0, j == n - 1)


def two_streams(v, i):
    main = torch.cuda.current_stream()
    done = [torch.cuda.Event() for _ in range(2)]  # selection of the buffer's last chunk finished
    made = [torch.cuda.Event() for _ in range(n)]
    for j in range(n):
        if j >= 2:
            main.wait_event(done[j % 2])
        torch.addmm(b[j * fc:(j + 1) * fc], x, W[:, j * fc:(j + 1) * fc], out=P[j % 2])
        made[j].record(main)
        side.wait_event(made[j])
        with torch.cuda.stream(side):
            sel(P[j % 2], run, v, i, j * fc, k, j == 0, j == n - 1)
        done[j % 2].record(side)
    main.wait_stream(side)


rows = []
v0, i0 = torch.empty(tc, k, device="cuda", dtype=dt), torch.empty(tc, k, device="cuda", dtype=torch.int64)
in_order(v0, i0)
torch.cuda.synchronize()
v1, i1 = torch.empty_like(v0), torch.empty_like(i0)
for c in (None, 4, 8, 16, 32):
    torch._C._set_sm_carveout_experimental(c)
    one = med(lambda: torch.addmm(b[:fc], x, W[:, :fc], out=P[0]))
    seq = med(lambda: in_order(v1, i1))
    two = med(lambda: two_streams(v1, i1))
    torch.cuda.synchronize()
    ok = torch.equal(v0, v1) and torch.equal(i0, i1)
    rows.append(dict(carveout=c, addmm_chunk_us=round(one, 1), in_order_us=round(seq, 1), two_streams_us=round(two, 1),
                     same_result=ok))
    print(json.dumps(rows[-1]), flush=True)
torch._C._set_sm_carveout_experimental(None)
# one later chunk's selection alone (lists already full from the runs above)
print(json.dumps(dict(select_later_chunk_us=round(med(lambda: sel(P[0], run, v1, i1, 5 * fc, k, False, False)), 1))))
bare = med(lambda: torch.mm(x, W))
print(json.dumps(dict(bare_product_2048_rows_us=round(bare, 1))))
