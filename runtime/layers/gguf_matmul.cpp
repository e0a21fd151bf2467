// ragloom's CPU kernel for linear layers that keep a GGUF file's own quantised weights.
//
// A weight is stored as int8 codes q with one float32 scale (and, for the types that have one,
// one float32 offset) per group of g consecutive inputs of a row:
//
//     w[n, k] = scale[n, k / g] * q[n, k] - offset[n, k / g]
//
// which is exactly how gguf dequantises Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 (g = 32), Q4_K/Q5_K (g = 32)
// and Q6_K (g = 16). The products take each group's scale and offset out of its sum:
//
//     y[m, n] = sum_G ( scale[n, G] * sum_{k in G} q[n, k] x[m, k]  -  offset[n, G] * xsum[m, G] )
//
// (xsum: the group's sum of x). The codes become floats exactly, so this is the float32 model's
// product with the multiplications regrouped: like two GEMM libraries, the numbers differ only
// by float32 rounding, and the loop does one multiply per group instead of one per weight
// (decode-sized steps 1.1-1.5x faster). A decode step streams 1.1-1.25 bytes per weight
// instead of 4.
//
// Float32 activations (the default) take the codes in panels of 8 output rows, interleaved
// input by input: q [N / 8, K, 8], scale and offset [N / 8, K / g, 8]
// (ragloom.runtime.layers.gguf_linear.pack_panels).
// Codes of 0..15 (Q4_K, Q4_1) may come two to a byte instead, q uint8 [N / 8, K / 2, 8]
// (pack_nibbles): a decode step, which streams every weight once, then reads 0.75 instead of
// 1.25 bytes per Q4_K weight.
//   grouped_linear(x [M, K], q, scale, offset) -> [M, N]; `offset` may be empty.
//   grouped_dequantize(q, scale, offset) -> [N, K] (the float32 model's weights; int8 codes).
// Int8 activations (q8_linear, below) take the panels four inputs at a time, q [N / 8, K / 4, 8, 4]
// (pack_quads), the codes shifted to unsigned where they fit, and where they then fit in four
// bits two quads to 32 bytes (uint8, pack_nibble_quads).
//
// Built at run time for AVX2 + FMA by ragloom.runtime.layers.gguf_linear (never on the import
// path); ragloom.runtime.layers.gguf_linear.reference_linear is the plain torch version the
// tests hold it to.
#include <ATen/ATen.h>
#include <torch/library.h>
#include <immintrin.h>
#include "avx2.h"
#include "parallel.h"
#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

namespace {

using ragloom::hsum8;

// --- float32 activations: weights in panels of 8 output rows ---------------------------------
//
// One 8-byte load is the codes of one input for 8 outputs, converted into one vector, and each
// row of x meets it as a broadcast of one float. The kernel keeps R rows x NP panels of outputs
// in registers, so x is read once per 8 outputs, and each converted code serves R rows. (Before,
// each output was a dot product over a row of codes: x was re-read for every output, from L2
// for rows of 4,864 inputs, and the down projection ran at half speed.)
//
// Every output is the same chain of float32 operations whatever the rows beside it and the
// threads: per group, an FMA chain over its inputs in order from zero, then folded into the
// total as fma(scale, sum, total) and, with an offset, total - offset * xsum. A row's result
// never depends on its step. (Decoding each weight as scale * q before its FMA, until
// 2026-11-30, spent a multiply per weight on the FMA ports: two threads, Qwen2.5-0.5B's shapes,
// 8 rows 121-137 -> 140-150 GFLOP/s, one row 41-48 -> 55-63.)

constexpr int64_t kPanel = 8;

// input k's codes of a panel, for its 8 outputs, as floats (exact: |q| <= 128)
inline __m256 codes_panel(const int8_t* q) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q))));
}

// the weights of input k of a panel, for its 8 outputs: scale * q (- offset), as gguf decodes
// (grouped_dequantize; built with -ffp-contract=off, so no FMA fuses the two)
template <bool kOffset>
inline __m256 decode_panel(const int8_t* q, const float* sc, const float* off) {
  __m256 w = _mm256_mul_ps(codes_panel(q), _mm256_loadu_ps(sc));
  if constexpr (kOffset) w = _mm256_sub_ps(w, _mm256_loadu_ps(off));
  return w;
}

// total += scale * sum (- offset * xsum) for R rows x NP panels: group G's fold (see above)
template <int R, int NP, bool kOffset>
inline void fold_group(__m256 (&total)[R][NP], const __m256 (&sum)[R][NP], const float* sc, const float* off,
                       int64_t ps, const float* xsum, int64_t ldxs) {
#pragma GCC unroll 8
  for (int p = 0; p < NP; ++p) {
    const __m256 s = _mm256_loadu_ps(sc + p * ps);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) total[r][p] = _mm256_fmadd_ps(s, sum[r][p], total[r][p]);
    if constexpr (kOffset) {
      const __m256 o = _mm256_loadu_ps(off + p * ps);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) total[r][p] = _mm256_fnmadd_ps(o, _mm256_broadcast_ss(xsum + r * ldxs), total[r][p]);
    }
  }
}

// input k's codes of a panel from a block already converted to float32 (the path from 96 rows)
inline __m256 codes_panel(const float* w) { return _mm256_loadu_ps(w); }

// Codes of 0..15 (Q4_K, Q4_1) may come two to a byte, half the bytes a decode step streams:
// q [N / 8, K / 2, 8] uint8 (pack_nibbles), input 2i's code in the low four bits of its byte
// and input 2i + 1's in the high four. Each pair is loaded twice, once per half (so that six
// rows x two panels of sums keep their registers), and the FMAs run in the inputs' order, so
// the numbers equal those of the int8 codes bit for bit.
inline __m256i nibble_bytes(const uint8_t* q) {
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q)));
}
inline __m256 codes_low(const uint8_t* q) {
  return _mm256_cvtepi32_ps(_mm256_and_si256(nibble_bytes(q), _mm256_set1_epi32(15)));
}
inline __m256 codes_high(const uint8_t* q) { return _mm256_cvtepi32_ps(_mm256_srli_epi32(nibble_bytes(q), 4)); }

// bytes of codes per input of a panel: 8, or 4 for nibbles (two inputs share 8 bytes)
template <typename Code>
constexpr int64_t panel_step() {
  return std::is_same_v<Code, uint8_t> ? kPanel / 2 : kPanel;
}

// sum[r][p] += the FMAs of inputs [k0, k0 + g) for R rows x NP panels, in the inputs' order:
// codes one to a byte (int8) or already float32
template <int R, int NP, typename Code>
[[gnu::always_inline]] inline void code_group(__m256 (&sum)[R][NP], const float* x, int64_t ldx, const Code* q,
                                              int64_t pq, int64_t k0, int64_t g) {
#pragma GCC unroll 4
  for (int64_t k = k0; k < k0 + g; ++k) {
    if constexpr (NP > R) {  // the broadcasts held, one panel's codes at a time
      __m256 xr[R];
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) xr[r] = _mm256_broadcast_ss(x + r * ldx + k);
#pragma GCC unroll 8
      for (int p = 0; p < NP; ++p) {
        const __m256 w = codes_panel(q + p * pq + k * kPanel);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) sum[r][p] = _mm256_fmadd_ps(w, xr[r], sum[r][p]);
      }
    } else {  // the codes held, one broadcast at a time
      __m256 w[NP];
#pragma GCC unroll 8
      for (int p = 0; p < NP; ++p) w[p] = codes_panel(q + p * pq + k * kPanel);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const __m256 xr = _mm256_broadcast_ss(x + r * ldx + k);
#pragma GCC unroll 8
        for (int p = 0; p < NP; ++p) sum[r][p] = _mm256_fmadd_ps(w[p], xr, sum[r][p]);
      }
    }
  }
}

// the same from nibbles: inputs k and k + 1 from one load
template <int R, int NP>
[[gnu::always_inline]] inline void nibble_group(__m256 (&sum)[R][NP], const float* x, int64_t ldx, const uint8_t* q,
                                                int64_t pq, int64_t k0, int64_t g) {
#pragma GCC unroll 2
  for (int64_t k = k0; k < k0 + g; k += 2) {
    const uint8_t* qk = q + (k / 2) * kPanel;
    if constexpr (NP > R) {
      __m256 x0[R], x1[R];
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        x0[r] = _mm256_broadcast_ss(x + r * ldx + k);
        x1[r] = _mm256_broadcast_ss(x + r * ldx + k + 1);
      }
#pragma GCC unroll 8
      for (int p = 0; p < NP; ++p) {
        const __m256 w0 = codes_low(qk + p * pq);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) sum[r][p] = _mm256_fmadd_ps(w0, x0[r], sum[r][p]);
        const __m256 w1 = codes_high(qk + p * pq);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) sum[r][p] = _mm256_fmadd_ps(w1, x1[r], sum[r][p]);
      }
    } else {
      __m256 w[NP];
#pragma GCC unroll 8
      for (int p = 0; p < NP; ++p) w[p] = codes_low(qk + p * pq);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const __m256 xr = _mm256_broadcast_ss(x + r * ldx + k);
#pragma GCC unroll 8
        for (int p = 0; p < NP; ++p) sum[r][p] = _mm256_fmadd_ps(w[p], xr, sum[r][p]);
      }
#pragma GCC unroll 8
      for (int p = 0; p < NP; ++p) w[p] = codes_high(qk + p * pq);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const __m256 xr = _mm256_broadcast_ss(x + r * ldx + k + 1);
#pragma GCC unroll 8
        for (int p = 0; p < NP; ++p) sum[r][p] = _mm256_fmadd_ps(w[p], xr, sum[r][p]);
      }
    }
  }
}

// y[r, 8p .. 8p + 7] = x[r] . W[panel p]^T for R rows of x (ldx apart) and NP panels (pq codes
// and ps scales apart) over K inputs; xsum: the rows' group sums of x (ldxs apart), read only
// with offsets; `add` starts from the totals in y (a block's previous slice of inputs). The
// codes are int8 or nibbles (converted here) or float32 (converted before). The group's sums and its codes
// or its broadcasts (whichever are fewer) stay in AVX2's 16 registers; the totals, touched once
// a group, may spill. (subtle) GCC kept the accumulators in registers only with every small loop
// unrolled; else it stored them after each FMA.
template <int R, int NP, bool kOffset, typename Code>
inline void panel_rows(const float* x, int64_t ldx, const Code* q, int64_t pq, int64_t K, int64_t g, const float* sc,
                       const float* off, int64_t ps, const float* xsum, int64_t ldxs, float* y, int64_t ldy,
                       bool add) {
  __m256 total[R][NP];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int p = 0; p < NP; ++p) total[r][p] = add ? _mm256_loadu_ps(y + r * ldy + p * kPanel) : _mm256_setzero_ps();
  for (int64_t k0 = 0, G = 0; k0 < K; k0 += g, ++G) {
    __m256 sum[R][NP];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
      for (int p = 0; p < NP; ++p) sum[r][p] = _mm256_setzero_ps();
    if constexpr (std::is_same_v<Code, uint8_t>)
      nibble_group<R, NP>(sum, x, ldx, q, pq, k0, g);
    else
      code_group<R, NP>(sum, x, ldx, q, pq, k0, g);
    fold_group<R, NP, kOffset>(total, sum, sc + G * kPanel, kOffset ? off + G * kPanel : nullptr, ps, xsum + G, ldxs);
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int p = 0; p < NP; ++p) _mm256_storeu_ps(y + r * ldy + p * kPanel, total[r][p]);
}

// The operands of one product: x [M, K] (row-major), the panels, the rows' group sums of x
// xsum [M, groups] (filled with offsets only), y [M, N].
struct Product {
  const float* x;
  const void* q;  // int8 codes, or uint8 nibbles
  const float* sc;
  const float* off;
  const float* xsum;
  float* y;
  int64_t M, N, K, g, groups;
};

// R rows of x from row m over panels [p0, p1), NP panels at a time. NP for R rows: as many
// group sums as fit with their codes or broadcasts (measured: one row four panels, two rows
// three, three to six rows two, seven or eight rows one).
template <int R, bool kOffset, typename Code>
inline void panel_block(const Product& a, int64_t m, int64_t p0, int64_t p1) {
  constexpr int NP = R == 1 ? 4 : R == 2 ? 3 : R <= 6 ? 2 : 1;
  const int64_t pq = a.K * panel_step<Code>(), ps = a.groups * kPanel;
  const Code* q = static_cast<const Code*>(a.q);
  const float* x = a.x + m * a.K;
  const float* xsum = a.xsum + m * a.groups;
  float* y = a.y + m * a.N;
  int64_t p = p0;
  for (; p + NP <= p1; p += NP)
    panel_rows<R, NP, kOffset>(x, a.K, q + p * pq, pq, a.K, a.g, a.sc + p * ps, kOffset ? a.off + p * ps : nullptr,
                               ps, xsum, a.groups, y + p * kPanel, a.N, false);
  for (; p < p1; ++p)
    panel_rows<R, 1, kOffset>(x, a.K, q + p * pq, pq, a.K, a.g, a.sc + p * ps, kOffset ? a.off + p * ps : nullptr,
                              ps, xsum, a.groups, y + p * kPanel, a.N, false);
}

template <bool kOffset, typename Code>
void panel_block_any(int64_t rows, const Product& a, int64_t m, int64_t p0, int64_t p1) {
  switch (rows) {
    case 8: panel_block<8, kOffset, Code>(a, m, p0, p1); break;
    case 7: panel_block<7, kOffset, Code>(a, m, p0, p1); break;
    case 6: panel_block<6, kOffset, Code>(a, m, p0, p1); break;
    case 5: panel_block<5, kOffset, Code>(a, m, p0, p1); break;
    case 4: panel_block<4, kOffset, Code>(a, m, p0, p1); break;
    case 3: panel_block<3, kOffset, Code>(a, m, p0, p1); break;
    case 2: panel_block<2, kOffset, Code>(a, m, p0, p1); break;
    case 1: panel_block<1, kOffset, Code>(a, m, p0, p1); break;
    default: break;
  }
}

// --- 96 rows or more: each block of panels converted once to float32, then plain FMAs -------
//
// Converting in registers costs a convert per code, which a step of many rows repeats for
// every six of them. From 96 rows, each thread converts 12 panels x 512 inputs at a time into a
// buffer (192 KB, in L2) and runs only FMAs over it, four rows x two panels at a time. (Two
// threads, Qwen2.5-0.5B's shapes, this path against the one above: 32-64 rows 0.88-0.96x,
// 96 rows 0.98-1.07x, 256-512 rows 1.02-1.10x.) Each output's chain of operations is the one
// above, in the same order (a slice's totals are stored and picked up by the next; slices hold
// whole groups): the numbers equal the other path's.
constexpr int64_t kDecodedRows = 96;
constexpr int64_t kDecodedPanels = 12;  // panels converted at a time
constexpr int64_t kSlice = 512;         // inputs converted at a time (a multiple of every group size)

// float_block: panel_block over codes converted to float32, w [panels][kc][8], for the inputs
// [k0, k0 + kc) (whole groups, from group G0), picking up the previous slice's totals from y.
// Four rows x two panels: eight sums, their totals (a few spill), the codes and a broadcast
// (measured against six rows x two panels and three x two, with the totals in registers, in y
// or in a stack buffer).
template <int R, bool kOffset>
inline void float_block(const Product& a, int64_t m, const float* w, int64_t b, int64_t panels, int64_t k0,
                        int64_t kc) {
  constexpr int NP = 2;  // (R is at most 4)
  const int64_t pw = kc * kPanel, ps = a.groups * kPanel, G0 = k0 / a.g;
  const float* x = a.x + m * a.K + k0;
  const float* xsum = a.xsum + m * a.groups + G0;
  const float* sc = a.sc + b * ps + G0 * kPanel;
  const float* off = kOffset ? a.off + b * ps + G0 * kPanel : nullptr;
  float* y = a.y + m * a.N + b * kPanel;
  int64_t p = 0;
  for (; p + NP <= panels; p += NP)
    panel_rows<R, NP, kOffset>(x, a.K, w + p * pw, pw, kc, a.g, sc + p * ps, kOffset ? off + p * ps : nullptr, ps,
                               xsum, a.groups, y + p * kPanel, a.N, k0 > 0);
  for (; p < panels; ++p)
    panel_rows<R, 1, kOffset>(x, a.K, w + p * pw, pw, kc, a.g, sc + p * ps, kOffset ? off + p * ps : nullptr, ps,
                              xsum, a.groups, y + p * kPanel, a.N, k0 > 0);
}

template <bool kOffset>
inline void float_block_any(int64_t rows, const Product& a, int64_t m, const float* w, int64_t b, int64_t panels,
                            int64_t k0, int64_t kc) {
  switch (rows) {
    case 4: float_block<4, kOffset>(a, m, w, b, panels, k0, kc); break;
    case 3: float_block<3, kOffset>(a, m, w, b, panels, k0, kc); break;
    case 2: float_block<2, kOffset>(a, m, w, b, panels, k0, kc); break;
    case 1: float_block<1, kOffset>(a, m, w, b, panels, k0, kc); break;
    default: break;
  }
}

// inputs [k0, k0 + kc) of one panel's codes, converted into w: input k's 8 at w + k * ldw.
// (subtle: a separate function with plain pointer arguments; written inline in a parallel_for
// lambda, the loop re-read the captured pointers after every store)
inline void convert_slice(const int8_t* q, int64_t k0, int64_t kc, float* w, int64_t ldw) {
  for (int64_t k = 0; k < kc; ++k) _mm256_storeu_ps(w + k * ldw, codes_panel(q + (k0 + k) * kPanel));
}
inline void convert_slice(const uint8_t* q, int64_t k0, int64_t kc, float* w, int64_t ldw) {  // (k0, kc even)
  for (int64_t k = 0; k < kc; k += 2) {
    const uint8_t* qk = q + (k0 + k) / 2 * kPanel;
    _mm256_storeu_ps(w + k * ldw, codes_low(qk));
    _mm256_storeu_ps(w + (k + 1) * ldw, codes_high(qk));
  }
}

// n groups of 8 nibble bytes (pairs of inputs of a panel) -> 2n groups of 8 int8 codes
inline void unpack_nibbles(const uint8_t* q, int64_t n, int8_t* out) {
  const __m128i low = _mm_set1_epi8(15);
  int64_t i = 0;
  for (; i + 2 <= n; i += 2) {  // 16 bytes: two inputs' pairs -> four inputs' codes
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + i * kPanel));
    const __m128i lo = _mm_and_si128(v, low), hi = _mm_and_si128(_mm_srli_epi16(v, 4), low);
    // per pair: its 8 low codes (input 2i), then its 8 high codes (input 2i + 1)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 2 * i * kPanel), _mm_unpacklo_epi64(lo, hi));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 2 * i * kPanel + 16), _mm_unpackhi_epi64(lo, hi));
  }
  for (; i < n; ++i)
    for (int j = 0; j < kPanel; ++j) {
      out[2 * i * kPanel + j] = static_cast<int8_t>(q[i * kPanel + j] & 15);
      out[(2 * i + 1) * kPanel + j] = static_cast<int8_t>(q[i * kPanel + j] >> 4);
    }
}

template <bool kOffset, typename Code>
void linear_decoded(const Product& a) {
  constexpr int64_t kRowsAtOnce = 4;
  ragloom::parallel_for(0, a.N / kPanel, 2, [&](int64_t begin, int64_t end) {
    static thread_local std::vector<float> buffer;  // (per thread of the pool, kept)
    buffer.resize(kDecodedPanels * kSlice * kPanel);
    float* w = buffer.data();
    for (int64_t b = begin; b < end; b += kDecodedPanels) {
      const int64_t n_panels = std::min(end, b + kDecodedPanels) - b;
      for (int64_t k0 = 0; k0 < a.K; k0 += kSlice) {
        const int64_t kc = std::min(kSlice, a.K - k0);
        for (int64_t p = 0; p < n_panels; ++p)
          convert_slice(static_cast<const Code*>(a.q) + (b + p) * a.K * panel_step<Code>(), k0, kc, w + p * kc * kPanel,
                        kPanel);
        for (int64_t m = 0; m < a.M; m += kRowsAtOnce)
          float_block_any<kOffset>(std::min(kRowsAtOnce, a.M - m), a, m, w, b, n_panels, k0, kc);
      }
    }
  });
}

template <bool kOffset, typename Code>
void linear_impl(const Product& a) {
  if (a.M >= kDecodedRows && kSlice % a.g == 0) {
    linear_decoded<kOffset, Code>(a);
    return;
  }
  // up to 8 rows (decodes) in one pass over the weights, which stream from memory once; 9-95
  // rows 6 at a time, over blocks of panels that stay in L2 (192 KB) while the rows pass
  // (nibbles: there, each block's codes are first unpacked to int8, once for all its rows; taking
  // them apart for every six rows ran 0.77x the int8 codes' speed at 64 rows)
  const int64_t rows_at_once = a.M <= 8 ? a.M : 6;
  const int64_t block = a.M <= 8 ? 24 : std::clamp<int64_t>((192 << 10) / (a.K * kPanel), 6, 24);
  const bool unpack = std::is_same_v<Code, uint8_t> && a.M > 8;
  ragloom::parallel_for(0, a.N / kPanel, 2, [&](int64_t begin, int64_t end) {
    static thread_local std::vector<int8_t> buffer;  // (per thread of the pool, kept)
    for (int64_t b = begin; b < end; b += block) {
      const int64_t b_end = std::min(end, b + block);
      if (unpack) {
        buffer.resize(block * a.K * kPanel);
        unpack_nibbles(static_cast<const uint8_t*>(a.q) + b * a.K * (kPanel / 2), (b_end - b) * a.K / 2, buffer.data());
        Product local = a;  // the block's panels from the buffer, as panels 0 .. b_end - b
        local.q = buffer.data();
        local.sc = a.sc + b * a.groups * kPanel;
        local.off = kOffset ? a.off + b * a.groups * kPanel : nullptr;
        local.y = a.y + b * kPanel;
        for (int64_t m = 0; m < a.M; m += rows_at_once)
          panel_block_any<kOffset, int8_t>(std::min(rows_at_once, a.M - m), local, m, 0, b_end - b);
      } else {
        for (int64_t m = 0; m < a.M; m += rows_at_once)
          panel_block_any<kOffset, Code>(std::min(rows_at_once, a.M - m), a, m, b, b_end);
      }
    }
  });
}

// The number of inputs K of codes in panels: int8 [N / 8, K, 8], or uint8 nibbles [N / 8, K / 2, 8].
int64_t check(const at::Tensor& q, const at::Tensor& scale, const at::Tensor& offset) {
  const bool nibbles = q.scalar_type() == at::kByte;
  TORCH_CHECK(q.dim() == 3 && q.size(2) == kPanel && (q.scalar_type() == at::kChar || nibbles) && q.is_contiguous(),
              "q must be a contiguous int8 [N / 8, K, 8] tensor (panels of 8 rows), or uint8 [N / 8, K / 2, 8] "
              "(two codes of 0..15 per byte)");
  const int64_t K = nibbles ? 2 * q.size(1) : q.size(1);
  TORCH_CHECK(scale.dim() == 3 && scale.size(2) == kPanel && scale.scalar_type() == at::kFloat &&
                  scale.is_contiguous() && scale.size(0) == q.size(0),
              "scale must be a contiguous float32 [N / 8, K / group, 8] tensor");
  TORCH_CHECK(scale.size(1) > 0 && K % scale.size(1) == 0 && (K / scale.size(1)) % 2 == 0,
              "the group size must divide K (and be even)");
  TORCH_CHECK(offset.numel() == 0 || (offset.sizes() == scale.sizes() && offset.scalar_type() == at::kFloat &&
                                      offset.is_contiguous()),
              "offset must be empty or shaped like scale");
  return K;
}

// Each row's sums of x over its groups of g inputs, xsum [M, K / g]: eight lanes at a time
// where g allows, in an order fixed per row (so the same numbers whatever the other rows).
void group_sums(const float* x, int64_t M, int64_t K, int64_t g, float* xsum) {
  const int64_t groups = K / g;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t G = 0; G < groups; ++G) {
      const float* xg = x + m * K + G * g;
      float total = 0.f;
      int64_t k = 0;
      if (g >= 8) {
        __m256 acc = _mm256_loadu_ps(xg);
        for (k = 8; k + 8 <= g; k += 8) acc = _mm256_add_ps(acc, _mm256_loadu_ps(xg + k));
        total = hsum8(acc);
      }
      for (; k < g; ++k) total += xg[k];
      xsum[m * groups + G] = total;
    }
}

at::Tensor grouped_linear(const at::Tensor& x, const at::Tensor& q, const at::Tensor& scale, const at::Tensor& offset) {
  const int64_t K = check(q, scale, offset);
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.size(-1) == K, "x must be float32 [..., K]");
  const auto xc = x.reshape({-1, K}).contiguous();
  const int64_t M = xc.size(0), N = q.size(0) * kPanel, g = K / scale.size(1);
  auto sizes = x.sizes().vec();
  sizes.back() = N;
  auto y = at::empty({M, N}, x.options());
  const bool with_offset = offset.numel() > 0;
  const int64_t groups = K / g;
  const float* xp = xc.data_ptr<float>();
  std::vector<float> xsum(with_offset ? M * groups : 0);  // (read with offsets only)
  if (with_offset) group_sums(xp, M, K, g, xsum.data());
  const Product a{xp, q.data_ptr(), scale.data_ptr<float>(), with_offset ? offset.data_ptr<float>() : nullptr,
                  xsum.data(), y.data_ptr<float>(), M, N, K, g, groups};
  if (q.scalar_type() == at::kByte)
    with_offset ? linear_impl<true, uint8_t>(a) : linear_impl<false, uint8_t>(a);
  else
    with_offset ? linear_impl<true, int8_t>(a) : linear_impl<false, int8_t>(a);
  return y.view(sizes);
}

// panel by panel into w^T [K, 8 * panels]
template <bool kOffset>
void dequant_impl(const int8_t* q, const float* sc, const float* off, int64_t panels, int64_t K, int64_t g, float* wt) {
  const int64_t groups = K / g, ldw = panels * kPanel;
  ragloom::parallel_for(0, panels, 4, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p)
      for (int64_t k = 0; k < K; ++k) {
        const int64_t s = (p * groups + k / g) * kPanel;
        _mm256_storeu_ps(wt + k * ldw + p * kPanel,
                         decode_panel<kOffset>(q + (p * K + k) * kPanel, sc + s, kOffset ? off + s : nullptr));
      }
  });
}

at::Tensor grouped_dequantize(const at::Tensor& q, const at::Tensor& scale, const at::Tensor& offset) {
  check(q, scale, offset);
  TORCH_CHECK(q.scalar_type() == at::kChar, "grouped_dequantize takes int8 codes (unpack nibbles first)");
  const int64_t panels = q.size(0), K = q.size(1), g = K / scale.size(1);
  auto wt = at::empty({K, panels * kPanel}, scale.options());  // decoded as w^T, then transposed
  if (offset.numel())
    dequant_impl<true>(q.data_ptr<int8_t>(), scale.data_ptr<float>(), offset.data_ptr<float>(), panels, K, g,
                       wt.data_ptr<float>());
  else
    dequant_impl<false>(q.data_ptr<int8_t>(), scale.data_ptr<float>(), nullptr, panels, K, g, wt.data_ptr<float>());
  return wt.t().contiguous();
}

// --- int8 activations (quantization="gguf-q8") ----------------------------------------------
//
// The speed mode llama.cpp runs: each row of x is quantised to int8 per block of 32 inputs
// (d = max|x| / 127, xq = round(x / d), round half to even), then each group's dot product is
// an exact integer sum, scaled by the weight's and the activation's scales:
//
//     y[m, n] = sum_G scale[n, G] * d[m, G] * sum_{k in G} xq[m, k] q[n, k]  -  sum_G offset[n, G] * xsum[m, G]
//
// where xsum is the float sum of x over the group. Only the activations' rounding changes the
// numbers (ragloom.runtime.layers.gguf_linear.reference_q8_linear is the torch version);
// groups of 16 or 32 inputs.
//
// The codes come in panels of 8 outputs like the float32 path's, but four inputs at a time:
// q [N / 8, K / 4, 8, 4] (pack_quads), so one 32-byte load holds 4 inputs x 8 outputs and
// meets a broadcast of 4 of a row's int8 inputs in one maddubs (32 multiplies into 16 pair
// sums), then madd with ones (8 sums of four, one per output). Where a layer's codes span at
// most 64 values they are stored unsigned, u = q + shift <= 63 (Q4_K/Q5_0/Q6_K): two maddubs
// add up in int16 without overflow (2 * 2 * 63 * 127 < 32768) before one madd, and the sums
// start from -shift * sum(xq) so that they count q, not u. Wider codes (Q8_0) keep their sign
// (shift < 0): maddubs takes |q| and xq with q's sign (2 * 128 * 127 < 32768), one madd each.
// On this CPU (Zen 3: no VNNI) that is 1.1-1.6x the float32 path's multiply-adds per second.
// Each output's group sums are exact integers and its fold order is fixed, so a row's result
// never depends on the rows beside it or the threads.

struct Q8Rows {  // a step's activations, quantised
  const int8_t* xq;     // [M, K]
  const float* dx;      // [M, K / 32]
  const int32_t* base;  // [M, groups]: -shift * sum of xq over the group (with shift > 0)
  const float* xsum;    // [M, groups] (with offsets)
};

// Row m of x as int8 codes and one scale per 32 inputs, and -shift * sum(xq) per group of g.
// round(x * (1 / d)) rounds half to even, like torch.round in reference_q8_linear.
void quantize_row_q8(const float* x, int64_t K, int64_t g, int64_t shift, int8_t* xq, float* d, int32_t* base) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  for (int64_t b = 0; b < K / 32; ++b) {
    __m256 v[4];
    __m256 amax = _mm256_setzero_ps();
    for (int i = 0; i < 4; ++i) {
      v[i] = _mm256_loadu_ps(x + b * 32 + i * 8);
      amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v[i]));
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float scale = _mm_cvtss_f32(m4) / 127.f;
    const __m256 inv = _mm256_set1_ps(scale != 0.f ? 1.f / scale : 0.f);
    d[b] = scale;
    __m256i c[4];
    for (int i = 0; i < 4; ++i)
      c[i] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[i], inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    // 32 int32 -> 32 int8 in order (packs interleave the 128-bit halves; the permute undoes it)
    const __m256i packed = _mm256_packs_epi16(_mm256_packs_epi32(c[0], c[1]), _mm256_packs_epi32(c[2], c[3]));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(xq + b * 32),
                        _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
    if (shift > 0) {
      int32_t lanes[32];
      for (int i = 0; i < 4; ++i) _mm256_storeu_si256(reinterpret_cast<__m256i*>(lanes + 8 * i), c[i]);
      for (int64_t h = 0; h < 32 / g; ++h) {
        int32_t sum = 0;
        for (int64_t k = 0; k < g; ++k) sum += lanes[h * g + k];
        base[b * (32 / g) + h] = -static_cast<int32_t>(shift) * sum;
      }
    }
  }
}

inline __m256i load_codes(const void* q) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q)); }

// Eight inputs' codes of a panel (two quads, w0 and w1): 64 bytes, or from nibbles 32 bytes
// [N / 8, K / 8, 8, 4] whose low four bits are the first quad's code and the high four the
// second's (pack_nibble_quads: codes of 0..15 after the shift). q points at the eight inputs.
template <bool kNib>
inline void load_eight(const int8_t* q, __m256i& w0, __m256i& w1) {
  if constexpr (kNib) {
    const __m256i v = load_codes(q), low = _mm256_set1_epi8(15);
    w0 = _mm256_and_si256(v, low);
    w1 = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
  } else {
    w0 = load_codes(q);
    w1 = load_codes(q + 32);
  }
}
// four int8 inputs of a row, in every 32-bit lane
inline __m256i broadcast4(const int8_t* x) {
  int32_t v;
  std::memcpy(&v, x, 4);
  return _mm256_set1_epi32(v);
}

// Eight inputs (two quads) of one panel for one row, added to the row's int32 group sums.
template <bool kSigned>
inline __m256i eight_inputs(__m256i sum, __m256i w0, __m256i w1, __m256i x0, __m256i x1, __m256i ones) {
  if constexpr (kSigned) {
    sum = _mm256_add_epi32(sum, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(w0, w0), _mm256_sign_epi8(x0, w0)), ones));
    return _mm256_add_epi32(sum, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(w1, w1), _mm256_sign_epi8(x1, w1)), ones));
  } else {
    const __m256i pairs = _mm256_add_epi16(_mm256_maddubs_epi16(w0, x0), _mm256_maddubs_epi16(w1, x1));
    return _mm256_add_epi32(sum, _mm256_madd_epi16(pairs, ones));
  }
}

// y[m + r, 8 (p0 + p) ...] for R rows x NP panels over all K inputs (a group at a time: its
// int32 sums in registers, then folded into float totals).
template <int R, int NP, bool kSigned, bool kOffset, bool kNib>
inline void q8_panel_rows(const Q8Rows& x, const int8_t* q, const float* sc, const float* off, int64_t K, int64_t g,
                          int64_t groups, int64_t m, int64_t p0, bool shifted, float* y, int64_t N) {
  constexpr int64_t step = kNib ? kPanel / 2 : kPanel;  // bytes of codes per input of a panel
  const int64_t pq = K * step, ps = groups * kPanel;
  const int8_t* xq = x.xq + m * K;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 total[R][NP];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int p = 0; p < NP; ++p) total[r][p] = _mm256_setzero_ps();
  for (int64_t k0 = 0, G = 0; k0 < K; k0 += g, ++G) {
    __m256i sum[R][NP];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m256i start = shifted ? _mm256_set1_epi32(x.base[(m + r) * groups + G]) : _mm256_setzero_si256();
#pragma GCC unroll 8
      for (int p = 0; p < NP; ++p) sum[r][p] = start;
    }
#pragma GCC unroll 2
    for (int64_t k = k0; k < k0 + g; k += 8) {
      if constexpr (NP > R) {  // the broadcasts held, one panel's codes at a time
        __m256i x0[R], x1[R];
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
          x0[r] = broadcast4(xq + r * K + k);
          x1[r] = broadcast4(xq + r * K + k + 4);
        }
#pragma GCC unroll 8
        for (int p = 0; p < NP; ++p) {
          __m256i w0, w1;
          load_eight<kNib>(q + p * pq + k * step, w0, w1);
#pragma GCC unroll 8
          for (int r = 0; r < R; ++r) sum[r][p] = eight_inputs<kSigned>(sum[r][p], w0, w1, x0[r], x1[r], ones);
        }
      } else {  // the codes held, one row's broadcasts at a time
        __m256i w0[NP], w1[NP];
#pragma GCC unroll 8
        for (int p = 0; p < NP; ++p) load_eight<kNib>(q + p * pq + k * step, w0[p], w1[p]);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
          const __m256i x0 = broadcast4(xq + r * K + k), x1 = broadcast4(xq + r * K + k + 4);
#pragma GCC unroll 8
          for (int p = 0; p < NP; ++p) sum[r][p] = eight_inputs<kSigned>(sum[r][p], w0[p], w1[p], x0, x1, ones);
        }
      }
    }
    // total += (scale * d) * sum (- offset * xsum)
#pragma GCC unroll 8
    for (int p = 0; p < NP; ++p) {
      const __m256 s = _mm256_loadu_ps(sc + p * ps + G * kPanel);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const __m256 sd = _mm256_mul_ps(s, _mm256_broadcast_ss(x.dx + (m + r) * (K / 32) + k0 / 32));
        total[r][p] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum[r][p]), sd, total[r][p]);
      }
      if constexpr (kOffset) {
        const __m256 o = _mm256_loadu_ps(off + p * ps + G * kPanel);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r)
          total[r][p] = _mm256_fnmadd_ps(o, _mm256_broadcast_ss(x.xsum + (m + r) * groups + G), total[r][p]);
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int p = 0; p < NP; ++p) _mm256_storeu_ps(y + (m + r) * N + (p0 + p) * kPanel, total[r][p]);
}

struct Q8Product {
  Q8Rows x;
  const int8_t* q;  // (int8 codes, or uint8 nibbles read as bytes)
  const float* sc;
  const float* off;
  float* y;
  int64_t M, N, K, g, groups;
  bool shifted;
};

// R rows from row m over panels [p0, p1), NP at a time (the most whose sums, codes or
// broadcasts fit in 16 registers: one row four panels, two rows three, three two, then one).
template <int R, bool kSigned, bool kOffset, bool kNib>
inline void q8_block(const Q8Product& a, int64_t m, int64_t p0, int64_t p1) {
  constexpr int NP = R == 1 ? 4 : R == 2 ? 3 : R == 3 ? 2 : 1;
  const int64_t pq = a.K * (kNib ? kPanel / 2 : kPanel), ps = a.groups * kPanel;
  int64_t p = p0;
  for (; p + NP <= p1; p += NP)
    q8_panel_rows<R, NP, kSigned, kOffset, kNib>(a.x, a.q + p * pq, a.sc + p * ps, kOffset ? a.off + p * ps : nullptr,
                                                 a.K, a.g, a.groups, m, p, a.shifted, a.y, a.N);
  for (; p < p1; ++p)
    q8_panel_rows<R, 1, kSigned, kOffset, kNib>(a.x, a.q + p * pq, a.sc + p * ps, kOffset ? a.off + p * ps : nullptr,
                                                a.K, a.g, a.groups, m, p, a.shifted, a.y, a.N);
}

template <bool kSigned, bool kOffset, bool kNib>
void q8_block_any(int64_t rows, const Q8Product& a, int64_t m, int64_t p0, int64_t p1) {
  switch (rows) {
    case 8: q8_block<8, kSigned, kOffset, kNib>(a, m, p0, p1); break;
    case 7: q8_block<7, kSigned, kOffset, kNib>(a, m, p0, p1); break;
    case 6: q8_block<6, kSigned, kOffset, kNib>(a, m, p0, p1); break;
    case 5: q8_block<5, kSigned, kOffset, kNib>(a, m, p0, p1); break;
    case 4: q8_block<4, kSigned, kOffset, kNib>(a, m, p0, p1); break;
    case 3: q8_block<3, kSigned, kOffset, kNib>(a, m, p0, p1); break;
    case 2: q8_block<2, kSigned, kOffset, kNib>(a, m, p0, p1); break;
    case 1: q8_block<1, kSigned, kOffset, kNib>(a, m, p0, p1); break;
    default: break;
  }
}

// 8 rows at a time; past 8 rows, over blocks of panels whose codes (128 KB) stay in L2 while
// the rows pass.
template <bool kSigned, bool kOffset, bool kNib>
void q8_impl(const Q8Product& a) {
  const int64_t bytes = a.K * (kNib ? kPanel / 2 : kPanel);  // a panel's codes
  const int64_t block = a.M <= 8 ? 24 : std::clamp<int64_t>((128 << 10) / bytes, 4, 24);
  ragloom::parallel_for(0, a.N / kPanel, 2, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; b += block) {
      const int64_t b_end = std::min(end, b + block);
      for (int64_t m = 0; m < a.M; m += 8)
        q8_block_any<kSigned, kOffset, kNib>(std::min<int64_t>(8, a.M - m), a, m, b, b_end);
    }
  });
}

at::Tensor q8_linear(const at::Tensor& x, const at::Tensor& q, int64_t shift, const at::Tensor& scale,
                     const at::Tensor& offset) {
  const int64_t K = check(q, scale, offset);
  const bool nibbles = q.scalar_type() == at::kByte;
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.size(-1) == K, "x must be float32 [..., K]");
  const auto xc = x.reshape({-1, K}).contiguous();
  const int64_t M = xc.size(0), N = q.size(0) * kPanel, g = K / scale.size(1), groups = K / g;
  TORCH_CHECK((g == 16 || g == 32) && K % 32 == 0, "int8 activations need groups of 16 or 32 inputs and K % 32 == 0");
  TORCH_CHECK(shift >= -1 && shift <= 63, "shift must be -1 (signed codes) or 0..63");
  TORCH_CHECK(!nibbles || shift >= 0, "codes in nibbles are unsigned (shift 0..15)");
  const bool with_offset = offset.numel() > 0;
  auto xq = at::empty({M, K}, x.options().dtype(at::kChar));
  std::vector<float> dx(M * (K / 32)), xsum(with_offset ? M * groups : 0);
  std::vector<int32_t> base(shift > 0 ? M * groups : 0);
  const float* xp = xc.data_ptr<float>();
  int8_t* xqp = xq.data_ptr<int8_t>();
  for (int64_t m = 0; m < M; ++m)
    quantize_row_q8(xp + m * K, K, g, shift, xqp + m * K, dx.data() + m * (K / 32),
                    shift > 0 ? base.data() + m * groups : nullptr);  // (base: only with a shift)
  if (with_offset) group_sums(xp, M, K, g, xsum.data());
  auto sizes = x.sizes().vec();
  sizes.back() = N;
  auto y = at::empty({M, N}, x.options());
  const Q8Product a{{xqp, dx.data(), base.data(), xsum.data()}, static_cast<const int8_t*>(q.data_ptr()),
                    scale.data_ptr<float>(), with_offset ? offset.data_ptr<float>() : nullptr, y.data_ptr<float>(),
                    M, N, K, g, groups, shift > 0};
  if (shift < 0)
    with_offset ? q8_impl<true, true, false>(a) : q8_impl<true, false, false>(a);
  else if (nibbles)
    with_offset ? q8_impl<false, true, true>(a) : q8_impl<false, false, true>(a);
  else
    with_offset ? q8_impl<false, true, false>(a) : q8_impl<false, false, false>(a);
  return y.view(sizes);
}

}  // namespace

TORCH_LIBRARY(ragloom_gguf, m) {
  m.def("grouped_linear(Tensor x, Tensor q, Tensor scale, Tensor offset) -> Tensor");
  m.def("grouped_dequantize(Tensor q, Tensor scale, Tensor offset) -> Tensor");
  m.def("q8_linear(Tensor x, Tensor q, int shift, Tensor scale, Tensor offset) -> Tensor");
}
TORCH_LIBRARY_IMPL(ragloom_gguf, CPU, m) {
  m.impl("grouped_linear", &grouped_linear);
  m.impl("grouped_dequantize", &grouped_dequantize);
  m.impl("q8_linear", &q8_linear);
}
