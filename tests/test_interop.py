"""repeng and steering-vectors: the same vector, layer and strength steer a model the same way
with steerkit as with the library (tiny random models; the libraries' tests skip where they are
not installed, .ci/run installs them)."""
import types

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from steerkit import integrations as I  # noqa: E402
from steerkit.integrations.interop import from_repeng, from_steering_vectors  # noqa: E402
from steerkit.steering import io  # noqa: E402
from test_hf import D, _tiny  # noqa: E402

N_LAYERS = 3  # of the tiny models
F32 = dict(rtol=1e-5, atol=1e-5)


def _repeng():
    """repeng 0.4.0 names np.float_ in annotations evaluated at import time; NumPy 2 removed the
    alias. Provide it for the import only."""
    added = "float_" not in np.__dict__
    if added:
        np.float_ = np.float64
    try:
        return pytest.importorskip("repeng")
    finally:
        if added:
            del np.float_


def _ids(batch=3, seq=7):
    return torch.randint(3, 64, (batch, seq))


def _logits(model, ids, **kw):
    with torch.no_grad():
        return model(input_ids=ids, **kw).logits


def _arange_positions(ids):
    # repeng's ControlModule builds its padding mask from the block's position_ids and reshapes
    # it to [batch, seq]; transformers 5 passes [1, seq] when the caller gives none, which fails
    # for batch > 1, so calls through repeng pass explicit [batch, seq] position ids.
    return torch.arange(ids.shape[1]).expand(ids.shape)


def _steerkit_logits(model, config, ids, **kw):
    with I.steer(model, config, attention_mask=kw.get("attention_mask")):
        return _logits(model, ids, **kw)


def _repeng_logits(repeng, model, vector, coeff, layer_ids, ids, **kw):
    cm = repeng.ControlModel(model, layer_ids)  # wraps the blocks in place
    try:
        cm.set_control(vector, coeff)
        kw.setdefault("position_ids", _arange_positions(ids))
        with torch.no_grad():
            return cm(input_ids=ids, **kw).logits
    finally:
        cm.reset()
        cm.unwrap()


def _random_directions(layers, scale=2.0):
    return {layer: (torch.randn(D) * scale).numpy() for layer in layers}


def _word_tokenizer():
    """A whitespace word-level tokenizer over the tiny models' 64 ids (no hub download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<s>", "</s>"] + [f"w{i}" for i in range(3, 64)]
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<s>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   model_input_names=["input_ids", "attention_mask"])


def _contrast_pairs(n=6):
    """(positive, negative) texts of different lengths: the same random words, then two
    different random endings."""
    pairs = []
    for _ in range(n):
        words = [f"w{int(i)}" for i in torch.randint(3, 64, (int(torch.randint(2, 6, ())),))]
        a, b = (f"w{int(i)}" for i in torch.randint(3, 64, (2,)))
        pairs.append((" ".join(words + [a]), " ".join(words + [b])))
    return pairs


def _last_token_states(model, tok, texts, layer):
    """Output of decoder block ``layer`` at each text's last token, through steerkit's capture."""
    out = []
    for text in texts:
        enc = tok(text, return_tensors="pt")
        out.append(I.capture(model, [f"resid_post.{layer}"], **enc)[f"resid_post.{layer}"][0, -1])
    return torch.stack(out)


# -- repeng ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_repeng_control_model_and_steerkit_give_the_same_logits(family):
    repeng = _repeng()
    model, ids = _tiny(family), _ids()
    cv = repeng.ControlVector(model_type=family, directions=_random_directions(range(N_LAYERS)))
    coeff, layer_ids = -1.7, [1, -1]  # repeng counts negative layer ids from the last block
    config = from_repeng(cv, model, coeff, layer_ids=layer_ids)
    assert sorted(config) == ["resid_post.1", "resid_post.2"]
    want = _repeng_logits(repeng, model, cv, coeff, layer_ids, ids)
    got = _steerkit_logits(model, config, ids)
    torch.testing.assert_close(got, want, **F32)
    assert not torch.allclose(want, _logits(model, ids), atol=1e-2)  # it did steer


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_repeng_in_half_precision_agrees_within_the_dtype(dtype):
    """repeng rounds coeff * direction to the model dtype before adding; steerkit adds in float32."""
    repeng = _repeng()
    model, ids = _tiny("llama").to(dtype), _ids()
    cv = repeng.ControlVector(model_type="llama", directions=_random_directions([1, 2]))
    want = _repeng_logits(repeng, model, cv, 1.5, [1, 2], ids).float()
    got = _steerkit_logits(model, from_repeng(cv, model, 1.5), ids).float()
    base = _logits(model, ids).float()
    tol = {torch.bfloat16: 2 ** -6, torch.float16: 2 ** -9}[dtype] * float(base.abs().max())
    torch.testing.assert_close(got, want, rtol=0, atol=tol)
    assert (want - base).abs().max() > 20 * tol


def test_repeng_gguf_export_steers_steerkit_as_it_steers_repeng(tmp_path):
    pytest.importorskip("gguf")
    repeng = _repeng()
    model, ids = _tiny("llama"), _ids()
    directions = _random_directions([1, 2])  # llama.cpp never steers block 0 (no direction.0)
    cv = repeng.ControlVector(model_type="llama", directions=directions)
    path = tmp_path / "repeng.gguf"
    cv.export_gguf(path)
    vectors, hint = io.read_control_vector(path)
    assert hint == "llama" and sorted(vectors) == ["resid_post.1", "resid_post.2"]
    for layer, direction in directions.items():  # direction.<l> is repeng's layer l
        assert torch.equal(vectors[f"resid_post.{layer}"], torch.from_numpy(direction))
    want = _repeng_logits(repeng, model, cv, 2.5, [1, 2], ids)
    got = _steerkit_logits(model, from_repeng(path, model, 2.5), ids)
    torch.testing.assert_close(got, want, **F32)
    # the file read back by repeng steers repeng the same way
    again = _repeng_logits(repeng, model, repeng.ControlVector.import_gguf(str(path)), 2.5, [1, 2], ids)
    torch.testing.assert_close(again, want, **F32)
    assert not torch.allclose(want, _logits(model, ids), atol=1e-2)


def test_steerkit_gguf_imports_into_repeng(tmp_path):
    pytest.importorskip("gguf")
    repeng = _repeng()
    model, ids = _tiny("llama"), _ids()
    v1, v2 = torch.randn(D) * 2, torch.randn(D) * 2
    path = tmp_path / "steerkit.gguf"
    io.write_control_vector(path, {"resid_post.1": v1, 2: v2}, model_hint="llama")
    cv = repeng.ControlVector.import_gguf(str(path))
    assert cv.model_type == "llama" and sorted(cv.directions) == [1, 2]
    assert np.array_equal(cv.directions[1], v1.numpy()) and np.array_equal(cv.directions[2], v2.numpy())
    want = _repeng_logits(repeng, model, cv, -3.0, [1, 2], ids)
    got = _steerkit_logits(model, from_repeng(path, model, -3.0), ids)
    torch.testing.assert_close(got, want, **F32)
    assert not torch.allclose(want, _logits(model, ids), atol=1e-2)


def test_repeng_left_padding_is_skipped_like_steerkit_with_an_attention_mask():
    """repeng leaves the positions before each row's last position id 0 alone (left padding, as
    generate numbers it); steerkit does the same given the attention mask."""
    repeng = _repeng()
    model = _tiny("llama")
    ids = _ids(3, 6)
    ids[0, :2] = 0
    ids[1, :1] = 0
    mask = (ids != 0).long()
    positions = (mask.cumsum(1) - 1).clamp(min=0)  # generate's numbering: padding gets 0
    cv = repeng.ControlVector(model_type="llama", directions=_random_directions([0, 1], scale=3.0))
    kw = dict(attention_mask=mask, position_ids=positions)
    want = _repeng_logits(repeng, model, cv, 1.0, [0, 1], ids, **kw)
    config = from_repeng(cv, model, 1.0)
    got = _steerkit_logits(model, config, ids, **kw)
    torch.testing.assert_close(got, want, **F32)
    with I.steer(model, config):  # no attention mask: the padding positions are steered too
        padding_steered = _logits(model, ids, **kw)
    real = mask.bool()
    torch.testing.assert_close(padding_steered[real], want[real], **F32)
    assert not torch.allclose(padding_steered[~real], want[~real], atol=1e-2)


def test_repeng_trained_vector_names_block_outputs():
    """ControlVector.train (tiny word tokenizer, no download) reads block l's output for layer l:
    its direction for layer 1 is the top principal axis of the positive-negative differences of
    steerkit's resid_post.1 at the last token; and it steers steerkit as it steers repeng."""
    repeng = _repeng()
    model, ids, tok = _tiny("llama"), _ids(), _word_tokenizer()
    pairs = _contrast_pairs()
    cv = repeng.ControlVector.train(model, tok, [repeng.DatasetEntry(p, n) for p, n in pairs], batch_size=4)
    assert sorted(cv.directions) == [1, 2]  # repeng's default: every block but the first
    pos = _last_token_states(model, tok, [p for p, _ in pairs], 1).double()
    neg = _last_token_states(model, tok, [n for _, n in pairs], 1).double()
    diffs = pos - neg
    axis = torch.linalg.svd(diffs - diffs.mean(0), full_matrices=False).Vh[0]
    got = torch.from_numpy(cv.directions[1]).double()
    assert abs(float(got @ axis)) == pytest.approx(1.0, abs=1e-4)
    want = _repeng_logits(repeng, model, cv, 8.0, [1, 2], ids)
    torch.testing.assert_close(_steerkit_logits(model, from_repeng(cv, model, 8.0), ids), want, **F32)
    assert not torch.allclose(want, _logits(model, ids), atol=1e-3)


# -- steering-vectors ------------------------------------------------------------------------------
def _sv():
    return pytest.importorskip("steering_vectors")


def _steering_vectors_logits(vector, model, ids, **apply_kw):
    with vector.apply(model, **apply_kw):
        return _logits(model, ids)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_steering_vector_apply_and_steerkit_give_the_same_logits(family):
    sv = _sv()
    model, ids = _tiny(family), _ids()
    vector = sv.SteeringVector({0: torch.randn(D), -1: torch.randn(D)}, "decoder_block")  # -1: last block
    config = from_steering_vectors(vector, model, -2.5)
    assert sorted(config) == ["resid_post.0", "resid_post.2"]
    want = _steering_vectors_logits(vector, model, ids, multiplier=-2.5)
    torch.testing.assert_close(_steerkit_logits(model, config, ids), want, **F32)
    assert not torch.allclose(want, _logits(model, ids), atol=1e-2)


OPERATORS = [None, "addition_operator", "ablation_operator", "ablation_then_addition_operator"]
LAYER_CASES = [("llama", t, op) for t in ("decoder_block", "self_attn", "mlp") for op in OPERATORS]
LAYER_CASES += [("gpt2", "self_attn", None), ("gpt2", "mlp", "ablation_then_addition_operator"),
                ("gemma2", "self_attn", None)]  # Gemma: the attention module, before its post-norm


@pytest.mark.parametrize("family, layer_type, operator", LAYER_CASES)
def test_steering_vector_layer_types_and_operators(family, layer_type, operator):
    sv = _sv()
    model, ids = _tiny(family), _ids()
    vector = sv.SteeringVector({1: torch.randn(D) * 2}, layer_type)
    op = None if operator is None else getattr(sv, operator)()
    config = from_steering_vectors(vector, model, 1.5, operator=op)
    hooked = sv.guess_and_enhance_layer_config(model)[layer_type].format(num=1)  # the module it hooks
    if layer_type == "decoder_block":
        assert I.resolve_site(model, "resid_post.1")[0] is model.get_submodule(hooked)
        assert list(config) == ["resid_post.1"]
    else:
        assert list(config) == [f"module:{hooked}"]
    want = _steering_vectors_logits(vector, model, ids, multiplier=1.5, operator=op)
    got = _steerkit_logits(model, config, ids)
    torch.testing.assert_close(got, want, **F32)
    assert not torch.allclose(want, _logits(model, ids), atol=1e-3)


def test_steering_vector_in_bfloat16():
    sv = _sv()
    model, ids = _tiny("llama").to(torch.bfloat16), _ids()
    vector = sv.SteeringVector({1: torch.randn(D) * 2, 2: torch.randn(D) * 2})
    want = _steering_vectors_logits(vector, model, ids, multiplier=0.75).float()
    got = _steerkit_logits(model, from_steering_vectors(vector, model, 0.75), ids).float()
    base = _logits(model, ids).float()
    tol = 2 ** -6 * float(base.abs().max())
    torch.testing.assert_close(got, want, rtol=0, atol=tol)
    assert (want - base).abs().max() > 20 * tol


def test_steering_vector_left_padding_is_steered():
    """steering-vectors adds to every position, padding included; so does steerkit without an
    attention mask (with one, padding stays untouched)."""
    sv = _sv()
    model = _tiny("llama")
    ids = _ids(2, 6)
    ids[0, :3] = 0
    mask = (ids != 0).long()
    vector = sv.SteeringVector({1: torch.randn(D) * 3})
    config = from_steering_vectors(vector, model, 1.0)
    with I.steer(model, config):
        got = _logits(model, ids, attention_mask=mask)
    with torch.no_grad(), vector.apply(model):
        want = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(got, want, **F32)
    with I.steer(model, config, attention_mask=mask):
        masked = _logits(model, ids, attention_mask=mask)
    real = mask.bool()
    torch.testing.assert_close(masked[real], want[real], **F32)
    assert not torch.allclose(masked[~real], want[~real], atol=1e-2)


def test_trained_steering_vector_names_block_outputs():
    """train_steering_vector (tiny word tokenizer, no download): its layer-l vector is the mean
    positive-negative difference of steerkit's resid_post.l at the last token, and it steers
    steerkit as it steers the model through .apply."""
    sv = _sv()
    model, ids, tok = _tiny("llama"), _ids(), _word_tokenizer()
    pairs = _contrast_pairs()
    vector = sv.train_steering_vector(model, tok, pairs, layers=[1, -1], batch_size=3)
    assert sorted(vector.layer_activations) == [1, 2]
    for layer in (1, 2):
        diffs = (_last_token_states(model, tok, [p for p, _ in pairs], layer)
                 - _last_token_states(model, tok, [n for _, n in pairs], layer))
        torch.testing.assert_close(vector.layer_activations[layer], diffs.mean(0), **F32)
    want = _steering_vectors_logits(vector, model, ids, multiplier=4.0)
    torch.testing.assert_close(_steerkit_logits(model, from_steering_vectors(vector, model, 4.0), ids), want, **F32)
    assert not torch.allclose(want, _logits(model, ids), atol=1e-3)


# -- what cannot be mapped (no peer library needed) ------------------------------------------------
def test_refusals_are_clear():
    model = _tiny("llama")
    cv = types.SimpleNamespace(model_type="llama", directions={1: np.ones(D, np.float32)})
    with pytest.raises(ValueError, match="normalize"):
        from_repeng(cv, model, 1.0, normalize=True)
    with pytest.raises(ValueError, match="operator"):
        from_repeng(cv, model, 1.0, operator=lambda a, b: a * b)
    with pytest.raises(ValueError, match=r"no direction for layers \[2\]"):
        from_repeng(cv, model, 1.0, layer_ids=[1, -1])
    with pytest.raises(ValueError, match=r"layer 3 is outside the model's decoder blocks 0..2"):
        from_repeng(types.SimpleNamespace(directions={3: np.ones(D)}), model)
    with pytest.raises(ValueError, match="two entries name decoder block 2"):
        from_repeng(types.SimpleNamespace(directions={2: np.ones(D), -1: np.ones(D)}), model)
    with pytest.raises(ValueError, match="hidden size is 32"):
        from_repeng(types.SimpleNamespace(directions={1: np.ones(D + 1)}), model)
    with pytest.raises(TypeError, match="ControlVector or a GGUF path"):
        from_repeng({1: np.ones(D)}, model)

    vec = types.SimpleNamespace(layer_activations={1: torch.ones(D)}, layer_type="decoder_block")
    norm = types.SimpleNamespace(layer_activations={1: torch.ones(D)}, layer_type="input_layernorm")
    with pytest.raises(ValueError, match="layer_type 'input_layernorm' cannot be mapped"):
        from_steering_vectors(norm, model)
    with pytest.raises(ValueError, match="operator .* cannot be mapped"):
        from_steering_vectors(vec, model, operator=lambda x, v: v)
    with pytest.raises(ValueError, match="positions="):
        from_steering_vectors(vec, model, min_token_index=2)
    with pytest.raises(ValueError, match="positions="):
        from_steering_vectors(vec, model, token_indices=[0, 1])
    with pytest.raises(ValueError, match="layer_config"):
        from_steering_vectors(vec, model, layer_config={"decoder_block": "model.layers.{num}"})
    with pytest.raises(I.UnsupportedModelError):
        other = torch.nn.Linear(2, 2)
        other.config = types.SimpleNamespace(model_type="mamba")
        from_steering_vectors(vec, other)
