"""sae_decode: sparse SAE decode by gathering the active decoder rows.

    out[t] = sum_j values[t, j] * W_dec[indices[t, j]] + b_dec

Grid [token blocks, d slices]: a program owns ROWS tokens and a BD-wide slice of d. For each token
it loads BJ indices and values at a time and gathers a [BJ, BD] tile of decoder rows in one go
(BJ independent row loads in flight, 16-byte vector loads along d), accumulating in fp32. With
BJ = k (the default up to 64) a token needs one round trip: indices, then all its rows at once.
Indices outside [0, F) (e.g. the -1 padding of JumpReLU encode) are skipped, never read.
Floor ("gather floor", no reuse): read T*k*d decoder elements + T*k values and indices, write
T*d outputs, over the copy bandwidth (H100: 2.15 GB at T = 4096, d = 4096, k = 64, bf16:
~0.72 ms at 3.0 TB/s). Heavy-tailed indices hit L2 and can beat it. Measured: see decode_config.
"""
import triton
import triton.language as tl

from ._launch import interpreting


@triton.jit
def _decode_kernel(val_ptr, idx_ptr, w_ptr, b_ptr, out_ptr, T, k, d, F, stride_vt, stride_it, stride_wf,
                   stride_ot, HAS_B: tl.constexpr, ROWS: tl.constexpr, BJ: tl.constexpr, BD: tl.constexpr):
    cols = tl.program_id(1) * BD + tl.arange(0, BD)
    col_ok = cols < d
    if HAS_B:
        bias = tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    for r in range(ROWS):
        t = tl.program_id(0) * ROWS + r
        if t < T:
            t64 = t.to(tl.int64)
            acc = tl.zeros([BD], tl.float32)
            for j0 in range(0, k, BJ):
                js = j0 + tl.arange(0, BJ)
                j_ok = js < k
                idx = tl.load(idx_ptr + t64 * stride_it + js, mask=j_ok, other=-1).to(tl.int64)
                v = tl.load(val_ptr + t64 * stride_vt + js, mask=j_ok, other=0.0).to(tl.float32)
                ok = (idx >= 0) & (idx < F)
                rows = tl.load(w_ptr + tl.where(ok, idx, 0)[:, None] * stride_wf + cols[None, :],
                               mask=ok[:, None] & col_ok[None, :], other=0.0).to(tl.float32)
                acc += tl.sum(rows * tl.where(ok, v, 0.0)[:, None], axis=0)
            if HAS_B:
                acc += bias
            tl.store(out_ptr + t64 * stride_ot + cols, acc.to(out_ptr.dtype.element_ty), mask=col_ok)


def decode_config(T: int, d: int, k: int):
    """(ROWS, BJ, BD, num_warps).

    GPU, T >= 256 (bandwidth): 16 of a token's rows at a time over a 512-wide slice of d, 4 warps
    (the sweep's best on the H100 at T = 4096 / 16384, d = 4096, F = 65536, k = 64: 90-99% of
    the gather floor, 3.1-3.8x F.embedding_bag, benchmarks/results/sae-decode-*-214853.jsonl;
    BJ = 64 over 256 columns reached 49-52%). Smaller T (latency): all of a token's k rows in
    flight at once (BJ = k up to 64) over a 256-wide slice, 8 warps. Interpreter: large blocks.
    """
    if interpreting():
        return max(1, min(16, T)), max(2, min(64, triton.next_power_of_2(k))), triton.next_power_of_2(d), 4
    bj = max(2, min(64, triton.next_power_of_2(k)))
    if T >= 256:
        return 1, min(16, bj), min(512, triton.next_power_of_2(d)), 4
    bd = min(256, triton.next_power_of_2(d))
    return 1, bj, bd, 8 if bj * bd >= 8192 else 4


# configurations the benchmark sweeps at T = 4096 (ROWS, BJ, BD, num_warps)
SWEEP = [(1, 64, 256, 8), (1, 32, 256, 4), (1, 16, 512, 4), (1, 8, 1024, 8), (2, 64, 128, 4), (1, 64, 512, 16)]


def sae_decode(values, indices, W_dec, b_dec, out, cfg=None):
    """values [T, k] float, indices [T, k] int32/int64 (unit column stride); W_dec [F, d] with
    unit column stride; b_dec [d] contiguous or None; out [T, d] (unit column stride).
    ``cfg``: (ROWS, BJ, BD, num_warps) instead of decode_config's."""
    T, k = indices.shape
    F, d = W_dec.shape
    if T == 0:
        return
    rows, bj, bd, warps = cfg or decode_config(T, d, k)
    _decode_kernel[(triton.cdiv(T, rows), triton.cdiv(d, bd))](
        values, indices, W_dec, b_dec if b_dec is not None else W_dec, out, T, k, d, F,
        values.stride(0), indices.stride(0), W_dec.stride(0), out.stride(0),
        HAS_B=b_dec is not None, ROWS=rows, BJ=bj, BD=bd, num_warps=warps)
