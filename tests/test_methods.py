"""Representation-engineering vectors and the demo's logic, on tiny random models."""
import pytest
import torch

pytest.importorskip("transformers")

from steerkit import demo  # noqa: E402
from steerkit.methods import last_token_activations, mean_difference  # noqa: E402
from test_hf import _tiny  # noqa: E402


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for text in demo.POSITIVE + demo.NEGATIVE + demo.PROMPTS for w in text.lower().split()})
    vocab = {w: i for i, w in enumerate(["<pad>", "<bos>", "<eos>", "<unk>"] + words[:60])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


@pytest.mark.parametrize("side", ["left", "right"])
def test_last_token_activations_respect_padding(side):
    model = _tiny("llama")
    ids = torch.randint(3, 64, (3, 6))
    lengths = [6, 4, 2]
    mask = torch.zeros(3, 6, dtype=torch.long)
    for i, n in enumerate(lengths):
        if side == "left":
            mask[i, 6 - n:] = 1
        else:
            mask[i, :n] = 1
    got = last_token_activations(model, "resid_post.1", {"input_ids": ids, "attention_mask": mask})
    with torch.no_grad():
        hs = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[2]
    for i, n in enumerate(lengths):
        last = 5 if side == "left" else n - 1
        torch.testing.assert_close(got[i], hs[i, last].float())


def test_mean_difference():
    model = _tiny("gemma3_text")
    pos = {"input_ids": torch.randint(3, 64, (4, 5))}
    neg = {"input_ids": torch.randint(3, 64, (3, 5))}
    v = mean_difference(model, "resid_post.0", pos, neg)
    with torch.no_grad():
        hp = model(**pos, output_hidden_states=True).hidden_states[1][:, -1].mean(0)
        hn = model(**neg, output_hidden_states=True).hidden_states[1][:, -1].mean(0)
    torch.testing.assert_close(v, hp - hn)


def test_demo_run_prints_unsteered_and_steered_side_by_side():
    model, tok = _tiny("gemma3_text"), _tokenizer()
    before = [p.clone() for p in model.parameters()]
    table = demo.run(model, tok, layer=1, strength=8.0, max_new_tokens=5)
    lines = table.splitlines()
    assert "resid_post.1" in lines[0]
    assert all(t in lines[1] for t in ("prompt", "unsteered", "+ joy", "- joy"))
    assert sum(line.startswith("-") for line in lines) == 1 + len(demo.PROMPTS)
    # hooks are gone and the weights untouched afterwards
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
