"""Sparse autoencoders: the SAE module, file formats and training (splicing into a model lives in
``steerkit.integrations.sae_splice``)."""
from .formats import (SAEFormatError, detect_format, load_dictionary_learning, load_gemmascope, load_sae,
                      load_saelens, load_sparsify, save_dictionary_learning, save_gemmascope, save_sae,
                      save_saelens, save_sparsify)
from .module import SAE

__all__ = ["SAE", "SAEFormatError", "detect_format", "load_sae", "save_sae", "load_saelens", "save_saelens",
           "load_sparsify", "save_sparsify", "load_gemmascope", "save_gemmascope", "load_dictionary_learning",
           "save_dictionary_learning", "train_topk_sae"]


def __getattr__(name):  # training pulls in the transformers integration: import it on first use
    if name == "train_topk_sae":
        from .train import train_topk_sae
        return train_topk_sae
    raise AttributeError(name)
