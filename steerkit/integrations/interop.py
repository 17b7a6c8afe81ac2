"""Vectors from repeng and steering-vectors as steerkit configurations.

Each function returns a configuration ``{site: SteeringTable.set keyword arguments}`` for a given
transformers model, ready for ``steer(model, config)`` or ``Steering.set``/``add``. Neither library
is imported here: their objects are read by their attributes, so steerkit works without them.

Layer mapping (``l`` = decoder block index, counting from 0, as in ``resid_post.{l}``):

- repeng: ``ControlVector.directions[l]`` is added by ``ControlModel`` to the output of decoder
  block l (``model.model.layers[l]`` / ``model.transformer.h[l]``); its GGUF file stores it as
  ``direction.<l>``, which llama.cpp also adds to the output of block l.
  Both become ``resid_post.{l}`` with ``vector=direction, strength=coeff``.
- steering-vectors: ``SteeringVector.layer_activations[l]`` with ``layer_type="decoder_block"``
  is added to the output of block l (negative l counts from the last block); it becomes
  ``resid_post.{l}`` with ``vector=activation, strength=multiplier``.

Where the results can still differ:

- Precision: steerkit adds ``strength * vector`` in float32 and rounds the row once. repeng
  rounds ``coeff * direction`` to the model's dtype and adds in that dtype; steering-vectors
  forms ``multiplier * vector`` in the vector's dtype and adds in float32 when that is float32.
  In float32 all agree; in half precision repeng (and steering-vectors with a half-precision
  vector) differ from steerkit by about one rounding.
- Padding: steerkit steers every position unless the prompt's ``attention_mask`` is given to
  ``steer``/``Steering.assign``, which leaves padding alone. steering-vectors steers every
  position, padding included. repeng skips, in each row, the positions before the last one whose
  position id is 0, when the block receives ``position_ids`` (as transformers' ``generate`` passes
  them for left-padded batches); give ``attention_mask`` to steerkit to do the same.
"""
from __future__ import annotations

import os
from typing import Callable, Dict, Iterable, Mapping, Optional, Union

import numpy as np
import torch

from .hf import _family, hidden_size, num_layers

Config = Dict[str, Dict[str, object]]

# the block children steering-vectors finds for its "self_attn" and "mlp" layer types
_SV_CHILDREN = {"self_attn": ("self_attn", "attn", "attention"), "mlp": ("mlp",)}
# steering-vectors' built-in operators, by the name of the function each factory returns
_SV_OPERATORS = {
    "_addition_operator": "add",
    "_ablation_operator": "ablate",
    "_ablation_then_addition_operator": "ablate_then_add",
}


def _block(key, n_layers: int, what: str) -> int:
    """A layer number as a block index 0..n_layers-1 (negative numbers count from the end)."""
    if isinstance(key, bool) or not isinstance(key, (int, np.integer)):
        raise ValueError(f"{what}: layer keys must be ints, got {key!r}")
    layer = int(key) + n_layers if key < 0 else int(key)
    if not 0 <= layer < n_layers:
        raise ValueError(f"{what}: layer {key} is outside the model's decoder blocks 0..{n_layers - 1}")
    return layer


def _by_block(vectors: Mapping, n_layers: int, what: str) -> Dict[int, object]:
    out: Dict[int, object] = {}
    for key, vec in vectors.items():
        layer = _block(key, n_layers, what)
        if layer in out:
            raise ValueError(f"{what}: two entries name decoder block {layer} (a negative and a "
                             f"non-negative layer number?)")
        out[layer] = vec
    return out


def _vector(value, d: int, what: str) -> torch.Tensor:
    """A [d] tensor from a numpy array (copied: GGUF arrays are read-only) or a torch tensor."""
    if isinstance(value, torch.Tensor):
        vec = value.detach()
    else:
        vec = torch.from_numpy(np.array(value, dtype=np.float32))
    vec = vec.reshape(-1)
    if vec.numel() != d:
        raise ValueError(f"{what}: the vector has {vec.numel()} entries but the model's hidden size is {d}")
    return vec


def from_repeng(control_vector, model, coeff: float = 1.0, *, layer_ids: Optional[Iterable[int]] = None,
                normalize: bool = False, operator: Optional[Callable] = None) -> Config:
    """The steerkit configuration that steers ``model`` as repeng's
    ``ControlModel(model, layer_ids).set_control(control_vector, coeff)`` does.

    control_vector: a ``repeng.ControlVector`` or the path of a GGUF control vector (as written
        by ``ControlVector.export_gguf``, steerkit's ``write_control_vector`` or llama.cpp's tools;
        read with ``steerkit.steering.io.read_control_vector``).
    coeff: repeng's coefficient, steerkit's strength (negative inverts the vector).
    layer_ids: the layers repeng's ControlModel was built with (negative count from the end);
        None: every layer the vector has. Each must be in the vector, as repeng requires.

    Layer mapping: ``directions[l]`` (GGUF ``direction.<l>``) is added to the output of decoder
    block l, counting from 0: site ``resid_post.{l}`` with ``vector=directions[l],
    strength=coeff``. Negative keys count from the last block.

    repeng's ``normalize=True`` (rescaling each row to its unsteered norm) and custom
    ``operator`` have no steerkit equivalent and are refused.
    """
    if normalize:
        raise ValueError("from_repeng: repeng's normalize=True rescales each steered row back to its "
                         "unsteered norm; steerkit has no such stage")
    if operator is not None:
        raise ValueError("from_repeng: a custom repeng operator cannot be mapped; steerkit adds "
                         "coeff * direction (repeng's default operator)")
    if isinstance(control_vector, (str, os.PathLike)):
        from steerkit.steering.io import read_control_vector

        read, _hint = read_control_vector(control_vector)
        directions = {int(site.split(".")[1]): vec for site, vec in read.items()}
        what = f"control vector {os.fspath(control_vector)!r}"
    elif isinstance(getattr(control_vector, "directions", None), Mapping):
        directions, what = control_vector.directions, "repeng ControlVector"
    else:
        raise TypeError(f"from_repeng: expected a repeng ControlVector or a GGUF path, "
                        f"got {type(control_vector).__name__}")
    n, d = num_layers(model), hidden_size(model)
    by_block = _by_block(directions, n, what)
    if layer_ids is not None:
        wanted = list(dict.fromkeys(_block(i, n, "layer_ids") for i in layer_ids))
        missing = [layer for layer in wanted if layer not in by_block]
        if missing:
            raise ValueError(f"from_repeng: {what} has no direction for layers {missing} "
                             f"(it has {sorted(by_block)})")
        by_block = {layer: by_block[layer] for layer in wanted}
    return {f"resid_post.{layer}": dict(vector=_vector(by_block[layer], d, f"{what}, layer {layer}"),
                                         strength=float(coeff))
            for layer in sorted(by_block)}


def _sv_child(model, layers_path: str, layer_type: str) -> str:
    """The name of the attention or MLP module inside a decoder block."""
    block = model.get_submodule(f"{layers_path}.0")
    for name in _SV_CHILDREN[layer_type]:
        if isinstance(getattr(block, name, None), torch.nn.Module):
            return name
    raise ValueError(f"from_steering_vectors: no {layer_type} module found in the decoder blocks "
                     f"(looked for {list(_SV_CHILDREN[layer_type])})")


def _sv_operator(operator) -> str:
    if operator is None:
        return "add"
    name = getattr(operator, "__qualname__", "").rsplit(".", 1)[-1]
    if getattr(operator, "__module__", "") == "steering_vectors.steering_operators" and name in _SV_OPERATORS:
        return _SV_OPERATORS[name]
    raise ValueError(f"from_steering_vectors: operator {operator!r} cannot be mapped; steerkit maps "
                     f"steering_vectors' addition_operator(), ablation_operator() and "
                     f"ablation_then_addition_operator() (call the factory), or None")


def from_steering_vectors(steering_vector, model, multiplier: float = 1.0, *,
                          operator: Optional[Callable] = None, layer_config: Optional[Mapping] = None,
                          min_token_index: Optional[int] = 0,
                          token_indices: Union[None, list, slice, torch.Tensor] = None) -> Config:
    """The steerkit configuration that steers ``model`` as steering-vectors'
    ``steering_vector.apply(model, multiplier=multiplier, operator=operator)`` does.

    Layer mapping (l: key of ``layer_activations``; negative l counts from the last block):
      layer_type "decoder_block": output of decoder block l, site ``resid_post.{l}``;
      layer_type "self_attn" / "mlp": output of block l's attention / MLP module, site
      ``module:<blocks>.{l}.<child>``, the child being ``self_attn`` (``attn`` in GPT-2,
      ``attention`` in GPT-NeoX) or ``mlp``, e.g. ``module:model.layers.3.mlp``. That is the
      module's own output: in Gemma before its post-attention / post-MLP norm, unlike steerkit's
      ``attn_out``/``mlp_out``.
    Other layer types (the layer norms) are refused.

    operator: None or ``addition_operator()``: ``vector=v, strength=multiplier``;
      ``ablation_operator()``: ``directions=v, values=0`` (the component along v is removed; the
      multiplier is ignored, as steering-vectors ignores it);
      ``ablation_then_addition_operator()``: both. Other operators are refused.

    steering-vectors counts ``min_token_index`` / ``token_indices`` within each forward call;
    steerkit's ``positions=`` (``steer``, ``Steering.assign``) counts absolute positions, so those
    options are refused here: choose positions on the steerkit side. A custom ``layer_config`` is
    refused too (steerkit finds blocks from the model family; name other modules ``module:<path>``).
    """
    if layer_config is not None:
        raise ValueError("from_steering_vectors: a custom layer_config cannot be mapped; steerkit "
                         "finds decoder blocks from the model family (use 'module:<path>' sites for "
                         "other modules)")
    if (min_token_index or 0) != 0 or token_indices is not None:
        raise ValueError("from_steering_vectors: min_token_index / token_indices select positions "
                         "within each forward call; choose steered positions with steerkit's "
                         "positions= (steer or Steering.assign), which counts absolute positions")
    kind = _sv_operator(operator)
    layer_type = getattr(steering_vector, "layer_type", "decoder_block")
    activations = getattr(steering_vector, "layer_activations", None)
    if not isinstance(activations, Mapping):
        raise TypeError(f"from_steering_vectors: expected a steering_vectors.SteeringVector, "
                        f"got {type(steering_vector).__name__}")
    layers_path = _family(model)[0]
    if layer_type == "decoder_block":
        site_of = "resid_post.{}".format
    elif layer_type in _SV_CHILDREN:
        site_of = f"module:{layers_path}.{{}}.{_sv_child(model, layers_path, layer_type)}".format
    else:
        raise ValueError(f"from_steering_vectors: layer_type {layer_type!r} cannot be mapped; "
                         f"steerkit maps 'decoder_block', 'self_attn' and 'mlp'")
    n, d = num_layers(model), hidden_size(model)
    config: Config = {}
    for layer, act in sorted(_by_block(activations, n, "SteeringVector").items()):
        vec = _vector(act, d, f"SteeringVector, layer {layer}")
        spec: Dict[str, object] = {}
        if kind in ("ablate", "ablate_then_add"):
            spec.update(directions=vec, values=0.0)
        if kind in ("add", "ablate_then_add"):
            spec.update(vector=vec, strength=float(multiplier))
        config[site_of(layer)] = spec
    return config


__all__ = ["from_repeng", "from_steering_vectors"]
