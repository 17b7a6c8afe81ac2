"""add_gathered: out[t] = x[t] + alpha[t] * bank[index[t]] for 0 <= index[t] < B, else x[t].

Floor: read + write of the touched rows (the bank rows come from L2 when B is small). In place,
untouched rows are never written (nor read, at large T).
"""
import triton
import triton.language as tl

from ._launch import elementwise_config, skip_untouched_reads


@triton.jit
def _add_gathered_kernel(x_ptr, out_ptr, bank_ptr, idx_ptr, a_ptr, a0, T, d, B,
                         stride_x, stride_o, stride_b,
                         HAS_A: tl.constexpr, IN_PLACE: tl.constexpr, SKIP_READ: tl.constexpr,
                         BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    row_ok = rows < T
    col_ok = cols < d
    idx = tl.load(idx_ptr + rows, mask=row_ok, other=-1)
    active = row_ok & (idx >= 0) & (idx < B)
    safe = tl.where(active, idx, 0).to(tl.int64)  # never index the bank out of bounds
    act2 = active[:, None] & col_ok[None, :]
    all2 = row_ok[:, None] & col_ok[None, :]
    load_mask = act2 if SKIP_READ else all2
    store_mask = act2 if IN_PLACE else all2
    r64 = rows.to(tl.int64)
    x = tl.load(x_ptr + r64[:, None] * stride_x + cols[None, :], mask=load_mask, other=0.0).to(tl.float32)
    b = tl.load(bank_ptr + safe[:, None] * stride_b + cols[None, :], mask=act2, other=0.0).to(tl.float32)
    if HAS_A:
        a = tl.load(a_ptr + rows, mask=active, other=0.0).to(tl.float32)
    else:
        a = tl.zeros([BLOCK_T], dtype=tl.float32) + a0
    y = tl.where(act2, x + a[:, None] * b, x)
    tl.store(out_ptr + r64[:, None] * stride_o + cols[None, :], y.to(out_ptr.dtype.element_ty), mask=store_mask)


def add_gathered(x, out, bank, index, alpha, alpha0: float):
    """x, out: [T, d]; bank: [B, d] (stride(1) == 1); index: [T] int32/int64; alpha: [T] or None."""
    T, d = x.shape
    if T == 0 or d == 0:
        return
    in_place = x.data_ptr() == out.data_ptr()
    bt, bd, warps = elementwise_config(T, d)
    grid = (triton.cdiv(T, bt), triton.cdiv(d, bd))
    _add_gathered_kernel[grid](x, out, bank, index, x if alpha is None else alpha, float(alpha0),
                               T, d, bank.shape[0], x.stride(0), out.stride(0), bank.stride(0),
                               HAS_A=alpha is not None, IN_PLACE=in_place, SKIP_READ=skip_untouched_reads(T, in_place),
                               BLOCK_T=bt, BLOCK_D=bd, num_warps=warps)
