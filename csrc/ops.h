// Host launchers of the steerkit CUDA ops (one per csrc/<op>.cu). Their schemas are registered
// once, in registry.cpp. `out` may be the same tensor as `x` (in place). They only check metadata
// (never read tensor values on the host), allocate nothing and launch one kernel on the current
// stream, so they can be captured in a CUDA graph.
#pragma once

#include <optional>

#include <ATen/core/Tensor.h>

namespace steerkit {

void scale_cuda(const at::Tensor& x, at::Tensor& out, const std::optional<at::Tensor>& s, double s0);

void add_cuda(const at::Tensor& x, at::Tensor& out, const at::Tensor& v,
              const std::optional<at::Tensor>& alpha, double alpha0);

void project_out_cuda(const at::Tensor& x, at::Tensor& out, const at::Tensor& u,
                      const std::optional<at::Tensor>& value, double value0);

void add_gathered_cuda(const at::Tensor& x, at::Tensor& out, const at::Tensor& bank,
                       const at::Tensor& index, const std::optional<at::Tensor>& alpha,
                       double alpha0);

void patch_cuda(const at::Tensor& x, at::Tensor& out, const at::Tensor& src,
                const at::Tensor& index, const std::optional<at::Tensor>& weight, double weight0);

void steer_cuda(const at::Tensor& x, at::Tensor& out, const at::Tensor& config,
                const at::Tensor& scale, const at::Tensor& flags, const at::Tensor& dyn_w,
                const at::Tensor& dyn_b, const at::Tensor& dirs, const at::Tensor& dir_val,
                const at::Tensor& n_dirs, const at::Tensor& vec, const at::Tensor& strength);

// The selection step of sae_encode_topk's GEMM path: one chunk of 16-bit pre-activations merged
// into the running top-KW lists `run`; `last` writes values and indices instead.
void sae_encode_topk_select_cuda(const at::Tensor& chunk, at::Tensor& run, at::Tensor& values,
                                 at::Tensor& indices, int64_t f0, int64_t k, bool first,
                                 bool last);

// Every feature chunk (fc wide) of one block of rows xs: the product into P, then the selection.
void sae_encode_topk_chunks_cuda(const at::Tensor& xs, const at::Tensor& W, const at::Tensor& b,
                                 at::Tensor& P, at::Tensor& run, at::Tensor& values,
                                 at::Tensor& indices, int64_t k, int64_t fc);

// Decode-sized batches: one CTA per row (16-bit rows of d = 2304 or 4096, 1 to 8 slots).
void sae_steer_cuda(const at::Tensor& x, at::Tensor& out, const at::Tensor& config,
                    const at::Tensor& n_feat, const at::Tensor& kind, const at::Tensor& value,
                    const at::Tensor& enc, const at::Tensor& b_eff, const at::Tensor& thr,
                    const at::Tensor& dec);

}  // namespace steerkit
