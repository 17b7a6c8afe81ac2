"""Shared plumbing of the SAE ops: argument checks and backend choice.

The SAE ops have a PyTorch reference (steerkit.ops.reference_sae) and Triton kernels; two of
them also have CUDA C++ kernels: sae_encode_topk a selection kernel for its GEMM path (csrc/
sae_encode_topk.cu), sae_steer a row kernel for decode-sized batches (csrc/sae_steer.cu).
``backend="cuda"`` runs them where they apply (``cuda_refusal`` None) and ``auto`` prefers them
there once the extension is loaded (sae_steer's only up to CUDA_STEER_MAX_T rows).
``backend="cuda"`` passed to another SAE op, or where the CUDA kernel does not apply, raises
BackendError; a process-wide ``STEERKIT_BACKEND=cuda`` means "fast kernels" and falls back to
Triton there.
"""
from __future__ import annotations

import os
from typing import Optional

import torch

from . import _checks as C
from ._backend import BACKENDS, BackendError, _refuse


def backend_for(op: str, x: torch.Tensor, backend: Optional[str], extra_refusal: Optional[str] = None,
                cuda_refusal: Optional[str] = "the op has no CUDA C++ kernel", cuda_preferred: bool = True) -> str:
    """"torch", "triton" or "cuda" for this call. ``extra_refusal``: why Triton cannot take this
    input (an op-specific limit), or None; ``cuda_refusal``: why the op's CUDA kernel cannot (by
    default: it has none), or None; ``cuda_preferred``: whether ``auto`` takes that kernel when it
    can (False: it runs only when asked for, Triton being faster there)."""
    requested = backend or os.environ.get("STEERKIT_BACKEND") or "auto"
    if requested not in BACKENDS + ("auto",):
        raise ValueError(f"steerkit.ops.{op}: backend must be one of {BACKENDS + ('auto',)}, got {requested!r}")
    d = x.shape[-1] if x.dim() else 0
    if requested == "cuda":
        reason = cuda_refusal or _refuse("cuda", op, x.device, x.dtype, d)
        if reason is None:
            return "cuda"
        if backend == "cuda":
            hint = "; use backend='triton'" if cuda_refusal else ""
            raise BackendError(f"backend 'cuda' cannot run steerkit.ops.{op} here: {reason}{hint}")
        requested = "triton" if x.is_cuda else "auto"
    if requested == "auto":
        if (x.is_cuda and cuda_refusal is None and cuda_preferred and _cuda_loaded()
                and _refuse("cuda", op, x.device, x.dtype, d) is None):
            return "cuda"
        if x.is_cuda and extra_refusal is None and _refuse("triton", op, x.device, x.dtype, d) is None:
            return "triton"
        return "torch"
    reason = _refuse(requested, op, x.device, x.dtype, d)
    if requested == "triton" and reason is None:
        reason = extra_refusal
    if reason:
        raise BackendError(f"backend {requested!r} cannot run steerkit.ops.{op} here: {reason}")
    return requested


def _cuda_loaded() -> bool:
    """The CUDA extension is loaded or installed (auto never starts a build)."""
    from steerkit import _cuda_ext

    return _cuda_ext.available()


def weights(op: str, arg: str, w, x: torch.Tensor, shape, names) -> None:
    """A floating tensor on x's device with the given shape (None entries: any size >= 1)."""
    if not isinstance(w, torch.Tensor):
        C.fail(op, arg, f"must be a torch.Tensor, got {type(w).__name__}")
    if w.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        C.fail(op, arg, f"must be float32, float16 or bfloat16, got {w.dtype}")
    ok = w.dim() == len(shape) and all(s is None and n >= 1 or s == n for s, n in zip(shape, w.shape))
    if not ok:
        C.fail(op, arg, f"must have shape [{', '.join(names)}], got {tuple(w.shape)}")
    C.same_device(op, arg, w, x)


def encoder(op: str, x, W_enc, b_enc, b_dec, threshold, validate: bool, need_threshold: bool = False) -> int:
    """Checks x [..., d], W_enc [d, F], b_enc [F], b_dec [d] or None, threshold [F]; returns F."""
    C.activation(op, x)
    d = x.shape[-1]
    weights(op, "W_enc", W_enc, x, (d, None), (f"d={d}", "F"))
    F = W_enc.shape[1]
    weights(op, "b_enc", b_enc, x, (F,), (f"F={F}",))
    if b_dec is not None:
        weights(op, "b_dec", b_dec, x, (d,), (f"d={d}",))
    if need_threshold and threshold is None:
        C.fail(op, "threshold", "is required (JumpReLU threshold of shape [F])")
    if threshold is not None:
        weights(op, "threshold", threshold, x, (F,), (f"F={F}",))
    if validate and C.values_checkable(x):
        for name, t in (("b_enc", b_enc), ("b_dec", b_dec), ("threshold", threshold)):
            if t is not None:
                C.finite(op, name, t)
    return F


def count(op: str, arg: str, n, lo: int, hi: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int):
        C.fail(op, arg, f"must be an int, got {type(n).__name__}")
    if not lo <= n <= hi:
        C.fail(op, arg, f"must be in [{lo}, {hi}], got {n}")


def rows2d(x: torch.Tensor) -> torch.Tensor:
    """[T, d] view of x with unit column stride (a copy only when no such view exists)."""
    x2 = x.reshape(-1, x.shape[-1])
    return x2 if x2.stride(-1) == 1 else x2.contiguous()


def opt_contig(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if t is None else t.contiguous()
