"""sae_steer: fused SAE steering per row. Row t applies configuration c = config[t] of a
SaeSteeringTable (M feature slots per configuration; see steerkit.ops.reference_sae.sae_steer):

    for s < n_feat[c]:  pre_s = x . enc[c, s] + b_eff[c, s];  active_s = pre_s > thr[c, s]
                        f_s = pre_s if active_s else 0
                        coef_s = target - f_s  (clamp; 0 if only-active and not active_s)
                               | strength      (add)
    y = x + sum_s coef_s * dec[c, s]

All f_s are computed on the input row. c == 0 and c outside [0, N) leave the row untouched (in
place: never written, and not read either).

Block kernel (_sae_steer_kernel): a program owns BT rows. Pass 1 walks d in BD-wide chunks and,
for each configuration present in the block, computes the [BT, MP] pre-activations of all its
slots at once with tl.dot (rows of other configurations masked to zero): each configuration's
encoder rows are read once per block, not once per row. Pass 2 walks d again: y = x + coef_c @
dec_c for each configuration present (coef in fp32, split into a high and a low 16-bit part so
tensor cores keep ~16 bits of it), and stores the changed rows. Small T (latency): one row per
program and broadcast products instead of tl.dot (which needs 16 rows). Its d loops hold a loop
over configurations with a data-dependent branch around the encoder / decoder loads: every chunk
is a chain of dependent L2 round trips and nothing pipelines (H100, T = d = 4096, 4 configs:
112-146 µs with tl.dot, 23% of the floor at best).
Group kernel (_sae_steer_group_kernel, ("group", G, num_stages) in the launch configuration):
BT rows against G consecutive configurations g0..g0+G-1 at once. Per chunk, pass 1 loads one
[G*MP, BD] tile of encoder rows and does one tl.dot x[BT, BD] @ enc^T -> [BT, G*MP]; row t keeps
the columns of its own configuration (column j: configuration g0 + j // MP, slot j % MP), so
coef is 0 elsewhere; pass 2 is y = x + coef @ dec[G*MP, BD] (hi + lo dots as above), chunks in
reverse order (the block's last chunks read are the likeliest still in L2). No branch in the d
loops: their loads pipeline over num_stages. g0 starts at the block's smallest configuration and
moves to the next one present >= g0 + G: one iteration when the block's ids span < G (rows of a
request are contiguous in real prefill, so blocks hold 1-2 configurations); more ids take more
iterations (correct, slower: each re-reads the encoder / decoder tiles, and does the dots on the
whole block with the other rows masked; each row is still read twice and written once).
With CH (a 9th entry) the block's rows are not BT consecutive rows but its slice of its CH-row
chunk sorted by configuration, so it holds one or two configurations in any layout (rows drawn
at random per row included); a chunk already in order skips the sort.
Row kernel ("row" in the launch configuration; the default for T <= 16 and d <= 4096 on a GPU):
one row per program with the whole row in one BD >= d chunk. The loads of x and of the
configuration's encoder AND decoder rows are all issued up front (their addresses depend only on
the config id), so the decoder rows arrive during the reduction: two dependent round trips in all
(the config id, then everything else). Untouched rows skip the math (a scalar branch).
Floor: read + write T*d elements of h plus the encoder and decoder rows of the configurations in
use (2*M*d elements each), once (hot in L2; read once per block of BT rows from there). H100,
T = 4096, d = 4096, bf16: 67 MB of h -> ~22.5 µs at 3.0 TB/s; target 70% (~32 µs). Measured
(group kernel on sorted chunks, steer_config's defaults; see steer_config): 72-83% at T = 4096 /
16384 with each request's rows together, 69-79% with configurations drawn at random per row
(43-47% unsorted). Its L2 traffic for
encoder / decoder tiles is 2*G*MP*d*2 bytes per block and group (tiles of configurations no row
of the block uses are not loaded). Small T: latency, target <= 3 µs under CUDA-graph replay; a
steered row takes 1.9 µs with 1 clamp and 3.4 µs with 8 at d = 4096 (one SM reads the rows).
"""
import torch
import triton
import triton.language as tl

from ._launch import interpreting

KIND_CLAMP = tl.constexpr(1)
KIND_ONLY_ACTIVE = tl.constexpr(4)
MAX_CH = 1024  # the most rows a group launch sorts together (each block sorts its chunk's ids)
SORT_CH = 256  # the defaults' chunk


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
def _sort_id(cfg_ptr, r, T, N):
    """The id rows r sort by: their configuration, 0 for untouched rows, N for rows past T."""
    ids = tl.load(cfg_ptr + r, mask=r < T, other=0)
    return tl.where(r >= T, N, tl.where((ids > 0) & (ids < N), ids, 0))


@triton.jit
def _sae_steer_group_kernel(x_ptr, out_ptr, cfg_ptr, n_feat_ptr, kind_ptr, value_ptr, enc_ptr, b_eff_ptr, thr_ptr,
                            dec_ptr, T, d, N, M, stride_x, stride_o,
                            IN_PLACE: tl.constexpr, F32: tl.constexpr, BT: tl.constexpr, MP: tl.constexpr,
                            BD: tl.constexpr, G: tl.constexpr, CH: tl.constexpr):
    """BT rows against G consecutive configurations at once ("group" launch configurations): one
    [G*MP, BD] tile of encoder (then decoder) rows per chunk and one tl.dot, no branch in the d
    loops (their loads pipeline over num_stages). Column j of the [BT, G*MP] tiles is slot j % MP
    of configuration g0 + j // MP; row t keeps only the columns of its own configuration.
    CH > 0: the block takes BT rows of its CH-row chunk sorted by configuration (ties by row), not
    BT consecutive rows, so it holds one or two configurations whatever the layout."""
    GM: tl.constexpr = G * MP
    blk = tl.program_id(0) * BT
    if CH > 0:
        # every block of a chunk orders the chunk's ids by sorting keys id * CH + row in chunk
        # (unique; untouched rows as id 0, rows past T as id N: last, so blocks cover the chunk's
        # real rows); a chunk already in order (a request's rows together) skips the sort
        c0 = blk // CH * CH
        loc = tl.arange(0, CH)
        eff = _sort_id(cfg_ptr, c0 + loc, T, N)
        if tl.max(((eff > _sort_id(cfg_ptr, c0 + loc + 1, T, N)) & (loc < CH - 1)).to(tl.int32), axis=0) == 0:
            rows = blk + tl.arange(0, BT)
            cfg = tl.load(cfg_ptr + rows, mask=rows < T, other=0)
        else:
            # the block's slice of the sorted keys: row (blk - c0) / BT of a [CH / BT, BT] view
            key = tl.reshape(tl.sort(eff * CH + loc), (CH // BT, BT))
            sub = tl.arange(0, CH // BT)[:, None] == (blk - c0) // BT
            pick = tl.sum(tl.where(sub, key, 0), axis=0)  # [BT]
            rows = c0 + pick % CH
            cfg = pick // CH
    else:
        rows = blk + tl.arange(0, BT)
        cfg = tl.load(cfg_ptr + rows, mask=rows < T, other=0)
    row_ok = rows < T
    on = row_ok & (cfg > 0) & (cfg < N)  # rows this op changes
    xrow = rows.to(tl.int64)[:, None] * stride_x
    orow = rows.to(tl.int64)[:, None] * stride_o
    scols = tl.arange(0, BD)
    j = tl.arange(0, GM)
    slot = j % MP
    n_chunks = tl.cdiv(d, BD)
    # groups start at the smallest configuration not yet done: normally one iteration (rows of a
    # request are contiguous in real prefill); a block spanning more than G ids takes several
    g0 = tl.min(tl.where(on, cfg, N), axis=0)
    while g0 < N:
        gcfg = g0 + j // MP  # [GM] configuration of column j
        # columns of configurations no row of the block uses: their tiles are not loaded
        used = tl.max(((cfg[:, None] == gcfg[None, :]) & on[:, None]).to(tl.int32), axis=0) > 0
        t_ok = used & (slot < M)
        meta = gcfg * M + slot  # [GM] table entry of column j
        tile = meta.to(tl.int64)[:, None] * d  # [GM, 1] row offsets in enc / dec
        mine = on & (cfg >= g0) & (cfg < g0 + G)  # [BT] rows of this group
        nf = tl.minimum(tl.load(n_feat_ptr + gcfg, mask=gcfg < N, other=0), M)  # [GM] n_feat of column j's config
        own = mine[:, None] & (cfg[:, None] == gcfg[None, :]) & (slot < nf)[None, :]  # [BT, GM]
        # pass 1: pre-activations [BT, GM], one dot per chunk
        pre = tl.zeros([BT, GM], tl.float32)
        for d0 in range(0, d, BD):
            cols = d0 + scols
            col_ok = cols < d
            x = tl.load(x_ptr + xrow + cols[None, :], mask=mine[:, None] & col_ok[None, :], other=0.0)
            e = tl.load(enc_ptr + tile + cols[None, :], mask=t_ok[:, None] & col_ok[None, :], other=0.0)
            if F32:
                pre = tl.dot(x.to(tl.float32), tl.trans(e.to(tl.float32)), acc=pre, input_precision="ieee")
            else:
                pre = tl.dot(x.to(e.dtype), tl.trans(e), acc=pre)
        # the group's metadata as [GM] vectors, broadcast over rows; coef is 0 outside `own`
        pre += tl.load(b_eff_ptr + meta, mask=t_ok, other=0.0).to(tl.float32)[None, :]
        coef = _coefficients(pre, tl.load(kind_ptr + meta, mask=t_ok, other=0)[None, :],
                             tl.load(thr_ptr + meta, mask=t_ok, other=0.0).to(tl.float32)[None, :],
                             tl.load(value_ptr + meta, mask=t_ok, other=0.0).to(tl.float32)[None, :], own)
        if not F32:  # fp32 coef as a high and a low 16-bit part: tensor cores keep ~16 bits of it
            hi = coef.to(dec_ptr.dtype.element_ty)
            lo = (coef - hi.to(tl.float32)).to(dec_ptr.dtype.element_ty)
        # pass 2: y = x + coef @ dec, chunks in reverse order (the block's last rows read are the
        # likeliest still in L2)
        for i in range(0, n_chunks):
            cols = (n_chunks - 1 - i) * BD + scols
            col_ok = cols < d
            ok = mine[:, None] & col_ok[None, :]
            x_raw = tl.load(x_ptr + xrow + cols[None, :], mask=ok, other=0.0)
            w = tl.load(dec_ptr + tile + cols[None, :], mask=t_ok[:, None] & col_ok[None, :], other=0.0)
            if F32:
                y = tl.dot(coef, w.to(tl.float32), acc=x_raw.to(tl.float32), input_precision="ieee")
            else:
                y = tl.dot(lo, w, acc=tl.dot(hi, w, acc=x_raw.to(tl.float32)))
            tl.store(out_ptr + orow + cols[None, :], y.to(out_ptr.dtype.element_ty), mask=ok)
        g0 = tl.min(tl.where(on & (cfg >= g0 + G), cfg, N), axis=0)
    if not IN_PLACE:  # untouched rows: bit-identical copy (only blocks that hold some)
        keep = row_ok & (on == 0)
        if tl.max(keep.to(tl.int32), axis=0) > 0:
            for d0 in range(0, d, BD):
                cols = d0 + scols
                ok = keep[:, None] & (cols < d)[None, :]
                tl.store(out_ptr + orow + cols[None, :], tl.load(x_ptr + xrow + cols[None, :], mask=ok), mask=ok)


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
    """A launch configuration (sae_steer's docstring lists the forms).

    GPU, T <= 16 and d <= 4096: the row kernel, 8 warps (H100, d = 4096, 8 clamps, graph replay:
    1.2 µs at T = 1 and 3.5 µs at T = 16, against 1.8 and 6.5 µs for the chunked kernel below;
    sae-steer-*-20261124-001052.jsonl). Other T <= 64 (latency): one row per program, all M
    slots at once as a [M, 2048] tile of broadcast products (d = 4096: two chunks per pass, so
    four dependent L2 round trips), 8 warps.
    From T = 4096: the group kernel on 256-row chunks sorted by configuration, 32 rows x 256
    columns, G * MP = 16 columns per tl.dot, 4 warps, 4 stages (H100, bf16, 8 clamps x 4
    configurations; probe-sae-steer-sorted*-h100.txt, bench-sae-steer-sorted-h100.txt): d = 4096:
    79% / 71% of the floor at T = 4096 / 16384 with configurations drawn at random per row, 81% /
    75% with 1024-row requests; d = 2304: 69-70% / 74% and 72-74% / 79%. Unsorted, 16 columns
    took 43-47% with random rows (a block runs the group loop twice).
    64 < T < 4096: the group kernel, 16 rows x 256 columns, 4 warps, 3 stages, unsorted (probe-
    sae-steer-split-h100.txt), G * MP = 32 (4
    configurations of 8 slots): 64-69% at T = 4096 in either layout (random rows at T = 16384:
    61% with it, 68-70% with 32 rows x 256 columns). L2 eviction hints and persistent launches
    (fewer rows in flight) changed nothing measurable (probe-sae-steer-h100.txt).
    Interpreter: the group kernel on sorted chunks (the GPU's large-T default) with large blocks."""
    mp = triton.next_power_of_2(M)
    g = max(1, 32 // mp)  # group kernel: G * MP = 32 columns per tl.dot (4 configurations of 8 slots)
    if interpreting():
        return (max(16, min(64, triton.next_power_of_2(T))), mp, max(16, min(1024, triton.next_power_of_2(d))), 4,
                True, "group", g, 1, SORT_CH)
    if T <= 16 and d <= 4096:  # the row kernel (whole rows in registers: d <= 4096)
        return 1, mp, None, 8, False, "row"
    if T <= 64:
        return 1, mp, min(2048, max(32, triton.next_power_of_2(d))), 8, False
    if T >= 4096:  # rows sorted by configuration in 256-row chunks: G * MP = 16 (blocks hold one or two)
        return 32, mp, 256, 4, True, "group", max(1, 16 // mp), 4, SORT_CH
    return 16, mp, 256, 4, True, "group", g, 3


def _pow2(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1 and v & (v - 1) == 0


def _check_cfg(cfg, M: int):
    """Validate a launch configuration; returns its tag: None (block kernel), "row" or "group"."""
    if not isinstance(cfg, tuple) or len(cfg) < 5:
        raise ValueError(f"sae_steer: cfg must be a tuple (BT, MP, BD, num_warps, DOT[, tag, ...]), got {cfg!r}")
    bt, mp, bd, warps, _ = cfg[:5]
    tag = cfg[5] if len(cfg) > 5 else None
    if (len(cfg) > 5 and tag not in ("row", "group")) or (tag == "row" and len(cfg) != 6):
        raise ValueError(f"sae_steer: cfg must end after DOT, with \"row\", or with \"group\", G, num_stages; "
                         f"got {cfg!r}")
    if not (_pow2(bt) and _pow2(mp) and mp >= M and _pow2(warps) and warps <= 32 and (bd is None or _pow2(bd))):
        raise ValueError(f"sae_steer: cfg needs powers of two BT, MP >= M = {M}, BD, num_warps <= 32; got {cfg!r}")
    if tag == "group":
        if len(cfg) not in (8, 9):
            raise ValueError(f"sae_steer: a group cfg is (BT, MP, BD, num_warps, DOT, \"group\", G, num_stages"
                             f"[, CH]), got {cfg!r}")
        g, stages = cfg[6:8]
        ch = cfg[8] if len(cfg) == 9 else 0
        if not (_pow2(g) and g * mp >= 16 and bt >= 16 and bd is not None and bd >= 16
                and isinstance(stages, int) and not isinstance(stages, bool) and 1 <= stages <= 8):
            raise ValueError(f"sae_steer: a group cfg needs power-of-two G with G * MP >= 16, BT >= 16 and "
                             f"BD >= 16 (tl.dot), 1 <= num_stages <= 8; got {cfg!r}")
        if not (ch == 0 or (_pow2(ch) and bt <= ch <= MAX_CH)):
            raise ValueError(f"sae_steer: a group cfg's CH (rows sorted together) is 0 or a power of two in "
                             f"BT..{MAX_CH}; got {cfg!r}")
    return tag


def sae_steer(x, out, config, n_feat, kind, value, enc, b_eff, thr, dec, cfg=None):
    """x, out: [T, d]; config [T] int32; the SaeSteeringTable tensors (contiguous).
    ``cfg`` instead of steer_config's: (BT, MP, BD, num_warps, DOT) for the block kernel,
    (1, MP, BD, num_warps, DOT, "row") for the row kernel (BD >= d; None: next_pow2(d); DOT is
    ignored) or (BT, MP, BD, num_warps, DOT, "group", G, num_stages[, CH]) for the group kernel (G
    configurations per tl.dot, G * MP >= 16, BT >= 16; DOT is ignored; CH: blocks take their rows
    from CH-row chunks sorted by configuration, a power of two in BT..MAX_CH, 0 or absent: BT
    consecutive rows). ValueError otherwise."""
    T, d = x.shape
    if T == 0 or d == 0:
        return
    in_place = x.data_ptr() == out.data_ptr()
    N, M = kind.shape
    if cfg:  # a caller's configuration is checked; steer_config's defaults are valid by construction
        cfg = tuple(cfg)
        tag = _check_cfg(cfg, M)
    else:
        cfg = steer_config(T, d, M)
        tag = cfg[5] if len(cfg) > 5 else None
    bt, mp, bd, warps, dot = cfg[:5]
    args = (x, out, config, n_feat, kind, value, enc, b_eff, thr, dec)
    if tag == "row":
        bd = bd or triton.next_power_of_2(d)
        if bt != 1 or bd < d:
            raise ValueError(f"the row kernel needs BT = 1 and BD >= d = {d}, got {cfg}")
        _sae_steer_row_kernel[(T,)](*args, d, N, M, x.stride(0), out.stride(0),
                                    IN_PLACE=in_place, MP=mp, BD=bd, num_warps=warps)
        return
    f32 = torch.float32 in (x.dtype, enc.dtype, dec.dtype) or enc.dtype != dec.dtype
    if tag == "group":
        g, stages = cfg[6:8]
        ch = cfg[8] if len(cfg) == 9 else 0
        if ch and (N + 1) * ch > 2 ** 31:  # the sort keys (id * CH + row, id <= N) must fit in int32
            ch = 0
        _sae_steer_group_kernel[(triton.cdiv(T, bt),)](
            *args, T, d, N, M, x.stride(0), out.stride(0),
            IN_PLACE=in_place, F32=f32, BT=bt, MP=mp, BD=bd, G=g, CH=ch, num_warps=warps, num_stages=stages)
        return
    if bd is None:
        raise ValueError(f"sae_steer: the block kernel needs a BD, got {cfg!r}")
    _sae_steer_kernel[(triton.cdiv(T, bt),)](
        *args, T, d, N, M, x.stride(0), out.stride(0),
        IN_PLACE=in_place, F32=f32, DOT=dot, BT=bt, MP=mp, BD=bd, num_warps=warps)


# configurations the benchmark sweeps: at T >= 4096, and at small T (with the row kernel: BD None =
# next_pow2(d)). (BT, MP, BD, num_warps, DOT) for the block kernel; group kernel entries add
# "group", G, num_stages[, CH] (MP 8 = the benchmark's M: G = 4 covers its configurations 1..4 in
# one dot; CH: sorted chunks).
SWEEP = [(32, 16, 128, 4, True), (1, 8, 2048, 8, False),
         (16, 8, 256, 4, True, "group", 4, 3), (16, 8, 256, 8, True, "group", 4, 3),
         (16, 8, 128, 8, True, "group", 4, 4), (32, 8, 256, 8, True, "group", 4, 3),
         (32, 8, 128, 8, True, "group", 4, 4), (32, 8, 64, 4, True, "group", 4, 4),
         (32, 8, 128, 4, True, "group", 2, 3), (64, 8, 128, 8, True, "group", 4, 3),
         (16, 8, 256, 4, True, "group", 2, 3), (32, 8, 256, 4, True, "group", 4, 3),
         (16, 8, 256, 4, True, "group", 2, 3, 256), (16, 8, 256, 4, True, "group", 2, 3, 1024),
         (32, 8, 256, 4, True, "group", 2, 3, 256),
         # smaller sorted chunks (a 128- or 64-row sort is cheaper than the default's 256-row one;
         # blocks then span more configurations, so G = 4 for 64)
         (32, 8, 256, 4, True, "group", 2, 4, 128), (32, 8, 256, 4, True, "group", 4, 4, 64)]
SWEEP_SMALL = [(1, 8, 2048, 8, False), (1, 8, 4096, 16, False), (1, 8, 1024, 4, False), (1, 8, 512, 4, False),
               (16, 16, 512, 4, True), (1, 8, None, 8, False, "row"), (1, 8, None, 16, False, "row"),
               (1, 8, None, 32, False, "row")]
