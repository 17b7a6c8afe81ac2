"""sae_encode_topk: TopK SAE encode without ever writing the [T, F] pre-activation matrix.

    pre = (x - b_dec) @ W_enc + b_enc;  keep the k largest of each row (largest first, ties by
    lower index), then ReLU.

Three paths, all exact:
- ``path="gemm"``, the default from GEMM_MIN_T = 1024 rows (encode_gemm, described before it
  below): cuBLAS products in chunks (16-bit with the bias, or float32) and a selection kernel
  over each chunk. TopK compares pre-activations rounded to the output dtype (_rounded).
  ``select="cuda"`` (the op's cuda backend) runs csrc/sae_encode_topk.cu's selection instead.
- ``path="candidates"``, the default for 64 < T < 1024 (encode_candidates, described before it below):
  the top k of a sample of the features gives each row a threshold; one fused tiled matmul over
  the other features appends only the entries above it to a small per-row buffer; an exact top
  k of those candidates; an exact recomputation of the rare rows whose buffer overflowed (one
  host sync per eager call; under CUDA-graph capture those rows are only counted).
- ``path="running"``, the default for T <= 64: the running-list kernels below (graph-safe, no
  host sync, exact for every row). Measured on the H100 at d = 2304, T = 4096 / 16384: 9-12x the bare matrix product
  (benchmarks/results/sae-encode-topk-*-194030.jsonl): the per-tile merge dominates. Also the
  candidate path's fallback.

Running-list kernels (the candidate path's fallback): ``_encode_kernel``
(grid [row blocks, F slices]) computes tiles with tl.dot, packs each pre-activation into a 64-bit
key (value bits made order-preserving in the high word, ``2^32 - 1 - index`` in the low word: one
signed compare orders by value, then by lower index), and merges each tile into a running
top-KW list per row (tl.topk of the tile, reversed, elementwise max with the running list, one
bitonic merge), skipping tiles with nothing above the current KW-th key; ``_merge_kernel``
merges the slices' lists. The JumpReLU encode (kernels/sae_encode_jumprelu.py) uses both paths
with keys of inactive features masked out and active features counted.

Floor: 2*T*d*F FLOPs (bf16 tensor cores, ~800 TFLOP/s measured on H100) at prefill: T = 4096,
d = 4096, F = 65536: 2.2 TFLOP -> ~2.7 ms; reading W_enc (d*F elements) at decode sizes.
Extra memory of the candidate path: per row, the candidates (C*8 bytes, C = 1792 at k = 64),
the sample's F/16 pre-activations (4 bytes each) and x - b_dec,
per chunk of rows sized to stay under 5% of the bf16 [T, F] matrix: d = 4096, F = 65536 takes
chunks of 768 rows (640 with b_dec), d = 2304, F = 16384 chunks of 256 (each chunk adds a few
small launches).
"""
import torch
import triton
import triton.language as tl

from ._launch import Repeat, interpreting

MIN_KEY = tl.constexpr(-(2 ** 63))  # below every real key (their low word is >= 1)


@triton.jit
def _pack(pre, cols):
    """fp32 value and feature index -> int64 key; larger value first, then lower index."""
    bits = pre.to(tl.int32, bitcast=True)
    hi = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # negative floats: flip magnitude bits
    low = (~cols).to(tl.uint32).to(tl.int64)  # 2^32 - 1 - index, zero-extended
    return (hi.to(tl.int64) << 32) | low


@triton.jit
def _unpack(key):
    hi = (key >> 32).to(tl.int32)
    bits = hi ^ ((hi >> 31) & 0x7FFFFFFF)
    index = (key.to(tl.uint32) ^ 0xFFFFFFFF).to(tl.int64)
    return bits.to(tl.float32, bitcast=True), index


@triton.jit
def _rounded(pre, RND: tl.constexpr):
    """TopK compares pre-activations rounded to the output dtype (RND 1: bfloat16, 2: float16,
    0: float32), so that its order is the order of the values it returns."""
    if RND == 1:
        pre = pre.to(tl.bfloat16).to(tl.float32)
    elif RND == 2:
        pre = pre.to(tl.float16).to(tl.float32)
    return pre


def rnd_code(dtype) -> int:
    """_rounded's RND for TopK values of this dtype."""
    return {torch.bfloat16: 1, torch.float16: 2}.get(dtype, 0)


# per RND: the low bits of a compared value's float32 bits that its rounding leaves constant
# (_top_lists' bisection skips them)
CONSTANT_LOW_BITS = (0, 16, 13)


@triton.jit
def _merge_sorted(run, top):
    """run, top: [BT, KW] keys sorted descending -> the KW largest of both, sorted descending."""
    return tl.bitonic_merge(tl.maximum(run, tl.flip(top, 1)), descending=True)


@triton.jit
def _rank_merge(run, tile):
    """The same result as ``_merge_sorted(run, tl.topk(tile, KW))`` for any tile, by ranking
    (O(n^2) compares, plain elementwise ops): the interpreter runs tl.sort's reductions one element
    at a time, far too slowly for tests. Equal keys (only the MIN_KEY filler) rank by position."""
    KW: tl.constexpr = run.shape[1]
    BF: tl.constexpr = tile.shape[1]
    ia = tl.arange(0, KW)
    ib = tl.arange(0, BF)
    a_i, b_i = run[:, :, None], tile[:, :, None]
    a_j, b_j = run[:, None, :], tile[:, None, :]
    ra = (tl.sum((a_j > a_i).to(tl.int32), axis=2) + tl.sum((tile[:, None, :] > a_i).to(tl.int32), axis=2)
          + tl.sum(((a_j == a_i) & (ia[None, None, :] < ia[None, :, None])).to(tl.int32), axis=2))
    rb = (tl.sum((a_j >= b_i).to(tl.int32), axis=2) + tl.sum((b_j > b_i).to(tl.int32), axis=2)
          + tl.sum(((b_j == b_i) & (ib[None, None, :] < ib[None, :, None])).to(tl.int32), axis=2))
    out = tl.sum(tl.where(ra[:, :, None] == ia[None, None, :], a_i, 0), axis=1)
    return out + tl.sum(tl.where(rb[:, :, None] == ia[None, None, :], b_i, 0), axis=1)


@triton.jit
def _encode_kernel(x_ptr, w_ptr, b_enc_ptr, b_dec_ptr, thr_ptr, keys_ptr, cnt_ptr,
                   T, d, F, f_per_slice, stride_xt, stride_wk, stride_wf,
                   HAS_B_DEC: tl.constexpr, JUMP: tl.constexpr, IEEE: tl.constexpr, SORT_NET: tl.constexpr,
                   RND: tl.constexpr, BT: tl.constexpr, BF: tl.constexpr, BK: tl.constexpr, KW: tl.constexpr):
    s = tl.program_id(1)
    rows = tl.program_id(0) * BT + tl.arange(0, BT)
    row_ok = rows < T
    xrow = x_ptr + rows.to(tl.int64)[:, None] * stride_xt
    f_lo = s * f_per_slice
    f_hi = tl.minimum(f_lo + f_per_slice, F)
    run = tl.full([BT, KW], MIN_KEY, tl.int64)
    count = tl.zeros([BT], tl.int32)
    for f0 in range(f_lo, f_hi, BF):
        cols = f0 + tl.arange(0, BF)
        col_ok = cols < f_hi
        acc = tl.zeros([BT, BF], tl.float32)
        for k0 in range(0, d, BK):
            ks = k0 + tl.arange(0, BK)
            k_ok = ks < d
            wt = tl.load(w_ptr + ks.to(tl.int64)[:, None] * stride_wk + cols.to(tl.int64)[None, :] * stride_wf,
                         mask=k_ok[:, None] & col_ok[None, :], other=0.0)
            xt = tl.load(xrow + ks[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
            if HAS_B_DEC:
                bd = tl.load(b_dec_ptr + ks, mask=k_ok, other=0.0)
                xt = xt.to(tl.float32) - bd.to(tl.float32)[None, :]
            if IEEE:
                acc = tl.dot(xt.to(tl.float32), wt.to(tl.float32), acc, input_precision="ieee")
            else:
                acc = tl.dot(xt.to(wt.dtype), wt, acc)
        pre = _rounded(acc + tl.load(b_enc_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :], RND)
        keep = col_ok[None, :] & row_ok[:, None]
        if JUMP:
            thr = tl.load(thr_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
            keep = keep & (pre > thr[None, :])
            count += tl.sum(keep.to(tl.int32), axis=1)
        key = tl.where(keep, _pack(pre, cols), MIN_KEY)
        # skip the merge when no row has a key above its current KW-th largest
        beats = tl.max(key, axis=1) > tl.min(run, axis=1)
        if tl.max(beats.to(tl.int32), axis=0) > 0:
            if SORT_NET:
                run = _merge_sorted(run, tl.topk(key, KW, dim=1))
            else:
                run = _rank_merge(run, key)
    kcols = tl.arange(0, KW)
    base = (s * T + rows).to(tl.int64)
    tl.store(keys_ptr + base[:, None] * KW + kcols[None, :], run, mask=row_ok[:, None])
    if JUMP:
        tl.store(cnt_ptr + base, count, mask=row_ok)


@triton.jit
def _store_selection(run, total, rows, row_ok, kcols, k, val_ptr, idx_ptr, counts_ptr, ovf_ptr, stride_vt, stride_it,
                     JUMP: tl.constexpr):
    """Write a [BT, KW] sorted key list as values and indices (the first k); JumpReLU: unused
    entries value 0 and index -1, plus per-row counts and overflow from ``total``; TopK: ReLU."""
    value, index = _unpack(run)
    if JUMP:  # unused entries: value 0, index -1
        used = run != MIN_KEY
        value = tl.where(used, value, 0.0)
        index = tl.where(used, index, -1)
    else:  # TopK: ReLU after selection
        value = tl.maximum(value, 0.0)
    out_ok = row_ok[:, None] & (kcols < k)[None, :]
    r64 = rows.to(tl.int64)[:, None]
    tl.store(val_ptr + r64 * stride_vt + kcols[None, :], value.to(val_ptr.dtype.element_ty), mask=out_ok)
    tl.store(idx_ptr + r64 * stride_it + kcols[None, :], index, mask=out_ok)
    if JUMP:
        kept = tl.minimum(total, k)
        tl.store(counts_ptr + rows, kept, mask=row_ok)
        tl.store(ovf_ptr + rows, total - kept, mask=row_ok)


@triton.jit
def _merge_kernel(keys_ptr, cnt_ptr, val_ptr, idx_ptr, counts_ptr, ovf_ptr, T, S, k,
                  stride_vt, stride_it, JUMP: tl.constexpr, SORT_NET: tl.constexpr, BT: tl.constexpr, KW: tl.constexpr):
    rows = tl.program_id(0) * BT + tl.arange(0, BT)
    row_ok = rows < T
    kcols = tl.arange(0, KW)
    run = tl.full([BT, KW], MIN_KEY, tl.int64)
    total = tl.zeros([BT], tl.int32)
    for s in range(S):
        base = (s * T + rows).to(tl.int64)
        part = tl.load(keys_ptr + base[:, None] * KW + kcols[None, :], mask=row_ok[:, None], other=MIN_KEY)
        if SORT_NET:
            run = _merge_sorted(run, part)
        else:
            run = _rank_merge(run, part)
        if JUMP:
            total += tl.load(cnt_ptr + base, mask=row_ok, other=0)
    _store_selection(run, total, rows, row_ok, kcols, k, val_ptr, idx_ptr, counts_ptr, ovf_ptr, stride_vt, stride_it,
                     JUMP)


MAX_K = 256  # widest running list a program keeps in registers
MIN_BUDGET = 4 << 20  # key buffer allowed at small T, bytes
MEMORY_FRACTION = 0.05  # key buffer vs the bf16 [T, F] matrix


def _sm_count(device) -> int:
    if device.type != "cuda":
        return 2
    return torch.cuda.get_device_properties(device).multi_processor_count


def config(T: int, d: int, F: int, k: int, device, slices=None):
    """Launch heuristics: (BT, BF, BK, KW, S, f_per_slice, num_warps).

    GPU: BT x BF = 64 x max(KW, 64) tiles with BK = 64 (bf16 tensor-core tiles, 8 warps to hold
    the fp32 accumulator and the int64 keys); 16 rows for decode-sized T. Slices of F: enough
    programs for two waves of SMs, capped by the key-buffer budget. Interpreter: large tiles.
    """
    kw = max(16, triton.next_power_of_2(k))
    if interpreting():
        bt, bk = max(16, min(32, triton.next_power_of_2(T))), max(16, min(256, triton.next_power_of_2(d)))
        bf, warps = max(kw, 64), 4
    else:
        bt = 16 if T <= 16 else 32 if T <= 32 else 64
        bk, bf = 64, max(kw, 64)
        warps = 4 if bt * bf <= 2048 else 8
    tiles = triton.cdiv(F, bf)
    row_blocks = triton.cdiv(T, bt)
    if slices is None:
        per_slice = T * kw * 8 + T * 4
        budget = max(int(MEMORY_FRACTION * 2 * T * F), MIN_BUDGET)
        want = triton.cdiv(2 * _sm_count(device), row_blocks)
        slices = max(1, min(want, budget // per_slice, tiles))
    per = triton.cdiv(tiles, max(1, min(slices, tiles)))
    n_slices = triton.cdiv(tiles, per)
    return bt, bf, bk, kw, n_slices, per * bf, warps


def encode_select(x, W_enc, b_enc, b_dec, threshold, k, values, indices, counts=None, overflow=None, slices=None):
    """Exact streaming selection (the running-list kernels above): TopK (threshold None) or
    JumpReLU into the given outputs. Used as the fallback of the candidate path and for ``slices``."""
    T, d = x.shape
    F = W_enc.shape[1]
    if T == 0:
        return
    jump = threshold is not None
    bt, bf, bk, kw, S, f_per, warps = config(T, d, F, k, x.device, slices)
    keys = torch.empty((S, T, kw), device=x.device, dtype=torch.int64)
    cnt = torch.empty((S, T), device=x.device, dtype=torch.int32) if jump else keys
    dummy = b_enc
    ieee = torch.float32 in (x.dtype, W_enc.dtype)  # fp32 inputs: exact fp32 products, no TF32
    _encode_kernel[(triton.cdiv(T, bt), S)](
        x, W_enc, b_enc, b_dec if b_dec is not None else dummy, threshold if jump else dummy, keys, cnt,
        T, d, F, f_per, x.stride(0), W_enc.stride(0), W_enc.stride(1),
        HAS_B_DEC=b_dec is not None, JUMP=jump, IEEE=ieee, SORT_NET=not interpreting(),
        RND=0 if jump else rnd_code(values.dtype), BT=bt, BF=bf, BK=bk, KW=kw, num_warps=warps)
    mbt = 16 if kw >= 128 else 32
    _merge_kernel[(triton.cdiv(T, mbt),)](
        keys, cnt, values, indices, counts if jump else indices, overflow if jump else indices,
        T, S, k, values.stride(0), indices.stride(0), JUMP=jump, SORT_NET=not interpreting(), BT=mbt, KW=kw, num_warps=4)


# ---------------------------------------------------------------------------------------------
# Candidate path (the default): sample, fused matmul + append, exact selection, fallback.
#
# Per chunk of rows (xs = x - b_dec, rounded to W_enc's dtype as the running kernels do):
# 1. The sample: _candidate_kernel (MODE_STORE) writes the float32 pre-activations of the first
#    n_s features (the same kernel arithmetic as every other pre-activation); torch.topk gives
#    theta[t], each row's k-th largest of them; MODE_APPEND_STORED appends the sample's entries
#    >= theta[t] (its top k, and any entry tied with the k-th) to the row's buffer.
# 2. The rest: _candidate_kernel (MODE_APPEND) over features n_s..F, a plain tiled matmul
#    (grouped tile order for L2 reuse of W_enc, tl.dot in the input dtype with fp32 accumulate)
#    whose epilogue appends the entries >= theta[t] (JumpReLU: > threshold[f], over all F; no
#    sample) as (fp32 value, int32 index) to row t's buffer of C slots.
# 3. _select_kernel: the exact top k of each row's candidates, packed into keys and merged like
#    the running lists above, then unpacked.
# 4. Exactness: an entry of the row's true top k is >= the k-th largest overall >= theta (the
#    k-th largest of a subset): every one is a candidate, ties included. Rows whose buffer
#    overflowed (more than C candidates; JumpReLU: more active features than C) are recomputed
#    exactly by encode_select: eager calls sync once to find them; under CUDA-graph capture
#    they are only counted (STATS["fallback_rows"] does not see them).
# Floor: 2*T*d*F FLOPs; the sample's matmul is part of it (its columns are not recomputed).
# Extra memory per row: the sample (n_s * 4 bytes), the candidates (C * 8), xs (d * 2); chunks
# of rows keep it under 5% of the bf16 [T, F] matrix.
# ---------------------------------------------------------------------------------------------

SAMPLE_FRACTION = 16  # the sample: the first F / 16 features
STATS = {"fallback_rows": 0, "calls": 0}  # eager: host ints; under capture: rows not recomputed unknown
# MODE_STORE: compute and store the sample; MODE_APPEND: compute and append; MODE_MATMUL: the bare
# matmul (benchmark breakdown); MODE_APPEND_STORED: append from the stored sample (no matmul)
MODE_STORE, MODE_APPEND, MODE_MATMUL, MODE_APPEND_STORED = 0, 1, 2, 3


@triton.jit
def _candidate_kernel(x_ptr, w_ptr, b_enc_ptr, theta_ptr, pre_ptr, cand_v_ptr, cand_i_ptr, cnt_ptr,
                      T, d, F0, NF, C, stride_xt, stride_wk, stride_wf, stride_pt,
                      MODE: tl.constexpr, JUMP: tl.constexpr, IEEE: tl.constexpr, EVEN_K: tl.constexpr,
                      ATOMIC_APPEND: tl.constexpr, TMA: tl.constexpr, RND: tl.constexpr,
                      BT: tl.constexpr, BF: tl.constexpr, BK: tl.constexpr, GROUP: tl.constexpr):
    """Tiles of pre = x @ W_enc[:, F0:F0+NF] + b_enc over the launch's NF features. TMA: x_ptr
    and w_ptr are tensor descriptors ([BT, BK] and [BK, BF] blocks, zero outside the tensors)."""
    # grouped order: GROUP consecutive programs share a W_enc column tile (hot in L2)
    pid = tl.program_id(0)
    n_t = tl.cdiv(T, BT)
    n_f = tl.cdiv(NF, BF)
    per_group = GROUP * n_f
    first = (pid // per_group) * GROUP
    size = tl.minimum(n_t - first, GROUP)
    pid_t = first + (pid % per_group) % size
    pid_f = (pid % per_group) // size
    rows = pid_t * BT + tl.arange(0, BT)
    lcols = pid_f * BF + tl.arange(0, BF)  # column within the launch
    cols = F0 + lcols  # feature index
    row_ok = rows < T
    col_ok = lcols < NF
    kk = tl.arange(0, BK)
    acc = tl.zeros([BT, BF], tl.float32)
    if TMA:  # bulk copies by the tensor-memory accelerator (Hopper); no index arithmetic
        for k0 in range(0, d if MODE != 3 else 0, BK):
            xt = x_ptr.load([pid_t * BT, k0])
            wt = w_ptr.load([k0, F0 + pid_f * BF])
            acc = tl.dot(xt, wt, acc)
    else:
        # out-of-range rows / columns wrap around to valid ones (their results are masked off),
        # so loads need a mask only along d; the hints keep them vectorized (without them the
        # W_enc loads were scalar and the kernel ran at 1/17 of the matmul rate on the H100)
        rows_c = tl.max_contiguous(tl.multiple_of(rows % T, BT), BT)
        cols_c = F0 + tl.max_contiguous(tl.multiple_of(lcols % NF, BF), BF)
        xp = x_ptr + rows_c.to(tl.int64)[:, None] * stride_xt + kk[None, :]
        wp = w_ptr + cols_c.to(tl.int64)[None, :] * stride_wf + kk.to(tl.int64)[:, None] * stride_wk
        for k0 in range(0, d if MODE != 3 else 0, BK):
            if EVEN_K:
                xt = tl.load(xp)
                wt = tl.load(wp)
            else:
                k_ok = (k0 + kk) < d
                xt = tl.load(xp, mask=k_ok[None, :], other=0.0)
                wt = tl.load(wp, mask=k_ok[:, None], other=0.0)
            xp += BK
            wp += BK * stride_wk
            if IEEE:
                acc = tl.dot(xt.to(tl.float32), wt.to(tl.float32), acc, input_precision="ieee")
            else:
                acc = tl.dot(xt, wt, acc)
    ok = row_ok[:, None] & col_ok[None, :]
    if MODE == 3:  # the stored sample, appended like the rest
        pre = tl.load(pre_ptr + rows.to(tl.int64)[:, None] * stride_pt + lcols[None, :], mask=ok, other=0.0)
    else:
        pre = _rounded(acc + tl.load(b_enc_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :], RND)
    if MODE == 0:  # the sample: store it
        tl.store(pre_ptr + rows.to(tl.int64)[:, None] * stride_pt + lcols[None, :], pre, mask=ok)
    elif MODE == 2:  # the bare matmul: keep one value per row so the product is not dead code
        tl.store(cnt_ptr + rows, tl.max(pre, axis=1).to(tl.int32), mask=row_ok & (pid_f == 0))
    else:
        if JUMP:
            thr = tl.load(theta_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
            keep = (pre > thr[None, :]) & ok
        else:
            theta = tl.load(theta_ptr + rows, mask=row_ok, other=0.0)
            keep = (pre >= theta[:, None]) & ok
        if ATOMIC_APPEND:  # one atomic slot reservation per kept entry
            slot = tl.atomic_add(cnt_ptr + rows[:, None] + 0 * lcols[None, :], 1, mask=keep, sem="relaxed")
            put = keep & (slot < C)
            at = rows.to(tl.int64)[:, None] * C + slot
            tl.store(cand_v_ptr + at, pre, mask=put)
            tl.store(cand_i_ptr + at, cols[None, :], mask=put)
        else:  # one atomic per row reserves the row's slots, a cumsum ranks the kept entries
            n_row = tl.sum(keep.to(tl.int32), axis=1)
            if tl.max(n_row, axis=0) > 0:  # most tiles of a row hold a few candidates; some none
                base = tl.atomic_add(cnt_ptr + rows, n_row, mask=n_row > 0, sem="relaxed")
                pos = base[:, None] + tl.cumsum(keep.to(tl.int32), axis=1) - 1
                put = keep & (pos < C)
                at = rows.to(tl.int64)[:, None] * C + pos
                tl.store(cand_v_ptr + at, pre, mask=put)  # value and index apart: no 64-bit tile
                tl.store(cand_i_ptr + at, cols[None, :], mask=put)


@triton.jit
def _select_kernel(cand_v_ptr, cand_i_ptr, cnt_ptr, val_ptr, idx_ptr, counts_ptr, ovf_ptr, T, C, k, stride_vt, stride_it,
                   JUMP: tl.constexpr, SORT_NET: tl.constexpr, BT: tl.constexpr, KW: tl.constexpr):
    rows = tl.program_id(0) * BT + tl.arange(0, BT)
    row_ok = rows < T
    kcols = tl.arange(0, KW)
    total = tl.load(cnt_ptr + rows, mask=row_ok, other=0)
    n = tl.minimum(total, C)
    run = tl.full([BT, KW], MIN_KEY, tl.int64)
    for c0 in range(0, tl.max(n, axis=0), KW):
        cs = c0 + kcols
        at = rows.to(tl.int64)[:, None] * C + cs[None, :]
        m = row_ok[:, None] & (cs[None, :] < n[:, None])
        v = tl.load(cand_v_ptr + at, mask=m, other=0.0)
        i = tl.load(cand_i_ptr + at, mask=m, other=0)
        part = tl.where(m, _pack(v, i), MIN_KEY)
        if SORT_NET:
            run = _merge_sorted(run, tl.topk(part, KW, dim=1))
        else:
            run = _rank_merge(run, part)
    _store_selection(run, total, rows, row_ok, kcols, k, val_ptr, idx_ptr, counts_ptr, ovf_ptr, stride_vt, stride_it,
                     JUMP)


# fused-matmul tiles (BT, BF, BK, GROUP, num_warps, num_stages, ATOMIC_APPEND): the default at
# T > 64 (first), and those the benchmark sweeps at T >= 4096
# (an 8th entry True: loads through TMA tensor descriptors where _tma_ok, Hopper and 16-bit inputs;
# elsewhere the same tiles with pointer loads)
SWEEP = [(128, 128, 64, 16, 8, 4, True, True), (128, 128, 64, 16, 8, 5, True), (128, 128, 64, 16, 8, 5, False),
         (128, 128, 64, 16, 8, 3, True), (128, 256, 64, 16, 8, 3, True), (128, 256, 64, 16, 8, 3, True, True)]


def candidate_config(T: int, d: int, F: int, k: int, jump: bool, capacity=None, chunk=None, fp32=False,
                     shift_bytes=None):
    """(n_s, C, rows per chunk, (BT, BF, BK, GROUP, warps, stages, ATOMIC_APPEND[, TMA])).

    n_s: F / 16 rounded down to a multiple of 256 (every tile width divides it; at least k; F
    when that leaves nothing); JumpReLU: 0 (no sample). C: the sample's k plus the expected
    count of candidates beyond it, E = k * (F - n_s) / n_s, plus 6 standard deviations (the
    count's relative spread is about 1 / sqrt(k)): k + E * (1 + 6 / sqrt(k)), a multiple of 64
    (k = 64, F = 65536: 1792); JumpReLU: 2 x capacity, at least 256. Chunks of rows (multiples
    of 128) keep the extra memory per row under 5% of the bf16 [T, F] matrix.
    GPU tiles: SWEEP[0] (128 x 128 x 64, 8 warps, 4 stages, an atomic per appended entry, TMA loads:
    the best of the sweep on the H100, 5.99 ms against 6.35 ms with pointer loads at T = 4096,
    d = 4096, F = 65536; sae-encode-topk-*-20261124-001030.jsonl); 64 x 64
    for T <= 64; fp32 inputs: BK = 32, 3 stages. Interpreter: one tile where possible.
    """
    if jump:
        n_s = 0
    else:
        n_s = F // SAMPLE_FRACTION // 256 * 256
        n_s = F if n_s < max(k, 256) or n_s >= F else n_s
    if capacity is None:
        if jump:
            capacity = max(256, triton.next_power_of_2(2 * k))
        else:
            expected = k * (F - n_s) / n_s
            capacity = k + int(expected * (1 + 6 / k ** 0.5)) + 1
            capacity = min(triton.cdiv(F, 64) * 64, triton.cdiv(capacity, 64) * 64)
    shift = d * 6 if shift_bytes is None else shift_bytes  # x - b_dec (and its float32 temporary)
    per_row = capacity * 8 + 8 + n_s * 4 + k * 24 + shift  # see the module doc
    if chunk is None:
        budget = MEMORY_FRACTION * 2 * T * F
        chunk = T if per_row * T <= budget else max(128, int(budget // per_row) // 128 * 128)
    chunk = max(1, min(chunk, T))
    if interpreting():
        tiles = (max(16, min(64, triton.next_power_of_2(T))), max(16, min(256, triton.next_power_of_2(F))),
                 max(16, min(256, triton.next_power_of_2(d))), 8, 4, 1, False)
    elif fp32:
        tiles = (64, 64, 32, 8, 4, 3, False) if T <= 64 else (128, 128, 32, 8, 8, 3, False)
    else:
        tiles = (64, 64, 64, 8, 4, 4, False) if T <= 64 else SWEEP[0]
    return n_s, capacity, chunk, tiles


def _launch(xs, W_enc, b_enc, theta, pre, cand_v, cand_i, cnt, F0, NF, C, mode, jump, tiles, rnd=0):
    T, d = xs.shape
    bt, bf, bk, group, warps, stages, atomic = tiles[:7]
    grid = (triton.cdiv(T, bt) * triton.cdiv(NF, bf),)
    x_arg, w_arg = xs, W_enc
    tma = len(tiles) > 7 and tiles[7] and mode != MODE_APPEND_STORED and _tma_ok(xs, W_enc)
    if tma:
        from triton.tools.tensor_descriptor import TensorDescriptor

        x_arg = TensorDescriptor.from_tensor(xs, [bt, bk])
        w_arg = TensorDescriptor.from_tensor(W_enc, [bk, bf])
    _candidate_kernel[grid](
        x_arg, w_arg, b_enc, theta, pre, cand_v, cand_i, cnt, T, d, F0, NF, C,
        xs.stride(0), W_enc.stride(0), W_enc.stride(1), pre.stride(0), MODE=mode, JUMP=jump,
        IEEE=torch.float32 in (xs.dtype, W_enc.dtype), EVEN_K=d % bk == 0, ATOMIC_APPEND=atomic, TMA=bool(tma),
        RND=rnd, BT=bt, BF=bf, BK=bk, GROUP=group, num_warps=warps, num_stages=stages)


def _tma_ok(xs, W_enc) -> bool:
    """Tensor descriptors need 16-bit inputs here, unit inner strides and 16-byte aligned rows."""
    if xs.dtype not in (torch.float16, torch.bfloat16) or W_enc.dtype != xs.dtype:
        return False
    if xs.is_cuda and torch.cuda.get_device_capability(xs.device)[0] < 9:
        return False
    es = xs.element_size()
    return (xs.stride(1) == 1 and W_enc.stride(1) == 1 and (xs.stride(0) * es) % 16 == 0
            and (W_enc.stride(0) * es) % 16 == 0 and xs.data_ptr() % 16 == 0 and W_enc.data_ptr() % 16 == 0)


def _shifted(x, W_enc, b_dec):
    """x - b_dec in W_enc's dtype, unit column stride (the subtraction rounds once, as the
    running kernels' does, when x and b_dec have W_enc's dtype)."""
    if b_dec is None:
        return x.to(W_enc.dtype).contiguous() if x.dtype != W_enc.dtype or x.stride(1) != 1 else x
    if x.dtype == b_dec.dtype == W_enc.dtype:
        return torch.sub(x, b_dec)
    return (x.float() - b_dec.float()).to(W_enc.dtype)


def _shifted_bytes(x, W_enc, b_dec) -> int:
    """Bytes per row that ``_shifted`` allocates (its temporaries included)."""
    d = x.shape[1]
    if b_dec is None:
        return 0 if x.dtype == W_enc.dtype and x.stride(1) == 1 else d * W_enc.element_size()
    if x.dtype == b_dec.dtype == W_enc.dtype:
        return d * x.element_size()
    return d * (8 + W_enc.element_size())  # float32 x and difference, then the cast


def _chunk(x, W_enc, b_enc, b_dec, threshold, k, n_s, C, tiles, values, indices, counts, overflow, buf, bad):
    """Steps 1-3 for the rows of x (one chunk), in the buffers ``buf`` (sliced to the chunk's
    rows); writes the rows to recompute into ``bad`` (bool [T])."""
    T, d = x.shape
    F = W_enc.shape[1]
    jump = threshold is not None
    xs = _shifted(x, W_enc, b_dec)
    cand_v, cand_i, cnt = buf["cand_v"][:T], buf["cand_i"][:T], buf["cnt"][:T]
    cnt.zero_()
    if jump:
        _launch(xs, W_enc, b_enc, threshold, cand_v, cand_v, cand_i, cnt, 0, F, C, MODE_APPEND, True, tiles)
    else:
        pre, rnd = buf["pre"][:T], rnd_code(values.dtype)
        _launch(xs, W_enc, b_enc, b_enc, pre, cand_v, cand_i, b_enc, 0, n_s, C, MODE_STORE, False, tiles, rnd)
        theta = torch.topk(pre, k, dim=1, sorted=False).values.amin(dim=1)  # the sample's k-th largest
        # the sample's entries >= theta: its top k and every entry tied with the k-th
        _launch(xs, W_enc, b_enc, theta, pre, cand_v, cand_i, cnt, 0, n_s, C, MODE_APPEND_STORED, False, tiles, rnd)
        if n_s < F:
            _launch(xs, W_enc, b_enc, theta, cand_v, cand_v, cand_i, cnt, n_s, F - n_s, C, MODE_APPEND, False, tiles,
                    rnd)
    torch.gt(cnt, C, out=bad)
    kw = max(16, triton.next_power_of_2(k))
    sbt = 4 if kw >= 128 else 8
    if interpreting():
        sbt = max(1, min(32, triton.next_power_of_2(T)))
    _select_kernel[(triton.cdiv(T, sbt),)](
        cand_v, cand_i, cnt, values, indices, counts if jump else indices, overflow if jump else indices, T, C, k,
        values.stride(0), indices.stride(0), JUMP=jump, SORT_NET=not interpreting(), BT=sbt, KW=kw, num_warps=4)


def matmul_only(x, W_enc, b_enc, tiles=None):
    """The fused kernel's bare matmul (no epilogue work): the benchmark's breakdown."""
    T, d = x.shape
    F = W_enc.shape[1]
    tiles = tiles or candidate_config(T, d, F, 64, False)[3]
    sink = torch.empty((T,), device=x.device, dtype=torch.int32)
    _launch(x, W_enc, b_enc, b_enc, sink, sink, sink, sink, 0, F, 1, MODE_MATMUL, False, tiles)
    return sink


def _capturing(x) -> bool:
    return x.is_cuda and torch.cuda.is_current_stream_capturing()


def encode_candidates(x, W_enc, b_enc, b_dec, threshold, k, values, indices, counts=None, overflow=None,
                      capacity=None, chunk=None, tiles=None):
    """TopK (threshold None) or JumpReLU selection by the candidate path (see above)."""
    T, d = x.shape
    F = W_enc.shape[1]
    if T == 0:
        return
    jump = threshold is not None
    fp32 = torch.float32 in (x.dtype, W_enc.dtype)
    n_s, C, chunk, default_tiles = candidate_config(T, d, F, k, jump, capacity, chunk, fp32,
                                                    _shifted_bytes(x, W_enc, b_dec))
    tiles = tiles or default_tiles
    # buffers for one chunk, reused by every chunk
    dev = x.device
    buf = dict(cand_v=torch.empty((chunk, C), device=dev, dtype=torch.float32),
               cand_i=torch.empty((chunk, C), device=dev, dtype=torch.int32),
               cnt=torch.empty((chunk,), device=dev, dtype=torch.int32),
               pre=None if jump else torch.empty((chunk, n_s), device=dev, dtype=torch.float32))
    bad = torch.empty((T,), device=dev, dtype=torch.bool)
    for t0 in range(0, T, chunk):
        t1 = min(T, t0 + chunk)
        _chunk(x[t0:t1], W_enc, b_enc, b_dec, threshold, k, n_s, C, tiles, values[t0:t1], indices[t0:t1],
               counts[t0:t1] if jump else None, overflow[t0:t1] if jump else None, buf, bad[t0:t1])
    STATS["calls"] += 1
    if _capturing(x):  # no host sync under capture: flagged rows keep the candidate result
        return
    rows = bad.nonzero().squeeze(1)
    if rows.numel():
        STATS["fallback_rows"] += int(rows.numel())
        xr = x.index_select(0, rows)
        v = values.new_empty((rows.numel(), values.shape[1]))
        i = indices.new_empty((rows.numel(), indices.shape[1]))
        c = o = None
        if jump:
            c, o = counts.new_empty((rows.numel(),)), overflow.new_empty((rows.numel(),))
        encode_select(xr, W_enc, b_enc, b_dec, threshold, k, v, i, c, o)
        values[rows], indices[rows] = v, i
        if jump:
            counts[rows], overflow[rows] = c, o


# ---------------------------------------------------------------------------------------------
# GEMM path (the default for T >= GEMM_MIN_T): the matrix product by cuBLAS, in chunks of
# [Tc rows, Fc features], each chunk then reduced by _gemm_select_kernel into per-row running
# top-KW lists (sorted keys, as in the running-list kernels). When x, W_enc and b_enc share a
# 16-bit dtype the chunk is addmm's 16-bit product with the bias (fp32 accumulation, bias added
# in the epilogue, one rounding: the values TopK compares, in half the bytes); otherwise the
# float32 product, the bias added and the sum rounded by the selection kernel.
# - The first chunk of features: each row's top KW by bisection on the values' bits
#   (_top_lists; no sort of the chunk).
# - Every later chunk: each key above its row's theta (the KW-th largest key so far) takes a
#   slot of the row's pending list by an atomic (_append), then one merge raises theta. About
#   KW * Fc / (features seen) keys per row beat it, so this is mostly one compare per entry.
#   A row with more than CP such keys in a chunk (rising biases, say) rescans the chunk with
#   merges whenever its pending list fills (_scan).
# Exact for every row: no key that could be in the top KW is dropped; no fallback, no host
# sync (graph safe). Extra memory: the chunk (Tc * Fc * 2 or 4 bytes), per row of a chunk the
# lists ((KW + CP) * 8 + 4) and x - b_dec (d * 2, when b_dec is given): under 5% of the bf16 [T, F]
# matrix. Floor: the bare product (docs/sae_ops.md has the H100 numbers).
# ---------------------------------------------------------------------------------------------

GEMM_MIN_T = 1024  # below it the candidate path (chunks of the product would be host-bound)
# bytes of the budget kept free: the H100 peak at T = 4096, d = 2304, F = 16384 (16-bit product)
# was 512 KB above the chunk, lists and counts (cause not found; tests/test_sae_encode_topk.py
# test_no_large_intermediate)
GEMM_RESERVE = 1 << 19
# the selection's rows per program (the first chunk of features: one), tile width, the first
# chunk's tile width (the whole chunk), pending slots, warps
GEMM_SELECT = (2, 1024, 4096, 512, 4)


@triton.jit
def _chunk_tile(p_ptr, b_enc_ptr, r64, row_ok, c0, NF, F0, stride_pt, PRE: tl.constexpr, BF: tl.constexpr):
    """Columns c0..c0+BF of a chunk: (pre-activations [BT, BF] in float32, feature indices
    [1, BF], in-bounds mask). PRE -1: the chunk holds them (b_enc added, rounded: the 16-bit
    product); else the chunk is the float32 product: b_enc is added, then _rounded(., PRE)."""
    cols = c0 + tl.arange(0, BF)
    col_ok = cols < NF
    ok = row_ok[:, None] & col_ok[None, :]
    pre = tl.load(p_ptr + r64[:, None] * stride_pt + cols[None, :], mask=ok, other=0.0).to(tl.float32)
    if PRE >= 0:
        pre = _rounded(pre + tl.load(b_enc_ptr + F0 + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :], PRE)
    return pre, F0 + cols[None, :], ok


@triton.jit
def _top_lists(pre, f, ok, pend_ptr, r64, row_ok, CP: tl.constexpr, KW: tl.constexpr, SHIFT: tl.constexpr,
               SORT_NET: tl.constexpr):
    """The KW largest keys of each row of a tile, sorted descending (MIN_KEY after a row's valid
    entries when it has fewer), without sorting the tile: the KW-th largest value by bisection
    on its order-preserving bits (32 - SHIFT steps of one compare and one sum per entry; SHIFT:
    the low bits that values rounded to 16 bits leave constant), then the entries above it and
    the lowest-index ones equal to it go to the row's pending slots, and one sort of KW keys."""
    BT: tl.constexpr = pre.shape[0]
    bits = pre.to(tl.int32, bitcast=True)
    v = (bits ^ ((bits >> 31) & 0x7FFFFFFF)) >> SHIFT  # order-preserving, equal values equal
    want = tl.minimum(tl.sum(ok.to(tl.int32), axis=1), KW)
    lo = tl.full([BT], -2147483648, tl.int64) >> SHIFT  # count(v >= lo) >= want
    hi = tl.full([BT], 2147483648, tl.int64) >> SHIFT  # count(v >= hi) < want (when want > 0)
    for _ in tl.static_range(32 - SHIFT):
        mid = (lo + hi) >> 1
        c = tl.sum((ok & (v >= mid.to(tl.int32)[:, None])).to(tl.int32), axis=1)
        lo = tl.where(c >= want, mid, lo)
        hi = tl.where(c >= want, hi, mid)
    t = lo.to(tl.int32)[:, None]  # the KW-th largest value (as v)
    gt = ok & (v > t)
    eq = ok & (v == t)
    need = want - tl.sum(gt.to(tl.int32), axis=1)
    sel = gt | (eq & (tl.cumsum(eq.to(tl.int32), axis=1) <= need[:, None]))  # equal: lower index first
    pos = tl.cumsum(sel.to(tl.int32), axis=1) - 1
    tl.store(pend_ptr + r64[:, None] * CP + pos, _pack(pre, f), mask=sel)
    tl.debug_barrier()  # the stores of every thread are visible
    kc = tl.arange(0, KW)
    part = tl.load(pend_ptr + r64[:, None] * CP + kc[None, :], mask=row_ok[:, None] & (kc[None, :] < want[:, None]),
                   other=MIN_KEY)
    tl.debug_barrier()  # read before the slots are reused
    if SORT_NET:
        return tl.sort(part, dim=1, descending=True)
    return _rank_merge(tl.full([BT, KW], MIN_KEY, tl.int64), part)


@triton.jit
def _flush(run, pend_ptr, r64, row_ok, n, CP: tl.constexpr, SORT_NET: tl.constexpr):
    """Merge each row's n pending keys (in pend[row, :n]) into its sorted running list."""
    KW: tl.constexpr = run.shape[1]
    kc = tl.arange(0, KW)
    tl.debug_barrier()  # the pending stores of every thread are visible
    for c0 in range(0, tl.max(n, axis=0), KW):
        cs = c0 + kc
        m = row_ok[:, None] & (cs[None, :] < n[:, None])
        part = tl.load(pend_ptr + r64[:, None] * CP + cs[None, :], mask=m, other=MIN_KEY)
        if SORT_NET:
            run = _merge_sorted(run, tl.sort(part, dim=1, descending=True))
        else:
            run = _rank_merge(run, part)
    tl.debug_barrier()  # every thread has read them before new ones overwrite the slots
    return run


@triton.jit
def _scan(run, p_ptr, b_enc_ptr, pend_ptr, r64, row_ok, C0, NF, F0, stride_pt,
          CP: tl.constexpr, SORT_NET: tl.constexpr, PRE: tl.constexpr, BF: tl.constexpr):
    """A chunk's pre-activations in columns C0..NF (_chunk_tile) merged into the running lists."""
    BT: tl.constexpr = run.shape[0]
    theta = tl.min(run, axis=1)  # the KW-th largest key so far
    tv, _ = _unpack(theta)
    open_ = theta == MIN_KEY  # fewer than KW keys yet: everything beats it
    n = tl.zeros([BT], tl.int32)  # pending keys per row
    for c0 in range(C0, NF, BF):
        pre, f, ok = _chunk_tile(p_ptr, b_enc_ptr, r64, row_ok, c0, NF, F0, stride_pt, PRE, BF)
        maybe = ok & ((pre >= tv[:, None]) | open_[:, None])  # by value: a superset of the keys that beat
        if tl.max(tl.max(maybe.to(tl.int32), axis=1), axis=0) > 0:  # most tiles after the first chunk: none
            key = tl.where(maybe, _pack(pre, f), MIN_KEY)
            beat = key > theta[:, None]
            nb = tl.sum(beat.to(tl.int32), axis=1)
            if tl.max(n + nb, axis=0) > CP:  # no room: merge the pending keys first (raises theta)
                run = _flush(run, pend_ptr, r64, row_ok, n, CP, SORT_NET)
                theta = tl.min(run, axis=1)
                tv, _ = _unpack(theta)
                open_ = theta == MIN_KEY
                n = tl.zeros([BT], tl.int32)
                beat = key > theta[:, None]
                nb = tl.sum(beat.to(tl.int32), axis=1)
            pos = n[:, None] + tl.cumsum(beat.to(tl.int32), axis=1) - 1
            tl.store(pend_ptr + r64[:, None] * CP + pos, key, mask=beat)
            n += nb
    if tl.max(n, axis=0) > 0:
        run = _flush(run, pend_ptr, r64, row_ok, n, CP, SORT_NET)
    return run


@triton.jit
def _append(run, p_ptr, b_enc_ptr, pend_ptr, cnt_ptr, rows, r64, row_ok, C0, NF, F0, stride_pt,
            CP: tl.constexpr, PRE: tl.constexpr, BF: tl.constexpr):
    """The fast scan of a chunk after the first: each key that beats its row's theta takes a
    pending slot by an atomic on the row's count (no barrier, no scan in the loop). Returns the
    counts (a count over CP: slots were missing, and the caller rescans with _scan)."""
    BT: tl.constexpr = run.shape[0]
    theta = tl.min(run, axis=1)
    tl.store(cnt_ptr + rows, tl.zeros([BT], tl.int32), mask=row_ok)
    tl.debug_barrier()
    for c0 in range(C0, NF, BF):
        pre, f, ok = _chunk_tile(p_ptr, b_enc_ptr, r64, row_ok, c0, NF, F0, stride_pt, PRE, BF)
        key = _pack(pre, f)
        beat = ok & (key > theta[:, None])
        slot = tl.atomic_add(cnt_ptr + rows[:, None] + 0 * f, 1, mask=beat, sem="relaxed")
        tl.store(pend_ptr + r64[:, None] * CP + slot, key, mask=beat & (slot < CP))
    tl.debug_barrier()
    return tl.load(cnt_ptr + rows, mask=row_ok, other=0)


@triton.jit
def _merge_rest(run, p_ptr, b_enc_ptr, pend_ptr, cnt_ptr, rows, r64, row_ok, C0, NF, F0, stride_pt,
                CP: tl.constexpr, SORT_NET: tl.constexpr, PRE: tl.constexpr, BF: tl.constexpr):
    """Columns C0..NF of a chunk into non-empty running lists: _append, then one merge; a row
    short of pending slots (rare): _scan instead."""
    n = _append(run, p_ptr, b_enc_ptr, pend_ptr, cnt_ptr, rows, r64, row_ok, C0, NF, F0, stride_pt, CP, PRE, BF)
    if tl.max(n, axis=0) > CP:  # rescan in tiles that fit the pending slots
        run = _scan(run, p_ptr, b_enc_ptr, pend_ptr, r64, row_ok, C0, NF, F0, stride_pt, CP, SORT_NET, PRE, CP)
    elif tl.max(n, axis=0) > 0:
        run = _flush(run, pend_ptr, r64, row_ok, n, CP, SORT_NET)
    return run


# T, NF, F0 and the output pointers change from chunk to chunk: not specialised on, so one
# compiled launch serves every chunk (_launch.Repeat)
@triton.jit(do_not_specialize=["T", "NF", "F0", "val_ptr", "idx_ptr"],
            do_not_specialize_on_alignment=["val_ptr", "idx_ptr"])
def _gemm_select_kernel(p_ptr, b_enc_ptr, run_ptr, pend_ptr, cnt_ptr, val_ptr, idx_ptr, T, NF, F0, k,
                        stride_pt, stride_vt, stride_it,
                        FIRST: tl.constexpr, LAST: tl.constexpr, SORT_NET: tl.constexpr, PRE: tl.constexpr,
                        SHIFT: tl.constexpr, BT: tl.constexpr, BF: tl.constexpr, BF0: tl.constexpr, KW: tl.constexpr,
                        CP: tl.constexpr):
    """Rows of one chunk: its pre-activations (_chunk_tile) merged into run[t] (see above).
    The first chunk starts the lists with the top KW of its first BF0 columns (_top_lists)."""
    rows = tl.program_id(0) * BT + tl.arange(0, BT)
    row_ok = rows < T
    r64 = rows.to(tl.int64)
    kcols = tl.arange(0, KW)
    if FIRST:  # the empty lists: the top KW of the first BF0 columns sets theta
        pre, f, ok = _chunk_tile(p_ptr, b_enc_ptr, r64, row_ok, 0, NF, F0, stride_pt, PRE, BF0)
        run = _top_lists(pre, f, ok, pend_ptr, r64, row_ok, CP, KW, SHIFT, SORT_NET)
        if NF > BF0:
            run = _merge_rest(run, p_ptr, b_enc_ptr, pend_ptr, cnt_ptr, rows, r64, row_ok, BF0, NF, F0, stride_pt,
                              CP, SORT_NET, PRE, BF)
    else:
        run = tl.load(run_ptr + r64[:, None] * KW + kcols[None, :], mask=row_ok[:, None], other=MIN_KEY)
        run = _merge_rest(run, p_ptr, b_enc_ptr, pend_ptr, cnt_ptr, rows, r64, row_ok, 0, NF, F0, stride_pt,
                          CP, SORT_NET, PRE, BF)
    if LAST:
        _store_selection(run, row_ok.to(tl.int32), rows, row_ok, kcols, k, val_ptr, idx_ptr, val_ptr, val_ptr,
                         stride_vt, stride_it, False)
    else:
        tl.store(run_ptr + r64[:, None] * KW + kcols[None, :], run, mask=row_ok[:, None])


def gemm_config(T: int, d: int, F: int, k: int, shift_bytes: int, device, budget=None, esize=2, select="triton"):
    """(Tc, Fc, (BT, BF, BF0, CP, num_warps)): chunks of the product (``esize`` bytes per entry:
    2 for the 16-bit product, 4 for float32) and the selection's tiles.

    The largest chunk within the budget, Tc a power of two from 128 rows, Fc one of 4096 ... 64
    features (the wider on a tie): cuBLAS ran at 1.08-1.15x its whole-product time on chunks of
    4M entries on the H100 (d = 4096, F = 65536 and 131072, T = 4096 and 16384), 1.2-2x on
    chunks of 1-2M and up to 30x on small ones (host-bound: benchmarks/results/probe-gemm-h100.txt).
    ``budget``: bytes (default 5% of the bf16 [T, F] matrix). ``select="cuda"`` (the CUDA
    selection kernel, csrc/sae_encode_topk.cu) keeps only the lists: no pending slots, and it
    may take 8192 features a chunk (two segments a row) where that gives a larger chunk than
    4096: with b_dec, whose x - b_dec buffer of Tc rows halves Tc. H100, bf16, k = 64, one call
    at a time against the bare product (probe-topk-chunk-shape-h100.txt): with b_dec, d = 4096,
    F = 65536, T = 4096: 1.36x with 1024 x 8192 against 1.44x with 1024 x 4096; T = 16384:
    1.20x against 1.25x; d = 2304, F = 16384, T = 4096: 3.7x against 6.0x. At equal areas the
    4096-wide chunk was faster (no b_dec: 1.29x against 1.32x at d = 4096, T = 4096)."""
    kw = max(16, triton.next_power_of_2(k))
    if interpreting():
        # tiles wider than the pending slots, so that the tests reach _scan
        bt, bf, bf0, cp, warps = max(1, min(16, triton.next_power_of_2(T))), 2 * max(kw, 64), 64, max(kw, 64), 4
    else:
        bt, bf, bf0, cp, warps = GEMM_SELECT
        cp = max(cp, 2 * kw)
    per_row = (kw * 8 if select == "cuda" else (kw + cp) * 8 + 4) + shift_bytes
    budget = MEMORY_FRACTION * 2 * T * F if budget is None else budget
    budget -= GEMM_RESERVE
    tc, fc, area = 128, min(64, F), 0  # the smallest chunk where none fits the budget
    widths = (4096, 2048, 1024, 512, 256, 128, 64) + ((8192,) if select == "cuda" else ())
    for w in widths:  # the first of equal areas wins: 4096, then the narrower (it keeps ties)
        w = min(w, F)
        rows = 128
        while rows < T and 2 * rows * (w * esize + per_row) <= budget:
            rows *= 2
        if rows * (w * esize + per_row) <= budget and min(rows, T) * w > area:
            tc, fc, area = rows, w, min(rows, T) * w
    return min(tc, T), fc, (bt, bf, bf0, cp, warps)


def _product(a, b, bias, out):
    """out = a @ b with products in a's dtype and fp32 accumulation: float32 ``out``, or (``bias``
    given) a 16-bit ``out`` = a @ b + bias rounded once (cuBLAS adds the bias in its fp32 epilogue;
    the CPU rounds the float32 sum)."""
    if bias is not None:
        if a.is_cuda:
            torch.addmm(bias, a, b, out=out)
        else:
            out.copy_(torch.addmm(bias.float(), a.float(), b.float()))
    elif a.dtype == torch.float32 or not a.is_cuda:
        torch.mm(a.float(), b.float(), out=out)  # 16-bit products are exact in fp32
    else:
        torch.mm(a, b, out_dtype=torch.float32, out=out)


def product16(x, W_enc, b_enc) -> bool:
    """The GEMM path writes the 16-bit product with the bias (half the bytes of float32, and the
    values TopK compares) when x, W_enc and b_enc share a 16-bit dtype."""
    return x.dtype in (torch.float16, torch.bfloat16) and W_enc.dtype == b_enc.dtype == x.dtype


def gemm_ok(x, W_enc) -> bool:
    """The GEMM path computes what the fused kernels do: products in W_enc's dtype (x is
    converted to it), so 16-bit ones, or fp32 ones while cuBLAS keeps them exact (no TF32)."""
    if W_enc.dtype == torch.float32:
        return not x.is_cuda or torch.get_float32_matmul_precision() == "highest"
    return True


def encode_gemm(x, W_enc, b_enc, b_dec, k, values, indices, budget=None, chunks=None, select="triton"):
    """TopK selection by the GEMM path (see above); ``chunks``: (Tc, Fc) (tests). ``select``:
    "triton" (the kernel above) or "cuda" (csrc/sae_encode_topk.cu: one warp per row, ballot
    compaction; needs the 16-bit product, see ``product16``)."""
    T, d = x.shape
    F = W_enc.shape[1]
    if T == 0:
        return
    kw = max(16, triton.next_power_of_2(k))
    p16 = product16(x, W_enc, b_enc)
    if select == "cuda" and not p16:
        raise ValueError("sae_encode_topk: the CUDA selection needs x, W_enc and b_enc in one 16-bit dtype")
    tc, fc, (bt, bf, bf0, cp, warps) = gemm_config(T, d, F, k, _shifted_bytes(x, W_enc, b_dec), x.device, budget,
                                                   2 if p16 else 4, select)
    if chunks is not None:
        tc, fc = chunks
    if select == "cuda":
        _encode_gemm_cuda(x, W_enc, b_enc, b_dec, k, values, indices, tc, fc, kw)
        return
    bf, bf0 = min(bf, triton.next_power_of_2(fc)), max(kw, min(bf0, triton.next_power_of_2(fc)))
    rnd = rnd_code(values.dtype)
    pre_code = -1 if p16 else rnd  # what _chunk_tile does to the chunk's entries
    shift = CONSTANT_LOW_BITS[rnd]
    bt_first = bt if interpreting() else 1  # the first chunk's programs: one row over the whole chunk
    dev = x.device
    P = torch.empty((tc * fc,), device=dev, dtype=x.dtype if p16 else torch.float32)
    run = torch.empty((tc, kw), device=dev, dtype=torch.int64)
    pend = torch.empty((tc, cp), device=dev, dtype=torch.int64)
    cnt = torch.empty((tc,), device=dev, dtype=torch.int32)
    sort_net = not interpreting()
    repeats = {}  # (FIRST, LAST, P's row stride) -> the compiled launch repeated (None: generic only)
    for p, v, i, f0, f1 in _chunks(x, W_enc, b_enc if p16 else None, b_dec, values, indices, P, tc, fc):
        key = (f0 == 0, f1 == F, f1 - f0)
        rows = p.shape[0]
        args = (p, b_enc, run, pend, cnt, v, i, rows, f1 - f0, f0, k, f1 - f0, v.stride(0), i.stride(0),
                key[0], key[1], sort_net, pre_code, shift, bt_first if key[0] else bt, bf, bf0, kw, cp)
        grid = (triton.cdiv(rows, args[-5]),)
        r = repeats.get(key)
        if r is None or not r(grid, args):
            compiled = _gemm_select_kernel[grid](*args, num_warps=warps)
            repeats[key] = r or Repeat.make(compiled, dev)


def _chunks(x, W_enc, bias, b_dec, values, indices, P, tc, fc):
    """The GEMM path's chunks in order (row blocks, then features): the product of each written
    into P (with ``bias`` when given), yielded as (chunk [rows, cols], values and indices of
    those rows, f0, f1)."""
    T, F = x.shape[0], W_enc.shape[1]
    for t0 in range(0, T, tc):
        t1 = min(T, t0 + tc)
        xs = _shifted(x[t0:t1], W_enc, b_dec)
        for f0 in range(0, F, fc):
            f1 = min(F, f0 + fc)
            p = P[:(t1 - t0) * (f1 - f0)].view(t1 - t0, f1 - f0)
            _product(xs, W_enc[:, f0:f1], None if bias is None else bias[f0:f1], p)
            yield p, values[t0:t1], indices[t0:t1], f0, f1
        del xs  # before the next block's x - b_dec is made: one at a time in memory


def _encode_gemm_cuda(x, W_enc, b_enc, b_dec, k, values, indices, tc, fc, kw):
    """encode_gemm with the CUDA selection: per block of rows one call that runs, in C++, each
    feature chunk's cuBLAS product (16-bit, with its bias) and selection launch; the lists
    ``run`` are the only other buffer."""
    chunks = torch.ops.steerkit_cuda.sae_encode_topk_chunks
    T = x.shape[0]
    P = torch.empty((tc * fc,), device=x.device, dtype=x.dtype)
    run = torch.empty((tc, kw), device=x.device, dtype=torch.int64)
    for t0 in range(0, T, tc):
        t1 = min(T, t0 + tc)
        chunks(_shifted(x[t0:t1], W_enc, b_dec), W_enc, b_enc, P, run, values[t0:t1], indices[t0:t1], k, fc)


DEFAULT_PATH = "candidates"  # for SMALL_T < T < GEMM_MIN_T: see the module docstring
SMALL_T = 64  # at decode sizes the running lists: two launches, no host sync, exact under capture


def default_path(T: int) -> str:
    return "running" if T <= SMALL_T else DEFAULT_PATH


def topk_path(x, W_enc) -> str:
    """TopK encode's default path for these inputs: the running lists at decode sizes, the GEMM
    path from GEMM_MIN_T rows (where it computes what the fused kernels do), else candidates."""
    T = x.shape[0]
    if T >= GEMM_MIN_T and gemm_ok(x, W_enc):
        return "gemm"
    return default_path(T)


def sae_encode_topk(x, W_enc, b_enc, b_dec, k, values, indices, slices=None, capacity=None, chunk=None,
                    tiles=None, path=None, chunks=None, select="triton"):
    """x [T, d] (unit column stride); W_enc [d, F] (any strides); b_enc [F], b_dec [d] or None
    (contiguous); writes values [T, k] and indices [T, k] int64 (unit column stride).
    ``slices``: use the exact running-list kernels with that many F slices (tests);
    ``capacity`` / ``chunk``: candidate slots per row / rows per chunk (tests); ``tiles``:
    (BT, BF, BK, GROUP, num_warps, num_stages, ATOMIC_APPEND[, TMA]) of the fused matmul (benchmark
    sweeps); any of these three selects the candidate path. ``chunks``: (rows, features) of the
    GEMM path's chunks (tests), which it selects. ``path``: "running", "candidates" or "gemm"
    (default: ``topk_path``). ``select``: the GEMM path's selection, "triton" or "cuda"
    (csrc/sae_encode_topk.cu; the caller loads the extension)."""
    if path is None:
        if (capacity, chunk, tiles) != (None, None, None):
            path = "candidates"
        elif chunks is not None:
            path = "gemm"
        else:
            path = topk_path(x, W_enc)
    if slices is not None or path == "running":
        encode_select(x, W_enc, b_enc, b_dec, None, k, values, indices, slices=slices)
    elif path == "gemm":
        encode_gemm(x, W_enc, b_enc, b_dec, k, values, indices, chunks=chunks, select=select)
    else:
        encode_candidates(x, W_enc, b_enc, b_dec, None, k, values, indices, capacity=capacity, chunk=chunk,
                          tiles=tiles)
