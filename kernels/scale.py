"""scale: out[t] = x[t] * s[t] (or * s0).

Floor: read + write T*d elements (2*T*d*itemsize bytes) over the copy bandwidth.
"""
import triton
import triton.language as tl

from ._launch import elementwise_config


@triton.jit
def _scale_kernel(x_ptr, out_ptr, s_ptr, s0, T, d, stride_x, stride_o,
                  HAS_S: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    row_ok = rows < T
    mask = row_ok[:, None] & (cols < d)[None, :]
    r64 = rows.to(tl.int64)
    x = tl.load(x_ptr + r64[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if HAS_S:
        f = tl.load(s_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
    else:
        f = tl.zeros([BLOCK_T], dtype=tl.float32) + s0
    y = x * f[:, None]
    tl.store(out_ptr + r64[:, None] * stride_o + cols[None, :], y.to(out_ptr.dtype.element_ty), mask=mask)


def scale(x, out, s, s0: float):
    """x, out: [T, d] (stride(1) == 1; out may be x); s: [T] or None."""
    T, d = x.shape
    if T == 0 or d == 0:
        return
    bt, bd, warps = elementwise_config(T, d)
    grid = (triton.cdiv(T, bt), triton.cdiv(d, bd))
    _scale_kernel[grid](x, out, x if s is None else s, float(s0), T, d, x.stride(0), out.stride(0),
                        HAS_S=s is not None, BLOCK_T=bt, BLOCK_D=bd, num_warps=warps)
