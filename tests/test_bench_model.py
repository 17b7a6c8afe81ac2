"""bench-model compares like with like: for every kind, the steerkit variant and the plain-hook
variant compute the same intervention; and a tiny run produces well-formed rows."""
import pytest
import torch

pytest.importorskip("transformers")

from steerkit.bench import model_bench as M  # noqa: E402
from steerkit.integrations.hf import site_calls  # noqa: E402


@pytest.mark.parametrize("kind", M.KINDS)
def test_steerkit_and_plain_hook_variants_agree(kind):
    model = M.build_model("tiny", "cpu", torch.float32)
    B = 3
    params = M._Params(B, model.config.hidden_size, "cpu")
    ids = torch.tensor([1, 3, 2], dtype=torch.int32)
    tok = torch.randint(0, model.config.vocab_size, (B, 5))
    with torch.no_grad():
        plain = model(input_ids=tok).logits
        sk = M._SteerkitVariant(model, kind, params, B)
        sk.on(ids)
        got = model(input_ids=tok).logits
        sk.handle.detach()
        hook = M._HookVariant(model, kind, params)
        hook.on(ids.long())
        want = model(input_ids=tok).logits
        for h in hook.handles:
            h.remove()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(got, plain, atol=1e-3)


def test_strength_zero_adds_zero_vectors():
    """--strength 0: the add variants run their ops on zero vectors, so the logits stay the
    unsteered model's while the work is the same; rows record the strength."""
    model = M.build_model("tiny", "cpu", torch.float32)
    params = M._Params(2, model.config.hidden_size, "cpu", strength=0.0)
    assert torch.count_nonzero(params.vec) == 0
    tok = torch.randint(0, model.config.vocab_size, (2, 5))
    with torch.no_grad():
        plain = model(input_ids=tok).logits
        sk = M._SteerkitVariant(model, "add", params, 2)
        sk.on(torch.tensor([1, 2], dtype=torch.int32))
        got = model(input_ids=tok).logits
        sk.handle.detach()
    torch.testing.assert_close(got, plain, rtol=0, atol=0)
    rows = M.run(shape="tiny", batches=(2,), modes=("eager",), phases=("decode",), kinds=("add",),
                 hook_kinds=(), assigns=("distinct",), steps=1, rounds=1, prompt=4, device="cpu",
                 strength=0.0, log=lambda s: None)
    assert rows and all(r["strength"] == 0.0 for r in rows)


def test_tiny_run_rows():
    rows = M.run(shape="tiny", batches=(2,), modes=("eager",), phases=("decode", "prefill"), kinds=("add",),
                 hook_kinds=("mix",), steps=2, rounds=1, prompt=4, prefill_batch=2, prefill_len=8,
                 device="cpu", log=lambda s: None)
    # per phase: none + 2 variants x (shared, distinct)
    assert len(rows) == 2 * 5
    assert {r["variant"] for r in rows} == {"none", "steerkit-add", "hook-mix"}
    assert all(r["us"] > 0 and r["us_min"] <= r["us"] <= r["us_max"] for r in rows)
    assert all("tok_s" in r for r in rows if r["phase"] == "decode")


def test_eager_runs_only_the_measured_variants_hooks(monkeypatch):
    """Eager: the switched-off variants' hooks are parked (out of the modules), so the unsteered
    baseline runs no hook and a steered variant only its own; compiled runs keep them all."""
    seen = []
    build = M.build_model

    def spied(*a, **k):
        model = build(*a, **k)
        first = model.model.layers[0]
        first.register_forward_pre_hook(lambda m, args: seen.append(len(m._forward_hooks) + site_calls(m)))
        return model

    monkeypatch.setattr(M, "build_model", spied)
    M.run(shape="tiny", batches=(2,), modes=("eager",), phases=("decode",), kinds=("add",), hook_kinds=("mix",),
          steps=1, rounds=2, prompt=4, device="cpu", log=lambda s: None)
    assert seen and max(seen) == 1 and 0 in seen  # one variant at a time; none for the baseline


def _forwards(monkeypatch) -> list:
    """Every forward of the benchmark's first decoder block, as (any variant's function runs there,
    sequence length)."""
    seen = []
    build = M.build_model

    def spied(*a, **k):
        model = build(*a, **k)

        def pre(m, args, kwargs):
            h = args[0] if args else kwargs["hidden_states"]
            seen.append((site_calls(m) + len(m._forward_hooks) > 0, h.shape[1]))
        model.model.layers[0].register_forward_pre_hook(pre, with_kwargs=True)
        return model

    monkeypatch.setattr(M, "build_model", spied)
    return seen


@pytest.mark.parametrize("pair,reheat", [("round", True), ("adjacent", True), ("round", False)])
def test_adjacent_pairing_measures_the_unsteered_model_before_every_variant(monkeypatch, pair, reheat):
    """pair="adjacent": after the warm-up, every steered sample comes right after an unsteered
    one (its pair); pair="round": one unsteered sample per round, first. With ``reheat`` every
    round starts with one more, untimed, unsteered sample."""
    seen = _forwards(monkeypatch)
    rows = M.run(shape="tiny", batches=(2,), modes=("eager",), phases=("decode",), kinds=("add",), hook_kinds=("mix",),
                 assigns=("distinct",), steps=1, rounds=2, prompt=4, device="cpu", pair=pair, reheat=reheat,
                 log=lambda s: None)
    assert {r["pair"] for r in rows} == {pair}
    assert {r["reheat"] for r in rows} == {reheat}
    measures = [on for on, _ in seen[1::2]]  # a prefill and one decode step per sample
    assert [s for _, s in seen] == [4, 1] * (len(seen) // 2)
    timed = measures[2 * 3:]  # after the warm-up: two samples of each of the 3 cases
    want = [False, True, False, True] if pair == "adjacent" else [False, True, True]
    assert timed == ([False] * reheat + want) * 2
    with pytest.raises(ValueError, match="pair"):
        M.run(shape="tiny", batches=(2,), pair="next", device="cpu", log=lambda s: None)


def test_step_pairing_times_single_steps_after_an_unsteered_one(monkeypatch):
    """pair="step" (eager decode): after the warm-up, one prefill fills a running KV cache, then
    each sample is an untimed and a timed decode step of one case, every steered pair right
    after an unsteered pair; rows say 1 step per sample."""
    seen = _forwards(monkeypatch)
    rows = M.run(shape="tiny", batches=(2,), modes=("eager",), phases=("decode",), kinds=("add",), hook_kinds=("mix",),
                 assigns=("distinct",), steps=1, rounds=2, prompt=4, device="cpu", pair="step", log=lambda s: None)
    assert {r["pair"] for r in rows} == {"step"} and {r["steps"] for r in rows} == {1}
    timed = seen[3 * 2 * 2:]  # the warm-up: each of the 3 cases measured twice, a prefill and a step each
    off, on = (False, 1), (True, 1)
    want = [(False, 4)] + [off, off, on, on] * 2 * 2
    assert timed == want, timed
