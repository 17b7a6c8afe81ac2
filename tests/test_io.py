"""Steering files: safetensors + JSON round trips and llama.cpp / repeng GGUF control vectors."""
import pytest
import torch

from steerkit.steering import io


def test_vectors_round_trip(tmp_path):
    vecs = {"honesty": torch.randn(16), "calm": torch.randn(16).half()}
    io.save_vectors(tmp_path / "v.safetensors", vecs, {"layer": 6, "source": "test"})
    got, meta = io.load_vectors(tmp_path / "v.safetensors")
    assert meta == {"layer": 6, "source": "test"}
    assert set(got) == set(vecs) and all(torch.equal(got[k], vecs[k]) for k in vecs)


def test_config_round_trip(tmp_path):
    cfg = {
        "resid_post.3": dict(vector=torch.randn(8), strength=2.5, scale=0.9),
        "resid_pre.1": dict(directions=torch.randn(2, 8), values=torch.tensor([0.0, 1.0]),
                            dynamic=(torch.randn(8), 0.5)),
    }
    io.save_config(tmp_path / "c.safetensors", cfg)
    got = io.load_config(tmp_path / "c.safetensors")
    assert set(got) == set(cfg)
    assert got["resid_post.3"]["strength"] == 2.5 and got["resid_post.3"]["scale"] == 0.9
    assert torch.equal(got["resid_post.3"]["vector"], cfg["resid_post.3"]["vector"])
    assert torch.equal(got["resid_pre.1"]["directions"], cfg["resid_pre.1"]["directions"])
    assert torch.equal(got["resid_pre.1"]["dynamic"][0], cfg["resid_pre.1"]["dynamic"][0])
    assert got["resid_pre.1"]["dynamic"][1] == 0.5
    with pytest.raises(ValueError, match="no steerkit configuration"):
        io.save_vectors(tmp_path / "v.safetensors", {"a": torch.ones(2)})
        io.load_config(tmp_path / "v.safetensors")


def test_control_vector_gguf_layout(tmp_path):
    gguf = pytest.importorskip("gguf")
    vecs = {"resid_post.1": torch.randn(32), 4: torch.randn(32)}
    path = tmp_path / "cv.gguf"
    io.write_control_vector(path, vecs, model_hint="llama")
    # the layout llama.cpp reads: architecture, hint, layer count, direction.<n> float32 [d]
    r = gguf.GGUFReader(str(path))
    field = lambda k: r.fields[k].parts[r.fields[k].data[0]]  # noqa: E731
    assert bytes(field("general.architecture")).decode() == "controlvector"
    assert bytes(field("controlvector.model_hint")).decode() == "llama"
    assert int(field("controlvector.layer_count")[0]) == 2
    assert sorted(t.name for t in r.tensors) == ["direction.1", "direction.4"]
    assert all(t.tensor_type == gguf.GGMLQuantizationType.F32 for t in r.tensors)
    got, hint = io.read_control_vector(path)
    assert hint == "llama"
    assert torch.equal(got["resid_post.1"], vecs["resid_post.1"]) and torch.equal(got["resid_post.4"], vecs[4])


def test_control_vector_refusals(tmp_path):
    pytest.importorskip("gguf")
    with pytest.raises(ValueError, match="block 0"):
        io.write_control_vector(tmp_path / "a.gguf", {0: torch.randn(8)})
    with pytest.raises(ValueError, match="resid_post"):
        io.write_control_vector(tmp_path / "a.gguf", {"mlp_out.2": torch.randn(8)})
    with pytest.raises(ValueError, match="same width"):
        io.write_control_vector(tmp_path / "a.gguf", {1: torch.randn(8), 2: torch.randn(9)})


def test_control_vector_steers_like_llama_cpp(tmp_path):
    """Loaded directions are added, at strength 1, to the outputs of the blocks they name."""
    pytest.importorskip("gguf")
    pytest.importorskip("transformers")
    from steerkit import integrations as I
    from test_hf import IDS, _logits, _tiny

    model = _tiny("llama")
    d1, d2 = torch.randn(32), torch.randn(32)
    io.write_control_vector(tmp_path / "cv.gguf", {1: d1, 2: d2})
    vectors, _ = io.read_control_vector(tmp_path / "cv.gguf")
    with I.steer(model, {site: dict(vector=v) for site, v in vectors.items()}):
        got = _logits(model)
    layers = model.model.layers
    hooks = [layers[n].register_forward_hook(lambda m, a, o, v=v: o + v) for n, v in ((1, d1), (2, d2))]
    want = _logits(model)
    for h in hooks:
        h.remove()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert IDS.shape[0] == got.shape[0]
