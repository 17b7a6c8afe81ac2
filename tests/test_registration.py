"""torch.library registration: opcheck, torch.compile (fullgraph, lowered to the reference, no
recompilation when steering changes) and CUDA-graph capture with in-place table updates."""
import pytest
import torch

from helpers import BACKENDS, DEVICE, FAST_BACKENDS, assert_matches_reference, gpu_only, make_table, randn
from steerkit import ops
from steerkit.ops import reference


def _cases(backend):
    """(op name, args without h and backend) for every op, with tensor and scalar parameters."""
    T, d = 6, 16
    idx = torch.tensor([0, 2, -1, 1, 2, -3], device=DEVICE)
    table = make_table(d, capacity=5, max_directions=2)
    u = torch.linalg.qr(torch.randn(d, 2))[0].T.contiguous().to(DEVICE)
    config = torch.tensor([0, 1, 2, 3, 4, 5], device=DEVICE, dtype=torch.int32)
    return T, d, [
        ("scale", (randn(T), 1.0)),
        ("scale", (None, -2.0)),
        ("add", (randn(d), randn(T), 1.0)),
        ("add", (randn(d), None, 0.5)),
        ("project_out", (u, randn(2), 0.0)),
        ("project_out", (u[:1], None, 0.3)),
        ("add_gathered", (randn(3, d), idx, randn(T), 1.0)),
        ("add_gathered", (randn(3, d), idx.int(), None, 1.0)),
        ("patch", (randn(3, d), idx, randn(T), 1.0)),
        ("patch", (randn(3, d), idx, None, 0.25)),
        ("steer", (config, *table.tensors())),
    ]


@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck(backend):
    T, d, cases = _cases(backend)
    for name, params in cases:
        h = randn(T, d)
        inplace = getattr(torch.ops.steerkit, name + "_").default
        outplace = getattr(torch.ops.steerkit, name).default
        torch.library.opcheck(inplace, (h, *params, backend))
        hg = randn(T, d).requires_grad_()
        torch.library.opcheck(outplace, (hg, *params, backend))


def _all_ops(h, v, u, bank, idx, src, pidx, config, table, alpha):
    h = ops.scale(h, 0.5)
    ops.add_(h, v, alpha)
    ops.project_out_(h, u, 0.1)
    ops.add_gathered_(h, bank, idx)
    ops.patch_(h, src, pidx, 0.5)
    ops.steer_(h, config, table)
    return h * 2.0


def _inputs(T=9, d=32):
    table = make_table(d, capacity=5, max_directions=2)
    return dict(
        h=randn(T, d), v=randn(d), u=torch.nn.functional.normalize(randn(d), dim=0),
        bank=randn(4, d), idx=torch.randint(-1, 4, (T,), device=DEVICE),
        src=randn(5, d), pidx=torch.randint(-1, 5, (T,), device=DEVICE),
        config=torch.randint(0, 6, (T,), device=DEVICE, dtype=torch.int32), table=table,
        alpha=randn(T),
    )


def test_compile_fullgraph_lowers_to_reference():
    """Under torch.compile the ops are plain PyTorch (fusable by Inductor): no steerkit op in the
    graph, no graph break, and the results equal eager execution."""
    graphs = []

    def record(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    args = _inputs()
    compiled = torch.compile(_all_ops, backend=record, fullgraph=True)
    got = compiled(**{k: (v.clone() if k == "h" else v) for k, v in args.items()})
    want = _all_ops(**{k: (v.clone() if k == "h" else v) for k, v in args.items()})
    torch.testing.assert_close(got, want)
    assert len(graphs) == 1
    targets = {str(n.target) for g in graphs for n in g.graph.nodes}
    assert not any("steerkit" in t for t in targets), targets


def test_inductor_no_recompile_when_steering_changes():
    from torch._dynamo.testing import CompileCounterWithBackend

    counter = CompileCounterWithBackend("inductor")
    compiled = torch.compile(_all_ops, backend=counter, fullgraph=True)
    args = _inputs()
    for step in range(3):
        got = compiled(**{k: (v.clone() if k == "h" else v) for k, v in args.items()})
        want = _all_ops(**{k: (v.clone() if k == "h" else v) for k, v in args.items()})
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        # change steering in place: table contents, per-row assignments, strengths
        table = args["table"]
        table.set(2, vector=randn(32), strength=float(step + 2))
        table.set_scale(1, 0.1 * step)
        args["config"].copy_(torch.randint(0, 6, args["config"].shape, device=DEVICE, dtype=torch.int32))
        args["idx"].copy_(torch.randint(-1, 4, args["idx"].shape, device=DEVICE))
        args["alpha"].normal_()
    assert counter.frame_count == 1


def test_compiled_gradients_match_eager():
    d = 16
    table = make_table(d, capacity=3, max_directions=1)
    table.strength.requires_grad_(True)
    h = randn(5, d).requires_grad_()
    config = torch.tensor([0, 1, 2, 3, 2], device=DEVICE, dtype=torch.int32)

    def loss(h):
        return (ops.steer(h, config, table) ** 2).sum()

    want = torch.autograd.grad(loss(h), (h, table.strength))
    got = torch.autograd.grad(torch.compile(loss, backend="aot_eager", fullgraph=True)(h), (h, table.strength))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def _capture(fn):
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return g


@gpu_only
@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_cuda_graph_replay_sees_table_and_index_updates(backend):
    T, d = 64, 4096
    table = make_table(d, capacity=8, max_directions=2, dtype=torch.bfloat16)
    h = randn(T, d, dtype=torch.bfloat16)
    config = torch.zeros(T, device=DEVICE, dtype=torch.int32)
    bank = randn(4, d)
    idx = torch.full((T,), -1, device=DEVICE, dtype=torch.int32)

    def step():
        ops.steer_(h, config, table, backend=backend)
        ops.add_gathered_(h, bank, idx, backend=backend)

    g = _capture(step)
    for trial in range(3):
        x = randn(T, d, dtype=torch.bfloat16)
        h.copy_(x)
        config.copy_(torch.randint(0, 9, (T,), device=DEVICE, dtype=torch.int32))
        idx.copy_(torch.randint(-1, 4, (T,), device=DEVICE, dtype=torch.int32))
        table.set(7, vector=randn(d), strength=float(trial), scale=0.5 + trial)
        bank.normal_()
        g.replay()
        torch.cuda.synchronize()
        want = reference.add_gathered(reference.steer(x, config, *table.tensors()).float(), bank, idx)
        assert_matches_reference(h, want.float(), torch.bfloat16)
        keep = (config == 0) & (idx < 0)
        assert torch.equal(h[keep], x[keep])


@gpu_only
@pytest.mark.parametrize("backend", BACKENDS)
def test_cuda_graph_all_ops(backend, monkeypatch):
    monkeypatch.setenv("STEERKIT_BACKEND", backend)
    args = _inputs(16, 2304)
    h0 = args["h"].clone()
    out = {}

    def step():
        args["h"].copy_(h0)
        out["y"] = _all_ops(**args)

    g = _capture(step)
    h0.normal_()
    args["table"].set(3, scale=2.0)
    args["config"].fill_(3)
    g.replay()
    torch.cuda.synchronize()
    want = _all_ops(**{**args, "h": h0.clone()})
    assert_matches_reference(out["y"], want.float(), torch.float32)


@gpu_only
def test_compiled_cudagraphs_no_recompile():
    """torch.compile(mode='reduce-overhead'): steering changes between steps neither recompile
    nor recapture, and every replay is correct."""
    T, d = 8, 256
    table = make_table(d, capacity=4, max_directions=2)
    config = torch.zeros(T, device=DEVICE, dtype=torch.int32)
    w = randn(d, d) / 16

    def f(x):
        y = x @ w
        ops.steer_(y, config, table)
        return torch.relu(y)

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = torch.compile(f, mode="reduce-overhead", fullgraph=True)
    for step in range(5):
        x = randn(T, d)
        config.copy_(torch.randint(0, 5, (T,), device=DEVICE, dtype=torch.int32))
        table.set_strength(2, float(step))
        got = compiled(x).clone()
        torch.testing.assert_close(got, f(x), rtol=1e-3, atol=1e-3)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1


@pytest.mark.parametrize("kinds", [dict(vector=True), dict(scale=True), dict(directions=1),
                                   dict(dynamic=True), dict(scale=True, directions=2, vector=True)])
def test_compiled_graph_specialises_on_the_kinds_a_table_uses(kinds):
    """table.uses restricts the compiled reference to the kinds held; results equal the full
    reference bit for bit; a new kind recompiles once, later value changes never do."""
    from steerkit import SteeringTable
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()  # the parametrised runs share f's code object
    d, T = 16, 9
    table = SteeringTable(d, 4, 2, device=DEVICE)
    spec = {}
    if kinds.get("vector"):
        spec.update(vector=randn(d), strength=0.7)
    if kinds.get("scale"):
        spec.update(scale=1.3)
    if kinds.get("directions"):
        spec.update(directions=torch.linalg.qr(torch.randn(d, 2))[0].T[:kinds["directions"]].to(DEVICE))
    if kinds.get("dynamic"):
        spec.update(dynamic=(randn(d) / 4, 0.5))
    table.set(1, **spec)
    table.set(2, **spec)
    expected = (bool(kinds.get("scale")), bool(kinds.get("dynamic")), kinds.get("directions", 0),
                bool(kinds.get("vector")))
    assert table.uses == expected
    config = torch.randint(0, 3, (T,), device=DEVICE, dtype=torch.int32)

    def f(h, config):
        return ops.steer_(h, config, table)

    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(f, backend=counter, fullgraph=True)
    for step in range(3):
        h = randn(T, d)
        want = reference.steer(h, config, *table.tensors())
        got = compiled(h.clone(), config)
        assert torch.equal(got, want)
        assert torch.equal(reference.steer_uses(h, config, *table.tensors(), uses=table.uses), want)
        table.set(2, **{**spec, **({"strength": float(step)} if "vector" in spec else {})})
        config.random_(0, 3)
    assert counter.frame_count == 1
    table.set(3, scale=0.5, dynamic=(randn(d), 0.1), directions=randn(2, d)[:1], vector=randn(d))
    assert table.uses == (True, True, max(1, kinds.get("directions", 0)), True)
    config[0] = 3
    h = randn(T, d)
    assert torch.equal(compiled(h.clone(), config), reference.steer(h, config, *table.tensors()))
    assert counter.frame_count == 2  # the new kinds recompiled once
    table.clear(3)
    assert table.uses[1]  # never shrinks: no flip-flopping recompiles
