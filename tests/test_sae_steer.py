"""sae_steer_ / sae_steer with SaeSteeringTable: fused per-row clamp / add vs the reference and
vs a dense SAE computed by hand, identity rows bit-identical, only-active, table updates in
place, errors, opcheck, torch.compile and CUDA-graph replay."""
import importlib

import pytest
import torch

from helpers import DEVICE, GPU, _cuda_ext_ok, assert_untouched, gpu_only, randn
from sae_helpers import SAE_BACKENDS, SAE_DTYPES, close, make_sae
from steerkit import ops
from steerkit.ops import reference_sae as R
from steerkit.steering.sae_table import SaeSteeringTable

SHAPES = [(1, 8, 300), (7, 769, 1000), (83, 8, 300)]
SHAPES += [(4096, 2304, 16384), (16, 4096, 1000)] if GPU else []


def _table(d, F, dtype=torch.float32, activation="jumprelu"):
    W_enc, b_enc, W_dec, b_dec, thr = make_sae(d, F, dtype, jump=True)
    t = SaeSteeringTable(W_enc, b_enc, W_dec, b_dec, thr, activation=activation, capacity=5, max_features=8)
    t.set(1, clamp={0: 2.0, F - 1: 0.0})
    t.set(2, add={5 % F: 1.5, 7 % F: -0.5})
    t.set(3, clamp={3: 1.0, 11 % F: -1.0}, add={2: 0.25}, only_active=True)
    t.set(4, clamp={f: float(f % 3) for f in range(8)})  # all 8 slots
    return t


def _dense(h, table, config):
    """What the table means, computed with the whole SAE (not the table's copies)."""
    x = h.float()
    pre = R.pre_activation(x.reshape(-1, table.d), table.W_enc, table.b_enc, table.b_dec)
    thr = table.threshold.float() if table.threshold is not None else torch.zeros(pre.shape[1], device=h.device)
    active = pre > thr
    f = torch.where(active, pre, 0.0)
    y = x.reshape(-1, table.d).clone()
    for t, c in enumerate(config.reshape(-1).tolist()):
        if not 1 <= c <= table.capacity:
            continue
        for s in range(int(table.n_feat[c])):
            i, kind, v = int(table.features[c, s]), int(table.kind[c, s]), float(table.value[c, s])
            if kind & R.KIND_CLAMP:
                if kind & R.KIND_ONLY_ACTIVE and not bool(active[t, i]):
                    continue
                y[t] += (v - f[t, i]) * table.W_dec[i].float()
            else:
                y[t] += v * table.W_dec[i].float()
    return y.reshape(h.shape)


@pytest.mark.parametrize("backend", SAE_BACKENDS)
@pytest.mark.parametrize("dtype", SAE_DTYPES)
@pytest.mark.parametrize("T,d,F", SHAPES)
def test_matches_reference(backend, dtype, T, d, F):
    h = randn(T, d, dtype=dtype)
    table = _table(d, F, dtype)
    config = torch.randint(0, table.capacity + 1, (T,), device=DEVICE, dtype=torch.int32)
    ref = R.sae_steer(h.float(), config, *table.tensors())
    a = h.clone()
    assert ops.sae_steer_(a, config, table, backend=backend) is a
    b = ops.sae_steer(h, config, table, backend=backend)
    for y in (a, b):
        close(y, ref, dtype)
        assert_untouched(y, h, config == 0)
        assert_untouched(y, h, config == 5)  # an empty configuration
    if dtype == torch.float32:  # the table's copies mean what the SAE says
        close(b, _dense(h, table, config), dtype)


@pytest.mark.parametrize("backend", SAE_BACKENDS)
@pytest.mark.parametrize("activation", ["relu", "topk"])
def test_clamp_sets_the_feature(backend, activation):
    """After clamping an active feature, re-encoding the row gives the target (the decoder row
    is scaled so that W_dec[i] . W_enc[:, i] = 1, and b_enc[i] makes the feature active)."""
    d, F, i = 64, 100, 17
    W_enc, b_enc, W_dec, b_dec, _ = make_sae(d, F)
    b_enc[i] = 5.0
    W_dec[i] = W_dec[i] / (W_dec[i] @ W_enc[:, i])
    table = SaeSteeringTable(W_enc, b_enc, W_dec, b_dec, activation=activation, capacity=2)
    table.set(1, clamp={i: 3.0})
    h = randn(6, d)
    y = ops.sae_steer(h, torch.ones(6, device=DEVICE, dtype=torch.int32), table, backend=backend)
    got = ops.sae_encode_selected(y, W_enc, b_enc, torch.tensor([i], device=DEVICE), b_dec, activation)
    close(got[:, 0], torch.full((6,), 3.0, device=DEVICE), torch.float32)


@pytest.mark.parametrize("backend", SAE_BACKENDS)
def test_only_active_and_out_of_range_configs(backend):
    d, F = 32, 64
    table = _table(d, F, activation="relu")
    h = randn(10, d)
    config = torch.tensor([0, 3, 3, 6, 1000, -1, 2 ** 31 - 1, 1, 4, 2], device=DEVICE, dtype=torch.int32)
    y = ops.sae_steer(h, config, table, backend=backend, validate=False)
    ok = (config >= 1) & (config <= 5)
    assert_untouched(y, h, ~ok)
    close(y, _dense(h, table, config), torch.float32)


@pytest.mark.parametrize("backend", SAE_BACKENDS)
def test_table_updates_in_place(backend):
    d, F = 24, 50
    table = _table(d, F)
    ptrs = [t.data_ptr() for t in table.tensors()]
    h = randn(5, d)
    config = torch.tensor([1, 2, 3, 0, 2], device=DEVICE, dtype=torch.int32)
    y1 = ops.sae_steer(h, config, table, backend=backend)
    table.set_value(2, 5, -3.0)
    table.clear(3)
    table.W_dec.mul_(2.0)
    table.refresh()
    y2 = ops.sae_steer(h, config, table, backend=backend)
    assert [t.data_ptr() for t in table.tensors()] == ptrs
    close(y2, _dense(h, table, config), torch.float32)
    assert_untouched(y2, h, config == 3)
    assert not torch.equal(y1[1], y2[1])


def test_table_and_op_errors():
    W_enc, b_enc, W_dec, b_dec, thr = make_sae(16, 40, jump=True)
    E = ops.SteerkitInputError
    with pytest.raises(E, match="'threshold' must be given"):
        SaeSteeringTable(W_enc, b_enc, W_dec, b_dec, activation="jumprelu")
    with pytest.raises(E, match="'W_dec' must have shape"):
        SaeSteeringTable(W_enc, b_enc, W_dec.T, b_dec)
    t = SaeSteeringTable(W_enc, b_enc, W_dec, b_dec, capacity=2, max_features=2)
    with pytest.raises(E, match="features must be ints in"):
        t.set(1, clamp={40: 1.0})
    with pytest.raises(E, match="non-finite"):
        t.set(1, add={3: float("nan")})
    with pytest.raises(E, match="at most 2"):
        t.set(1, clamp={1: 1.0, 2: 1.0}, add={3: 1.0})
    with pytest.raises(IndexError, match="reserved identity"):
        t.set(0, clamp={1: 1.0})
    h = randn(3, 16)
    with pytest.raises(E, match="'config' must be int32"):
        ops.sae_steer(h, torch.zeros(3, dtype=torch.int64, device=DEVICE), t)
    with pytest.raises(E, match="'config' has value 3 but must be < 3"):
        ops.sae_steer(h, torch.full((3,), 3, dtype=torch.int32, device=DEVICE), t)
    with pytest.raises(E, match="steers rows of width 16"):
        ops.sae_steer(randn(3, 8), torch.zeros(3, dtype=torch.int32, device=DEVICE), t)
    with pytest.raises(ops.BackendError, match="CUDA row kernel takes float16 / bfloat16 rows"):
        ops.sae_steer(h, torch.zeros(3, dtype=torch.int32, device=DEVICE), t, backend="cuda")


@pytest.mark.parametrize("backend", SAE_BACKENDS)
def test_opcheck(backend):
    table = _table(8, 30)
    h = randn(5, 8)
    config = torch.tensor([0, 1, 2, 3, 4], device=DEVICE, dtype=torch.int32)
    params = (config, *table.tensors())
    torch.library.opcheck(torch.ops.steerkit.sae_steer_.default, (h.clone(), *params, backend))
    torch.library.opcheck(torch.ops.steerkit.sae_steer.default, (h, *params, backend))


def test_compile_fullgraph_reads_table_updates():
    table = _table(8, 30)
    h = randn(2, 3, 8)
    config = torch.tensor([[0, 1, 2], [3, 4, 1]], device=DEVICE, dtype=torch.int32)
    fn = torch.compile(lambda h, c: ops.sae_steer(h, c, table), fullgraph=True)
    close(fn(h, config), _dense(h, table, config), torch.float32)
    table.set_value(1, 0, 7.0)
    close(fn(h, config), _dense(h, table, config), torch.float32)


def test_gradients_through_reference():
    table = _table(8, 30)
    table.value.requires_grad_(True)
    h = randn(4, 8).requires_grad_()
    config = torch.tensor([1, 2, 0, 4], device=DEVICE, dtype=torch.int32)
    g = randn(4, 8)
    want = torch.autograd.grad(R.sae_steer(h, config, *table.tensors()), [h, table.value], g)
    got = torch.autograd.grad(ops.sae_steer(h, config, table, backend="triton"), [h, table.value], g)
    for a, b in zip(got, want):
        close(a, b, torch.float32)


@gpu_only
def test_cuda_graph_replay_reads_updates():
    table = _table(256, 1000, torch.bfloat16)
    h = randn(16, 256, dtype=torch.bfloat16)
    config = torch.randint(0, 5, (16,), device=DEVICE, dtype=torch.int32)
    buf = h.clone()
    ops.sae_steer_(buf, config, table, backend="triton")  # warm up (compile the kernel)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        ops.sae_steer_(buf, config, table, backend="triton", validate=False)
    table.set_value(1, 0, -4.0)
    config.copy_(torch.randint(0, 5, (16,), device=DEVICE, dtype=torch.int32))
    buf.copy_(h)
    g.replay()
    close(buf, R.sae_steer(h.float(), config, *table.tensors()), torch.bfloat16)


@pytest.mark.parametrize("dtype", SAE_DTYPES)
@pytest.mark.parametrize("cfg", [(1, 8, 32, 4, False), (2, 8, 64, 4, False), (16, 16, 16, 4, True)])
@pytest.mark.parametrize("in_place", [True, False])
def test_launch_configs(dtype, cfg, in_place):
    """Both kernel shapes (per-row broadcast products, blocks of rows with tl.dot) with d split in
    several chunks and blocks holding several configurations, in place and out of place."""
    import steerkit.kernels as K

    d = 40
    h = randn(21, d, dtype=dtype)
    table = _table(d, 90, dtype)
    config = torch.randint(0, table.capacity + 1, (21,), device=DEVICE, dtype=torch.int32)
    ref = R.sae_steer(h.float(), config, *table.tensors())
    out = h.clone() if in_place else torch.empty_like(h)
    K.sae_steer(out if in_place else h, out, config, *[t.contiguous() for t in table.tensors()], cfg=cfg)
    close(out, ref, dtype)
    assert_untouched(out, h, config == 0)


def _random_steering(N, M, d, dtype):
    """Fresh random SaeSteeringTable tensors: every slot kind (none, clamp, clamp only-active,
    add), random slot counts (config 1 uses all M), thresholds that leave about half inactive."""
    n_feat = torch.randint(0, M + 1, (N,), device=DEVICE, dtype=torch.int32)
    n_feat[1] = M
    kinds = torch.tensor([0, R.KIND_CLAMP, R.KIND_CLAMP | R.KIND_ONLY_ACTIVE, R.KIND_ADD], device=DEVICE)
    kind = kinds[torch.randint(0, 4, (N, M), device=DEVICE)].int()
    value = randn(N, M)
    enc = (randn(N, M, d) / d ** 0.5).to(dtype)
    b_eff = randn(N, M) * 0.5
    thr = randn(N, M) * 0.5
    dec = randn(N, M, d, dtype=dtype)
    return n_feat, kind, value, enc, b_eff, thr, dec


def _same_bits(a, b):
    return torch.equal(a.view(torch.int32 if a.dtype == torch.float32 else torch.int16),
                       b.view(torch.int32 if b.dtype == torch.float32 else torch.int16))


@pytest.mark.parametrize("dtype", SAE_DTYPES)
@pytest.mark.parametrize("d", [32, 40])
@pytest.mark.parametrize("in_place", [True, False])
def test_row_kernel(dtype, d, in_place):
    """The row kernel (one row per program, whole row in one chunk, every load up front) against
    the reference: mixed configurations per row, config 0 and out-of-range ids bit-identical."""
    import steerkit.kernels as K

    N, M, T = 6, 8, 24
    tables = _random_steering(N, M, d, dtype)
    h = randn(T, d, dtype=dtype)
    h[:, ::7] = -0.0  # x + 0 would turn these into +0.0
    config = torch.randint(0, N, (T,), device=DEVICE, dtype=torch.int32)
    config[:4] = torch.tensor([0, -1, N, 2 ** 31 - 1], device=DEVICE, dtype=torch.int32)
    config[4:3 + N] = torch.arange(1, N, device=DEVICE, dtype=torch.int32)  # every configuration
    ref = R.sae_steer(h.float(), config, *tables)
    out = h.clone() if in_place else torch.full_like(h, float("nan"))
    K.sae_steer(out if in_place else h, out, config, *tables, cfg=(1, 8, None, 4, False, "row"))
    close(out, ref, dtype)
    keep = (config < 1) | (config >= N)
    assert _same_bits(out[keep], h[keep]), "untouched rows changed"
    assert not torch.equal(out[~keep], h[~keep])


cuda_rows = pytest.mark.skipif(not (GPU and _cuda_ext_ok()), reason="needs a GPU and the CUDA extension")


@cuda_rows
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("d", [2304, 4096])
@pytest.mark.parametrize("M", [1, 3, 8])
@pytest.mark.parametrize("in_place", [True, False])
def test_cuda_row_kernel(dtype, d, M, in_place):
    """csrc/sae_steer.cu (one CTA per row, built per d and slot count) against the reference on
    fresh random tables: every slot kind, random slot counts, config 0 and out-of-range ids
    bit-identical."""
    from steerkit import _cuda_ext

    _cuda_ext.load()
    N, T = 6, 24
    tables = _random_steering(N, M, d, dtype)
    h = randn(T, d, dtype=dtype)
    h[:, ::7] = -0.0
    config = torch.randint(0, N, (T,), device=DEVICE, dtype=torch.int32)
    config[:4] = torch.tensor([0, -1, N, 2 ** 31 - 1], device=DEVICE, dtype=torch.int32)
    config[4:3 + N] = torch.arange(1, N, device=DEVICE, dtype=torch.int32)
    ref = R.sae_steer(h.float(), config, *tables)
    out = h.clone() if in_place else torch.full_like(h, float("nan"))
    torch.ops.steerkit_cuda.sae_steer(out if in_place else h, out, config, *tables)
    close(out, ref, dtype)
    keep = (config < 1) | (config >= N)
    assert _same_bits(out[keep], h[keep]), "untouched rows changed"
    assert not torch.equal(out[~keep], h[~keep])


@cuda_rows
def test_cuda_row_kernel_through_the_op():
    """ops.sae_steer_ takes the CUDA row kernel by default up to CUDA_STEER_MAX_T rows (Triton
    above), and refuses it with a reason where it does not apply."""
    from steerkit import _cuda_ext
    S = importlib.import_module("steerkit.ops.sae_steer")  # the module (ops.sae_steer is the function)

    _cuda_ext.load()
    table = _table(2304, 3000, torch.bfloat16)
    for T in (1, 16, 17):
        h = randn(T, 2304, dtype=torch.bfloat16)
        config = torch.randint(0, table.capacity + 1, (T,), device=DEVICE, dtype=torch.int32)
        ref = R.sae_steer(h.float(), config, *table.tensors())
        assert S._params("sae_steer_", h, config, table, None, True)[1] == ("cuda" if T <= 16 else "triton")
        for backend in (None, "cuda"):
            got = ops.sae_steer_(h.clone(), config, table, backend=backend)
            close(got, ref, torch.bfloat16)
            assert_untouched(got, h, config == 0)
    wide = _table(769, 300, torch.bfloat16)
    h = randn(2, 769, dtype=torch.bfloat16)
    with pytest.raises(ops.BackendError, match="built for d in"):
        ops.sae_steer(h, torch.ones(2, dtype=torch.int32, device=DEVICE), wide, backend="cuda")
    assert S._params("sae_steer", h, torch.ones(2, dtype=torch.int32, device=DEVICE), wide, None, True)[1] == "triton"


def test_row_kernel_needs_the_whole_row():
    import steerkit.kernels as K

    h = randn(3, 40)
    tables = _random_steering(3, 8, 40, torch.float32)
    config = torch.ones(3, device=DEVICE, dtype=torch.int32)
    out = torch.empty_like(h)
    with pytest.raises(ValueError, match="BD >= d"):
        K.sae_steer(h, out, config, *tables, cfg=(1, 8, 32, 4, False, "row"))
    K.sae_steer(h, out, config, *tables, cfg=(1, 8, 128, 4, False, "row"))  # any BD >= d
    close(out, R.sae_steer(h, config, *tables), torch.float32)


GROUP_CFGS = [(16, 8, 64, 4, True, "group", 2, 2),  # 16-row blocks over ids 1..6: up to 3 groups
              (32, 8, 16, 4, True, "group", 4, 3),  # d in many chunks; ids 1..6 in 2 groups
              (16, 16, 32, 4, True, "group", 1, 3),  # MP > M: padding slots; one id per group
              (16, 8, 64, 4, True, "group", 2, 2, 32),  # rows sorted by id in 32-row chunks (2 blocks each)
              (16, 8, 32, 4, True, "group", 4, 3, 16)]  # one block per sorted chunk


@pytest.mark.parametrize("dtype", SAE_DTYPES)
@pytest.mark.parametrize("T,d", [(7, 8), (40, 769)])
@pytest.mark.parametrize("cfg", GROUP_CFGS)
@pytest.mark.parametrize("in_place", [True, False])
def test_group_kernel(dtype, T, d, cfg, in_place):
    """The group kernel (BT rows x G configurations per tl.dot, no branch in the d loops) against
    the reference: every slot kind, n_feat < M, config 0 and out-of-range ids (bit-identical),
    blocks spanning more ids than G (the group loop runs several times), d not a multiple of BD."""
    import steerkit.kernels as K

    N, M = 7, 8
    tables = _random_steering(N, M, d, dtype)
    h = randn(T, d, dtype=dtype)
    h[:, ::7] = -0.0  # x + 0 would turn these into +0.0
    config = torch.randint(0, N, (T,), device=DEVICE, dtype=torch.int32)
    config[:3] = torch.tensor([0, -1, N], device=DEVICE, dtype=torch.int32)
    config[3:7] = torch.tensor([6, 1, 3, 2], device=DEVICE, dtype=torch.int32)  # ids 1..6 in one block
    if T > 7:
        config[7:] = torch.randint(-1, N + 2, (T - 7,), device=DEVICE, dtype=torch.int32)
        config[-1] = 2 ** 31 - 1
    ref = R.sae_steer(h.float(), config, *tables)
    out = h.clone() if in_place else torch.full_like(h, float("nan"))
    K.sae_steer(out if in_place else h, out, config, *tables, cfg=cfg)
    close(out, ref, dtype)
    keep = (config < 1) | (config >= N)
    assert _same_bits(out[keep], h[keep]), "untouched rows changed"
    assert not torch.equal(out[~keep], h[~keep])


@pytest.mark.parametrize("N", [7, 40])
@pytest.mark.parametrize("in_place", [True, False])
def test_group_kernel_sorted_chunks(N, in_place):
    """Rows ordered by configuration within chunks (a group cfg's 9th entry), few or many ids:
    chunks sorted and chunks already in order (no sort), a partial last chunk, blocks of one
    chunk picking different slices, every row written once (out of place into NaNs)."""
    import importlib

    KS = importlib.import_module("steerkit.kernels.sae_steer")
    T, d, M = 150, 40, 4
    tables = _random_steering(N, M, d, torch.float32)
    h = randn(T, d)
    config = torch.randint(-1, N + 1, (T,), device=DEVICE, dtype=torch.int32)
    ordered = torch.sort(config.clamp(0, N)).values  # chunks already in order take the direct path
    ordered[0] = -1  # an out-of-range id in an ordered chunk
    for config in (config, ordered):
        ref = R.sae_steer(h, config, *tables)
        for cfg in [(16, 4, 64, 4, True, "group", 4, 1, 64), (16, 4, 32, 4, True, "group", 8, 2, 16)]:
            out = h.clone() if in_place else torch.full_like(h, float("nan"))
            KS.sae_steer(out if in_place else h, out, config, *tables, cfg=cfg)
            close(out, ref, torch.float32)
            keep = (config < 1) | (config >= N)
            assert _same_bits(out[keep], h[keep]), "untouched rows changed"


@pytest.mark.parametrize("cfg", [(32, 8, 64, 4, True, "group", 4), (32, 8, 64, 4, True, "grp", 4, 2),
                                 (32, 8, 64, 4, True, "group", 1, 2), (8, 8, 64, 4, True, "group", 2, 2),
                                 (32, 4, 64, 4, True, "group", 4, 2), (32, 8, 64, 4, True, "group", 3, 2),
                                 (32, 8, 64, 4, True, "group", 2, 0), (32, 8, None, 4, True, "group", 2, 2),
                                 (32, 8, 64, 4), (1, 8, None, 4, False, "row", 2),
                                 (32, 8, 64, 4, True, "group", 2, 2, True), (32, 8, 64, 4, True, "group", 2, 2, 16),
                                 (32, 8, 64, 4, True, "group", 2, 2, 48), (32, 8, 64, 4, True, "group", 2, 2, 2048),
                                 (32, 8, 64, 4, True, "group", 2, 2, 64, 1)])
def test_malformed_launch_configs(cfg):
    import steerkit.kernels as K

    h = randn(3, 40)
    tables = _random_steering(3, 8, 40, torch.float32)
    with pytest.raises(ValueError, match="cfg"):
        K.sae_steer(h, torch.empty_like(h), torch.ones(3, device=DEVICE, dtype=torch.int32), *tables, cfg=cfg)


@pytest.mark.parametrize("interpreting", [True, False])
def test_default_launch_configs_are_valid(monkeypatch, interpreting):
    """sae_steer checks only a caller's cfg; steer_config's defaults (GPU and interpreter) must
    pass the same check for every size."""
    import importlib

    KS = importlib.import_module("steerkit.kernels.sae_steer")
    monkeypatch.setattr(KS, "interpreting", lambda: interpreting)
    for T in (1, 16, 17, 64, 65, 4096, 8192, 16384):
        for d in (40, 2304, 4096, 8192):
            for M in (1, 3, 8, 16):
                cfg = KS.steer_config(T, d, M)
                assert KS._check_cfg(cfg, M) == (cfg[5] if len(cfg) > 5 else None), (T, d, M, cfg)


# Compile every "group" SWEEP entry for sm_90 as a GPU launch at T = d = 4096 would (arguments
# divisible by 16 marked so, the entry's num_stages) and check that the d loops' loads pipeline
# (asynchronous copies in the compiled kernel). tests/test_triton_compile.py compiles SWEEP too,
# but without num_stages or the divisibility specialisation.
GROUP_COMPILE = r"""
import os, sys
os.environ.pop("TRITON_INTERPRET", None)
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
import importlib
KS = importlib.import_module("steerkit.kernels.sae_steer")
k, fails = KS._sae_steer_group_kernel, 0
INT = ("cfg_ptr", "n_feat_ptr", "kind_ptr")
F32 = ("value_ptr", "b_eff_ptr", "thr_ptr")
for c in [c for c in KS.SWEEP if c[5:6] == ("group",)]:
    bt, mp, bd, warps, _, _, g, stages = c[:8]
    ch = c[8] if len(c) > 8 else 0
    for dt, in_place in (("bf16", True), ("fp16", False)):
        sig, consts, attrs = {}, {}, {}
        for i, n in enumerate(k.arg_names):
            if i in k.constexprs:
                sig[n] = "constexpr"
                consts[n] = dict(IN_PLACE=in_place, F32=False, BT=bt, MP=mp, BD=bd, G=g, CH=ch)[n]
                continue
            sig[n] = "*i32" if n in INT else "*fp32" if n in F32 else "*" + dt if n.endswith("_ptr") else "i32"
            if n.endswith("_ptr") or n in ("T", "d", "stride_x", "stride_o"):
                attrs[(i,)] = [["tt.divisibility", 16]]
        try:
            ck = triton.compile(ASTSource(fn=k, signature=sig, constexprs=consts, attrs=attrs),
                                target=GPUTarget("cuda", 90, 32), options={"num_warps": warps, "num_stages": stages})
            if "async_copy" not in ck.asm["ttgir"]:
                fails += 1
                print("NOT PIPELINED", c, dt)
        except Exception as e:
            fails += 1
            print("FAILED", c, dt, type(e).__name__, str(e)[:400])
print("failures:", fails)
sys.exit(1 if fails else 0)
"""


def test_group_sweep_compiles_for_hopper_with_pipelined_loads():
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, "-c", GROUP_COMPILE], env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
