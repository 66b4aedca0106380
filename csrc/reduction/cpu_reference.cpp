// CPU reference of the reduction orders; compiled with -ffp-contract=off (no FMA contraction) and SSE
// arithmetic, so float additions are single IEEE additions rounded to nearest-even.
#include "cpu_reference.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <stdexcept>
#include <thread>

#include "small_float.h"

namespace driftscope {

namespace {

// ---- accumulator arithmetic ------------------------------------------------------------------------
struct AccF32 {
  using S = float;
  using Bits = uint32_t;
  static S zero() { return 0.0f; }
  static S add(S a, S b) { return a + b; }
};

template <int WHICH>  // 0: float16, 1: bfloat16; values are carried as their bit patterns
struct AccSmall {
  using S = uint16_t;
  using Bits = uint16_t;
  static constexpr Fmt fmt() { return WHICH == 0 ? kHalf : kBFloat16; }
  static S zero() { return 0; }
  // Exact double sum, then one rounding to nearest-even (innocuous double rounding, 53 >= 2p + 2).
  static S add(S a, S b) { return double_to_small(small_to_double(a, fmt()) + small_to_double(b, fmt()), fmt()); }
};

// ---- input element -> accumulator ------------------------------------------------------------------
template <DType IN, typename A>
inline typename A::S load(const uint8_t* x, int64_t i);

template <>
inline float load<DType::F32, AccF32>(const uint8_t* x, int64_t i) {
  float v;
  std::memcpy(&v, x + 4 * i, 4);
  return v;
}
inline uint16_t load16(const uint8_t* x, int64_t i) {
  uint16_t v;
  std::memcpy(&v, x + 2 * i, 2);
  return v;
}
template <>
inline float load<DType::F16, AccF32>(const uint8_t* x, int64_t i) {
  return static_cast<float>(small_to_double(load16(x, i), kHalf));  // exact
}
template <>
inline float load<DType::BF16, AccF32>(const uint8_t* x, int64_t i) {
  return static_cast<float>(small_to_double(load16(x, i), kBFloat16));  // exact
}
template <>
inline uint16_t load<DType::F16, AccSmall<0>>(const uint8_t* x, int64_t i) { return load16(x, i); }
template <>
inline uint16_t load<DType::BF16, AccSmall<1>>(const uint8_t* x, int64_t i) { return load16(x, i); }

// ---- trees -------------------------------------------------------------------------------------------
// Halving tree on a power-of-two count: v[i] = v[i] + v[i + h].
template <typename A>
typename A::S halving_tree(typename A::S* v, int len) {
  for (int h = len / 2; h >= 1; h /= 2)
    for (int i = 0; i < h; ++i) v[i] = A::add(v[i], v[i + h]);
  return v[0];
}

// Warp trees of 32, warp sums padded with +0.0 to 32, one more halving tree (one tree if block == 32).
template <typename A>
typename A::S block_tree(typename A::S* v, int block) {
  const int nwarps = block / 32;
  if (nwarps == 1) return halving_tree<A>(v, 32);
  typename A::S warp_sums[32];
  for (int w = 0; w < 32; ++w) warp_sums[w] = w < nwarps ? halving_tree<A>(v + 32 * w, 32) : A::zero();
  return halving_tree<A>(warp_sums, 32);
}

constexpr int chunk_for(DType in) { return in == DType::F32 ? 4 : 8; }

// Pass 1 partial of block b: thread t = b * block + l takes chunks t, t + T, ... then tail element t.
// `sums` is scratch of `block` accumulators.
template <DType IN, typename A>
typename A::S block_partial(const uint8_t* x, int64_t n, int64_t grid, int block, int64_t b,
                            typename A::S* sums) {
  constexpr int ch = chunk_for(IN);
  const int64_t nthreads = grid * block;
  const int64_t nchunks = n / ch;
  const int64_t tail = n - nchunks * ch;
  for (int l = 0; l < block; ++l) {
    const int64_t t = b * block + l;
    typename A::S s = A::zero();
    for (int64_t c = t; c < nchunks; c += nthreads)
      for (int e = 0; e < ch; ++e) s = A::add(s, load<IN, A>(x, c * ch + e));
    if (t < tail) s = A::add(s, load<IN, A>(x, nchunks * ch + t));
    sums[l] = s;
  }
  return block_tree<A>(sums, block);
}

template <DType IN, typename A>
void fixed(const void* xv, int64_t n, void* ws, void* out, int64_t grid, int block, int final_block) {
  using S = typename A::S;
  const uint8_t* x = static_cast<const uint8_t*>(xv);
  S* partials = static_cast<S*>(ws);
  std::vector<S> sums(std::max(block, final_block));
  for (int64_t b = 0; b < grid; ++b) partials[b] = block_partial<IN, A>(x, n, grid, block, b, sums.data());
  for (int i = 0; i < final_block; ++i) {
    S s = A::zero();
    for (int64_t j = i; j < grid; j += final_block) s = A::add(s, partials[j]);
    sums[i] = s;
  }
  S r = block_tree<A>(sums.data(), final_block);
  std::memcpy(out, &r, sizeof(S));
}

template <DType IN, typename A>
void atomic(const void* xv, int64_t n, void* out, int64_t grid, int block, std::vector<int64_t>* arrival,
            void* partials_out) {
  using S = typename A::S;
  using Bits = typename A::Bits;
  static_assert(sizeof(S) == sizeof(Bits), "bit pattern size");
  const uint8_t* x = static_cast<const uint8_t*>(xv);
  // The shared cell: value bits in the low 32 bits, number of adds that landed in the high 32 bits (so the
  // arrival order is recorded exactly, in the same compare-exchange).
  std::atomic<uint64_t> cell{0};
  std::vector<int64_t> order(static_cast<size_t>(grid), -1);
  unsigned hw = std::max(2u, std::thread::hardware_concurrency());
  const int64_t nworkers = std::min<int64_t>(grid, std::min(hw, 16u));
  std::atomic<int64_t> ready{0};
  auto work = [&](int64_t w) {
    std::vector<S> sums(block);
    // Start together, so the workers really race (thread start-up would otherwise order them).
    ready.fetch_add(1);
    while (ready.load() < nworkers) std::this_thread::yield();
    for (int64_t b = w; b < grid; b += nworkers) {
      const S p = block_partial<IN, A>(x, n, grid, block, b, sums.data());
      if (partials_out) std::memcpy(static_cast<S*>(partials_out) + b, &p, sizeof(S));
      uint64_t old = cell.load(std::memory_order_relaxed);
      for (;;) {
        S cur;
        Bits cur_bits = static_cast<Bits>(old & 0xffffffffu);
        std::memcpy(&cur, &cur_bits, sizeof(S));
        const S next = A::add(cur, p);
        Bits next_bits;
        std::memcpy(&next_bits, &next, sizeof(S));
        const uint64_t desired = ((old >> 32) + 1) << 32 | next_bits;
        if (cell.compare_exchange_weak(old, desired, std::memory_order_acq_rel, std::memory_order_relaxed)) break;
      }
      order[static_cast<size_t>(old >> 32)] = b;
    }
  };
  std::vector<std::thread> threads;
  std::exception_ptr failure;
  try {
    for (int64_t w = 1; w < nworkers; ++w) threads.emplace_back(work, w);
  } catch (...) {
    failure = std::current_exception();
    ready.store(nworkers);  // release the started workers
  }
  if (!failure) work(0);
  for (auto& t : threads) t.join();
  if (failure) std::rethrow_exception(failure);
  Bits bits = static_cast<Bits>(cell.load() & 0xffffffffu);
  std::memcpy(out, &bits, sizeof(S));
  if (arrival) *arrival = std::move(order);
}

template <DType IN, typename A>
void sequential(const void* xv, int64_t n, void* out) {
  using S = typename A::S;
  const uint8_t* x = static_cast<const uint8_t*>(xv);
  S s = A::zero();
  for (int64_t i = 0; i < n; ++i) s = A::add(s, load<IN, A>(x, i));
  std::memcpy(out, &s, sizeof(S));
}

// Calls F<IN, A>::run(args...) for the (in, acc) pair.
#define DS_DISPATCH(in, acc, CALL)                                                         \
  do {                                                                                    \
    if (in == DType::F32 && acc == DType::F32) {                                          \
      CALL(DType::F32, AccF32);                                                           \
    } else if (in == DType::F16 && acc == DType::F32) {                                   \
      CALL(DType::F16, AccF32);                                                           \
    } else if (in == DType::F16 && acc == DType::F16) {                                   \
      CALL(DType::F16, AccSmall<0>);                                                      \
    } else if (in == DType::BF16 && acc == DType::F32) {                                  \
      CALL(DType::BF16, AccF32);                                                          \
    } else if (in == DType::BF16 && acc == DType::BF16) {                                 \
      CALL(DType::BF16, AccSmall<1>);                                                     \
    } else {                                                                              \
      throw std::invalid_argument("unsupported input/accumulator dtype pair");            \
    }                                                                                     \
  } while (0)

}  // namespace

void cpu_fixed_order_sum(DType in, DType acc, const void* x, int64_t n, void* ws, void* out, int64_t grid, int block,
                         int final_block) {
#define DS_CALL(I, A) fixed<I, A>(x, n, ws, out, grid, block, final_block)
  DS_DISPATCH(in, acc, DS_CALL);
#undef DS_CALL
}

void cpu_atomic_sum(DType in, DType acc, const void* x, int64_t n, void* out, int64_t grid, int block,
                    std::vector<int64_t>* arrival, void* partials) {
#define DS_CALL(I, A) atomic<I, A>(x, n, out, grid, block, arrival, partials)
  DS_DISPATCH(in, acc, DS_CALL);
#undef DS_CALL
}

void cpu_sequential_sum(DType in, DType acc, const void* x, int64_t n, void* out) {
#define DS_CALL(I, A) sequential<I, A>(x, n, out)
  DS_DISPATCH(in, acc, DS_CALL);
#undef DS_CALL
}

double cpu_small_to_double(DType d, uint16_t bits) {
  if (d == DType::F32) throw std::invalid_argument("float16 or bfloat16 expected");
  return small_to_double(bits, d == DType::F16 ? kHalf : kBFloat16);
}

uint16_t cpu_double_to_small(DType d, double v) {
  if (d == DType::F32) throw std::invalid_argument("float16 or bfloat16 expected");
  return double_to_small(v, d == DType::F16 ? kHalf : kBFloat16);
}

}  // namespace driftscope
