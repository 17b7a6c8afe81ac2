"""Steering state: persistent per-site tables of configurations (row 0 = identity)."""
from .table import SteeringTable

__all__ = ["SteeringTable"]
