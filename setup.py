"""Build configuration.

- ``kernels/`` is installed as ``steerkit.kernels`` (normal and editable installs).
- The CUDA extension in ``csrc/`` is normally built on first use (JIT, ninja, cached; see
  ``steerkit/_cuda_ext.py``). Set ``STEERKIT_BUILD_CUDA=1`` at install time to build it ahead of
  time as ``steerkit._C`` (needs a CUDA toolkit and a CUDA build of torch; the target GPUs come
  from ``TORCH_CUDA_ARCH_LIST`` or the GPU at hand).
"""
import glob
import os

from setuptools import setup

packages = ["steerkit", "steerkit.kernels", "steerkit.ops", "steerkit.steering", "steerkit.integrations", "steerkit.methods", "steerkit.sae",
            "steerkit.bench", "steerkit._csrc"]
package_dir = {"steerkit": "steerkit", "steerkit.kernels": "kernels", "steerkit._csrc": "csrc"}
# The CUDA sources ship with every install (as steerkit/_csrc) so that the JIT build finds them.
package_data = {"steerkit._csrc": ["*.cu", "*.cuh", "*.cpp", "*.h"]}
ext_modules, cmdclass = [], {}

if os.environ.get("STEERKIT_BUILD_CUDA", "0") == "1":
    from torch.utils.cpp_extension import BuildExtension, CUDAExtension

    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/*.cu"))
    ext_modules.append(
        CUDAExtension(
            "steerkit._C",
            sources,
            extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3", "--use_fast_math", "-lineinfo"]},
        )
    )
    cmdclass["build_ext"] = BuildExtension

setup(
    packages=packages,
    package_dir=package_dir,
    package_data=package_data,
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
