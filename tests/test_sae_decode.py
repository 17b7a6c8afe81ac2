"""sae_decode: sparse gather decode vs the reference, skipped (negative) indices, duplicates and
boundary indices, errors, opcheck and torch.compile."""
import pytest
import torch

from helpers import DEVICE, GPU, randn
from sae_helpers import SAE_BACKENDS, SAE_DTYPES, close, make_sae
from steerkit import ops
from steerkit.ops import reference_sae as R

SHAPES = [(1, 8, 300, 5), (7, 769, 1000, 64), (83, 8, 300, 16)]
SHAPES += [(4096, 2304, 16384, 64), (16, 4096, 131072, 64)] if GPU else []


@pytest.mark.parametrize("backend", SAE_BACKENDS)
@pytest.mark.parametrize("dtype", SAE_DTYPES)
@pytest.mark.parametrize("T,d,F,k", SHAPES)
def test_matches_reference(backend, dtype, T, d, F, k):
    _, _, W_dec, b_dec, _ = make_sae(d, F, dtype)
    values = torch.rand(T, k, device=DEVICE).to(dtype) * 3
    indices = torch.randint(0, F, (T, k), device=DEVICE)
    indices[:, 0] = F - 1  # boundary
    indices[0, -1] = 0
    for bd in (b_dec, None):
        out = ops.sae_decode(values, indices, W_dec, bd, backend=backend)
        assert out.shape == (T, d) and out.dtype == dtype
        want = R.sae_decode(values, indices, W_dec, bd)
        ref = (values.float()[:, :, None] * W_dec.float()[indices]).sum(1) + (0 if bd is None else bd.float())
        close(want, ref, dtype)  # reference by hand
        close(out, ref, dtype)


@pytest.mark.parametrize("backend", SAE_BACKENDS)
def test_padding_duplicates_int32_and_3d(backend):
    """Negative indices add nothing; duplicate indices add twice; int32 indices; [B, T, k]."""
    _, _, W_dec, b_dec, _ = make_sae(24, 50)
    idx = torch.tensor([[[3, 3, -1, 49], [-1, -1, -1, -1]], [[0, 1, 2, -5], [7, 7, 7, 7]]], device=DEVICE,
                       dtype=torch.int32)
    vals = randn(2, 2, 4)
    out = ops.sae_decode(vals, idx, W_dec, b_dec, backend=backend)
    assert out.shape == (2, 2, 24)
    close(out[0, 0], (vals[0, 0, 0] + vals[0, 0, 1]) * W_dec[3] + vals[0, 0, 3] * W_dec[49] + b_dec, torch.float32)
    assert torch.equal(out[0, 1], b_dec)
    close(out[1, 1], vals[1, 1].sum() * W_dec[7] + b_dec, torch.float32)


def test_jumprelu_output_roundtrip():
    """Decoding the padded output of sae_encode_jumprelu equals a dense JumpReLU decode."""
    W_enc, b_enc, W_dec, b_dec, thr = make_sae(16, 200, jump=True)
    x = randn(9, 16)
    v, i, c, o = ops.sae_encode_jumprelu(x, W_enc, b_enc, thr, 200, b_dec, backend="triton")
    pre = R.pre_activation(x, W_enc, b_enc, b_dec)
    dense = torch.where(pre > thr, pre, 0.0) @ W_dec + b_dec
    close(ops.sae_decode(v, i, W_dec, b_dec, backend="triton"), dense, torch.float32)


def test_bad_input():
    _, _, W_dec, b_dec, _ = make_sae(16, 50)
    v, i = randn(3, 4), torch.randint(0, 50, (3, 4), device=DEVICE)
    E = ops.SteerkitInputError
    with pytest.raises(E, match="'indices' has value 50 but must be < F = 50"):
        ops.sae_decode(v, i.clamp_min(50), W_dec)
    with pytest.raises(E, match="'indices' must have the shape of values"):
        ops.sae_decode(v, i[:, :3], W_dec)
    with pytest.raises(E, match="'indices' must be an int32 or int64"):
        ops.sae_decode(v, i.float(), W_dec)
    with pytest.raises(E, match="'b_dec' must have shape"):
        ops.sae_decode(v, i, W_dec, b_dec[:3])
    with pytest.raises(E, match="'values' contains NaN"):
        ops.sae_decode(v * float("nan"), i, W_dec)


@pytest.mark.parametrize("backend", SAE_BACKENDS)
def test_out_of_range_without_validation_is_skipped(backend):
    _, _, W_dec, _, _ = make_sae(16, 50)
    v, i = randn(2, 3), torch.tensor([[50, 1000, 2], [49, 2 ** 40, -2 ** 40]], device=DEVICE)
    out = ops.sae_decode(v, i, W_dec, backend=backend, validate=False)
    close(out[0], v[0, 2] * W_dec[2], torch.float32)
    close(out[1], v[1, 0] * W_dec[49], torch.float32)


@pytest.mark.parametrize("backend", SAE_BACKENDS)
def test_opcheck(backend):
    _, _, W_dec, b_dec, _ = make_sae(8, 64)
    v, i = randn(5, 3), torch.randint(-1, 64, (5, 3), device=DEVICE)
    torch.library.opcheck(torch.ops.steerkit.sae_decode.default, (v, i, W_dec, b_dec, backend))


def test_compile_fullgraph():
    _, _, W_dec, b_dec, _ = make_sae(8, 64)
    v, i = randn(5, 3), torch.randint(-1, 64, (5, 3), device=DEVICE)
    fn = torch.compile(lambda v, i: ops.sae_decode(v, i, W_dec, b_dec), fullgraph=True)
    close(fn(v, i), R.sae_decode(v, i, W_dec, b_dec), torch.float32)


@pytest.mark.parametrize("cfg", [(3, 4, 32, 4), (2, 64, 16, 4), (1, 8, 64, 4)])
def test_launch_configs(cfg):
    """Every launch configuration (tokens per program, rows in flight, d slice) gives the same sums,
    including a token count that is not a multiple of ROWS and k not a multiple of BJ."""
    import steerkit.kernels as K

    _, _, W_dec, b_dec, _ = make_sae(40, 90)
    values = randn(7, 11)
    indices = torch.randint(-1, 90, (7, 11), device=DEVICE)
    out = torch.empty(7, 40, device=DEVICE)
    K.sae_decode(values, indices, W_dec, b_dec, out, cfg=cfg)
    close(out, R.sae_decode(values, indices, W_dec, b_dec), torch.float32)
