"""sae_encode_jumprelu: fixed-capacity sparse output vs the reference, overflow, ties, padding,
errors, opcheck and torch.compile."""
import pytest
import torch

from helpers import DEVICE, GPU, randn
from sae_helpers import SAE_BACKENDS, SAE_DTYPES, close, integer_sae, make_sae
from steerkit import ops
from steerkit.ops import reference_sae as R

SHAPES = [(1, 8, 300, 64), (7, 769, 1000, 16), (83, 8, 300, 8)]
SHAPES += [(4096, 2304, 16384, 64), (7, 4096, 65536, 128)] if GPU else []


def _check(out, x, W_enc, b_enc, thr, cap, b_dec, dtype):
    v, i, c, o = out
    pre = R.pre_activation(x, W_enc, b_enc, b_dec)
    n_active = (pre > thr.float()).sum(-1)
    # counts may differ from the reference only for features within rounding of the threshold
    slack = ((pre - thr.float()).abs() < 1e-2 * max(1.0, float(pre.abs().max()))).sum(-1)
    assert bool(((c + o - n_active).abs() <= slack).all())
    assert bool((c == torch.minimum(c + o, torch.tensor(cap))).all())
    used = torch.arange(cap, device=x.device) < c[:, None].long()
    assert bool((i[~used] == -1).all()) and bool((v[~used] == 0).all())
    got = pre.gather(1, i.clamp_min(0))
    close(torch.where(used, v.float(), 0.0), torch.where(used, got, 0.0), dtype, max(1.0, float(pre.abs().max())))
    rv, ri, rc, ro = R.sae_encode_jumprelu(x, W_enc, b_enc, thr, cap, b_dec)
    if torch.equal(rc + ro, c + o):  # same active sets: same kept values
        close(v, rv, dtype, max(1.0, float(pre.abs().max())))


@pytest.mark.parametrize("backend", SAE_BACKENDS)
@pytest.mark.parametrize("dtype", SAE_DTYPES)
@pytest.mark.parametrize("T,d,F,cap", SHAPES)
def test_matches_reference(backend, dtype, T, d, F, cap):
    x = randn(T, d, dtype=dtype)
    W_enc, b_enc, _, b_dec, thr = make_sae(d, F, dtype, jump=True)
    for bd in (b_dec, None):
        out = ops.sae_encode_jumprelu(x, W_enc, b_enc, thr, cap, bd, backend=backend)
        assert [t.dtype for t in out] == [dtype, torch.int64, torch.int32, torch.int32]
        _check(out, x, W_enc, b_enc, thr, cap, bd, dtype)


@pytest.mark.parametrize("backend", SAE_BACKENDS)
def test_overflow_ties_and_padding_exact(backend):
    """Integer inputs (exact, with ties): rows with more active features than capacity keep the
    largest (lower index first on ties) and count the rest; rows with none are all padding."""
    F = 257
    W_enc, b_enc = integer_sae(10, F)
    thr = torch.full((F,), 0.5, device=DEVICE)
    thr[::7] = 100.0  # never active
    x = torch.randint(-2, 3, (31, 10), device=DEVICE).float()
    x[3] = 0  # a row with nothing active
    cap = 16
    v, i, c, o = ops.sae_encode_jumprelu(x, W_enc, b_enc, thr, cap, backend=backend)
    rv, ri, rc, ro = R.sae_encode_jumprelu(x, W_enc, b_enc, thr, cap)
    assert torch.equal(i, ri) and torch.equal(v, rv) and torch.equal(c, rc) and torch.equal(o, ro)
    assert int(o.max()) > 0 and int(c[3]) == 0 and int(o[3]) == 0 and bool((i[3] == -1).all())
    n = ((x @ W_enc) > thr).sum(-1)
    assert torch.equal((c + o).long(), n)  # by hand


def test_bad_input():
    W_enc, b_enc, _, _, thr = make_sae(16, 50, jump=True)
    x = randn(3, 16)
    E = ops.SteerkitInputError
    with pytest.raises(E, match="'capacity' must be in"):
        ops.sae_encode_jumprelu(x, W_enc, b_enc, thr, 0)
    with pytest.raises(E, match="'threshold' is required"):
        ops.sae_encode_jumprelu(x, W_enc, b_enc, None, 4)
    with pytest.raises(E, match="'threshold' must have shape"):
        ops.sae_encode_jumprelu(x, W_enc, b_enc, thr[:3], 4)
    with pytest.raises(E, match="'threshold' contains NaN"):
        ops.sae_encode_jumprelu(x, W_enc, b_enc, thr * float("inf"), 4)


@pytest.mark.parametrize("backend", SAE_BACKENDS)
def test_opcheck(backend):
    W_enc, b_enc, _, b_dec, thr = make_sae(8, 64, jump=True)
    x = randn(5, 8)
    torch.library.opcheck(torch.ops.steerkit.sae_encode_jumprelu.default, (x, W_enc, b_enc, thr, b_dec, 6, backend))


def test_compile_fullgraph():
    W_enc, b_enc, _, b_dec, thr = make_sae(8, 64, jump=True)
    x = randn(2, 3, 8)
    f = torch.compile(lambda x: ops.sae_encode_jumprelu(x, W_enc, b_enc, thr, 6, b_dec), fullgraph=True)
    got = f(x)
    want = ops.sae_encode_jumprelu(x, W_enc, b_enc, thr, 6, b_dec, backend="torch")
    assert got[0].shape == (2, 3, 6) and got[2].shape == (2, 3)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("buffer,chunk", [(None, 6), (16, None)])
def test_candidate_buffer_overflow_fallback(buffer, chunk):
    """Rows with more active features than the candidate buffer are recomputed exactly."""
    import importlib

    import steerkit.kernels as K

    M = importlib.import_module("steerkit.kernels.sae_encode_topk")
    F = 300
    W_enc, b_enc = integer_sae(10, F)
    thr = torch.full((F,), 0.5, device=DEVICE)
    x = torch.randint(-2, 3, (17, 10), device=DEVICE).float()
    out = [torch.empty(17, 12, device=DEVICE), torch.empty(17, 12, device=DEVICE, dtype=torch.int64),
           torch.empty(17, device=DEVICE, dtype=torch.int32), torch.empty(17, device=DEVICE, dtype=torch.int32)]
    before = M.STATS["fallback_rows"]
    K.sae_encode_jumprelu(x, W_enc, b_enc, None, thr, 12, *out, buffer=buffer, chunk=chunk)
    ref = R.sae_encode_jumprelu(x, W_enc, b_enc, thr, 12)
    for a, b in zip(out, ref):
        assert torch.equal(a, b)
    if buffer == 16:
        assert M.STATS["fallback_rows"] - before == int((((x @ W_enc) > thr).sum(1) > 16).sum()) > 0
