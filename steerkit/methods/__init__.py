"""Research procedures built on the ops, tables and integrations."""
from .repe import last_token_activations, mean_difference

__all__ = ["last_token_activations", "mean_difference"]
