"""Shared test helpers: device, backends, shapes, layouts and per-dtype tolerances."""

import pytest
import torch

GPU = torch.cuda.is_available()
DEVICE = "cuda" if GPU else "cpu"


def _cuda_ext_ok():
    if not GPU:
        return False
    try:
        from steerkit import _cuda_ext

        return _cuda_ext.reason() is None
    except Exception:
        return False


# Fast backends under test. On the CPU: Triton in the interpreter. On a GPU: Triton and CUDA.
FAST_BACKENDS = ["triton"] + (["cuda"] if _cuda_ext_ok() else [])
BACKENDS = ["torch"] + FAST_BACKENDS
# The interpreter's bf16 arithmetic is wrong; bf16 is tested on the GPU.
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if GPU else [])

# (T, d) pairs from the design's odd shapes; the interpreter gets the small ones and two large.
SHAPES = [(1, 8), (7, 769), (83, 2304), (1, 4096), (4096, 8)]
SHAPES += [(4096, 769), (83, 4096), (4096, 4096), (7, 2304)] if GPU else [(83, 769), (7, 4096)]

# Documented tolerances: fast kernels against the float32 reference computed on the upcast input.
# One rounding of the float32 result to the output dtype (half an ulp) plus float32 reduction
# noise scaled by the largest magnitude.
RTOL = {torch.float32: 1e-5, torch.float16: 2 ** -10, torch.bfloat16: 2 ** -7}
ATOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-2}


def assert_matches_reference(out: torch.Tensor, ref32: torch.Tensor, dtype: torch.dtype):
    scale = max(1.0, float(ref32.abs().max())) if ref32.numel() else 1.0
    torch.testing.assert_close(out.float(), ref32, rtol=RTOL[dtype], atol=ATOL[dtype] * scale)


def randn(*shape, dtype=torch.float32, device=DEVICE):
    return torch.randn(*shape, device=device).to(dtype)


def activation(T: int, d: int, dtype, layout: str = "contiguous"):
    """Fresh random activations [T, d] in one of several layouts:
    contiguous; 'cols' (slice of a wider tensor: row stride > d); 'rows' (every other row);
    '3d' ([2, T, d] batch x seq); 'transposed' (a [T, d] view of a [d, T] tensor, not row-viewable);
    """
    if layout == "contiguous":
        return randn(T, d, dtype=dtype)
    if layout == "cols":
        return randn(T, d + 5, dtype=dtype)[:, 3:3 + d]
    if layout == "rows":
        return randn(2 * T, d, dtype=dtype)[::2]
    if layout == "3d":
        return randn(2, T, d, dtype=dtype)
    if layout == "transposed":
        return randn(d, T, dtype=dtype).t()
    raise ValueError(layout)


LAYOUTS = ["contiguous", "cols", "rows", "3d", "transposed"]


def run_both(fn_inplace, fn_outplace, h, backend):
    """Run an op in place on a clone and out of place; return both results."""
    a = h.clone()
    ret = fn_inplace(a, backend)
    assert ret is a
    b = fn_outplace(h, backend)
    assert b.shape == h.shape and b.dtype == h.dtype
    return a, b


def assert_untouched(out: torch.Tensor, h: torch.Tensor, keep: torch.Tensor):
    """Rows where keep is True are bit-identical to h."""
    assert torch.equal(out[keep], h[keep]), "untouched rows changed"


gpu_only = pytest.mark.skipif(not GPU, reason="needs a CUDA GPU")


def make_table(d: int, capacity: int = 6, max_directions: int = 3, dtype=torch.float32, device=DEVICE,
               table=None):
    """A SteeringTable whose configurations exercise every stage alone and together (written
    into ``table`` when one is given, of that shape)."""
    from steerkit import SteeringTable

    t = SteeringTable(d, capacity, max_directions, device=device, dtype=dtype) if table is None else table
    r = min(max_directions, d)

    def ortho(k):
        return torch.linalg.qr(torch.randn(d, k, dtype=torch.float64))[0].T.float() * 3.0

    w = lambda: torch.randn(d) / d ** 0.5  # noqa: E731  dynamic factor of order 1
    t.set(1, scale=1.7)
    t.set(2, vector=torch.randn(d), strength=0.8)
    t.set(3, directions=ortho(r), values=torch.randn(r))
    if capacity >= 4:
        t.set(4, dynamic=(w(), 0.5))
    if capacity >= 5:
        t.set(5, scale=0.6, dynamic=(w(), 1.0), directions=ortho(1), values=0.0,
              vector=torch.randn(d), strength=-1.3)
    if capacity >= 6:
        t.set(6, scale=-0.4, directions=ortho(max(1, r - 1)), values=1.5)
    return t


def tiny_lm(family: str, d: int = 32, device="cpu", dtype=torch.float32):
    """A tiny random causal LM ("llama" or "gpt2"), 3 blocks of width d, vocabulary 64."""
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    if family == "llama":
        cfg = LlamaConfig(vocab_size=64, hidden_size=d, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                          num_key_value_heads=2, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    else:
        cfg = GPT2Config(vocab_size=64, n_embd=d, n_layer=3, n_head=4, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg).eval().to(device=device, dtype=dtype)


def plain_hook_logits(model, site: str, fn, ids: torch.Tensor) -> torch.Tensor:
    """Logits with h -> fn(h) at ``site`` written as a plain PyTorch hook (the oracle of the
    integration tests)."""
    from steerkit.integrations.hf import resolve_site

    module, kind = resolve_site(model, site)
    if kind == "pre":
        h = module.register_forward_pre_hook(lambda m, a, k: ((fn(a[0]),) + a[1:], k) if a else
                                             (a, {**k, "hidden_states": fn(k["hidden_states"])}), with_kwargs=True)
    else:
        h = module.register_forward_hook(lambda m, a, o: (fn(o[0]),) + tuple(o[1:]) if isinstance(o, tuple) else fn(o))
    try:
        with torch.no_grad():
            return model(input_ids=ids).logits
    finally:
        h.remove()
