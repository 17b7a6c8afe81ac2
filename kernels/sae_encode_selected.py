"""sae_encode_selected: activations of S selected SAE features, reading only their encoder columns.

    out[t, j] = act((x[t] - b_dec) . W_enc[:, features[j]] + b_enc[features[j]])

Grid [row blocks, feature blocks]; each program gathers its BS encoder columns tile by tile
(BK x BS) and runs tl.dot with fp32 accumulation. Feature indices outside [0, F) are never
read (their column reads as 0; the op validates them in eager calls).
Floor: reading x (T*d) and the S selected columns (d*S) plus writing T*S outputs; 2*T*d*S FLOPs.
"""
import torch
import triton
import triton.language as tl

from ._launch import interpreting


@triton.jit
def _selected_kernel(x_ptr, w_ptr, b_enc_ptr, b_dec_ptr, thr_ptr, feat_ptr, out_ptr,
                     T, d, F, S, stride_xt, stride_wk, stride_wf, stride_ot,
                     HAS_B_DEC: tl.constexpr, ACT: tl.constexpr, IEEE: tl.constexpr,
                     BT: tl.constexpr, BS: tl.constexpr, BK: tl.constexpr):
    rows = tl.program_id(0) * BT + tl.arange(0, BT)
    js = tl.program_id(1) * BS + tl.arange(0, BS)
    row_ok = rows < T
    f = tl.load(feat_ptr + js, mask=js < S, other=-1).to(tl.int64)
    f_ok = (f >= 0) & (f < F)
    f = tl.where(f_ok, f, 0)
    acc = tl.zeros([BT, BS], tl.float32)
    for k0 in range(0, d, BK):
        ks = k0 + tl.arange(0, BK)
        k_ok = ks < d
        xt = tl.load(x_ptr + rows.to(tl.int64)[:, None] * stride_xt + ks[None, :],
                     mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        if HAS_B_DEC:
            xt = xt.to(tl.float32) - tl.load(b_dec_ptr + ks, mask=k_ok, other=0.0).to(tl.float32)[None, :]
        wt = tl.load(w_ptr + ks.to(tl.int64)[:, None] * stride_wk + f[None, :] * stride_wf,
                     mask=k_ok[:, None] & f_ok[None, :], other=0.0)
        if IEEE:
            acc = tl.dot(xt.to(tl.float32), wt.to(tl.float32), acc, input_precision="ieee")
        else:
            acc = tl.dot(xt.to(wt.dtype), wt, acc)
    pre = acc + tl.load(b_enc_ptr + f, mask=f_ok, other=0.0).to(tl.float32)[None, :]
    if ACT == 1:
        pre = tl.maximum(pre, 0.0)
    if ACT == 2:
        thr = tl.load(thr_ptr + f, mask=f_ok, other=0.0).to(tl.float32)
        pre = tl.where(pre > thr[None, :], pre, 0.0)
    tl.store(out_ptr + rows.to(tl.int64)[:, None] * stride_ot + js[None, :], pre.to(out_ptr.dtype.element_ty),
             mask=row_ok[:, None] & (js < S)[None, :])


def sae_encode_selected(x, W_enc, b_enc, b_dec, threshold, features, act, out):
    """x [T, d]; W_enc [d, F] (any strides); b_enc [F]; b_dec [d] or None; threshold [F] or None;
    features [S] (int32/int64, contiguous); act 0 none, 1 relu, 2 jumprelu; out [T, S]."""
    T, d = x.shape
    F, S = W_enc.shape[1], features.shape[0]
    if T == 0 or S == 0:
        return
    if interpreting():
        bt, bs, bk, warps = max(16, min(64, triton.next_power_of_2(T))), max(16, min(128, triton.next_power_of_2(S))), \
            max(16, min(256, triton.next_power_of_2(d))), 4
    else:  # decode-sized T gets 16-row tiles; prefill 64 x 64 bf16 tensor-core tiles
        bt = 16 if T <= 16 else 32 if T <= 32 else 64
        bs, bk = max(16, min(64, triton.next_power_of_2(S))), 64
        warps = 4
    ieee = torch.float32 in (x.dtype, W_enc.dtype)  # fp32 inputs: exact fp32 products, no TF32
    dummy = b_enc
    _selected_kernel[(triton.cdiv(T, bt), triton.cdiv(S, bs))](
        x, W_enc, b_enc, b_dec if b_dec is not None else dummy, threshold if threshold is not None else dummy,
        features, out, T, d, F, S, x.stride(0), W_enc.stride(0), W_enc.stride(1), out.stride(0),
        HAS_B_DEC=b_dec is not None, ACT=act, IEEE=ieee, BT=bt, BS=bs, BK=bk, num_warps=warps)
