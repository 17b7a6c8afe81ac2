"""Shared pieces of the SAE op benchmarks (bench_sae_*.py): sizes, timing with a deadline, peak
extra memory, the measured matrix rate, table printing and JSONL rows under benchmarks/results/
(through steerkit.bench's writer)."""
from __future__ import annotations

import argparse
import atexit
import time
from typing import Callable, Dict, List

import torch

from steerkit.bench import _environment, _write
from steerkit.bench.timing import GraphTimer, copy_bandwidth_gbps, eager_us

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def ints(s: str) -> List[int]:
    return [int(v) for v in s.split(",") if v]


def parser(doc: str, T: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc)
    p.add_argument("--T", type=ints, default=ints(T))
    p.add_argument("--d", type=ints, default=[2304, 4096])
    p.add_argument("--F", type=ints, default=[16384, 65536, 131072])
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--dtype", default="bf16", choices=list(DTYPES))
    p.add_argument("--deadline", type=float, default=150.0, help="seconds; later cases are skipped")
    p.add_argument("--out", default="benchmarks/results", help="folder for the JSONL rows ('' for none)")
    return p


class Run:
    """Collects rows; knows the device, environment, copy bandwidth and matrix rate."""

    def __init__(self, name: str, deadline: float, out: str = ""):
        if not torch.cuda.is_available():
            raise SystemExit(f"{name}: needs a CUDA GPU")
        self.name, self.end = name, time.time() + deadline
        self.written = False
        if out:  # rows measured so far are kept when the run is interrupted (timeout -s INT)
            atexit.register(lambda: self.written or self.write(out))
        self.env = _environment("cuda")
        self.copy_gbps = copy_bandwidth_gbps("cuda")
        self.mm_tflops = matmul_tflops()
        self.rows: List[dict] = []
        print(f"# {name} on {self.env['gpu']} (torch {self.env['torch']}, triton {self.env['triton']}, commit "
              f"{self.env['commit']}): copy {self.copy_gbps:.0f} GB/s, bf16 matmul {self.mm_tflops:.0f} TFLOP/s",
              flush=True)

    def time_left(self) -> bool:
        if time.time() > self.end:
            print(f"# {self.name}: deadline reached, skipping the remaining cases", flush=True)
            return False
        return True

    def add(self, **row) -> None:
        row.update(self.env, copy_gbps=round(self.copy_gbps, 1), mm_tflops=round(self.mm_tflops, 1))
        self.rows.append(row)
        keys = [k for k in ("op", "variant", "T", "d", "F", "k", "backend", "eager_us", "graph_us", "pct_floor",
                            "vs_matmul", "speedup", "extra_mem_pct") if k in row]
        print("  ".join(f"{k}={row[k]}" for k in keys), flush=True)

    def write(self, out: str) -> None:
        self.written = True
        if out and self.rows:
            _write(self.rows, out, self.env, "cuda", prefix=self.name)


def matmul_tflops(n: int = 8192) -> float:
    """Measured bf16 matrix-product rate (n x n x n), TFLOP/s."""
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    return 2 * n ** 3 / 1e6 / eager_us(lambda: a @ a, "cuda")


def peak_extra_bytes(fn: Callable[[], object]) -> int:
    """Peak memory allocated during fn beyond what was allocated before and what it returns."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = fn()
    torch.cuda.synchronize()
    outs = out if isinstance(out, (tuple, list)) else (out,)
    kept = sum(t.numel() * t.element_size() for t in outs if isinstance(t, torch.Tensor))
    return max(0, torch.cuda.max_memory_allocated() - base - kept)


def times(calls: Dict[str, Callable[[], object]], graph: bool = False, rounds: int = 3):
    """Median eager (and CUDA-graph replay) µs per backend, interleaved rounds."""
    eager = {b: [] for b in calls}
    replay = {b: [] for b in calls}
    timers = {b: GraphTimer(f) for b, f in calls.items()} if graph else {}
    for _ in range(rounds):
        for b, f in calls.items():
            eager[b].append(eager_us(f, "cuda"))
            if graph:
                replay[b].append(timers[b].us())
    med = lambda xs: sorted(xs)[len(xs) // 2] if xs else None  # noqa: E731
    return {b: (med(eager[b]), med(replay[b])) for b in calls}
