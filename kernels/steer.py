"""steer: the fused per-row op. Row t applies configuration i = config[t] of a SteeringTable:

    y = scale[i] * (dyn_w[i] . x + dyn_b[i] if dynamic else 1) * x
    for k < n_dirs[i]:  y = y - (y . dirs[i, k] - dir_val[i, k]) * dirs[i, k]
    if vector:          y = y + strength[i] * vec[i]

i == 0 and i outside [0, N) leave the row untouched (in place: never written, and not read at large T).
Whole rows in registers: one read and one write per row whatever the configuration. Table rows
are gathered per token row; they are few and hot, so they come from L2.
Floor: read + write T*d elements of x.
"""
import triton
import triton.language as tl

from ._launch import row_config, skip_untouched_reads

FLAG_DYNAMIC = tl.constexpr(1)
FLAG_VECTOR = tl.constexpr(2)


@triton.jit
def _steer_kernel(x_ptr, out_ptr, cfg_ptr, scale_ptr, flags_ptr, dyn_w_ptr, dyn_b_ptr, dirs_ptr,
                  dir_val_ptr, n_dirs_ptr, vec_ptr, strength_ptr, T, d, N, R, stride_x, stride_o,
                  IN_PLACE: tl.constexpr, SKIP_READ: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    cols = tl.arange(0, BLOCK_D)
    row_ok = rows < T
    col_ok = cols < d
    cfg = tl.load(cfg_ptr + rows, mask=row_ok, other=0)
    active = row_ok & (cfg > 0) & (cfg < N)
    c = tl.where(active, cfg, 0).to(tl.int64)  # safe table row, never out of bounds
    act2 = active[:, None] & col_ok[None, :]
    all2 = row_ok[:, None] & col_ok[None, :]
    load_mask = act2 if SKIP_READ else all2
    store_mask = act2 if IN_PLACE else all2
    r64 = rows.to(tl.int64)
    x = tl.load(x_ptr + r64[:, None] * stride_x + cols[None, :], mask=load_mask, other=0.0).to(tl.float32)

    flags = tl.load(flags_ptr + c, mask=active, other=0)
    sc = tl.load(scale_ptr + c, mask=active, other=1.0).to(tl.float32)
    dyn = active & ((flags & FLAG_DYNAMIC) != 0)
    w = tl.load(dyn_w_ptr + c[:, None] * d + cols[None, :], mask=dyn[:, None] & col_ok[None, :],
                other=0.0).to(tl.float32)
    b = tl.load(dyn_b_ptr + c, mask=dyn, other=0.0).to(tl.float32)
    g = tl.where(dyn, tl.sum(w * x, axis=1) + b, 1.0)
    y = (sc * g)[:, None] * x

    nd = tl.load(n_dirs_ptr + c, mask=active, other=0)
    for k in range(R):
        on = active & (nd > k)  # inactive slots load zeros: y - (0 - 0) * 0 == y exactly
        u = tl.load(dirs_ptr + (c * R + k)[:, None] * d + cols[None, :],
                    mask=on[:, None] & col_ok[None, :], other=0.0).to(tl.float32)
        val = tl.load(dir_val_ptr + c * R + k, mask=on, other=0.0).to(tl.float32)
        coef = tl.sum(y * u, axis=1) - val
        y = y - coef[:, None] * u

    has_v = active & ((flags & FLAG_VECTOR) != 0)
    v = tl.load(vec_ptr + c[:, None] * d + cols[None, :], mask=has_v[:, None] & col_ok[None, :],
                other=0.0).to(tl.float32)
    a = tl.load(strength_ptr + c, mask=has_v, other=0.0).to(tl.float32)
    y = y + a[:, None] * v

    y = tl.where(act2, y, x)
    tl.store(out_ptr + r64[:, None] * stride_o + cols[None, :], y.to(out_ptr.dtype.element_ty), mask=store_mask)


def steer(x, out, config, scale, flags, dyn_w, dyn_b, dirs, dir_val, n_dirs, vec, strength):
    """x, out: [T, d]; config: [T] int32; the table tensors as in steerkit.ops.reference.steer
    (contiguous)."""
    T, d = x.shape
    if T == 0 or d == 0:
        return
    in_place = x.data_ptr() == out.data_ptr()
    bt, bd, warps = row_config(T, d)
    _steer_kernel[(triton.cdiv(T, bt),)](
        x, out, config, scale, flags, dyn_w, dyn_b, dirs, dir_val, n_dirs, vec, strength,
        T, d, scale.shape[0], dirs.shape[1], x.stride(0), out.stride(0),
        IN_PLACE=in_place, SKIP_READ=skip_untouched_reads(T, in_place), BLOCK_T=bt, BLOCK_D=bd, num_warps=warps)
