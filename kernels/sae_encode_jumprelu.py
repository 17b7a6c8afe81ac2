"""sae_encode_jumprelu: JumpReLU SAE encode into a fixed-capacity sparse output, graph safe.

Active features of a row: ``pre > threshold`` with ``pre = (x - b_dec) @ W_enc + b_enc``. The
kernels are TopK encode's candidate path (kernels/sae_encode_topk.py) with theta = threshold:
the fused matmul appends the active features of each row (counted by an atomic per row and tile)
to a buffer of C slots, and the selection keeps the ``capacity`` largest, so a row over capacity
keeps its largest values and reports the rest as overflow. Rows with more than C active features
are recomputed by the exact running-list kernels (eager calls: one host sync; under CUDA-graph
capture they are only counted, see STATS there).

Floor: as TopK encode (2*T*d*F FLOPs at prefill; reading W_enc and threshold at decode sizes).
"""
from .sae_encode_topk import default_path, encode_candidates, encode_select


def sae_encode_jumprelu(x, W_enc, b_enc, b_dec, threshold, capacity, values, indices, counts, overflow,
                        slices=None, buffer=None, chunk=None, path=None):
    """x [T, d]; W_enc [d, F]; b_enc, threshold [F]; b_dec [d] or None. Writes values, indices
    [T, capacity] (unused: 0 and -1), counts and overflow [T] int32. ``slices``: the exact
    running-list kernels with that many F slices; ``buffer`` / ``chunk``: candidate slots per row
    / rows per chunk (tests), either of which selects the candidate path; ``path``: "running" or
    "candidates" (default: sae_encode_topk.default_path(T); see there)."""
    if path is None:
        path = "candidates" if (buffer, chunk) != (None, None) else default_path(x.shape[0])
    if slices is not None or path == "running":
        encode_select(x, W_enc, b_enc, b_dec, threshold, capacity, values, indices, counts, overflow, slices=slices)
    else:
        encode_candidates(x, W_enc, b_enc, b_dec, threshold, capacity, values, indices, counts, overflow,
                          capacity=buffer, chunk=chunk)
