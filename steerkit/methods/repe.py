"""Representation-engineering vectors: the difference of mean activations between contrastive
prompt sets, read at the last real token of each prompt."""
from __future__ import annotations

from typing import Mapping

import torch

from steerkit.integrations import capture


@torch.no_grad()
def last_token_activations(model, site: str, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Activation at ``site`` of the last non-padding token of every sequence: [batch, d] float32.
    Works with left and right padding (the attention mask says which tokens are real)."""
    acts = capture(model, [site], **inputs)[site].float()
    mask = inputs.get("attention_mask")
    if mask is None:
        return acts[:, -1]
    positions = torch.arange(mask.shape[1], device=mask.device)
    last = (positions * mask.to(positions.dtype)).argmax(dim=1)  # index of the last real token
    return acts[torch.arange(acts.shape[0], device=acts.device), last.to(acts.device)]


def mean_difference(model, site: str, positive: Mapping[str, torch.Tensor],
                    negative: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """mean(activations of positive prompts) - mean(activations of negative prompts), [d] float32."""
    return (last_token_activations(model, site, positive).mean(0)
            - last_token_activations(model, site, negative).mean(0))
