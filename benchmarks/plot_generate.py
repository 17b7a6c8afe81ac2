"""The README's tokens/s plot (benchmarks/results/generate-h100-engine.svg) from committed rows:
the latest row of each (shape, path, steering, batch) among the H100 runs of the current engine
(from 2026-11-23 23:41 UTC). Series: the engine unsteered / distinct mix, transformers' compiled
generate unsteered / distinct mix, eager generate with a plain hook add / steerkit's distinct
mix, repeng and steering-vectors (eager rows are host-bound; the 8B eager rows generate 32
tokens). Usage: python benchmarks/plot_generate.py"""
import glob

from steerkit.bench import generate_bench as gb

R = "benchmarks/results/"
CURRENT = sorted(glob.glob(R + "generate-llama-*-20261123-23[45]*.jsonl") + glob.glob(R + "generate-llama-*-20261124-*.jsonl"))
WANTED = {("engine", "unsteered"), ("engine", "distinct-mix"), ("hf-compiled", "unsteered"),
          ("hf-compiled", "distinct-mix"), ("hf-eager", "hook-add"), ("hf-eager", "distinct-mix"),
          ("repeng", "shared"), ("steering-vectors", "shared")}

latest = {}
for r in gb.load_rows(CURRENT):
    if (r["path"], r["steer"]) in WANTED:
        latest[(r["shape"], r["path"], r["steer"], r["batch"])] = r
print(gb.plot(list(latest.values()), R + "generate-h100-engine.svg"))
