// steerkit_cuda::steer: the fused per-row op on a SteeringTable (N configurations, R slots).
// Row t uses i = config[t]; rows with i <= 0 or i >= N are untouched (skipped when out is x,
// copied bit-exact otherwise). Otherwise, in fp32 with x the row:
//   a = scale[i] * ((flags[i] & 1) ? dyn_w[i] . x + dyn_b[i] : 1);   y = a * x
//   for k < clamp(n_dirs[i], 0, R):  y = y - (y . dirs[i, k] - dir_val[i, k]) * dirs[i, k]
//   if (flags[i] & 2):  y = y + strength[i] * vec[i]
//
// Floor: reads T*d and writes T*d elements of x's dtype; the table rows (dyn_w, dirs, vec: up to
// (R + 2) * d values per configuration) are re-read per row from L1/L2, not HBM. At
// [16384, 4096] bf16: 268 MB -> 90 us at 2.98 TB/s (H100 copy rate). Each dot product is one
// group reduction (warp shuffles, plus one barrier when a row spans several warps). Measured
// (H100, bf16, all flags, R = 4): ~173 us with one configuration, ~293 us with 256: the dependent
// reductions and table-row latency per row, not HBM, are the limit.
// Launch: as project_out: grid capped at the resident blocks, grid-stride loop over rows with the
// next row's x and the configuration of the row after it in flight (an untouched row's x is not
// loaded at all when out is x). Register tile: four 16-byte chunks a thread (eight for fp32
// rows wider than 8192), d <= 16384; wider rows take a multi-pass path that re-reads the row (L2)
// once per pass and re-applies the earlier directions on the fly (coefficients in R floats of
// dynamic shared memory). The configuration is read on the device only; the grid does not
// depend on it.
#include "common.cuh"
#include "ops.h"

namespace steerkit {
namespace {

constexpr int kFlagDynamic = 1;
constexpr int kFlagVector = 2;

__device__ __forceinline__ bool steered(int64_t i, int64_t n_cfg) { return i > 0 && i < n_cfg; }

template <typename T, typename P, int VEC, int ITEMS>
__global__ void __launch_bounds__(kMaxThreadsPerRow)
steer_kernel(const T* x, T* out, int64_t sx, int64_t so, const int32_t* config,
             const float* scale, const int32_t* flags, const P* dyn_w, const float* dyn_b,
             const P* dirs, const float* dir_val, const int32_t* n_dirs, const P* vecs,
             const float* strength, int64_t n_cfg, int R, int64_t d, bool inplace, int64_t rows,
             int nchunks, int tpr) {
  __shared__ float red[2 * 32];
  int phase = 0;
  const RowSlot slot = row_slot(tpr);
  const int64_t stride = row_groups(tpr);

  if (nchunks <= tpr * ITEMS) {
    // ---- register path, grid-stride over rows. Software pipeline: the configuration of the row
    // after next and the x of the next row are in flight while the current row is computed; an
    // untouched row's x is not even loaded when out is x.
    using Raw = RawChunk<T, VEC>;
    Raw nxt[ITEMS];
    int64_t row = slot.row;
    if (row >= rows) return;
    int64_t i_next = config[row];
    int64_t i_after = row + stride < rows ? config[row + stride] : 0;
    if (!inplace || steered(i_next, n_cfg)) {
#pragma unroll
      for (int j = 0; j < ITEMS; ++j) {
        const int c = slot.lane + j * tpr;
        if (c < nchunks) nxt[j] = load_raw<T, VEC>(x + row * sx + static_cast<int64_t>(c) * VEC);
      }
    }
    for (; row < rows; row += stride) {
      const int64_t i = i_next;
      Raw cur[ITEMS];
#pragma unroll
      for (int j = 0; j < ITEMS; ++j) cur[j] = nxt[j];
      // Prefetch: x of the next row (its configuration arrived one iteration ago), and the
      // configuration of the row after it.
      const int64_t next = row + stride;
      i_next = i_after;
      if (next < rows) {
        i_after = next + stride < rows ? config[next + stride] : 0;
        if (!inplace || steered(i_next, n_cfg)) {
#pragma unroll
          for (int j = 0; j < ITEMS; ++j) {
            const int c = slot.lane + j * tpr;
            if (c < nchunks) nxt[j] = load_raw<T, VEC>(x + next * sx + static_cast<int64_t>(c) * VEC);
          }
        }
      }
      T* orow = out + row * so;
      if (!steered(i, n_cfg)) {  // identity configuration or out of range: untouched
        if (!inplace) {
#pragma unroll
          for (int j = 0; j < ITEMS; ++j) {
            const int c = slot.lane + j * tpr;
            if (c < nchunks) reinterpret_cast<Raw*>(orow)[c] = cur[j];
          }
        }
        continue;
      }
      const int fl = flags[i];
      const int nd = min(max(n_dirs[i], 0), R);
      const P* dir0 = dirs + i * R * d;
      const float* dv = dir_val + i * R;
      float a = scale[i];
      float y[ITEMS][VEC];
#pragma unroll
      for (int j = 0; j < ITEMS; ++j) {
        const int c = slot.lane + j * tpr;
        if (c < nchunks) unpack_raw<T, VEC>(cur[j], y[j]);
        else {
#pragma unroll
          for (int e = 0; e < VEC; ++e) y[j][e] = 0.f;
        }
      }
      if (fl & kFlagDynamic) {
        const P* w_row = dyn_w + i * d;
        float acc[1] = {0.f};
#pragma unroll
        for (int j = 0; j < ITEMS; ++j) {
          const int c = slot.lane + j * tpr;
          if (c < nchunks) {
            float w[VEC];
            load_chunk<P, VEC, false>(w_row + static_cast<int64_t>(c) * VEC, w);
#pragma unroll
            for (int e = 0; e < VEC; ++e) acc[0] += w[e] * y[j][e];
          }
        }
        group_sum<1>(acc, tpr, red, phase);
        a = a * (acc[0] + dyn_b[i]);
      }
#pragma unroll
      for (int j = 0; j < ITEMS; ++j) {
#pragma unroll
        for (int e = 0; e < VEC; ++e) y[j][e] = a * y[j][e];
      }
      for (int k = 0; k < nd; ++k) {
        const P* uk = dir0 + k * d;
        float w[ITEMS][VEC];
        float acc[1] = {0.f};
#pragma unroll
        for (int j = 0; j < ITEMS; ++j) {
          const int c = slot.lane + j * tpr;
          if (c < nchunks) {
            load_chunk<P, VEC, false>(uk + static_cast<int64_t>(c) * VEC, w[j]);
#pragma unroll
            for (int e = 0; e < VEC; ++e) acc[0] += y[j][e] * w[j][e];
          }
        }
        group_sum<1>(acc, tpr, red, phase);
        const float coef = acc[0] - dv[k];
#pragma unroll
        for (int j = 0; j < ITEMS; ++j) {
          const int c = slot.lane + j * tpr;
          if (c < nchunks) {
#pragma unroll
            for (int e = 0; e < VEC; ++e) y[j][e] -= coef * w[j][e];
          }
        }
      }
      const bool add_vec = (fl & kFlagVector) != 0;
      const float st = add_vec ? strength[i] : 0.f;
      const P* v_row = vecs + i * d;
#pragma unroll
      for (int j = 0; j < ITEMS; ++j) {
        const int c = slot.lane + j * tpr;
        if (c < nchunks) {
          if (add_vec) {
            float v[VEC];
            load_chunk<P, VEC, false>(v_row + static_cast<int64_t>(c) * VEC, v);
#pragma unroll
            for (int e = 0; e < VEC; ++e) y[j][e] += st * v[e];
          }
          store_chunk<T, VEC>(orow + static_cast<int64_t>(c) * VEC, y[j]);
        }
      }
    }
    return;
  }

  // ---- multi-pass path (one row group per block, tpr == blockDim.x); coefs[k] in dynamic smem.
  extern __shared__ float coefs[];
  for (int64_t row = slot.row; row < rows; row += stride) {
    const T* xr = x + row * sx;
    T* orow = out + row * so;
    const int64_t i = config[row];
    if (!steered(i, n_cfg)) {
      if (!inplace) copy_row<T, VEC>(xr, orow, nchunks, slot.lane, tpr);
      continue;
    }
    const int fl = flags[i];
    const bool add_vec = (fl & kFlagVector) != 0;
    const int nd = min(max(n_dirs[i], 0), R);
    const P* w_row = dyn_w + i * d;
    const P* dir0 = dirs + i * R * d;
    const float* dv = dir_val + i * R;
    const P* v_row = vecs + i * d;
    float a = scale[i];
    if (fl & kFlagDynamic) {
      float acc[1] = {0.f};
      for (int c = slot.lane; c < nchunks; c += tpr) {
        float xv[VEC], w[VEC];
        load_chunk<T, VEC, true>(xr + static_cast<int64_t>(c) * VEC, xv);
        load_chunk<P, VEC, false>(w_row + static_cast<int64_t>(c) * VEC, w);
#pragma unroll
        for (int e = 0; e < VEC; ++e) acc[0] += w[e] * xv[e];
      }
      group_sum<1>(acc, tpr, red, phase);
      a = a * (acc[0] + dyn_b[i]);
    }
    for (int k = 0; k <= nd; ++k) {  // pass k < nd: coefficient k; pass nd: store
      float acc[1] = {0.f};
      for (int c = slot.lane; c < nchunks; c += tpr) {
        float y[VEC];
        load_chunk<T, VEC, true>(xr + static_cast<int64_t>(c) * VEC, y);
#pragma unroll
        for (int e = 0; e < VEC; ++e) y[e] = a * y[e];
        for (int j = 0; j < k; ++j) {
          float w[VEC];
          load_chunk<P, VEC, false>(dir0 + j * d + static_cast<int64_t>(c) * VEC, w);
          const float cj = coefs[j];
#pragma unroll
          for (int e = 0; e < VEC; ++e) y[e] -= cj * w[e];
        }
        if (k == nd) {
          if (add_vec) {
            float v[VEC];
            load_chunk<P, VEC, false>(v_row + static_cast<int64_t>(c) * VEC, v);
            const float st = strength[i];
#pragma unroll
            for (int e = 0; e < VEC; ++e) y[e] += st * v[e];
          }
          store_chunk<T, VEC>(orow + static_cast<int64_t>(c) * VEC, y);
        } else {
          float w[VEC];
          load_chunk<P, VEC, false>(dir0 + k * d + static_cast<int64_t>(c) * VEC, w);
#pragma unroll
          for (int e = 0; e < VEC; ++e) acc[0] += y[e] * w[e];
        }
      }
      if (k == nd) break;
      group_sum<1>(acc, tpr, red, phase);
      if (threadIdx.x == 0) coefs[k] = acc[0] - dv[k];
      __syncthreads();  // coefs[k] visible to the whole block
    }
    __syncthreads();  // the next row overwrites coefs
  }
}

}  // namespace

void steer_cuda(const at::Tensor& x, at::Tensor& out, const at::Tensor& config,
                const at::Tensor& scale, const at::Tensor& flags, const at::Tensor& dyn_w,
                const at::Tensor& dyn_b, const at::Tensor& dirs, const at::Tensor& dir_val,
                const at::Tensor& n_dirs, const at::Tensor& vec, const at::Tensor& strength) {
  constexpr const char* op = "steerkit_cuda::steer";
  check_rows(x, out, op);
  const int64_t T = x.size(0), d = x.size(1);
  TORCH_CHECK(scale.dim() == 1, op, ": scale must be 1-D [N], got shape ", scale.sizes());
  TORCH_CHECK(dirs.dim() == 3, op, ": dirs must be 3-D [N, R, d], got shape ", dirs.sizes());
  const int64_t N = scale.size(0), R = dirs.size(1);
  TORCH_CHECK(R >= 1 && R <= (1 << 20), op, ": dirs must have 1 to 2^20 slots, got R = ", R);
  const at::ScalarType pt = dyn_w.scalar_type();
  TORCH_CHECK(pt == at::kFloat || pt == x.scalar_type(), op,
              ": dyn_w, dirs, vec must be float32 or x's dtype ", x.scalar_type(), ", got ", pt);
  check_table(config, x, at::kInt, {T}, op, "config");
  check_table(scale, x, at::kFloat, {N}, op, "scale");
  check_table(flags, x, at::kInt, {N}, op, "flags");
  check_table(dyn_w, x, pt, {N, d}, op, "dyn_w");
  check_table(dyn_b, x, at::kFloat, {N}, op, "dyn_b");
  check_table(dirs, x, pt, {N, R, d}, op, "dirs");
  check_table(dir_val, x, at::kFloat, {N, R}, op, "dir_val");
  check_table(n_dirs, x, at::kInt, {N}, op, "n_dirs");
  check_table(vec, x, pt, {N, d}, op, "vec");
  check_table(strength, x, at::kFloat, {N}, op, "strength");
  if (T == 0 || d == 0) return;
  c10::cuda::CUDAGuard guard(x.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const bool inplace = same_rows(x, out);
  dispatch_dtype_param(x.scalar_type(), pt, op, [&](auto t, auto p) {
    using T_ = decltype(t);
    using P_ = decltype(p);
    const int vw = vec_width(x.scalar_type());
    // Table rows are contiguous with row length d, so d % vw == 0 and aligned bases suffice.
    const bool vec_path = d % vw == 0 && vec_ok(x, vw) && vec_ok(out, vw) &&
                          aligned16(dyn_w.data_ptr()) && aligned16(dirs.data_ptr()) &&
                          aligned16(vec.data_ptr());
    const T_* xp = static_cast<const T_*>(x.data_ptr());
    T_* outp = static_cast<T_*>(out.data_ptr());
    auto run = [&](auto vec_tag, auto items_tag) {
      constexpr int V = decltype(vec_tag)::value;
      constexpr int I = decltype(items_tag)::value;
      constexpr auto kernel = steer_kernel<T_, P_, V, I>;
      const RowPlan pl = plan_rows(T, d, V, I);
      size_t smem = 0;
      if (!pl.in_regs) {
        smem = static_cast<size_t>(R) * sizeof(float);
        TORCH_CHECK(smem <= 48 * 1024, op, ": d = ", d, " with R = ", R,
                    " slots is too large (multi-pass path keeps R floats in shared memory)");
      }
      const int64_t blocks = resident_blocks<kernel>(pl.threads, smem, pl.blocks);
      kernel<<<static_cast<unsigned int>(blocks), pl.threads, smem, stream>>>(
          xp, outp, x.stride(0), out.stride(0), config.data_ptr<int32_t>(),
          scale.data_ptr<float>(), flags.data_ptr<int32_t>(),
          static_cast<const P_*>(dyn_w.data_ptr()), dyn_b.data_ptr<float>(),
          static_cast<const P_*>(dirs.data_ptr()), dir_val.data_ptr<float>(),
          n_dirs.data_ptr<int32_t>(), static_cast<const P_*>(vec.data_ptr()),
          strength.data_ptr<float>(), N, static_cast<int>(R), d, inplace, T, pl.nchunks, pl.tpr);
    };
    with_row_tile<T_>(vec_path, T, d, run);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace steerkit
