"""Loader of steerkit's CUDA extension (the kernels in ``csrc/``).

The extension registers its ops under ``torch.ops.steerkit_cuda``. It is either installed ahead
of time as ``steerkit._C`` (``STEERKIT_BUILD_CUDA=1 pip install .``) or built on first use with
``torch.utils.cpp_extension.load`` (ninja; cached in torch's extension directory, or in
``$STEERKIT_CACHE_DIR`` when set).

- ``available()``: the extension is loaded or installed ahead of time (never builds).
- ``load()``: import or build it; raises ``RuntimeError`` saying why when it cannot.
- ``reason()``: why the cuda backend cannot be used here, or ``None`` when it can (or could be
  built).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import threading
from pathlib import Path
from typing import List, Optional

import torch

_NAME = "steerkit_cuda"
_OPS = ("scale", "add", "project_out", "add_gathered", "patch", "steer", "sae_encode_topk_select",
        "sae_encode_topk_chunks", "sae_steer")
_CUDA_FLAGS = ["-O3", "--use_fast_math", "-lineinfo"]
_lock = threading.Lock()


def _registered() -> bool:
    """The ops are registered in this process (by the AOT module or an earlier build)."""
    try:
        torch.ops.steerkit_cuda.steer  # noqa: B018  (attribute lookup raises if absent)
        return True
    except (AttributeError, RuntimeError):
        return False


def _aot_installed() -> bool:
    try:
        return importlib.util.find_spec("steerkit._C") is not None
    except (ImportError, ValueError):
        return False


def source_dir() -> Optional[Path]:
    """Where the CUDA sources are: ``<repo>/csrc`` (checkout, editable install) or
    ``steerkit/_csrc`` (normal install); ``None`` if neither holds them."""
    here = Path(__file__).resolve().parent
    for d in (here.parent / "csrc", here / "_csrc"):
        if (d / "registry.cpp").is_file():
            return d
    return None


def _sources(d: Path) -> List[str]:
    return sorted(str(p) for p in list(d.glob("*.cpp")) + list(d.glob("*.cu")))


def _toolchain_reason() -> Optional[str]:
    """Why the extension cannot be compiled here (no GPU needed for that), or None."""
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is not a CUDA build"
    from torch.utils import cpp_extension

    if cpp_extension.CUDA_HOME is None:
        return "no CUDA toolkit found (set CUDA_HOME to a CUDA install with nvcc)"
    nvcc = Path(cpp_extension.CUDA_HOME) / "bin" / "nvcc"
    if not nvcc.is_file() and shutil.which("nvcc") is None:
        return f"nvcc not found under CUDA_HOME={cpp_extension.CUDA_HOME}"
    if not cpp_extension.is_ninja_available():
        return "ninja is not installed (pip install ninja)"
    if source_dir() is None:
        return "the CUDA sources (csrc/) are not shipped with this install"
    return None


def available() -> bool:
    """True if the extension is already loaded or installed ahead of time as ``steerkit._C``."""
    return _registered() or _aot_installed()


def reason() -> Optional[str]:
    """Why the cuda backend cannot be used on this machine; None if it can or could be built."""
    if _registered():
        return None
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is not a CUDA build"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible to torch"
    if _aot_installed():
        return None
    return _toolchain_reason()


def _build_dir() -> Optional[str]:
    d = os.environ.get("STEERKIT_CACHE_DIR")
    if d:
        tag = f"{_NAME}-torch{torch.__version__}".replace("+", "_")  # one build per torch version
        d = os.path.join(os.path.expanduser(d), tag)
        os.makedirs(d, exist_ok=True)
        return d
    return None


def _needs_build(build_dir: str, sources: List[str]) -> bool:
    libs = [p for p in Path(build_dir).glob(f"{_NAME}*.so")] if os.path.isdir(build_dir) else []
    if not libs:
        return True
    built = max(p.stat().st_mtime for p in libs)
    headers = [str(p) for p in Path(sources[0]).parent.glob("*.h*")]  # .h, .cuh
    return any(os.path.getmtime(s) > built for s in sources + headers)


def _build(verbose: bool = False) -> None:
    """JIT-compile and load the extension (needs the toolchain, not a GPU)."""
    why = _toolchain_reason()
    if why is not None:
        raise RuntimeError(f"steerkit: cannot build the CUDA extension: {why}")
    from torch.utils import cpp_extension

    src = source_dir()
    sources = _sources(src)
    build_dir = _build_dir()
    shown = build_dir or cpp_extension._get_build_directory(_NAME, verbose=False)
    if _needs_build(shown, sources):
        print(
            f"steerkit: building the CUDA extension (first use, ~1-2 min), cached in {shown}",
            file=sys.stderr,
            flush=True,
        )
    cpp_extension.load(
        name=_NAME,
        sources=sources,
        extra_cflags=["-O3"],
        extra_cuda_cflags=list(_CUDA_FLAGS),
        extra_include_paths=[str(src)],
        build_directory=build_dir,
        with_cuda=True,
        is_python_module=False,  # loaded with torch.ops.load_library: registers the ops
        verbose=verbose,
    )


def load() -> None:
    """Make ``torch.ops.steerkit_cuda.*`` available: import ``steerkit._C`` if installed, else
    build (first use) or reuse the cached JIT build. Raises RuntimeError saying why it cannot."""
    with _lock:
        if _registered():
            return
        if torch.version.cuda is None:
            raise RuntimeError(f"steerkit: the cuda backend needs a CUDA build of torch, got {torch.__version__}")
        if not torch.cuda.is_available():
            raise RuntimeError("steerkit: the cuda backend needs a CUDA GPU; torch sees none")
        if _aot_installed():
            import steerkit._C  # noqa: F401  (registers the ops)

            if _registered():
                return
        _build()
        if not _registered():
            raise RuntimeError("steerkit: the CUDA extension loaded but registered no ops")
