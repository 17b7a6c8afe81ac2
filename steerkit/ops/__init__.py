"""steerkit's ops: one public function per op, in place (trailing underscore) and out of place.

Every op takes ``backend=`` ("torch", "triton", "cuda"; default: automatic, or the
``STEERKIT_BACKEND`` environment variable) and ``validate=`` (value checks in eager calls).
"""
from ._backend import BACKENDS, BackendError, explain
from ._checks import SteerkitInputError
from .add import add, add_
from .add_gathered import add_gathered, add_gathered_
from .patch import patch, patch_
from .project_out import project_out, project_out_
from .scale import scale, scale_
from .steer import steer, steer_, steer_stacked
from .sae_decode import sae_decode
from .sae_encode_jumprelu import sae_encode_jumprelu
from .sae_encode_selected import sae_encode_selected
from .sae_encode_topk import sae_encode_topk
from .sae_steer import sae_steer, sae_steer_

__all__ = [
    "BACKENDS", "BackendError", "SteerkitInputError", "explain",
    "add", "add_", "add_gathered", "add_gathered_", "patch", "patch_",
    "project_out", "project_out_", "scale", "scale_", "steer", "steer_", "steer_stacked",
    "sae_decode", "sae_encode_jumprelu", "sae_encode_selected", "sae_encode_topk", "sae_steer", "sae_steer_",
]
