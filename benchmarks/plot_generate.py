"""The README's tokens/s plot (benchmarks/results/generate-h100-engine.svg) from committed rows:
the latest row of each (shape, path, steering, batch) among the H100 runs of the current engine
(from 2026-11-23 23:41 UTC), plus transformers' compiled and eager rows of earlier runs (they do
not depend on steerkit). Series: engine unsteered / distinct-mix, hf-compiled unsteered, hf-eager
unsteered / hook-add.  Usage: python benchmarks/plot_generate.py"""
import glob

from steerkit.bench import generate_bench as gb

R = "benchmarks/results/"
HF_ONLY = [R + "generate-llama-3.2-1b-nvidia-h100-80gb-hbm3-20261123-192842.jsonl",  # hf-compiled at 1, 16
           R + "generate-llama-3.2-1b-nvidia-h100-80gb-hbm3-20261123-215404.jsonl"]  # hf paths at 64
CURRENT = sorted(glob.glob(R + "generate-llama-*-20261123-23[45]*.jsonl") + glob.glob(R + "generate-llama-*-20261124-*.jsonl"))
WANTED = {("engine", "unsteered"), ("engine", "distinct-mix"), ("hf-compiled", "unsteered"),
          ("hf-eager", "unsteered"), ("hf-eager", "hook-add")}

latest = {}
for f in HF_ONLY + CURRENT:
    for r in gb.load_rows([f]):
        if (r["path"], r["steer"]) in WANTED and not (f in HF_ONLY and r["path"] == "engine"):
            latest[(r["shape"], r["path"], r["steer"], r["batch"])] = r
print(gb.plot(list(latest.values()), R + "generate-h100-engine.svg"))
