"""sae_encode_jumprelu: JumpReLU SAE encode into a fixed-capacity sparse output, graph safe.

Active features of a row: ``pre > threshold`` with ``pre = (x - b_dec) @ W_enc + b_enc``. The
kernel is TopK encode's (kernels/sae_encode_topk.py) with ``k = capacity``: inactive features'
keys are masked out of the running lists and active ones are counted per slice, so a row over
capacity keeps its largest values and reports the rest as overflow. No host sync, fixed grid.

Floor: as TopK encode (2*T*d*F FLOPs at prefill; reading W_enc and threshold at decode sizes).
"""
from .sae_encode_topk import encode_select


def sae_encode_jumprelu(x, W_enc, b_enc, b_dec, threshold, capacity, values, indices, counts, overflow,
                        slices=None):
    """x [T, d]; W_enc [d, F]; b_enc, threshold [F]; b_dec [d] or None. Writes values, indices
    [T, capacity] (unused: 0 and -1), counts and overflow [T] int32."""
    encode_select(x, W_enc, b_enc, b_dec, threshold, capacity, values, indices, counts, overflow, slices=slices)
