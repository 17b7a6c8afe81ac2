"""project_out: for each direction u_k (normalised here), y = y - (y . u_k - value_k) * u_k.

Whole rows live in registers: one read and one write of each row, r dot products in between.
Floor: read + write T*d elements; u ([r, d]) stays in L2/L1. The unit directions are computed
once per program (no allocation, no separate normalisation launch).
"""
import triton
import triton.language as tl

from ._launch import row_config


@triton.jit
def _project_out_kernel(x_ptr, out_ptr, u_ptr, val_ptr, val0, T, d, r, stride_x, stride_o, stride_u,
                        HAS_VAL: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    cols = tl.arange(0, BLOCK_D)
    col_ok = cols < d
    mask = (rows < T)[:, None] & col_ok[None, :]
    r64 = rows.to(tl.int64)
    y = tl.load(x_ptr + r64[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    for k in range(r):
        u = tl.load(u_ptr + k * stride_u + cols, mask=col_ok, other=0.0).to(tl.float32)
        u = u / tl.sqrt(tl.sum(u * u, axis=0))
        if HAS_VAL:
            val = tl.load(val_ptr + k).to(tl.float32)
        else:
            val = val0
        coef = tl.sum(y * u[None, :], axis=1) - val
        y = y - coef[:, None] * u[None, :]
    tl.store(out_ptr + r64[:, None] * stride_o + cols[None, :], y.to(out_ptr.dtype.element_ty), mask=mask)


def project_out(x, out, u, value, value0: float):
    """x, out: [T, d]; u: [r, d] (stride(1) == 1, not necessarily unit); value: [r] or None."""
    T, d = x.shape
    if T == 0 or d == 0:
        return
    bt, bd, warps = row_config(T, d)
    _project_out_kernel[(triton.cdiv(T, bt),)](
        x, out, u, x if value is None else value, float(value0), T, d, u.shape[0],
        x.stride(0), out.stride(0), u.stride(0),
        HAS_VAL=value is not None, BLOCK_T=bt, BLOCK_D=bd, num_warps=warps)
