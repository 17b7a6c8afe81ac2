// sae_steer for decode-sized batches (T <= 64): one thread block cluster of P CTAs per row.
//
// Row t applies configuration c = config[t] of a SaeSteeringTable (M feature slots; see
// steerkit.ops.reference_sae.sae_steer): pre_s = x . enc[c, s] + b_eff[c, s], coef_s from the
// slot's kind (clamp / only-active clamp / add), y = x + sum_s coef_s * dec[c, s].
//
// Why clusters: a steered row reads 2 * M * d table elements (128 KB for 8 slots at d = 4096,
// bf16). One SM alone reads them at about 75 GB/s, which puts a steered row at 3.4 us under graph
// replay (probe-sae-steer-latency-h100.txt). CTA p of the row's cluster owns columns
// [p * slice, (p + 1) * slice): it loads only its slice of x, of the encoder rows and of the
// decoder rows (all loads issued at once), computes its share of the M pre-activations, and the
// cluster exchanges the shares through distributed shared memory (one hardware cluster barrier,
// then every CTA sums the P shares in rank order, so all CTAs get the same coefficients). A CTA
// reads and writes only its own columns, so in place is safe. A second cluster barrier keeps
// every CTA's shares alive until the others have read them.
// Floor: read + write the row plus the 2 * M * d table elements, spread over P SMs; at decode
// sizes the launch and two dependent round trips (config id, then everything else) dominate.
#include <cooperative_groups.h>

#include "common.cuh"
#include "ops.h"

namespace cg = cooperative_groups;

namespace steerkit {
namespace {

constexpr int kSaeThreads = 128;   // threads per CTA
constexpr int kSaeMaxCluster = 8;  // portable cluster size
constexpr int kKindClamp = 1, kKindOnlyActive = 4;  // steerkit.ops.reference_sae.KIND_*

// MP: slots held in registers (M <= MP); CH: 16-byte chunks per thread (slice = CH * 128 * VEC).
template <typename T, int MP, int CH>
__global__ void __launch_bounds__(kSaeThreads)
    sae_steer_cluster_kernel(const T* x, T* out, int64_t sx, int64_t so, const int32_t* config,
                             const int32_t* n_feat, const int32_t* kind, const float* value,
                             const T* enc, const float* b_eff, const float* thr, const T* dec,
                             int64_t N, int M, int64_t d, int64_t slice, bool inplace) {
  constexpr int VEC = 16 / sizeof(T);
  __shared__ float red[kSaeThreads / 32][MP];
  __shared__ float share[MP];  // this CTA's share of each pre-activation, read by the cluster
  __shared__ float coef[MP];
  cg::cluster_group cluster = cg::this_cluster();
  const int P = static_cast<int>(cluster.num_blocks());
  const int p = static_cast<int>(cluster.block_rank());
  const int64_t row = blockIdx.x / P;
  const int tid = threadIdx.x;
  const T* xr = x + row * sx;
  T* orow = out + row * so;
  const int64_t c = config[row];  // the same for the whole cluster: its branches are uniform
  const int64_t lo = p * slice;
  if (c <= 0 || c >= N) {  // untouched row: never written in place, copied out of place
    if (!inplace) {
#pragma unroll
      for (int i = 0; i < CH; ++i) {
        const int64_t j = lo + (static_cast<int64_t>(i) * kSaeThreads + tid) * VEC;
        if (j < d && j < lo + slice) {
          float v[VEC];
          load_chunk<T, VEC, true>(xr + j, v);
          store_chunk<T, VEC>(orow + j, v);
        }
      }
    }
    return;
  }
  // every load at once: x, encoder and decoder slices of the row's configuration, slot metadata
  float xv[CH][VEC];
  uint4 dv[CH][MP];
  float acc[MP];
#pragma unroll
  for (int s = 0; s < MP; ++s) acc[s] = 0.f;
  const T* encr = enc + c * M * d;
  const T* decr = dec + c * M * d;
#pragma unroll
  for (int i = 0; i < CH; ++i) {
    const int64_t j = lo + (static_cast<int64_t>(i) * kSaeThreads + tid) * VEC;
    const bool ok = j < d && j < lo + slice;
#pragma unroll
    for (int e = 0; e < VEC; ++e) xv[i][e] = 0.f;
    if (ok) load_chunk<T, VEC, true>(xr + j, xv[i]);
#pragma unroll
    for (int s = 0; s < MP; ++s) {
      dv[i][s] = make_uint4(0, 0, 0, 0);
      if (ok && s < M) {
        float ev[VEC];
        load_chunk<T, VEC, false>(encr + s * d + j, ev);
        dv[i][s] = __ldg(reinterpret_cast<const uint4*>(decr + s * d + j));
#pragma unroll
        for (int e = 0; e < VEC; ++e) acc[s] = fmaf(xv[i][e], ev[e], acc[s]);
      }
    }
  }
  float b = 0.f, th = 0.f, val = 0.f;
  int kd = 0, nf = 0;
  if (tid < M && tid < MP) {
    b = b_eff[c * M + tid];
    th = thr[c * M + tid];
    val = value[c * M + tid];
    kd = kind[c * M + tid];
    nf = n_feat[c];
  }
  // this CTA's shares: warp sums, then across the warps
  const int lane = tid & 31, warp = tid >> 5;
#pragma unroll
  for (int s = 0; s < MP; ++s) {
    float v = acc[s];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) red[warp][s] = v;
  }
  __syncthreads();
  if (tid < MP) {
    float v = 0.f;
#pragma unroll
    for (int w = 0; w < kSaeThreads / 32; ++w) v += red[w][tid];
    share[tid] = v;
  }
  cluster.sync();  // every share written (release / acquire at cluster scope)
  if (tid < MP) {
    float pre = 0.f;
    for (int r = 0; r < P; ++r) pre += cluster.map_shared_rank(share, r)[tid];  // rank order
    pre += b;
    const bool active = pre > th;
    const bool clamp = (kd & kKindClamp) != 0;
    const bool skip = clamp && (kd & kKindOnlyActive) != 0 && !active;
    float cf = clamp ? (skip ? 0.f : val - (active ? pre : 0.f)) : val;
    coef[tid] = (tid < M && tid < nf && kd != 0) ? cf : 0.f;
  }
  cluster.sync();  // the shares stay alive until every CTA has read them; coef visible in the CTA
#pragma unroll
  for (int i = 0; i < CH; ++i) {
    const int64_t j = lo + (static_cast<int64_t>(i) * kSaeThreads + tid) * VEC;
    if (!(j < d && j < lo + slice)) continue;
    float y[VEC];
#pragma unroll
    for (int e = 0; e < VEC; ++e) y[e] = xv[i][e];
#pragma unroll
    for (int s = 0; s < MP; ++s) {
      if (s < M) {
        float w[VEC];
        unpack_raw<T, VEC>(dv[i][s], w);
        const float a = coef[s];
#pragma unroll
        for (int e = 0; e < VEC; ++e) y[e] = fmaf(a, w[e], y[e]);
      }
    }
    store_chunk<T, VEC>(orow + j, y);
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
                    const at::Tensor& dec) {
  constexpr const char* op = "steerkit_cuda::sae_steer";
  check_rows(x, out, op);
  const int64_t T = x.size(0), d = x.size(1);
  TORCH_CHECK(kind.dim() == 2, op, ": kind must be 2-D [N, M], got shape ", kind.sizes());
  const int64_t N = kind.size(0), M = kind.size(1);
  TORCH_CHECK(M >= 1 && M <= 16, op, ": the cluster kernel holds at most 16 slots, got M = ", M);
  check_table(config, x, at::kInt, {T}, "config");
  check_table(n_feat, x, at::kInt, {N}, "n_feat");
  check_table(value, x, at::kFloat, {N, M}, "value");
  check_table(enc, x, x.scalar_type(), {N, M, d}, "enc");
  check_table(b_eff, x, at::kFloat, {N, M}, "b_eff");
  check_table(thr, x, at::kFloat, {N, M}, "thr");
  check_table(dec, x, x.scalar_type(), {N, M, d}, "dec");
  const int vw = vec_width(x.scalar_type());
  TORCH_CHECK(d % vw == 0 && vec_ok(x, vw) && vec_ok(out, vw) && aligned16(enc.data_ptr()) &&
                  aligned16(dec.data_ptr()),
              op, ": needs 16-byte aligned rows (d a multiple of ", vw, ", aligned pointers and "
              "row strides)");
  // the fewest 16-byte chunks per thread that let at most 8 CTAs cover the row
  const int64_t per_cta = static_cast<int64_t>(kSaeThreads) * vw;
  int64_t ch = 1;
  while (ch < 4 && (d + ch * per_cta - 1) / (ch * per_cta) > kSaeMaxCluster) ch *= 2;
  const int64_t slice = ch * per_cta;
  const int64_t P = (d + slice - 1) / slice;
  TORCH_CHECK(P <= kSaeMaxCluster, op, ": d = ", d, " is too wide for one cluster of ",
              kSaeMaxCluster, " CTAs");
  TORCH_CHECK(T * P <= 0x7fffffffLL, op, ": too many rows for one launch");
  if (T == 0 || d == 0) return;
  c10::cuda::CUDAGuard guard(x.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const bool inplace = same_rows(x, out);
  dispatch_dtype(x.scalar_type(), op, [&](auto t) {
    using T_ = decltype(t);
    auto run = [&](auto mp_tag, auto ch_tag) {
      constexpr int MP = decltype(mp_tag)::value;
      constexpr int CH = decltype(ch_tag)::value;
      cudaLaunchConfig_t cfg = {};
      cfg.gridDim = dim3(static_cast<unsigned int>(T * P));
      cfg.blockDim = dim3(kSaeThreads);
      cfg.stream = stream;
      cudaLaunchAttribute attr[1];
      attr[0].id = cudaLaunchAttributeClusterDimension;
      attr[0].val.clusterDim.x = static_cast<unsigned int>(P);
      attr[0].val.clusterDim.y = 1;
      attr[0].val.clusterDim.z = 1;
      cfg.attrs = attr;
      cfg.numAttrs = 1;
      C10_CUDA_CHECK(cudaLaunchKernelEx(
          &cfg, sae_steer_cluster_kernel<T_, MP, CH>, static_cast<const T_*>(x.data_ptr()),
          static_cast<T_*>(out.data_ptr()), x.stride(0), out.stride(0), config.data_ptr<int32_t>(),
          n_feat.data_ptr<int32_t>(), kind.data_ptr<int32_t>(), value.data_ptr<float>(),
          static_cast<const T_*>(enc.data_ptr()), b_eff.data_ptr<float>(), thr.data_ptr<float>(),
          static_cast<const T_*>(dec.data_ptr()), N, static_cast<int>(M), d, slice, inplace));
    };
    auto with_ch = [&](auto mp_tag) {
      if (ch == 1) run(mp_tag, std::integral_constant<int, 1>{});
      else if (ch == 2) run(mp_tag, std::integral_constant<int, 2>{});
      else run(mp_tag, std::integral_constant<int, 4>{});
    };
    if (M <= 8) with_ch(std::integral_constant<int, 8>{});
    else with_ch(std::integral_constant<int, 16>{});
  });
}

}  // namespace steerkit
