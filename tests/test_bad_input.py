"""Bad input: a clear exception naming the argument, raised before any kernel runs."""
import pytest
import torch

from helpers import BACKENDS, DEVICE, make_table, randn
from steerkit import SteeringTable, ops
from steerkit.ops import SteerkitInputError

T, D = 6, 16


def _h():
    return randn(T, D)


def _nan(shape):
    t = randn(*shape)
    t.view(-1)[0] = float("nan")
    return t


def _idx(values):
    return torch.tensor(values, device=DEVICE)


CASES = [
    # (id, call(h, backend), expected message fragment)
    ("h-int", lambda h, b: ops.scale_(h.long(), 2.0, backend=b), "'h' must be float32"),
    ("h-empty-d", lambda h, b: ops.scale_(h[:, :0], 2.0, backend=b), "'h' must have shape"),
    ("s-shape", lambda h, b: ops.scale_(h, randn(T + 1), backend=b), "'s' must be a scalar or have shape"),
    ("s-nan", lambda h, b: ops.scale_(h, _nan((T,)), backend=b), "'s' contains NaN or Inf"),
    ("s-inf-scalar", lambda h, b: ops.scale_(h, float("inf"), backend=b), "'s' must be finite"),
    ("s-int-tensor", lambda h, b: ops.scale_(h, torch.ones(T, dtype=torch.int64, device=DEVICE), backend=b),
     "'s' must be a floating tensor"),
    ("v-shape", lambda h, b: ops.add_(h, randn(D + 1), backend=b), "'v' must have shape [16]"),
    ("v-nan", lambda h, b: ops.add_(h, _nan((D,)), backend=b), "'v' contains NaN"),
    ("v-device", lambda h, b: ops.add_(h, torch.zeros(D, device="meta"), backend=b), "'v' is on meta"),
    ("alpha-shape", lambda h, b: ops.add_(h, randn(D), randn(2, T), backend=b), "'alpha'"),
    ("u-zero", lambda h, b: ops.project_out_(h, torch.zeros(D, device=DEVICE), backend=b), "zero direction"),
    ("u-not-orthogonal", lambda h, b: ops.project_out_(h, torch.stack([randn(D), randn(D)]), backend=b),
     "must be orthogonal"),
    ("u-width", lambda h, b: ops.project_out_(h, randn(2, D + 3), backend=b), "'u' must have shape"),
    ("u-inf", lambda h, b: ops.project_out_(h, _nan((D,)) * 0 + float("inf"), backend=b), "'u' contains NaN or Inf"),
    ("value-length", lambda h, b: ops.project_out_(h, torch.eye(D, device=DEVICE)[:2], randn(3), backend=b),
     "'value' must have shape [2]"),
    ("index-float", lambda h, b: ops.add_gathered_(h, randn(3, D), randn(T), backend=b), "int32 or int64"),
    ("index-range", lambda h, b: ops.add_gathered_(h, randn(3, D), _idx([0, 1, 2, 3, -1, 0]), backend=b),
     "'index' has value 3 but must be < 3"),
    ("index-shape", lambda h, b: ops.add_gathered_(h, randn(3, D), _idx([0, 1]), backend=b), "'index' must have shape"),
    ("bank-nan", lambda h, b: ops.add_gathered_(h, _nan((3, D)), _idx([0] * T), backend=b), "'bank' contains NaN"),
    ("src-overlap", lambda h, b: ops.patch_(h, h[:2], _idx([0] * T), backend=b), "'src' overlaps h"),
    ("src-range", lambda h, b: ops.patch_(h, randn(2, D), _idx([5] * T), backend=b), "'index' has value 5"),
    ("weight-nan", lambda h, b: ops.patch_(h, randn(2, D), _idx([0] * T), float("nan"), backend=b), "'weight'"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,call,message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises_before_any_kernel(backend, name, call, message):
    h = _h()
    before = h.clone()
    with pytest.raises(SteerkitInputError) as err:
        call(h, backend)
    assert message in str(err.value), str(err.value)
    assert torch.equal(h, before), "h was modified by a call that raised"


def _steer_cases():
    table = make_table(D, capacity=3, max_directions=2)
    good = torch.zeros(T, device=DEVICE, dtype=torch.int32)
    return [
        ("config-int64", lambda h, b: ops.steer_(h, good.long(), table, backend=b), "'config' must be int32"),
        ("config-range", lambda h, b: ops.steer_(h, good + 4, table, backend=b), "'config' has value 4 but must be < 4"),
        ("config-negative", lambda h, b: ops.steer_(h, good - 1, table, backend=b), "'config' has negative value"),
        ("table-width", lambda h, b: ops.steer_(h, good, SteeringTable(D + 1, 2, device=DEVICE), backend=b),
         "steers rows of width 17"),
        ("table-type", lambda h, b: ops.steer_(h, good, {"scale": 1}, backend=b), "must be a steerkit.SteeringTable"),
    ]


@pytest.mark.parametrize("backend", BACKENDS)
def test_steer_bad_input(backend):
    for name, call, message in _steer_cases():
        h = _h()
        before = h.clone()
        with pytest.raises(SteerkitInputError, match=message.replace("[", r"\[")):
            call(h, backend)
        assert torch.equal(h, before), name


def test_table_setters_check_values():
    t = SteeringTable(D, 2, 2, device=DEVICE)
    with pytest.raises(IndexError, match="reserved identity"):
        t.set(0, scale=2.0)
    with pytest.raises(IndexError, match="outside 1..2"):
        t.set(3, scale=2.0)
    with pytest.raises(SteerkitInputError, match="'vector' contains NaN"):
        t.set(1, vector=_nan((D,)))
    with pytest.raises(SteerkitInputError, match="at most 2"):
        t.set(1, directions=torch.eye(D, device=DEVICE)[:3])
    with pytest.raises(SteerkitInputError, match="orthogonal"):
        t.set(1, directions=torch.stack([randn(D), randn(D)]))
    with pytest.raises(SteerkitInputError, match="zero direction"):
        t.set(1, directions=torch.zeros(D, device=DEVICE))
    with pytest.raises(SteerkitInputError, match="'values' must have 2 entries"):
        t.set(1, directions=torch.eye(D, device=DEVICE)[:2], values=randn(3))
    with pytest.raises(SteerkitInputError, match="'scale' must be finite"):
        t.set(1, scale=float("nan"))
    with pytest.raises(SteerkitInputError, match="dynamic"):
        t.set(1, dynamic=randn(D))
    # a failed set leaves the table as it was
    assert len(t) == 0 and torch.equal(t.scale, torch.ones_like(t.scale))


def test_table_slots():
    t = SteeringTable(D, 2, device=DEVICE)
    a = t.add(scale=2.0)
    b = t.add(vector=randn(D))
    assert (a, b) == (1, 2) and len(t) == 2
    with pytest.raises(RuntimeError, match="all 2 configurations are in use"):
        t.add(scale=3.0)
    t.clear(a)
    assert t.add(scale=4.0) == 1
    assert "capacity=2" in repr(t)
