"""Python half of benchmarks/llamacpp_check.sh (see there).

Builds the demo's joy - gloom steering vector on Gemma 3 270M (steerkit's dequantised copy of the
Q4_K_M GGUF that llama.cpp runs), writes it as a llama.cpp control vector with
``steerkit.steering.io.write_control_vector``, and gives steerkit's side of the comparisons.

    python benchmarks/llamacpp_check.py write WORK PROMPT N_TOKENS
        WORK/joy.gguf              the control vector: direction.<LAYER> = unit(joy - gloom)
        WORK/strength.txt          the strength S for llama.cpp: --control-vector-scaled joy.gguf:S
        WORK/steerkit-none.txt     steerkit's greedy continuation of PROMPT without steering
        WORK/steerkit-steer.txt    ... steered at resid_post.<LAYER> with vector=unit, strength=S
        WORK/steerkit-steer-L.txt  ... the same vector at the neighbouring blocks L = LAYER -/+ 1

    python benchmarks/llamacpp_check.py logits WORK PROMPT
        Reads llama.cpp's next-token logits after PROMPT (llama-debug --save-logits) without the
        vector (WORK/logits-none/) and with it at strength S (WORK/logits-steer/), and compares
        llama.cpp's logit change with steerkit's when steerkit adds the vector (read back from
        joy.gguf) at resid_post.L, L = LAYER - 3 .. LAYER + 3. Exits 1 unless L = LAYER matches
        best (the layer mapping direction.N = resid_post.N).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from steerkit.demo import NEGATIVE, POSITIVE, PROMPTS
from steerkit.integrations import steer
from steerkit.integrations.pretrained import load_demo_model
from steerkit.methods import last_token_activations, mean_difference
from steerkit.steering.io import read_control_vector, write_control_vector

LAYER = 6          # the demo's site: resid_post.6 (block 6 of 18)
STRENGTH = 0.2     # the demo's strength, in units of the mean residual norm at that site


def continuation(model, tok, prompt: str, n_tokens: int) -> str:
    """Greedy continuation of ``prompt`` (the text after the prompt, special tokens dropped)."""
    ids = tok(prompt, return_tensors="pt")  # <bos> prompt, as llama.cpp tokenises it
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=n_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


def write(work: Path, prompt: str, n_tokens: int) -> int:
    model, tok = load_demo_model(device="cpu", dtype=torch.float32)
    tok.padding_side = "left"
    site = f"resid_post.{LAYER}"
    enc = lambda texts: tok(texts, return_tensors="pt", padding=True)  # noqa: E731
    v = mean_difference(model, site, enc(POSITIVE), enc(NEGATIVE))
    unit = v / v.norm()
    norm = last_token_activations(model, site, enc(PROMPTS + POSITIVE)).norm(dim=-1).mean()
    strength = float(STRENGTH * norm)

    path = work / "joy.gguf"
    write_control_vector(path, {site: unit}, model_hint="gemma3")
    back, hint = read_control_vector(path)
    assert list(back) == [site] and torch.equal(back[site], unit.float()), "round trip through GGUF failed"
    (work / "strength.txt").write_text(f"{strength:.6f}\n")
    print(f"vector: unit(mean(joy) - mean(gloom)) at {site} (|joy - gloom| = {float(v.norm()):.2f}); "
          f"strength {STRENGTH} x mean residual norm {float(norm):.2f} = {strength:.4f}")
    print(f"wrote joy.gguf ({path.stat().st_size} bytes): tensor direction.{LAYER}, {unit.numel()} float32, "
          f"model_hint {hint!r}; read back unchanged with read_control_vector")

    (work / "steerkit-none.txt").write_text(continuation(model, tok, prompt, n_tokens))
    for layer in (LAYER - 1, LAYER, LAYER + 1):
        with steer(model, {f"resid_post.{layer}": dict(vector=unit, strength=strength)}):
            text = continuation(model, tok, prompt, n_tokens)
        name = "steerkit-steer.txt" if layer == LAYER else f"steerkit-steer-{layer}.txt"
        (work / name).write_text(text)
    return 0


def llama_logits(folder: Path) -> np.ndarray:
    """The last-token logits llama-debug --save-logits wrote into ``folder``."""
    (path,) = [p for p in folder.glob("llamacpp-*.bin") if not p.name.endswith("-tokens.bin")]
    return np.fromfile(path, dtype=np.float32)


def logits(work: Path, prompt: str) -> int:
    model, tok = load_demo_model(device="cpu", dtype=torch.float32)
    vectors, _ = read_control_vector(work / "joy.gguf")
    unit = vectors[f"resid_post.{LAYER}"]
    strength = float((work / "strength.txt").read_text())
    ids = tok(prompt, return_tensors="pt")
    llama_ids = next((work / "logits-none").glob("*-prompt.txt")).read_text().split("token ids: ")[1]
    print(f"prompt tokens: steerkit {ids['input_ids'][0].tolist()}, llama.cpp [{llama_ids.strip()}]")

    def last_logits(site=None) -> np.ndarray:
        with torch.no_grad():
            if site is None:
                return model(**ids).logits[0, -1].numpy()
            with steer(model, {site: dict(vector=unit, strength=strength)}):
                return model(**ids).logits[0, -1].numpy()

    base = last_logits()
    l_none, l_steer = llama_logits(work / "logits-none"), llama_logits(work / "logits-steer")
    assert l_none.shape == base.shape, (l_none.shape, base.shape)
    rms = lambda x: float(np.sqrt(np.mean(x ** 2)))  # noqa: E731
    d_llama = l_steer - l_none
    print(f"unsteered next-token logits, llama.cpp (Q4_K_M) vs steerkit (dequantised): correlation "
          f"{np.corrcoef(l_none, base)[0, 1]:.4f}, max |difference| {np.abs(l_none - base).max():.3f}, "
          f"argmax {l_none.argmax()} / {base.argmax()}")
    print(f"llama.cpp's logit change from direction.{LAYER} at strength {strength:.2f}: rms {rms(d_llama):.3f}, "
          f"argmax {l_none.argmax()} -> {l_steer.argmax()} ({tok.decode([int(l_steer.argmax())])!r})")
    print(f"  {'steerkit steers at':<18}  {'corr(change)':>12}  {'rms(llama.cpp change - steerkit change)':>39}  "
          f"{'steered argmax':>14}")
    corr = {}
    for layer in range(LAYER - 3, LAYER + 4):
        steered = last_logits(f"resid_post.{layer}")
        d = steered - base
        corr[layer] = np.corrcoef(d_llama, d)[0, 1]
        print(f"  {'resid_post.' + str(layer):<18}  {corr[layer]:12.4f}  {rms(d_llama - d):39.3f}  {steered.argmax():14d}")
    best = max(corr, key=corr.get)
    if best != LAYER:
        print(f"FAIL: llama.cpp's direction.{LAYER} acts like steerkit's resid_post.{best}, not resid_post.{LAYER}")
        return 1
    print(f"PASS: llama.cpp's direction.{LAYER} acts like steerkit's resid_post.{LAYER} (best match of the 7 blocks)")
    return 0


if __name__ == "__main__":
    cmd, work, prompt = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    sys.exit(write(work, prompt, int(sys.argv[4])) if cmd == "write" else logits(work, prompt))
