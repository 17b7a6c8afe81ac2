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
from .steer import steer, steer_

__all__ = [
    "BACKENDS", "BackendError", "SteerkitInputError", "explain",
    "add", "add_", "add_gathered", "add_gathered_", "patch", "patch_",
    "project_out", "project_out_", "scale", "scale_", "steer", "steer_",
]
