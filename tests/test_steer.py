
import operator

import pytest
import torch

from helpers import (BACKENDS, DEVICE, DTYPES, FAST_BACKENDS, LAYOUTS, SHAPES, activation,
                     assert_matches_reference, assert_untouched, make_table, randn, run_both)
from steerkit import SteeringTable, ops
from steerkit.ops import reference


def _ref(h, config, table):
    return reference.steer(h.float(), config, *table.tensors())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T,d", SHAPES)
def test_steer_matches_reference(backend, dtype, T, d):
    h = activation(T, d, dtype)
    table = make_table(d)
    config = torch.randint(0, table.capacity + 1, (T,), device=DEVICE, dtype=torch.int32)
    ref = _ref(h, config, table)
    a, b = run_both(lambda x, be: ops.steer_(x, config, table, backend=be),
                    lambda x, be: ops.steer(x, config, table, backend=be), h, backend)
    assert_matches_reference(a, ref, dtype)
    assert_matches_reference(b, ref, dtype)
    assert_untouched(a, h, config == 0)
    assert_untouched(b, h, config == 0)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("table_dtype", [torch.float16, torch.bfloat16])
def test_steer_low_precision_table(backend, table_dtype):
    if table_dtype == torch.bfloat16 and DEVICE == "cpu":
        pytest.skip("the Triton interpreter's bf16 is wrong; bf16 runs on the GPU")
    h = randn(37, 256)
    table = make_table(256, dtype=table_dtype)
    config = torch.randint(0, 7, (37,), device=DEVICE, dtype=torch.int32)
    assert_matches_reference(ops.steer(h, config, table, backend=backend), _ref(h, config, table), torch.float32)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_steer_layouts(backend, layout):
    h = activation(21, 64, torch.float16, layout)
    table = make_table(64)
    config = torch.randint(0, 7, h.shape[:-1], device=DEVICE, dtype=torch.int32)
    ref = _ref(h, config, table)
    before = h.clone()
    ops.steer_(h, config, table, backend=backend)
    assert_matches_reference(h, ref, torch.float16)
    assert_untouched(h, before, config == 0)


def test_steer_stages_semantics():
    """Each stage alone does what the table says (checked by hand, not via the reference)."""
    d = 32
    table = SteeringTable(d, 4, 2, device=DEVICE)
    v = randn(d)
    u = torch.nn.functional.normalize(randn(d), dim=0)
    w = randn(d) / 10
    table.set(1, scale=3.0)
    table.set(2, vector=v, strength=-2.0)
    table.set(3, directions=u * 5, values=0.25)
    table.set(4, dynamic=(w, 0.5), scale=2.0)
    h = randn(4, d)
    config = torch.tensor([1, 2, 3, 4], device=DEVICE, dtype=torch.int32)
    for backend in BACKENDS:
        y = ops.steer(h, config, table, backend=backend)
        torch.testing.assert_close(y[0], 3.0 * h[0])
        torch.testing.assert_close(y[1], h[1] - 2.0 * v)
        torch.testing.assert_close(y[2] @ u, torch.tensor(0.25, device=DEVICE), atol=1e-5, rtol=0)
        torch.testing.assert_close(y[3], 2.0 * (h[3] @ w + 0.5) * h[3])


@pytest.mark.parametrize("backend", BACKENDS)
def test_steer_out_of_range_config_is_untouched(backend):
    h = randn(12, 16)
    table = make_table(16, capacity=4, max_directions=2)
    config = torch.tensor([0, 1, 4, 5, 1000, -1, -(2 ** 31), 2 ** 31 - 1, 3, 2, 0, 5],
                          device=DEVICE, dtype=torch.int32)
    y = ops.steer(h, config, table, backend=backend, validate=False)
    ok = (config > 0) & (config <= 4)
    assert_untouched(y, h, ~ok)
    assert_matches_reference(y, _ref(h, config, table), torch.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_steer_table_updates_take_effect_without_reallocation(backend):
    d = 24
    table = make_table(d, capacity=3, max_directions=2)
    ptrs = [t.data_ptr() for t in table.tensors()]
    h = randn(5, d)
    config = torch.tensor([1, 2, 3, 0, 2], device=DEVICE, dtype=torch.int32)
    y1 = ops.steer(h, config, table, backend=backend)
    table.set(2, scale=0.5, vector=randn(d), strength=3.0)  # replace
    table.clear(3)
    table.set_strength(2, -1.0)
    y2 = ops.steer(h, config, table, backend=backend)
    assert [t.data_ptr() for t in table.tensors()] == ptrs
    assert_matches_reference(y2, _ref(h, config, table), torch.float32)
    assert_untouched(y2, h, config == 3)  # cleared -> identity
    assert not torch.equal(y1[1], y2[1])


def test_steer_gradients_reach_table_parameters():
    d = 16
    table = make_table(d, capacity=5, max_directions=2)
    params = [table.scale, table.dyn_w, table.dyn_b, table.dir_val, table.vec, table.strength]
    for p in params:
        p.requires_grad_(True)
    h = randn(10, d).requires_grad_()
    config = torch.tensor([1, 2, 3, 4, 5, 0, 5, 2, 1, 3], device=DEVICE, dtype=torch.int32)
    g = torch.randn(10, d, device=DEVICE)
    want = torch.autograd.grad(reference.steer(h, config, *table.tensors()), [h] + params, g)
    for backend in BACKENDS:
        got = torch.autograd.grad(ops.steer(h, config, table, backend=backend), [h] + params, g)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b)
    # strength of config 2 (vector only): d y / d a = v, rows 1 and 7
    torch.testing.assert_close(want[6][2], ((g[1] + g[7]) * table.vec[2].detach()).sum())
    assert float(want[6][0]) == 0.0  # identity row gets no gradient


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_no_grad_fast_path_matches_reference_and_bumps_the_version(backend):
    """Without autograd the in-place op skips the dispatcher; same result, and autograd's
    version counter still records the write."""
    table = make_table(64)
    h = randn(5, 64)
    config = torch.tensor([0, 1, 2, 5, 6], device=DEVICE, dtype=torch.int32)
    want = reference.steer(h, config, *table.tensors())
    v0 = h._version
    with torch.no_grad():
        ops.steer_(h, config, table, backend=backend)
    torch.testing.assert_close(h, want, rtol=1e-5, atol=1e-5)
    assert h._version > v0


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_repeated_unvalidated_calls_reuse_the_launch_and_see_every_change(backend):
    """Eager calls with validate=False reuse the prepared launch of the last call on the same
    table and config tensor; table writes, in-place config writes, a new config tensor, another
    row count and another dtype all take effect."""
    table = make_table(64)
    config = torch.tensor([[0, 1], [2, 5], [6, 1]], device=DEVICE, dtype=torch.int32)
    with torch.no_grad():
        def check(h, cfg):
            want = reference.steer(h.float(), cfg, *table.tensors()).to(h.dtype)
            ops.steer_(h, cfg, table, backend=backend, validate=False)
            torch.testing.assert_close(h, want, rtol=1e-3, atol=1e-3)

        for _ in range(2):  # the second call takes the cached launch
            check(randn(3, 2, 64), config)
        assert table._launches[id(config)][0] is config
        table.set(1, scale=0.5, vector=randn(64), strength=2.0)  # written in place
        check(randn(3, 2, 64), config)
        config[0, 0] = 3  # config written in place
        check(randn(3, 2, 64), config)
        check(randn(3, 2, 64), config.clone())  # a new config tensor
        check(randn(3, 2, 64).half(), config)  # another dtype
        short = torch.tensor([[4, 0]], device=DEVICE, dtype=torch.int32)
        check(randn(1, 2, 64), short)  # another row count
        check(randn(3, 2, 64)[:, :, :].contiguous(), config)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_repeated_calls_see_table_writes_when_the_kernels_take_a_converted_copy(backend):
    """A table whose vectors are converted for the kernels (float16 vectors for float32 rows:
    the kernels take float32 or the rows' dtype) gives the kernels a copy; the repeated-call
    path must not keep reading a stale copy after the table is written."""
    d = 64
    table = make_table(d, dtype=torch.float16)
    config = torch.tensor([2, 2, 0, 2], device=DEVICE, dtype=torch.int32)
    with torch.no_grad():
        for strength in (0.8, -3.0):
            table.set(2, vector=randn(d), strength=strength)
            for _ in range(2):
                h = randn(4, d)
                want = _ref(h, config, table)
                ops.steer_(h, config, table, backend=backend, validate=False)
                torch.testing.assert_close(h, want, rtol=1e-4, atol=1e-4)


def test_prepared_triton_launch_repeats_on_new_rows():
    """After the first fast call, Triton's compiled launch is reused on new rows (the generic
    launcher is never called again, so it is made to fail here), also on another stream; rows
    whose address breaks the kernel's alignment specialisation, and calls while a Triton launch
    hook is installed (profilers), take the generic path. In the interpreter there is no
    compiled launcher: the generic path runs."""
    d, T = 320, 5
    table = make_table(d)
    config = torch.tensor([1, 0, 3, 6, 2], device=DEVICE, dtype=torch.int32)

    def check(h):
        want = _ref(h, config, table).to(h.dtype)
        v0 = h._version
        ops.steer_(h, config, table, backend="triton", validate=False)
        torch.testing.assert_close(h, want, rtol=1e-5, atol=1e-5)
        assert h._version > v0

    with torch.no_grad():
        check(randn(T, d))
        run = table._launches[id(config)][3]
        if DEVICE == "cpu":
            assert run.prepared is False
            check(randn(T, d))
            return
        from steerkit.kernels._launch import Prepared

        assert isinstance(run.prepared, Prepared)
        generic = run.launch

        def refuse(*a):
            raise AssertionError("the generic launcher ran")

        run.launch = refuse
        for _ in range(3):
            check(randn(T, d))
        side = torch.cuda.Stream()
        with torch.cuda.stream(side):
            check(randn(T, d))
        torch.cuda.synchronize()
        buf = randn(T * d + 1)
        odd = buf[1:].view(T, d)  # 4 bytes past a 16-byte boundary: not the prepared specialisation
        with pytest.raises(AssertionError, match="generic launcher"):
            ops.steer_(odd, config, table, backend="triton", validate=False)
        run.launch = generic
        check(odd)
        from triton import knobs

        seen = []
        hook = seen.append  # Triton calls it with the launch's metadata
        knobs.runtime.launch_enter_hook.add(hook)
        try:
            check(randn(T, d))
        finally:
            knobs.runtime.launch_enter_hook.remove(hook)
        assert len(seen) == 1


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_stacked_tables_are_independent_slices(backend):
    """Tables of one TableStack are slices of shared tensors: each is written on its own, the
    kernels read a slot past the first through its views, and steer_stacked (the form compiled
    models use) gives the reference result for every slot."""
    d = 96
    tables = SteeringTable.stacked(3, d, 6, 3, device=DEVICE)
    torch.manual_seed(1)
    make_table(d, table=tables[0])
    torch.manual_seed(2)
    make_table(d, table=tables[2])
    torch.manual_seed(2)
    alone = make_table(d)  # the same configurations as tables[2], in a table of its own
    for a, b in zip(tables[2].tensors(), alone.tensors()):
        assert torch.equal(a, b)
    assert not torch.equal(tables[0].vec[2], alone.vec[2])  # different seeds, different vectors
    assert tables[1].flags.eq(0).all() and tables[1].scale.eq(1).all()  # slot 1: never written
    assert tables[0].stack is tables[2].stack and tables[0].vec.data_ptr() != tables[2].vec.data_ptr()
    h = randn(37, d)
    config = torch.randint(0, 7, (37,), device=DEVICE, dtype=torch.int32)
    assert_matches_reference(ops.steer_(h.clone(), config, tables[2], backend=backend), _ref(h, config, alone),
                             torch.float32)
    assert torch.equal(ops.steer(h, config, tables[1], backend=backend), h)
    for slot, t in enumerate(tables):
        torch.testing.assert_close(ops.steer_stacked(h, config, t.stack, slot), _ref(h, config, t).to(h.dtype),
                                   rtol=1e-5, atol=1e-5)
    assert tables[1].uses == tables[0].uses == (True, True, 3, True)  # one record for the stack
    names = reference.TABLE_TENSORS  # SteeringTable.tensors() is written out: it must follow the one list
    for t in (tables[0], tables[0].stack):
        assert len(t.tensors()) == len(names) and all(map(operator.is_, t.tensors(), (getattr(t, n) for n in names)))
    with pytest.raises(ValueError, match="slot 3"):
        SteeringTable(d, 6, 3, stack=tables[0].stack, slot=3)
    with pytest.raises(ValueError, match="d=8"):
        SteeringTable(8, 6, 3, stack=tables[0].stack, slot=0)


def test_steer_stacked_reads_only_the_kinds_used():
    """A stack that has only held vectors: steer_stacked never reads its scale, dynamic-scale or
    direction tensors (a compiled graph does not take them as inputs)."""
    d = 40
    tables = SteeringTable.stacked(2, d, 3, 2, device=DEVICE)
    tables[1].set(2, vector=randn(d), strength=-0.7)
    stack = tables[0].stack
    for name in ("scale", "dyn_w", "dyn_b", "dirs", "dir_val", "n_dirs"):
        setattr(stack, name, None)
    h = randn(9, d)
    config = torch.tensor([0, 2, 1, 2, 3, 0, 2, 2, 1], device=DEVICE, dtype=torch.int32)
    want = h + torch.where((config == 2).unsqueeze(-1), -0.7 * tables[1].vec[2], torch.zeros(()))
    torch.testing.assert_close(ops.steer_stacked(h, config, stack, 1), want, rtol=1e-6, atol=1e-6)
    assert torch.equal(ops.steer_stacked(h, config, stack, 0), h)
    with pytest.raises(ValueError, match="slot"):
        ops.steer_stacked(h, config, stack, 2)
    with pytest.raises(ValueError, match="int32"):
        ops.steer_stacked(h, config.long(), stack, 1)
