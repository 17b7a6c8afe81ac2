"""Training a TopK SAE on activations captured from a transformers model (for models without
published SAEs), after Gao et al. 2024 ("Scaling and evaluating sparse autoencoders"):

- activations are captured batch by batch at a steerkit site (padding positions and, by default,
  the first position of each sequence, whose norm is often far larger, are dropped), collected
  in a buffer of ``buffer_tokens`` rows, shuffled and trained on in minibatches;
- inputs are scaled by one constant so that their mean norm is sqrt(d) (folded into the weights
  at the end, so the saved SAE reads raw activations);
- ``W_dec`` rows stay unit-norm (the gradient along each row is removed before the step),
  ``W_enc`` starts as ``W_dec^T``, ``b_dec`` as the mean input; loss = fraction of variance
  unexplained (FVU) + ``auxk_alpha`` x the AuxK loss, in which the features dead for
  ``dead_after_tokens`` tokens try to reconstruct the residual;
- the result is saved in the SAELens layout (``save_to``), with SAELens' ``sparsity.safetensors``
  (log10 firing frequency per feature) and ``steerkit_training.json`` (the statistics).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, Optional, Tuple

import torch
import torch.nn.functional as Fn

from steerkit.integrations.hf import capture, site_width

from .formats import save_saelens
from .module import SAE


def _batches(data, tokenizer, batch_size: int, max_length: int) -> Iterator[Dict[str, torch.Tensor]]:
    """Model inputs from texts (tokenised here), token tensors ([S] or [B, S]) or dicts of inputs."""
    if isinstance(data, torch.Tensor):
        data = [data] if data.dim() == 1 else list(data.split(batch_size))
    texts = []
    for item in data:
        if isinstance(item, str):
            texts.append(item)
            if len(texts) == batch_size:
                yield _tokenize(texts, tokenizer, max_length)
                texts = []
        elif isinstance(item, torch.Tensor):
            ids = item.view(1, -1) if item.dim() == 1 else item
            yield {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        elif isinstance(item, dict) and "input_ids" in item:
            yield dict(item)
        else:
            raise ValueError(f"train_topk_sae: data items must be str, token tensors or dicts with input_ids, "
                             f"got {type(item).__name__}")
    if texts:
        yield _tokenize(texts, tokenizer, max_length)


def _tokenize(texts, tokenizer, max_length: int) -> Dict[str, torch.Tensor]:
    if tokenizer is None:
        raise ValueError("train_topk_sae: texts need a tokenizer (tokenizer=...)")
    if getattr(tokenizer, "pad_token", None) is None:
        tokenizer.pad_token = tokenizer.eos_token
    enc = tokenizer(list(texts), return_tensors="pt", padding=True, truncation=True, max_length=max_length)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def _rows(model, site: str, batch: Dict[str, torch.Tensor], drop_first: bool) -> torch.Tensor:
    """Captured activations of the real (unpadded) tokens: [n, d] float32."""
    dev = next(model.parameters()).device
    batch = {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    h = capture(model, [site], **batch)[site].float()
    mask = batch.get("attention_mask")
    keep = torch.ones(h.shape[:2], dtype=torch.bool, device=h.device) if mask is None else mask.bool().to(h.device)
    if drop_first and h.shape[1] > 1:
        # the first real token of each row (left or right padding)
        first = keep.float().argmax(dim=1)
        keep = keep.clone()
        keep[torch.arange(h.shape[0], device=h.device), first] = False
    return h[keep]


class _Trainer:
    """The optimisation state of one TopK SAE (works in the scaled input space)."""

    def __init__(self, d: int, F: int, k: int, lr: float, auxk_alpha: float, dead_after_tokens: int, device,
                 gen: torch.Generator):
        self.d, self.F, self.k = d, F, k
        W = torch.randn(F, d, generator=gen)
        W = W / W.norm(dim=1, keepdim=True)
        self.W_dec = W.clone().to(device).requires_grad_(True)
        self.W_enc = W.T.contiguous().to(device).requires_grad_(True)
        self.b_enc = torch.zeros(F, device=device, requires_grad=True)
        self.b_dec = torch.zeros(d, device=device, requires_grad=True)
        self.opt = torch.optim.Adam([self.W_enc, self.b_enc, self.W_dec, self.b_dec], lr=lr, betas=(0.9, 0.999))
        self.auxk_alpha, self.dead_after = auxk_alpha, dead_after_tokens
        self.since_fired = torch.zeros(F, dtype=torch.long, device=device)
        self.fired = torch.zeros(F, dtype=torch.long, device=device)
        self.tokens = 0

    def _decode(self, idx: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
        # sum_j acts[t, j] * W_dec[idx[t, j]] without materialising [T, F]
        return Fn.embedding_bag(idx, self.W_dec, per_sample_weights=acts, mode="sum")

    def step(self, x: torch.Tensor) -> Tuple[float, float]:
        """One optimiser step on the scaled rows x [B, d]; returns (FVU, AuxK loss)."""
        pre = (x - self.b_dec) @ self.W_enc + self.b_enc
        vals, idx = pre.topk(self.k, dim=-1)
        acts = vals.relu()
        recon = self._decode(idx, acts) + self.b_dec
        var = (x - x.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-12)
        fvu = (recon - x).pow(2).sum(-1).mean() / var
        loss, aux = fvu, torch.zeros((), device=x.device)
        dead = self.since_fired >= self.dead_after
        n_dead = int(dead.sum())
        if self.auxk_alpha > 0 and n_dead > 0:
            k_aux = min(self.d // 2 or 1, n_dead)
            a_vals, a_idx = torch.where(dead, pre, float("-inf")).topk(k_aux, dim=-1)
            a_recon = self._decode(a_idx, a_vals.relu())
            aux = (a_recon - (x - recon).detach()).pow(2).sum(-1).mean() / var
            loss = loss + self.auxk_alpha * aux
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            g, W = self.W_dec.grad, self.W_dec
            g -= (g * W).sum(1, keepdim=True) * W  # keep rows on the unit sphere
            torch.nn.utils.clip_grad_norm_([self.W_enc, self.b_enc, self.W_dec, self.b_dec], 1.0)
        self.opt.step()
        with torch.no_grad():
            self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
            on = idx[acts > 0]
            hit = torch.zeros(self.F, dtype=torch.bool, device=x.device)
            hit[on] = True
            self.fired += torch.bincount(on, minlength=self.F)
            self.since_fired += x.shape[0]
            self.since_fired[hit] = 0
        self.tokens += x.shape[0]
        return float(fvu.detach()), float(aux.detach())


def train_topk_sae(model, site: str, data: Iterable, tokenizer=None, n_features: Optional[int] = None,
                   expansion: int = 8, k: int = 32, batch_size: int = 8, max_length: int = 128,
                   train_batch_tokens: int = 1024, buffer_tokens: int = 16384, epochs: int = 1,
                   max_tokens: Optional[int] = None, lr: Optional[float] = None, auxk_alpha: float = 1 / 32,
                   dead_after_tokens: int = 1_000_000, drop_first_token: bool = True, seed: int = 0,
                   save_to: Optional[str] = None, progress: bool = True, device=None) -> Tuple[SAE, Dict[str, Any]]:
    """Train a TopK SAE on the activations of ``model`` at ``site``.

    Args:
        data: texts (with ``tokenizer``), token tensors ([S] or [B, S]) or dicts of model inputs;
            passed over ``epochs`` times (a list, or a re-iterable), texts in batches of ``batch_size``
            truncated to ``max_length`` tokens.
        n_features: number of features (default ``expansion`` x d); ``k`` active per token.
        train_batch_tokens / buffer_tokens: SAE minibatch and shuffle-buffer sizes (rows).
        max_tokens: stop after training on this many rows.
        lr: Adam learning rate (default 2e-4 / sqrt(n_features / 2^14), Gao et al.'s scaling law).
        dead_after_tokens: a feature that has not fired for this many rows is dead (AuxK and stats).
        save_to: folder to save the SAE to in the SAELens layout.
        device: where the SAE trains (default: the model's device).

    Returns (sae, stats): stats holds ``tokens``, ``steps``, ``fvu`` (per step), ``final_fvu``
    (mean of the last 10% of steps), ``l0``, ``dead`` (features dead at the end), ``dead_fraction``,
    ``never_fired``, ``feature_frequency`` (firings per row, [F]) and ``input_scale``.
    """
    d = site_width(model, site)
    F = int(n_features or expansion * d)
    if not (isinstance(k, int) and 1 <= k <= F):
        raise ValueError(f"train_topk_sae: k must be an int in 1..n_features={F}, got {k!r}")
    for name, v in (("batch_size", batch_size), ("train_batch_tokens", train_batch_tokens),
                    ("buffer_tokens", buffer_tokens), ("epochs", epochs), ("max_length", max_length)):
        if not (isinstance(v, int) and v >= 1):
            raise ValueError(f"train_topk_sae: {name} must be a positive int, got {v!r}")
    if isinstance(data, Iterator) and epochs > 1:
        raise ValueError("train_topk_sae: epochs > 1 needs re-iterable data (a list or tensor), not an iterator")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    lr = lr if lr is not None else 2e-4 / math.sqrt(F / 2 ** 14)
    gen = torch.Generator().manual_seed(seed)
    trainer: Optional[_Trainer] = None
    scale = 1.0
    fvus, auxs = [], []
    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm
            bar = tqdm(desc=f"SAE {site}", unit="tok", total=max_tokens)
        except ImportError:
            bar = None

    def train_on(buf: torch.Tensor) -> bool:
        """Shuffle and train on one buffer; False once max_tokens is reached."""
        nonlocal trainer, scale
        if trainer is None:  # first buffer: input scale, initialisation
            scale = math.sqrt(d) / float(buf.norm(dim=1).mean().clamp_min(1e-12))
            trainer = _Trainer(d, F, k, lr, auxk_alpha, dead_after_tokens, device, gen)
            with torch.no_grad():
                trainer.b_dec.copy_((buf * scale).mean(0))
        x_all = buf[torch.randperm(buf.shape[0], generator=gen).to(buf.device)] * scale
        for x in x_all.split(train_batch_tokens):
            if max_tokens is not None and trainer.tokens >= max_tokens:
                return False
            if max_tokens is not None:
                x = x[:max_tokens - trainer.tokens]
            if x.shape[0] < 2:  # the variance of one row is zero
                continue
            fvu, aux = trainer.step(x)
            fvus.append(fvu)
            auxs.append(aux)
            if bar is not None:
                bar.update(x.shape[0])
                bar.set_postfix(fvu=f"{fvu:.3f}", dead=int((trainer.since_fired >= trainer.dead_after).sum()))
        return True

    chunks, n = [], 0
    going = True
    try:
        for _ in range(epochs):
            for batch in _batches(data, tokenizer, batch_size, max_length):
                rows = _rows(model, site, batch, drop_first_token).to(device)
                chunks.append(rows)
                n += rows.shape[0]
                if n >= buffer_tokens:
                    going = train_on(torch.cat(chunks))
                    chunks, n = [], 0
                    if not going:
                        break
            if not going:
                break
        if going and chunks:
            train_on(torch.cat(chunks))
    finally:
        if bar is not None:
            bar.close()
    if trainer is None or trainer.tokens == 0:
        raise ValueError("train_topk_sae: no activations to train on (empty data?)")

    # fold the input scale: pre is unchanged, reconstructions come back in raw units
    model_name = getattr(getattr(model, "config", None), "_name_or_path", None) or \
        getattr(getattr(model, "config", None), "model_type", None)
    sae = SAE.from_weights((trainer.W_enc * scale).detach(), trainer.b_enc.detach(), (trainer.W_dec / scale).detach(),
                           (trainer.b_dec / scale).detach(), activation="topk", k=k, site=site,
                           metadata={"model_name": model_name, "context_size": max_length})
    sae.eval().requires_grad_(False)
    freq = (trainer.fired.float() / trainer.tokens).cpu()
    dead = int((trainer.since_fired >= dead_after_tokens).sum())
    tail = fvus[-max(1, len(fvus) // 10):]
    stats = {"tokens": trainer.tokens, "steps": len(fvus), "fvu": fvus, "auxk": auxs,
             "final_fvu": sum(tail) / len(tail), "l0": float(freq.sum()), "dead": dead, "dead_fraction": dead / F,
             "never_fired": int((trainer.fired == 0).sum()), "feature_frequency": freq, "input_scale": scale,
             "lr": lr, "dead_after_tokens": dead_after_tokens}
    if save_to is not None:
        _save(sae, stats, save_to)
    return sae, stats


def _save(sae: SAE, stats: Dict[str, Any], path: str) -> None:
    from safetensors.torch import save_file

    out = save_saelens(sae, path, extra={"training_tokens": stats["tokens"]})
    save_file({"sparsity": torch.log10(stats["feature_frequency"] + 1e-10).contiguous()}, str(Path(out) / "sparsity.safetensors"))
    summary = {k: v for k, v in stats.items() if k not in ("fvu", "auxk", "feature_frequency")}
    summary["fvu_first"], summary["fvu_last"] = stats["fvu"][0], stats["fvu"][-1]
    with open(Path(out) / "steerkit_training.json", "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)


def tiny_model(d: int = 64, layers: int = 4, vocab: int = 256, seed: int = 0):
    """A small random Llama built from a transformers config (for trying the pipeline out)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(vocab_size=vocab, hidden_size=d, intermediate_size=2 * d, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cfg).eval()


def run_cli(model: Optional[str], site: str, out: str, texts: Optional[str], n_features: Optional[int], k: int,
            tokens: int, seq_len: int, batch_size: int, device: Optional[str], seed: int) -> Dict[str, Any]:
    """``steerkit sae-train``: train on a local model (``model``, a folder or Hub id already in the
    cache) over the lines of ``texts``, or on a tiny random Llama over random tokens."""
    if model is None:
        lm, tok = tiny_model(seed=seed), None
        g = torch.Generator().manual_seed(seed)
        n_seq = max(1, -(-tokens // seq_len))
        data = torch.randint(3, lm.config.vocab_size, (n_seq, seq_len), generator=g)
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        lm = AutoModelForCausalLM.from_pretrained(model).eval()
        tok = AutoTokenizer.from_pretrained(model)
        if texts is None:
            raise ValueError("steerkit sae-train: --texts FILE (one text per line) is needed with --model")
        with open(texts, "r", encoding="utf-8") as f:
            data = [line.strip() for line in f if line.strip()]
    if device:
        lm = lm.to(device)
    sae, stats = train_topk_sae(lm, site, data, tokenizer=tok, n_features=n_features, k=k, batch_size=batch_size,
                                max_length=seq_len, max_tokens=tokens, seed=seed, save_to=out)
    print(f"trained {sae} on {stats['tokens']} tokens: FVU {stats['fvu'][0]:.3f} -> {stats['final_fvu']:.3f}, "
          f"dead features {stats['dead']} ({stats['dead_fraction']:.1%}), never fired {stats['never_fired']}; "
          f"saved to {out} (SAELens layout)")
    return stats
