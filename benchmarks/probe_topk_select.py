"""Probe (GPU): the GEMM path's selection kernels alone on [2048, 4096] chunks, timed in
CUDA-graph replay (no host cost): a whole row block (16 chunks of fresh random values: 65536
features, the beats thinning as in real use), its first chunk, and the filters alone, for the
16-bit product (bf16 chunk with the bias in it) and the float32 one (bias added and rounded in
the kernels), per selection configuration (kernels/sae_encode_topk.py Select), each checked
against torch.topk, against a bare read of the chunk. Also: that cuBLAS's addmm rounds the
bias-added product once, and the chunked products alone against the whole product.

python benchmarks/probe_topk_select.py [--ncu]   (--ncu: a few plain launches for Nsight Compute)
"""
import importlib
import statistics
import sys

import torch
import triton
import triton.language as tl

M = importlib.import_module("steerkit.kernels.sae_encode_topk")
torch.manual_seed(0)
tc, fc, F, k, kw = 1024, 4096, 65536, 64, 64  # tc: main() sets 2048


@triton.jit
def _read(p_ptr, out_ptr, NF, stride, thr, BT: tl.constexpr, BF: tl.constexpr):
    rows = tl.program_id(0) * BT + tl.arange(0, BT)
    n = tl.zeros([BT], tl.int32)
    for c0 in range(0, NF, BF):
        cols = c0 + tl.arange(0, BF)
        x = tl.load(p_ptr + rows[:, None].to(tl.int64) * stride + cols[None, :]).to(tl.float32)
        n += tl.sum((x > thr).to(tl.int32), axis=1)
    tl.store(out_ptr + rows, n)


def t(fn, reps=20, n=10):
    fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(n):
            fn()
    g.replay()
    torch.cuda.synchronize()
    xs = []
    for _ in range(reps):
        s, e = torch.cuda.Event(True), torch.cuda.Event(True)
        s.record()
        g.replay()
        e.record()
        torch.cuda.synchronize()
        xs.append(s.elapsed_time(e) * 1e3 / n)
    return statistics.median(xs)


def rounding_check():
    """addmm(b, x, W) in bf16 against the float32 product plus bias rounded once / twice."""
    x = torch.randn(1024, 4096, device="cuda").bfloat16()
    W = (torch.randn(4096, 4096, device="cuda") / 64).bfloat16()
    b = (torch.randn(4096, device="cuda") * 0.1).bfloat16()
    got = torch.addmm(b, x, W)
    acc = torch.mm(x, W, out_dtype=torch.float32)
    once = (acc + b.float()).bfloat16()
    twice = (acc.bfloat16().float() + b.float()).bfloat16()
    n = got.numel()
    print(f"addmm bf16 vs fp32 product + bias rounded once: {int((got != once).sum())} of {n} differ; "
          f"vs rounded twice: {int((got != twice).sum())}", flush=True)


def products():
    """T = 4096, d = 4096, F = 65536: the chunked addmm products (as the GEMM path issues them)
    against the whole product, graph replay."""
    T, d, F = 4096, 4096, 65536
    x = torch.randn(T, d, device="cuda").bfloat16()
    W = (torch.randn(d, F, device="cuda") / 64).bfloat16()
    b = (torch.randn(F, device="cuda") * 0.1).bfloat16()
    whole = t(lambda: x @ W, reps=5, n=2)
    res = {}
    for tcc, fcc in [(1024, 4096), (2048, 4096), (4096, 2048)]:
        p = torch.empty(tcc * fcc, device="cuda", dtype=torch.bfloat16)

        def chunks(tcc=tcc, fcc=fcc, p=p):
            for t0 in range(0, T, tcc):
                for f0 in range(0, F, fcc):
                    torch.addmm(b[f0:f0 + fcc], x[t0:t0 + tcc], W[:, f0:f0 + fcc], out=p.view(tcc, fcc))
        res[f"{tcc}x{fcc}"] = round(t(chunks, reps=5, n=2), 1)
    print(f"products T={T} d={d} F={F}: whole x @ W {whole:.1f} us; chunked addmm {res}", flush=True)


def select_block(M, sel, chunks, b, run, pend, cnt, v, i, pre, tc, fc, parts=None):
    """The GEMM path's selection over a block of chunks (as encode_gemm launches it): the first
    lists, then the filter and merge of each column range. ``parts``: launch only those of
    "first", "filter", "merge" (timing them apart)."""
    F = fc * len(chunks)
    for j, p in enumerate(chunks):
        f0 = j * fc
        if j == 0 and (parts is None or "first" in parts):
            M._first_lists_kernel[(tc,)](p, b, run, pend, v, i, tc, min(sel.bf0, fc), f0, k, fc, v.stride(0),
                                         i.stride(0), LAST=False, SORT_NET=True, PRE=pre, SHIFT=16, BT=1,
                                         BF0=sel.bf0, KW=kw, CP=sel.cp, num_warps=sel.warps)
        for c0, c1 in M._ranges(fc, min(sel.bf0, fc), j == 0):
            if parts is None or "filter" in parts:
                M._filter_kernel[(tc // sel.bt_f, triton.cdiv(c1 - c0, sel.bf_f))](
                    p, b, run, pend, cnt, tc, c0, c1, f0, fc, PRE=pre, ALIGNED=fc % 16 == 0, BT=sel.bt_f, BF=sel.bf_f, KW=kw, CP=sel.cp,
                    num_warps=sel.warps)
            if parts is None or "merge" in parts:
                M._merge_pending_kernel[(tc // sel.bt_m,)](
                    p, b, run, pend, cnt, v, i, tc, c0, c1, f0, k, fc, v.stride(0), i.stride(0),
                    LAST=f0 + c1 == F, SORT_NET=True, PRE=pre, BT=sel.bt_m, KW=kw, CP=sel.cp, PW=sel.pw,
                    num_warps=sel.warps_m)


def main(ncu=False):
    global tc
    tc = 2048  # the default chunk at T = 4096, d = 4096, F = 65536
    P32 = torch.randn(tc, fc, device="cuda") * 0.5
    b = (torch.randn(F, device="cuda") * 0.1).to(torch.bfloat16)
    P16 = (P32 + b[:fc].float()).bfloat16()
    cnt = torch.zeros(tc, device="cuda", dtype=torch.int32)
    v = torch.empty(tc, k, device="cuda", dtype=torch.bfloat16)
    i = torch.empty(tc, k, device="cuda", dtype=torch.int64)
    if not ncu:
        rounding_check()
        products()
        print(f"bare read+count [{tc} x {fc}]:", {f"{p.dtype} BT={bt},BF={bf}": round(t(
            lambda p=p, bt=bt, bf=bf: _read[(tc // bt,)](p, cnt, fc, fc, 2.0, BT=bt, BF=bf, num_warps=4)), 1)
            for p in (P32, P16) for bt, bf in [(1, 4096), (4, 1024)]}, flush=True)
        cnt.zero_()
    base = M.GEMM_SELECT
    sels = [base, base._replace(bt_f=4, bf_f=1024), base._replace(bt_f=16, bf_f=256), base._replace(bt_m=2, warps_m=4),
            base._replace(bf0=2048)]
    fresh16 = [(torch.randn(tc, fc, device="cuda") * 0.5 + b[j * fc:(j + 1) * fc].float()).bfloat16() for j in range(16)]
    fresh32 = [f.float() for f in fresh16]
    # the exact top k of the 16-chunk block, to check every configuration's result
    ref = torch.topk(torch.cat(fresh16, 1).float(), k, dim=1)
    for fresh, pre, name in [(fresh16, -1, "bf16 chunk"), (fresh32, 1, "fp32 chunk")]:
        for sel in sels[:1] if ncu else sels:
            run = torch.empty(tc, kw, device="cuda", dtype=torch.int64)
            pend = torch.empty(tc, sel.cp, device="cuda", dtype=torch.int64)
            args = (M, sel, fresh, b if pre == -1 else b, run, pend, cnt, v, i, pre, tc, fc)
            if pre != -1:  # the float32 chunk: the kernels add b_enc, so chunks hold the product alone
                args = (M, sel, [f - b[j * fc:(j + 1) * fc].float() for j, f in enumerate(fresh)], b, run, pend,
                        cnt, v, i, pre, tc, fc)
            select_block(*args)
            torch.cuda.synchronize()
            # the same values as torch.topk (its order of equal values is not the lower index first), and
            # at the returned indices
            ok = (torch.equal(v.float(), ref.values.clamp_min(0))
                  and torch.equal(torch.cat(fresh16, 1).float().gather(1, i).clamp_min(0), v.float()))
            if ncu:
                select_block(*args)
                torch.cuda.synchronize()
                continue
            whole = t(lambda: select_block(*args), n=2)
            first = t(lambda: select_block(M, sel, args[2][:1], *args[3:]), n=2)
            # per part over the block (the parts alone leave the lists as they were: same work each replay)
            filt = t(lambda: select_block(*args, parts=("filter",)), n=2)
            cnt.zero_()  # the filters alone left counts for merges that did not run
            select_block(*args)  # lists as after a whole block again
            print(f"{name} {tuple(sel)}: 16 chunks {whole:.1f} us ({whole / 16:.1f} per chunk), first chunk "
                  f"{first:.1f} us, filters alone {filt:.1f} us, exact {ok}", flush=True)


if __name__ == "__main__":
    main("--ncu" in sys.argv)
