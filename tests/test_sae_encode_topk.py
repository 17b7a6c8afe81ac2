"""sae_encode_topk: Triton kernel vs the float32 reference, exact tie order, slices, errors,
opcheck and torch.compile."""
import pytest
import torch

from helpers import DEVICE, FAST_BACKENDS, GPU, gpu_only, randn
from sae_helpers import SAE_BACKENDS, SAE_DTYPES, check_selection, close, integer_sae, make_sae
from steerkit import ops
from steerkit.ops import reference_sae as R

SHAPES = [(1, 8, 300, 5), (7, 769, 1000, 64), (83, 8, 300, 16)]
SHAPES += [(4096, 2304, 16384, 64), (64, 4096, 65536, 64), (5, 2304, 131072, 64)] if GPU else []


@pytest.mark.parametrize("backend", SAE_BACKENDS)
@pytest.mark.parametrize("dtype", SAE_DTYPES)
@pytest.mark.parametrize("T,d,F,k", SHAPES)
def test_matches_reference(backend, dtype, T, d, F, k):
    x = randn(T, d, dtype=dtype)
    W_enc, b_enc, _, b_dec, _ = make_sae(d, F, dtype)
    for bd in (b_dec, None):
        v, i = ops.sae_encode_topk(x, W_enc, b_enc, k, bd, backend=backend)
        assert v.shape == (T, k) and v.dtype == dtype and i.dtype == torch.int64
        check_selection(v, i, R.pre_activation(x, W_enc, b_enc, bd), k, dtype)


@pytest.mark.parametrize("backend", SAE_BACKENDS)
@pytest.mark.parametrize("T,F,k", [(7, 300, 16), (83, 257, 64), (1, 40, 40)])
def test_ties_lower_index_first(backend, T, F, k):
    """Integer inputs: exact pre-activations with many duplicates; the order must be exactly the
    reference's (value descending, then index ascending), including k == F."""
    W_enc, b_enc = integer_sae(12, F)
    x = torch.randint(-2, 3, (T, 12), device=DEVICE).float()
    v, i = ops.sae_encode_topk(x, W_enc, b_enc, k, backend=backend)
    pre = x @ W_enc
    assert (pre[:, :, None] == pre[:, None, :]).sum() > pre.numel()  # ties exist
    rv, ri = R.sae_encode_topk(x, W_enc, b_enc, k)
    assert torch.equal(i, ri) and torch.equal(v, rv)
    # order by hand: the kept (value, index) pairs are sorted by value desc, then index asc
    kept = pre.gather(1, i)
    assert bool(((kept[:, 1:] < kept[:, :-1]) | ((kept[:, 1:] == kept[:, :-1]) & (i[:, 1:] > i[:, :-1]))).all())


@pytest.mark.parametrize("path", ["running", "candidates", "gemm", "gemm-fp32-bias"])
def test_selection_compares_values_rounded_to_the_output_dtype(path):
    """float16: pre-activations 5000 +- small integers are exact in float32 but several round to
    the same float16 (spacing 4 there); the order is that of the float16 values, equal ones by
    lower index, as the values returned show. (float16: the interpreter converts it right.)"""
    import steerkit.kernels as K

    T, d, F, k = 9, 12, 300, 40
    g = torch.Generator().manual_seed(3)
    W = torch.randint(-3, 4, (d, F), generator=g).float()
    W[0] = 5000.0
    x = torch.randint(-2, 3, (T, d), generator=g).float()
    x[:, 0] = 1.0
    x16, W16, b16 = x.half().to(DEVICE), W.half().to(DEVICE), torch.zeros(F, dtype=torch.float16, device=DEVICE)
    rv, ri = R.sae_encode_topk(x16, W16, b16, k)
    assert not torch.equal(ri, R._sorted_desc(x16.float() @ W16.float(), k)[1])  # float32 order differs
    kept = (x16.float() @ W16.float()).half().gather(1, ri)
    assert bool(((kept[:, 1:] < kept[:, :-1]) | ((kept[:, 1:] == kept[:, :-1]) & (ri[:, 1:] > ri[:, :-1]))).all())
    v = torch.empty(T, k, device=DEVICE, dtype=torch.float16)
    i = torch.empty(T, k, device=DEVICE, dtype=torch.int64)
    if path.startswith("gemm"):  # float32 b_enc: the float32 product, rounded in the selection kernel
        b = b16.float() if path == "gemm-fp32-bias" else b16
        K.sae_encode_topk(x16, W16, b, None, k, v, i, chunks=(4, 64))
    else:
        K.sae_encode_topk(x16, W16, b16, None, k, v, i, path=path)
    assert torch.equal(i, ri) and torch.equal(v, rv)


@pytest.mark.parametrize("slices", [1, 2, 5])
def test_slices_agree(slices):
    """The kernel's result does not depend on how F is split across programs."""
    import steerkit.kernels as K

    W_enc, b_enc = integer_sae(16, 700, dup_every=2)
    x = torch.randint(-2, 3, (19, 16), device=DEVICE).float()
    v = torch.empty(19, 33, device=DEVICE)
    i = torch.empty(19, 33, device=DEVICE, dtype=torch.int64)
    K.sae_encode_topk(x, W_enc, b_enc, None, 33, v, i, slices=slices)
    rv, ri = R.sae_encode_topk(x, W_enc, b_enc, 33)
    assert torch.equal(i, ri) and torch.equal(v, rv)


@pytest.mark.parametrize("backend", SAE_BACKENDS)
def test_negative_preactivations_and_layouts(backend):
    """All pre-activations negative: the top k are still chosen by value (ReLU after), so values
    are 0 and indices are those of the largest negatives; 3-D and strided x."""
    W_enc, b_enc, _, _, _ = make_sae(24, 300)
    b_enc = b_enc - 100.0
    x = randn(2, 5, 48)[..., ::2]
    v, i = ops.sae_encode_topk(x, W_enc, b_enc, 7, backend=backend)
    assert v.shape == (2, 5, 7) and bool((v == 0).all())
    rv, ri = R.sae_encode_topk(x.reshape(10, 24), W_enc, b_enc, 7)
    pre = R.pre_activation(x.reshape(10, 24), W_enc, b_enc)
    close(pre.gather(1, i.reshape(10, 7)), pre.gather(1, ri), torch.float32)


def test_bad_input():
    W_enc, b_enc, _, b_dec, _ = make_sae(16, 50)
    x = randn(3, 16)
    E = ops.SteerkitInputError
    with pytest.raises(E, match="'k' must be in"):
        ops.sae_encode_topk(x, W_enc, b_enc, 51)
    with pytest.raises(E, match="'k' must be in"):
        ops.sae_encode_topk(x, W_enc, b_enc, 0)
    with pytest.raises(E, match="'W_enc' must have shape"):
        ops.sae_encode_topk(x, W_enc.T, b_enc, 4)
    with pytest.raises(E, match="'b_enc' must have shape"):
        ops.sae_encode_topk(x, W_enc, b_enc[:-1], 4)
    with pytest.raises(E, match="'b_dec' must have shape"):
        ops.sae_encode_topk(x, W_enc, b_enc, 4, b_dec[:-1])
    with pytest.raises(E, match="'b_dec' contains NaN"):
        ops.sae_encode_topk(x, W_enc, b_enc, 4, b_dec * float("nan"))
    with pytest.raises(E, match="'h' must be float32"):
        ops.sae_encode_topk(x.long(), W_enc, b_enc, 4)
    with pytest.raises(ops.BackendError, match="3 rows, fewer than 1024"):
        ops.sae_encode_topk(x, W_enc, b_enc, 4, backend="cuda")
    with pytest.raises(ops.BackendError, match="no CUDA C"):
        ops.sae_encode_jumprelu(x, W_enc, b_enc, b_enc, 4, backend="cuda")
    xl = randn(1024, 16)
    with pytest.raises(ops.BackendError, match="share a 16-bit dtype" if GPU else "not a CUDA tensor"):
        ops.sae_encode_topk(xl if GPU else xl.half(), W_enc if GPU else W_enc.half(), b_enc if GPU else b_enc.half(),
                            4, backend="cuda")
    with pytest.raises(ops.BackendError, match="k=300 exceeds"):
        W2, b2, *_ = make_sae(16, 400)
        ops.sae_encode_topk(x, W2, b2, 300, backend="triton")


@pytest.mark.parametrize("backend", SAE_BACKENDS)
def test_opcheck(backend):
    W_enc, b_enc, _, b_dec, _ = make_sae(8, 64)
    x = randn(5, 8)
    torch.library.opcheck(torch.ops.steerkit.sae_encode_topk.default, (x, W_enc, b_enc, b_dec, 6, backend))


def test_compile_fullgraph():
    W_enc, b_enc, _, b_dec, _ = make_sae(8, 64)
    x = randn(5, 8)
    f = torch.compile(lambda x: ops.sae_encode_topk(x, W_enc, b_enc, 6, b_dec), fullgraph=True)
    v, i = f(x)
    rv, ri = R.sae_encode_topk(x, W_enc, b_enc, 6, b_dec)
    close(v, rv, torch.float32)
    assert torch.equal(i, ri)


@gpu_only
def test_no_large_intermediate():
    """Peak memory beyond inputs and outputs stays under 5% of the bf16 [T, F] matrix."""
    T, d, F = 4096, 2304, 16384
    x = randn(T, d, dtype=torch.bfloat16)
    W_enc, b_enc, *_ = make_sae(d, F, torch.bfloat16)
    ops.sae_encode_topk(x, W_enc, b_enc, 64, backend="triton")
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    v, i = ops.sae_encode_topk(x, W_enc, b_enc, 64, backend="triton")
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base - v.nbytes - i.nbytes
    assert extra < 0.05 * 2 * T * F, extra


def _kernel_module():
    import importlib

    return importlib.import_module("steerkit.kernels.sae_encode_topk")


@pytest.mark.parametrize("capacity,chunk", [(None, 7), (32, None), (64, 10)])
def test_candidates_chunks_and_overflow_fallback(capacity, chunk):
    """Candidate path: rows split into chunks, and candidate buffers too small for the rows with
    many ties at theta (those rows must be recomputed exactly and counted)."""
    import steerkit.kernels as K

    M = _kernel_module()
    W_enc, b_enc = integer_sae(12, 600, dup_every=2)
    x = torch.randint(-2, 3, (23, 12), device=DEVICE).float()
    v = torch.empty(23, 20, device=DEVICE)
    i = torch.empty(23, 20, device=DEVICE, dtype=torch.int64)
    before = M.STATS["fallback_rows"]
    K.sae_encode_topk(x, W_enc, b_enc, None, 20, v, i, capacity=capacity, chunk=chunk)
    rv, ri = R.sae_encode_topk(x, W_enc, b_enc, 20)
    assert torch.equal(i, ri) and torch.equal(v, rv)
    if capacity == 32:  # 600 / 16 sampled features: many rows have > 32 candidates
        assert M.STATS["fallback_rows"] > before


@pytest.mark.parametrize("atomic,tma", [(False, False), (True, False), (True, True)])
def test_candidates_sample_and_rest(atomic, tma):
    """F large enough for a sample (the first F / 16 features) and a rest: both halves hold
    top-k entries; both append epilogues (a cumsum per row, an atomic per entry); x - b_dec;
    loads through tensor descriptors (TMA) in 16-bit inputs."""
    import steerkit.kernels as K

    M = _kernel_module()
    T, d, F, k = 37, 32, 4096, 24
    n_s, _, _, tiles = M.candidate_config(T, d, F, k, False)
    assert 0 < n_s < F
    dtype = torch.float16 if tma else torch.float32  # descriptors: 16-bit inputs only
    W_enc, b_enc, _, b_dec, _ = make_sae(d, F, dtype)
    b_enc = b_enc.clone()
    b_enc[:n_s] -= 0.5  # fewer winners in the sample: rows take most of their top k from the rest
    x = randn(T, d, dtype=dtype)
    v = torch.empty(T, k, device=DEVICE, dtype=dtype)
    i = torch.empty(T, k, device=DEVICE, dtype=torch.int64)
    assert M._tma_ok(x, W_enc) == tma
    K.sae_encode_topk(x, W_enc, b_enc, b_dec, k, v, i, tiles=tiles[:6] + (atomic, tma))
    pre = R.pre_activation(x, W_enc, b_enc, b_dec)
    check_selection(v, i, pre, k, dtype)
    assert bool((i < n_s).any()) and bool((i >= n_s).any())


@pytest.mark.parametrize("capacity", [None, 4096])
def test_candidates_ties_at_theta_exact(capacity):
    """Integer pre-activations tie at the sample's k-th value everywhere: every tied entry is a
    candidate, so the exact tie order (lower index first) comes out of the candidates alone when
    the buffer holds them all (capacity F: no row recomputed), and through the fallback of the
    overflowing rows with the default capacity."""
    import steerkit.kernels as K

    M = _kernel_module()
    T, F, k = 11, 4096, 20
    n_s = M.candidate_config(T, 12, F, k, False)[0]
    W_enc, b_enc = integer_sae(12, F, dup_every=2)
    b_enc[:n_s] += 100.0  # the whole top k lies in the sample, which ties at its k-th value
    x = torch.randint(-2, 3, (T, 12), device=DEVICE).float()
    v = torch.empty(T, k, device=DEVICE)
    i = torch.empty(T, k, device=DEVICE, dtype=torch.int64)
    before = M.STATS["fallback_rows"]
    K.sae_encode_topk(x, W_enc, b_enc, None, k, v, i, path="candidates", capacity=capacity)
    rv, ri = R.sae_encode_topk(x, W_enc, b_enc, k)
    assert torch.equal(i, ri) and torch.equal(v, rv)
    assert bool((ri < n_s).all())
    if capacity == F:
        assert M.STATS["fallback_rows"] == before


@pytest.mark.parametrize("T,F,k,chunks", [(23, 600, 20, (8, 128)), (19, 700, 33, (19, 700)), (40, 1000, 64, (16, 256)),
                                          (9, 300, 16, (128, 64)), (11, 200, 40, (8, 16))])
def test_gemm_chunks_exact(T, F, k, chunks):
    """GEMM path: the product in chunks of rows and features (sizes that do not divide T or F),
    each merged into running lists through pending lists that fill up and flush (chunks of 16
    features against k = 40: lists short of KW keys over several chunks); integer
    pre-activations with many ties: the exact order of the reference (lower index first)."""
    import steerkit.kernels as K

    W_enc, b_enc = integer_sae(12, F, dup_every=2)
    x = torch.randint(-2, 3, (T, 12), device=DEVICE).float()
    v = torch.empty(T, k, device=DEVICE)
    i = torch.empty(T, k, device=DEVICE, dtype=torch.int64)
    K.sae_encode_topk(x, W_enc, b_enc, None, k, v, i, chunks=chunks)
    rv, ri = R.sae_encode_topk(x, W_enc, b_enc, k)
    assert torch.equal(i, ri) and torch.equal(v, rv)


@pytest.mark.parametrize("dtype", SAE_DTYPES)
def test_gemm_random_with_b_dec(dtype):
    """GEMM path on random weights, x - b_dec, x in another dtype than W_enc, top k spread over
    every chunk of features."""
    import steerkit.kernels as K

    T, d, F, k = 45, 32, 1100, 24
    W_enc, b_enc, _, b_dec, _ = make_sae(d, F, dtype)
    x = randn(T, d, dtype=torch.float32)
    v = torch.empty(T, k, device=DEVICE, dtype=dtype)
    i = torch.empty(T, k, device=DEVICE, dtype=torch.int64)
    K.sae_encode_topk(x, W_enc, b_enc, b_dec, k, v, i, chunks=(32, 256))
    xs = (x - b_dec.float()).to(dtype)  # x - b_dec rounds once to W_enc's dtype
    check_selection(v, i, R.pre_activation(xs, W_enc, b_enc), k, dtype)
    assert bool((i >= 256).any()) and bool((i < 256).any())


def test_gemm_is_the_default_from_gemm_min_t():
    M = _kernel_module()
    x = torch.zeros(M.GEMM_MIN_T, 8, device=DEVICE)
    W = torch.zeros(8, 16, device=DEVICE)
    assert M.topk_path(x, W) == "gemm"
    assert M.topk_path(x[: M.GEMM_MIN_T - 1], W) == M.default_path(M.GEMM_MIN_T - 1) == "candidates"
    assert M.topk_path(x[:M.SMALL_T], W) == "running"
    budget = 0.05 * 2 * 4096 * 65536
    for esize in (2, 4):  # the 16-bit product, float32
        tc, fc = M.gemm_config(4096, 4096, 65536, 64, 0, torch.device("cpu"), esize=esize)[:2]
        assert tc * fc * esize < budget and tc * fc * esize >= 8 << 20


def test_gemm_cuda_chunks_widen_only_when_larger():
    """The CUDA selection's chunks: 8192 features where that gives a larger chunk (x - b_dec
    takes part of the budget), else 4096 with as many rows as fit; always within the budget."""
    M = _kernel_module()
    cpu = torch.device("cpu")
    for T, d, F in [(4096, 4096, 65536), (16384, 4096, 65536), (4096, 2304, 16384), (4096, 4096, 131072)]:
        budget = 0.05 * 2 * T * F - M.GEMM_RESERVE

        def rows(w, shift):  # the most rows (a power of two, from 128) of a w-wide chunk in the budget
            r = 128
            while r < T and 2 * r * (2 * w + 64 * 8 + shift) <= budget:
                r *= 2
            return r

        for shift in (0, 2 * d):  # without and with b_dec
            tc, fc = M.gemm_config(T, d, F, 64, shift, cpu, select="cuda")[:2]
            assert tc * (2 * fc + 64 * 8 + shift) <= budget
            wide = rows(8192, shift) * 8192 > rows(4096, shift) * 4096
            assert (tc, fc) == ((rows(8192, shift), 8192) if wide else (rows(4096, shift), 4096))
            assert wide == (shift > 0)  # these shapes widen only with b_dec


@pytest.mark.parametrize("ascending", [True, False])
def test_gemm_later_chunks_outrank_earlier(ascending):
    """Encoder biases rising with the feature index: every entry of each later chunk beats the
    running lists, more than the pending slots hold (the chunk is rescanned with merges);
    falling: almost nothing after the first chunk beats them (the fast scan's common case)."""
    import steerkit.kernels as K

    T, F, k = 13, 640, 20
    W_enc, b_enc = integer_sae(12, F, dup_every=2)
    b_enc = b_enc + (1 if ascending else -1) * 100.0 * torch.arange(F, device=DEVICE).float()
    x = torch.randint(-2, 3, (T, 12), device=DEVICE).float()
    v = torch.empty(T, k, device=DEVICE)
    i = torch.empty(T, k, device=DEVICE, dtype=torch.int64)
    K.sae_encode_topk(x, W_enc, b_enc, None, k, v, i, chunks=(8, 128))
    rv, ri = R.sae_encode_topk(x, W_enc, b_enc, k)
    assert torch.equal(i, ri) and torch.equal(v, rv)


@gpu_only
def test_gemm_repeats_its_compiled_launch():
    """The selection kernel goes through Triton's generic launch once per variant (first, middle
    and last chunk of features); the other chunks repeat the compiled launch (_launch.Repeat)
    with new offsets and output rows, and the result is still the exact selection."""
    import steerkit.kernels as K

    M = _kernel_module()
    T, d, F, k = 2048, 64, 8192, 16
    W_enc, b_enc, *_ = make_sae(d, F, torch.bfloat16)
    x = randn(T, d, dtype=torch.bfloat16)
    v = torch.empty(T, k, device=DEVICE, dtype=torch.bfloat16)
    i = torch.empty(T, k, device=DEVICE, dtype=torch.int64)
    generic, run = [], M._gemm_select_kernel.run
    M._gemm_select_kernel.run = lambda *a, **kw: generic.append(1) or run(*a, **kw)
    try:
        K.sae_encode_topk(x, W_enc, b_enc, None, k, v, i, chunks=(512, 1024))  # 4 x 8 chunks
    finally:
        del M._gemm_select_kernel.run
    assert len(generic) == 3
    check_selection(v, i, R.pre_activation(x, W_enc, b_enc), k, torch.bfloat16)


# --- the CUDA selection (csrc/sae_encode_topk.cu): GPU with the extension only -------------------
cuda_select = pytest.mark.skipif("cuda" not in FAST_BACKENDS, reason="needs a GPU and the CUDA extension")


def _cuda_encode(x, W_enc, b_enc, b_dec, k, chunks=None):
    import steerkit.kernels as K
    from steerkit import _cuda_ext

    _cuda_ext.load()
    v = torch.empty(x.shape[0], k, device=DEVICE, dtype=x.dtype)
    i = torch.empty(x.shape[0], k, device=DEVICE, dtype=torch.int64)
    K.sae_encode_topk(x, W_enc, b_enc, b_dec, k, v, i, path="gemm", chunks=chunks, select="cuda")
    return v, i


@cuda_select
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("T,F,k,chunks", [
    (300, 5000, 64, (128, 1000)),  # 16-byte rows; F not a multiple of the chunk
    (100, 3001, 33, (64, 777)),  # odd widths: the scalar path
    (50, 9000, 200, (32, 4500)),  # KW = 256; 4500 columns: segments of 2048 (scalar)
    (70, 12000, 16, (64, 6000)),  # two 4096-column segments (vector)
    (260, 8192, 64, (128, 4096)),  # full first segments: the lists start from seeds (vector)
    (9, 40, 30, (16, 16)),  # chunks narrower than KW: lists short of KW keys over chunks
    (1030, 2048, 64, None),  # default chunks
])
def test_cuda_select_exact_ties(dtype, T, F, k, chunks):
    """Integer inputs: the 16-bit products are exact and full of ties, so the result must be
    exactly the reference's: value descending, then the lower index."""
    W_enc, b_enc = integer_sae(12, F, dup_every=2)
    x = torch.randint(-2, 3, (T, 12), device=DEVICE).float()
    x, W_enc, b_enc = x.to(dtype), W_enc.to(dtype), b_enc.to(dtype)
    v, i = _cuda_encode(x, W_enc, b_enc, None, k, chunks)
    rv, ri = R.sae_encode_topk(x, W_enc, b_enc, k)
    assert torch.equal(i, ri) and torch.equal(v, rv)


@cuda_select
@pytest.mark.parametrize("k", [16, 33, 64, 100])
@pytest.mark.parametrize("scale", [1.0, 1e-3])
def test_cuda_select_first_segment(k, scale):
    """One 8192-column chunk as first and last chunk, fresh random bf16 values (scale 1e-3: few
    distinct values, so many ties at the threshold), plus rows that defeat the capped start
    (all equal: every value ties; a ramp of 200 equal values above the rest), against a stable
    sort: value descending, then the lower column."""
    from steerkit import _cuda_ext

    _cuda_ext.load()
    R_, NF = 300, 8192
    P = (torch.randn(R_, NF, device=DEVICE) * scale).bfloat16()
    P[0] = 0.5
    P[1, :] = -1.0
    P[1, 1000:1200] = 2.0
    P[2] = -P[2].abs()  # all negative: values clamp to 0
    kw = max(16, 1 << (k - 1).bit_length())
    run = torch.empty(R_, kw, device=DEVICE, dtype=torch.int64)
    v = torch.empty(R_, k, device=DEVICE, dtype=torch.bfloat16)
    i = torch.empty(R_, k, device=DEVICE, dtype=torch.int64)
    torch.ops.steerkit_cuda.sae_encode_topk_select(P, run, v, i, 5, k, True, True)
    sv, si = torch.sort(P.float(), dim=1, descending=True, stable=True)
    assert torch.equal(i, si[:, :k] + 5)
    assert torch.equal(v, sv[:, :k].clamp_min(0).bfloat16())


@cuda_select
@pytest.mark.parametrize("k", [16, 64, 100, 200])
def test_cuda_select_staged_later_chunk(k):
    """A later chunk's one-pass path (append_staged) and its fallbacks to the rounds, on rows
    built to hit them: one lane with 8 / 9 / 10 groups above theta (a lane stages 8), as many
    keys above theta over the warp as the candidate slots (128; 64 for KW = 256) and one more, values equal to theta (they lose: theta
    has the lower index), a negative theta, and fresh random rows with more or fewer newcomers;
    against a stable sort of both chunks."""
    from steerkit import _cuda_ext

    _cuda_ext.load()
    R_, NF = 64, 4096
    P0 = torch.randn(R_, NF, device=DEVICE).bfloat16()
    P1 = (torch.randn(R_, NF, device=DEVICE) * torch.linspace(0.5, 1.5, R_, device=DEVICE)[:, None]).bfloat16()
    top = torch.sort(P0.float(), dim=1, descending=True).values
    kw = max(16, 1 << (k - 1).bit_length())
    theta = top[:, kw - 1]  # the lists' KW-th value after the first chunk
    lane0 = torch.arange(16, device=DEVICE) * 256  # lane 0's group j starts at column 256 j
    for r, groups in [(0, 8), (1, 9), (2, 10)]:
        P1[r] = -1.0
        P1[r, lane0[:groups]] = 10.0
    slots = 64 if kw == 256 else 128
    spread = torch.arange(slots + 1, device=DEVICE) * 31  # one a lane and group, <= 5 groups a lane
    for r, n in [(3, slots), (4, slots + 1)]:
        P1[r] = -1.0
        P1[r, spread[:n]] = (10.0 + torch.arange(n, device=DEVICE).float() / 64).bfloat16()
    P1[5] = theta[5].bfloat16()  # every value ties with theta: none enters
    P1[5, 7] = 20.0
    P0[6] = -P0[6].abs()  # a negative theta: the rounds
    for r in range(7, R_):
        if r % 3 == 0:
            P1[r] = P1[r] + 2.0  # many newcomers
    run = torch.empty(R_, kw, device=DEVICE, dtype=torch.int64)
    v = torch.empty(R_, k, device=DEVICE, dtype=torch.bfloat16)
    i = torch.empty(R_, k, device=DEVICE, dtype=torch.int64)
    select = torch.ops.steerkit_cuda.sae_encode_topk_select
    select(P0, run, v, i, 0, k, True, False)
    select(P1, run, v, i, NF, k, False, True)
    sv, si = torch.sort(torch.cat([P0, P1], dim=1).float(), dim=1, descending=True, stable=True)
    assert torch.equal(i, si[:, :k])
    assert torch.equal(v, sv[:, :k].clamp_min(0).bfloat16())


@cuda_select
@pytest.mark.parametrize("ascending", [True, False])
def test_cuda_select_later_chunks_outrank_earlier(ascending):
    """Biases rising with the feature index: every entry of each later chunk beats the lists,
    far more than the 64 candidate slots (merges in rounds); falling: almost nothing does."""
    T, F, k = 37, 3000, 40
    W_enc, b_enc = integer_sae(12, F, dup_every=2)
    b_enc = (b_enc + (1 if ascending else -1) * 100.0 * torch.arange(F, device=DEVICE).float()).bfloat16()
    x = torch.randint(-2, 3, (T, 12), device=DEVICE).bfloat16()
    W_enc = W_enc.bfloat16()
    v, i = _cuda_encode(x, W_enc, b_enc, None, k, (16, 512))
    rv, ri = R.sae_encode_topk(x, W_enc, b_enc, k)
    assert torch.equal(i, ri) and torch.equal(v, rv)


@cuda_select
@pytest.mark.parametrize("T,d,F", [(4096, 2304, 16384), (1024, 4096, 65536)])
def test_cuda_select_random(T, d, F):
    """Random bf16 weights with b_dec through the op (backend="cuda"), against the float32
    reference (the product's rounding may differ in the last bit); all-negative rows clamp to 0."""
    W_enc, b_enc, _, b_dec, _ = make_sae(d, F, torch.bfloat16)
    x = randn(T, d, dtype=torch.bfloat16)
    v, i = ops.sae_encode_topk(x, W_enc, b_enc, 64, b_dec, backend="cuda")
    xs = (x.float() - b_dec.float()).bfloat16()
    check_selection(v, i, R.pre_activation(xs, W_enc, b_enc), 64, torch.bfloat16)
    neg = b_enc - 1000.0
    v, i = ops.sae_encode_topk(x[:1024], W_enc, neg, 64, backend="cuda")
    assert bool((v == 0).all())
    check_selection(v, i, R.pre_activation(x[:1024], W_enc, neg), 64, torch.bfloat16)


@cuda_select
def test_cuda_select_is_auto_once_loaded_and_small_memory():
    """auto picks the CUDA selection once the extension is loaded (16-bit, >= 1024 rows) and
    stays within 5% of the bf16 [T, F] matrix."""
    from steerkit import _cuda_ext
    from steerkit.ops import _sae
    from steerkit.ops.sae_encode_topk import cuda_refusal

    _cuda_ext.load()
    T, d, F = 4096, 2304, 16384
    x = randn(T, d, dtype=torch.bfloat16)
    W_enc, b_enc, *_ = make_sae(d, F, torch.bfloat16)
    assert _sae.backend_for("sae_encode_topk", x, None, None, cuda_refusal(x, W_enc, b_enc, 64)) == "cuda"
    ops.sae_encode_topk(x, W_enc, b_enc, 64)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    v, i = ops.sae_encode_topk(x, W_enc, b_enc, 64)
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base - v.nbytes - i.nbytes
    assert extra < 0.05 * 2 * T * F, extra
    check_selection(v, i, R.pre_activation(x, W_enc, b_enc), 64, torch.bfloat16)
