// steerkit_cuda::sae_encode_topk_select: the selection step of sae_encode_topk's GEMM path
// (kernels/sae_encode_topk.py, encode_gemm with select="cuda"). One call takes one chunk of
// 16-bit pre-activations P [R, NF] (cuBLAS's product with its bias, features f0 .. f0 + NF - 1)
// and merges it into each row's running list of its KW largest keys so far, run [R, KW] int64,
// sorted descending; the last chunk of features writes values [R, k] and indices [R, k] instead.
//
// Floor: reading the chunk once, R * NF * 2 bytes: 2048 x 4096 bf16 = 16.8 MB -> 5.6 us at the
// H100's ~3 TB/s. The lists (KW * 8 bytes a row) are read and written only for rows whose list
// changes.
//
// Keys: (order-preserving 16-bit value, sign-extended) << 32 | (2^32 - 1 - feature). One signed
// compare orders by value, then by lower feature (equal values: the lower index wins); kMinKey
// sorts below every real key and fills lists that have fewer than KW entries. bf16 and fp16 are
// both sign-magnitude, so the same bit transform orders either.
//
// Work: one warp per row, 4 rows a block. A lane holds a segment of the row in registers (16
// 16-byte vectors: 4096 columns per warp; unaligned rows: 64 scalars, 2048 columns), two 16-bit
// values a 32-bit word.
// - The first segment of the first chunk starts the lists: the words turn into the biased order
//   u (0 .. 65535). KW <= 64 and a full segment (start_list_capped): a threshold that at most
//   128 values reach and at least KW do, by bisection between the smallest of KW parts' largest
//   values and the largest value (a few steps: it stops as soon as the count fits); those keys
//   compacted and the top KW of them taken by rank, ties settled by the key itself. Otherwise,
//   or when more than 128 values tie (start_list): the KW-th largest u by a full bisection (16
//   steps), ties at it by a bisection on the column, the selected keys ordered by rank.
// - Every other segment, usually (16-byte rows, theta not negative and from an earlier segment,
//   so a key enters iff u > u(theta)): one pass (append_staged). Each lane flags its groups of 8
//   positions whose 16-bit SIMD max (words in s-form, the sign bit flipped: negative values sit
//   below u(theta)) beats u(theta), stages up to kStage of them in shared memory and tests only
//   those; a warp scan of the lanes' counts gives each key its candidate slot (128 slots, 64 for
//   KW = 256); then one merge into the list by rank (each list key moves down by the candidates
//   above it, each candidate goes to the list keys above it, found by binary search, plus the
//   candidates above it).
// - Otherwise (a lane with more than kStage flagged groups, more keys than slots, a negative
//   theta, equal values that may win), in rounds: each group flagged (u >= u(theta)) in some lane
//   is tested exactly on its 8 positions in each lane, OR-ed over the warp; each position that
//   passes somewhere is balloted and its winners take consecutive candidate slots. A full buffer
//   (or the segment's end) is merged, which raises theta, and the scan resumes where it stopped.
// Exact for every row; no host sync; nothing allocated (graph safe).
//
// Host: sae_encode_topk_chunks runs one block of rows' feature chunks (cuBLAS product, then this
// selection) in a C++ loop.
#include <ATen/ops/addmm.h>

#include "common.cuh"
#include "ops.h"

namespace steerkit {
namespace {

constexpr int kRowsPerBlock = 4;   // one warp per row
constexpr int kVecs = 16;          // 16-byte vectors a lane holds (vector path)
constexpr int kScalars = 64;       // 16-bit values a lane holds (scalar path)
// candidate slots per row: 128 (the second chunk brings about 64 newcomers a row to a list of 64,
// so 64 slots sent half the rows to a second round); 64 for KW = 256, which spilled with 128
constexpr int cand_slots(int KW) { return KW >= 256 ? 64 : 128; }
constexpr int kStartCap = 128;     // keys start_list_capped ranks (its buffer: the candidate slots)
constexpr int kStage = 8;          // flagged groups a lane stages for append_staged
constexpr unsigned kFull = 0xFFFFFFFFu;
constexpr long long kMinKey = -0x7FFFFFFFFFFFFFFFLL - 1;

__device__ __forceinline__ long long make_key(unsigned u, int feature) {
  const long long hi = static_cast<long long>(static_cast<int>(u) - 32768);
  return static_cast<long long>(static_cast<unsigned long long>(hi) << 32) |
         static_cast<long long>(~static_cast<unsigned>(feature));
}

// u of value i (0 .. N-1) of a lane's segment
template <int W> __device__ __forceinline__ unsigned u_of(const unsigned (&w)[W], int i) {
  return (w[i >> 1] >> ((i & 1) * 16)) & 0xFFFFu;
}

template <bool VEC> struct Layout {
  static constexpr int N = VEC ? kVecs * 8 : kScalars;  // values a lane holds
  static constexpr int WIDTH = 32 * N;                   // columns a segment covers
  // column (within the segment) of value i of lane `lane`
  static __device__ __forceinline__ int col(int i, int lane) {
    return VEC ? ((i >> 3) * 32 + lane) * 8 + (i & 7) : i * 32 + lane;
  }
};

// Loads the segment at row + s0 (n valid columns left in the row) as raw 16-bit words; columns
// past the row's end get raw 0xFFFF (u = 0) and are excluded by the callers' column checks.
template <bool VEC>
__device__ __forceinline__ void load_segment(const unsigned short* row, int s0, int n, int lane,
                                             unsigned (&w)[Layout<VEC>::N / 2]) {
  if constexpr (VEC) {
#pragma unroll
    for (int j = 0; j < kVecs; ++j) {
      const int c = (j * 32 + lane) * 8;
      uint4 v = make_uint4(kFull, kFull, kFull, kFull);  // raw 0xFFFF: u = 0, s-form 0x7FFF
      if (c < n) v = __ldcs(reinterpret_cast<const uint4*>(row + s0 + c));
      w[4 * j] = v.x;
      w[4 * j + 1] = v.y;
      w[4 * j + 2] = v.z;
      w[4 * j + 3] = v.w;
    }
  } else {
#pragma unroll
    for (int p = 0; p < kScalars / 2; ++p) {
      const int c0 = (2 * p) * 32 + lane, c1 = c0 + 32;
      const unsigned a = c0 < n ? __ldcs(row + s0 + c0) : 0xFFFFu;  // raw 0xFFFF: u = 0, s-form 0x7FFF
      const unsigned b = c1 < n ? __ldcs(row + s0 + c1) : 0xFFFFu;
      w[p] = a | (b << 16);
    }
  }
}

// Raw words -> s-form: the sign bit flipped. Non-negative values are then their biased order u
// (u orders as the values do: -NaN < -inf < ... < -0 < +0 < ... < NaN; sform_to_u gives it for
// negative values too), and
// every negative value is below 0x8000, so a threshold u(theta) >= 0x8000 compares exactly
// against s-form words (one XOR a word instead of the order transform).
template <int W> __device__ __forceinline__ void to_sform(unsigned (&w)[W]) {
#pragma unroll
  for (int p = 0; p < W; ++p) w[p] ^= 0x80008000u;
}

// s-form -> order u (negative values: the other 15 bits flipped too).
__device__ __forceinline__ unsigned s_to_u(unsigned s) { return s ^ ((s & 0x8000u) ? 0u : 0x7FFFu); }

template <int W> __device__ __forceinline__ void sform_to_u(unsigned (&w)[W]) {
#pragma unroll
  for (int p = 0; p < W; ++p) {
    const unsigned neg = ~(w[p] >> 15) & 0x00010001u;  // halves whose sign (s-form) says negative
    w[p] ^= neg * 0x7FFFu;
  }
}

__device__ __forceinline__ int warp_sum(int v) { return __reduce_add_sync(kFull, v); }

// Merge cand[0 .. cnt) (unique keys, none in the list) into the sorted list L[0 .. KW).
template <int KW> __device__ void merge(long long* L, const long long* cand, int cnt, int lane) {
  constexpr int PL = (KW + 31) / 32, PC = cand_slots(KW) / 32;
  __syncwarp();
  long long lk[PL], ck[PC];
  int lr[PL], cr[PC];
#pragma unroll
  for (int p = 0; p < PL; ++p) {
    const int i = lane + 32 * p;
    lk[p] = i < KW ? L[i] : kMinKey;
    lr[p] = i;
  }
#pragma unroll
  for (int q = 0; q < PC; ++q) {
    const int c = lane + 32 * q;
    ck[q] = c < cnt ? cand[c] : kMinKey;
    cr[q] = 0;
  }
  for (int c = 0; c < cnt; ++c) {  // candidates above each key
    const long long x = cand[c];
#pragma unroll
    for (int p = 0; p < PL; ++p) lr[p] += x > lk[p];
#pragma unroll
    for (int q = 0; q < PC; ++q)
      if (32 * q < cnt) cr[q] += x > ck[q];  // uniform: slots past cnt skip
  }
#pragma unroll
  for (int q = 0; q < PC; ++q) {  // list keys above each candidate (binary search)
    if (32 * q >= cnt) break;  // uniform
    int lo = 0, hi = KW;
    while (lo < hi) {
      const int mid = (lo + hi) >> 1;
      if (L[mid] > ck[q]) lo = mid + 1;
      else hi = mid;
    }
    cr[q] += lo;
  }
  __syncwarp();
#pragma unroll
  for (int p = 0; p < PL; ++p)
    if (lane + 32 * p < KW && lr[p] < KW) L[lr[p]] = lk[p];
#pragma unroll
  for (int q = 0; q < PC; ++q)
    if (lane + 32 * q < cnt && cr[q] < KW) L[cr[q]] = ck[q];
  __syncwarp();
}

// The lane index, read so that the compiler cannot hoist values computed from it out of loops
// (it would keep one register per unrolled value: the kernel spilled without this).
__device__ __forceinline__ int lane_id() {
  int l;
  asm volatile("mov.u32 %0, %%laneid;" : "=r"(l));
  return l;
}

// An empty asm that "may change" the segment's words: values extracted from them cannot be
// hoisted out of the loop that calls it (the compiler kept all 128 extracted values in registers).
template <int W> __device__ __forceinline__ void opaque(unsigned (&w)[W]) {
#pragma unroll
  for (int p = 0; p < W; ++p) asm volatile("" : "+r"(w[p]));
}

// The 16-bit value at position e (0 .. 7) of a group held in the words a .. d.
__device__ __forceinline__ unsigned group_u(unsigned a, unsigned b, unsigned c, unsigned d, int e) {
  const unsigned word = e < 4 ? (e < 2 ? a : b) : (e < 6 ? c : d);
  return (word >> ((e & 1) * 16)) & 0xFFFFu;
}

// The exact test of one group of 8 positions (g .. g + 7 of each lane's segment, in the words
// a .. d) against theta: the keys that beat it take consecutive candidate slots by ballot, in
// position order, from positions start .. stop - 1. Returns (cnt, stop), stop lowered to the
// position where the buffer would overflow. Not inlined, like select_group: one copy of these
// rare paths keeps the kernel small (unrolled copies stalled on instruction-cache misses).
template <bool VEC, int CAND>
__device__ __noinline__ int2 append_group(unsigned a, unsigned b, unsigned c2, unsigned d, int g, int start,
                                          int stop, int cnt, unsigned ut, int tcol, bool open, bool uform, int n,
                                          int base, long long* C) {
  const int lane = lane_id();
  // the positions whose exact test passes in this lane, OR-ed over the warp: only those take a
  // ballot (late chunks: usually one position of the 8)
  unsigned bits = 0;
#pragma unroll
  for (int e = 0; e < 8; ++e) {
    const int pos = g + e;
    const unsigned u = uform ? group_u(a, b, c2, d, e) : s_to_u(group_u(a, b, c2, d, e));
    const int c = Layout<VEC>::col(pos, lane);
    const bool beat = pos >= start && pos < stop && c < n && (open || u > ut || (u == ut && c < tcol));
    bits |= static_cast<unsigned>(beat) << e;
  }
  unsigned todo = __reduce_or_sync(kFull, bits);
  while (todo) {  // in position order
    const int e = __ffs(todo) - 1;
    todo &= todo - 1;
    const int pos = g + e;
    const bool beat = (bits >> e) & 1u;
    const unsigned bal = __ballot_sync(kFull, beat);
    if (cnt + __popc(bal) > CAND) {  // no room: this position starts the next round
      stop = pos;
      break;
    }
    if (beat) {
      const unsigned u = uform ? group_u(a, b, c2, d, e) : s_to_u(group_u(a, b, c2, d, e));
      C[cnt + __popc(bal & ((1u << lane) - 1u))] = make_key(u, base + Layout<VEC>::col(pos, lane));
    }
    cnt += __popc(bal);
  }
  return make_int2(cnt, stop);
}

// start_list's compaction of one group: values above t, and equal to t in columns <= cut.
template <bool VEC>
__device__ __noinline__ int select_group(unsigned a, unsigned b, unsigned c2, unsigned d, int g, int cnt,
                                         unsigned t, int cut, int base, long long* L) {
  const int lane = lane_id();
  for (int e = 0; e < 8; ++e) {
    const unsigned u = group_u(a, b, c2, d, e);
    const int c = Layout<VEC>::col(g + e, lane);
    const bool sel = u > t || (u == t && c <= cut);  // padding: u = 0, c > cut
    const unsigned bal = __ballot_sync(kFull, sel);
    if (sel) L[cnt + __popc(bal & ((1u << lane) - 1u))] = make_key(u, base + c);
    cnt += __popc(bal);
  }
  return cnt;
}

// The usual later segment in one pass: theta is not negative (the words are in s-form, so
// negative values and padding are below u(theta)) and comes from an earlier segment (equal
// values never win), so a key enters iff u > u(theta). Each lane stages the groups of 8
// positions whose max beats u(theta) (16-bit SIMD max) in shared memory, then tests only those:
// the work follows the lane's own few candidates, not the warp's union of flagged groups. Each
// lane's keys take consecutive slots after a warp scan of the counts. Returns the number of
// keys in C, or -1 (C's contents then unused) when a lane flags more than kStage groups or the
// keys would not fit in CAND slots: the caller then runs the rounds, which handle any count.
template <bool VEC, int CAND>
__device__ __forceinline__ int append_staged(const unsigned (&w)[Layout<VEC>::N / 2], unsigned ut, int base,
                                             long long* C, uint4* S, int* SG) {
  using L_ = Layout<VEC>;
  const int lane = lane_id();
  int ns = 0;  // groups this lane staged
#pragma unroll
  for (int g = 0; g < L_::N; g += 8) {
    const int q = g / 2;
    const unsigned m = __vmaxu2(__vmaxu2(w[q], w[q + 1]), __vmaxu2(w[q + 2], w[q + 3]));
    if (max(m & 0xFFFFu, m >> 16) > ut) {
      if (ns < kStage) {
        S[ns * 32 + lane] = make_uint4(w[q], w[q + 1], w[q + 2], w[q + 3]);
        SG[ns * 32 + lane] = g;
      }
      ++ns;
    }
  }
  const int most = __reduce_max_sync(kFull, ns);
  if (most > kStage) return -1;
  __syncwarp();
  int cnt = 0;
#pragma unroll 1
  for (int j = 0; j < most; ++j) {
    unsigned bits = 0, x = 0, y = 0, z = 0, v = 0;
    int g = 0;
    if (j < ns) {
      const uint4 q = S[j * 32 + lane];
      x = q.x, y = q.y, z = q.z, v = q.w;
      g = SG[j * 32 + lane];
#pragma unroll
      for (int e = 0; e < 8; ++e) bits |= static_cast<unsigned>(group_u(x, y, z, v, e) > ut) << e;
    }
    const int mine = __popc(bits);
    int inc = mine;  // inclusive scan of the lanes' counts
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int t = __shfl_up_sync(kFull, inc, o);
      if (lane >= o) inc += t;
    }
    const int total = __shfl_sync(kFull, inc, 31);
    if (cnt + total > CAND) return -1;
    int slot = cnt + inc - mine;
    while (bits) {
      const int e = __ffs(bits) - 1;
      bits &= bits - 1;
      C[slot++] = make_key(group_u(x, y, z, v, e), base + L_::col(g + e, lane));
    }
    cnt += total;
  }
  __syncwarp();
  return cnt;
}

// Places the n unique keys of src (n <= 32 * PB) by rank, largest first: dst[r] = the key that
// r keys exceed, for r < KW. src may be dst: every key is read before any is written.
template <int PB, int KW> __device__ void place_by_rank(const long long* src, int n, long long* dst) {
  const int lane = lane_id();
  long long key[PB];
  int rank[PB];
#pragma unroll
  for (int p = 0; p < PB; ++p) {
    const int j = lane + 32 * p;
    key[p] = j < n ? src[j] : kMinKey;
    rank[p] = 0;
  }
#pragma unroll 1
  for (int c = 0; c < n; ++c) {
    const long long x = src[c];
#pragma unroll
    for (int p = 0; p < PB; ++p) rank[p] += x > key[p];
  }
  __syncwarp();
#pragma unroll
  for (int p = 0; p < PB; ++p)
    if (lane + 32 * p < n && rank[p] < KW) dst[rank[p]] = key[p];
  __syncwarp();
}

// Starts the lists from the first segment (n valid columns, padding u = 0): L[0 .. KW) = its
// `want` = min(n, KW) largest keys sorted, then kMinKey.
template <int KW, bool VEC>
__device__ void start_list(unsigned (&w)[Layout<VEC>::N / 2], int n, int base, long long* L) {
  using L_ = Layout<VEC>;
  const int want = min(n, KW);
  int lo = 0, hi = 65536;  // count(u >= lo) >= want > count(u >= hi); mids >= 1 skip padding
#pragma unroll 1
  while (hi - lo > 1) {
    opaque(w);
    const int mid = (lo + hi) >> 1;
    int c = 0;
#pragma unroll
    for (int p = 0; p < L_::N / 2; ++p)
      c += ((w[p] & 0xFFFFu) >= static_cast<unsigned>(mid)) + ((w[p] >> 16) >= static_cast<unsigned>(mid));
    if (warp_sum(c) >= want) lo = mid;
    else hi = mid;
  }
  const unsigned t = static_cast<unsigned>(lo);  // u of the want-th largest value
  int gt = 0, eq = 0;
  opaque(w);
#pragma unroll
  for (int i = 0; i < L_::N; ++i) {
    gt += u_of(w, i) > t;  // padding (u = 0) never above t
    eq += u_of(w, i) == t;
  }
  const int need = want - warp_sum(gt);
  const int n_eq = warp_sum(eq) - (t == 0 ? L_::WIDTH - n : 0);  // padding equals t = 0
  int cut = n - 1;  // equal values: only columns <= cut (the `need` lowest)
  if (n_eq > need) {
    int a = -1;  // count(equal, col <= cut) >= need > count(equal, col <= a)
#pragma unroll 1
    while (cut - a > 1) {
      opaque(w);
      const int m = (a + cut) >> 1;
      const int lane = lane_id();
      int c = 0;
#pragma unroll
      for (int i = 0; i < L_::N; ++i) c += u_of(w, i) == t && L_::col(i, lane) <= m;
      if (warp_sum(c) >= need) cut = m;
      else a = m;
    }
  }
  int cnt = 0;  // compact the selected keys into L[0 .. want)
#pragma unroll
  for (int g = 0; g < L_::N; g += 8) {
    opaque(w);
    bool any = false;
#pragma unroll
    for (int e = 0; e < 8; ++e) any |= u_of(w, g + e) >= t;
    if (!__any_sync(kFull, any)) continue;
    const int q = g / 2;
    cnt = select_group<VEC>(w[q], w[q + 1], w[q + 2], w[q + 3], g, cnt, t, cut, base, L);
  }
  __syncwarp();
  place_by_rank<(KW + 31) / 32, KW>(L, want, L);
  for (int i = want + lane_id(); i < KW; i += 32) L[i] = kMinKey;
  __syncwarp();
}

// Starts the lists from a full first segment (words in u-form), KW <= 64, without settling ties
// by bisection: a threshold lo with KW <= count(u >= lo) <= kStartCap, by bisection between the
// bounds the segment gives (the smallest of KW parts' largest values: KW values reach it; the
// largest value), then every key with u >= lo compacted into B and the top KW of them placed in
// L by rank (keys are unique, so ties at lo are settled by the column). Returns false, L
// untouched, when more than kStartCap values tie at one u (start_list then settles them).
template <int KW, bool VEC>
__device__ bool start_list_capped(unsigned (&w)[Layout<VEC>::N / 2], int base, long long* L, long long* B) {
  using L_ = Layout<VEC>;
  constexpr int W = L_::N / 2;               // words a lane holds
  constexpr int P = KW >= 32 ? KW / 32 : 1;  // parts a lane
  constexpr int PW = W / P;                  // words a part
  static_assert(KW <= 64 && kStartCap % 32 == 0 && kStartCap >= KW, "start_list_capped: KW <= 64");
  const int lane = lane_id();
  unsigned lo = 0xFFFFu, hi = 0u;
#pragma unroll
  for (int p = 0; p < P; ++p) {
    unsigned v = w[p * PW];
#pragma unroll
    for (int q = 1; q < PW; ++q) v = __vmaxu2(v, w[p * PW + q]);
    const unsigned m = max(v & 0xFFFFu, v >> 16);
    if (KW >= 32 || lane < KW) lo = min(lo, m);  // KW parts in all
    hi = max(hi, m);
  }
  lo = __reduce_min_sync(kFull, lo);
  hi = __reduce_max_sync(kFull, hi) + 1u;  // count(u >= hi) = 0
  auto count = [&](unsigned t) {
    int c = 0;
#pragma unroll
    for (int q = 0; q < W; ++q) c += ((w[q] & 0xFFFFu) >= t) + ((w[q] >> 16) >= t);
    return c;
  };
  int n_lo = warp_sum(count(lo));
#pragma unroll 1
  while (n_lo > kStartCap && hi - lo > 1) {
    opaque(w);
    const unsigned mid = (lo + hi) >> 1;
    const int c = warp_sum(count(mid));
    if (c >= KW) {
      lo = mid;
      n_lo = c;
    } else {
      hi = mid;
    }
  }
  if (n_lo > kStartCap) return false;
  opaque(w);
  const int mine = count(lo);
  int inc = mine;  // inclusive scan of the lanes' counts: each lane's keys go to B[off ..)
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int t = __shfl_up_sync(kFull, inc, o);
    if (lane >= o) inc += t;
  }
  int off = inc - mine;
  opaque(w);
#pragma unroll
  for (int i = 0; i < L_::N; ++i) {
    const unsigned u = u_of(w, i);
    if (u >= lo) B[off++] = make_key(u, base + L_::col(i, lane));
  }
  __syncwarp();
  place_by_rank<kStartCap / 32, KW>(B, n_lo, L);
  return true;
}

// FIRST (the lists start in this chunk's first segment) needs more registers: 2 blocks an SM
// there (up to 255 registers a thread), 4 elsewhere (128), both without spills.
template <int KW, bool VEC, bool FIRST>
__global__ void __launch_bounds__(32 * kRowsPerBlock, FIRST ? 2 : 4)
topk_select_kernel(const unsigned short* P, int64_t sp, long long* run, unsigned short* values,
                   int64_t sv, int64_t* indices, int64_t si, int rows, int NF, int f0, int k,
                   bool last, bool half) {
  using L_ = Layout<VEC>;
  __shared__ long long lists[kRowsPerBlock][KW];
  __shared__ long long cands[kRowsPerBlock][FIRST && KW <= 64 && kStartCap > cand_slots(KW) ? kStartCap : cand_slots(KW)];
  __shared__ uint4 stage[kRowsPerBlock][kStage * 32];  // append_staged's groups
  __shared__ int stage_g[kRowsPerBlock][kStage * 32];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + warp;
  if (r >= rows) return;  // whole warps leave: every shuffle below is warp-uniform
  long long* L = lists[warp];
  long long* C = cands[warp];
  long long* grow = run + r * KW;
  const unsigned short* prow = P + r * sp;

  // Later chunks, KW <= 64: the list is read into registers with the segment, so its latency
  // overlaps the segment's (nearly every row merges newcomers in every chunk).
  constexpr int PF = !FIRST && KW <= 64 ? (KW + 31) / 32 : 0;
  long long pf[PF > 0 ? PF : 1];
  if constexpr (PF > 0) {
#pragma unroll
    for (int p = 0; p < PF; ++p) pf[p] = lane + 32 * p < KW ? grow[lane + 32 * p] : kMinKey;
  }
  bool have = false, dirty = false;  // L holds the list; L differs from run[r]
  auto fetch_list = [&]() {  // L = run[r], once, when a merge or the output needs it
    if (have) return;
    if constexpr (PF > 0) {
#pragma unroll
      for (int p = 0; p < PF; ++p)
        if (lane + 32 * p < KW) L[lane + 32 * p] = pf[p];
    } else {
      for (int i = lane; i < KW; i += 32) L[i] = grow[i];
    }
    __syncwarp();
    have = true;
  };
  long long theta;  // the list's KW-th key
  if constexpr (FIRST) theta = kMinKey;
  else if constexpr (PF > 0) theta = __shfl_sync(kFull, pf[(KW - 1) / 32], (KW - 1) % 32);
  else theta = grow[KW - 1];
  unsigned w[L_::N / 2];
#pragma unroll 1
  for (int s0 = 0; s0 < NF; s0 += L_::WIDTH) {
    const int n = min(NF - s0, L_::WIDTH);
    load_segment<VEC>(prow, s0, n, lane, w);
    if constexpr (FIRST) {
      if (s0 == 0) {
        to_sform(w);
        sform_to_u(w);
        bool started = false;
        if constexpr (KW <= 64) started = n == L_::WIDTH && start_list_capped<KW, VEC>(w, f0, L, C);
        if (!started) start_list<KW, VEC>(w, n, f0, L);
        have = dirty = true;
        theta = L[KW - 1];
        continue;
      }
    }
    // Merge the segment into the list in rounds: a round appends the keys above theta, in
    // position order, until the candidate buffer would overflow at position `stop`; then the
    // buffer is merged (raising theta) and the next round resumes at `stop`. The words stay in
    // s-form while theta is non-negative (u(theta) >= 0x8000), else they turn to u-form.
    to_sform(w);
    // the usual case in one pass (append_staged; 16-byte rows: the scalar layout's kernels
    // spilled with it); else the rounds below
    if (VEC && theta != kMinKey) {
      const unsigned ut = static_cast<unsigned>(static_cast<int>(theta >> 32) + 32768);
      const int tcol = static_cast<int>(~static_cast<unsigned>(theta)) - f0 - s0;
      if (ut >= 0x8000u && tcol <= 0) {
        const int cnt = append_staged<VEC, cand_slots(KW)>(w, ut, f0 + s0, C, stage[warp], stage_g[warp]);
        if (cnt >= 0) {
          if (cnt > 0) {
            fetch_list();
            merge<KW>(L, C, cnt, lane);
            dirty = true;
            theta = L[KW - 1];
          }
          continue;
        }
      }
    }
    bool uform = false;
    int start = 0;
#pragma unroll 1
    while (start < L_::N) {
      opaque(w);
      // only values with u >= u(theta) can beat theta; equal ones need a lower column
      const unsigned ut = theta == kMinKey ? 0u : static_cast<unsigned>(static_cast<int>(theta >> 32) + 32768);
      const int tcol = theta == kMinKey ? 0x7FFFFFFF : static_cast<int>(~static_cast<unsigned>(theta)) - f0 - s0;
      const bool open = theta == kMinKey;
      if (ut < 0x8000u && !uform) {  // a negative theta: compare orders
        sform_to_u(w);
        uform = true;
      }
      // groups of 8 positions that hold a value >= u(theta) in some lane: the max of each
      // group's 4 words by 16-bit SIMD max, one bit a group, OR-ed over the warp
      unsigned mask = 0;
#pragma unroll
      for (int g = 0; g < L_::N; g += 8) {
        const int q = g / 2;
        const unsigned m = __vmaxu2(__vmaxu2(w[q], w[q + 1]), __vmaxu2(w[q + 2], w[q + 3]));
        mask |= static_cast<unsigned>(max(m & 0xFFFFu, m >> 16) >= ut) << (g / 8);
      }
      mask = __reduce_or_sync(kFull, mask);
      int stop = L_::N, cnt = 0;
#pragma unroll
      for (int g = 0; g < L_::N; g += 8) {
        if (!((mask >> (g / 8)) & 1u) || g + 8 <= start || g >= stop) continue;  // uniform
        const int q = g / 2;
        const int2 r2 = append_group<VEC, cand_slots(KW)>(w[q], w[q + 1], w[q + 2], w[q + 3], g, start, stop, cnt, ut, tcol, open,
                                          uform, n, f0 + s0, C);
        cnt = r2.x;
        stop = r2.y;
      }
      if (cnt > 0) {
        fetch_list();
        merge<KW>(L, C, cnt, lane);
        dirty = true;
        theta = L[KW - 1];
      }
      start = stop;
    }
  }
  if (last) {
    fetch_list();
    for (int j = lane; j < k; j += 32) {
      const long long key = L[j];
      const int o = static_cast<int>(key >> 32);  // order: back to raw bits (an involution)
      unsigned b = static_cast<unsigned>(o ^ ((o >> 15) & 0x7FFF)) & 0xFFFFu;
      // clamp_min(0): negative values -> +0 (-0 and NaN kept, as the reference keeps them)
      const bool nan = half ? (b & 0x7FFFu) > 0x7C00u : (b & 0x7FFFu) > 0x7F80u;
      if ((b & 0x8000u) && (b & 0x7FFFu) && !nan) b = 0;
      values[r * sv + j] = static_cast<unsigned short>(b);
      indices[r * si + j] = static_cast<int64_t>(~static_cast<unsigned>(key));
    }
  } else if (dirty) {
    for (int i = lane; i < KW; i += 32) grow[i] = L[i];
  }
}

template <int KW, bool VEC>
void launch_vec(bool first, dim3 grid, cudaStream_t stream, const unsigned short* P, int64_t sp,
                long long* run, unsigned short* values, int64_t sv, int64_t* indices, int64_t si,
                int rows, int NF, int f0, int k, bool last, bool half) {
  if (first)
    topk_select_kernel<KW, VEC, true><<<grid, 32 * kRowsPerBlock, 0, stream>>>(
        P, sp, run, values, sv, indices, si, rows, NF, f0, k, last, half);
  else
    topk_select_kernel<KW, VEC, false><<<grid, 32 * kRowsPerBlock, 0, stream>>>(
        P, sp, run, values, sv, indices, si, rows, NF, f0, k, last, half);
}

template <int KW>
void launch(bool vec, bool first, dim3 grid, cudaStream_t stream, const unsigned short* P,
            int64_t sp, long long* run, unsigned short* values, int64_t sv, int64_t* indices,
            int64_t si, int rows, int NF, int f0, int k, bool last, bool half) {
  if (vec) launch_vec<KW, true>(first, grid, stream, P, sp, run, values, sv, indices, si, rows, NF, f0, k, last, half);
  else launch_vec<KW, false>(first, grid, stream, P, sp, run, values, sv, indices, si, rows, NF, f0, k, last, half);
}

}  // namespace

void sae_encode_topk_select_cuda(const at::Tensor& chunk, at::Tensor& run, at::Tensor& values,
                                 at::Tensor& indices, int64_t f0, int64_t k, bool first,
                                 bool last) {
  constexpr const char* op = "steerkit_cuda::sae_encode_topk_select";
  TORCH_CHECK(chunk.is_cuda() && chunk.dim() == 2, op, ": chunk must be a 2-D CUDA tensor, got ",
              chunk.sizes(), " on ", chunk.device());
  const auto st = chunk.scalar_type();
  TORCH_CHECK(st == at::kBFloat16 || st == at::kHalf, op, ": chunk must be bfloat16 or float16, got ",
              st);
  TORCH_CHECK(chunk.size(1) <= 1 || chunk.stride(1) == 1, op, ": chunk must have stride(1) == 1");
  const int64_t R = chunk.size(0), NF = chunk.size(1);
  TORCH_CHECK(run.device() == chunk.device() && run.scalar_type() == at::kLong && run.dim() == 2 &&
                  run.is_contiguous() && run.size(0) >= R,
              op, ": run must be a contiguous int64 [>= rows, KW] tensor on ", chunk.device(),
              ", got ", run.sizes(), " ", run.scalar_type());
  const int64_t KW = run.size(1);
  TORCH_CHECK(KW == 16 || KW == 32 || KW == 64 || KW == 128 || KW == 256, op,
              ": run's width KW must be 16, 32, 64, 128 or 256, got ", KW);
  TORCH_CHECK(k >= 1 && k <= KW, op, ": k must be in [1, KW = ", KW, "], got ", k);
  TORCH_CHECK(NF >= 1 && f0 >= 0 && f0 + NF < 0xFFFFFFFFLL, op, ": bad feature range f0 = ", f0,
              ", NF = ", NF);
  TORCH_CHECK(values.device() == chunk.device() && values.scalar_type() == st && values.dim() == 2 &&
                  values.size(0) == R && values.size(1) == k && (k <= 1 || values.stride(1) == 1),
              op, ": values must be a [rows, k] tensor of chunk's dtype with unit column stride, got ",
              values.sizes(), " ", values.scalar_type());
  TORCH_CHECK(indices.device() == chunk.device() && indices.scalar_type() == at::kLong &&
                  indices.dim() == 2 && indices.size(0) == R && indices.size(1) == k &&
                  (k <= 1 || indices.stride(1) == 1),
              op, ": indices must be an int64 [rows, k] tensor with unit column stride, got ",
              indices.sizes(), " ", indices.scalar_type());
  if (R == 0) return;
  c10::cuda::CUDAGuard guard(chunk.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const bool vec = NF % 8 == 0 && vec_ok(chunk, 8);
  const dim3 grid(static_cast<unsigned>((R + kRowsPerBlock - 1) / kRowsPerBlock));
  auto* P = static_cast<const unsigned short*>(chunk.data_ptr());
  auto* rp = static_cast<long long*>(run.data_ptr());
  auto* vp = static_cast<unsigned short*>(values.data_ptr());
  auto* ip = indices.data_ptr<int64_t>();
  const int64_t sp = chunk.stride(0), sv = values.stride(0), si = indices.stride(0);
  const bool half = st == at::kHalf;
  const int rows = static_cast<int>(R), nf = static_cast<int>(NF), f = static_cast<int>(f0),
            kk = static_cast<int>(k);
  switch (KW) {
    case 16: launch<16>(vec, first, grid, stream, P, sp, rp, vp, sv, ip, si, rows, nf, f, kk, last, half); break;
    case 32: launch<32>(vec, first, grid, stream, P, sp, rp, vp, sv, ip, si, rows, nf, f, kk, last, half); break;
    case 64: launch<64>(vec, first, grid, stream, P, sp, rp, vp, sv, ip, si, rows, nf, f, kk, last, half); break;
    case 128: launch<128>(vec, first, grid, stream, P, sp, rp, vp, sv, ip, si, rows, nf, f, kk, last, half); break;
    default: launch<256>(vec, first, grid, stream, P, sp, rp, vp, sv, ip, si, rows, nf, f, kk, last, half); break;
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// The feature chunks of one block of rows: P's first R * nf entries hold each chunk's product
// (cuBLAS through addmm, bias in its epilogue), then the selection merges it. The loop runs here,
// not in Python: at ~100 us per chunk the Python loop's host time matched the GPU's (H100 host),
// so the GPU waited between chunks.
void sae_encode_topk_chunks_cuda(const at::Tensor& xs, const at::Tensor& W, const at::Tensor& b,
                                 at::Tensor& P, at::Tensor& run, at::Tensor& values,
                                 at::Tensor& indices, int64_t k, int64_t fc) {
  constexpr const char* op = "steerkit_cuda::sae_encode_topk_chunks";
  TORCH_CHECK(xs.is_cuda() && xs.dim() == 2 && W.dim() == 2 && b.dim() == 1, op,
              ": xs [R, d] (CUDA), W [d, F] and b [F] expected, got ", xs.sizes(), ", ", W.sizes(),
              ", ", b.sizes());
  const auto st = xs.scalar_type();
  TORCH_CHECK((st == at::kBFloat16 || st == at::kHalf) && W.scalar_type() == st &&
                  b.scalar_type() == st && P.scalar_type() == st,
              op, ": xs, W, b and P must share one 16-bit dtype");
  TORCH_CHECK(W.device() == xs.device() && b.device() == xs.device() && P.device() == xs.device(),
              op, ": all tensors must be on ", xs.device());
  const int64_t R = xs.size(0), F = W.size(1);
  TORCH_CHECK(W.size(0) == xs.size(1) && b.size(0) == F, op, ": shapes do not match: xs ",
              xs.sizes(), ", W ", W.sizes(), ", b ", b.sizes());
  TORCH_CHECK(fc >= 1 && P.dim() == 1 && P.is_contiguous() && P.numel() >= R * std::min(fc, F), op,
              ": P must be a contiguous 1-D buffer of >= R * min(fc, F) entries, got ", P.sizes(),
              " for fc = ", fc);
  if (R == 0 || F == 0) return;
  for (int64_t f0 = 0; f0 < F; f0 += fc) {
    const int64_t nf = std::min(fc, F - f0);
    at::Tensor p = P.narrow(0, 0, R * nf).view({R, nf});
    at::addmm_out(p, b.narrow(0, f0, nf), xs, W.narrow(1, f0, nf));
    sae_encode_topk_select_cuda(p, run, values, indices, f0, k, f0 == 0, f0 + nf == F);
  }
}

}  // namespace steerkit
