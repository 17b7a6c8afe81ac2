"""add: out[t] = x[t] + alpha[t] * v (or alpha0 * v).

Floor: read + write T*d elements; v ([d]) stays in L2/L1.
"""
import triton
import triton.language as tl

from ._launch import elementwise_config


@triton.jit
def _add_kernel(x_ptr, out_ptr, v_ptr, a_ptr, a0, T, d, stride_x, stride_o,
                HAS_A: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    row_ok = rows < T
    col_ok = cols < d
    mask = row_ok[:, None] & col_ok[None, :]
    r64 = rows.to(tl.int64)
    x = tl.load(x_ptr + r64[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    v = tl.load(v_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    if HAS_A:
        a = tl.load(a_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
    else:
        a = tl.zeros([BLOCK_T], dtype=tl.float32) + a0
    y = x + a[:, None] * v[None, :]
    tl.store(out_ptr + r64[:, None] * stride_o + cols[None, :], y.to(out_ptr.dtype.element_ty), mask=mask)


def add(x, out, v, alpha, alpha0: float):
    """x, out: [T, d]; v: [d] contiguous; alpha: [T] or None."""
    T, d = x.shape
    if T == 0 or d == 0:
        return
    bt, bd, warps = elementwise_config(T, d)
    grid = (triton.cdiv(T, bt), triton.cdiv(d, bd))
    _add_kernel[grid](x, out, v, x if alpha is None else alpha, float(alpha0), T, d,
                      x.stride(0), out.stride(0),
                      HAS_A=alpha is not None, BLOCK_T=bt, BLOCK_D=bd, num_warps=warps)
