"""Per-request SAE clamp steering in tiny random transformers models (integrations.sae_steering):
configuration 0 and detach bit-identical, clamps equal the error-term splice with a clamp edit
(TopK, ReLU, JumpReLU), distinct configurations per sequence equal each sequence alone, the
steered engine, torch.compile without graph breaks or recompilation, bad input."""
import math

import pytest
import torch

transformers = pytest.importorskip("transformers")

from steerkit.integrations import attach  # noqa: E402
from steerkit.integrations.sae_splice import splice  # noqa: E402
from steerkit.integrations.sae_steering import attach_sae  # noqa: E402
from steerkit.sae import SAE  # noqa: E402
from steerkit.steering.sae_table import SaeSteeringTable  # noqa: E402
from helpers import tiny_lm  # noqa: E402

D, FEAT = 32, 128
GPU = torch.cuda.is_available()
IDS = torch.randint(3, 64, (3, 7), generator=torch.Generator().manual_seed(5))
CLAMP = {3: 4.0, 17: 0.0, 40: -1.5}  # a target, an ablation, a negative target
HOT = (3, 17, 40, 90)  # features a TopK test keeps in the top k (see _sae)


def _sae(activation, seed=1, **kw):
    """A random SAE; TopK: the HOT features get a large encoder bias, so that they are among the
    top k at every token (where steerkit's f_i = ReLU(pre_i) is the splice's TopK feature)."""
    g = torch.Generator().manual_seed(seed)
    b_enc = torch.randn(FEAT, generator=g) * 0.1
    if activation == "topk":
        b_enc[list(HOT)] += 50.0
    thr = torch.rand(FEAT, generator=g) * 0.2 if activation == "jumprelu" else None
    return SAE.from_weights(torch.randn(D, FEAT, generator=g) / math.sqrt(D), b_enc,
                            torch.randn(FEAT, D, generator=g) / math.sqrt(FEAT) * 4, torch.randn(D, generator=g) * 0.1,
                            thr, activation=activation, k=8 if activation == "topk" else None, **kw)


@torch.no_grad()
def _logits(model, ids=IDS):
    return model(input_ids=ids).logits


def _close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family,site", [("llama", "resid_post.1"), ("llama", "resid_pre.1"), ("gpt2", "resid_post.1"),
                                         ("gpt2", "mlp_out.0"), ("llama", "attn_out.2")])
def test_configuration_0_and_detach_are_bit_identical(family, site):
    model = tiny_lm(family)
    base = _logits(model)
    with attach_sae(model, site, _sae("relu"), capacity=3) as h:
        h.set(1, clamp=CLAMP)
        h.set(2, add={5: 3.0})
        h.assign([0, 0, 0])
        assert torch.equal(_logits(model), base)
        h.assign(0)
        assert torch.equal(_logits(model), base)
        h.assign([0, 1, 2])  # rows of sequence 0 untouched bit for bit in a mixed batch
        mixed = _logits(model)
        assert torch.equal(mixed[0], base[0])
        assert not torch.allclose(mixed[1], base[1], atol=1e-3) and not torch.allclose(mixed[2], base[2], atol=1e-3)
        h.clear(1)
        h.clear(2)
        h.assign([1, 2, 1])  # cleared configurations are the identity again
        assert torch.equal(_logits(model), base)
        h.assign(None)
        assert torch.equal(_logits(model), base)
        h.assign([1, 1, 1])
    assert torch.equal(_logits(model), base)  # detached by the with block
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("activation", ["topk", "relu", "jumprelu"])
@pytest.mark.parametrize("family,site", [("llama", "resid_post.1"), ("gpt2", "resid_pre.2")])
def test_clamp_equals_the_error_term_splice_with_a_clamp_edit(activation, family, site):
    model = tiny_lm(family)
    sae = _sae(activation)
    with splice(model, site, sae, edit=CLAMP):
        want = _logits(model)
    with attach_sae(model, site, sae, capacity=2) as h:
        h.set(2, clamp=CLAMP)
        h.assign(2)
        got = _logits(model)
    _close(got, want)
    assert not torch.allclose(got, _logits(model), atol=1e-3)  # the clamp does change the output


@pytest.mark.parametrize("activation", ["topk", "jumprelu"])
def test_adds_only_active_and_gemma_scope_convention_equal_the_splice(activation):
    """add = an edit adding the strength to the feature; only_active = an edit that clamps only
    where the feature is active; an SAE without the b_dec subtraction (Gemma Scope)."""
    model, site = tiny_lm("llama"), "resid_post.0"
    sae = _sae(activation, seed=3, apply_b_dec_to_input=activation != "jumprelu")
    thr = sae.threshold.float() if activation == "jumprelu" else torch.zeros(FEAT)

    def added(f):
        f = f.clone()
        f[..., 90] += 2.5
        return f

    def clamp_active(f):
        f = f.clone()
        for i, v in CLAMP.items():
            # JumpReLU: active = pre > threshold; the splice's f is pre there, else 0
            active = f[..., i] > thr[i] if activation == "jumprelu" else f[..., i] > 0
            f[..., i] = torch.where(active, torch.full_like(f[..., i], v), f[..., i])
        return f

    with attach_sae(model, site, sae, capacity=2) as h:
        h.set(1, add={90: 2.5})
        h.set(2, clamp=CLAMP, only_active=True)
        for cid, edit in ((1, added), (2, clamp_active)):
            h.assign(cid)
            got = _logits(model)
            h.assign(None)
            with splice(model, site, sae, edit=edit):
                _close(got, _logits(model))


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_distinct_configurations_per_sequence_equal_each_sequence_alone(family):
    model, site = tiny_lm(family), "resid_post.1"
    sae = _sae("jumprelu")
    base = _logits(model)
    with attach_sae(model, site, sae, capacity=4) as h:
        h.set(1, clamp=CLAMP)
        h.set(4, clamp={60: 6.0}, add={7: -2.0})
        ids = [4, 0, 1]
        h.assign(ids)
        batch = _logits(model)
        for b, cid in enumerate(ids):
            h.assign([cid])
            _close(batch[b], _logits(model, IDS[b:b + 1])[0])
        # through a caller-owned buffer, updated in place
        buf = torch.zeros(3, dtype=torch.int32)
        h.use_ids(buf)
        assert torch.equal(_logits(model), base)
        buf.copy_(torch.tensor(ids, dtype=torch.int32))
        assert torch.equal(_logits(model), batch)
    assert not torch.allclose(batch[0], base[0], atol=1e-3) and not torch.allclose(batch[2], base[2], atol=1e-3)


def test_follows_a_steering_and_its_position_rules():
    """follow: the ids of a hf.Steering (shared id space), its per-token ids and position rules."""
    model = tiny_lm("llama")
    sae = _sae("relu")
    steering = attach(model, ["resid_post.2"], capacity=4)
    h = attach_sae(model, "resid_post.1", sae, capacity=4)
    try:
        steering.set(2, {})  # id 2: no steering at the Steering's own site, a clamp here
        h.set(2, clamp=CLAMP)
        h.follow(steering)
        base = _logits(model)
        steering.assign(None)
        assert torch.equal(_logits(model), base)  # off with the Steering
        steering.assign([0, 2, 0])
        got = _logits(model)
        h.follow(None)
        h.assign([0, 2, 0])
        assert torch.equal(got, _logits(model))
        # per-token ids: steer only the last 3 tokens of sequence 1
        tok = torch.zeros(3, 7, dtype=torch.int32)
        tok[1, 4:] = 2
        h.follow(steering)
        steering.assign_tokens(tok)
        got = _logits(model)
        assert torch.equal(got[:, :4], base[:, :4]) and torch.equal(got[0], base[0])
        assert not torch.allclose(got[1, 4:], base[1, 4:], atol=1e-3)
        # a position rule (tokens at positions >= 5)
        steering.assign([2, 0, 2], positions=5)
        got = _logits(model)
        assert torch.equal(got[:, :5], base[:, :5]) and torch.equal(got[1], base[1])
        assert not torch.allclose(got[0, 5:], base[0, 5:], atol=1e-3)
    finally:
        h.detach()
        steering.detach()


def test_engine_slots_pick_sae_configurations_like_generate_alone():
    """The engine's per-slot ids reach the SAE hook through the Steering it drives: a batch of
    requests with distinct SAE configurations generates what each generates alone with
    transformers' generate and the same clamp (tiny model: no near-ties expected in float32).
    The decode step is compiled (fullgraph, aot_eager): one graph, none again when ids change."""
    from torch._dynamo.testing import CompileCounterWithBackend

    from steerkit.integrations.engine import Engine

    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    model = tiny_lm("llama")
    steering = attach(model, ["resid_post.2"], capacity=4)
    h = attach_sae(model, "resid_post.1", _sae("jumprelu", seed=4), capacity=4)
    eng = None
    try:
        specs = {1: dict(clamp=CLAMP), 2: dict(clamp={60: 8.0}, add={7: -3.0}), 3: dict(add={99: 5.0})}
        for i, spec in specs.items():
            steering.set(i, {})  # the id exists for the engine; the steering lives in the SAE table
            h.set(i, **spec)
        h.follow(steering)
        eng = Engine(model, steering, max_batch=4, max_len=32, buckets=(4,), compile=counter, overlap=False,
                     expect={})
        g = torch.Generator().manual_seed(0)
        prompts = [torch.randint(3, 64, (n,), generator=g).tolist() for n in (5, 3, 6, 4)]
        ids = [1, 0, 2, 3]
        got = eng.generate(prompts, steering=ids, max_new_tokens=6, stop=())
        plain = eng.generate(prompts, steering=None, max_new_tokens=6, stop=())
        h.set(2, clamp={61: 8.0})  # a table change between requests: no recompilation either
        changed = eng.generate(prompts, steering=ids, max_new_tokens=6, stop=())
        assert changed[2] != got[2] and changed[0] == got[0]
        assert counter.frame_count == 1
        h.set(2, **specs[2])
        eng.close()
        eng = None
        h.follow(None)
        for p, cid, toks in zip(prompts, ids, got):
            h.assign([cid])
            with torch.no_grad():
                out = model.generate(torch.tensor([p]), max_new_tokens=6, do_sample=False, pad_token_id=0,
                                     eos_token_id=None)
            assert toks == out[0, len(p):].tolist(), cid
        assert sum(a != b for a, b in zip(got, plain)) >= 2  # the clamps change the generations
    finally:
        if eng is not None:
            eng.close()
        h.detach()
        steering.detach()
        torch._dynamo.reset()


def test_compiled_fullgraph_no_recompile_when_tables_or_ids_change():
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    model = tiny_lm("llama")
    sae = _sae("topk")
    h = attach_sae(model, "resid_post.1", sae, capacity=3)
    buf = torch.zeros(3, dtype=torch.int32)
    h.use_ids(buf)
    counter = CompileCounterWithBackend("aot_eager")
    fn = torch.compile(lambda ids: model(input_ids=ids).logits, backend=counter, fullgraph=True, dynamic=False)

    def both():
        with torch.no_grad():
            got = fn(IDS)
            return got, model(input_ids=IDS).logits  # compiled, eager (same hook, same ids)

    try:
        base_c, base_e = both()
        _close(base_c, base_e)
        steps = [lambda: h.set(1, clamp=CLAMP), lambda: buf.copy_(torch.tensor([1, 0, 1], dtype=torch.int32)),
                 lambda: h.set(2, add={5: 3.0}, clamp={90: 1.0}), lambda: buf.copy_(torch.tensor([2, 1, 0], dtype=torch.int32)),
                 lambda: h.set_value(1, 3, -2.0), lambda: h.clear(2)]
        for step in steps:
            step()
            c, e = both()
            _close(c, e)
        assert not torch.allclose(c, base_c, atol=1e-3)
        h.assign([2, 2, 1])  # a new ids tensor of the same shape: no recompilation either
        h.set(2, clamp={3: 1.0})
        c, e = both()
        _close(c, e)
        assert counter.frame_count == 1  # one graph, no break, no recompilation
    finally:
        h.detach()
        torch._dynamo.reset()


def test_triton_kernel_in_the_model_matches_the_reference():
    """The eager fused kernel (on the GPU, or the Triton interpreter on a CPU) against the
    reference backend."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = tiny_lm("gpt2").to(device)
    with attach_sae(model, "resid_post.0", _sae("jumprelu").to(device), capacity=2, backend="triton") as h:
        h.set(1, clamp=CLAMP)
        h.set(2, add={7: 2.0}, clamp={60: 3.0}, only_active=True)
        h.assign([2, 0, 1])
        got = _logits(model, IDS[:, :3].to(device))
        h.backend = "torch"
        want = _logits(model, IDS[:, :3].to(device))
    _close(got, want)


def test_gradients_flow_out_of_place():
    model = tiny_lm("llama")
    sae = _sae("relu")
    emb = model.get_input_embeddings()(IDS).detach().requires_grad_(True)
    with attach_sae(model, "resid_post.0", sae, capacity=1) as h:
        h.set(1, clamp=CLAMP)
        h.assign(1)
        model(inputs_embeds=emb).logits.sum().backward()
    assert emb.grad is not None and torch.isfinite(emb.grad).all()


def test_bad_input_is_refused_with_the_argument_named():
    model = tiny_lm("llama")
    with pytest.raises(ValueError, match="16-wide"):
        attach_sae(model, "resid_post.0", SAE(16, 64))
    with pytest.raises(ValueError, match="normalises its input"):
        attach_sae(model, "resid_post.0", SAE(D, 64, normalize="layer_norm"))
    with pytest.raises(ValueError, match="trained at"):
        attach_sae(model, "resid_post.0", SAE(D, 64, site="resid_post.2"))
    with pytest.raises(TypeError, match="sae_or_table"):
        attach_sae(model, "resid_post.0", object())
    with pytest.raises(ValueError, match="site"):
        attach_sae(model, "resid_post.9", _sae("relu"))
    table = SaeSteeringTable(torch.randn(D, 8), torch.zeros(8), torch.randn(8, D), capacity=2, max_features=2)
    with attach_sae(model, "resid_post.0", table) as h:
        assert h.capacity == 2 and h.table is table
        with pytest.raises(ValueError, match="0..2"):
            h.assign([0, 3])
        with pytest.raises(ValueError, match="int32"):
            h.use_ids(torch.zeros(3, dtype=torch.int64))
        with pytest.raises(TypeError, match="Steering"):
            h.follow(object())
        with pytest.raises(ValueError, match="max_features"):
            h.set(1, clamp={0: 1.0, 1: 1.0, 2: 1.0})
        with pytest.raises(IndexError):
            h.set(0, clamp={0: 1.0})
        h.assign([1, 1])
        with pytest.raises(ValueError, match="2 sequence ids"):
            _logits(model)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


@pytest.mark.skipif(not GPU, reason="needs a CUDA GPU")
def test_gpu_bf16_fused_kernel_in_the_model_matches_the_reference():
    model = tiny_lm("llama", device="cuda", dtype=torch.bfloat16)
    sae = _sae("topk").to("cuda", torch.bfloat16)
    ids = IDS.cuda()
    with attach_sae(model, "resid_post.1", sae, capacity=3) as h:
        h.set(1, clamp=CLAMP)
        h.set(3, clamp={60: 2.0}, add={5: 1.0})
        h.assign([3, 0, 1])
        got = _logits(model, ids).float()
        h.backend = "torch"
        want = _logits(model, ids).float()
        h.assign(0)
        base = _logits(model, ids).float()
    torch.testing.assert_close(got, want, rtol=0, atol=3e-2 * float(want.abs().max()))
    assert torch.equal(got[1], base[1])
