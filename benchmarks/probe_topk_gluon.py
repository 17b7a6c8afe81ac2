"""Probe (GPU, Hopper): can a hand-scheduled Gluon GEMM reach cuBLAS speed on the SAE encoder product?

out[T, F] (bf16) = x[T, d] (bf16, row-major) @ W[d, F] (bf16, row-major, N contiguous) + b[F], the
bias added in fp32 before rounding. Plain Triton (benchmarks/probe_topk_fused.py) stays short of
torch.mm here, and Triton 3.6 does not apply its automatic warp specialization on Hopper, so this
probe writes the schedule by hand in Gluon (triton.experimental.gluon, Triton 3.6 API):

  ws    persistent, warp-specialized: a 1-warp loader partition issues TMA loads into a ring of
        STAGES shared-memory buffers; the default partition (8 warps = two warpgroups) runs async
        wgmma (one in flight), hands each stage back through an mbarrier, then does the epilogue.
  pipe  persistent, one partition: the same ring software-pipelined in a single instruction
        stream (loads for later K steps, across tile boundaries, issued between the wgmmas).

Tiles are BM x BN x BK = 128 x 256 x 64, visited in grouped order (GROUP_M row blocks share a W
column block, which stays in L2); one program per SM. Epilogues (EPI): 0 = plain global store from
registers, 1 = whole tile through shared memory and a TMA store, 2 = the same in two 128-column
halves (smaller buffer, which leaves room for a 4-deep ring). Each variant is timed against
torch.mm(x, W) (which does not even add the bias) and checked against x.float() @ W.float() + b.

python benchmarks/probe_topk_gluon.py [quick] [ws|pipe|...]   (quick: first two shapes only; names pick variants)
Compile check without a GPU, with SASS instruction counts: python benchmarks/probe_topk_gluon.py compile [names]
"""
import sys

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)

BM, BN, BK = 128, 256, 64
GROUP_M = 8
NUM_WARPS = 8  # two warpgroups, each owns 64 rows of the 128 x 256 fp32 accumulator (128 regs/thread)

# name -> (warp specialized, STAGES, EPI); shared memory: a stage is 16 KiB (x) + 32 KiB (W),
# the epilogue buffer 64 KiB (EPI 1) or 32 KiB (EPI 2); the limit is 227 KiB.
VARIANTS = {
    "ws s4 epi-split": (True, 4, 2),
    "ws s3 epi-tma": (True, 3, 1),
    "ws s4 epi-store": (True, 4, 0),
    "pipe s4 epi-split": (False, 4, 2),
    "pipe s3 epi-tma": (False, 3, 1),
    "ws s4 filter": (True, 4, 3),  # the TopK filter epilogue (theta: each row's m-th largest)
    "ws s4 filter-mma": (True, 4, 4),  # the same filter in the accumulator's own layout, an atomic per entry
}
FILTERS = (3, 4)  # the EPI values of the filter epilogues


@gluon.constexpr_function
def _acc_layout(num_warps, block_n):
    # wgmma accumulator: warps stacked along M (16 rows each); one m64 n256 k16 instruction per warpgroup
    return gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1], instr_shape=[16, block_n, 16])


@gluon.jit
def _tile_pos(tile, num_pid_n, GROUP: gl.constexpr):
    # GROUP consecutive row blocks walk the same W column block (the host asserts n_m % GROUP == 0)
    per_group = GROUP * num_pid_n
    first_m = (tile // per_group) * GROUP
    r = tile % per_group
    return first_m + r % GROUP, r // GROUP


@gluon.jit
def _issue_load(p, x_desc, w_desc, x_bufs, w_bufs, ready, k_iters, num_pid_n, pred,
                GROUP: gl.constexpr, STAGES: gl.constexpr):
    # load step p of this program's flat (tile, k) sequence into ring slot p % STAGES
    pid = gl.program_id(0)
    nprog = gl.num_programs(0)
    tile = pid + (p // k_iters) * nprog
    pid_m, pid_n = _tile_pos(tile, num_pid_n, GROUP)
    k = (p % k_iters) * x_desc.block_type.shape[1]
    s = p % STAGES
    bar = ready.index(s)
    mbarrier.expect(bar, x_desc.block_type.nbytes + w_desc.block_type.nbytes, pred=pred)
    tma.async_copy_global_to_shared(x_desc, [pid_m * x_desc.block_type.shape[0], k], bar, x_bufs.index(s), pred)
    tma.async_copy_global_to_shared(w_desc, [k, pid_n * w_desc.block_type.shape[1]], bar, w_bufs.index(s), pred)


@gluon.jit
def _add(a, b):
    return a + b


@gluon.jit
def _filter_half(part, c_smem, off_m, off_n, flt, num_warps: gl.constexpr):
    # EPI 3: append the entries >= theta[row] of a [BM, BN / 2] part to the rows' candidate buffers.
    # Through shared memory into a layout with each row inside one warp, so the row count is a
    # warp reduction and the ranks a warp scan; one atomic per row reserves the row's slots.
    theta_ptr, cnt_ptr, cv_ptr, ci_ptr, C = flt
    BLOCK_M: gl.constexpr = part.shape[0]
    WIDTH: gl.constexpr = part.shape[1]
    row_l: gl.constexpr = gl.BlockedLayout([1, WIDTH // 32], [1, 32], [num_warps, 1], [1, 0])
    gl.thread_barrier()  # earlier readers of c_smem are done
    c_smem.store(part.to(gl.bfloat16))
    gl.thread_barrier()
    v = c_smem.load(row_l).to(gl.float32)
    rows = off_m + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, row_l))
    cols = off_n + gl.arange(0, WIDTH, layout=gl.SliceLayout(0, row_l))
    theta = gl.load(theta_ptr + rows)
    keep = (v >= gl.expand_dims(theta, 1)).to(gl.int32)
    n_row = gl.sum(keep, axis=1)
    base = gl.atomic_add(cnt_ptr + rows, n_row, mask=n_row > 0, sem="relaxed")
    pos = gl.expand_dims(base, 1) + gl.associative_scan(keep, 1, _add) - 1
    put = (keep > 0) & (pos < C)
    at = gl.expand_dims(rows.to(gl.int64) * C, 1) + pos
    gl.store(cv_ptr + at, v, mask=put)
    gl.store(ci_ptr + at, gl.expand_dims(cols, 0) + 0 * pos, mask=put)


@gluon.jit
def _filter_mma(y, off_m, off_n, flt):
    # EPI 4: the filter of EPI 3 without shared memory: the entries stay in the wgmma accumulator
    # layout (a thread holds 2 rows x 64 columns of its warp's 16-row slice) and each kept entry
    # takes a slot by an atomic, then stores its value and column (int32 offsets: T * C < 2^31).
    # Every entry still runs its own compare and a branch around its atomic, then predicated
    # stores, kept or not (probe-topk-gluon-mma-sass-cpu.txt). (A row count by a reduction over
    # the 4 lanes of a row and ranks by a scan along the row would need one atomic a row, but
    # Triton 3.6 does not lower a scan in this layout: "unsupported scan layout".)
    theta_ptr, cnt_ptr, cv_ptr, ci_ptr, C = flt
    layout: gl.constexpr = y.type.layout
    BLOCK_M: gl.constexpr = y.shape[0]
    BLOCK_N: gl.constexpr = y.shape[1]
    rows = off_m + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, layout))
    cols = gl.expand_dims(off_n + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, layout)), 0)
    v = y.to(gl.bfloat16).to(gl.float32)  # the rounded value, as TopK compares it
    keep = v >= gl.expand_dims(gl.load(theta_ptr + rows), 1)
    r2 = gl.expand_dims(rows, 1) + 0 * cols
    pos = gl.atomic_add(cnt_ptr + r2, 1 + 0 * r2, mask=keep, sem="relaxed")
    put = keep & (pos < C)
    at = r2 * C + pos
    gl.store(cv_ptr + at, v, mask=put)
    gl.store(ci_ptr + at, cols + 0 * pos, mask=put)


@gluon.jit
def _epilogue(acc, o_desc, c_smem, out_ptr, b_ptr, off_m, off_n, N, flt, EPI: gl.constexpr):
    # acc: fp32 [BM, BN] in the wgmma layout; add the bias in fp32, round to bf16, write out
    BLOCK_M: gl.constexpr = acc.shape[0]
    BLOCK_N: gl.constexpr = acc.shape[1]
    layout: gl.constexpr = acc.type.layout
    cols = off_n + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, layout))
    bias = gl.load(b_ptr + cols).to(gl.float32)
    y = acc + gl.expand_dims(bias, 0)
    if EPI == 0:
        rows = off_m + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, layout))
        ptrs = out_ptr + gl.expand_dims(rows.to(gl.int64) * N, 1) + gl.expand_dims(cols, 0)
        gl.store(ptrs, y.to(gl.bfloat16))
    elif EPI == 1:
        tma.store_wait(0)  # the previous tile's store has left c_smem
        gl.thread_barrier()
        c_smem.store(y.to(gl.bfloat16))
        fence_async_shared()
        tma.async_copy_shared_to_global(o_desc, [off_m, off_n], c_smem)
    elif EPI == 4:  # the TopK filter in the accumulator layout (see _filter_mma)
        _filter_mma(y, off_m, off_n, flt)
    elif EPI == 3:  # the TopK filter instead of a store (see _filter_half)
        lo, hi = y.reshape([BLOCK_M, 2, BLOCK_N // 2]).permute(0, 2, 1).split()
        _filter_half(lo, c_smem, off_m, off_n, flt, gl.num_warps())
        _filter_half(hi, c_smem, off_m, off_n + BLOCK_N // 2, flt, gl.num_warps())
    else:
        # columns [0, BN/2) and [BN/2, BN): every thread holds both halves, so the split is free
        lo, hi = y.reshape([BLOCK_M, 2, BLOCK_N // 2]).permute(0, 2, 1).split()
        tma.store_wait(0)
        gl.thread_barrier()
        c_smem.store(lo.to(gl.bfloat16))
        fence_async_shared()
        tma.async_copy_shared_to_global(o_desc, [off_m, off_n], c_smem)
        tma.store_wait(0)
        gl.thread_barrier()
        c_smem.store(hi.to(gl.bfloat16))
        fence_async_shared()
        tma.async_copy_shared_to_global(o_desc, [off_m, off_n + BLOCK_N // 2], c_smem)


@gluon.jit
def _mma_step(acc, x_bufs, w_bufs, ready, c, use_acc, STAGES: gl.constexpr):
    # step c of the (tile, k) sequence: wait for its slot, issue its wgmma and wait until at most it
    # is in flight, so step c-1's wgmma is done in this warpgroup; after the barrier, in both
    # warpgroups, and the callers can hand step c-1's slot back
    s = c % STAGES
    mbarrier.wait(ready.index(s), (c // STAGES) & 1)
    acc = warpgroup_mma(x_bufs.index(s), w_bufs.index(s), acc, use_acc=use_acc, is_async=True)
    acc, _, _ = warpgroup_mma_wait(1, deps=(acc, x_bufs.index(s), w_bufs.index(s)))
    gl.thread_barrier()
    return acc


# ---------------------------------------------------------------------------------------------
# Variant "ws": loader partition + MMA/epilogue (default) partition


@gluon.jit
def _ws_loader(x_desc, w_desc, x_bufs, w_bufs, ready, empty, num_tiles, k_iters, num_pid_n,
               GROUP: gl.constexpr, STAGES: gl.constexpr):
    pid = gl.program_id(0)
    nprog = gl.num_programs(0)
    p = 0
    for tile in range(pid, num_tiles, nprog):
        for kk in range(k_iters):
            # wait for the MMA side to free slot p % STAGES; a fresh mbarrier passes a wait on
            # parity 1, so the first lap over the ring does not block
            mbarrier.wait(empty.index(p % STAGES), ((p // STAGES) & 1) ^ 1)
            _issue_load(p, x_desc, w_desc, x_bufs, w_bufs, ready, k_iters, num_pid_n, True, GROUP, STAGES)
            p += 1


@gluon.jit
def _ws_compute(o_desc, out_ptr, b_ptr, x_bufs, w_bufs, ready, empty, c_smem, num_tiles, k_iters, num_pid_n, N, flt,
                GROUP: gl.constexpr, STAGES: gl.constexpr, EPI: gl.constexpr, num_warps: gl.constexpr):
    BLOCK_M: gl.constexpr = x_bufs.type.shape[1]
    BLOCK_N: gl.constexpr = w_bufs.type.shape[2]
    acc_layout: gl.constexpr = _acc_layout(num_warps, BLOCK_N)
    pid = gl.program_id(0)
    nprog = gl.num_programs(0)
    c = 0
    for tile in range(pid, num_tiles, nprog):
        pid_m, pid_n = _tile_pos(tile, num_pid_n, GROUP)
        acc = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, acc_layout)
        for kk in range(k_iters):
            acc = _mma_step(acc, x_bufs, w_bufs, ready, c, kk > 0, STAGES)
            mbarrier.arrive(empty.index((c + STAGES - 1) % STAGES), pred=kk > 0)
            c += 1
        acc = warpgroup_mma_wait(0, deps=(acc, ))
        gl.thread_barrier()
        mbarrier.arrive(empty.index((c + STAGES - 1) % STAGES))
        _epilogue(acc, o_desc, c_smem, out_ptr, b_ptr, pid_m * BLOCK_M, pid_n * BLOCK_N, N, flt, EPI)
    if EPI != 0:
        tma.store_wait(0)


@gluon.jit
def gemm_ws_kernel(x_desc, w_desc, o_desc, out_ptr, b_ptr, M, N, K, theta_ptr, cnt_ptr, cv_ptr, ci_ptr, C,
                   GROUP: gl.constexpr, STAGES: gl.constexpr, EPI: gl.constexpr, num_warps: gl.constexpr):
    BLOCK_M: gl.constexpr = x_desc.block_type.shape[0]
    BLOCK_K: gl.constexpr = x_desc.block_type.shape[1]
    BLOCK_N: gl.constexpr = w_desc.block_type.shape[1]
    num_pid_n = N // BLOCK_N
    num_tiles = (M // BLOCK_M) * num_pid_n
    k_iters = K // BLOCK_K

    x_bufs = gl.allocate_shared_memory(x_desc.dtype, [STAGES, BLOCK_M, BLOCK_K], x_desc.layout)
    w_bufs = gl.allocate_shared_memory(w_desc.dtype, [STAGES, BLOCK_K, BLOCK_N], w_desc.layout)
    c_smem = gl.allocate_shared_memory(o_desc.dtype, o_desc.block_type.shape, o_desc.layout)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(ready.index(i), count=1)  # completed by the TMA byte count
        mbarrier.init(empty.index(i), count=1)  # one arrive (thread 0 of the MMA partition)

    # gl.warp_specialize(list of (function, args); the first is the default partition, run by
    # num_warps warps), worker warp counts, worker register budgets)
    gl.warp_specialize([
        (_ws_compute, (o_desc, out_ptr, b_ptr, x_bufs, w_bufs, ready, empty, c_smem, num_tiles, k_iters, num_pid_n,
                       N, (theta_ptr, cnt_ptr, cv_ptr, ci_ptr, C), GROUP, STAGES, EPI, num_warps)),
        (_ws_loader, (x_desc, w_desc, x_bufs, w_bufs, ready, empty, num_tiles, k_iters, num_pid_n, GROUP, STAGES)),
    ], [1], [40])


# ---------------------------------------------------------------------------------------------
# Variant "pipe": one partition, loads STAGES-1 steps ahead of the wgmma (across tiles)


@gluon.jit
def gemm_pipe_kernel(x_desc, w_desc, o_desc, out_ptr, b_ptr, M, N, K, theta_ptr, cnt_ptr, cv_ptr, ci_ptr, C,
                     GROUP: gl.constexpr, STAGES: gl.constexpr, EPI: gl.constexpr, num_warps: gl.constexpr):
    BLOCK_M: gl.constexpr = x_desc.block_type.shape[0]
    BLOCK_K: gl.constexpr = x_desc.block_type.shape[1]
    BLOCK_N: gl.constexpr = w_desc.block_type.shape[1]
    acc_layout: gl.constexpr = _acc_layout(num_warps, BLOCK_N)
    num_pid_n = N // BLOCK_N
    num_tiles = (M // BLOCK_M) * num_pid_n
    k_iters = K // BLOCK_K
    pid = gl.program_id(0)
    nprog = gl.num_programs(0)
    my_tiles = (num_tiles - pid + nprog - 1) // nprog
    total = my_tiles * k_iters  # this program's (tile, k) steps

    x_bufs = gl.allocate_shared_memory(x_desc.dtype, [STAGES, BLOCK_M, BLOCK_K], x_desc.layout)
    w_bufs = gl.allocate_shared_memory(w_desc.dtype, [STAGES, BLOCK_K, BLOCK_N], w_desc.layout)
    c_smem = gl.allocate_shared_memory(o_desc.dtype, o_desc.block_type.shape, o_desc.layout)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(ready.index(i), count=1)

    for i in gl.static_range(STAGES - 1):  # prologue: fill all slots but one
        _issue_load(i, x_desc, w_desc, x_bufs, w_bufs, ready, k_iters, num_pid_n, i < total, GROUP, STAGES)
    c = 0
    for t in range(my_tiles):
        pid_m, pid_n = _tile_pos(pid + t * nprog, num_pid_n, GROUP)
        acc = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, acc_layout)
        for kk in range(k_iters):
            acc = _mma_step(acc, x_bufs, w_bufs, ready, c, kk > 0, STAGES)
            p = c + STAGES - 1  # refill step c-1's slot with step c+STAGES-1
            _issue_load(p, x_desc, w_desc, x_bufs, w_bufs, ready, k_iters, num_pid_n, p < total, GROUP, STAGES)
            c += 1
        acc = warpgroup_mma_wait(0, deps=(acc, ))
        _epilogue(acc, o_desc, c_smem, out_ptr, b_ptr, pid_m * BLOCK_M, pid_n * BLOCK_N, N,
                  (theta_ptr, cnt_ptr, cv_ptr, ci_ptr, C), EPI)
    if EPI != 0:
        tma.store_wait(0)


# ---------------------------------------------------------------------------------------------
# Host side


def make_descs(x, W, out, epi):
    """TMA descriptors (Gluon's host TensorDescriptor carries the NVMMA shared layout)."""
    obn = BN // 2 if epi in (2,) + FILTERS else BN
    x_l = gl.NVMMASharedLayout.get_default_for([BM, BK], gl.bfloat16)
    w_l = gl.NVMMASharedLayout.get_default_for([BK, BN], gl.bfloat16)
    o_l = gl.NVMMASharedLayout.get_default_for([BM, obn], gl.bfloat16)
    return (TensorDescriptor.from_tensor(x, [BM, BK], x_l), TensorDescriptor.from_tensor(W, [BK, BN], w_l),
            TensorDescriptor.from_tensor(out, [BM, obn], o_l))


def gluon_linear(x, W, b, out, variant, num_sms, flt=None):
    """Return a no-argument launcher computing out = x @ W + b with one Gluon variant (the filter
    variant: flt = (theta, cnt, cv, ci), whose cnt it zeroes first).

    The descriptors are built once here, so the timed call is just the kernel launch.
    """
    ws, stages, epi = VARIANTS[variant]
    M, K = x.shape
    N = W.shape[1]
    assert M % (BM * GROUP_M) == 0 and N % BN == 0 and K % BK == 0, (M, N, K)
    assert x.is_contiguous() and W.is_contiguous() and b.is_contiguous() and out.is_contiguous()
    x_d, w_d, o_d = make_descs(x, W, out, epi)
    grid = (min(num_sms, (M // BM) * (N // BN)), )
    kern = gemm_ws_kernel if ws else gemm_pipe_kernel
    if flt is None:
        return lambda: kern[grid](x_d, w_d, o_d, out, b, M, N, K, b, b, b, b, 0, GROUP_M, stages, epi,
                                  num_warps=NUM_WARPS)
    theta, cnt, cv, ci = flt
    return lambda: (cnt.zero_(), kern[grid](x_d, w_d, o_d, out, b, M, N, K, theta, cnt, cv, ci, cv.shape[1], GROUP_M,
                                            stages, epi, num_warps=NUM_WARPS))


def compile_sm90(names, T=4096, d=2304, F=16384):
    """Compile each variant for sm_90a on this machine (no GPU needed: CPU tensors give the
    signature) and print its SASS instruction counts: the whole kernel, and the memory, atomic,
    shuffle, barrier and shared-memory instructions. The epilogue is straight-line code run once
    per tile, so a filter's extra static instructions over epi-split are about the instructions
    each thread of the default partition adds per tile."""
    import collections
    import os
    import re
    import subprocess
    import tempfile

    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource
    from triton.runtime.jit import mangle_type

    bf = torch.bfloat16
    x, W, out, b = (torch.empty(T, d, dtype=bf), torch.empty(d, F, dtype=bf), torch.empty(T, F, dtype=bf),
                    torch.empty(F, dtype=bf))
    flt = {"theta_ptr": torch.empty(T), "cnt_ptr": torch.empty(T, dtype=torch.int32),
           "cv_ptr": torch.empty(T, 512), "ci_ptr": torch.empty(T, 512, dtype=torch.int32), "C": 512}
    nvdisasm = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "nvdisasm")
    classes = {"LDG/STG": r"^(LDG|STG)", "ATOM/RED": r"^(ATOM|RED)", "SHFL": r"^SHFL", "BAR": r"^BAR",
               "LDS/STS": r"^(LDS|STS|LDSM|STSM)", "WGMMA": r"^HGMMA"}
    print(f"# sm_90a SASS of each variant (T={T} d={d} F={F}; Triton {triton.__version__}): instructions")
    for name in names:
        ws, stages, epi = VARIANTS[name]
        kern = gemm_ws_kernel if ws else gemm_pipe_kernel
        x_d, w_d, o_d = make_descs(x, W, out, epi)
        args = dict(x_desc=x_d, w_desc=w_d, o_desc=o_d, out_ptr=out, b_ptr=b, M=T, N=F, K=d, **flt)
        consts = {"GROUP": GROUP_M, "STAGES": stages, "EPI": epi, "num_warps": NUM_WARPS}
        sig = {n: "constexpr" if n in consts else mangle_type(args[n]) for n in kern.arg_names}
        try:
            k = triton.compile(GluonASTSource(kern, sig, consts), target=GPUTarget("cuda", 90, 32),
                               options={"num_warps": NUM_WARPS})
        except Exception as e:
            print(f"{name:20s} FAILED {type(e).__name__}: {str(e)[:400]}", flush=True)
            continue
        with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
            f.write(k.asm["cubin"])
            f.flush()
            sass = subprocess.run([nvdisasm, "-c", f.name], capture_output=True, text=True, check=True).stdout
        ops = [m.group(1) for m in re.finditer(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", sass)]
        count = collections.Counter()
        for op in ops:
            for cls, pat in classes.items():
                if re.match(pat, op):
                    count[cls] += 1
        print(f"{name:20s} {len(ops):6d} in all  " + "  ".join(f"{c} {count[c]}" for c in classes), flush=True)


def main():
    if "compile" in sys.argv:  # no GPU needed
        picks = [a for a in sys.argv[1:] if a != "compile"]
        compile_sm90([n for n in VARIANTS if not picks or any(p in n for p in picks)])
        return
    quick = "quick" in sys.argv
    picks = [a for a in sys.argv[1:] if a != "quick"]  # e.g. "ws" or "pipe": variants whose name contains one
    names = [n for n in VARIANTS if not picks or any(p in n for p in picks)]
    dev = "cuda"
    props = torch.cuda.get_device_properties(0)
    print(f"# probe-topk-gluon on {props.name} (torch {torch.__version__}, triton {triton.__version__})", flush=True)
    bench = triton.testing.do_bench
    shapes = [(4096, 4096, 65536), (4096, 2304, 16384), (16384, 4096, 65536), (16384, 2304, 16384), (4096, 4096, 131072)]
    if quick:
        shapes = shapes[:2]
    torch.manual_seed(0)
    for T, d, F in shapes:
        x = torch.randn(T, d, device=dev, dtype=torch.bfloat16)
        W = (torch.randn(d, F, device=dev, dtype=torch.bfloat16) / d ** 0.5).contiguous()
        b = torch.randn(F, device=dev, dtype=torch.bfloat16) * 0.1
        flop = 2 * T * d * F
        shape = f"T={T} d={d} F={F}"
        mm_us = bench(lambda: torch.mm(x, W), return_mode="median") * 1e3
        print(f"\n{shape:28s} {'torch.mm':20s} {mm_us:9.1f} us  1.000x  {flop / mm_us / 1e6:5.0f} TFLOP/s", flush=True)
        ref = torch.addmm(b.float(), x.float(), W.float())
        out = torch.empty(T, F, device=dev, dtype=torch.bfloat16)
        rounded = ref.to(torch.bfloat16).float()
        for name in names:
            if VARIANTS[name][2] in FILTERS:
                for m in (256, 1024):
                    try:
                        theta = rounded.topk(m, dim=1).values[:, -1].contiguous()
                        cnt = torch.zeros(T, device=dev, dtype=torch.int32)
                        cv = torch.empty(T, 2 * m, device=dev, dtype=torch.float32)
                        ci = torch.empty(T, 2 * m, device=dev, dtype=torch.int32)
                        fn = gluon_linear(x, W, b, out, name, props.multi_processor_count, (theta, cnt, cv, ci))
                        fn()
                        torch.cuda.synchronize()
                        want = (rounded >= theta[:, None]).sum(1)
                        near = ((rounded - theta[:, None]).abs() <= theta.abs()[:, None] / 128).sum(1)
                        bad = int(((cnt.long() - want).abs() > near).sum())
                        n0 = int(cnt[0].clamp(max=2 * m))
                        same = torch.equal(cv[0, :n0].sort().values, rounded[0, ci[0, :n0].long()].sort().values)
                        us = bench(fn, return_mode="median") * 1e3
                        print(f"{shape:28s} {name + f' m={m}':20s} {us:9.1f} us  {us / mm_us:.3f}x  "
                              f"{flop / us / 1e6:5.0f} TFLOP/s  rows off {bad}, row 0 values match {same}", flush=True)
                    except Exception as e:
                        print(f"{shape:28s} {name:20s} FAILED {type(e).__name__}: {str(e)[:300]}", flush=True)
                continue
            try:
                out.zero_()
                fn = gluon_linear(x, W, b, out, name, props.multi_processor_count)
                fn()
                torch.cuda.synchronize()
                err = (out.float() - ref).abs().max().item()
                if not err < 0.1:
                    print(f"{shape:28s} {name:20s} WRONG (max abs err {err:.3g})", flush=True)
                    continue
                us = bench(fn, return_mode="median") * 1e3
                print(f"{shape:28s} {name:20s} {us:9.1f} us  {us / mm_us:.3f}x  {flop / us / 1e6:5.0f} TFLOP/s", flush=True)
            except Exception as e:  # one variant failing must not stop the others
                print(f"{shape:28s} {name:20s} FAILED {type(e).__name__}: {str(e)[:300]}", flush=True)
        del ref, out, rounded


if __name__ == "__main__":
    main()
