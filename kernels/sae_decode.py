"""sae_decode: sparse SAE decode by gathering the active decoder rows.

    out[t] = sum_j values[t, j] * W_dec[indices[t, j]] + b_dec

Grid [T, d blocks]: a program loads its row's indices and values BJ at a time and gathers a
[BJ, BD] tile of decoder rows in one go (many independent loads in flight), accumulating in
fp32. Indices outside [0, F) (e.g. the -1 padding of JumpReLU encode) are skipped, never read.
Floor ("gather floor", no reuse): read T*k*d decoder elements + T*k values and indices, write
T*d outputs, over the copy bandwidth.
"""
import triton
import triton.language as tl

from ._launch import interpreting


@triton.jit
def _decode_kernel(val_ptr, idx_ptr, w_ptr, b_ptr, out_ptr, k, d, F, stride_vt, stride_it, stride_wf,
                   stride_ot, HAS_B: tl.constexpr, BJ: tl.constexpr, BD: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BD + tl.arange(0, BD)
    col_ok = cols < d
    acc = tl.zeros([BD], tl.float32)
    for j0 in range(0, k, BJ):
        js = j0 + tl.arange(0, BJ)
        j_ok = js < k
        idx = tl.load(idx_ptr + t * stride_it + js, mask=j_ok, other=-1).to(tl.int64)
        v = tl.load(val_ptr + t * stride_vt + js, mask=j_ok, other=0.0).to(tl.float32)
        ok = (idx >= 0) & (idx < F)
        rows = tl.load(w_ptr + tl.where(ok, idx, 0)[:, None] * stride_wf + cols[None, :],
                       mask=ok[:, None] & col_ok[None, :], other=0.0).to(tl.float32)
        acc += tl.sum(rows * tl.where(ok, v, 0.0)[:, None], axis=0)
    if HAS_B:
        acc += tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    tl.store(out_ptr + t * stride_ot + cols, acc.to(out_ptr.dtype.element_ty), mask=col_ok)


def sae_decode(values, indices, W_dec, b_dec, out):
    """values [T, k] float, indices [T, k] int32/int64 (unit column stride); W_dec [F, d] with
    unit column stride; b_dec [d] contiguous or None; out [T, d] (unit column stride)."""
    T, k = indices.shape
    F, d = W_dec.shape
    if T == 0:
        return
    if interpreting():  # few, large programs
        bd, bj, warps = triton.next_power_of_2(d), max(2, min(64, triton.next_power_of_2(k))), 4
    else:  # 256 columns (512 B of bf16 per gathered row) x up to 32 rows in flight per program
        bd, bj, warps = min(256, triton.next_power_of_2(d)), max(2, min(32, triton.next_power_of_2(k))), 4
    _decode_kernel[(T, triton.cdiv(d, bd))](
        values, indices, W_dec, b_dec if b_dec is not None else W_dec, out, k, d, F,
        values.stride(0), indices.stride(0), W_dec.stride(0), out.stride(0),
        HAS_B=b_dec is not None, BJ=bj, BD=bd, num_warps=warps)
