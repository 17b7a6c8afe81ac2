"""``steerkit demo``: extract a steering vector from contrastive prompts on a small real model and
print unsteered and steered continuations side by side."""
from __future__ import annotations

import sys
import textwrap
import time
from typing import List, Optional, Sequence

import torch

from steerkit.integrations import steer
from steerkit.methods import last_token_activations, mean_difference

# Contrastive prompts for the concept "joy" (positive) against "gloom" (negative).
POSITIVE = [
    "I am so happy today, everything is wonderful and I feel",
    "What a joyful, delightful surprise! I am thrilled and",
    "The party was fantastic, we laughed and celebrated and",
    "I love my friends, they make me smile and feel",
    "This is the best day of my life, I feel grateful and",
    "Sunshine, laughter and good news: I am overjoyed and",
]
NEGATIVE = [
    "I am so sad today, everything is terrible and I feel",
    "What a miserable, awful shock! I am devastated and",
    "The funeral was grim, we wept and mourned and",
    "I miss my friends, loneliness makes me cry and feel",
    "This is the worst day of my life, I feel hopeless and",
    "Rain, silence and bad news: I am heartbroken and",
]
PROMPTS = [
    "My neighbour knocked on the door and",
    "When I looked at the weather this morning,",
    "The letter from the bank said",
]


def _generate(model, tok, prompts: Sequence[str], max_new_tokens: int) -> List[str]:
    batch = tok(list(prompts), return_tensors="pt", padding=True).to(model.device)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id)
    return [tok.decode(o[batch["input_ids"].shape[1]:], skip_special_tokens=True).strip() for o in out]


def side_by_side(prompts: Sequence[str], columns: Sequence[tuple], width: int = 34) -> str:
    """A text table: one row per prompt, one wrapped column per (title, texts)."""
    titles = ["prompt"] + [t for t, _ in columns]
    lines = [" | ".join(t.ljust(width) for t in titles), "-+-".join("-" * width for _ in titles)]
    for i, p in enumerate(prompts):
        cells = [textwrap.wrap(p, width)] + [textwrap.wrap(texts[i], width) or [""] for _, texts in columns]
        for k in range(max(len(c) for c in cells)):
            lines.append(" | ".join((c[k] if k < len(c) else "").ljust(width) for c in cells))
        lines.append("-+-".join("-" * width for _ in titles))
    return "\n".join(lines)


def run(model, tok, layer: Optional[int] = None, strength: Optional[float] = None,
        max_new_tokens: int = 40, prompts: Sequence[str] = PROMPTS) -> str:
    """Extract the joy - gloom vector at resid_post.{layer} and return the side-by-side table."""
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    n_layers = model.config.num_hidden_layers
    layer = n_layers // 3 if layer is None else layer
    strength = 0.2 if strength is None else strength
    site = f"resid_post.{layer}"
    enc = lambda texts: tok(texts, return_tensors="pt", padding=True).to(model.device)  # noqa: E731
    v = mean_difference(model, site, enc(POSITIVE), enc(NEGATIVE))
    # strength in units of the typical residual norm at that site
    norm = last_token_activations(model, site, enc(PROMPTS + POSITIVE)).norm(dim=-1).mean()
    unit = v / v.norm()
    columns = [("unsteered", _generate(model, tok, prompts, max_new_tokens))]
    for sign, name in ((1.0, "steered: + joy"), (-1.0, "steered: - joy")):
        with steer(model, {site: dict(vector=unit, strength=float(sign * strength * norm))}):
            columns.append((name, _generate(model, tok, prompts, max_new_tokens)))
    head = (f"# steering vector: mean(joy prompts) - mean(gloom prompts) at {site} of {n_layers} blocks; "
            f"strength {strength} x residual norm ({float(norm):.1f}); greedy decoding")
    return head + "\n" + side_by_side(prompts, columns)


def main(layer=None, strength=None, max_new_tokens: int = 40, device=None) -> int:
    from steerkit.integrations.pretrained import load_demo_model

    t0 = time.time()
    model, tok = load_demo_model(device=device)
    print(f"# model: Gemma 3 270M on {model.device} ({next(model.parameters()).dtype}), loaded in "
          f"{time.time() - t0:.0f} s", file=sys.stderr)
    print(run(model, tok, layer=layer, strength=strength, max_new_tokens=max_new_tokens))
    return 0
