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
