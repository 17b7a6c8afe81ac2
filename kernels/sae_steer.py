"""sae_steer: fused SAE steering per row. Row t applies configuration c = config[t] of a
SaeSteeringTable (M feature slots per configuration; see steerkit.ops.reference_sae.sae_steer):

    for s < n_feat[c]:  pre_s = x . enc[c, s] + b_eff[c, s];  active_s = pre_s > thr[c, s]
                        f_s = pre_s if active_s else 0
                        coef_s = target - f_s  (clamp; 0 if only-active and not active_s)
                               | strength      (add)
    y = x + sum_s coef_s * dec[c, s]

All f_s are computed on the input row. c == 0 and c outside [0, N) leave the row untouched (in
place: never written; at large T not read either). Like kernels/steer.py, a program walks ROWS
rows with the whole row in registers, one read and one write per row.
Floor: read + write T*d elements of h plus, once, the encoder and decoder rows of the
configurations in use (2*M*d elements each; hot in L2 when many rows share them).
"""
import triton
import triton.language as tl

from ._launch import row_loop_config, skip_untouched_reads

KIND_CLAMP = tl.constexpr(1)
KIND_ONLY_ACTIVE = tl.constexpr(4)


@triton.jit
def _sae_steer_kernel(x_ptr, out_ptr, cfg_ptr, n_feat_ptr, kind_ptr, value_ptr, enc_ptr, b_eff_ptr, thr_ptr,
                      dec_ptr, T, d, N, M, stride_x, stride_o,
                      IN_PLACE: tl.constexpr, SKIP_READ: tl.constexpr, ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    cols = tl.arange(0, BLOCK_D)
    col_ok = cols < d
    for j in range(ROWS):
        row = tl.program_id(0) * ROWS + j
        if row < T:
            xp = x_ptr + row.to(tl.int64) * stride_x + cols
            op = out_ptr + row.to(tl.int64) * stride_o + cols
            if not SKIP_READ:
                x_raw = tl.load(xp, mask=col_ok, other=0.0)
            cfg = tl.load(cfg_ptr + row)
            if (cfg > 0) & (cfg < N):
                c = cfg.to(tl.int64)
                if SKIP_READ:
                    x_raw = tl.load(xp, mask=col_ok, other=0.0)
                x = x_raw.to(tl.float32)
                y = x
                nf = tl.minimum(tl.load(n_feat_ptr + c), M)
                for s in range(nf):
                    slot = c * M + s
                    kind = tl.load(kind_ptr + slot)
                    val = tl.load(value_ptr + slot).to(tl.float32)
                    coef = val
                    if (kind & KIND_CLAMP) != 0:
                        e = tl.load(enc_ptr + slot * d + cols, mask=col_ok, other=0.0).to(tl.float32)
                        pre = tl.sum(x * e, axis=0) + tl.load(b_eff_ptr + slot).to(tl.float32)
                        active = pre > tl.load(thr_ptr + slot).to(tl.float32)
                        skip = ((kind & KIND_ONLY_ACTIVE) != 0) & (active == 0)
                        coef = tl.where(skip, 0.0, val - tl.where(active, pre, 0.0))
                    if kind != 0:
                        dec = tl.load(dec_ptr + slot * d + cols, mask=col_ok, other=0.0).to(tl.float32)
                        y = y + coef * dec
                tl.store(op, y.to(out_ptr.dtype.element_ty), mask=col_ok)
            elif not IN_PLACE:
                if SKIP_READ:
                    x_raw = tl.load(xp, mask=col_ok, other=0.0)
                tl.store(op, x_raw, mask=col_ok)


def sae_steer(x, out, config, n_feat, kind, value, enc, b_eff, thr, dec):
    """x, out: [T, d]; config [T] int32; the SaeSteeringTable tensors (contiguous)."""
    T, d = x.shape
    if T == 0 or d == 0:
        return
    in_place = x.data_ptr() == out.data_ptr()
    rows, bd, warps = row_loop_config(T, d)
    N, M = kind.shape
    _sae_steer_kernel[(triton.cdiv(T, rows),)](
        x, out, config, n_feat, kind, value, enc, b_eff, thr, dec, T, d, N, M, x.stride(0), out.stride(0),
        IN_PLACE=in_place, SKIP_READ=skip_untouched_reads(T, in_place), ROWS=rows, BLOCK_D=bd, num_warps=warps)
