"""Helpers for the SAE op tests: random SAEs, integer-valued SAEs with exact ties, and checks of
selected (values, indices) against the float32 reference pre-activations."""
import torch

from helpers import DEVICE, GPU

# fast backends of the SAE ops (no CUDA C++ kernels) and the dtypes tested here
SAE_BACKENDS = ["torch", "triton"]
SAE_DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if GPU else [])
# float32 reference vs kernels that multiply in the input dtype (fp32 accumulate); scaled by the
# largest magnitude: the inputs' rounding accumulates over d products
TOL = {torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}


def make_sae(d, F, dtype=torch.float32, device=DEVICE, jump=False):
    """Random SAE tensors (W_enc [d, F], b_enc [F], W_dec [F, d], b_dec [d], threshold [F])."""
    g = lambda *s: torch.randn(*s, device=device)  # noqa: E731
    W_enc = (g(d, F) / d ** 0.5).to(dtype)
    b_enc = (g(F) * 0.1).to(dtype)
    W_dec = (g(F, d) / d ** 0.5).to(dtype)
    b_dec = (g(d) * 0.1).to(dtype)
    thr = (torch.rand(F, device=device) * 0.5).to(dtype) if jump else None
    return W_enc, b_enc, W_dec, b_dec, thr


def integer_sae(d, F, device=DEVICE, dup_every=3):
    """Small-integer SAE whose pre-activations are exact in float32, with many exact ties:
    every ``dup_every``-th encoder column repeats an earlier one."""
    W_enc = torch.randint(-2, 3, (d, F), device=device).float()
    for j in range(dup_every, F, dup_every):
        W_enc[:, j] = W_enc[:, j // 2]
    b_enc = torch.zeros(F, device=device)
    return W_enc, b_enc


def close(a, b, dtype, scale=None):
    scale = scale if scale is not None else max(1.0, float(b.abs().max()) if b.numel() else 1.0)
    torch.testing.assert_close(a.float(), b.float(), rtol=0, atol=TOL[dtype] * scale)


def check_selection(values, indices, pre, k, dtype, relu=True):
    """values/indices [T, k] select the k largest of pre [T, F] (float32 reference): values are
    the sorted top values, each index points at a pre-activation equal to its value, no repeats."""
    ref_vals = torch.sort(pre, dim=-1, descending=True).values[:, :k]
    if relu:
        ref_vals = ref_vals.clamp_min(0)
    scale = max(1.0, float(pre.abs().max()))
    close(values, ref_vals, dtype, scale)
    got = pre.gather(1, indices)
    close(values, got.clamp_min(0) if relu else got, dtype, scale)
    s = indices.sort(dim=-1).values
    assert bool((s[:, 1:] != s[:, :-1]).all()), "repeated index in a row"
