"""SAE files: each format is written here in its own layout and conventions, loaded, and compared
with the format's own encode/decode (written out below); round trips; safe loading."""
import json
import math
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from steerkit.sae import (SAE, SAEFormatError, detect_format, load_dictionary_learning, load_gemmascope, load_sae,
                          load_saelens, load_sparsify, save_dictionary_learning, save_gemmascope, save_sae,
                          save_saelens, save_sparsify)

D, F = 24, 96
X = torch.randn(2, 5, D, generator=torch.Generator().manual_seed(3)) * 2


def _w(seed, d=D, n=F):
    g = torch.Generator().manual_seed(seed)
    return {"W_enc": torch.randn(d, n, generator=g) / math.sqrt(d), "b_enc": torch.randn(n, generator=g) * 0.2,
            "W_dec": torch.randn(n, d, generator=g) / math.sqrt(n), "b_dec": torch.randn(d, generator=g) * 0.2,
            # some thresholds negative: the formats' relu(pre) * (pre > t) must still match
            "threshold": torch.rand(n, generator=g) * 0.4 - 0.1}


def _close(a, b, tol=1e-5):
    torch.testing.assert_close(a.double(), b.double(), rtol=tol, atol=tol)


def _topk_then_relu(pre, k):
    vals, idx = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, idx, vals.relu())


# -- SAELens ----------------------------------------------------------------------------------------
def _saelens_ref(w, cfg, x):
    """SAELens: process_sae_in (normalise, subtract b_dec), activation, decode, undo normalisation."""
    x = x.double()
    w = {k: v.double() for k, v in w.items()}
    norm = cfg.get("normalize_activations", "none")
    if norm == "constant_norm_rescale":
        c = math.sqrt(x.shape[-1]) / x.norm(dim=-1, keepdim=True)
        x, out = x * c, (lambda y: y / c)
    elif norm == "layer_norm":
        mu = x.mean(-1, keepdim=True)
        std = (x - mu).std(-1, keepdim=True)
        x, out = (x - mu) / (std + 1e-5), (lambda y: y * std + mu)
    else:
        out = (lambda y: y)
    sae_in = x - w["b_dec"] * cfg.get("apply_b_dec_to_input", True)
    pre = sae_in @ w["W_enc"] + w["b_enc"]
    arch = cfg.get("architecture") or ("topk" if cfg.get("activation_fn_str") == "topk" else "standard")
    if arch == "jumprelu":
        f = pre.relu() * (pre > w["threshold"])
    elif arch == "topk":
        f = _topk_then_relu(pre, cfg.get("k") or cfg["activation_fn_kwargs"]["k"])
    else:
        f = pre.relu()
    return f, out(f @ w["W_dec"] + w["b_dec"])


def _write_saelens(path, w, cfg):
    path.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in w.items()}, str(path / "sae_weights.safetensors"))
    (path / "cfg.json").write_text(json.dumps(cfg))


SAELENS_CASES = [
    # v6 config
    ({"architecture": "standard", "d_in": D, "d_sae": F, "apply_b_dec_to_input": True, "normalize_activations": "none",
      "metadata": {"hook_name": "blocks.3.hook_resid_post", "model_name": "gpt2"}}, ["threshold"], "resid_post.3"),
    ({"architecture": "jumprelu", "d_in": D, "d_sae": F, "apply_b_dec_to_input": False,
      "metadata": {"hook_name": "blocks.1.hook_mlp_out"}}, [], "mlp_out.1"),
    ({"architecture": "topk", "k": 9, "d_in": D, "d_sae": F, "apply_b_dec_to_input": True,
      "metadata": {"hook_name": "blocks.2.attn.hook_z"}}, ["threshold"], "attn_heads.2"),
    # flat config before v6
    ({"d_in": D, "d_sae": F, "hook_name": "blocks.0.hook_resid_pre", "activation_fn_str": "topk",
      "activation_fn_kwargs": {"k": 4}, "apply_b_dec_to_input": True}, ["threshold"], "resid_pre.0"),
    ({"architecture": "standard", "d_in": D, "d_sae": F, "normalize_activations": "constant_norm_rescale",
      "hook_name": "blocks.5.hook_attn_out", "activation_fn_str": "relu"}, ["threshold"], "attn_out.5"),
    ({"architecture": "standard", "d_in": D, "d_sae": F, "normalize_activations": "layer_norm",
      "apply_b_dec_to_input": True}, ["threshold"], None),
]


@pytest.mark.parametrize("cfg,drop,site", SAELENS_CASES)
def test_saelens_matches_its_definition_and_round_trips(tmp_path, cfg, drop, site):
    w = {k: v for k, v in _w(1).items() if k not in drop}
    _write_saelens(tmp_path / "sae", w, cfg)
    assert detect_format(tmp_path / "sae") == "saelens"
    sae = load_sae(tmp_path / "sae")
    assert sae.site == site
    f_want, y_want = _saelens_ref(w, cfg, X)
    f = sae.encode(X)
    _close(f, f_want)
    _close(sae.decode(f, X), y_want)
    # round trip through steerkit's writer: same tensors, same outputs
    save_saelens(sae, tmp_path / "again")
    back = load_saelens(tmp_path / "again")
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.equal(getattr(back, name), getattr(sae, name))
    assert (back.activation, back.k, back.apply_b_dec_to_input, back.normalize, back.site) == \
        (sae.activation, sae.k, sae.apply_b_dec_to_input, sae.normalize, sae.site)
    # and what steerkit writes is read back by the SAELens definition
    cfg2 = json.loads((tmp_path / "again" / "cfg.json").read_text())
    f2, y2 = _saelens_ref(load_file(str(tmp_path / "again" / "sae_weights.safetensors")), cfg2, X)
    _close(f2, f_want)
    _close(y2, y_want)


def test_saelens_scaling_factor_and_log_threshold(tmp_path):
    w = _w(2)
    w["scaling_factor"] = torch.rand(F) + 0.5
    w["log_threshold"] = w.pop("threshold").abs().log()
    _write_saelens(tmp_path / "s", w, {"architecture": "jumprelu", "d_in": D, "d_sae": F})
    sae = load_sae(tmp_path / "s")
    pre = (X - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    f = pre.relu() * (pre > w["log_threshold"].exp())
    _close(sae.encode(X), f)
    _close(sae.decode(sae.encode(X)), (f * w["scaling_factor"]) @ w["W_dec"] + w["b_dec"])


def test_saelens_unsupported_architecture(tmp_path):
    _write_saelens(tmp_path / "g", _w(3), {"architecture": "gated", "d_in": D, "d_sae": F})
    with pytest.raises(SAEFormatError, match="gated"):
        load_sae(tmp_path / "g")


# -- EleutherAI sparsify ----------------------------------------------------------------------------
def _sparsify_ref(sd, k, x):
    """sparsify: top-k of relu(Linear(x - b_dec)), decode the k latents, + b_dec."""
    pre = torch.nn.functional.linear(x.double() - sd["b_dec"].double(), sd["encoder.weight"].double(),
                                     sd["encoder.bias"].double()).relu()
    acts, idx = pre.topk(k, dim=-1)
    y = (acts.unsqueeze(-1) * sd["W_dec"].double()[idx]).sum(-2) + sd["b_dec"].double()
    return torch.zeros_like(pre).scatter(-1, idx, acts), y


def _write_sparsify(path, sd, k):
    path.mkdir(parents=True)
    save_file({n: t.contiguous() for n, t in sd.items()}, str(path / "sae.safetensors"))
    (path / "cfg.json").write_text(json.dumps({"activation": "topk", "expansion_factor": 4, "normalize_decoder": True,
                                               "num_latents": 0, "k": k, "multi_topk": False,
                                               "skip_connection": False, "transcode": False, "d_in": D}))


def test_sparsify_matches_its_definition_and_round_trips(tmp_path):
    w = _w(4)
    sd = {"encoder.weight": w["W_enc"].T.contiguous(), "encoder.bias": w["b_enc"], "W_dec": w["W_dec"],
          "b_dec": w["b_dec"]}
    _write_sparsify(tmp_path / "run" / "layers.2", sd, k=6)
    _write_sparsify(tmp_path / "run" / "layers.4.mlp", sd, k=6)
    with pytest.raises(SAEFormatError, match="layers.2"):
        load_sae(tmp_path / "run")  # several hookpoints: say which
    sae = load_sparsify(tmp_path / "run", hookpoint="layers.2")
    assert sae.site == "resid_post.2" and load_sae(tmp_path / "run" / "layers.4.mlp").site == "mlp_out.4"
    f_want, y_want = _sparsify_ref(sd, 6, X)
    _close(sae.encode(X), f_want)
    _close(sae(X), y_want)
    save_sparsify(sae, tmp_path / "out" / "layers.2")
    sd2 = load_file(str(tmp_path / "out" / "layers.2" / "sae.safetensors"))
    assert set(sd2) == set(sd) and all(torch.equal(sd2[n], sd[n]) for n in sd)
    cfg2 = json.loads((tmp_path / "out" / "layers.2" / "cfg.json").read_text())
    assert cfg2["d_in"] == D and cfg2["k"] == 6 and cfg2["num_latents"] == F


def test_sparsify_refuses_what_it_cannot_hold(tmp_path):
    relu = SAE.from_weights(*[_w(5)[n] for n in ("W_enc", "b_enc", "W_dec", "b_dec")])
    with pytest.raises(SAEFormatError, match="TopK"):
        save_sparsify(relu, tmp_path / "x")
    w = _w(5)
    sd = {"encoder.weight": w["W_enc"].T.contiguous(), "encoder.bias": w["b_enc"], "W_dec": w["W_dec"],
          "b_dec": w["b_dec"], "W_skip": torch.zeros(D, D)}
    _write_sparsify(tmp_path / "skip", sd, 4)
    with pytest.raises(SAEFormatError, match="skip"):
        load_sae(tmp_path / "skip")


def test_sparsify_writer_folds_b_dec(tmp_path):
    w = _w(6)
    sae = SAE.from_weights(w["W_enc"], w["b_enc"], w["W_dec"], w["b_dec"], activation="topk", k=5,
                           apply_b_dec_to_input=False)
    save_sparsify(sae, tmp_path / "h")
    f_want, y_want = _sparsify_ref(load_file(str(tmp_path / "h" / "sae.safetensors")), 5, X)
    _close(sae.encode(X), f_want, 1e-4)
    _close(sae(X), y_want, 1e-4)


# -- Gemma Scope ------------------------------------------------------------------------------------
def _gemmascope_ref(p, x):
    """The Gemma Scope tutorial's JumpReLUSAE: no b_dec subtraction, mask * relu(pre)."""
    p = {k: torch.from_numpy(v).double() for k, v in p.items()}
    pre = x.double() @ p["W_enc"] + p["b_enc"]
    f = (pre > p["threshold"]) * pre.relu()
    return f, f @ p["W_dec"] + p["b_dec"]


def test_gemmascope_matches_its_definition_and_round_trips(tmp_path):
    folder = tmp_path / "gemma-scope-2b-pt-res" / "layer_3" / "width_16k" / "average_l0_50"
    folder.mkdir(parents=True)
    p = {k: v.numpy() for k, v in _w(7).items()}
    np.savez(folder / "params.npz", **p)
    assert detect_format(folder) == "gemmascope" and detect_format(folder / "params.npz") == "gemmascope"
    sae = load_sae(folder)
    assert sae.site == "resid_post.3" and not sae.apply_b_dec_to_input
    f_want, y_want = _gemmascope_ref(p, X)
    _close(sae.encode(X), f_want)
    _close(sae(X), y_want)
    out = save_gemmascope(sae, tmp_path / "again")
    with np.load(out, allow_pickle=False) as z:
        q = {k: z[k] for k in z.files}
    f2, y2 = _gemmascope_ref(q, X)
    _close(f2, f_want)
    _close(y2, y_want)
    assert load_gemmascope(out, site="resid_post.3").site == "resid_post.3"


@pytest.mark.parametrize("activation", ["relu", "jumprelu"])
def test_gemmascope_writer_converts_b_dec_and_relu(tmp_path, activation):
    w = _w(8)
    sae = SAE.from_weights(w["W_enc"], w["b_enc"], w["W_dec"], w["b_dec"],
                           w["threshold"].clamp_min(0) if activation == "jumprelu" else None)
    out = save_gemmascope(sae, tmp_path / "p.npz")
    with np.load(out, allow_pickle=False) as z:
        f2, y2 = _gemmascope_ref({k: z[k] for k in z.files}, X)
    _close(f2, sae.encode(X), 1e-4)
    _close(y2, sae(X), 1e-4)
    with pytest.raises(SAEFormatError, match="TopK"):
        save_gemmascope(SAE.from_weights(w["W_enc"], w["b_enc"], w["W_dec"], w["b_dec"], activation="topk", k=3),
                        tmp_path / "t")


def test_gemmascope_loads_without_pickle(tmp_path):
    p = {k: v.numpy() for k, v in _w(9).items()}
    p["W_enc"] = np.array([object()] * 3, dtype=object)
    np.savez(tmp_path / "params.npz", **p)
    with pytest.raises(ValueError, match="pickle"):
        load_sae(tmp_path)


# -- dictionary_learning ----------------------------------------------------------------------------
def _dl_ref(cls, sd, x):
    """The dictionary_learning classes' encode/decode, written out."""
    sd = {k: v.double() for k, v in sd.items()}
    x = x.double()

    def lin(z, wt, b=None):
        return torch.nn.functional.linear(z, wt, b)
    if cls == "AutoEncoder":
        f = lin(x - sd["bias"], sd["encoder.weight"], sd["encoder.bias"]).relu()
        return f, lin(f, sd["decoder.weight"]) + sd["bias"]
    if cls == "AutoEncoderNew":
        f = lin(x, sd["encoder.weight"], sd["encoder.bias"]).relu()
        return f, lin(f, sd["decoder.weight"], sd["decoder.bias"])
    if cls in ("AutoEncoderTopK", "BatchTopKSAE"):
        post = lin(x - sd["b_dec"], sd["encoder.weight"], sd["encoder.bias"]).relu()
        if cls == "AutoEncoderTopK":
            vals, idx = post.topk(int(sd["k"]), dim=-1)
            f = torch.zeros_like(post).scatter(-1, idx, vals)
        else:  # inference: the learned threshold
            f = post * (post > sd["threshold"])
        return f, lin(f, sd["decoder.weight"]) + sd["b_dec"]
    # JumpReluAutoEncoder (apply_b_dec_to_input False)
    pre = x @ sd["W_enc"] + sd["b_enc"]
    n = sd["W_dec"].norm(dim=1)
    f = (pre * (pre > sd["threshold"])).relu() * n
    return f, (f / n) @ sd["W_dec"] + sd["b_dec"]


def _dl_state(cls, w):
    if cls == "JumpReluAutoEncoder":
        return {k: w[k] for k in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")}
    sd = {"encoder.weight": w["W_enc"].T.contiguous(), "encoder.bias": w["b_enc"],
          "decoder.weight": w["W_dec"].T.contiguous()}
    if cls == "AutoEncoder":
        sd["bias"] = w["b_dec"]
    elif cls == "AutoEncoderNew":
        sd["decoder.bias"] = w["b_dec"]
    else:
        sd.update({"b_dec": w["b_dec"], "k": torch.tensor(7, dtype=torch.int32),
                   "threshold": torch.tensor(0.15 if cls == "BatchTopKSAE" else -1.0)})
    return sd


@pytest.mark.parametrize("cls", ["AutoEncoder", "AutoEncoderNew", "AutoEncoderTopK", "BatchTopKSAE",
                                 "JumpReluAutoEncoder"])
def test_dictionary_learning_matches_its_definition(tmp_path, cls):
    sd = _dl_state(cls, _w(10))
    torch.save(sd, tmp_path / "ae.pt")
    (tmp_path / "config.json").write_text(json.dumps(
        {"trainer": {"dict_class": cls, "activation_dim": D, "dict_size": F, "layer": 2, "lm_name": "m",
                     "submodule_name": "resid_post_layer_2"}, "buffer": {"d_submodule": D}}))
    assert detect_format(tmp_path) == "dictionary_learning"
    sae = load_sae(tmp_path)
    assert sae.site == "resid_post.2" and sae.metadata["dict_class"] == cls
    f_want, y_want = _dl_ref(cls, sd, X)
    f = sae.encode(X)
    _close(f, f_want, 1e-4)
    _close(sae(X), y_want, 1e-4)


@pytest.mark.parametrize("activation", ["relu", "topk", "jumprelu"])
def test_dictionary_learning_round_trip(tmp_path, activation):
    w = _w(11)
    sae = SAE.from_weights(w["W_enc"], w["b_enc"], w["W_dec"], w["b_dec"],
                           w["threshold"].clamp_min(0) if activation == "jumprelu" else None,
                           activation=activation, k=6 if activation == "topk" else None, site="mlp_out.1")
    save_dictionary_learning(sae, tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())["trainer"]
    sd = torch.load(tmp_path / "ae.pt", weights_only=True)
    f_dl, y_dl = _dl_ref(cfg["dict_class"], sd, X)
    back = load_dictionary_learning(tmp_path)
    assert back.site == "mlp_out.1" and back.activation == activation
    _close(back.encode(X), f_dl, 1e-4)
    _close(y_dl, sae(X), 1e-4)  # reconstructions survive every conversion
    if activation != "jumprelu":  # JumpReLU features are rescaled to unit-norm decoder rows
        _close(f_dl, sae.encode(X), 1e-4)
    else:
        _close(f_dl, sae.encode(X) * sae.W_dec.norm(dim=1), 1e-4)


class _Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_dictionary_learning_loads_without_running_pickled_code(tmp_path, capsys):
    sd = _dl_state("AutoEncoder", _w(12))
    torch.save({**sd, "evil": _Payload()}, tmp_path / "ae.pt")
    with pytest.raises(pickle.UnpicklingError):
        load_sae(tmp_path)
    assert "code ran" not in capsys.readouterr().out


# -- cross-format -----------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["saelens", "gemmascope", "dictionary_learning"])
def test_convert_saelens_jumprelu_to_other_formats(tmp_path, fmt):
    w = _w(13)
    w["threshold"] = w["threshold"].clamp_min(0)
    sae = SAE.from_weights(w["W_enc"], w["b_enc"], w["W_dec"], w["b_dec"], w["threshold"], site="resid_post.0")
    save_sae(sae, tmp_path / "x", format=fmt)
    back = load_sae(tmp_path / "x")
    _close(back(X), sae(X), 1e-4)


def test_detect_format_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        detect_format(tmp_path / "missing")
    with pytest.raises(SAEFormatError, match="none of"):
        detect_format(tmp_path)
    with pytest.raises(ValueError, match="format"):
        load_sae(tmp_path, format="onnx")
