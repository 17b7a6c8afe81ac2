// The one place where the steerkit_cuda op schemas are defined and bound to their CUDA launchers
// (csrc/<op>.cu). `out` is marked mutable (a!); it may be the same tensor as x (in place).
// Built either JIT as `steerkit_cuda` or ahead of time as `steerkit._C`: the Python module init
// below makes `import steerkit._C` work; importing or loading the library registers the ops.
#include <Python.h>

#include <torch/library.h>

#include "ops.h"

TORCH_LIBRARY(steerkit_cuda, m) {
  m.def("scale(Tensor x, Tensor(a!) out, Tensor? s, float s0) -> ()");
  m.def("add(Tensor x, Tensor(a!) out, Tensor v, Tensor? alpha, float alpha0) -> ()");
  m.def("project_out(Tensor x, Tensor(a!) out, Tensor u, Tensor? value, float value0) -> ()");
  m.def("add_gathered(Tensor x, Tensor(a!) out, Tensor bank, Tensor index, Tensor? alpha, "
        "float alpha0) -> ()");
  m.def("patch(Tensor x, Tensor(a!) out, Tensor src, Tensor index, Tensor? weight, "
        "float weight0) -> ()");
  m.def("steer(Tensor x, Tensor(a!) out, Tensor config, Tensor scale, Tensor flags, Tensor dyn_w, "
        "Tensor dyn_b, Tensor dirs, Tensor dir_val, Tensor n_dirs, Tensor vec, "
        "Tensor strength) -> ()");
  m.def("sae_encode_topk_select(Tensor chunk, Tensor(a!) run, Tensor(b!) values, "
        "Tensor(c!) indices, int f0, int k, bool first, bool last) -> ()");
  m.def("sae_encode_topk_chunks(Tensor xs, Tensor W, Tensor b, Tensor(a!) P, Tensor(b!) run, "
        "Tensor(c!) values, Tensor(d!) indices, int k, int fc) -> ()");
  m.def("sae_steer(Tensor x, Tensor(a!) out, Tensor config, Tensor n_feat, Tensor kind, "
        "Tensor value, Tensor enc, Tensor b_eff, Tensor thr, Tensor dec) -> ()");
}

TORCH_LIBRARY_IMPL(steerkit_cuda, CUDA, m) {
  m.impl("scale", &steerkit::scale_cuda);
  m.impl("add", &steerkit::add_cuda);
  m.impl("project_out", &steerkit::project_out_cuda);
  m.impl("add_gathered", &steerkit::add_gathered_cuda);
  m.impl("patch", &steerkit::patch_cuda);
  m.impl("steer", &steerkit::steer_cuda);
  m.impl("sae_encode_topk_select", &steerkit::sae_encode_topk_select_cuda);
  m.impl("sae_encode_topk_chunks", &steerkit::sae_encode_topk_chunks_cuda);
  m.impl("sae_steer", &steerkit::sae_steer_cuda);
}

// Python module init, named after the build target (`_C` ahead of time, `steerkit_cuda` JIT).
#ifndef TORCH_EXTENSION_NAME
#define TORCH_EXTENSION_NAME steerkit_cuda
#endif
#define STEERKIT_CAT_(a, b) a##b
#define STEERKIT_CAT(a, b) STEERKIT_CAT_(a, b)
#define STEERKIT_STR_(a) #a
#define STEERKIT_STR(a) STEERKIT_STR_(a)

PyMODINIT_FUNC STEERKIT_CAT(PyInit_, TORCH_EXTENSION_NAME)(void) {
  static PyModuleDef def = {PyModuleDef_HEAD_INIT, STEERKIT_STR(TORCH_EXTENSION_NAME),
                            "steerkit CUDA ops (registered under torch.ops.steerkit_cuda)", -1,
                            nullptr};
  return PyModule_Create(&def);
}
