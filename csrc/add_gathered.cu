// steerkit_cuda::add_gathered: out[t] = x[t] + alpha[t] * bank[index[t]] where
// 0 <= index[t] < B; other rows are untouched (skipped when out is x, copied bit-exact otherwise).
//
// Floor: reads T*d and writes T*d elements of x's dtype (bank rows come from L2; in place, the
// untouched rows cost nothing); at [16384, 4096] bf16: 268 MB -> 90 us at 2.98 TB/s (H100).
// Launch: plan_rows (common.cuh): 16-byte chunks, all loads (x and the bank row) issued before
// the stores, 1 row per block (4 one-warp rows when d <= 1024). The index is read on the device
// and bounds-checked there; it is never read on the host.
#include "common.cuh"
#include "ops.h"

namespace steerkit {
namespace {

template <typename T, typename P, int VEC>
__global__ void __launch_bounds__(kMaxThreadsPerRow) add_gathered_kernel(const T* x, T* out, int64_t sx, int64_t so, const P* bank,
                                    int64_t sb, int64_t nbank, const void* index, bool idx64,
                                    const float* alpha, float alpha0, bool inplace, int64_t rows,
                                    int nchunks, int tpr) {
  const RowSlot slot = row_slot(tpr);
  if (slot.row >= rows) return;
  const T* xr = x + slot.row * sx;
  T* orow = out + slot.row * so;
  const int64_t b = load_index(index, idx64, slot.row);
  if (b < 0 || b >= nbank) {  // untouched row
    if (!inplace) copy_row<T, VEC>(xr, orow, nchunks, slot.lane, tpr);
    return;
  }
  const float a = alpha ? alpha[slot.row] : alpha0;
  const P* br = bank + b * sb;
  axpy_row<T, P, VEC>(xr, br, a, orow, nchunks, slot.lane, tpr);
}

}  // namespace

void add_gathered_cuda(const at::Tensor& x, at::Tensor& out, const at::Tensor& bank,
                       const at::Tensor& index, const std::optional<at::Tensor>& alpha,
                       double alpha0) {
  constexpr const char* op = "steerkit_cuda::add_gathered";
  check_rows(x, out, op);
  check_param(bank, x, 2, op, "bank");
  check_index(index, x, op, "index");
  const int64_t T = x.size(0), d = x.size(1);
  const float* ap = opt_f32(alpha, T, x, op, "alpha");
  if (T == 0 || d == 0) return;
  c10::cuda::CUDAGuard guard(x.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const bool inplace = same_rows(x, out);
  const bool idx64 = index.scalar_type() == at::kLong;
  dispatch_dtype_param(x.scalar_type(), bank.scalar_type(), op, [&](auto t, auto p) {
    using T_ = decltype(t);
    using P_ = decltype(p);
    const int vw = vec_width(x.scalar_type());
    const bool vec = d % vw == 0 && vec_ok(x, vw) && vec_ok(out, vw) && vec_ok(bank, vw);
    const RowPlan pl = plan_rows(T, d, vec ? vw : 1);
    const T_* xp = static_cast<const T_*>(x.data_ptr());
    T_* outp = static_cast<T_*>(out.data_ptr());
    const P_* bp = static_cast<const P_*>(bank.data_ptr());
    if (vec) {
      constexpr int V = 16 / sizeof(T_);
      add_gathered_kernel<T_, P_, V><<<grid_of(pl), pl.threads, 0, stream>>>(
          xp, outp, x.stride(0), out.stride(0), bp, bank.stride(0), bank.size(0), index.data_ptr(),
          idx64, ap, static_cast<float>(alpha0), inplace, T, pl.nchunks, pl.tpr);
    } else {
      add_gathered_kernel<T_, P_, 1><<<grid_of(pl), pl.threads, 0, stream>>>(
          xp, outp, x.stride(0), out.stride(0), bp, bank.stride(0), bank.size(0), index.data_ptr(),
          idx64, ap, static_cast<float>(alpha0), inplace, T, pl.nchunks, pl.tpr);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace steerkit
