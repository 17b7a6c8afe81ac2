"""SAE files: SAELens, EleutherAI sparsify, Gemma Scope and dictionary_learning. Loading never
runs pickled code (safetensors, JSON, NumPy with ``allow_pickle=False``, ``torch.load`` with
``weights_only=True``).

How each format maps to ``steerkit.sae.SAE`` (``pre = (x - b_dec) @ W_enc + b_enc``, see
``steerkit/sae/module.py``):

| format | files | weights | conventions |
|---|---|---|---|
| SAELens | ``cfg.json`` + ``sae_weights.safetensors`` | ``W_enc [d,F]``, ``b_enc``, ``W_dec [F,d]``, ``b_dec``, ``threshold`` (jumprelu) | ``architecture`` standard / jumprelu / topk (``k``); ``apply_b_dec_to_input``; ``normalize_activations``; JumpReLU is ``relu(pre) * (pre > threshold)``; TopK takes the top k then ReLU |
| sparsify | ``cfg.json`` + ``sae.safetensors`` (one folder per hookpoint) | ``encoder.weight [F,d]`` (an nn.Linear), ``encoder.bias``, ``W_dec [F,d]``, ``b_dec`` | always TopK (``k``) with b_dec subtracted; ReLU before the top-k (same result) |
| Gemma Scope | ``params.npz`` | ``W_enc [d,F]``, ``b_enc``, ``W_dec [F,d]``, ``b_dec``, ``threshold`` | JumpReLU ``relu(pre) * (pre > threshold)``, b_dec NOT subtracted |
| dictionary_learning | ``ae.pt`` (+ ``config.json``) | see ``load_dictionary_learning`` | per class |

JumpReLU thresholds are clamped at 0 on load: the formats compute ``relu(pre) * (pre >
threshold)``, which equals steerkit's ``pre * (pre > threshold)`` exactly when threshold >= 0.
SAELens' ``expected_average_only_in`` normalisation does nothing at inference time (its scale
is folded into the weights or applied by the caller) and loads as ``"none"``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, Optional, Union

import numpy as np
import torch

from .module import SAE

PathLike = Union[str, Path]

SAELENS_CFG, SAELENS_WEIGHTS = "cfg.json", "sae_weights.safetensors"
SPARSIFY_CFG, SPARSIFY_WEIGHTS = "cfg.json", "sae.safetensors"
GEMMASCOPE_PARAMS = "params.npz"
DL_WEIGHTS, DL_CONFIG = "ae.pt", "config.json"


class SAEFormatError(ValueError):
    """A file is not a supported SAE format, or holds an unsupported variant."""


# -- site names -----------------------------------------------------------------------------------
_TL_HOOKS = {"hook_resid_pre": "resid_pre", "hook_resid_post": "resid_post", "hook_attn_out": "attn_out",
             "hook_mlp_out": "mlp_out", "attn.hook_z": "attn_heads"}


def site_from_hook_name(name: Optional[str]) -> Optional[str]:
    """steerkit site for a TransformerLens hook name (``blocks.6.hook_resid_post``) or a
    transformers module path as sparsify names hookpoints (``layers.6`` = block output,
    ``layers.6.mlp``, ``layers.6.self_attn``); None when there is no steerkit equivalent.
    (For Gemma 2/3, steerkit's attn_out/mlp_out are after the post-norms; a sparsify
    ``layers.N.mlp`` SAE of such a model reads the MLP before its post-norm: pass ``site``
    explicitly there, e.g. ``module:model.layers.N.mlp``.)"""
    if not name:
        return None
    m = re.fullmatch(r"blocks\.(\d+)\.(hook_resid_pre|hook_resid_post|hook_attn_out|hook_mlp_out|attn\.hook_z)", name)
    if m:
        return f"{_TL_HOOKS[m.group(2)]}.{m.group(1)}"
    m = re.fullmatch(r"(?:model\.|transformer\.|gpt_neox\.)?(?:layers|h)\.(\d+)(\.mlp|\.self_attn|\.attn|\.attention)?",
                     name)
    if m:
        kind = {None: "resid_post", ".mlp": "mlp_out"}.get(m.group(2), "attn_out")
        return f"{kind}.{m.group(1)}"
    return None


def hook_name_for_site(site: Optional[str]) -> Optional[str]:
    """TransformerLens hook name for a steerkit site (None for module sites)."""
    m = re.fullmatch(r"(resid_pre|resid_post|attn_out|mlp_out|attn_heads)\.(\d+)", site or "")
    if not m:
        return None
    kind, layer = m.groups()
    return f"blocks.{layer}.attn.hook_z" if kind == "attn_heads" else f"blocks.{layer}.hook_{kind}"


# -- helpers --------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict:
    with open(path, "r", encoding="utf-8") as f:
        out = json.load(f)
    if not isinstance(out, dict):
        raise SAEFormatError(f"{path}: expected a JSON object")
    return out


def _write_json(path: Path, obj: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)


def _need(weights: Dict[str, torch.Tensor], path, *keys):
    missing = [k for k in keys if k not in weights]
    if missing:
        raise SAEFormatError(f"{path}: missing tensors {missing}; found {sorted(weights)}")
    return [weights[k] for k in keys]


def _cpu(t: torch.Tensor, dtype=None) -> torch.Tensor:
    t = t.detach().to("cpu")
    return (t.to(dtype) if dtype is not None else t).contiguous()


def _finish(sae: SAE, device, dtype) -> SAE:
    if device is not None or dtype is not None:
        sae = sae.to(device=device, dtype=dtype)
    return sae.eval().requires_grad_(False)


def _clamped(threshold: torch.Tensor) -> torch.Tensor:
    return threshold.clamp_min(0)


def _copy(sae: SAE) -> SAE:
    """A float32 CPU copy to convert before saving (the caller's SAE is left alone)."""
    out = SAE.from_weights(_cpu(sae.W_enc, torch.float32), _cpu(sae.b_enc, torch.float32),
                           _cpu(sae.W_dec, torch.float32), _cpu(sae.b_dec, torch.float32),
                           None if sae.threshold is None else _cpu(sae.threshold, torch.float32),
                           activation=sae.activation, k=sae.k, apply_b_dec_to_input=sae.apply_b_dec_to_input,
                           normalize=sae.normalize, site=sae.site, metadata=sae.metadata)
    return out


def _no_normalization(sae: SAE, fmt: str) -> None:
    if sae.normalize != "none":
        raise SAEFormatError(f"{fmt} files cannot express input normalisation {sae.normalize!r}; save as SAELens")


# -- SAELens --------------------------------------------------------------------------------------
_SAELENS_ARCH = {"standard": "relu", "jumprelu": "jumprelu", "topk": "topk"}


def load_saelens(path: PathLike, site: Optional[str] = None, device=None, dtype=None) -> SAE:
    """A SAELens folder (``cfg.json`` + ``sae_weights.safetensors``), flat (before v6) or v6
    (``architecture``, ``k``, ``metadata``) configs."""
    from safetensors.torch import load_file

    path = Path(path)
    cfg = _read_json(path / SAELENS_CFG)
    w = load_file(str(path / SAELENS_WEIGHTS))
    arch = cfg.get("architecture")
    if arch is None:
        arch = "topk" if cfg.get("activation_fn_str") == "topk" else ("jumprelu" if "threshold" in w else "standard")
    if arch not in _SAELENS_ARCH:
        raise SAEFormatError(f"{path}: SAELens architecture {arch!r} is not supported (supported: {sorted(_SAELENS_ARCH)})")
    act_fn = cfg.get("activation_fn_str", "topk" if arch == "topk" else "relu")
    if act_fn not in ("relu", "topk") or (act_fn == "topk") != (arch == "topk"):
        raise SAEFormatError(f"{path}: activation_fn_str {act_fn!r} with architecture {arch!r} is not supported")
    W_enc, b_enc, W_dec, b_dec = _need(w, path, "W_enc", "b_enc", "W_dec", "b_dec")
    threshold, k = None, None
    if arch == "jumprelu":
        if "threshold" in w:
            threshold = w["threshold"]
        elif "log_threshold" in w:  # a training checkpoint
            threshold = w["log_threshold"].float().exp()
        else:
            raise SAEFormatError(f"{path}: a jumprelu SAE needs 'threshold'; found {sorted(w)}")
        threshold = _clamped(threshold)
    if arch == "topk":
        k = cfg.get("k", (cfg.get("activation_fn_kwargs") or {}).get("k"))
        if k is None:
            raise SAEFormatError(f"{path}: a topk SAE needs 'k' in cfg.json")
        k = int(k)
    if "scaling_factor" in w:  # "finetuning_scaling_factor": features are scaled before decoding
        W_dec = W_dec * w["scaling_factor"].to(W_dec.dtype)[:, None]
    normalize = cfg.get("normalize_activations", "none") or "none"
    meta_cfg = cfg.get("metadata") or cfg.get("meta") or {}
    meta = {key: meta_cfg.get(key, cfg.get(key)) for key in ("model_name", "hook_name", "hook_layer", "hook_head_index",
                                                              "prepend_bos", "context_size", "dataset_path")}
    meta = {key: v for key, v in meta.items() if v is not None}
    meta["format"] = "saelens"
    if normalize == "expected_average_only_in":
        meta["normalize_activations"], normalize = normalize, "none"
    if normalize not in ("none", "constant_norm_rescale", "layer_norm"):
        raise SAEFormatError(f"{path}: normalize_activations {normalize!r} is not supported")
    d_in, d_sae = cfg.get("d_in"), cfg.get("d_sae")
    if (d_in, d_sae) != (None, None) and tuple(W_enc.shape) != (d_in, d_sae):
        raise SAEFormatError(f"{path}: W_enc has shape {tuple(W_enc.shape)} but cfg.json says d_in={d_in}, d_sae={d_sae}")
    sae = SAE.from_weights(W_enc, b_enc, W_dec, b_dec, threshold, activation=_SAELENS_ARCH[arch], k=k,
                           apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)), normalize=normalize,
                           site=site or site_from_hook_name(meta.get("hook_name")), metadata=meta)
    return _finish(sae, device, dtype)


def save_saelens(sae: SAE, path: PathLike, extra: Optional[dict] = None) -> Path:
    """Write a SAELens folder: v6 keys (``architecture``, ``k``, ``metadata``) and the flat keys
    older readers use. ``extra`` entries are added to cfg.json."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    arch = {v: k for k, v in _SAELENS_ARCH.items()}[sae.activation]
    hook = sae.metadata.get("hook_name") or hook_name_for_site(sae.site)
    meta = {"model_name": sae.metadata.get("model_name"), "hook_name": hook,
            "hook_layer": sae.layer if sae.layer is not None else sae.metadata.get("hook_layer"),
            "hook_head_index": sae.metadata.get("hook_head_index"),
            "prepend_bos": sae.metadata.get("prepend_bos", True),
            "context_size": sae.metadata.get("context_size"), "dataset_path": sae.metadata.get("dataset_path")}
    cfg = {"architecture": arch, "d_in": sae.d, "d_sae": sae.F, "dtype": str(sae.W_enc.dtype).replace("torch.", ""),
           "device": "cpu", "apply_b_dec_to_input": sae.apply_b_dec_to_input,
           "normalize_activations": sae.normalize,
           "reshape_activations": "hook_z" if (hook or "").endswith("hook_z") else "none",
           "metadata": meta, **meta,
           "activation_fn_str": "topk" if sae.activation == "topk" else "relu",
           "activation_fn_kwargs": {"k": sae.k} if sae.activation == "topk" else {},
           "finetuning_scaling_factor": False, "steerkit_site": sae.site}
    if sae.activation == "topk":
        cfg["k"] = sae.k
    cfg.update(extra or {})
    tensors = {"W_enc": _cpu(sae.W_enc), "b_enc": _cpu(sae.b_enc), "W_dec": _cpu(sae.W_dec), "b_dec": _cpu(sae.b_dec)}
    if sae.threshold is not None:
        tensors["threshold"] = _cpu(sae.threshold)
    save_file(tensors, str(path / SAELENS_WEIGHTS))
    _write_json(path / SAELENS_CFG, cfg)
    return path


# -- EleutherAI sparsify --------------------------------------------------------------------------
def _sparsify_dir(path: Path, hookpoint: Optional[str]) -> Path:
    if hookpoint is not None:
        path = path / hookpoint
    if (path / SPARSIFY_CFG).exists():
        return path
    subs = sorted(p.name for p in path.iterdir() if p.is_dir() and (p / SPARSIFY_WEIGHTS).exists()) if path.is_dir() else []
    hint = f"; it holds hookpoints {subs}: pass hookpoint=" if subs else ""
    raise SAEFormatError(f"{path}: no {SPARSIFY_CFG}{hint}")


def load_sparsify(path: PathLike, hookpoint: Optional[str] = None, site: Optional[str] = None, device=None,
                  dtype=None) -> SAE:
    """An EleutherAI sparsify folder (``cfg.json`` + ``sae.safetensors``; ``path`` may be the
    parent folder with ``hookpoint`` naming the subfolder). The encoder is an nn.Linear
    (``encoder.weight [F, d]``); encode is ``topk(relu((x - b_dec) @ W_enc + b_enc))``."""
    from safetensors.torch import load_file

    path = _sparsify_dir(Path(path), hookpoint)
    cfg = _read_json(path / SPARSIFY_CFG)
    w = load_file(str(path / SPARSIFY_WEIGHTS))
    if cfg.get("transcode") or cfg.get("skip_connection") or "W_skip" in w:
        raise SAEFormatError(f"{path}: sparsify transcoders and skip connections are not supported")
    if cfg.get("activation", "topk") != "topk":
        raise SAEFormatError(f"{path}: sparsify activation {cfg.get('activation')!r} is not supported (only topk)")
    enc_w, enc_b, W_dec, b_dec = _need(w, path, "encoder.weight", "encoder.bias", "W_dec", "b_dec")
    if "d_in" in cfg and enc_w.shape[1] != cfg["d_in"]:
        raise SAEFormatError(f"{path}: encoder.weight has shape {tuple(enc_w.shape)} but d_in={cfg['d_in']}")
    if "k" not in cfg:
        raise SAEFormatError(f"{path}: cfg.json has no 'k'")
    hp = hookpoint or path.name
    sae = SAE.from_weights(enc_w.T, enc_b, W_dec, b_dec, activation="topk", k=int(cfg["k"]),
                           apply_b_dec_to_input=True, site=site or site_from_hook_name(hp),
                           metadata={"format": "sparsify", "hookpoint": hp})
    return _finish(sae, device, dtype)


def save_sparsify(sae: SAE, path: PathLike) -> Path:
    """Write a sparsify folder (name it after the hookpoint, e.g. ``layers.6``). TopK SAEs only."""
    from safetensors.torch import save_file

    if sae.activation != "topk":
        raise SAEFormatError(f"sparsify files hold TopK SAEs only; this SAE is {sae.activation!r}")
    _no_normalization(sae, "sparsify")
    sae = _copy(sae).unfold_b_dec_from_b_enc()  # sparsify always subtracts b_dec
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file({"encoder.weight": _cpu(sae.W_enc.T), "encoder.bias": _cpu(sae.b_enc), "W_dec": _cpu(sae.W_dec),
               "b_dec": _cpu(sae.b_dec)}, str(path / SPARSIFY_WEIGHTS))
    _write_json(path / SPARSIFY_CFG, {"activation": "topk", "expansion_factor": max(1, sae.F // sae.d),
                                      "normalize_decoder": True, "num_latents": sae.F, "k": sae.k,
                                      "multi_topk": False, "skip_connection": False, "transcode": False,
                                      "d_in": sae.d})
    return path


# -- Gemma Scope ----------------------------------------------------------------------------------
def _gemmascope_site(path: Path) -> Optional[str]:
    text = str(path)
    m = re.search(r"layer_(\d+)", text)
    if not m:
        return None
    for tag, kind in (("-res", "resid_post"), ("-mlp", "mlp_out"), ("-att", "attn_heads")):
        if tag in text:
            return f"{kind}.{m.group(1)}"
    return None


def load_gemmascope(path: PathLike, site: Optional[str] = None, device=None, dtype=None) -> SAE:
    """A Gemma Scope ``params.npz`` (or its folder): JumpReLU, b_dec not subtracted. The site is
    read from the path when it has the Hub layout (``gemma-scope-2b-pt-res/layer_12/...``: res =
    ``resid_post``, mlp = ``mlp_out``, att = ``attn_heads``)."""
    path = Path(path)
    file = path / GEMMASCOPE_PARAMS if path.is_dir() else path
    with np.load(file, allow_pickle=False) as z:
        w = {k: torch.from_numpy(np.ascontiguousarray(z[k])) for k in z.files}
    W_enc, b_enc, W_dec, b_dec, thr = _need(w, file, "W_enc", "b_enc", "W_dec", "b_dec", "threshold")
    sae = SAE.from_weights(W_enc, b_enc, W_dec, b_dec, _clamped(thr), activation="jumprelu",
                           apply_b_dec_to_input=False, site=site or _gemmascope_site(file.resolve()),
                           metadata={"format": "gemmascope"})
    return _finish(sae, device, dtype)


def save_gemmascope(sae: SAE, path: PathLike) -> Path:
    """Write ``params.npz`` (``path`` is the file or its folder). JumpReLU and ReLU SAEs (ReLU is
    JumpReLU with threshold 0); b_dec is folded into b_enc, as Gemma Scope does not subtract it."""
    if sae.activation == "topk":
        raise SAEFormatError("Gemma Scope files hold JumpReLU SAEs; a TopK SAE cannot be written as one")
    _no_normalization(sae, "Gemma Scope")
    sae = _copy(sae).fold_b_dec_into_b_enc()
    thr = sae.threshold if sae.threshold is not None else torch.zeros(sae.F)
    path = Path(path)
    file = path if path.suffix == ".npz" else path / GEMMASCOPE_PARAMS
    file.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"W_enc": sae.W_enc, "W_dec": sae.W_dec, "b_enc": sae.b_enc, "b_dec": sae.b_dec, "threshold": thr}
    np.savez(file, **{k: v.detach().numpy().astype(np.float32) for k, v in arrays.items()})
    return file


# -- dictionary_learning --------------------------------------------------------------------------
def _dl_site(trainer: dict) -> Optional[str]:
    name = str(trainer.get("submodule_name") or "")
    layer = trainer.get("layer")
    for tag, kind in (("resid_post", "resid_post"), ("resid_pre", "resid_pre"), ("mlp_out", "mlp_out"),
                      ("attn_out", "attn_out")):
        if tag in name:
            m = re.search(r"(\d+)", name)
            n = m.group(1) if m else layer
            return f"{kind}.{n}" if n is not None else None
    return None


def load_dictionary_learning(path: PathLike, site: Optional[str] = None, device=None, dtype=None) -> SAE:
    """A dictionary_learning ``ae.pt`` state dict (``torch.load(weights_only=True)``), with
    ``config.json`` beside it when present (``trainer.dict_class`` tells AutoEncoderTopK from
    BatchTopKSAE, whose state dicts look alike). Classes:

    - ``AutoEncoder``: ``encoder.weight [F,d]``, ``encoder.bias``, ``decoder.weight [d,F]``,
      ``bias [d]``; ``relu(encoder(x - bias))``, ``decoder(f) + bias``.
    - ``AutoEncoderNew``: ``encoder``/``decoder`` Linears with biases; ``relu(encoder(x))`` (no
      b_dec subtraction), ``decoder(f)``.
    - ``AutoEncoderTopK``: ``encoder``, ``decoder.weight``, ``b_dec``, buffers ``k`` and a
      scalar ``threshold`` (used only on request); top-k of ``relu(encoder(x - b_dec))``.
    - ``BatchTopKSAE`` (and Matryoshka): the same tensors; at inference ``relu(pre) * (relu(pre) >
      threshold)`` (a JumpReLU with one threshold for all features; ReLU while the threshold is
      still -1).
    - ``JumpReluAutoEncoder``: ``W_enc [d,F]``, ``b_enc``, ``W_dec [F,d]``, ``b_dec``,
      ``threshold [F]``, b_dec not subtracted; its features are multiplied by the decoder row
      norms in ``encode`` and divided by them in ``decode``, which is folded into the weights
      here (decoder rows of unit norm), so ``encode`` gives dictionary_learning's features.
    """
    path = Path(path)
    file = path / DL_WEIGHTS if path.is_dir() else path
    cfg_file = file.parent / DL_CONFIG
    trainer = _read_json(cfg_file).get("trainer", {}) if cfg_file.exists() else {}
    dict_class = trainer.get("dict_class")
    sd = torch.load(str(file), map_location="cpu", weights_only=True)
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise SAEFormatError(f"{file}: expected a state dict of tensors")
    sd = {k: v for k, v in sd.items()}
    meta = {"format": "dictionary_learning", "dict_class": dict_class,
            **{k: trainer[k] for k in ("lm_name", "layer", "submodule_name") if k in trainer}}
    site = site or _dl_site(trainer)
    if "r_mag" in sd or "gate_bias" in sd:
        raise SAEFormatError(f"{file}: GatedAutoEncoder is not supported")
    if "W_enc" in sd:  # JumpReluAutoEncoder
        W_enc, b_enc, W_dec, b_dec, thr = _need(sd, file, "W_enc", "b_enc", "W_dec", "b_dec", "threshold")
        n = W_dec.float().norm(dim=1).clamp_min(torch.finfo(torch.float32).tiny)
        sae = SAE.from_weights(W_enc.float() * n, b_enc.float() * n, W_dec.float() / n[:, None], b_dec.float(),
                               _clamped(thr.float() * n), activation="jumprelu", apply_b_dec_to_input=False,
                               site=site, metadata={**meta, "dict_class": dict_class or "JumpReluAutoEncoder"})
        return _finish(sae, device, dtype or W_enc.dtype)
    enc_w, enc_b, dec_w = _need(sd, file, "encoder.weight", "encoder.bias", "decoder.weight")
    common = dict(site=site)
    if "bias" in sd:  # AutoEncoder
        sae = SAE.from_weights(enc_w.T, enc_b, dec_w.T, sd["bias"], activation="relu", **common,
                               metadata={**meta, "dict_class": dict_class or "AutoEncoder"})
    elif "decoder.bias" in sd:  # AutoEncoderNew
        sae = SAE.from_weights(enc_w.T, enc_b, dec_w.T, sd["decoder.bias"], activation="relu",
                               apply_b_dec_to_input=False, **common,
                               metadata={**meta, "dict_class": dict_class or "AutoEncoderNew"})
    elif "b_dec" in sd and "k" in sd:
        if dict_class and "BatchTopK" in dict_class:  # inference uses the learned threshold
            t = max(float(sd.get("threshold", torch.tensor(-1.0))), 0.0)
            sae = SAE.from_weights(enc_w.T, enc_b, dec_w.T, sd["b_dec"], torch.full((enc_w.shape[0],), t),
                                   activation="jumprelu", **common, metadata={**meta, "k": int(sd["k"])})
        else:  # AutoEncoderTopK
            sae = SAE.from_weights(enc_w.T, enc_b, dec_w.T, sd["b_dec"], activation="topk", k=int(sd["k"]),
                                   **common, metadata={**meta, "dict_class": dict_class or "AutoEncoderTopK"})
    else:
        raise SAEFormatError(f"{file}: not a known dictionary_learning class (tensors {sorted(sd)})")
    return _finish(sae, device, dtype)


def save_dictionary_learning(sae: SAE, path: PathLike) -> Path:
    """Write ``ae.pt`` + ``config.json`` (``path`` is the folder): ReLU as ``AutoEncoder``, TopK as
    ``AutoEncoderTopK``, JumpReLU as ``JumpReluAutoEncoder`` (whose features are defined with
    unit-norm decoder rows: the decoder rows are normalised first, so reconstructions are
    unchanged but the features of a decoder with other row norms come back rescaled)."""
    _no_normalization(sae, "dictionary_learning")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    s = _copy(sae)
    if s.activation == "jumprelu":
        s.normalize_decoder_rows()
        s.fold_b_dec_into_b_enc()
        sd = {"W_enc": s.W_enc, "b_enc": s.b_enc, "W_dec": s.W_dec, "b_dec": s.b_dec, "threshold": s.threshold}
        dict_class = "JumpReluAutoEncoder"
    else:
        s.unfold_b_dec_from_b_enc()
        sd = {"encoder.weight": s.W_enc.T, "encoder.bias": s.b_enc, "decoder.weight": s.W_dec.T}
        if s.activation == "relu":
            sd["bias"], dict_class = s.b_dec, "AutoEncoder"
        else:
            sd.update({"b_dec": s.b_dec, "k": torch.tensor(s.k, dtype=torch.int32),
                       "threshold": torch.tensor(-1.0)})
            dict_class = "AutoEncoderTopK"
    torch.save({k: _cpu(v) for k, v in sd.items()}, str(path / DL_WEIGHTS))
    trainer = {"dict_class": dict_class, "activation_dim": s.d, "dict_size": s.F, "layer": sae.layer,
               "lm_name": sae.metadata.get("model_name") or sae.metadata.get("lm_name"),
               "submodule_name": f"{sae.site.split('.')[0]}_layer_{sae.layer}" if sae.layer is not None else None}
    if s.activation == "topk":
        trainer["k"] = s.k
    _write_json(path / DL_CONFIG, {"trainer": trainer})
    return path


# -- detection ------------------------------------------------------------------------------------
def detect_format(path: PathLike) -> str:
    """"saelens", "sparsify", "gemmascope" or "dictionary_learning" for a folder or file."""
    path = Path(path)
    if path.is_file():
        if path.suffix == ".npz":
            return "gemmascope"
        if path.suffix in (".pt", ".pth"):
            return "dictionary_learning"
        path = path.parent
    if not path.is_dir():
        raise FileNotFoundError(f"load_sae: {path} does not exist")
    if (path / SAELENS_WEIGHTS).exists():
        return "saelens"
    if (path / SPARSIFY_WEIGHTS).exists():
        return "sparsify"
    if (path / GEMMASCOPE_PARAMS).exists():
        return "gemmascope"
    if (path / DL_WEIGHTS).exists():
        return "dictionary_learning"
    subs = sorted(p.name for p in path.iterdir() if p.is_dir() and (p / SPARSIFY_WEIGHTS).exists())
    if subs:
        raise SAEFormatError(f"load_sae: {path} holds sparsify SAEs for several hookpoints {subs}; "
                             f"load one folder, e.g. load_sae('{path / subs[0]}')")
    raise SAEFormatError(f"load_sae: {path} has none of {SAELENS_WEIGHTS}, {SPARSIFY_WEIGHTS}, "
                         f"{GEMMASCOPE_PARAMS}, {DL_WEIGHTS}")


_LOADERS = {"saelens": load_saelens, "sparsify": load_sparsify, "gemmascope": load_gemmascope,
            "dictionary_learning": load_dictionary_learning}
_SAVERS = {"saelens": save_saelens, "sparsify": save_sparsify, "gemmascope": save_gemmascope,
           "dictionary_learning": save_dictionary_learning}


def load_sae(path: PathLike, format: Optional[str] = None, site: Optional[str] = None, device=None,
             dtype=None) -> SAE:
    """Load an SAE from any supported format (detected from the files unless ``format`` is given)."""
    fmt = format or detect_format(path)
    if fmt not in _LOADERS:
        raise ValueError(f"load_sae: format must be one of {sorted(_LOADERS)}, got {fmt!r}")
    return _LOADERS[fmt](path, site=site, device=device, dtype=dtype)


def save_sae(sae: SAE, path: PathLike, format: str = "saelens") -> Path:
    """Save in one of the formats (default SAELens, the only one that holds every SAE)."""
    if format not in _SAVERS:
        raise ValueError(f"save_sae: format must be one of {sorted(_SAVERS)}, got {format!r}")
    return _SAVERS[format](sae, path)
