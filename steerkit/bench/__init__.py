"""The op benchmark behind ``steerkit bench`` and ``benchmarks/bench_<op>.py``.

For every op, size and dtype it times every backend (interleaved, ``rounds`` times, medians with
their spread), eagerly and, on a GPU, under CUDA-graph replay, then prints a table and appends
machine-readable rows to ``benchmarks/results/``.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
from typing import Dict, Iterable, List, Optional

import torch

from . import cases as C
from .timing import GraphTimer, copy_bandwidth_gbps, eager_us, spread

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
ALL_OPS = list(C.BUILDERS)


def _git_commit() -> str:
    if os.environ.get("STEERKIT_COMMIT"):  # set by runs on a copy of the tree without .git
        return os.environ["STEERKIT_COMMIT"]
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True,
                              text=True, timeout=5).stdout.strip() or "unknown"
    except Exception:
        return "unknown"


def _environment(device: str) -> Dict[str, str]:
    try:
        import triton

        triton_version = triton.__version__
    except Exception:
        triton_version = "none"
    gpu = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu"
    return {"gpu": gpu, "torch": torch.__version__, "triton": triton_version, "commit": _git_commit()}


def default_backends(device: str) -> List[str]:
    if device != "cuda":
        return ["torch"]
    from steerkit import _cuda_ext

    fast = ["triton"]
    if _cuda_ext.reason() is None:
        try:
            _cuda_ext.load()
            fast.append("cuda")
        except Exception as e:  # build failed: say so, bench the rest
            print(f"steerkit bench: CUDA extension unavailable ({e}); skipping backend 'cuda'", file=sys.stderr)
    return ["torch"] + fast


def run(ops: Iterable[str] = ALL_OPS, Ts: Iterable[int] = (1, 64, 4096, 16384), ds: Iterable[int] = (2304, 4096),
        dtypes: Iterable[str] = ("bf16", "fp16"), backends: Optional[List[str]] = None, rounds: int = 5,
        out_dir: Optional[str] = None, device: Optional[str] = None) -> List[dict]:
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    backends = backends or default_backends(device)
    graph = device == "cuda"
    env = _environment(device)
    copy_bw = copy_bandwidth_gbps(device, (1 << 30) if device == "cuda" else (1 << 27))
    print(f"# steerkit op benchmark on {env['gpu']} (torch {env['torch']}, triton {env['triton']}, "
          f"commit {env['commit']}); measured copy bandwidth {copy_bw:.0f} GB/s (read + write); "
          f"{rounds} interleaved rounds, medians [min-max]", flush=True)
    header = (f"{'op':<13}{'variant':<13}{'T':>6}{'d':>6} {'dtype':<5} {'backend':<8}"
              f"{'eager us':>10} {'[spread]':<14}{'graph us':>9} {'GB/s':>7} {'%copy':>6} {'vs eager':>9}")
    print(header)
    print("-" * len(header), flush=True)
    rows: List[dict] = []
    for op in ops:
        for dt_name in dtypes:
            for d in ds:
                for T in Ts:
                    for case in C.build(op, T, d, DTYPES[dt_name], device, [b for b in backends if b != "eager"]):
                        rows += _measure(case, dt_name, rounds, graph, copy_bw, env, device)
    if out_dir:
        _write(rows, out_dir, env, device)
    return rows


def _measure(case: C.Case, dt_name: str, rounds: int, graph: bool, copy_bw: float, env, device) -> List[dict]:
    names = list(case.calls)
    timers = {b: GraphTimer(case.calls[b]) for b in names} if graph else {}
    eager: Dict[str, List[float]] = {b: [] for b in names}
    replay: Dict[str, List[float]] = {b: [] for b in names}
    for _ in range(rounds):  # interleaved: every backend once per round
        for b in names:
            eager[b].append(eager_us(case.calls[b], device))
            if graph:
                replay[b].append(timers[b].us())
    del timers
    base = statistics.median(eager["eager"] if "eager" in eager else eager["torch"])
    out = []
    for b in names:
        e = statistics.median(eager[b])
        g = statistics.median(replay[b]) if graph else None
        gbps = case.bytes / 1e3 / e
        row = dict(op=case.op, variant=case.variant, T=case.T, d=case.d, dtype=dt_name, backend=b,
                   eager_us=round(e, 3), eager_us_min=round(min(eager[b]), 3), eager_us_max=round(max(eager[b]), 3),
                   graph_us=None if g is None else round(g, 3),
                   graph_us_min=None if g is None else round(min(replay[b]), 3),
                   graph_us_max=None if g is None else round(max(replay[b]), 3),
                   floor_bytes=case.bytes, gbps=round(gbps, 1), pct_copy=round(100 * gbps / copy_bw, 1),
                   speedup_vs_eager=round(base / e, 2), copy_gbps=round(copy_bw, 1), rounds=rounds, **env)
        out.append(row)
        gs = f"{g:9.2f}" if g is not None else f"{'-':>9}"
        print(f"{case.op:<13}{case.variant:<13}{case.T:>6}{case.d:>6} {dt_name:<5} {b:<8}{e:10.2f} "
              f"[{spread(eager[b]):<12}]{gs} {gbps:7.0f} {row['pct_copy']:6.1f} {row['speedup_vs_eager']:8.2f}x",
              flush=True)
    return out


def run_compile(out_dir: Optional[str] = None, **kw) -> List[dict]:
    """The under-compile comparison (GPU only); see steerkit/bench/compile_bench.py."""
    from . import compile_bench

    env = _environment("cuda")
    rows = [dict(r, **env) for r in compile_bench.run(**kw)]
    if out_dir:
        _write(rows, out_dir, env, "cuda", prefix="compile")
    return rows


def run_model(out_dir: Optional[str] = None, **kw) -> List[dict]:
    """Steering overhead on whole models; see steerkit/bench/model_bench.py. Rows are written as
    they are measured, batch size by batch size (a run cut short keeps what it measured)."""
    from . import model_bench

    device = "cuda" if torch.cuda.is_available() else "cpu"
    env = _environment(device)
    path = [None]

    def emit(batch_rows: List[dict]) -> None:
        if out_dir:
            path[0] = _write([dict(r, **env) for r in batch_rows], out_dir, env, device,
                             prefix=f"model-{kw.get('shape', 'llama-3.2-1b')}", path=path[0])

    return [dict(r, **env) for r in model_bench.run(emit=emit, **kw)]


def _write(rows: List[dict], out_dir: str, env, device, prefix: str = "ops", path: Optional[str] = None) -> str:
    """Write rows as JSON lines to a new stamped file, or append them to ``path``; returns the path."""
    os.makedirs(out_dir, exist_ok=True)
    if path is None:
        tag = "".join(ch if ch.isalnum() else "-" for ch in env["gpu"].lower()).strip("-") or device
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
        path = os.path.join(out_dir, f"{prefix}-{tag}-{stamp}.jsonl")
    with open(path, "a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    print(f"# wrote {len(rows)} rows to {path}")
    return path
