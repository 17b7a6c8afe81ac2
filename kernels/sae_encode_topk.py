"""sae_encode_topk: TopK SAE encode without ever writing the [T, F] pre-activation matrix.

    pre = (x - b_dec) @ W_enc + b_enc;  keep the k largest of each row (largest first, ties by
    lower index), then ReLU.

Pass 1 (``_encode_kernel``, grid [row blocks, F slices]): a program owns BT rows and one slice
of F. Tile by tile (BF features) it computes the pre-activations with tl.dot (fp32 accumulate),
packs each into a 64-bit key (value bits made order-preserving in the high word, ``2^32 - 1 -
index`` in the low word: one signed compare orders by value, then by lower index), and merges
the tile into a running top-KW list per row: ``tl.topk`` of the tile (descending), reversed,
elementwise max with the running list (a bitonic sequence holding the KW largest of both), then
one ``tl.bitonic_merge``. A tile with no key above the smallest running key of every row is
skipped. Each slice writes its KW keys per row to a small buffer ``[S, T, KW]`` int64.
Pass 2 (``_merge_kernel``) merges the S lists per row the same way and unpacks values and
indices. The JumpReLU encode (kernels/sae_encode_jumprelu.py) is the same kernel with keys of
inactive features masked out and active features counted.

Floor: 2*T*d*F FLOPs (bf16 tensor cores, ~790 TFLOP/s on H100) at prefill; reading W_enc
(d*F elements) at decode sizes. Extra memory: the key buffer, S*T*KW*8 bytes, with S chosen so
that it stays under 5% of the bf16 [T, F] matrix (or 4 MiB when that is larger).
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
    """Shared launcher: TopK (threshold None) or JumpReLU selection into the given outputs."""
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


def sae_encode_topk(x, W_enc, b_enc, b_dec, k, values, indices, slices=None):
    """x [T, d] (unit column stride); W_enc [d, F] (any strides); b_enc [F], b_dec [d] or None
    (contiguous); writes values [T, k] and indices [T, k] int64 (unit column stride)."""
    encode_select(x, W_enc, b_enc, b_dec, None, k, values, indices, slices=slices)
