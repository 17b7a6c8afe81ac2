"""sae_encode_selected: activations of chosen features vs the reference, every activation,
boundary and duplicate features, errors, opcheck and torch.compile."""
import pytest
import torch

from helpers import DEVICE, GPU, randn
from sae_helpers import SAE_BACKENDS, SAE_DTYPES, close, make_sae
from steerkit import ops
from steerkit.ops import reference_sae as R

SHAPES = [(1, 8, 300, 5), (7, 769, 1000, 37), (83, 8, 300, 1)]
SHAPES += [(4096, 2304, 16384, 8), (1, 4096, 131072, 64)] if GPU else []


@pytest.mark.parametrize("backend", SAE_BACKENDS)
@pytest.mark.parametrize("dtype", SAE_DTYPES)
@pytest.mark.parametrize("T,d,F,S", SHAPES)
@pytest.mark.parametrize("activation", ["relu", "jumprelu", "topk", "none"])
def test_matches_reference(backend, dtype, T, d, F, S, activation):
    x = randn(T, d, dtype=dtype)
    W_enc, b_enc, _, b_dec, thr = make_sae(d, F, dtype, jump=True)
    feats = torch.randint(0, F, (S,), device=DEVICE)
    feats[0] = F - 1  # boundary
    if S > 2:
        feats[1], feats[2] = 0, feats[0]  # first feature and a duplicate
    out = ops.sae_encode_selected(x, W_enc, b_enc, feats, b_dec, activation, thr, backend=backend)
    assert out.shape == (T, S) and out.dtype == dtype
    pre = R.pre_activation(x, W_enc, b_enc, b_dec)[:, feats]
    want = {"relu": pre.clamp_min(0), "topk": pre.clamp_min(0), "none": pre,
            "jumprelu": torch.where(pre > thr.float()[feats], pre, 0.0)}[activation]
    scale = max(1.0, float(pre.abs().max()))
    if activation == "jumprelu":  # entries within rounding of the threshold may flip
        keep = (pre - thr.float()[feats]).abs() > 1e-2 * scale
        close(out.float()[keep], want[keep], dtype, scale)
    else:
        close(out, want, dtype, scale)


@pytest.mark.parametrize("backend", SAE_BACKENDS)
def test_int32_features_and_3d(backend):
    W_enc, b_enc, _, _, _ = make_sae(16, 100)
    x = randn(2, 3, 16)
    feats = torch.tensor([99, 3, 0], device=DEVICE, dtype=torch.int32)
    out = ops.sae_encode_selected(x, W_enc, b_enc, feats, backend=backend)
    assert out.shape == (2, 3, 3)
    close(out.reshape(6, 3), R.sae_encode_selected(x.reshape(6, 16), W_enc, b_enc, feats), torch.float32)


def test_bad_input():
    W_enc, b_enc, _, _, thr = make_sae(16, 50, jump=True)
    x = randn(3, 16)
    E = ops.SteerkitInputError
    f = torch.tensor([1, 50], device=DEVICE)
    with pytest.raises(E, match=r"'features' has values in \[1, 50\]"):
        ops.sae_encode_selected(x, W_enc, b_enc, f)
    with pytest.raises(E, match="'features' has values"):
        ops.sae_encode_selected(x, W_enc, b_enc, torch.tensor([-1], device=DEVICE))
    with pytest.raises(E, match="'features' must be a 1-D int"):
        ops.sae_encode_selected(x, W_enc, b_enc, f.float())
    with pytest.raises(E, match="'activation' must be one of"):
        ops.sae_encode_selected(x, W_enc, b_enc, f[:1], activation="gelu")
    with pytest.raises(E, match="'threshold' is required"):
        ops.sae_encode_selected(x, W_enc, b_enc, f[:1], activation="jumprelu")


@pytest.mark.parametrize("backend", SAE_BACKENDS)
def test_opcheck(backend):
    W_enc, b_enc, _, b_dec, thr = make_sae(8, 64, jump=True)
    x = randn(5, 8)
    f = torch.tensor([3, 63, 0], device=DEVICE)
    torch.library.opcheck(torch.ops.steerkit.sae_encode_selected.default, (x, W_enc, b_enc, f, b_dec, thr, 2, backend))


def test_compile_fullgraph():
    W_enc, b_enc, _, b_dec, thr = make_sae(8, 64, jump=True)
    x = randn(5, 8)
    f = torch.tensor([3, 63, 0], device=DEVICE)
    fn = torch.compile(lambda x: ops.sae_encode_selected(x, W_enc, b_enc, f, b_dec, "jumprelu", thr), fullgraph=True)
    close(fn(x), R.sae_encode_selected(x, W_enc, b_enc, f, b_dec, "jumprelu", thr), torch.float32)
