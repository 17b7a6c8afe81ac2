"""sae_steer: fused SAE steering per row. Row t applies configuration c = config[t] of a
SaeSteeringTable (M feature slots per configuration; see steerkit.ops.reference_sae.sae_steer):

    for s < n_feat[c]:  pre_s = x . enc[c, s] + b_eff[c, s];  active_s = pre_s > thr[c, s]
                        f_s = pre_s if active_s else 0
                        coef_s = target - f_s  (clamp; 0 if only-active and not active_s)
                               | strength      (add)
    y = x + sum_s coef_s * dec[c, s]

All f_s are computed on the input row. c == 0 and c outside [0, N) leave the row untouched (in
place: never written, and not read either).

A program owns BT rows. Pass 1 walks d in BD-wide chunks and, for each configuration present in
the block, computes the [BT, MP] pre-activations of all its slots at once with tl.dot (rows of
other configurations masked to zero): each configuration's encoder rows are read once per block,
not once per row. Pass 2 walks d again: y = x + coef_c @ dec_c for each configuration present
(coef in fp32, split into a high and a low 16-bit part so tensor cores keep ~16 bits of it), and
stores the changed rows. Small T (latency): one row per program and broadcast products instead
of tl.dot (which needs 16 rows); large T: BT = 32 rows with tl.dot.
Row kernel ("row" in the launch configuration; the default for T <= 16 and d <= 4096 on a GPU):
one row per program with the whole row in one BD >= d chunk. The loads of x and of the
configuration's encoder AND decoder rows are all issued up front (their addresses depend only on
the config id), so the decoder rows arrive during the reduction: two dependent round trips in all
(the config id, then everything else). Untouched rows skip the math (a scalar branch).
Floor: read + write T*d elements of h plus the encoder and decoder rows of the configurations in
use (2*M*d elements each), once (hot in L2; read once per block of BT rows from there). H100,
T = 4096, d = 4096, bf16: 67 MB of h -> ~22 µs at 3.0 TB/s. Small T: latency (launch + four L2
round trips at d = 4096), target <= 3 µs under CUDA-graph replay.
"""
import torch
import triton
import triton.language as tl

from ._launch import interpreting

KIND_CLAMP = tl.constexpr(1)
KIND_ONLY_ACTIVE = tl.constexpr(4)


@triton.jit
def _coefficients(pre, kind, thr, val, ok):
    """coef_s per slot (float32): clamp to val (0 when only-active and not active) or add val;
    0 where not ok or the slot is empty (kind 0)."""
    active = pre > thr
    clamp = (kind & KIND_CLAMP) != 0
    skip = clamp & ((kind & KIND_ONLY_ACTIVE) != 0) & (active == 0)
    coef = tl.where(clamp, tl.where(skip, 0.0, val - tl.where(active, pre, 0.0)), val)
    return tl.where(ok & (kind != 0), coef, 0.0)


@triton.jit
def _sae_steer_kernel(x_ptr, out_ptr, cfg_ptr, n_feat_ptr, kind_ptr, value_ptr, enc_ptr, b_eff_ptr, thr_ptr,
                      dec_ptr, T, d, N, M, stride_x, stride_o,
                      IN_PLACE: tl.constexpr, F32: tl.constexpr, DOT: tl.constexpr, BT: tl.constexpr,
                      MP: tl.constexpr, BD: tl.constexpr):
    rows = tl.program_id(0) * BT + tl.arange(0, BT)
    row_ok = rows < T
    cfg = tl.load(cfg_ptr + rows, mask=row_ok, other=0)
    on = row_ok & (cfg > 0) & (cfg < N)  # rows this op changes
    if IN_PLACE:
        read = on
    else:
        read = row_ok
    c_lo = tl.min(tl.where(on, cfg, N), axis=0)
    c_hi = tl.max(tl.where(on, cfg, 0), axis=0)
    c64 = tl.where(on, cfg, 0).to(tl.int64)
    slots = tl.arange(0, MP)
    nf = tl.minimum(tl.load(n_feat_ptr + c64, mask=on, other=0), M)
    s_ok = on[:, None] & (slots[None, :] < nf[:, None])  # [BT, MP]
    meta = c64[:, None] * M + slots[None, :]
    kind = tl.load(kind_ptr + meta, mask=s_ok, other=0)
    xrow = rows.to(tl.int64)[:, None] * stride_x
    orow = rows.to(tl.int64)[:, None] * stride_o
    scols = tl.arange(0, BD)
    sl_ok = slots < M
    # pass 1: pre-activations of every slot of each row's configuration
    pre = tl.zeros([BT, MP], tl.float32)
    for d0 in range(0, d, BD):
        cols = d0 + scols
        col_ok = cols < d
        x = tl.load(x_ptr + xrow + cols[None, :], mask=on[:, None] & col_ok[None, :], other=0.0)
        for c in range(c_lo, c_hi + 1):
            mine = on & (cfg == c)
            if tl.max(mine.to(tl.int32), axis=0) > 0:
                e = tl.load(enc_ptr + (c * M + slots).to(tl.int64)[:, None] * d + cols[None, :],
                            mask=sl_ok[:, None] & col_ok[None, :], other=0.0)
                xm = tl.where(mine[:, None], x, 0.0)
                if not DOT:  # few rows: broadcast products, reduced over the chunk
                    pre += tl.sum(xm.to(tl.float32)[:, None, :] * e.to(tl.float32)[None, :, :], axis=2)
                elif F32:
                    pre += tl.dot(xm.to(tl.float32), tl.trans(e.to(tl.float32)), input_precision="ieee")
                else:
                    pre += tl.dot(xm.to(e.dtype), tl.trans(e))
    pre += tl.load(b_eff_ptr + meta, mask=s_ok, other=0.0).to(tl.float32)
    coef = _coefficients(pre, kind, tl.load(thr_ptr + meta, mask=s_ok, other=0.0).to(tl.float32),
                         tl.load(value_ptr + meta, mask=s_ok, other=0.0).to(tl.float32), s_ok)
    # pass 2: y = x + coef @ dec, per configuration present
    for d0 in range(0, d, BD):
        cols = d0 + scols
        col_ok = cols < d
        x_raw = tl.load(x_ptr + xrow + cols[None, :], mask=read[:, None] & col_ok[None, :], other=0.0)
        y = x_raw.to(tl.float32)
        for c in range(c_lo, c_hi + 1):
            mine = on & (cfg == c)
            if tl.max(mine.to(tl.int32), axis=0) > 0:
                w = tl.load(dec_ptr + (c * M + slots).to(tl.int64)[:, None] * d + cols[None, :],
                            mask=sl_ok[:, None] & col_ok[None, :], other=0.0)
                cm = tl.where(mine[:, None], coef, 0.0)
                if not DOT:
                    y += tl.sum(cm[:, :, None] * w.to(tl.float32)[None, :, :], axis=1)
                elif F32:
                    y += tl.dot(cm, w.to(tl.float32), input_precision="ieee")
                else:
                    hi = cm.to(w.dtype)
                    lo = (cm - hi.to(tl.float32)).to(w.dtype)
                    y += tl.dot(hi, w) + tl.dot(lo, w)
        y = tl.where(on[:, None], y.to(out_ptr.dtype.element_ty), x_raw)  # untouched rows: bit-identical
        if IN_PLACE:
            tl.store(out_ptr + orow + cols[None, :], y, mask=on[:, None] & col_ok[None, :])
        else:
            tl.store(out_ptr + orow + cols[None, :], y, mask=row_ok[:, None] & col_ok[None, :])


@triton.jit
def _sae_steer_row_kernel(x_ptr, out_ptr, cfg_ptr, n_feat_ptr, kind_ptr, value_ptr, enc_ptr, b_eff_ptr, thr_ptr,
                          dec_ptr, d, N, M, stride_x, stride_o,
                          IN_PLACE: tl.constexpr, MP: tl.constexpr, BD: tl.constexpr):
    row = tl.program_id(0)
    c = tl.load(cfg_ptr + row)
    cols = tl.arange(0, BD)
    col_ok = cols < d
    x_at = x_ptr + row.to(tl.int64) * stride_x + cols
    o_at = out_ptr + row.to(tl.int64) * stride_o + cols
    if (c > 0) & (c < N):
        # every load up front, masks and addresses from c only (n_feat applies to coef): the
        # decoder rows are in flight during the reduction
        slots = tl.arange(0, MP)
        sl_ok = slots < M
        meta = c.to(tl.int64) * M + slots
        at = meta[:, None] * d + cols[None, :]
        ok = sl_ok[:, None] & col_ok[None, :]
        nf = tl.load(n_feat_ptr + c)
        x = tl.load(x_at, mask=col_ok, other=0.0).to(tl.float32)
        e = tl.load(enc_ptr + at, mask=ok, other=0.0)
        w = tl.load(dec_ptr + at, mask=ok, other=0.0)
        kind = tl.load(kind_ptr + meta, mask=sl_ok, other=0)
        b = tl.load(b_eff_ptr + meta, mask=sl_ok, other=0.0)
        th = tl.load(thr_ptr + meta, mask=sl_ok, other=0.0)
        val = tl.load(value_ptr + meta, mask=sl_ok, other=0.0)
        s_ok = slots < tl.minimum(nf, M)
        pre = tl.sum(x[None, :] * e.to(tl.float32), axis=1) + b.to(tl.float32)
        coef = _coefficients(pre, kind, th.to(tl.float32), val.to(tl.float32), s_ok)
        y = x + tl.sum(coef[:, None] * w.to(tl.float32), axis=0)
        tl.store(o_at, y.to(out_ptr.dtype.element_ty), mask=col_ok)
    elif not IN_PLACE:  # untouched row: bit-identical copy
        tl.store(o_at, tl.load(x_at, mask=col_ok), mask=col_ok)


def steer_config(T: int, d: int, M: int):
    """(BT, MP, BD, num_warps, DOT[, "row"]).

    GPU, T <= 16 and d <= 4096: the row kernel, 8 warps (H100, d = 4096, 8 clamps, graph replay:
    1.2 µs at T = 1 and 3.5 µs at T = 16, against 1.8 and 6.5 µs for the chunked kernel below;
    sae-steer-*-20261124-001052.jsonl). Other T <= 64 (latency): one row per program, all M
    slots at once as a [M, 2048] tile of broadcast products (d = 4096: two chunks per pass, so
    four dependent L2 round trips), 8 warps.
    Larger T: 32 rows per program with tl.dot (encoder / decoder rows read once per 32 rows),
    128-column chunks, 4 warps. Pass 2 re-reads the block's rows, which should still be in L2
    (in-flight rows x d x 2 bytes stays near the 50 MB L2 of an H100 with 32-row blocks).
    Interpreter: large blocks."""
    mp = triton.next_power_of_2(M)
    if interpreting():
        return max(16, min(64, triton.next_power_of_2(T))), max(16, mp), min(1024, triton.next_power_of_2(d)), 4, True
    if T <= 16 and d <= 4096:  # the row kernel (whole rows in registers: d <= 4096)
        return 1, mp, None, 8, False, "row"
    if T <= 64:
        return 1, mp, min(2048, max(32, triton.next_power_of_2(d))), 8, False
    return 32, max(16, mp), 128, 4, True


def sae_steer(x, out, config, n_feat, kind, value, enc, b_eff, thr, dec, cfg=None):
    """x, out: [T, d]; config [T] int32; the SaeSteeringTable tensors (contiguous).
    ``cfg``: (BT, MP, BD, num_warps, DOT) instead of steer_config's, or (1, MP, BD, num_warps, DOT,
    "row") for the row kernel (BD >= d; None: next_pow2(d); DOT is ignored)."""
    T, d = x.shape
    if T == 0 or d == 0:
        return
    in_place = x.data_ptr() == out.data_ptr()
    N, M = kind.shape
    cfg = cfg or steer_config(T, d, M)
    bt, mp, bd, warps, dot = cfg[:5]
    if tuple(cfg[5:]) == ("row",):
        bd = bd or triton.next_power_of_2(d)
        if bt != 1 or bd < d:
            raise ValueError(f"the row kernel needs BT = 1 and BD >= d = {d}, got {cfg}")
        _sae_steer_row_kernel[(T,)](
            x, out, config, n_feat, kind, value, enc, b_eff, thr, dec, d, N, M, x.stride(0), out.stride(0),
            IN_PLACE=in_place, MP=mp, BD=bd, num_warps=warps)
        return
    f32 = torch.float32 in (x.dtype, enc.dtype, dec.dtype) or enc.dtype != dec.dtype
    _sae_steer_kernel[(triton.cdiv(T, bt),)](
        x, out, config, n_feat, kind, value, enc, b_eff, thr, dec, T, d, N, M, x.stride(0), out.stride(0),
        IN_PLACE=in_place, F32=f32, DOT=dot, BT=bt, MP=mp, BD=bd, num_warps=warps)


# configurations the benchmark sweeps (BT, MP, BD, num_warps, DOT): at T >= 4096, and at small T
# (with the row kernel: BD None = next_pow2(d))
SWEEP = [(32, 16, 128, 4, True), (64, 16, 128, 8, True), (16, 16, 256, 4, True), (32, 16, 256, 8, True),
         (1, 8, 2048, 8, False)]
SWEEP_SMALL = [(1, 8, 2048, 8, False), (1, 8, 4096, 16, False), (1, 8, 1024, 4, False), (1, 8, 512, 4, False),
               (16, 16, 512, 4, True), (1, 8, None, 8, False, "row"), (1, 8, None, 16, False, "row"),
               (1, 8, None, 32, False, "row")]
