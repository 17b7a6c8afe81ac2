"""bench-generate on a tiny model on the CPU: well-formed rows, one steered engine serving every
kind, and the tables holding the configurations of the kind each row names."""
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
        assert r["ms_per_token"] > 0 and r["tok_s"] > 0 and r["batch"] == 2
        assert r.get("built_for") == (None if r["steer"] == "unsteered" else "all")
    # one unsteered and one steered engine, whatever the kinds
    assert {n for *_, n in seen.values()} == {2}
    flags, scale, _ = seen["distinct-add"]
    assert (flags == FLAG_VECTOR).all() and (scale == 1).all()
    flags, scale, _ = seen["distinct-scale"]
    assert (flags == 0).all() and (scale != 1).all()
    flags, scale, _ = seen["distinct-mix"]
    assert (flags & FLAG_VECTOR).all() and (scale != 1).all()
