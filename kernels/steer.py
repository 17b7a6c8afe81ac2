"""steer: the fused per-row op. Row t applies configuration i = config[t] of a SteeringTable:

    y = scale[i] * (dyn_w[i] . x + dyn_b[i] if dynamic else 1) * x
    for k < n_dirs[i]:  y = y - (y . dirs[i, k] - dir_val[i, k]) * dirs[i, k]
    if vector:          y = y + strength[i] * vec[i]

i == 0 and i outside [0, N) leave the row untouched (in place: never written, and not read at
large T). A program walks ROWS rows one at a time with the whole row in registers; per row the
configuration decides, with scalar branches, which stages run, so a vector-only configuration
does no reduction and the direction loop runs n_dirs[i] times, not R.
Floor: read + write T*d elements of x (table rows are few and hot: L1/L2).
"""
from typing import Optional

import triton
import triton.language as tl

from ._launch import Prepared, row_loop_config, skip_untouched_reads

FLAG_DYNAMIC = tl.constexpr(1)
FLAG_VECTOR = tl.constexpr(2)


@triton.jit
def _steer_kernel(x_ptr, out_ptr, cfg_ptr, scale_ptr, flags_ptr, dyn_w_ptr, dyn_b_ptr, dirs_ptr,
                  dir_val_ptr, n_dirs_ptr, vec_ptr, strength_ptr, T, d, N, R, stride_x, stride_o,
                  IN_PLACE: tl.constexpr, SKIP_READ: tl.constexpr, ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    cols = tl.arange(0, BLOCK_D)
    col_ok = cols < d
    for j in range(ROWS):
        row = tl.program_id(0) * ROWS + j
        if row < T:
            xp = x_ptr + row.to(tl.int64) * stride_x + cols
            op = out_ptr + row.to(tl.int64) * stride_o + cols
            if not SKIP_READ:  # decode sizes: issue the row load before the config arrives
                x_raw = tl.load(xp, mask=col_ok, other=0.0)
            cfg = tl.load(cfg_ptr + row)
            if (cfg > 0) & (cfg < N):
                c = cfg.to(tl.int64)  # in range: table reads stay in bounds
                if SKIP_READ:
                    x_raw = tl.load(xp, mask=col_ok, other=0.0)
                x = x_raw.to(tl.float32)
                flags = tl.load(flags_ptr + c)
                g = tl.load(scale_ptr + c).to(tl.float32)
                if (flags & FLAG_DYNAMIC) != 0:
                    w = tl.load(dyn_w_ptr + c * d + cols, mask=col_ok, other=0.0).to(tl.float32)
                    g = g * (tl.sum(w * x, axis=0) + tl.load(dyn_b_ptr + c).to(tl.float32))
                y = g * x
                nd = tl.minimum(tl.load(n_dirs_ptr + c), R)
                for k in range(nd):
                    u = tl.load(dirs_ptr + (c * R + k) * d + cols, mask=col_ok, other=0.0).to(tl.float32)
                    coef = tl.sum(y * u, axis=0) - tl.load(dir_val_ptr + c * R + k).to(tl.float32)
                    y = y - coef * u
                if (flags & FLAG_VECTOR) != 0:
                    v = tl.load(vec_ptr + c * d + cols, mask=col_ok, other=0.0).to(tl.float32)
                    y = y + tl.load(strength_ptr + c).to(tl.float32) * v
                tl.store(op, y.to(out_ptr.dtype.element_ty), mask=col_ok)
            elif not IN_PLACE:  # untouched row of an out-of-place call: copy its bits
                if SKIP_READ:
                    x_raw = tl.load(xp, mask=col_ok, other=0.0)
                tl.store(op, x_raw, mask=col_ok)


def _launch(x, out, config, scale, flags, dyn_w, dyn_b, dirs, dir_val, n_dirs, vec, strength):
    """(grid, arguments in parameter order with the constexprs, num_warps)."""
    T, d = x.shape
    in_place = x.data_ptr() == out.data_ptr()
    rows, bd, warps = row_loop_config(T, d)
    args = (x, out, config, scale, flags, dyn_w, dyn_b, dirs, dir_val, n_dirs, vec, strength,
            T, d, scale.shape[0], dirs.shape[1], x.stride(0), out.stride(0),
            in_place, skip_untouched_reads(T, in_place), rows, bd)  # IN_PLACE, SKIP_READ, ROWS, BLOCK_D
    return (triton.cdiv(T, rows),), args, warps


def steer(x, out, config, scale, flags, dyn_w, dyn_b, dirs, dir_val, n_dirs, vec, strength):
    """x, out: [T, d]; config: [T] int32; the table tensors as in steerkit.ops.reference.steer
    (contiguous). Returns Triton's compiled kernel (None for empty x)."""
    if x.shape[0] == 0 or x.shape[1] == 0:
        return None
    grid, args, warps = _launch(x, out, config, scale, flags, dyn_w, dyn_b, dirs, dir_val, n_dirs, vec, strength)
    return _steer_kernel[grid](*args, num_warps=warps)


def prepare_steer(x, config, *table) -> Optional[Prepared]:
    """Run steer in place on x ([T, d], contiguous) and return a launch of the same kernel prepared
    for later in-place calls on rows shaped like x with the same config and table tensors (see
    ``_launch.Prepared``), or None where there is none."""
    if x.shape[0] == 0 or x.shape[1] == 0:
        return None
    grid, args, warps = _launch(x, x, config, *table)
    return Prepared.make(_steer_kernel[grid](*args, num_warps=warps), grid, args)
