"""Benchmark steerkit.ops.patch_ on every backend available here (see `steerkit bench --help`).

Usage: python benchmarks/bench_patch.py [--T 1,64,4096,16384] [--d 2304,4096] [--dtypes bf16,fp16]
"""
import sys

from steerkit.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--ops", "patch", *sys.argv[1:]]))
