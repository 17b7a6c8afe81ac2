"""Probe (GPU): can a Triton product with the TopK filter in its epilogue run near cuBLAS's bare product?

The route left for sae_encode_topk's last gaps (docs/sae_ops.md, "Where this design stops") is a
product whose epilogue keeps each row's candidates, entries >= a per-row threshold theta that is a
lower bound of the row's k-th largest value, so no [T, F] chunk is written or read back. This probe
times, against torch.mm (cuBLAS) at the issue's shapes:
  store    the Triton product writing its bf16 [T, F] output (what cuBLAS does);
  max      the product with a minimal epilogue (a row max; the mainloop's own speed);
  filter   the product whose epilogue appends entries >= theta to per-row buffers (one atomic per
           row and tile reserves the slots, a cumsum places the entries);
  filter-atomic  the same with one atomic per kept entry;
for persistent kernels (one program per SM, tensor descriptors; Triton 3.6 does not apply its
warp_specialize hint on Hopper, so none is given) and for one program per tile. theta is the m-th largest value of each row (from the
full product), so each row has about m candidates: m = 256 and 1024 bracket what a sample gives.
Each filter run's per-row counts are checked against the full product (rows whose count differs
beyond entries within one bf16 step of theta are reported).

python benchmarks/probe_topk_fused.py [quick]   (rows: benchmarks/results/probe-topk-fused-h100.txt)
"""
import sys

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

MODE_STORE, MODE_MAX, MODE_FILTER, MODE_FILTER_ATOMIC = 0, 1, 2, 3


@triton.jit
def _tile_pos(tile, n_t, n_f, GROUP: tl.constexpr):
    # GROUP consecutive tiles share a W column block (hot in L2)
    per_group = GROUP * n_f
    first = (tile // per_group) * GROUP
    size = tl.minimum(n_t - first, GROUP)
    return first + (tile % per_group) % size, (tile % per_group) // size


@triton.jit
def _fused_kernel(x_desc, w_desc, o_desc, b_ptr, theta_ptr, cv_ptr, ci_ptr, cnt_ptr, T, F, d, C,
                  MODE: tl.constexpr, BT: tl.constexpr, BF: tl.constexpr, BK: tl.constexpr, GROUP: tl.constexpr,
                  FLAT: tl.constexpr):
    n_t = tl.cdiv(T, BT)
    n_f = tl.cdiv(F, BF)
    k_tiles = tl.cdiv(d, BK)
    for tile in tl.range(tl.program_id(0), n_t * n_f, tl.num_programs(0), flatten=FLAT):
        pid_t, pid_f = _tile_pos(tile, n_t, n_f, GROUP)
        acc = tl.zeros((BT, BF), tl.float32)
        for ki in range(k_tiles):
            a = x_desc.load([pid_t * BT, ki * BK])
            b = w_desc.load([ki * BK, pid_f * BF])
            acc = tl.dot(a, b, acc)
        rows = pid_t * BT + tl.arange(0, BT)
        cols = pid_f * BF + tl.arange(0, BF)
        pre = acc + tl.load(b_ptr + cols, mask=cols < F, other=0.0).to(tl.float32)[None, :]
        if MODE == 0:
            o_desc.store([pid_t * BT, pid_f * BF], pre.to(o_desc.dtype))
        elif MODE == 1:
            tl.store(cnt_ptr + rows, tl.max(pre, axis=1).to(tl.int32), mask=(rows < T) & (pid_f == 0))
        else:  # the filter: entries >= theta[row], compared at their rounded value as the selection does
            pre = pre.to(tl.bfloat16).to(tl.float32)
            theta = tl.load(theta_ptr + rows, mask=rows < T, other=float("inf"))
            keep = (pre >= theta[:, None]) & (cols < F)[None, :]
        if MODE == 3:  # one atomic per kept entry
            slot = tl.atomic_add(cnt_ptr + rows[:, None] + 0 * cols[None, :], 1, mask=keep, sem="relaxed")
            put = keep & (slot < C)
            at = rows.to(tl.int64)[:, None] * C + slot
            tl.store(cv_ptr + at, pre, mask=put)
            tl.store(ci_ptr + at, cols[None, :], mask=put)
        elif MODE == 2:  # one atomic per row reserves its slots, a cumsum ranks the kept entries
            n_row = tl.sum(keep.to(tl.int32), axis=1)
            base = tl.atomic_add(cnt_ptr + rows, n_row, mask=n_row > 0, sem="relaxed")
            pos = base[:, None] + tl.cumsum(keep.to(tl.int32), axis=1) - 1
            put = keep & (pos < C)
            at = rows.to(tl.int64)[:, None] * C + pos
            tl.store(cv_ptr + at, pre, mask=put)
            tl.store(ci_ptr + at, cols[None, :], mask=put)


def launch(x, W, b, mode, cfg, out=None, theta=None, cv=None, ci=None, cnt=None, C=0):
    bt, bf, bk, stages, warps, persistent, flat = cfg
    T, d = x.shape
    F = W.shape[1]
    tiles = triton.cdiv(T, bt) * triton.cdiv(F, bf)
    sms = torch.cuda.get_device_properties(x.device).multi_processor_count
    grid = (min(sms, tiles),) if persistent else (tiles,)
    xd = TensorDescriptor.from_tensor(x, [bt, bk])
    wd = TensorDescriptor.from_tensor(W, [bk, bf])
    od = TensorDescriptor.from_tensor(out if out is not None else x, [bt, bf] if out is not None else [bt, bk])
    dummy = b
    _fused_kernel[grid](xd, wd, od, b, theta if theta is not None else dummy, cv if cv is not None else dummy,
                        ci if ci is not None else dummy, cnt if cnt is not None else dummy, T, F, d, C,
                        MODE=mode, BT=bt, BF=bf, BK=bk, GROUP=8, FLAT=flat, num_warps=warps,
                        num_stages=stages)


def main():
    quick = "quick" in sys.argv
    dev = "cuda"
    props = torch.cuda.get_device_properties(0)
    print(f"# probe-topk-fused on {props.name} (torch {torch.__version__}, triton {triton.__version__})", flush=True)
    bench = triton.testing.do_bench
    shapes = [(4096, 4096, 65536), (4096, 2304, 16384), (16384, 4096, 65536), (16384, 2304, 16384), (4096, 4096, 131072)]
    # (BT, BF, BK, stages, warps, persistent, flatten)
    cfgs = [(128, 256, 64, 3, 8, True, True), (128, 256, 64, 3, 8, True, False), (128, 256, 64, 4, 8, True, False),
            (128, 128, 64, 4, 8, True, True), (128, 128, 64, 5, 8, True, False), (128, 256, 64, 3, 8, False, False),
            (128, 128, 64, 4, 8, False, False)]
    if quick:
        shapes, cfgs = shapes[:2], cfgs[:4]
    torch.manual_seed(0)
    for T, d, F in shapes:
        x = torch.randn(T, d, device=dev, dtype=torch.bfloat16)
        W = (torch.randn(d, F, device=dev, dtype=torch.bfloat16) / d ** 0.5).contiguous()
        b = torch.randn(F, device=dev, dtype=torch.bfloat16) * 0.1
        ref = torch.mm(x, W)
        mm_us = bench(lambda: torch.mm(x, W), return_mode="median") * 1e3
        print(f"\nT={T} d={d} F={F}: cuBLAS torch.mm {mm_us:.1f} us ({2 * T * d * F / mm_us / 1e6:.0f} TFLOP/s)", flush=True)
        full = (torch.addmm(b.float(), x.float(), W.float())).to(torch.bfloat16).float()  # the rounded values
        srt = full.topk(1024, dim=1).values
        out = torch.empty(T, F, device=dev, dtype=torch.bfloat16)
        cnt = torch.zeros(T, device=dev, dtype=torch.int32)
        for cfg in cfgs:
            name = "bt%d bf%d bk%d s%d w%d %s%s" % (cfg[:5] + ("persistent" if cfg[5] else "per-tile",
                                                             " flat" if cfg[6] else ""))
            row = []
            for mode, label in ((MODE_STORE, "store"), (MODE_MAX, "max")):
                try:
                    fn = lambda: launch(x, W, b, mode, cfg, out=out if mode == MODE_STORE else None, cnt=cnt)
                    fn(); torch.cuda.synchronize()
                    if mode == MODE_STORE:
                        err = (out.float() - (ref.float() + b.float())).abs().max().item()
                        if err > 0.1:
                            row.append(f"{label} WRONG (err {err:.3g})")
                            continue
                    us = bench(fn, return_mode="median") * 1e3
                    row.append(f"{label} {us:.1f} us {us / mm_us:.3f}x")
                except Exception as e:  # a config Triton cannot build here: say so and go on
                    row.append(f"{label} FAILED {type(e).__name__}: {str(e)[:120]}")
            for m, mode in ((256, MODE_FILTER), (1024, MODE_FILTER), (256, MODE_FILTER_ATOMIC), (1024, MODE_FILTER_ATOMIC)):
                C = 2 * m
                label = "filter" if mode == MODE_FILTER else "filter-atomic"
                theta = srt[:, m - 1].contiguous()
                cv = torch.empty(T, C, device=dev, dtype=torch.float32)
                ci = torch.empty(T, C, device=dev, dtype=torch.int32)
                try:
                    fn = lambda: (cnt.zero_(), launch(x, W, b, mode, cfg, theta=theta, cv=cv, ci=ci, cnt=cnt, C=C))
                    fn(); torch.cuda.synchronize()
                    want = (full >= theta[:, None]).sum(1)
                    near = ((full - theta[:, None]).abs() <= theta.abs()[:, None] / 128).sum(1)
                    bad = int(((cnt.long() - want).abs() > near).sum())
                    us = bench(fn, return_mode="median") * 1e3
                    row.append(f"{label} m={m} {us:.1f} us {us / mm_us:.3f}x" + (f" ({bad} rows off)" if bad else ""))
                except Exception as e:
                    row.append(f"{label} m={m} FAILED {type(e).__name__}: {str(e)[:120]}")
            print(f"  {name:42s} " + " | ".join(row), flush=True)


if __name__ == "__main__":
    main()
