"""The SAE module: encode/decode against the definitions written out here, conventions, bad input."""
import math

import pytest
import torch

from steerkit.sae import SAE

TOL = {torch.float32: (1e-5, 1e-4), torch.float16: (2e-3, 2e-2), torch.bfloat16: (2e-2, 1e-1)}


def _random_sae(d, F, activation, k=None, device="cpu", **kw):
    g = torch.Generator().manual_seed(d * 1000 + F)
    W_enc = torch.randn(d, F, generator=g) / math.sqrt(d)
    W_dec = torch.randn(F, d, generator=g) / math.sqrt(F)
    b_enc = torch.randn(F, generator=g) * 0.1
    b_dec = torch.randn(d, generator=g) * 0.1
    thr = torch.rand(F, generator=g) * 0.3 if activation == "jumprelu" else None
    return SAE.from_weights(W_enc, b_enc, W_dec, b_dec, thr, activation=activation, k=k, **kw).to(device)


@torch.no_grad()
def _want_encode(sae, x):
    """The convention, written out: pre = (x - b_dec) @ W_enc + b_enc, then the activation."""
    x = x.double()
    xin = x - sae.b_dec.double() if sae.apply_b_dec_to_input else x
    pre = xin @ sae.W_enc.double() + sae.b_enc.double()
    if sae.activation == "relu":
        return torch.relu(pre)
    if sae.activation == "jumprelu":
        return torch.where(pre > sae.threshold.double(), pre, torch.zeros_like(pre))
    out = torch.zeros_like(pre)
    flat, oflat = pre.reshape(-1, pre.shape[-1]), out.view(-1, pre.shape[-1])
    for r in range(flat.shape[0]):  # row by row: the k largest, then ReLU
        order = sorted(range(flat.shape[1]), key=lambda j: -flat[r, j].item())[:sae.k]
        for j in order:
            oflat[r, j] = max(flat[r, j].item(), 0.0)
    return out


@pytest.mark.parametrize("activation,k", [("relu", None), ("jumprelu", None), ("topk", 1), ("topk", 7)])
@pytest.mark.parametrize("d,F,shape", [(16, 64, (5,)), (37, 101, (2, 3)), (64, 256, (1, 1))])
@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_encode_decode_match_the_definition(activation, k, d, F, shape, apply_b_dec):
    sae = _random_sae(d, F, activation, k, apply_b_dec_to_input=apply_b_dec)
    x = torch.randn(*shape, d)
    f = sae.encode(x)
    assert f.shape == (*shape, F) and f.dtype == x.dtype
    torch.testing.assert_close(f.double(), _want_encode(sae, x), rtol=1e-5, atol=1e-5)
    if activation == "topk":
        assert int((f != 0).sum(-1).max()) <= k
    want_dec = f.double() @ sae.W_dec.double() + sae.b_dec.double()
    torch.testing.assert_close(sae.decode(f).double(), want_dec, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sae(x).double(), want_dec, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_dtypes_compare_with_the_float32_definition(dtype):
    sae = _random_sae(24, 80, "relu")
    x = torch.randn(7, 24).to(dtype)
    f = sae.encode(x)
    assert f.dtype == dtype
    rtol, atol = TOL[dtype]
    want = _want_encode(sae, x.float())
    torch.testing.assert_close(f.double(), want, rtol=rtol, atol=atol * max(1.0, float(want.abs().max())))
    y = sae.decode(f)
    assert y.dtype == dtype
    torch.testing.assert_close(y.double(), f.double() @ sae.W_dec.double() + sae.b_dec.double(), rtol=rtol,
                               atol=atol * 4)


def test_jumprelu_threshold_is_strict():
    sae = _random_sae(16, 64, "jumprelu")
    x = torch.randn(3, 16)
    pre = sae.pre_acts(x)
    with torch.no_grad():
        sae.threshold[5] = pre[1, 5]  # exactly at the threshold: off
        sae.threshold[6] = torch.nextafter(pre[1, 6], torch.tensor(-math.inf))  # just below: on
    f = sae.encode(x)
    assert f[1, 5] == 0 and f[1, 6] == pre[1, 6]


def test_topk_keeps_fewer_than_k_when_pre_activations_are_negative():
    sae = _random_sae(16, 64, "topk", k=10)
    with torch.no_grad():
        sae.b_enc.fill_(-100.0)
        sae.b_enc[:3] = 100.0
    f = sae.encode(torch.randn(4, 16))
    assert torch.equal((f != 0).sum(-1), torch.full((4,), 3))


@pytest.mark.parametrize("normalize", ["constant_norm_rescale", "layer_norm"])
def test_input_normalisation(normalize):
    sae = _random_sae(32, 96, "relu", normalize=normalize)
    x = torch.randn(5, 32) * 7 + 3
    xd = x.double()
    if normalize == "constant_norm_rescale":
        coeff = math.sqrt(32) / xd.norm(dim=-1, keepdim=True)
        xn, undo = xd * coeff, (lambda y: y / coeff)
    else:
        mu, std = xd.mean(-1, keepdim=True), (xd - xd.mean(-1, keepdim=True)).std(-1, keepdim=True)
        xn, undo = (xd - mu) / (std + 1e-5), (lambda y: y * std + mu)
    pre = (xn - sae.b_dec.double()) @ sae.W_enc.double() + sae.b_enc.double()
    f = sae.encode(x)
    torch.testing.assert_close(f.double(), pre.relu(), rtol=1e-5, atol=1e-5)
    want = undo(f.double() @ sae.W_dec.double() + sae.b_dec.double())
    torch.testing.assert_close(sae.decode(f, x).double(), want, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(sae(x).double(), want, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="decode\\(f, x\\)"):
        sae.decode(f)


@pytest.mark.parametrize("activation", ["relu", "jumprelu", "topk"])
def test_b_dec_folding_keeps_outputs(activation):
    sae = _random_sae(20, 70, activation, k=5 if activation == "topk" else None)
    x = torch.randn(6, 20)
    f, y = sae.encode(x), sae(x)
    sae.fold_b_dec_into_b_enc()
    assert not sae.apply_b_dec_to_input
    torch.testing.assert_close(sae.encode(x), f, rtol=1e-5, atol=1e-5)
    sae.unfold_b_dec_from_b_enc()
    assert sae.apply_b_dec_to_input
    torch.testing.assert_close(sae(x), y, rtol=1e-5, atol=1e-5)


def test_normalize_decoder_rows_keeps_reconstructions():
    sae = _random_sae(20, 70, "jumprelu")
    x = torch.randn(6, 20)
    f, y = sae.encode(x), sae(x)
    n = sae.normalize_decoder_rows()
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(70), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sae.encode(x), f * n, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sae(x), y, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="TopK"):
        _random_sae(8, 16, "topk", k=2).normalize_decoder_rows()


def test_metadata_and_config():
    sae = _random_sae(16, 64, "topk", k=3, site="resid_post.4", metadata={"model_name": "m"})
    assert sae.layer == 4 and sae.config()["k"] == 3 and sae.config()["metadata"] == {"model_name": "m"}
    assert "topk" in repr(sae)


def test_gradients_flow():
    sae = _random_sae(16, 64, "topk", k=4).requires_grad_(True)
    sae(torch.randn(5, 16)).pow(2).sum().backward()
    assert sae.W_enc.grad is not None and sae.W_dec.grad.abs().sum() > 0


def test_bad_input_names_the_argument():
    sae = _random_sae(16, 64, "relu")
    with pytest.raises(ValueError, match="'x'|x must"):
        sae.encode(torch.randn(3, 15))
    with pytest.raises(ValueError, match="f must"):
        sae.decode(torch.randn(3, 63))
    with pytest.raises(ValueError, match="floating"):
        sae.encode(torch.ones(3, 16, dtype=torch.long))
    with pytest.raises(ValueError, match="k"):
        SAE(16, 64, "topk", k=65)
    with pytest.raises(ValueError, match="k"):
        SAE(16, 64, "topk")
    with pytest.raises(ValueError, match="activation"):
        SAE(16, 64, "gelu")
    with pytest.raises(ValueError, match="normalize"):
        SAE(16, 64, normalize="batch")
    with pytest.raises(ValueError, match="site"):
        SAE(16, 64, site="layer6")
    with pytest.raises(ValueError, match="W_dec"):
        SAE.from_weights(torch.randn(16, 64), torch.randn(64), torch.randn(16, 64), torch.randn(16))
    with pytest.raises(ValueError, match="threshold"):
        SAE.from_weights(torch.randn(16, 64), torch.randn(64), torch.randn(64, 16), torch.randn(16), activation="jumprelu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("activation,k", [("relu", None), ("jumprelu", None), ("topk", 16)])
def test_cuda_matches_the_cpu_definition(dtype, activation, k):
    sae = _random_sae(64, 256, activation, k)
    x = torch.randn(83, 64)
    want = _want_encode(sae, x.to(dtype).float())
    gpu = sae.to("cuda")
    f = gpu.encode(x.to("cuda", dtype))
    rtol, atol = TOL[dtype]
    if activation != "topk":  # top-k may pick other features at near-ties after rounding
        torch.testing.assert_close(f.double().cpu(), want, rtol=rtol, atol=atol * max(1.0, float(want.abs().max())))
    assert int((f != 0).sum(-1).max()) <= (k or 256)
