"""Steering under torch.compile against plain PyTorch (GPU). See steerkit/bench/compile_bench.py.

Usage: python benchmarks/bench_compile.py [--T 1,64,4096,16384] [--backends triton,cuda] [--out DIR]
"""
import sys

from steerkit.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench-compile", *sys.argv[1:]]))
