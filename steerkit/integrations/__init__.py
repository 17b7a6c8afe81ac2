"""Attaching steering to real model stacks (Hugging Face transformers first)."""
from .hf import FAMILIES, Steering, UnsupportedModelError, attach, capture, resolve_site, steer

__all__ = ["FAMILIES", "Steering", "UnsupportedModelError", "attach", "capture", "resolve_site", "steer"]
