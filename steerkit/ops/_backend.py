"""Backend choice: each backend says why it refuses an input; auto picks the first that accepts.

Order for auto: the CUDA extension if it is already built (installed ahead of time or loaded in
this process), else Triton on a GPU, else the PyTorch reference. ``STEERKIT_BACKEND`` or a
``backend=`` argument forces one; a forced backend that refuses raises ``BackendError``.
"""
from __future__ import annotations

import functools
import os
from typing import Dict, Optional

import torch

BACKENDS = ("cuda", "triton", "torch")
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# ops whose Triton kernel keeps a whole row in registers
_WHOLE_ROW_OPS = ("project_out", "steer")


class BackendError(RuntimeError):
    """A forced backend cannot serve this input."""


@functools.lru_cache(maxsize=None)
def _triton_import_error() -> Optional[str]:
    try:
        import triton  # noqa: F401

        import steerkit.kernels  # noqa: F401
    except Exception as e:  # pragma: no cover - depends on the machine
        return f"Triton is not importable ({type(e).__name__}: {e})"
    return None


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.lru_cache(maxsize=None)
def _capability_reason(device_index: int) -> Optional[str]:
    major, minor = torch.cuda.get_device_capability(device_index)
    if major < 8:
        return f"compute capability {major}.{minor} is below 8.0"
    return None


def _refuse(backend: str, op: str, device: torch.device, dtype: torch.dtype, d: int) -> Optional[str]:
    """Why ``backend`` cannot run ``op`` on rows of width d; None if it can."""
    if backend == "torch":
        return None
    if dtype not in _DTYPES:
        return f"dtype {dtype} is not one of float32, float16, bfloat16"
    if backend == "triton":
        reason = _triton_import_error()
        if reason:
            return reason
        from steerkit.kernels._launch import MAX_D

        if op in _WHOLE_ROW_OPS and d > MAX_D:
            return f"d={d} exceeds {MAX_D}, the widest row the {op} kernel keeps in registers"
        if device.type == "cpu":
            return None if _interpreting() else "CPU tensor (set TRITON_INTERPRET=1 to run Triton kernels on the CPU)"
        if device.type != "cuda":
            return f"device {device.type} is not supported"
        return _capability_reason(device.index if device.index is not None else torch.cuda.current_device())
    if backend == "cuda":
        if device.type != "cuda":
            return f"not a CUDA tensor (device {device})"
        from steerkit import _cuda_ext

        return _cuda_ext.reason()
    return f"unknown backend {backend!r}; choose from {BACKENDS}"


def explain(op: str, h: torch.Tensor) -> Dict[str, str]:
    """Every backend's verdict for running ``op`` on ``h``: 'ok' or the reason it refuses."""
    d = h.shape[-1] if h.dim() else 0
    return {b: (_refuse(b, op, h.device, h.dtype, d) or "ok") for b in BACKENDS}


@functools.lru_cache(maxsize=4096)
def _choose(op: str, device: torch.device, dtype: torch.dtype, d: int, requested: str, ext_built: bool) -> str:
    if requested != "auto":
        reason = _refuse(requested, op, device, dtype, d)
        if reason:
            raise BackendError(f"backend {requested!r} cannot run steerkit.ops.{op} here: {reason}")
        return requested
    if device.type == "cuda":
        if ext_built and _refuse("cuda", op, device, dtype, d) is None:
            return "cuda"
        if _refuse("triton", op, device, dtype, d) is None:
            return "triton"
    return "torch"


def resolve(op: str, h: torch.Tensor, backend: Optional[str]) -> str:
    """The concrete backend for this call (see the module docstring)."""
    requested = backend or os.environ.get("STEERKIT_BACKEND") or "auto"
    if requested not in BACKENDS + ("auto",):
        raise ValueError(f"steerkit.ops.{op}: backend must be one of {BACKENDS + ('auto',)}, got {requested!r}")
    ext_built = False
    if requested == "auto" and h.is_cuda:  # the extension may get loaded later in the process
        from steerkit import _cuda_ext

        ext_built = _cuda_ext.available()
    return _choose(op, h.device, h.dtype, h.shape[-1], requested, ext_built)
