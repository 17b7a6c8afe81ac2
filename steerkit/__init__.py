"""steerkit: activation steering at (almost) no cost.

Fused kernels for residual scaling, steering-vector addition, directional ablation, activation
patching and a fused per-row steering op, with a pure-PyTorch reference that is the CPU path
and the test oracle.
"""
from . import ops
from .steering import SteeringTable

__version__ = "0.1.0"
__all__ = ["ops", "SteeringTable", "__version__"]
