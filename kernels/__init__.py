"""Triton kernels of steerkit, installed as ``steerkit.kernels``.

Each module holds one op's kernel and its launcher; every launcher takes 2-D ``x`` and ``out``
([T, d], ``stride(1) == 1``; ``out`` may be ``x`` for in-place) followed by the op's parameters,
with the same signature as the CUDA extension's ``torch.ops.steerkit_cuda.<op>``.
"""
from .add import add
from .add_gathered import add_gathered
from .patch import patch
from .project_out import project_out
from .scale import scale
from .steer import prepare_steer, steer
from .sae_decode import sae_decode
from .sae_encode_jumprelu import sae_encode_jumprelu
from .sae_encode_selected import sae_encode_selected
from .sae_encode_topk import sae_encode_topk
from .sae_steer import sae_steer

__all__ = ["add", "add_gathered", "patch", "project_out", "scale", "steer", "prepare_steer",
           "sae_decode", "sae_encode_jumprelu", "sae_encode_selected", "sae_encode_topk", "sae_steer"]
