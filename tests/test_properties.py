"""Property-based tests (hypothesis): random shapes, indices and configurations, every fast
backend against the reference."""
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import DEVICE, FAST_BACKENDS, assert_matches_reference, make_table
from steerkit import ops
from steerkit.ops import reference

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))


def _tensor(seed, *shape, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(device=DEVICE, dtype=dtype)


@SETTINGS
@given(T=st.integers(1, 50), d=st.integers(1, 300), B=st.integers(1, 6), seed=st.integers(0, 2 ** 31),
       data=st.data(), half=st.booleans())
def test_add_gathered_and_patch_properties(T, d, B, seed, data, half):
    dtype = torch.float16 if half else torch.float32
    index = torch.tensor(data.draw(st.lists(st.integers(-3, B - 1), min_size=T, max_size=T)), device=DEVICE)
    h = _tensor(seed, T, d, dtype=dtype)
    bank = _tensor(seed + 1, B, d)
    src = _tensor(seed + 2, B, d, dtype=dtype)
    for backend in FAST_BACKENDS:
        y = ops.add_gathered(h, bank, index, 0.5, backend=backend)
        assert_matches_reference(y, reference.add_gathered(h.float(), bank, index, 0.5), dtype)
        assert torch.equal(y[index < 0], h[index < 0])
        z = h.clone()
        ops.patch_(z, src, index, 0.7, backend=backend)
        assert_matches_reference(z, reference.patch(h.float(), src.float(), index, 0.7), dtype)
        assert torch.equal(z[index < 0], h[index < 0])


@SETTINGS
@given(T=st.integers(1, 40), d=st.integers(4, 260), seed=st.integers(0, 2 ** 31), data=st.data())
def test_steer_properties(T, d, seed, data):
    torch.manual_seed(seed)
    table = make_table(d, capacity=6, max_directions=data.draw(st.integers(1, 3)))
    config = torch.tensor(data.draw(st.lists(st.integers(0, 6), min_size=T, max_size=T)),
                          device=DEVICE, dtype=torch.int32)
    h = _tensor(seed, T, d)
    want = reference.steer(h, config, *table.tensors())
    for backend in FAST_BACKENDS:
        y = h.clone()
        ops.steer_(y, config, table, backend=backend)
        assert_matches_reference(y, want, torch.float32)
        assert torch.equal(y[config == 0], h[config == 0])
