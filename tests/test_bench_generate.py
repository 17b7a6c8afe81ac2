"""bench-generate on a tiny model on the CPU: well-formed rows, one steered engine serving every
kind, and the tables holding the configurations of the kind each row names."""
import math

from steerkit.bench import generate_bench as gb
from steerkit.ops.reference import FLAG_VECTOR


def test_tiny_engine_rows_and_kinds():
    seen = {}
    orig = gb._measure

    def spy(sh, path, steer, B, rounds, timer):
        row = orig(sh, path, steer, B, rounds, timer)
        if steer != "unsteered":
            kind = "mix" if steer == "shared" else steer.split("-", 1)[1]
            table = sh.engine(kind, path).steering.tables[sh.sites[0]]
            seen[steer] = (table.flags[1:B + 1].clone(), table.scale[1:B + 1].clone(), len(sh.engines))
        return row

    gb._measure = spy
    try:
        rows = gb.run(shapes=("tiny",), batches=(2,), variants=("engine:*",), prompt=6, new_tokens=3,
                      rounds=1, device="cpu", log=lambda s: None)
    finally:
        gb._measure = orig
    steers = [r["steer"] for r in rows]
    assert steers == ["unsteered", "shared", "distinct-add", "distinct-scale", "distinct-ablate", "distinct-mix"]
    for r in rows:
        # a difference of two timings: its sign is noise on a tiny CPU model (timings are not asserted)
        assert math.isfinite(r["ms_per_token"]) and r["tok_s"] > 0 and r["batch"] == 2
        assert r.get("built_for") == (None if r["steer"] == "unsteered" else "all")
    # one unsteered and one steered engine, whatever the kinds
    assert {n for *_, n in seen.values()} == {2}
    flags, scale, _ = seen["distinct-add"]
    assert (flags == FLAG_VECTOR).all() and (scale == 1).all()
    flags, scale, _ = seen["distinct-scale"]
    assert (flags == 0).all() and (scale != 1).all()
    flags, scale, _ = seen["distinct-mix"]
    assert (flags & FLAG_VECTOR).all() and (scale != 1).all()


def test_tiny_hf_items_share_one_attachment_per_batch():
    """Steered transformers items of one path and batch share one attachment (one compilation
    on a GPU) whose tables hold each row's kind; a new batch or path gets a new one; no hook is
    left on the model when the shape closes."""
    seen = []
    orig = gb._measure
    shapes = []

    def spy(sh, path, steer, B, rounds, timer):
        row = orig(sh, path, steer, B, rounds, timer)
        if steer not in ("unsteered", "hook-add"):
            handle = sh.hf[1]
            table = handle.tables[sh.sites[0]]
            seen.append((path, B, steer, handle, table.flags[1:B + 1].clone(), table.scale[1:B + 1].clone()))
        shapes.append(sh)
        return row

    gb._measure = spy
    try:
        rows = gb.run(shapes=("tiny",), batches=(1, 2), variants=("hf-eager:*", "hf-compiled:distinct-*"),
                      prompt=5, new_tokens=2, rounds=1, device="cpu", log=lambda s: None)
    finally:
        gb._measure = orig
    kinds = [s for s in gb.STEERS if s.startswith("distinct-")]
    assert [(r["path"], r["batch"], r["steer"]) for r in rows] == (
        [("hf-compiled", B, s) for B in (1, 2) for s in kinds] + [("hf-eager", B, s) for B in (1, 2) for s in gb.STEERS])
    assert all(r.get("built_for") == "all" for r in rows if r["steer"] not in ("unsteered", "hook-add"))
    groups = {}
    for path, B, steer, handle, flags, scale in seen:  # the handles are kept alive: ids stay distinct
        groups.setdefault((path, B), set()).add(id(handle))
        kind = "mix" if steer == "shared" else steer.split("-", 1)[1]
        assert ((flags & FLAG_VECTOR) != 0).all() == (kind in ("add", "mix")), (path, B, steer)
        assert ((scale != 1).all() if kind in ("scale", "mix") else (scale == 1).all()), (path, B, steer)
    assert len(groups) == 4 and all(len(h) == 1 for h in groups.values())
    assert len({h for hs in groups.values() for h in hs}) == 4
    model = shapes[-1].model
    assert not [n for n, m in model.named_modules() if m._forward_hooks or m._forward_pre_hooks]


def test_svg_plot_colours_by_kind_and_dashes_the_second_shape(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *a, **k):  # the SVG fallback, whatever is installed
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    rows = [dict(shape=s, path=p, steer="unsteered", batch=b, decode_tok_s=100.0 * b + i)
            for i, (s, p) in enumerate([("a", "engine"), ("a", "hf-eager"), ("b", "engine"), ("b", "hf-eager")])
            for b in (1, 16)]
    out = gb.plot(rows, str(tmp_path / "p.png"))
    assert out.endswith(".svg")
    svg = open(out).read()
    lines = [l for l in svg.splitlines() if l.startswith("<polyline")]
    assert len(lines) == 4 and sum("dasharray" in l for l in lines) == 2
    colour = lambda l: l.split('stroke="')[1].split('"')[0]  # noqa: E731
    assert colour(lines[0]) == colour(lines[2]) != colour(lines[1])
