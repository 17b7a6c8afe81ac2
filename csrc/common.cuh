// Shared helpers of the steerkit CUDA kernels.
//
// Every kernel maps one *row group* of `tpr` threads (a multiple of 32) to one row of x [T, d].
// The row is cut into chunks of VEC elements: VEC = 16 bytes / sizeof(T) (one 16-byte load or
// store) when the pointers, row strides and d allow it, else VEC = 1 (scalar access, any d).
// Lane l of the group owns chunks l, l + tpr, l + 2*tpr, ... so a warp touches consecutive bytes.
//
// Launch heuristic (plan_rows): a thread holds up to ITEMS chunks in registers; tpr is the
// smallest multiple of 32 that covers the row with that many chunks, at most 512 (kernels are
// __launch_bounds__(512): up to 128 registers a thread). A one-warp group gets 4 rows per
// 128-thread block; wider groups get one row per block, so a block-wide barrier is always
// uniform. Elementwise ops use items_for(VEC) (16 fp32 values a thread; measured best at
// d = 4096) and loop over tiles when a row is wider; the reduction ops (project_out, steer) pick
// their own tile and take a multi-pass path that re-reads the row (L2 hits) beyond it.
#pragma once

#include <cstdint>
#include <type_traits>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

namespace steerkit {

// Every kernel is declared __launch_bounds__(kMaxThreadsPerRow), so it may use up to 128 registers
// a thread (65536 / 512) and a block of 512 threads always launches.
constexpr int kMaxThreadsPerRow = 512;
constexpr int kRowsPerSmallBlock = 4;  // rows per block when one warp covers a row

// Chunks a thread keeps in registers for a given vector width (16 floats vectorised, 8 scalar:
// measured faster than 32 / 16 for the elementwise ops at d = 4096 on an H100).
#ifndef STEERKIT_REG_FLOATS
#define STEERKIT_REG_FLOATS 16
#endif
__host__ __device__ constexpr int items_for(int vec) {
  return vec == 1 ? STEERKIT_REG_FLOATS / 2 : STEERKIT_REG_FLOATS / vec;
}

// ------------------------------------------------------------------------------------------------
// Element types: raw bits <-> float. Conversions round to nearest even, as torch's .to() does.
template <typename T> struct Elem;

template <> struct Elem<float> {
  using Bits = unsigned int;
  static __device__ __forceinline__ float to_float(Bits b) { return __uint_as_float(b); }
  static __device__ __forceinline__ Bits from_float(float f) { return __float_as_uint(f); }
};

template <> struct Elem<c10::Half> {
  using Bits = unsigned short;
  static __device__ __forceinline__ float to_float(Bits b) { return __half2float(__ushort_as_half(b)); }
  static __device__ __forceinline__ Bits from_float(float f) { return __half_as_ushort(__float2half_rn(f)); }
};

template <> struct Elem<c10::BFloat16> {
  using Bits = unsigned short;
  static __device__ __forceinline__ float to_float(Bits b) {
    return __uint_as_float(static_cast<unsigned int>(b) << 16);  // exact
  }
  static __device__ __forceinline__ Bits from_float(float f) {
    return __bfloat16_as_ushort(__float2bfloat16_rn(f));
  }
};

// ------------------------------------------------------------------------------------------------
// Chunk access. A chunk is VEC elements at p (16-byte aligned when VEC > 1).
// STREAM = true: activation loads (ld.global.cs, evict-first; coherent, so x may alias out).
// STREAM = false: parameter loads through the read-only path (__ldg; table rows stay cached).

template <bool STREAM, typename U> __device__ __forceinline__ U ld(const U* p) {
  if constexpr (STREAM) return __ldcs(p);
  else return __ldg(p);
}

template <typename T, int VEC, bool STREAM>
__device__ __forceinline__ void load_chunk(const T* p, float (&v)[VEC]) {
  using E = Elem<T>;
  using Bits = typename E::Bits;
  if constexpr (VEC == 1) {
    v[0] = E::to_float(ld<STREAM>(reinterpret_cast<const Bits*>(p)));
  } else {
    constexpr int PER = 16 / sizeof(T);  // elements per 16-byte load
    static_assert(VEC % PER == 0, "chunk must be whole 16-byte words");
#pragma unroll
    for (int q = 0; q < VEC / PER; ++q) {
      const uint4 raw = ld<STREAM>(reinterpret_cast<const uint4*>(p) + q);
      const unsigned int w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
      for (int e = 0; e < PER; ++e) {
        if constexpr (sizeof(T) == 4) {
          v[q * PER + e] = E::to_float(w[e]);
        } else {
          const unsigned int word = w[e >> 1];
          v[q * PER + e] = E::to_float(static_cast<Bits>((e & 1) ? (word >> 16) : (word & 0xffffu)));
        }
      }
    }
  }
}

template <typename T, int VEC>
__device__ __forceinline__ void store_chunk(T* p, const float (&v)[VEC]) {
  using E = Elem<T>;
  using Bits = typename E::Bits;
  if constexpr (VEC == 1) {
    *reinterpret_cast<Bits*>(p) = E::from_float(v[0]);
  } else {
    constexpr int PER = 16 / sizeof(T);
    static_assert(VEC % PER == 0, "chunk must be whole 16-byte words");
#pragma unroll
    for (int q = 0; q < VEC / PER; ++q) {
      unsigned int w[4];
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        if constexpr (sizeof(T) == 4) {
          w[k] = E::from_float(v[q * PER + k]);
        } else {
          w[k] = static_cast<unsigned int>(E::from_float(v[q * PER + 2 * k])) |
                 (static_cast<unsigned int>(E::from_float(v[q * PER + 2 * k + 1])) << 16);
        }
      }
      reinterpret_cast<uint4*>(p)[q] = make_uint4(w[0], w[1], w[2], w[3]);
    }
  }
}

// Raw x chunks (one 16-byte word, or one element when VEC == 1): the reduction kernels prefetch
// the next row in this form (half the registers of fp32 for 16-bit types) and convert it later.
template <typename T, int VEC>
using RawChunk = typename std::conditional<VEC == 1, typename Elem<T>::Bits, uint4>::type;

template <typename T, int VEC>
__device__ __forceinline__ RawChunk<T, VEC> load_raw(const T* p) {
  static_assert(VEC == 1 || VEC * sizeof(T) == 16, "x chunks are one 16-byte word");
  return __ldcs(reinterpret_cast<const RawChunk<T, VEC>*>(p));
}

template <typename T, int VEC>
__device__ __forceinline__ void unpack_raw(const RawChunk<T, VEC>& r, float (&v)[VEC]) {
  using E = Elem<T>;
  if constexpr (VEC == 1) {
    v[0] = E::to_float(r);
  } else {
    const unsigned int w[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
      if constexpr (sizeof(T) == 4) v[e] = E::to_float(w[e]);
      else v[e] = E::to_float(static_cast<typename E::Bits>((e & 1) ? (w[e >> 1] >> 16) : (w[e >> 1] & 0xffffu)));
    }
  }
}

// out_row = x_row + a * w_row over the chunks this lane owns (all its loads before its stores).
template <typename T, typename P, int VEC>
__device__ __forceinline__ void axpy_row(const T* xr, const P* wr, float a, T* orow, int nchunks,
                                         int lane, int tpr) {
  constexpr int ITEMS = items_for(VEC);
  for (int base = 0; base < nchunks; base += tpr * ITEMS) {
    float y[ITEMS][VEC], w[ITEMS][VEC];
#pragma unroll
    for (int j = 0; j < ITEMS; ++j) {
      const int c = base + lane + j * tpr;
      if (c < nchunks) {
        load_chunk<T, VEC, true>(xr + static_cast<int64_t>(c) * VEC, y[j]);
        load_chunk<P, VEC, false>(wr + static_cast<int64_t>(c) * VEC, w[j]);
      }
    }
#pragma unroll
    for (int j = 0; j < ITEMS; ++j) {
      const int c = base + lane + j * tpr;
      if (c < nchunks) {
#pragma unroll
        for (int e = 0; e < VEC; ++e) y[j][e] += a * w[j][e];
        store_chunk<T, VEC>(orow + static_cast<int64_t>(c) * VEC, y[j]);
      }
    }
  }
}

// Bit-exact copy of one row (untouched rows when out != x): all loads first, then all stores.
template <typename T, int VEC>
__device__ __forceinline__ void copy_row(const T* src, T* dst, int nchunks, int lane, int tpr) {
  constexpr int ITEMS = items_for(VEC);
  using Word = typename std::conditional<VEC == 1, typename Elem<T>::Bits, uint4>::type;
  static_assert(VEC == 1 || VEC * sizeof(T) == 16, "x chunks are one 16-byte word");
  const Word* s = reinterpret_cast<const Word*>(src);
  Word* o = reinterpret_cast<Word*>(dst);
  for (int base = 0; base < nchunks; base += tpr * ITEMS) {
    Word w[ITEMS];
#pragma unroll
    for (int j = 0; j < ITEMS; ++j) {
      const int c = base + lane + j * tpr;
      if (c < nchunks) w[j] = __ldcs(s + c);
    }
#pragma unroll
    for (int j = 0; j < ITEMS; ++j) {
      const int c = base + lane + j * tpr;
      if (c < nchunks) o[c] = w[j];
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Sum of N values over the row group. Every thread of the group gets the totals, computed in the
// same order (so they agree bit for bit). A one-warp group uses shuffles only; a wider group is
// the whole block (one row per block) and goes through shared memory with one barrier: `smem`
// holds 2 * 32 * N floats and successive calls alternate halves (`phase` flips), so a warp that
// runs ahead can only write the half that no warp still reads. The branch around a call is
// uniform per row, hence per block.
template <int N>
__device__ __forceinline__ void group_sum(float (&v)[N], int tpr, float* smem, int& phase) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v[i] += __shfl_xor_sync(0xffffffffu, v[i], o);
  }
  if (tpr <= 32) return;
  float* buf = smem + phase * (32 * N);
  phase ^= 1;
  const int warp = threadIdx.x >> 5;
  const int nwarps = tpr >> 5;
  if ((threadIdx.x & 31) == 0) {
#pragma unroll
    for (int i = 0; i < N; ++i) buf[i * 32 + warp] = v[i];
  }
  __syncthreads();
#pragma unroll
  for (int i = 0; i < N; ++i) {
    float s = 0.f;
    for (int w = 0; w < nwarps; ++w) s += buf[i * 32 + w];
    v[i] = s;
  }
}

// Row handled by this thread and its lane in the row group.
struct RowSlot {
  int64_t row;
  int lane;
};

// Row groups of the whole grid (the row stride of a grid-stride loop).
__device__ __forceinline__ int64_t row_groups(int tpr) {
  return static_cast<int64_t>(gridDim.x) * (blockDim.x / tpr);
}

__device__ __forceinline__ RowSlot row_slot(int tpr) {
  const int rows_per_block = blockDim.x / tpr;
  RowSlot s;
  s.row = static_cast<int64_t>(blockIdx.x) * rows_per_block + threadIdx.x / tpr;
  s.lane = threadIdx.x % tpr;
  return s;
}

__device__ __forceinline__ int64_t load_index(const void* index, bool idx64, int64_t row) {
  return idx64 ? static_cast<const int64_t*>(index)[row]
               : static_cast<int64_t>(static_cast<const int32_t*>(index)[row]);
}

// ------------------------------------------------------------------------------------------------
// Host side: launch plan, argument checks, dtype dispatch.

struct RowPlan {
  int vec;       // elements per chunk
  int nchunks;   // chunks per row
  int tpr;       // threads per row group
  int threads;   // threads per block
  int64_t blocks;
  bool in_regs;  // the whole row fits in the group's registers
};

inline RowPlan plan_rows(int64_t T, int64_t d, int vec, int items = -1) {
  RowPlan p;
  p.vec = vec;
  p.nchunks = static_cast<int>(d / vec);
  if (items <= 0) items = items_for(vec);
  const int64_t per_thread = (static_cast<int64_t>(p.nchunks) + items - 1) / items;
  int64_t tpr = (per_thread + 31) / 32 * 32;
  if (tpr < 32) tpr = 32;
  if (tpr > kMaxThreadsPerRow) tpr = kMaxThreadsPerRow;
  p.tpr = static_cast<int>(tpr);
  const int rows_per_block = p.tpr == 32 ? kRowsPerSmallBlock : 1;
  p.threads = p.tpr * rows_per_block;
  p.blocks = (T + rows_per_block - 1) / rows_per_block;
  p.in_regs = static_cast<int64_t>(p.nchunks) <= static_cast<int64_t>(p.tpr) * items;
  return p;
}

// Register tile of the whole-row kernels (project_out, steer), measured on an H100 at d = 4096:
// four 16-byte chunks a thread (32 values for 16-bit x, 16 for fp32), then, for fp32 rows too wide
// for that, eight; scalar path: 8 then 16 elements. Rows wider than the largest tile take the
// multi-pass path. Calls run(std::integral_constant<int, VEC>, std::integral_constant<int, ITEMS>).
template <typename E, typename Run>
inline void with_row_tile(bool vec, int64_t rows, int64_t d, Run&& run) {
  if (vec) {
    constexpr int V = 16 / sizeof(E);
    using VT = std::integral_constant<int, V>;
    if (plan_rows(rows, d, V, 4).in_regs || !plan_rows(rows, d, V, 32 / V).in_regs) {
      run(VT{}, std::integral_constant<int, 4>{});
    } else {
      run(VT{}, std::integral_constant<int, 32 / V>{});
    }
  } else {
    using VT = std::integral_constant<int, 1>;
    if (plan_rows(rows, d, 1, 8).in_regs || !plan_rows(rows, d, 1, 16).in_regs) {
      run(VT{}, std::integral_constant<int, 8>{});
    } else {
      run(VT{}, std::integral_constant<int, 16>{});
    }
  }
}

// Blocks for a grid-stride kernel: enough to fill every SM (the kernel's occupancy, cached per
// kernel and block size), never more than the row groups. No device sync; capturable.
template <auto Kernel>
inline int64_t resident_blocks(int threads, size_t smem, int64_t wanted) {
  static int sms[64] = {0};
  static int occ[64 * 33] = {0};  // [device][threads / 32], for this kernel, smem == 0
  int dev = 0;
  C10_CUDA_CHECK(cudaGetDevice(&dev));
  if (dev < 0 || dev >= 64 || threads % 32 != 0 || threads > 1024) return wanted;
  if (sms[dev] == 0) {
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms[dev], cudaDevAttrMultiProcessorCount, dev));
  }
  int o = 0;
  if (smem == 0) {
    int& cached = occ[dev * 33 + threads / 32];
    if (cached == 0) C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&cached, Kernel, threads, 0));
    o = cached;
  } else {  // rare multi-pass path: not cached
    C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&o, Kernel, threads, smem));
  }
  if (o < 1) o = 1;
  const int64_t full = static_cast<int64_t>(sms[dev]) * o;
  return wanted < full ? wanted : full;
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// 16-byte access is possible on every row of t (1-D or 2-D, last stride 1) for chunks of vec.
inline bool vec_ok(const at::Tensor& t, int vec) {
  if (!aligned16(t.data_ptr())) return false;
  if (t.dim() >= 2 && t.size(0) > 1 && t.stride(0) % vec != 0) return false;
  return true;
}

inline int vec_width(at::ScalarType st) { return st == at::kFloat ? 4 : 8; }

inline bool is_supported_dtype(at::ScalarType st) {
  return st == at::kFloat || st == at::kHalf || st == at::kBFloat16;
}

// x, out: 2-D [T, d] CUDA, same shape/dtype/device, unit last stride.
inline void check_rows(const at::Tensor& x, const at::Tensor& out, const char* op) {
  TORCH_CHECK(x.is_cuda(), op, ": x must be a CUDA tensor, got device ", x.device());
  TORCH_CHECK(x.dim() == 2, op, ": x must be 2-D [T, d], got shape ", x.sizes());
  TORCH_CHECK(is_supported_dtype(x.scalar_type()), op,
              ": x must be float32, float16 or bfloat16, got ", x.scalar_type());
  TORCH_CHECK(x.size(1) <= 1 || x.stride(1) == 1, op, ": x must have stride(1) == 1, got strides ",
              x.strides());
  TORCH_CHECK(out.device() == x.device(), op, ": out must be on ", x.device(), ", got ", out.device());
  TORCH_CHECK(out.sizes() == x.sizes(), op, ": out must have x's shape ", x.sizes(), ", got ",
              out.sizes());
  TORCH_CHECK(out.scalar_type() == x.scalar_type(), op, ": out must have x's dtype ",
              x.scalar_type(), ", got ", out.scalar_type());
  TORCH_CHECK(out.size(1) <= 1 || out.stride(1) == 1, op,
              ": out must have stride(1) == 1, got strides ", out.strides());
}

// Optional per-row float32 [T] (or per-direction [n]) contiguous tensor.
inline const float* opt_f32(const std::optional<at::Tensor>& t, int64_t n, const at::Tensor& x,
                            const char* op, const char* name) {
  if (!t.has_value()) return nullptr;
  const at::Tensor& s = *t;
  TORCH_CHECK(s.device() == x.device(), op, ": ", name, " must be on ", x.device(), ", got ",
              s.device());
  TORCH_CHECK(s.scalar_type() == at::kFloat, op, ": ", name, " must be float32, got ",
              s.scalar_type());
  TORCH_CHECK(s.numel() == n && s.is_contiguous(), op, ": ", name, " must be a contiguous [", n,
              "] tensor, got shape ", s.sizes());
  return s.data_ptr<float>();
}

// A parameter vector/matrix with last dimension d: float32 or x's dtype, unit last stride.
inline void check_param(const at::Tensor& p, const at::Tensor& x, int64_t dim, const char* op,
                        const char* name) {
  TORCH_CHECK(p.device() == x.device(), op, ": ", name, " must be on ", x.device(), ", got ",
              p.device());
  TORCH_CHECK(p.dim() == dim, op, ": ", name, " must be ", dim, "-D, got shape ", p.sizes());
  TORCH_CHECK(p.size(-1) == x.size(1), op, ": ", name, " must have last dimension d = ", x.size(1),
              ", got shape ", p.sizes());
  TORCH_CHECK(p.scalar_type() == at::kFloat || p.scalar_type() == x.scalar_type(), op, ": ", name,
              " must be float32 or x's dtype ", x.scalar_type(), ", got ", p.scalar_type());
  TORCH_CHECK(p.size(-1) <= 1 || p.stride(-1) == 1, op, ": ", name,
              " must have stride(-1) == 1, got strides ", p.strides());
}

// A per-configuration table tensor: on x's device, of dtype and shape, contiguous.
inline void check_table(const at::Tensor& t, const at::Tensor& x, at::ScalarType dtype,
                        c10::IntArrayRef shape, const char* op, const char* name) {
  TORCH_CHECK(t.device() == x.device(), op, ": ", name, " must be on ", x.device(), ", got ",
              t.device());
  TORCH_CHECK(t.scalar_type() == dtype, op, ": ", name, " must be ", dtype, ", got ",
              t.scalar_type());
  TORCH_CHECK(t.sizes() == shape, op, ": ", name, " must have shape ", shape, ", got ", t.sizes());
  TORCH_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous");
}

inline void check_index(const at::Tensor& index, const at::Tensor& x, const char* op,
                        const char* name) {
  TORCH_CHECK(index.device() == x.device(), op, ": ", name, " must be on ", x.device(), ", got ",
              index.device());
  TORCH_CHECK(index.scalar_type() == at::kInt || index.scalar_type() == at::kLong, op, ": ", name,
              " must be int32 or int64, got ", index.scalar_type());
  TORCH_CHECK(index.numel() == x.size(0) && index.is_contiguous(), op, ": ", name,
              " must be a contiguous [T] tensor with T = ", x.size(0), ", got shape ", index.sizes());
}

// Calls f(T{}) with T the C++ type of x's dtype.
template <typename F> void dispatch_dtype(at::ScalarType st, const char* op, F&& f) {
  switch (st) {
    case at::kFloat: f(float{}); break;
    case at::kHalf: f(c10::Half{}); break;
    case at::kBFloat16: f(c10::BFloat16{}); break;
    default: TORCH_CHECK(false, op, ": unsupported dtype ", st);
  }
}

// Calls f(T{}, P{}) with P = float when the parameter is float32, else P = T.
template <typename F> void dispatch_dtype_param(at::ScalarType st, at::ScalarType pt, const char* op, F&& f) {
  dispatch_dtype(st, op, [&](auto t) {
    using T = decltype(t);
    if (pt == at::kFloat) f(T{}, float{});
    else f(T{}, T{});
  });
}

inline bool same_rows(const at::Tensor& x, const at::Tensor& out) {
  return x.data_ptr() == out.data_ptr() && (x.size(0) <= 1 || x.stride(0) == out.stride(0));
}

inline dim3 grid_of(const RowPlan& p) {
  TORCH_CHECK(p.blocks <= 0x7fffffffLL, "steerkit: too many rows for one launch");
  return dim3(static_cast<unsigned int>(p.blocks));
}

}  // namespace steerkit
