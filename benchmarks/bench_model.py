"""Steering overhead on Llama-shaped models (random weights): decode and prefill, eager and compiled,
steerkit against unsteered and against plain PyTorch hooks. See steerkit/bench/model_bench.py.

Usage (any subset; a full sweep of both shapes may not fit one GPU session):
  python benchmarks/bench_model.py --shape llama-3.2-1b --modes compiled --phases decode --batches 1,64
  python benchmarks/bench_model.py --shape llama-3.1-8b --modes eager --kinds add,mix --hook-kinds add --out benchmarks/results
"""
import sys

from steerkit.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench-model", *sys.argv[1:]]))
