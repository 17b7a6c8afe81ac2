"""Steering state: persistent per-site tables of configurations (row 0 = identity)."""
from .sae_table import SaeSteeringTable
from .table import SteeringTable, TableStack

__all__ = ["SaeSteeringTable", "SteeringTable", "TableStack"]
