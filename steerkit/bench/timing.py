"""Timing: medians of repeated measurements, cold L2 for eager GPU timings.

- GPU eager: ``triton.testing.do_bench`` (it clears the L2 before every call), median.
- GPU graph: ``n`` calls captured back to back in one CUDA graph, replayed; time per call.
  This is the per-op cost inside a captured decode step (launch gaps included).
- CPU: wall clock per call, median.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable, List

import torch


def eager_us(fn: Callable[[], None], device: str) -> float:
    if device == "cuda":
        import triton.testing

        return 1000.0 * triton.testing.do_bench(fn, warmup=5, rep=25, return_mode="median")
    fn()
    samples = []
    deadline = time.perf_counter() + 0.25
    while len(samples) < 3 or (time.perf_counter() < deadline and len(samples) < 50):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return 1e6 * statistics.median(samples)


class GraphTimer:
    """Capture ``n`` back-to-back calls of fn once; ``us()`` replays and returns µs per call."""

    def __init__(self, fn: Callable[[], None], n: int = 20):
        self.n = n
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(s)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            for _ in range(n):
                fn()
        self.graph.replay()
        torch.cuda.synchronize()

    def us(self, reps: int = 10) -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        self.graph.replay()
        start.record()
        for _ in range(reps):
            self.graph.replay()
        end.record()
        end.synchronize()
        return 1000.0 * start.elapsed_time(end) / (reps * self.n)


def copy_bandwidth_gbps(device: str, nbytes: int = 1 << 30) -> float:
    """Measured device copy bandwidth (bytes read + written per second), in GB/s."""
    x = torch.empty(nbytes // 2, dtype=torch.float16, device=device)
    y = torch.empty_like(x)
    us = eager_us(lambda: y.copy_(x), device)
    return 2 * nbytes / 1e3 / us


def spread(xs: List[float]) -> str:
    return f"{min(xs):.1f}-{max(xs):.1f}"
