"""Attaching steering to real model stacks (Hugging Face transformers first)."""
from .hf import (FAMILIES, Steering, UnsupportedModelError, attach, capture, head_vector, resolve_site, site_width,
                 steer)
from .interop import from_repeng, from_steering_vectors
from .sae_splice import splice
from .sae_steering import SaeSteering, attach_sae

__all__ = ["FAMILIES", "Steering", "UnsupportedModelError", "attach", "capture", "resolve_site", "site_width", "steer",
           "head_vector", "from_repeng", "from_steering_vectors", "splice", "SaeSteering", "attach_sae"]
