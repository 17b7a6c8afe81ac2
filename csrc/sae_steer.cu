// sae_steer for decode-sized batches: one CTA per row, every load of the row issued at once.
//
// Row t applies configuration c = config[t] of a SaeSteeringTable (M feature slots; see
// steerkit.ops.reference_sae.sae_steer): pre_s = x . enc[c, s] + b_eff[c, s], coef_s from the
// slot's kind (clamp / only-active clamp / add), y = x + sum_s coef_s * dec[c, s].
//
// Why a CUDA kernel: at T <= 16 a steered row is latency: the config id, then x and the 2 * M
// table rows (128 KB for 8 slots at d = 4096, bf16), a reduction, the store. The Triton row
// kernel (kernels/sae_steer.py) holds the same loads in registers but spills at 8 slots (255
// registers, 248 bytes of stack at 8 warps) and spends 3.4 us per row under graph replay. Here
// each thread keeps its 16-byte words raw (uint4: 4 registers per 8 elements), one block
// reduction (warp shuffles, one __syncthreads), and each warp computes the coefficients itself
// (lane s of every warp sums slot s in the same order, so all warps agree bit for bit).
// Floor: read x, write y, read the 2 * M table rows once; at decode sizes the launch and the two
// dependent round trips (config id, then everything else) dominate.
#include "common.cuh"
#include "ops.h"

namespace steerkit {
namespace {

constexpr int kKindClamp = 1, kKindOnlyActive = 4;  // steerkit.ops.reference_sae.KIND_*
constexpr int kSaeMaxD = 4096;                      // CH * THREADS * 8 covers the row

// MP: slots held per thread (M <= MP); CH: 16-byte words per thread and row (CH * THREADS * 8 >= d).
template <typename T, int MP, int CH, int THREADS>
__global__ void __launch_bounds__(THREADS)
    sae_steer_row_kernel(const T* x, T* out, int64_t sx, int64_t so, const int32_t* config,
                         const int32_t* n_feat, const int32_t* kind, const float* value,
                         const T* enc, const float* b_eff, const float* thr, const T* dec,
                         int64_t N, int M, int64_t d, bool inplace) {
  constexpr int VEC = 8;  // 16-bit elements per 16-byte word
  constexpr int WARPS = THREADS / 32;
  __shared__ float red[WARPS][MP];
  const int64_t row = blockIdx.x;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const T* xr = x + row * sx;
  T* orow = out + row * so;
  const int64_t c = config[row];  // uniform over the CTA: its branches are too
  if (c <= 0 || c >= N) {         // untouched: never written in place, copied out of place
    if (!inplace) {
#pragma unroll
      for (int i = 0; i < CH; ++i) {
        const int64_t j = (static_cast<int64_t>(i) * THREADS + tid) * VEC;
        if (j < d) *reinterpret_cast<uint4*>(orow + j) = *reinterpret_cast<const uint4*>(xr + j);
      }
    }
    return;
  }
  // every load at once: x, the configuration's encoder and decoder rows, the slot metadata
  const T* encr = enc + c * M * d;
  const T* decr = dec + c * M * d;
  uint4 xv[CH], ev[CH][MP], dv[CH][MP];
  const uint4 zero = make_uint4(0, 0, 0, 0);
#pragma unroll
  for (int i = 0; i < CH; ++i) {
    const int64_t j = (static_cast<int64_t>(i) * THREADS + tid) * VEC;
    const bool ok = j < d;
    xv[i] = ok ? *reinterpret_cast<const uint4*>(xr + j) : zero;  // plain load: x may alias out
#pragma unroll
    for (int s = 0; s < MP; ++s) {
      const bool on = ok && s < M;
      ev[i][s] = on ? __ldg(reinterpret_cast<const uint4*>(encr + s * d + j)) : zero;
      dv[i][s] = on ? __ldg(reinterpret_cast<const uint4*>(decr + s * d + j)) : zero;
    }
  }
  float b = 0.f, th = 0.f, val = 0.f;
  int kd = 0, nf = 0;
  if (lane < M && lane < MP) {
    b = b_eff[c * M + lane];
    th = thr[c * M + lane];
    val = value[c * M + lane];
    kd = kind[c * M + lane];
    nf = n_feat[c];
  }
  // this thread's share of each pre-activation, then the warp's (xor shuffles: every lane has it)
  float acc[MP];
#pragma unroll
  for (int s = 0; s < MP; ++s) acc[s] = 0.f;
#pragma unroll
  for (int i = 0; i < CH; ++i) {
    float xf[VEC];
    unpack_raw<T, VEC>(xv[i], xf);
#pragma unroll
    for (int s = 0; s < MP; ++s) {
      float ef[VEC];
      unpack_raw<T, VEC>(ev[i][s], ef);
#pragma unroll
      for (int e = 0; e < VEC; ++e) acc[s] = fmaf(xf[e], ef[e], acc[s]);
    }
  }
#pragma unroll
  for (int s = 0; s < MP; ++s) {
    float v = acc[s];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) red[warp][s] = v;
  }
  __syncthreads();
  // lane s of each warp: slot s's pre-activation (warps summed in order) and coefficient
  float cf = 0.f;
  if (lane < MP) {
    float pre = 0.f;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) pre += red[w][lane];
    pre += b;
    const bool active = pre > th;
    const bool clamp = (kd & kKindClamp) != 0;
    const bool skip = clamp && (kd & kKindOnlyActive) != 0 && !active;
    const float v = clamp ? (skip ? 0.f : val - (active ? pre : 0.f)) : val;
    cf = (lane < M && lane < nf && kd != 0) ? v : 0.f;
  }
  float coef[MP];
#pragma unroll
  for (int s = 0; s < MP; ++s) coef[s] = __shfl_sync(0xffffffffu, cf, s);
#pragma unroll
  for (int i = 0; i < CH; ++i) {
    const int64_t j = (static_cast<int64_t>(i) * THREADS + tid) * VEC;
    if (j >= d) continue;
    float y[VEC];
    unpack_raw<T, VEC>(xv[i], y);
#pragma unroll
    for (int s = 0; s < MP; ++s) {
      float wf[VEC];
      unpack_raw<T, VEC>(dv[i][s], wf);
#pragma unroll
      for (int e = 0; e < VEC; ++e) y[e] = fmaf(coef[s], wf[e], y[e]);
    }
    store_chunk<T, VEC>(orow + j, y);
  }
}

// The register kernel specialised to the row width D and the slot count M of the table: every
// address is a base plus a constant offset and no load is predicated (ptxas spends its
// instructions on the unpacking and the FMAs: at decode sizes the row is issue-bound on one SM).
// THREADS * CH words cover the row; a partial last word-round (D = 2304 at 256 threads) is
// warp-uniform.
template <typename T, int M, int D, int THREADS, bool WAIT>
__global__ void __launch_bounds__(THREADS)
    sae_steer_fixed_kernel(const T* x, T* out, int64_t sx, int64_t so, const int32_t* config,
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
  if constexpr (WAIT) {  // decoder rows and slot metadata into L1 now: ptxas issues their loads
                        // during the dot (after the first encoder words arrive), a round trip later
#pragma unroll
    for (int i = 0; i < CH; ++i)
      if (W % THREADS == 0 || i * THREADS + tid < W)
#pragma unroll
        for (int s = 0; s < M; ++s)
          asm volatile("prefetch.global.L1 [%0];" ::"l"(dr + s * W + i * THREADS));
    if (lane < M) {
      asm volatile("prefetch.global.L1 [%0];" ::"l"(b_eff + c * M + lane));
      asm volatile("prefetch.global.L1 [%0];" ::"l"(thr + c * M + lane));
      asm volatile("prefetch.global.L1 [%0];" ::"l"(value + c * M + lane));
      asm volatile("prefetch.global.L1 [%0];" ::"l"(kind + c * M + lane));
    }
  }
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

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  const unsigned int dst = static_cast<unsigned int>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// The same result staged through shared memory: every thread issues its 16-byte async copies of
// x, the M encoder rows (one commit group) and the M decoder rows (a second group) in short
// loops, then reads them from shared memory. Small code, no registers held for loads in flight.
template <typename T, int MP, int THREADS>
__global__ void __launch_bounds__(THREADS)
    sae_steer_smem_kernel(const T* x, T* out, int64_t sx, int64_t so, const int32_t* config,
                          const int32_t* n_feat, const int32_t* kind, const float* value,
                          const T* enc, const float* b_eff, const float* thr, const T* dec,
                          int64_t N, int M, int64_t d, bool inplace) {
  constexpr int VEC = 8;
  constexpr int WARPS = THREADS / 32;
  extern __shared__ uint4 stage[];  // x [W], enc [M, W], dec [M, W] (W = d / 8 words)
  __shared__ float red[WARPS][MP];
  const int64_t row = blockIdx.x;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int W = static_cast<int>(d / VEC);
  const uint4* xr = reinterpret_cast<const uint4*>(x + row * sx);
  uint4* orow = reinterpret_cast<uint4*>(out + row * so);
  const int64_t c = config[row];
  if (c <= 0 || c >= N) {
    if (!inplace)
      for (int k = tid; k < W; k += THREADS) orow[k] = xr[k];
    return;
  }
  const uint4* ge = reinterpret_cast<const uint4*>(enc + c * M * d);  // M rows, contiguous
  const uint4* gd = reinterpret_cast<const uint4*>(dec + c * M * d);
  uint4* sxw = stage;
  uint4* se = stage + W;
  uint4* sd = se + M * W;
  for (int k = tid; k < W; k += THREADS) cp_async16(sxw + k, xr + k);
  for (int k = tid; k < M * W; k += THREADS) cp_async16(se + k, ge + k);
  cp_async_commit();
  for (int k = tid; k < M * W; k += THREADS) cp_async16(sd + k, gd + k);
  cp_async_commit();
  float b = 0.f, th = 0.f, val = 0.f;
  int kd = 0, nf = 0;
  if (lane < M && lane < MP) {
    b = b_eff[c * M + lane];
    th = thr[c * M + lane];
    val = value[c * M + lane];
    kd = kind[c * M + lane];
    nf = n_feat[c];
  }
  cp_async_wait<1>();
  __syncthreads();
  float acc[MP];
#pragma unroll
  for (int s = 0; s < MP; ++s) acc[s] = 0.f;
  for (int k = tid; k < W; k += THREADS) {
    float xf[VEC];
    unpack_raw<T, VEC>(sxw[k], xf);
#pragma unroll
    for (int s = 0; s < MP; ++s) {
      if (s < M) {
        float ef[VEC];
        unpack_raw<T, VEC>(se[s * W + k], ef);
#pragma unroll
        for (int e = 0; e < VEC; ++e) acc[s] = fmaf(xf[e], ef[e], acc[s]);
      }
    }
  }
#pragma unroll
  for (int s = 0; s < MP; ++s) {
    float v = acc[s];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) red[warp][s] = v;
  }
  cp_async_wait<0>();
  __syncthreads();
  float cf = 0.f;
  if (lane < MP) {
    float pre = 0.f;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) pre += red[w][lane];
    pre += b;
    const bool active = pre > th;
    const bool clamp = (kd & kKindClamp) != 0;
    const bool skip = clamp && (kd & kKindOnlyActive) != 0 && !active;
    const float v = clamp ? (skip ? 0.f : val - (active ? pre : 0.f)) : val;
    cf = (lane < M && lane < nf && kd != 0) ? v : 0.f;
  }
  float coef[MP];
#pragma unroll
  for (int s = 0; s < MP; ++s) coef[s] = __shfl_sync(0xffffffffu, cf, s);
  for (int k = tid; k < W; k += THREADS) {
    float y[VEC];
    unpack_raw<T, VEC>(sxw[k], y);
#pragma unroll
    for (int s = 0; s < MP; ++s) {
      if (s < M) {
        float wf[VEC];
        unpack_raw<T, VEC>(sd[s * W + k], wf);
#pragma unroll
        for (int e = 0; e < VEC; ++e) y[e] = fmaf(coef[s], wf[e], y[e]);
      }
    }
    store_chunk<T, VEC>(reinterpret_cast<T*>(orow + k), y);
  }
}

void check_table(const at::Tensor& t, const at::Tensor& x, at::ScalarType dtype,
                 c10::IntArrayRef shape, const char* name) {
  constexpr const char* op = "steerkit_cuda::sae_steer";
  TORCH_CHECK(t.device() == x.device(), op, ": ", name, " must be on ", x.device(), ", got ",
              t.device());
  TORCH_CHECK(t.scalar_type() == dtype, op, ": ", name, " must be ", dtype, ", got ",
              t.scalar_type());
  TORCH_CHECK(t.sizes() == shape, op, ": ", name, " must have shape ", shape, ", got ", t.sizes());
  TORCH_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous");
}

}  // namespace

void sae_steer_cuda(const at::Tensor& x, at::Tensor& out, const at::Tensor& config,
                    const at::Tensor& n_feat, const at::Tensor& kind, const at::Tensor& value,
                    const at::Tensor& enc, const at::Tensor& b_eff, const at::Tensor& thr,
                    const at::Tensor& dec, int64_t variant) {
  constexpr const char* op = "steerkit_cuda::sae_steer";
  check_rows(x, out, op);
  TORCH_CHECK(x.scalar_type() != at::kFloat, op, ": x must be float16 or bfloat16 (16-bit rows)");
  const int64_t T = x.size(0), d = x.size(1);
  TORCH_CHECK(kind.dim() == 2, op, ": kind must be 2-D [N, M], got shape ", kind.sizes());
  const int64_t N = kind.size(0), M = kind.size(1);
  TORCH_CHECK(M >= 1 && M <= 16, op, ": the row kernel holds at most 16 slots, got M = ", M);
  TORCH_CHECK(d <= kSaeMaxD, op, ": the row kernel holds rows of at most ", kSaeMaxD,
              " elements, got d = ", d);
  check_table(config, x, at::kInt, {T}, "config");
  check_table(n_feat, x, at::kInt, {N}, "n_feat");
  check_table(kind, x, at::kInt, {N, M}, "kind");
  check_table(value, x, at::kFloat, {N, M}, "value");
  check_table(enc, x, x.scalar_type(), {N, M, d}, "enc");
  check_table(b_eff, x, at::kFloat, {N, M}, "b_eff");
  check_table(thr, x, at::kFloat, {N, M}, "thr");
  check_table(dec, x, x.scalar_type(), {N, M, d}, "dec");
  TORCH_CHECK(d % 8 == 0 && vec_ok(x, 8) && vec_ok(out, 8) && aligned16(enc.data_ptr()) &&
                  aligned16(dec.data_ptr()),
              op, ": needs 16-byte aligned rows (d a multiple of 8, aligned pointers and row strides)");
  // variant (probing): 0 default; 1 registers, MP = M rounded up; 2 registers, MP = 8 / 16;
  // 3 shared-memory staging, MP = M rounded up
  // 4: specialised to D in {2304, 4096} and M in {1, 2, 4, 8}, one word per thread; 5: the
  // same at 256 threads; 6 / 7: 5 / 4 prefetching the decoder rows into L1 first
  TORCH_CHECK(variant >= 0 && variant <= 7, op, ": variant must be 0..7, got ", variant);
  if (variant >= 4 && !((d == 2304 || d == 4096) && (M == 1 || M == 2 || M == 4 || M == 8))) variant = 1;
  if (variant == 0) variant = 1;
  TORCH_CHECK(T <= 0x7fffffffLL, op, ": too many rows for one launch");
  if (T == 0 || d == 0) return;
  c10::cuda::CUDAGuard guard(x.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const bool inplace = same_rows(x, out);
  const size_t stage_bytes = static_cast<size_t>(2 * M + 1) * d * 2;
  dispatch_dtype(x.scalar_type(), op, [&](auto t) {
    using T_ = decltype(t);
    if constexpr (!std::is_same<T_, float>::value) {
      auto run = [&](auto kernel, int nthreads, size_t smem) {
        if (smem > 48 * 1024) {
          C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                              static_cast<int>(smem)));
        }
        kernel<<<static_cast<unsigned int>(T), nthreads, smem, stream>>>(
            static_cast<const T_*>(x.data_ptr()), static_cast<T_*>(out.data_ptr()), x.stride(0),
            out.stride(0), config.data_ptr<int32_t>(), n_feat.data_ptr<int32_t>(),
            kind.data_ptr<int32_t>(), value.data_ptr<float>(), static_cast<const T_*>(enc.data_ptr()),
            b_eff.data_ptr<float>(), thr.data_ptr<float>(), static_cast<const T_*>(dec.data_ptr()), N,
            static_cast<int>(M), d, inplace);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      };
      if (variant >= 4) {
        auto fixed = [&](auto m_tag, auto d_tag) {
          constexpr int MM = decltype(m_tag)::value, DD = decltype(d_tag)::value;
          constexpr int TH = DD / 8;  // one word per thread
          auto launch = [&](auto kernel, int nthreads) {
            kernel<<<static_cast<unsigned int>(T), nthreads, 0, stream>>>(
                static_cast<const T_*>(x.data_ptr()), static_cast<T_*>(out.data_ptr()), x.stride(0),
                out.stride(0), config.data_ptr<int32_t>(), n_feat.data_ptr<int32_t>(),
                kind.data_ptr<int32_t>(), value.data_ptr<float>(),
                static_cast<const T_*>(enc.data_ptr()), b_eff.data_ptr<float>(), thr.data_ptr<float>(),
                static_cast<const T_*>(dec.data_ptr()), N, inplace);
            C10_CUDA_KERNEL_LAUNCH_CHECK();
          };
          if (variant == 4) launch(sae_steer_fixed_kernel<T_, MM, DD, TH, false>, TH);
          else if (variant == 5) launch(sae_steer_fixed_kernel<T_, MM, DD, 256, false>, 256);
          else if (variant == 6) launch(sae_steer_fixed_kernel<T_, MM, DD, 256, true>, 256);
          else launch(sae_steer_fixed_kernel<T_, MM, DD, TH, true>, TH);
        };
        auto with_d = [&](auto m_tag) {
          if (d == 4096) fixed(m_tag, std::integral_constant<int, 4096>{});
          else fixed(m_tag, std::integral_constant<int, 2304>{});
        };
        if (M == 1) with_d(std::integral_constant<int, 1>{});
        else if (M == 2) with_d(std::integral_constant<int, 2>{});
        else if (M == 4) with_d(std::integral_constant<int, 4>{});
        else with_d(std::integral_constant<int, 8>{});
        return;
      }
      if (variant == 3) {
        TORCH_CHECK(stage_bytes <= 227 * 1024, op, ": the staged kernel holds at most 227 KB of rows");
        if (M <= 1) run(sae_steer_smem_kernel<T_, 1, 256>, 256, stage_bytes);
        else if (M <= 2) run(sae_steer_smem_kernel<T_, 2, 256>, 256, stage_bytes);
        else if (M <= 4) run(sae_steer_smem_kernel<T_, 4, 256>, 256, stage_bytes);
        else if (M <= 8) run(sae_steer_smem_kernel<T_, 8, 256>, 256, stage_bytes);
        else run(sae_steer_smem_kernel<T_, 16, 256>, 256, stage_bytes);
        return;
      }
      const int mp = variant == 2 ? (M <= 8 ? 8 : 16) : (M <= 1 ? 1 : M <= 2 ? 2 : M <= 4 ? 4 : M <= 8 ? 8 : 16);
      if (mp == 16) { run(sae_steer_row_kernel<T_, 16, 1, 512>, 512, 0); return; }
      auto with_ch = [&](auto mp_tag) {
        constexpr int MP = decltype(mp_tag)::value;
        if (d <= 2048) run(sae_steer_row_kernel<T_, MP, 1, 256>, 256, 0);
        else run(sae_steer_row_kernel<T_, MP, 2, 256>, 256, 0);
      };
      if (mp == 1) with_ch(std::integral_constant<int, 1>{});
      else if (mp == 2) with_ch(std::integral_constant<int, 2>{});
      else if (mp == 4) with_ch(std::integral_constant<int, 4>{});
      else with_ch(std::integral_constant<int, 8>{});
    }
  });
}

}  // namespace steerkit
