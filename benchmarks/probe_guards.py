"""Count the guards Dynamo installs when a small Llama-shaped model (16 blocks, tiny widths, CPU)
is compiled unsteered, with a plain PyTorch forward hook per block (mix), and with steerkit at
every resid_post (tables expecting the given kind). Guards are evaluated on every call of a
compiled model from Python (transformers' compiled generate), so they are host time per step.
Also counts the Python function calls per call of the model compiled with Inductor (guards that
run Python, the wrapper's checks of every graph input): a count, so the CPU's timing noise does
not enter.
Usage: python benchmarks/probe_guards.py  (results: benchmarks/results/probe-guards-cpu.txt)"""
import cProfile
import io
import logging
import pstats
import re
from collections import Counter

import torch


def _model(variant: str, kind: str, layers: int):
    from transformers import AutoModelForCausalLM, LlamaConfig

    from steerkit.bench.generate_bench import EXPECT
    from steerkit.bench.model_bench import _HookVariant, _Params
    from steerkit.integrations import attach

    cfg = LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=layers, num_attention_heads=2,
                      num_key_value_heads=1, vocab_size=50)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    params = _Params(4, 16, "cpu")
    if variant == "steerkit":
        handle = attach(model, [f"resid_post.{i}" for i in range(layers)], capacity=4)
        for t in handle.tables.values():
            t.expect(**EXPECT[kind])
        handle.set(1, {s: params.spec(kind, 0) for s in handle.sites})
        handle.assign(torch.tensor([1, 1], dtype=torch.int32))
    elif variant == "hook":
        _HookVariant(model, kind, params).on(torch.tensor([1, 1]))
    return model


def count(variant: str, kind: str = "mix", layers: int = 16) -> Counter:
    model = _model(variant, kind, layers)
    buf = io.StringIO()
    log = logging.getLogger("torch._dynamo.guards")
    handler = logging.StreamHandler(buf)
    log.addHandler(handler)
    torch._logging.set_logs(guards=True)
    try:
        torch._dynamo.reset()
        with torch.no_grad():
            torch.compile(model, fullgraph=True, backend="eager")(
                torch.randint(0, 50, (2, 1)), position_ids=torch.zeros(2, 1, dtype=torch.long))
    finally:
        torch._logging.set_logs()
        log.removeHandler(handler)
    text = buf.getvalue()
    return Counter(re.findall(r"\+- ([A-Z_]+):", text[text.index("TREE_GUARD_MANAGER"):]))


def python_calls(variant: str, kind: str = "mix", layers: int = 16, calls: int = 50) -> float:
    """Python function calls per call of the model compiled with Inductor (CPU)."""
    model = _model(variant, kind, layers)
    torch._dynamo.reset()
    f = torch.compile(model, fullgraph=True)
    ids, pos = torch.randint(0, 50, (2, 1)), torch.zeros(2, 1, dtype=torch.long)
    with torch.no_grad():
        for _ in range(3):
            f(ids, position_ids=pos, use_cache=False)
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(calls):
            f(ids, position_ids=pos, use_cache=False)
        prof.disable()
    return sum(v[1] for v in pstats.Stats(prof).stats.values()) / calls


if __name__ == "__main__":
    for variant, kind in (("none", "mix"), ("hook", "mix"), ("steerkit", "add"), ("steerkit", "mix")):
        c = count(variant, kind)
        print(f"{variant:9} {kind:4} guards {sum(c.values()):5}  tensors {c['TENSOR_MATCH']:4}  "
              f"python lambdas {c['LAMBDA_GUARD']:3}  python calls per compiled call "
              f"{python_calls(variant, kind):6.0f}  " + ", ".join(f"{k} {v}" for k, v in c.most_common(4)))
