"""patch: out[t] = (1 - w) * x[t] + w * src[index[t]] for 0 <= index[t] < S, else x[t].

Floor: read x, read src rows, write out for the touched rows (src rows are not reused, so they
count: 3 * itemsize * d bytes per touched row). In place, untouched rows are never written (nor
read, at large T).
"""
import triton
import triton.language as tl

from ._launch import elementwise_config, skip_untouched_reads


@triton.jit
def _patch_kernel(x_ptr, out_ptr, src_ptr, idx_ptr, w_ptr, w0, T, d, S,
                  stride_x, stride_o, stride_s,
                  HAS_W: tl.constexpr, IN_PLACE: tl.constexpr, SKIP_READ: tl.constexpr,
                  BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    row_ok = rows < T
    col_ok = cols < d
    idx = tl.load(idx_ptr + rows, mask=row_ok, other=-1)
    active = row_ok & (idx >= 0) & (idx < S)
    safe = tl.where(active, idx, 0).to(tl.int64)
    act2 = active[:, None] & col_ok[None, :]
    all2 = row_ok[:, None] & col_ok[None, :]
    load_mask = act2 if SKIP_READ else all2
    store_mask = act2 if IN_PLACE else all2
    r64 = rows.to(tl.int64)
    x = tl.load(x_ptr + r64[:, None] * stride_x + cols[None, :], mask=load_mask, other=0.0).to(tl.float32)
    s = tl.load(src_ptr + safe[:, None] * stride_s + cols[None, :], mask=act2, other=0.0).to(tl.float32)
    if HAS_W:
        w = tl.load(w_ptr + rows, mask=active, other=0.0).to(tl.float32)
    else:
        w = tl.zeros([BLOCK_T], dtype=tl.float32) + w0
    w2 = w[:, None]
    y = tl.where(act2, (1.0 - w2) * x + w2 * s, x)
    tl.store(out_ptr + r64[:, None] * stride_o + cols[None, :], y.to(out_ptr.dtype.element_ty), mask=store_mask)


def patch(x, out, src, index, weight, weight0: float):
    """x, out: [T, d]; src: [S, d] (stride(1) == 1); index: [T] int32/int64; weight: [T] or None."""
    T, d = x.shape
    if T == 0 or d == 0:
        return
    in_place = x.data_ptr() == out.data_ptr()
    bt, bd, warps = elementwise_config(T, d)
    grid = (triton.cdiv(T, bt), triton.cdiv(d, bd))
    _patch_kernel[grid](x, out, src, index, x if weight is None else weight, float(weight0),
                        T, d, src.shape[0], x.stride(0), out.stride(0), src.stride(0),
                        HAS_W=weight is not None, IN_PLACE=in_place, SKIP_READ=skip_untouched_reads(T, in_place),
                        BLOCK_T=bt, BLOCK_D=bd, num_warps=warps)
