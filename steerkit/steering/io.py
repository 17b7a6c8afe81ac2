"""Files for steering vectors and configurations. Loading never executes code (no pickle).

- safetensors + JSON metadata: ``save_vectors``/``load_vectors`` ({name: [d] tensor}) and
  ``save_config``/``load_config`` ({site: SteeringTable.set keyword arguments}).
- llama.cpp / repeng control vectors (GGUF, ``general.architecture = controlvector``):
  ``write_control_vector``/``read_control_vector``. The file holds one ``direction.<n>`` tensor
  ([d] float32) per layer; llama.cpp adds ``direction.<n>`` (times the strength given on its
  command line) to the output of decoder block n, counting from 0, and never to block 0. In
  steerkit's site names that is ``resid_post.<n>`` with ``vector=direction, strength=1``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple, Union

import torch

PathLike = Union[str, Path]
_META_KEY = "steerkit"
_TENSOR_FIELDS = ("vector", "directions", "values")  # tensors of a site spec ('dynamic' w too)


def save_vectors(path: PathLike, vectors: Mapping[str, torch.Tensor], metadata: Optional[dict] = None) -> None:
    """{name: tensor} as safetensors, with ``metadata`` (JSON-serialisable) in the header."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in vectors.items()}
    save_file(tensors, str(path), metadata={_META_KEY: json.dumps(metadata or {})})


def load_vectors(path: PathLike) -> Tuple[Dict[str, torch.Tensor], dict]:
    """({name: tensor}, metadata) from a file written by ``save_vectors``."""
    from safetensors import safe_open

    out = {}
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get(_META_KEY, "{}"))
        for k in f.keys():
            out[k] = f.get_tensor(k)
    return out, meta


def save_config(path: PathLike, config: Mapping[str, Mapping[str, object]], metadata: Optional[dict] = None) -> None:
    """A steering configuration {site: spec} (spec: SteeringTable.set keyword arguments)."""
    tensors, specs = {}, {}
    for site, spec in config.items():
        plain = {}
        for key, value in spec.items():
            if key == "dynamic":
                w, b = value
                tensors[f"{site}/dynamic.w"] = torch.as_tensor(w).float()
                plain["dynamic.b"] = float(b)
            elif isinstance(value, torch.Tensor):
                tensors[f"{site}/{key}"] = value.float()
            else:
                plain[key] = value
        specs[site] = plain
    save_vectors(path, tensors, {"config": specs, "user": metadata or {}})


def load_config(path: PathLike) -> Dict[str, Dict[str, object]]:
    """The {site: spec} saved by ``save_config``."""
    tensors, meta = load_vectors(path)
    if "config" not in meta:
        raise ValueError(f"{path} holds no steerkit configuration (was it written by save_config?)")
    config = {}
    for site, plain in meta["config"].items():
        spec = {k: v for k, v in plain.items() if k != "dynamic.b"}
        for key in _TENSOR_FIELDS:
            if f"{site}/{key}" in tensors:
                spec[key] = tensors[f"{site}/{key}"]
        if f"{site}/dynamic.w" in tensors:
            spec["dynamic"] = (tensors[f"{site}/dynamic.w"], plain["dynamic.b"])
        config[site] = spec
    return config


def _gguf():
    try:
        import gguf
    except ImportError as e:
        raise RuntimeError("GGUF control vectors need the gguf package: pip install gguf") from e
    return gguf


def _layer_of(key: Union[int, str]) -> int:
    if isinstance(key, int):
        return key
    kind, _, n = key.partition(".")
    if kind != "resid_post" or not n.isdigit():
        raise ValueError(f"a control vector steers 'resid_post.<n>' sites (or layer numbers), got {key!r}")
    return int(n)


def write_control_vector(path: PathLike, vectors: Mapping[Union[int, str], torch.Tensor],
                         model_hint: str = "llama") -> None:
    """Write {layer or 'resid_post.<n>': [d] vector} as a llama.cpp control vector (GGUF).
    Layer 0 cannot be steered by llama.cpp and is refused."""
    gguf = _gguf()
    layers = {_layer_of(k): v for k, v in vectors.items()}
    if not layers:
        raise ValueError("no vectors to write")
    if 0 in layers:
        raise ValueError("llama.cpp never applies a control vector to block 0 (direction.0 is invalid)")
    dims = {int(v.numel()) for v in layers.values()}
    if len(dims) != 1:
        raise ValueError(f"all vectors must have the same width, got {sorted(dims)}")
    writer = gguf.GGUFWriter(str(path), "controlvector")
    writer.add_string("controlvector.model_hint", model_hint)
    writer.add_uint32("controlvector.layer_count", len(layers))
    for layer in sorted(layers):
        arr = layers[layer].detach().to("cpu", torch.float32).reshape(-1).numpy()
        writer.add_tensor(f"direction.{layer}", arr)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def read_control_vector(path: PathLike) -> Tuple[Dict[str, torch.Tensor], str]:
    """({'resid_post.<n>': [d] float32 vector}, model_hint) from a llama.cpp / repeng GGUF file."""
    gguf = _gguf()
    reader = gguf.GGUFReader(str(path))

    def string_field(name):
        f = reader.fields.get(name)
        return None if f is None else bytes(f.parts[f.data[0]]).decode("utf-8")

    arch = string_field("general.architecture")
    if arch != "controlvector":
        raise ValueError(f"{path}: general.architecture is {arch!r}, not 'controlvector'")
    out = {}
    for t in reader.tensors:
        kind, _, n = t.name.partition(".")
        if kind != "direction" or not n.isdigit() or int(n) == 0:
            raise ValueError(f"{path}: unexpected tensor {t.name!r} (expected direction.<n>, n >= 1)")
        out[f"resid_post.{int(n)}"] = torch.tensor(t.data, dtype=torch.float32).reshape(-1)
    return out, string_field("controlvector.model_hint") or ""
