"""Splicing SAEs into tiny random transformers models: the error term keeps unsteered outputs
bit-identical, steering adds decode(edit(f)) - decode(f), without the error term the model runs on
the reconstruction, detach restores the model."""
import math

import pytest
import torch

transformers = pytest.importorskip("transformers")

from steerkit.integrations import resolve_site  # noqa: E402
from steerkit.integrations.sae_splice import features, splice  # noqa: E402
from steerkit.sae import SAE  # noqa: E402
from helpers import plain_hook_logits, tiny_lm  # noqa: E402

D, FEAT = 32, 128
IDS = torch.randint(3, 64, (2, 7), generator=torch.Generator().manual_seed(5))


def _sae(activation="topk", seed=1, **kw):
    g = torch.Generator().manual_seed(seed)
    thr = torch.rand(FEAT, generator=g) * 0.2 if activation == "jumprelu" else None
    return SAE.from_weights(torch.randn(D, FEAT, generator=g) / math.sqrt(D), torch.randn(FEAT, generator=g) * 0.1,
                            torch.randn(FEAT, D, generator=g) / math.sqrt(FEAT), torch.randn(D, generator=g) * 0.1,
                            thr, activation=activation, k=8 if activation == "topk" else None, **kw)


def _logits(model, ids=IDS):
    with torch.no_grad():
        return model(input_ids=ids).logits


def _dec(sae, f):
    return f.double() @ sae.W_dec.double() + sae.b_dec.double()


SITES = ["resid_pre.1", "resid_post.1", "attn_out.2", "mlp_out.0"]


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("site", SITES)
def test_unsteered_error_term_splice_is_bit_identical(family, site):
    model = tiny_lm(family)
    base = _logits(model)
    sae = _sae("topk")
    for kw in (dict(), dict(record=True), dict(edit=lambda f: f.clone())):
        with splice(model, site, sae, **kw) as handle:
            assert torch.equal(_logits(model), base), kw
        if kw.get("record"):
            assert handle.features.shape == (2, 7, FEAT)
    # the reconstruction itself is far from exact, so a splice without the error term changes the output
    with splice(model, site, sae, error_term=False):
        assert not torch.allclose(_logits(model), base, atol=1e-3)
    assert torch.equal(_logits(model), base)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("activation", ["relu", "jumprelu", "topk"])
@pytest.mark.parametrize("site", ["resid_post.1", "mlp_out.2"])
def test_steering_with_the_error_term_adds_the_reconstruction_change(family, activation, site):
    model = tiny_lm(family)
    base = _logits(model)
    sae = _sae(activation)
    clamps = {3: 6.0, 77: 0.0, 100: -2.5}

    def edit(f):
        f = f.clone()
        for i, v in clamps.items():
            f[..., i] = v
        return f

    def oracle(h):  # h + decode(edit(f)) - decode(f), in double precision
        f = sae.encode(h.float()).double()
        return (h.double() + _dec(sae, edit(f)) - _dec(sae, f)).to(h.dtype)

    want = plain_hook_logits(model, site, oracle, IDS)
    with splice(model, site, sae, edit=clamps):
        got_dict = _logits(model)
    with splice(model, site, sae, edit=edit):
        got_fn = _logits(model)
    torch.testing.assert_close(got_dict, want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got_fn, want, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(got_dict, base, atol=1e-3)
    assert torch.equal(_logits(model), base)  # detached


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_without_the_error_term_the_model_runs_on_the_reconstruction(family):
    model = tiny_lm(family)
    sae = _sae("jumprelu")
    site = "resid_pre.2"
    want = plain_hook_logits(model, site, lambda h: _dec(sae, sae.encode(h.float()).double()).to(h.dtype), IDS)
    with splice(model, site, sae, error_term=False):
        got = _logits(model)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    want2 = plain_hook_logits(model, site, lambda h: _dec(sae, sae.encode(h.float()).double() * 2).to(h.dtype), IDS)
    with splice(model, site, sae, error_term=False, edit=lambda f: f * 2):
        torch.testing.assert_close(_logits(model), want2, rtol=1e-4, atol=1e-4)


def test_set_edit_features_and_generate():
    model = tiny_lm("llama")
    base = _logits(model)
    sae = _sae("topk", site="resid_post.1")
    handle = splice(model, None, sae)  # the SAE's own site
    assert torch.equal(_logits(model), base)
    handle.set_edit({5: 10.0})
    steered = _logits(model)
    assert not torch.allclose(steered, base, atol=1e-3)
    out = model.generate(input_ids=IDS[:1, :4], max_new_tokens=3, min_new_tokens=3, do_sample=False)  # with the KV cache
    assert out.shape == (1, 7)
    handle.set_edit(None)
    assert torch.equal(_logits(model), base)
    handle.detach()
    handle.detach()  # twice is fine
    # features at the site equal the SAE on the captured activation
    from steerkit.integrations import capture

    h = capture(model, ["resid_post.1"], input_ids=IDS)["resid_post.1"]
    torch.testing.assert_close(features(model, "resid_post.1", sae, input_ids=IDS), sae.encode(h))
    assert torch.equal(_logits(model), base)


def test_bad_input():
    model = tiny_lm("llama")
    with pytest.raises(ValueError, match="wide"):
        splice(model, "resid_post.1", SAE(16, 64))
    with pytest.raises(ValueError, match="trained at"):
        splice(model, "resid_post.1", _sae("relu", site="resid_post.2"))
    with pytest.raises(ValueError, match="no site"):
        splice(model, None, _sae("relu"))
    with pytest.raises(ValueError, match="feature"):
        splice(model, "resid_post.1", _sae("relu"), edit={FEAT: 1.0})
    with pytest.raises(ValueError, match="finite"):
        splice(model, "resid_post.1", _sae("relu"), edit={1: float("nan")})
    with pytest.raises(ValueError, match="edit"):
        splice(model, "resid_post.1", _sae("relu"), edit=[1, 2])
    with pytest.raises(ValueError, match="blocks"):
        splice(model, "resid_post.9", _sae("relu"))
    with splice(model, "resid_post.1", _sae("relu"), edit=lambda f: f[..., :3]):
        with pytest.raises(ValueError, match="shape"):
            _logits(model)
    assert len(resolve_site(model, "resid_post.1")[0]._forward_hooks) == 0  # removed despite the error


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_unsteered_bit_identical_and_steered_close():
    model = tiny_lm("llama").to("cuda", torch.bfloat16)
    ids = IDS.to("cuda")
    base = _logits(model, ids)
    sae = _sae("topk").to("cuda")
    with splice(model, "resid_post.1", sae):
        assert torch.equal(_logits(model, ids), base)

    def oracle(h):
        f = sae.encode(h.float()).double()
        g = f.clone()
        g[..., 3] = 6.0
        return (h.double() + _dec(sae, g) - _dec(sae, f)).to(h.dtype)

    want = plain_hook_logits(model, "resid_post.1", oracle, ids)
    with splice(model, "resid_post.1", sae, edit={3: 6.0}):
        got = _logits(model, ids)
    torch.testing.assert_close(got.float(), want.float(), rtol=2e-2, atol=5e-2)
