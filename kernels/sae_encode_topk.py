"""sae_encode_topk: TopK SAE encode without ever writing the [T, F] pre-activation matrix.

    pre = (x - b_dec) @ W_enc + b_enc;  keep the k largest of each row (largest first, ties by
    lower index), then ReLU.

Two paths, both exact:
- Default: the running-list kernels below (graph-safe, no host sync). Measured on the H100 at
  d = 2304, T = 4096 / 16384: 9-12x the bare matrix product (benchmarks/results/sae-encode-topk-
  *-194030.jsonl): the per-tile merge dominates.
- ``path="candidates"`` (encode_candidates, described before it below): a per-row threshold from a
  sample of the features, one fused tiled matmul whose epilogue appends only the entries above
  the threshold to a small per-row buffer, an exact top-k of those candidates, and an exact
  recomputation of the rare rows where the threshold was too high or the buffer overflowed (one
  host sync per eager call; under CUDA-graph capture those rows are only counted). Designed so
  the selection costs a small fraction of the matmul, but its Triton matmul measured 13-17x the
  bare product at d = 4096, F = 65536 (sae-encode-topk-*-200543.jsonl): not the default until
  its matmul is fixed.

Running-list kernels (the default, and the candidate path's fallback): ``_encode_kernel``
(grid [row blocks, F slices]) computes tiles with tl.dot, packs each pre-activation into a 64-bit
key (value bits made order-preserving in the high word, ``2^32 - 1 - index`` in the low word: one
signed compare orders by value, then by lower index), and merges each tile into a running
top-KW list per row (tl.topk of the tile, reversed, elementwise max with the running list, one
bitonic merge), skipping tiles with nothing above the current KW-th key; ``_merge_kernel``
merges the slices' lists. The JumpReLU encode (kernels/sae_encode_jumprelu.py) uses both paths
with keys of inactive features masked out and active features counted.

Floor: 2*T*d*F FLOPs (bf16 tensor cores, ~800 TFLOP/s measured on H100) at prefill: T = 4096,
d = 4096, F = 65536: 2.2 TFLOP -> ~2.7 ms; reading W_enc (d*F elements) at decode sizes.
Extra memory: candidates (C*8 bytes per row, C = 1856 at k = 64) and the sample's [rows, F/16]
pre-activations, per chunk of rows sized to stay under 5% of the bf16 [T, F] matrix: F = 65536
takes 4 chunks at any T >= 4096, F = 16384 takes 11 (each chunk adds a few small launches, so
small F pays more overhead).
"""
import torch
import triton
import triton.language as tl

from ._launch import interpreting

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
                   BT: tl.constexpr, BF: tl.constexpr, BK: tl.constexpr, KW: tl.constexpr):
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
        pre = acc + tl.load(b_enc_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
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
        HAS_B_DEC=b_dec is not None, JUMP=jump, IEEE=ieee, SORT_NET=not interpreting(), BT=bt, BF=bf, BK=bk, KW=kw, num_warps=warps)
    mbt = 16 if kw >= 128 else 32
    _merge_kernel[(triton.cdiv(T, mbt),)](
        keys, cnt, values, indices, counts if jump else indices, overflow if jump else indices,
        T, S, k, values.stride(0), indices.stride(0), JUMP=jump, SORT_NET=not interpreting(), BT=mbt, KW=kw, num_warps=4)


# ---------------------------------------------------------------------------------------------
# Candidate path (the default): threshold, fused matmul + append, exact selection, fallback.
#
# 1. theta[t]: the exact k-th largest pre-activation of row t over a sample of the features (the
#    first F/16 columns; plain matmul + torch.topk). JumpReLU: theta is the per-feature threshold.
# 2. _candidate_kernel: a plain tiled matmul (grouped tile order for L2 reuse of W_enc, tl.dot in
#    the input dtype with fp32 accumulate); its epilogue keeps the tile entries >= theta[t]
#    (JumpReLU: > threshold[f]) and appends them (fp32 value, int32 index) to row t's buffer of
#    C slots: one atomic add per row and tile reserves the slots, a cumsum ranks them.
# 3. _select_kernel: the exact top-k of each row's candidates, packed into keys and merged like
#    the running lists above (over only the row's count of candidates), then unpacked.
# 4. Correctness: if at least k keys are >= theta, the k-th largest value is >= theta, so all of
#    the top k are candidates. Rows with fewer than k candidates (theta from a sample computed
#    with other rounding) or more than C (buffer full; JumpReLU: more active features than C) are
#    recomputed exactly by encode_select. In eager calls this syncs once to find them; under
#    CUDA-graph capture it cannot, so those rows are only counted (STATS["fallback_rows"]).
# Floor: 2*T*d*F FLOPs; the sample adds F/16 of that plus a small top-k. Extra memory: the
# candidate keys (C*8 bytes per row) and the sample for a chunk of rows, with chunks of rows
# sized to stay under 5% of the bf16 [T, F] matrix.
# ---------------------------------------------------------------------------------------------

SAMPLE_FRACTION = 16  # theta from the first F / 16 features
STATS = {"fallback_rows": 0, "calls": 0}  # eager: host ints; under capture: rows not recomputed unknown


@triton.jit
def _candidate_kernel(x_ptr, w_ptr, b_enc_ptr, b_dec_ptr, theta_ptr, cand_v_ptr, cand_i_ptr, cnt_ptr,
                      T, d, F, C, stride_xt, stride_wk, stride_wf,
                      HAS_B_DEC: tl.constexpr, JUMP: tl.constexpr, IEEE: tl.constexpr, EVEN_K: tl.constexpr,
                      BT: tl.constexpr, BF: tl.constexpr, BK: tl.constexpr, GROUP: tl.constexpr):
    # grouped order: GROUP consecutive programs share a W_enc column tile (hot in L2)
    pid = tl.program_id(0)
    n_t = tl.cdiv(T, BT)
    n_f = tl.cdiv(F, BF)
    per_group = GROUP * n_f
    first = (pid // per_group) * GROUP
    size = tl.minimum(n_t - first, GROUP)
    pid_t = first + (pid % per_group) % size
    pid_f = (pid % per_group) // size
    rows = pid_t * BT + tl.arange(0, BT)
    cols = pid_f * BF + tl.arange(0, BF)
    row_ok = rows < T
    col_ok = cols < F
    kk = tl.arange(0, BK)
    # row / column indices clamped in bounds: loads need a mask only along d (none when BK | d)
    xp = x_ptr + tl.where(row_ok, rows, 0).to(tl.int64)[:, None] * stride_xt + kk[None, :]
    wp = w_ptr + tl.where(col_ok, cols, 0).to(tl.int64)[None, :] * stride_wf + kk.to(tl.int64)[:, None] * stride_wk
    acc = tl.zeros([BT, BF], tl.float32)
    for k0 in range(0, d, BK):
        ks = k0 + kk
        k_ok = ks < d
        if EVEN_K:
            xt = tl.load(xp)
            wt = tl.load(wp)
        else:
            xt = tl.load(xp, mask=k_ok[None, :], other=0.0)
            wt = tl.load(wp, mask=k_ok[:, None], other=0.0)
        xp += BK
        wp += BK * stride_wk
        if HAS_B_DEC:
            bd = tl.load(b_dec_ptr + ks, mask=k_ok, other=0.0)
            xt = xt.to(tl.float32) - bd.to(tl.float32)[None, :]
        if IEEE:
            acc = tl.dot(xt.to(tl.float32), wt.to(tl.float32), acc, input_precision="ieee")
        else:
            acc = tl.dot(xt.to(wt.dtype), wt, acc)
    pre = acc + tl.load(b_enc_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    if JUMP:
        thr = tl.load(theta_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        keep = pre > thr[None, :]
    else:
        theta = tl.load(theta_ptr + rows, mask=row_ok, other=0.0)
        keep = pre >= theta[:, None]
    keep = keep & row_ok[:, None] & col_ok[None, :]
    n_row = tl.sum(keep.to(tl.int32), axis=1)
    if tl.max(n_row, axis=0) > 0:  # most tiles of a row hold a few candidates; some none
        base = tl.atomic_add(cnt_ptr + rows, n_row, mask=n_row > 0, sem="relaxed")
        pos = base[:, None] + tl.cumsum(keep.to(tl.int32), axis=1) - 1
        ok = keep & (pos < C)
        at = rows.to(tl.int64)[:, None] * C + pos
        tl.store(cand_v_ptr + at, pre, mask=ok)  # value and index apart: no 64-bit tile in registers
        tl.store(cand_i_ptr + at, cols[None, :], mask=ok)


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


def candidate_config(T: int, d: int, F: int, k: int, jump: bool, capacity=None, chunk=None, fp32=False):
    """(n_sample, C, rows per chunk, (BT, BF, BK, GROUP, warps, stages)) of the candidate path.

    C: the expected number of candidates E = k * F / n_sample plus 6 standard deviations (the
    count's relative spread is about 1 / sqrt(k)): E * (1 + 6 / sqrt(k)), a multiple of 64
    (k = 64: 1792); JumpReLU: 2 x capacity, at least 256. Chunks of rows (multiples of 128) keep
    C*8 bytes per row plus the sample under 5% of the bf16 [T, F] matrix.
    GPU tiles: 128 x 128 x 64, 8 warps, 4 stages for 16-bit inputs (H100: 128 KiB of shared
    memory for the pipeline); 64 x 64 tiles for T <= 64; fp32 inputs: BK = 32, 3 stages.
    Interpreter: one tile where possible.
    """
    n_sample = F if jump else min(F, max(4 * k, F // SAMPLE_FRACTION))
    if capacity is None:
        if jump:
            capacity = max(256, triton.next_power_of_2(2 * k))
        else:
            expected = k * F / n_sample
            capacity = min(triton.cdiv(F, 64) * 64, triton.cdiv(int(expected * (1 + 6 / k ** 0.5)) + 1, 64) * 64)
    per_row = capacity * 8 + 8 + (0 if jump else n_sample * 2)
    if chunk is None:
        budget = MEMORY_FRACTION * 2 * T * F
        chunk = T if per_row * T <= budget else max(128, int(budget // per_row) // 128 * 128)
    chunk = max(1, min(chunk, T))
    if interpreting():
        tiles = (max(16, min(64, triton.next_power_of_2(T))), max(16, min(256, triton.next_power_of_2(F))),
                 max(16, min(256, triton.next_power_of_2(d))), 8, 4, 1)
    else:
        small = T <= 64
        bk, stages = (32, 3) if fp32 else (64, 4)
        tiles = (64, 64, bk, 8, 4, stages) if small else (128, 128, bk, 8, 8, stages)
    return n_sample, capacity, chunk, tiles


def _select(x, W_enc, b_enc, b_dec, theta, k, jump, C, tiles, values, indices, counts, overflow):
    """Steps 2-3 for the rows of x (one chunk); returns the per-row candidate counts."""
    T, d = x.shape
    F = W_enc.shape[1]
    bt, bf, bk, group, warps, stages = tiles
    cand_v = torch.empty((T, C), device=x.device, dtype=torch.float32)
    cand_i = torch.empty((T, C), device=x.device, dtype=torch.int32)
    cnt = torch.zeros((T,), device=x.device, dtype=torch.int32)
    ieee = torch.float32 in (x.dtype, W_enc.dtype)
    grid = (triton.cdiv(T, bt) * triton.cdiv(F, bf),)
    _candidate_kernel[grid](
        x, W_enc, b_enc, b_dec if b_dec is not None else b_enc, theta, cand_v, cand_i, cnt, T, d, F, C,
        x.stride(0), W_enc.stride(0), W_enc.stride(1), HAS_B_DEC=b_dec is not None, JUMP=jump, IEEE=ieee,
        EVEN_K=d % bk == 0, BT=bt, BF=bf, BK=bk, GROUP=group, num_warps=warps, num_stages=stages)
    kw = max(16, triton.next_power_of_2(k))
    sbt = 4 if kw >= 128 else 8
    if interpreting():
        sbt = max(1, min(32, triton.next_power_of_2(T)))
    _select_kernel[(triton.cdiv(T, sbt),)](
        cand_v, cand_i, cnt, values, indices, counts if jump else indices, overflow if jump else indices, T, C, k,
        values.stride(0), indices.stride(0), JUMP=jump, SORT_NET=not interpreting(), BT=sbt, KW=kw, num_warps=4)
    return cnt


def _theta(x, W_enc, b_enc, b_dec, k, n_sample):
    """The k-th largest pre-activation of each row over the first n_sample features (float32),
    lowered by a little more than the rounding of the sample's matmul (it rounds to W_enc's dtype
    and sums in another order than the kernel): a lower theta only adds a few candidates."""
    xs = x if b_dec is None else x - b_dec
    pre = torch.addmm(b_enc[:n_sample].to(W_enc.dtype), xs.to(W_enc.dtype), W_enc[:, :n_sample])
    v = torch.topk(pre, k, dim=1, sorted=False).values.amin(dim=1).float()
    eps = 1e-5 if pre.dtype == torch.float32 else 2.0 ** -6
    return v - (v.abs() * eps + 1e-6)


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
    n_sample, C, chunk, default_tiles = candidate_config(T, d, F, k, jump, capacity, chunk, fp32)
    tiles = tiles or default_tiles
    bad = []
    for t0 in range(0, T, chunk):
        t1 = min(T, t0 + chunk)
        xc = x[t0:t1]
        theta = threshold if jump else _theta(xc, W_enc, b_enc, b_dec, k, n_sample)
        cnt = _select(xc, W_enc, b_enc, b_dec, theta, k, jump, C, tiles, values[t0:t1], indices[t0:t1],
                      counts[t0:t1] if jump else None, overflow[t0:t1] if jump else None)
        bad.append((cnt > C) if jump else (cnt < k) | (cnt > C))
    STATS["calls"] += 1
    if _capturing(x):  # no host sync under capture: flagged rows keep the candidate result
        return
    rows = torch.cat(bad).nonzero().squeeze(1)
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


DEFAULT_PATH = "running"  # see the module docstring for the measurements behind this choice


def sae_encode_topk(x, W_enc, b_enc, b_dec, k, values, indices, slices=None, capacity=None, chunk=None,
                    tiles=None, path=None):
    """x [T, d] (unit column stride); W_enc [d, F] (any strides); b_enc [F], b_dec [d] or None
    (contiguous); writes values [T, k] and indices [T, k] int64 (unit column stride).
    ``slices``: use the exact running-list kernels with that many F slices (tests);
    ``capacity`` / ``chunk``: candidate slots per row / rows per chunk (tests); ``tiles``:
    (BT, BF, BK, GROUP, num_warps, num_stages) of the fused matmul (benchmark sweeps); any of
    these three selects the candidate path. ``path``: "running" or "candidates" (default
    DEFAULT_PATH)."""
    if path is None:
        path = "candidates" if (capacity, chunk, tiles) != (None, None, None) else DEFAULT_PATH
    if slices is not None or path == "running":
        encode_select(x, W_enc, b_enc, b_dec, None, k, values, indices, slices=slices)
    else:
        encode_candidates(x, W_enc, b_enc, b_dec, None, k, values, indices, capacity=capacity, chunk=chunk,
                          tiles=tiles)


# fused-matmul tiles the benchmark sweeps at T >= 4096 (BT, BF, BK, GROUP, num_warps, num_stages)
SWEEP = [(128, 128, 64, 8, 8, 4), (128, 256, 64, 8, 8, 3), (128, 128, 64, 8, 4, 4), (256, 128, 64, 8, 8, 3)]
