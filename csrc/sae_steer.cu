// sae_steer for decode-sized batches: one CTA per row, specialised to the row width and the slot
// count, every load of the row issued at once.
//
// Row t applies configuration c = config[t] of a SaeSteeringTable (M feature slots; see
// steerkit.ops.reference_sae.sae_steer): pre_s = x . enc[c, s] + b_eff[c, s], coef_s from the
// slot's kind (clamp / only-active clamp / add), y = x + sum_s coef_s * dec[c, s].
//
// Why a CUDA kernel: at T <= 16 a steered row runs on one SM and is issue-bound there: with 8
// slots at d = 4096 each thread unpacks and multiplies 256 table elements twice (the dot, then
// y). The Triton row kernel (kernels/sae_steer.py) and a generic CUDA version (d and M at run time)
// spent about 1,250 instructions a thread, half of them on addresses, predicates and zero-filling
// masked loads, and took 3.4-3.5 us per row under graph replay (1.2 us of it with the 8-slot code
// and only 1 slot loaded). With d and M compile-time, 808 instructions a thread remain (256 FMAs,
// 270 unpacks) and a row takes 2.8-3.0 us at d = 4096, 2.5-2.7 us at d = 2304
// (benchmarks/probe_sae_steer.py, probe-sae-steer-cuda-fixed-h100.txt). Each thread keeps its
// 16-byte words raw (uint4: 4 registers per 8 elements); one block reduction (warp shuffles, one
// __syncthreads); each warp computes the coefficients itself (lane s of every warp sums slot s in
// the same order, so all warps agree bit for bit).
// Floor: read x, write y, read the 2 * M table rows once; at decode sizes the launch and the two
// dependent round trips (config id, then everything else) take about 1.5 us of it.
#include "common.cuh"
#include "ops.h"

namespace steerkit {
namespace {

constexpr int kKindClamp = 1, kKindOnlyActive = 4;  // steerkit.ops.reference_sae.KIND_*

// D: the row width, M: the table's slots (both compile-time, so every address is a base plus a
// constant offset and no load is predicated); THREADS * CH 16-byte words cover the row (a partial
// last round is warp-uniform).
template <typename T, int M, int D, int THREADS>
__global__ void __launch_bounds__(THREADS)
    sae_steer_row_kernel(const T* x, T* out, int64_t sx, int64_t so, const int32_t* config,
                           const int32_t* n_feat, const int32_t* kind, const float* value,
                           const T* enc, const float* b_eff, const float* thr, const T* dec,
                           int64_t N, bool inplace) {
  constexpr int VEC = 8, W = D / VEC, CH = (W + THREADS - 1) / THREADS, WARPS = THREADS / 32;
  static_assert(D % (32 * VEC) == 0, "rows of whole warps of 16-byte words");
  __shared__ float red[WARPS][M];
  const int64_t row = blockIdx.x;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const uint4* xr = reinterpret_cast<const uint4*>(x + row * sx) + tid;
  uint4* orow = reinterpret_cast<uint4*>(out + row * so) + tid;
  const int64_t c = config[row];
  if (c <= 0 || c >= N) {
    if (!inplace) {
#pragma unroll
      for (int i = 0; i < CH; ++i)
        if (i * THREADS + tid < W) orow[i * THREADS] = xr[i * THREADS];
    }
    return;
  }
  const uint4* er = reinterpret_cast<const uint4*>(enc + c * (M * D)) + tid;
  const uint4* dr = reinterpret_cast<const uint4*>(dec + c * (M * D)) + tid;
  uint4 xv[CH], ev[CH][M], dv[CH][M];
#pragma unroll
  for (int i = 0; i < CH; ++i) {
    if (W % THREADS == 0 || i * THREADS + tid < W) {  // warp-uniform
      xv[i] = xr[i * THREADS];
#pragma unroll
      for (int s = 0; s < M; ++s) {
        ev[i][s] = __ldg(er + s * W + i * THREADS);
        dv[i][s] = __ldg(dr + s * W + i * THREADS);
      }
    } else {
      xv[i] = make_uint4(0, 0, 0, 0);
#pragma unroll
      for (int s = 0; s < M; ++s) ev[i][s] = dv[i][s] = make_uint4(0, 0, 0, 0);
    }
  }
  float b = 0.f, th = 0.f, val = 0.f;
  int kd = 0, nf = 0;
  if (lane < M) {
    b = b_eff[c * M + lane];
    th = thr[c * M + lane];
    val = value[c * M + lane];
    kd = kind[c * M + lane];
    nf = n_feat[c];
  }
  float acc[M];
#pragma unroll
  for (int s = 0; s < M; ++s) acc[s] = 0.f;
#pragma unroll
  for (int i = 0; i < CH; ++i) {
    float xf[VEC];
    unpack_raw<T, VEC>(xv[i], xf);
#pragma unroll
    for (int s = 0; s < M; ++s) {
      float ef[VEC];
      unpack_raw<T, VEC>(ev[i][s], ef);
#pragma unroll
      for (int e = 0; e < VEC; ++e) acc[s] = fmaf(xf[e], ef[e], acc[s]);
    }
  }
#pragma unroll
  for (int s = 0; s < M; ++s) {
    float v = acc[s];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) red[warp][s] = v;
  }
  __syncthreads();
  float cf = 0.f;
  if (lane < M) {
    float pre = 0.f;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) pre += red[w][lane];
    pre += b;
    const bool active = pre > th;
    const bool clamp = (kd & kKindClamp) != 0;
    const bool skip = clamp && (kd & kKindOnlyActive) != 0 && !active;
    const float v = clamp ? (skip ? 0.f : val - (active ? pre : 0.f)) : val;
    cf = (lane < nf && kd != 0) ? v : 0.f;
  }
  float coef[M];
#pragma unroll
  for (int s = 0; s < M; ++s) coef[s] = __shfl_sync(0xffffffffu, cf, s);
#pragma unroll
  for (int i = 0; i < CH; ++i) {
    if (W % THREADS == 0 || i * THREADS + tid < W) {
      float y[VEC];
      unpack_raw<T, VEC>(xv[i], y);
#pragma unroll
      for (int s = 0; s < M; ++s) {
        float wf[VEC];
        unpack_raw<T, VEC>(dv[i][s], wf);
#pragma unroll
        for (int e = 0; e < VEC; ++e) y[e] = fmaf(coef[s], wf[e], y[e]);
      }
      store_chunk<T, VEC>(reinterpret_cast<T*>(orow + i * THREADS), y);
    }
  }
}

}  // namespace

void sae_steer_cuda(const at::Tensor& x, at::Tensor& out, const at::Tensor& config,
                    const at::Tensor& n_feat, const at::Tensor& kind, const at::Tensor& value,
                    const at::Tensor& enc, const at::Tensor& b_eff, const at::Tensor& thr,
                    const at::Tensor& dec) {
  constexpr const char* op = "steerkit_cuda::sae_steer";
  check_rows(x, out, op);
  TORCH_CHECK(x.scalar_type() != at::kFloat, op, ": x must be float16 or bfloat16 (16-bit rows)");
  const int64_t T = x.size(0), d = x.size(1);
  TORCH_CHECK(kind.dim() == 2, op, ": kind must be 2-D [N, M], got shape ", kind.sizes());
  const int64_t N = kind.size(0), M = kind.size(1);
  TORCH_CHECK(M >= 1 && M <= 8, op, ": the row kernel is built for 1 to 8 slots, got M = ", M);
  check_table(config, x, at::kInt, {T}, op, "config");
  check_table(n_feat, x, at::kInt, {N}, op, "n_feat");
  check_table(kind, x, at::kInt, {N, M}, op, "kind");
  check_table(value, x, at::kFloat, {N, M}, op, "value");
  check_table(enc, x, x.scalar_type(), {N, M, d}, op, "enc");
  check_table(b_eff, x, at::kFloat, {N, M}, op, "b_eff");
  check_table(thr, x, at::kFloat, {N, M}, op, "thr");
  check_table(dec, x, x.scalar_type(), {N, M, d}, op, "dec");
  TORCH_CHECK(d == 2304 || d == 4096, op, ": the row kernel is built for d = 2304 and 4096, got d = ",
              d);
  TORCH_CHECK(vec_ok(x, 8) && vec_ok(out, 8) && aligned16(enc.data_ptr()) && aligned16(dec.data_ptr()),
              op, ": needs 16-byte aligned rows (aligned pointers and row strides)");
  TORCH_CHECK(T <= 0x7fffffffLL, op, ": too many rows for one launch");
  if (T == 0) return;
  c10::cuda::CUDAGuard guard(x.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const bool inplace = same_rows(x, out);
  dispatch_dtype(x.scalar_type(), op, [&](auto t) {
    using T_ = decltype(t);
    if constexpr (!std::is_same<T_, float>::value) {
      auto launch = [&](auto m_tag, auto d_tag) {
        constexpr int MM = decltype(m_tag)::value, DD = decltype(d_tag)::value;
        // H100, 8 slots: 256 threads (two words each) at d = 4096, 288 (one word each) at 2304;
        // one word each at 4096 (512 threads) took 3.1 us against 2.8
        constexpr int TH = DD == 4096 ? 256 : DD / 8;
        sae_steer_row_kernel<T_, MM, DD, TH><<<static_cast<unsigned int>(T), TH, 0, stream>>>(
            static_cast<const T_*>(x.data_ptr()), static_cast<T_*>(out.data_ptr()), x.stride(0),
            out.stride(0), config.data_ptr<int32_t>(), n_feat.data_ptr<int32_t>(),
            kind.data_ptr<int32_t>(), value.data_ptr<float>(), static_cast<const T_*>(enc.data_ptr()),
            b_eff.data_ptr<float>(), thr.data_ptr<float>(), static_cast<const T_*>(dec.data_ptr()), N,
            inplace);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      };
      auto with_d = [&](auto m_tag) {
        if (d == 4096) launch(m_tag, std::integral_constant<int, 4096>{});
        else launch(m_tag, std::integral_constant<int, 2304>{});
      };
      switch (M) {
        case 1: with_d(std::integral_constant<int, 1>{}); break;
        case 2: with_d(std::integral_constant<int, 2>{}); break;
        case 3: with_d(std::integral_constant<int, 3>{}); break;
        case 4: with_d(std::integral_constant<int, 4>{}); break;
        case 5: with_d(std::integral_constant<int, 5>{}); break;
        case 6: with_d(std::integral_constant<int, 6>{}); break;
        case 7: with_d(std::integral_constant<int, 7>{}); break;
        default: with_d(std::integral_constant<int, 8>{}); break;
      }
    }
  });
}

}  // namespace steerkit
