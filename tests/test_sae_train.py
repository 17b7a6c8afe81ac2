"""Training a TopK SAE on activations captured from a tiny random model: the reconstruction loss
goes down, statistics add up, the result is saved in the SAELens layout, padding is never trained on."""
import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from steerkit.integrations import capture  # noqa: E402
from steerkit.sae import load_sae  # noqa: E402
from steerkit.sae.train import tiny_model, train_topk_sae  # noqa: E402

SITE = "resid_post.1"


def _model():
    return tiny_model(d=32, layers=3, vocab=64)


def _tokens(n, s, seed):
    return torch.randint(3, 64, (n, s), generator=torch.Generator().manual_seed(seed))


def _fvu(sae, x):
    return float((sae(x) - x).pow(2).sum(-1).mean() / (x - x.mean(0)).pow(2).sum(-1).mean())


def test_training_lowers_the_reconstruction_loss_and_saves_saelens(tmp_path):
    model = _model()
    sae, stats = train_topk_sae(model, SITE, _tokens(64, 32, 0), n_features=128, k=8, train_batch_tokens=256,
                                buffer_tokens=1024, epochs=3, lr=3e-3, dead_after_tokens=500, save_to=tmp_path / "sae",
                                progress=True)
    assert stats["steps"] == len(stats["fvu"]) > 10
    assert stats["tokens"] == 3 * 64 * 31  # the first position of each sequence is dropped
    assert stats["final_fvu"] < 0.6 * stats["fvu"][0]
    # on held-out activations, in raw units (the input scale is folded into the weights)
    x = capture(model, [SITE], input_ids=_tokens(16, 32, 1))[SITE][:, 1:].reshape(-1, 32)
    assert _fvu(sae, x) < 0.6 * stats["fvu"][0]
    assert sae.activation == "topk" and sae.k == 8 and sae.site == SITE and sae.F == 128
    torch.testing.assert_close(sae.W_dec.norm(dim=1) * stats["input_scale"], torch.ones(128), rtol=1e-4, atol=1e-4)
    freq = stats["feature_frequency"]
    assert freq.shape == (128,) and abs(float(freq.sum()) - stats["l0"]) < 1e-4 and stats["l0"] <= 8 + 1e-6
    assert 0 <= stats["never_fired"] <= stats["dead"] <= 128
    # saved in the SAELens layout and loaded back
    back = load_sae(tmp_path / "sae")
    assert back.site == SITE and back.k == 8
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.equal(getattr(back, name), getattr(sae, name))
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert cfg["architecture"] == "topk" and cfg["hook_name"] == "blocks.1.hook_resid_post"
    assert (tmp_path / "sae" / "sparsity.safetensors").exists()
    summary = json.loads((tmp_path / "sae" / "steerkit_training.json").read_text())
    assert summary["tokens"] == stats["tokens"] and summary["fvu_last"] == stats["fvu"][-1]


def test_dead_features_are_counted_and_get_the_auxk_loss():
    model = _model()
    sae, stats = train_topk_sae(model, SITE, _tokens(10, 31, 2), n_features=512, k=1, train_batch_tokens=50,
                                buffer_tokens=300, dead_after_tokens=100, lr=1e-3, progress=False)
    assert stats["tokens"] == 300
    assert stats["never_fired"] >= 512 - 300  # at most one new feature per row can fire
    assert stats["dead"] >= stats["never_fired"]
    assert stats["auxk"][0] == 0 and max(stats["auxk"]) > 0  # AuxK starts once features are dead
    assert stats["dead_fraction"] == stats["dead"] / 512


@pytest.mark.parametrize("side", ["right", "left"])
def test_texts_are_tokenised_and_padding_is_never_trained_on(side):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = [f"w{i}" for i in range(60)]
    vocab = {"[PAD]": 0, "[BOS]": 1, "[EOS]": 2, "[UNK]": 3, **{w: i + 4 for i, w in enumerate(words)}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", eos_token="[EOS]", unk_token="[UNK]")
    tok.padding_side = side
    g = torch.Generator().manual_seed(3)
    lengths = [int(n) for n in torch.randint(2, 20, (13,), generator=g)]
    texts = [" ".join(words[int(j)] for j in torch.randint(0, 60, (n,), generator=g)) for n in lengths]
    _, stats = train_topk_sae(_model(), SITE, texts, tokenizer=tok, n_features=64, k=4, batch_size=4,
                              train_batch_tokens=4096, progress=False)
    assert stats["tokens"] == sum(lengths) - len(lengths)


def test_cli_trains_a_tiny_model(tmp_path, capsys):
    from steerkit.cli import main

    assert main(["sae-train", "--tokens", "3000", "--seq-len", "32", "--features", "128", "--k", "8",
                 "--out", str(tmp_path / "o")]) == 0
    assert "FVU" in capsys.readouterr().out
    sae = load_sae(tmp_path / "o")
    assert sae.site == "resid_post.1" and sae.F == 128 and sae.d == 64


def test_bad_input():
    model = _model()
    with pytest.raises(ValueError, match="k must"):
        train_topk_sae(model, SITE, _tokens(2, 8, 0), n_features=16, k=17)
    with pytest.raises(ValueError, match="no activations"):
        train_topk_sae(model, SITE, [], progress=False)
    with pytest.raises(ValueError, match="re-iterable"):
        train_topk_sae(model, SITE, iter([_tokens(2, 8, 0)]), epochs=2)
    with pytest.raises(ValueError, match="tokenizer"):
        train_topk_sae(model, SITE, ["a b c"], progress=False)
    with pytest.raises(ValueError, match="data items"):
        train_topk_sae(model, SITE, [3.5], progress=False)
    with pytest.raises(ValueError, match="site"):
        train_topk_sae(model, "resid_post.7", _tokens(2, 8, 0))
