"""Command line: ``steerkit demo`` (the main job), ``steerkit bench`` (the op benchmark),
``steerkit bench-compile`` and ``steerkit info`` (backends here)."""
from __future__ import annotations

import argparse
import os
import sys


def _ints(s: str):
    return [int(x) for x in s.split(",") if x]


def _names(s: str):
    return [x for x in s.split(",") if x]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="steerkit", description="steerkit: fused activation-steering kernels")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench", help="benchmark every op on every backend available here")
    b.add_argument("--ops", type=_names, default=None, help="comma-separated ops (default: all)")
    b.add_argument("--T", type=_ints, default=None, help="rows, comma-separated (default 1,64,4096,16384 on a GPU, 1,64,4096 on a CPU)")
    b.add_argument("--d", type=_ints, default=None, help="widths, comma-separated (default 2304,4096)")
    b.add_argument("--dtypes", type=_names, default=None, help="bf16,fp16,fp32 (default bf16,fp16)")
    b.add_argument("--backends", type=_names, default=None, help="torch,triton,cuda (default: all available)")
    b.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 5 on a GPU, 3 on a CPU)")
    b.add_argument("--quick", action="store_true", help="small sizes only (T 1,64,4096; d 2304; bf16)")
    b.add_argument("--out", default=None, help="folder for the JSONL rows (default: none; the repo's "
                                                 "benchmarks/results when run from a checkout on a GPU)")
    c = sub.add_parser("bench-compile", help="GPU: steering under torch.compile against plain PyTorch")
    c.add_argument("--T", type=_ints, default=None, help="rows (default 1,64,4096,16384)")
    c.add_argument("--backends", type=_names, default=None, help="opaque backends to compare (default triton)")
    c.add_argument("--rounds", type=int, default=5)
    c.add_argument("--out", default=None, help="folder for the JSONL rows")
    m = sub.add_parser("bench-model", help="steering overhead on Llama-shaped models: decode and prefill, "
                                           "eager and compiled, against unsteered and plain hooks")
    m.add_argument("--shape", default="llama-3.2-1b", help="llama-3.2-1b, llama-3.1-8b or tiny")
    m.add_argument("--batches", type=_ints, default=(1, 16, 64, 256), help="decode batch sizes (default 1,16,64,256)")
    m.add_argument("--modes", type=_names, default=("eager", "compiled"), help="eager,compiled")
    m.add_argument("--phases", type=_names, default=("decode", "prefill"), help="decode,prefill")
    m.add_argument("--kinds", type=_names, default=None, help="steerkit kinds: add,scale,ablate,dynamic,mix (default all)")
    m.add_argument("--hook-kinds", type=_names, default=None, help="plain-hook kinds (default all; 'none' for none)")
    m.add_argument("--assigns", type=_names, default=("shared", "distinct"), help="shared,distinct")
    m.add_argument("--steps", type=int, default=16, help="decode steps per measurement")
    m.add_argument("--rounds", type=int, default=3)
    m.add_argument("--prompt", type=int, default=128, help="prompt length before decoding")
    m.add_argument("--prefill-batch", type=int, default=16)
    m.add_argument("--prefill-len", type=int, default=2048)
    m.add_argument("--deadline", type=float, default=None, help="stop starting new sizes after this many seconds")
    m.add_argument("--dynamic", action="store_true", help="compile with dynamic shapes (one graph for all sizes)")
    m.add_argument("--backend", default=None, choices=("torch", "triton", "cuda"),
                   help="steerkit's eager backend (default automatic; cuda builds the extension first)")
    m.add_argument("--strength", type=float, default=1.0,
                   help="factor on the added vectors (0: the same work with the activations unchanged)")
    m.add_argument("--pair", default="round", choices=("round", "adjacent", "step"),
                   help="pair each sample with the round's unsteered sample, or with one measured right "
                        "before it (adjacent: twice the time, steadier on a drifting host); step: eager "
                        "decode samples are single steps, each right after an unsteered one (steadiest)")
    m.add_argument("--no-reheat", action="store_true",
                   help="no untimed unsteered sample at the start of each round (its purpose: the GPU's "
                        "clock after the round's garbage collection favours the round's first sample)")
    m.add_argument("--out", default=None, help="folder for the JSONL rows")
    dm = sub.add_parser("demo", help="steer a small real model (Gemma 3 270M) and show the difference")
    dm.add_argument("--layer", type=int, default=None, help="block whose output is steered (default: a third deep)")
    dm.add_argument("--strength", type=float, default=None,
                    help="steering strength in units of the typical residual norm (default 0.2)")
    dm.add_argument("--max-new-tokens", type=int, default=40)
    dm.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    g = sub.add_parser("bench-generate", help="end-to-end steered generation: the engine against transformers' "
                                              "compiled and eager generate and peers (tokens/s, latency)")
    g.add_argument("--shapes", type=_names, default=None, help="llama-3.2-1b, llama-3.1-8b, tiny (default: the first two)")
    g.add_argument("--batches", type=_ints, default=None, help="batch sizes (default 1,16,64,256)")
    g.add_argument("--variants", type=_names, default=None,
                   help="patterns of path:steer, e.g. 'engine:*,hf-compiled:unsteered' (default: all, headline first)")
    g.add_argument("--prompt", type=int, default=128)
    g.add_argument("--new-tokens", type=int, default=128)
    g.add_argument("--rounds", type=int, default=2)
    g.add_argument("--deadline", type=float, default=None, help="seconds; no new measurement starts after it")
    g.add_argument("--specialise", action="store_true",
                   help="an engine compiled for each steering kind (default: one engine built for every kind)")
    g.add_argument("--out", default="benchmarks/results", help="folder for the jsonl rows ('' for none)")
    g.add_argument("--plot", default=None, help="also plot tokens/s against batch size to this file (.png or .svg)")
    g.add_argument("--plot-from", type=_names, default=None, help="only plot: these jsonl files (comma-separated)")
    sub.add_parser("info", help="versions, devices and each backend's verdict")
    st = sub.add_parser("sae-train", help="train a TopK SAE on a model's activations (default: a tiny random Llama)")
    st.add_argument("--model", default=None, help="local transformers model folder (default: tiny random Llama)")
    st.add_argument("--texts", default=None, help="text file, one training text per line (needed with --model)")
    st.add_argument("--site", default="resid_post.1", help="site to read, e.g. resid_post.6 (default resid_post.1)")
    st.add_argument("--features", type=int, default=None, help="number of features (default 8 x width)")
    st.add_argument("--k", type=int, default=16, help="active features per token (default 16)")
    st.add_argument("--tokens", type=int, default=200_000, help="training tokens (default 200000)")
    st.add_argument("--seq-len", type=int, default=128)
    st.add_argument("--batch-size", type=int, default=8, help="sequences per captured batch")
    st.add_argument("--device", default=None)
    st.add_argument("--seed", type=int, default=0)
    st.add_argument("--out", default="sae-out", help="folder for the SAE (SAELens layout; default sae-out)")
    args = p.parse_args(argv)

    import torch

    if args.cmd == "info":
        from steerkit import __version__, ops

        print(f"steerkit {__version__}, torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")
        dev = "cuda" if torch.cuda.is_available() else "cpu"
        h = torch.zeros(1, 4096, device=dev, dtype=torch.bfloat16)
        for op in ("scale", "add", "project_out", "add_gathered", "patch", "steer"):
            print(f"  {op:<13}" + "  ".join(f"{k}: {v}" for k, v in ops.explain(op, h).items()))
        return 0

    if args.cmd == "sae-train":
        from steerkit.sae.train import run_cli

        run_cli(model=args.model, site=args.site, out=args.out, texts=args.texts, n_features=args.features, k=args.k,
                tokens=args.tokens, seq_len=args.seq_len, batch_size=args.batch_size, device=args.device,
                seed=args.seed)
        return 0

    if args.cmd == "demo":
        from steerkit.demo import main as demo_main

        return demo_main(layer=args.layer, strength=args.strength, max_new_tokens=args.max_new_tokens,
                         device=args.device)

    from steerkit import bench

    if args.cmd == "bench-generate":
        from steerkit.bench import generate_bench as gb

        if args.plot_from:
            print(f"# plot: {gb.plot(gb.load_rows(args.plot_from), args.plot or 'generate.png')}")
            return 0
        kw = {k: v for k, v in dict(shapes=args.shapes, batches=args.batches, variants=args.variants).items() if v}
        bad = [s for s in kw.get("shapes", []) if s not in gb.SHAPES]
        if bad:
            p.error(f"unknown shapes {bad}; choose from {sorted(gb.SHAPES)}")
        rows = gb.run_and_write(out_dir=args.out or None, prompt=args.prompt, new_tokens=args.new_tokens,
                                rounds=args.rounds, deadline_s=args.deadline, specialise=args.specialise, **kw)
        if args.plot and rows:
            print(f"# plot: {gb.plot(rows, args.plot)}")
        return 0

    if args.cmd == "bench-model":
        from steerkit.bench import model_bench

        kw = dict(shape=args.shape, batches=args.batches, modes=args.modes, phases=args.phases,
                  assigns=args.assigns, steps=args.steps, rounds=args.rounds, prompt=args.prompt,
                  prefill_batch=args.prefill_batch, prefill_len=args.prefill_len, deadline_s=args.deadline,
                  dynamic=True if args.dynamic else None, backend=args.backend, strength=args.strength,
                  pair=args.pair, reheat=not args.no_reheat)
        if args.kinds:
            kw["kinds"] = [] if args.kinds == ["none"] else args.kinds
        if args.hook_kinds:
            kw["hook_kinds"] = [] if args.hook_kinds == ["none"] else args.hook_kinds
        bad = {k for k in list(kw.get("kinds", [])) + list(kw.get("hook_kinds", [])) if k not in model_bench.KINDS}
        if bad or args.shape not in model_bench.SHAPES:
            p.error(f"unknown kinds {sorted(bad)} or shape {args.shape!r}; kinds {model_bench.KINDS}, "
                    f"shapes {sorted(model_bench.SHAPES)}")
        bench.run_model(out_dir=args.out, **kw)
        return 0

    if args.cmd == "bench-compile":
        if not torch.cuda.is_available():
            p.error("bench-compile needs a CUDA GPU")
        kw = {"rounds": args.rounds}
        if args.T:
            kw["Ts"] = args.T
        if args.backends:
            kw["backends"] = args.backends
        bench.run_compile(out_dir=args.out, **kw)
        return 0

    gpu = torch.cuda.is_available()
    kw = {}
    if args.quick:
        kw.update(Ts=(1, 64, 4096), ds=(2304,), dtypes=("bf16",))
    if args.ops:
        unknown = set(args.ops) - set(bench.ALL_OPS)
        if unknown:
            p.error(f"unknown ops {sorted(unknown)}; choose from {bench.ALL_OPS}")
        kw["ops"] = args.ops
    if args.T:
        kw["Ts"] = args.T
    if args.d:
        kw["ds"] = args.d
    if args.dtypes:
        kw["dtypes"] = args.dtypes
    if args.backends:
        kw["backends"] = args.backends
    if not gpu and not args.T:  # the CPU reference at T = 16384 takes seconds per call
        kw.setdefault("Ts", (1, 64, 4096))
    kw["rounds"] = args.rounds or (5 if gpu else 3)
    out = args.out
    if out is None and gpu:
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        if os.path.isdir(os.path.join(repo, "benchmarks", "results")):
            out = os.path.join(repo, "benchmarks", "results")
    bench.run(out_dir=out, **kw)
    return 0


if __name__ == "__main__":
    sys.exit(main())
