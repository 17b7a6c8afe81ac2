"""Benchmark cases, one builder per op. Each returns the calls to time per backend and the
floor's byte count (bytes the op must move: read + write of h, plus per-row parameters and
rows that are not reused, like patch sources).

Backends: the steerkit ones ("torch" = the float32 reference path, "triton", "cuda") and
"eager", the plain PyTorch one-liner a user would write in h's dtype: the speed-up baseline.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List

import torch

from steerkit import SteeringTable, ops


@dataclass
class Case:
    op: str
    variant: str
    T: int
    d: int
    dtype: torch.dtype
    bytes: int  # floor bytes
    calls: Dict[str, Callable[[], None]]  # backend -> in-place call


def _steerkit_calls(fn, backends):
    return {b: (lambda b=b: fn(b)) for b in backends}


def scale_case(T, d, dtype, dev, backends):
    h = torch.randn(T, d, device=dev, dtype=dtype)
    s = torch.ones(T, device=dev)  # 1.0: repeated calls keep h finite
    calls = _steerkit_calls(lambda b: ops.scale_(h, s, backend=b, validate=False), backends)
    calls["eager"] = lambda: h.mul_(s[:, None])
    return [Case("scale", "per-row", T, d, dtype, 2 * h.numel() * h.element_size() + 4 * T, calls)]


def add_case(T, d, dtype, dev, backends):
    h = torch.randn(T, d, device=dev, dtype=dtype)
    v = torch.randn(d, device=dev, dtype=dtype) * 1e-3
    calls = _steerkit_calls(lambda b: ops.add_(h, v, 0.5, backend=b, validate=False), backends)
    calls["eager"] = lambda: h.add_(v, alpha=0.5)
    return [Case("add", "scalar", T, d, dtype, 2 * h.numel() * h.element_size(), calls)]


def project_out_case(T, d, dtype, dev, backends):
    h = torch.randn(T, d, device=dev, dtype=dtype)
    u = torch.nn.functional.normalize(torch.randn(d, device=dev), dim=0).to(dtype)
    calls = _steerkit_calls(lambda b: ops.project_out_(h, u, backend=b, validate=False), backends)
    calls["eager"] = lambda: h.sub_((h @ u)[:, None] * u)
    return [Case("project_out", "r=1", T, d, dtype, 2 * h.numel() * h.element_size(), calls)]


def add_gathered_case(T, d, dtype, dev, backends):
    h = torch.randn(T, d, device=dev, dtype=dtype)
    bank = torch.randn(256, d, device=dev, dtype=dtype) * 1e-3
    idx = torch.randint(0, 256, (T,), device=dev, dtype=torch.int32)
    calls = _steerkit_calls(lambda b: ops.add_gathered_(h, bank, idx, backend=b, validate=False), backends)
    calls["eager"] = lambda: h.add_(bank[idx])
    return [Case("add_gathered", "256 rows", T, d, dtype, 2 * h.numel() * h.element_size() + 4 * T, calls)]


def patch_case(T, d, dtype, dev, backends):
    h = torch.randn(T, d, device=dev, dtype=dtype)
    src = torch.randn(T, d, device=dev, dtype=dtype)
    idx = torch.randperm(T, device=dev)
    es = h.element_size()
    calls = _steerkit_calls(lambda b: ops.patch_(h, src, idx, 0.5, backend=b, validate=False), backends)
    calls["eager"] = lambda: h.lerp_(src[idx], 0.5)
    return [Case("patch", "w=0.5", T, d, dtype, 3 * h.numel() * es + 8 * T, calls)]


def _steer_table(d, dtype, dev, kind, n_configs):
    table = SteeringTable(d, max(n_configs, 1), max_directions=1, device=dev, dtype=dtype)
    for i in range(1, n_configs + 1):
        v = torch.randn(d) * 1e-3
        if kind == "vector":
            table.set(i, vector=v, strength=0.5)
        else:  # scale + dynamic scale + ablation + vector
            w = torch.randn(d) * 1e-4
            table.set(i, scale=1.0, dynamic=(w, 1.0), directions=torch.randn(d), values=0.0,
                      vector=v, strength=0.5)
    return table


def steer_cases(T, d, dtype, dev, backends):
    out = []
    h = torch.randn(T, d, device=dev, dtype=dtype)
    for kind in ("vector", "mix"):
        for n in (1, 256):
            table = _steer_table(d, dtype, dev, kind, n)
            config = (torch.arange(T, device=dev, dtype=torch.int32) % n) + 1
            calls = _steerkit_calls(
                lambda b, table=table, config=config: ops.steer_(h, config, table, backend=b, validate=False),
                backends)
            out.append(Case("steer", f"{kind}/{n}cfg", T, d, dtype, 2 * h.numel() * h.element_size() + 4 * T, calls))
    return out


BUILDERS = {
    "scale": scale_case,
    "add": add_case,
    "project_out": project_out_case,
    "add_gathered": add_gathered_case,
    "patch": patch_case,
    "steer": steer_cases,
}


def build(op: str, T: int, d: int, dtype, device, backends) -> List[Case]:
    return BUILDERS[op](T, d, dtype, device, backends)
