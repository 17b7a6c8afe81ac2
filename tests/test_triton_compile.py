"""Every Triton kernel compiles for Hopper (sm_90) and Ampere (sm_80) without a GPU.

The interpreter that runs the kernels in CI does not type-check like the compiler does, so this
catches GPU-only compile errors on a CPU machine. It runs in a subprocess because the interpreter
patches triton.language in the test process.
"""
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import importlib, sys
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from steerkit.kernels._launch import elementwise_config, row_config, row_loop_config

    INDEX = {"cfg_ptr", "idx_ptr", "flags_ptr", "n_dirs_ptr"}
    F32 = {"s_ptr", "a_ptr", "w_ptr", "val_ptr", "scale_ptr", "dyn_b_ptr", "dir_val_ptr", "strength_ptr"}
    KERNELS = {"scale": "elementwise", "add": "elementwise", "add_gathered": "elementwise",
               "patch": "elementwise", "project_out": "row", "steer": "loop"}
    CONFIGS = {"elementwise": elementwise_config, "row": row_config, "loop": row_loop_config}
    failures = 0
    for name, kind in KERNELS.items():
        kernel = getattr(importlib.import_module("steerkit.kernels." + name), "_" + name + "_kernel")
        for dtype in ("bf16", "fp16", "fp32"):
            for d in (2304, 4096):
                bt, bd, warps = CONFIGS[kind](4096, d)
                sig, consts = {}, {}
                for i, arg in enumerate(kernel.arg_names):
                    if i in kernel.constexprs:
                        sig[arg] = "constexpr"
                        consts[arg] = {"BLOCK_T": bt, "ROWS": bt, "BLOCK_D": bd}.get(arg, True)
                    elif arg.endswith("_ptr"):
                        sig[arg] = "*i32" if arg in INDEX else "*fp32" if arg in F32 else "*" + dtype
                    elif arg.endswith("0"):
                        sig[arg] = "fp32"
                    else:
                        sig[arg] = "i32"
                for cc in (90, 80):
                    try:
                        triton.compile(ASTSource(fn=kernel, signature=sig, constexprs=consts),
                                       target=GPUTarget("cuda", cc, 32), options={"num_warps": warps})
                    except Exception as e:
                        failures += 1
                        print(f"FAILED {name} {dtype} d={d} sm_{cc}: {type(e).__name__}: {e}")
    print("compiled", "with", failures, "failures")
    sys.exit(1 if failures else 0)
""")


def test_triton_kernels_compile_for_gpu_targets():
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]


# The SAE kernels have many launch shapes; their launchers pick them. Run every launcher on CPU
# tensors with the launch replaced by a recorder, then compile each recorded (kernel, signature,
# constants, warps) for sm_90 in every dtype: the GPU configurations (not the interpreter's) of
# sae_decode, sae_steer (both kernel shapes, every sweep entry), both TopK paths, JumpReLU and
# selected encode.
SAE_SCRIPT = 'import os, sys\nos.environ.pop("TRITON_INTERPRET", None)\nimport torch, triton\nfrom triton.runtime.jit import JITFunction\nfrom triton.backends.compiler import GPUTarget\nfrom triton.compiler import ASTSource\nimport importlib\ncalls = []\ndef fake_run(self, *args, grid, warmup, **kwargs):\n    calls.append((self, args, kwargs))\nJITFunction.run = fake_run\nKD = importlib.import_module("steerkit.kernels.sae_decode")\nKS = importlib.import_module("steerkit.kernels.sae_steer")\nfrom steerkit.steering.sae_table import SaeSteeringTable\nDT = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32", torch.int32: "i32", torch.int64: "i64"}\ndef sig_of(fn, args, kwargs):\n    sig, consts = {}, {}\n    names = fn.arg_names\n    vals = list(args) + [kwargs.get(n) for n in names[len(args):]]\n    for i, (n, v) in enumerate(zip(names, vals)):\n        if i in fn.constexprs:\n            sig[n] = "constexpr"; consts[n] = v\n        elif isinstance(v, torch.Tensor):\n            sig[n] = "*" + DT[v.dtype]\n        elif type(v).__name__ == "TensorDescriptor":\n            sig[n] = "tensordesc<%s[%s]>" % (DT[v.base.dtype], ", ".join(map(str, v.block_shape)))\n        elif isinstance(v, bool):\n            sig[n] = "i1"\n        elif isinstance(v, int):\n            sig[n] = "i32" if abs(v) < 2**31 else "i64"\n        elif isinstance(v, float):\n            sig[n] = "fp32"\n        else:\n            raise TypeError(f"{n}: {type(v)}")\n    return sig, consts\nfails = 0\nfor dtype in (torch.bfloat16, torch.float16, torch.float32):\n    for T in (1, 16, 4096):\n        d, F, k = 4096, 1024, 64\n        W = torch.randn(F, d, dtype=dtype); vals = torch.randn(T, k, dtype=dtype); idx = torch.randint(0, F, (T, k))\n        out = torch.empty(T, d, dtype=dtype)\n        cfgs = [None] + (KD.SWEEP if T == 4096 else [])\n        for c in cfgs:\n            KD.sae_decode(vals, idx, W, torch.randn(d, dtype=dtype), out, cfg=c)\n        W_enc = torch.randn(d, F, dtype=dtype)\n        table = SaeSteeringTable(W_enc, torch.randn(F), W.clone(), torch.randn(d), None, activation="relu", capacity=4, dtype=dtype)\n        x = torch.randn(T, d, dtype=dtype); cfgt = torch.zeros(T, dtype=torch.int32)\n        for c in [None] + (KS.SWEEP if T == 4096 else KS.SWEEP_SMALL):\n            KS.sae_steer(x, x, cfgt, *[t.contiguous() for t in table.tensors()], cfg=c)\nKT = importlib.import_module("steerkit.kernels.sae_encode_topk")\nKJ = importlib.import_module("steerkit.kernels.sae_encode_jumprelu")\nKSel = importlib.import_module("steerkit.kernels.sae_encode_selected")\nfor dtype in (torch.bfloat16, torch.float16, torch.float32):\n    T, d, F, k = 256, 256, 4096, 64\n    x = torch.randn(T, d, dtype=dtype); W_enc = torch.randn(d, F, dtype=dtype); b_enc = torch.randn(F); b_dec = torch.randn(d)\n    v = torch.empty(T, k, dtype=dtype); i = torch.empty(T, k, dtype=torch.int64)\n    for path in ("running", "candidates", "gemm"):\n        try:\n            KT.sae_encode_topk(x, W_enc, b_enc, b_dec, k, v, i, path=path)\n        except Exception as e:  # the fake launches leave garbage that later host code may trip on\n            print("launcher", path, type(e).__name__, str(e)[:120])\n    for c in KT.SWEEP:\n        try:\n            KT.sae_encode_topk(x, W_enc, b_enc, b_dec, k, v, i, tiles=c)\n        except Exception as e:\n            print("launcher tiles", c, type(e).__name__, str(e)[:120])\n    KT.matmul_only(x, W_enc, b_enc)\n    cnt = torch.empty(T, dtype=torch.int32); ovf = torch.empty(T, dtype=torch.int32)\n    try:\n        KJ.sae_encode_jumprelu(x, W_enc, b_enc, b_dec, torch.rand(F), k, v, i, cnt, ovf)\n    except Exception as e:\n        print("launcher jumprelu", type(e).__name__, str(e)[:120])\n    feats = torch.randint(0, F, (8,))\n    for act in (0, 1, 2):\n        KSel.sae_encode_selected(x, W_enc, b_enc, b_dec, torch.rand(F), feats, act, torch.empty(T, 8, dtype=dtype))\nprint(len(calls), "launches captured")\nseen = set()\nfor fn, args, kwargs in calls:\n    warps = kwargs.pop("num_warps", 4); kwargs.pop("num_stages", None)\n    sig, consts = sig_of(fn, args, kwargs)\n    key = (fn.fn.__name__, tuple(sorted(sig.items())), tuple(sorted((k, str(v)) for k, v in consts.items())), warps)\n    if key in seen: continue\n    seen.add(key)\n    try:\n        triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts), target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})\n    except Exception as e:\n        fails += 1\n        print("FAILED", fn.fn.__name__, consts, warps, type(e).__name__, str(e)[:400])\nnames = sorted({key[0] for key in seen})\nprint("kernels:", " ".join(names))\nprint("compiled", len(seen), "variants,", fails, "failures")\nsys.exit(1 if fails else 0)\n'

SAE_KERNELS = {"_decode_kernel", "_sae_steer_kernel", "_sae_steer_row_kernel", "_sae_steer_group_kernel", "_encode_kernel", "_merge_kernel",
               "_candidate_kernel", "_select_kernel", "_selected_kernel"}


def test_sae_kernels_compile_for_hopper_in_their_gpu_configurations():
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, "-c", SAE_SCRIPT], env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    compiled = set(next(l for l in res.stdout.splitlines() if l.startswith("kernels:")).split()[1:])
    assert SAE_KERNELS <= compiled, f"not compiled: {sorted(SAE_KERNELS - compiled)}"
