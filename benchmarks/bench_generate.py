"""End-to-end steered generation on Llama-shaped models (random weights): steerkit's engine
(per-slot static cache, CUDA-graph decode step, per-request steering) against transformers'
compiled and eager generate, plain hooks, repeng and steering-vectors. See
steerkit/bench/generate_bench.py.

Usage (headline measurements run first; rows are written as they are measured):
  python benchmarks/bench_generate.py --deadline 420
  python benchmarks/bench_generate.py --shapes llama-3.2-1b --batches 1,64 --variants 'engine:*,hf-compiled:*'
  python benchmarks/bench_generate.py --plot-from benchmarks/results/generate-llama-3.2-1b-x.jsonl --plot out.png
"""
import sys

from steerkit.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench-generate", *sys.argv[1:]]))
