// steerkit_cuda::project_out: for k = 0..r-1 in order, with u_k^ = u_k / ||u_k||:
//   y = y - (y . u_k^ - value_k) * u_k^        (y starts as the row of x, in fp32)
//
// Floor: reads T*d and writes T*d elements of x's dtype (the r directions are re-read per row
// from L1/L2); at [16384, 4096] bf16: 268 MB -> 90 us at 2.98 TB/s (H100 copy rate). Each
// direction costs one group reduction of (y . u_k, u_k . u_k): warp shuffles, plus one barrier
// when a row spans several warps. Measured (H100, bf16, r = 4): ~157 us, 57% of the floor: the r
// dependent reductions per row, not HBM, are the limit.
// Launch: one row group per row as in plan_rows (common.cuh), grid capped at the resident blocks
// (occupancy API, cached) and a grid-stride loop over rows that prefetches the next row's x (raw
// 16-byte words) while the current one is reduced. Row in registers when it fits the tile (four
// 16-byte chunks a thread, eight for fp32; 512 threads at most: d <= 16384); wider rows take the
// multi-pass path: for each k the row is re-read (L2) and the earlier directions re-applied on
// the fly, so the arithmetic per element is that of the register path; the coefficients live in
// dynamic shared memory (2 * r floats).
#include "common.cuh"
#include "ops.h"

namespace steerkit {
namespace {

template <typename T, typename P, int VEC, int ITEMS>
__global__ void __launch_bounds__(kMaxThreadsPerRow)
project_out_kernel(const T* x, T* out, int64_t sx, int64_t so, const P* u, int64_t su, int r,
                   const float* value, float value0, int64_t rows, int nchunks, int tpr) {
  __shared__ float red[2 * 2 * 32];
  int phase = 0;
  const RowSlot slot = row_slot(tpr);
  const int64_t stride = row_groups(tpr);

  if (nchunks <= tpr * ITEMS) {
    // ---- register path, grid-stride over rows; the next row's x is prefetched (raw) while the
    // current one goes through its r reductions.
    using Raw = RawChunk<T, VEC>;
    Raw nxt[ITEMS];
    int64_t row = slot.row;
    if (row < rows) {
#pragma unroll
      for (int j = 0; j < ITEMS; ++j) {
        const int c = slot.lane + j * tpr;
        if (c < nchunks) nxt[j] = load_raw<T, VEC>(x + row * sx + static_cast<int64_t>(c) * VEC);
      }
    }
    for (; row < rows; row += stride) {
      float y[ITEMS][VEC];
#pragma unroll
      for (int j = 0; j < ITEMS; ++j) {
        const int c = slot.lane + j * tpr;
        if (c < nchunks) unpack_raw<T, VEC>(nxt[j], y[j]);
        else {
#pragma unroll
          for (int e = 0; e < VEC; ++e) y[j][e] = 0.f;
        }
      }
      const int64_t next = row + stride;
      if (next < rows) {
#pragma unroll
        for (int j = 0; j < ITEMS; ++j) {
          const int c = slot.lane + j * tpr;
          if (c < nchunks) nxt[j] = load_raw<T, VEC>(x + next * sx + static_cast<int64_t>(c) * VEC);
        }
      }
      for (int k = 0; k < r; ++k) {
        const P* uk = u + k * su;
        float w[ITEMS][VEC];
        float acc[2] = {0.f, 0.f};  // y . u_k, u_k . u_k
#pragma unroll
        for (int j = 0; j < ITEMS; ++j) {
          const int c = slot.lane + j * tpr;
          if (c < nchunks) {
            load_chunk<P, VEC, false>(uk + static_cast<int64_t>(c) * VEC, w[j]);
#pragma unroll
            for (int e = 0; e < VEC; ++e) {
              acc[0] += y[j][e] * w[j][e];
              acc[1] += w[j][e] * w[j][e];
            }
          }
        }
        group_sum<2>(acc, tpr, red, phase);
        const float inv = 1.0f / sqrtf(acc[1]);
        const float coef = acc[0] * inv - (value ? value[k] : value0);
#pragma unroll
        for (int j = 0; j < ITEMS; ++j) {
          const int c = slot.lane + j * tpr;
          if (c < nchunks) {
#pragma unroll
            for (int e = 0; e < VEC; ++e) y[j][e] -= coef * (w[j][e] * inv);
          }
        }
      }
      T* orow = out + row * so;
#pragma unroll
      for (int j = 0; j < ITEMS; ++j) {
        const int c = slot.lane + j * tpr;
        if (c < nchunks) store_chunk<T, VEC>(orow + static_cast<int64_t>(c) * VEC, y[j]);
      }
    }
    return;
  }

  // ---- multi-pass path (one row group per block, tpr == blockDim.x): coef[k], inv[k] in smem.
  extern __shared__ float dyn_smem[];
  float* coefs = dyn_smem;
  float* invs = dyn_smem + r;
  for (int64_t row = slot.row; row < rows; row += stride) {
    const T* xr = x + row * sx;
    T* orow = out + row * so;
    for (int k = 0; k <= r; ++k) {  // pass k < r: coefficient k; pass r: store
      const P* uk = u + k * su;
      float acc[2] = {0.f, 0.f};
      for (int c = slot.lane; c < nchunks; c += tpr) {
        float y[VEC];
        load_chunk<T, VEC, true>(xr + static_cast<int64_t>(c) * VEC, y);
        for (int j = 0; j < k; ++j) {
          float w[VEC];
          load_chunk<P, VEC, false>(u + j * su + static_cast<int64_t>(c) * VEC, w);
          const float cj = coefs[j], ij = invs[j];
#pragma unroll
          for (int e = 0; e < VEC; ++e) y[e] -= cj * (w[e] * ij);
        }
        if (k == r) {
          store_chunk<T, VEC>(orow + static_cast<int64_t>(c) * VEC, y);
        } else {
          float w[VEC];
          load_chunk<P, VEC, false>(uk + static_cast<int64_t>(c) * VEC, w);
#pragma unroll
          for (int e = 0; e < VEC; ++e) {
            acc[0] += y[e] * w[e];
            acc[1] += w[e] * w[e];
          }
        }
      }
      if (k == r) break;
      group_sum<2>(acc, tpr, red, phase);
      if (threadIdx.x == 0) {
        const float inv = 1.0f / sqrtf(acc[1]);
        invs[k] = inv;
        coefs[k] = acc[0] * inv - (value ? value[k] : value0);
      }
      __syncthreads();  // coefs[k] visible to the whole block
    }
    __syncthreads();  // the next row overwrites coefs
  }
}

}  // namespace

void project_out_cuda(const at::Tensor& x, at::Tensor& out, const at::Tensor& u_in,
                      const std::optional<at::Tensor>& value, double value0) {
  constexpr const char* op = "steerkit_cuda::project_out";
  check_rows(x, out, op);
  const at::Tensor u = u_in.dim() == 1 ? u_in.unsqueeze(0) : u_in;  // view, no copy
  check_param(u, x, 2, op, "u");
  const int64_t T = x.size(0), d = x.size(1);
  const int64_t r = u.size(0);
  TORCH_CHECK(r >= 1 && r <= (1 << 20), op, ": u must have 1 to 2^20 directions, got ", r);
  const float* vp = opt_f32(value, r, x, op, "value");
  if (T == 0 || d == 0) return;
  c10::cuda::CUDAGuard guard(x.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  dispatch_dtype_param(x.scalar_type(), u.scalar_type(), op, [&](auto t, auto p) {
    using T_ = decltype(t);
    using P_ = decltype(p);
    const int vw = vec_width(x.scalar_type());
    const bool vec = d % vw == 0 && vec_ok(x, vw) && vec_ok(out, vw) && vec_ok(u, vw);
    const T_* xp = static_cast<const T_*>(x.data_ptr());
    T_* outp = static_cast<T_*>(out.data_ptr());
    const P_* up = static_cast<const P_*>(u.data_ptr());
    auto run = [&](auto vec_tag, auto items_tag) {
      constexpr int V = decltype(vec_tag)::value;
      constexpr int I = decltype(items_tag)::value;
      constexpr auto kernel = project_out_kernel<T_, P_, V, I>;
      const RowPlan pl = plan_rows(T, d, V, I);
      size_t smem = 0;
      if (!pl.in_regs) {
        smem = 2 * static_cast<size_t>(r) * sizeof(float);
        TORCH_CHECK(smem <= 48 * 1024, op, ": d = ", d, " with r = ", r,
                    " directions is too large (multi-pass path keeps 2 * r floats in shared memory)");
      }
      const int64_t blocks = resident_blocks<kernel>(pl.threads, smem, pl.blocks);
      kernel<<<static_cast<unsigned int>(blocks), pl.threads, smem, stream>>>(
          xp, outp, x.stride(0), out.stride(0), up, u.stride(0), static_cast<int>(r), vp,
          static_cast<float>(value0), T, pl.nchunks, pl.tpr);
    };
    with_row_tile<T_>(vec, T, d, run);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace steerkit
