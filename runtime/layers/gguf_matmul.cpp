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
//   grouped_linear(x [M, K], q, scale, offset) -> [M, N]; `offset` may be empty.
//   grouped_dequantize(q, scale, offset) -> [N, K] (the float32 model's weights).
// Int8 activations (q8_linear, below) take the codes row by row, q [N, K].
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

// y[r, 8p .. 8p + 7] = x[r] . W[panel p]^T for R rows of x (ldx apart) and NP panels (pq codes
// and ps scales apart) over K inputs; xsum: the rows' group sums of x (ldxs apart), read only
// with offsets; `add` starts from the totals in y (a block's previous slice of inputs). The
// codes are int8 (converted here) or float32 (converted before). The group's sums and its codes
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
  const int8_t* q;
  const float* sc;
  const float* off;
  const float* xsum;
  float* y;
  int64_t M, N, K, g, groups;
};

// R rows of x from row m over panels [p0, p1), NP panels at a time. NP for R rows: as many
// group sums as fit with their codes or broadcasts (measured: one row four panels, two rows
// three, three to six rows two, seven or eight rows one).
template <int R, bool kOffset>
inline void panel_block(const Product& a, int64_t m, int64_t p0, int64_t p1) {
  constexpr int NP = R == 1 ? 4 : R == 2 ? 3 : R <= 6 ? 2 : 1;
  const int64_t pq = a.K * kPanel, ps = a.groups * kPanel;
  const float* x = a.x + m * a.K;
  const float* xsum = a.xsum + m * a.groups;
  float* y = a.y + m * a.N;
  int64_t p = p0;
  for (; p + NP <= p1; p += NP)
    panel_rows<R, NP, kOffset>(x, a.K, a.q + p * pq, pq, a.K, a.g, a.sc + p * ps, kOffset ? a.off + p * ps : nullptr,
                               ps, xsum, a.groups, y + p * kPanel, a.N, false);
  for (; p < p1; ++p)
    panel_rows<R, 1, kOffset>(x, a.K, a.q + p * pq, pq, a.K, a.g, a.sc + p * ps, kOffset ? a.off + p * ps : nullptr,
                              ps, xsum, a.groups, y + p * kPanel, a.N, false);
}

template <bool kOffset>
void panel_block_any(int64_t rows, const Product& a, int64_t m, int64_t p0, int64_t p1) {
  switch (rows) {
    case 8: panel_block<8, kOffset>(a, m, p0, p1); break;
    case 7: panel_block<7, kOffset>(a, m, p0, p1); break;
    case 6: panel_block<6, kOffset>(a, m, p0, p1); break;
    case 5: panel_block<5, kOffset>(a, m, p0, p1); break;
    case 4: panel_block<4, kOffset>(a, m, p0, p1); break;
    case 3: panel_block<3, kOffset>(a, m, p0, p1); break;
    case 2: panel_block<2, kOffset>(a, m, p0, p1); break;
    case 1: panel_block<1, kOffset>(a, m, p0, p1); break;
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

template <bool kOffset>
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
        for (int64_t p = 0; p < n_panels; ++p) convert_slice(a.q + (b + p) * a.K * kPanel, k0, kc, w + p * kc * kPanel, kPanel);
        for (int64_t m = 0; m < a.M; m += kRowsAtOnce)
          float_block_any<kOffset>(std::min(kRowsAtOnce, a.M - m), a, m, w, b, n_panels, k0, kc);
      }
    }
  });
}

template <bool kOffset>
void linear_impl(const Product& a) {
  if (a.M >= kDecodedRows && kSlice % a.g == 0) {
    linear_decoded<kOffset>(a);
    return;
  }
  // up to 8 rows (decodes) in one pass over the weights, which stream from memory once; 9-95
  // rows 6 at a time, over blocks of panels that stay in L2 (192 KB) while the rows pass
  const int64_t rows_at_once = a.M <= 8 ? a.M : 6;
  const int64_t block = a.M <= 8 ? 24 : std::clamp<int64_t>((192 << 10) / (a.K * kPanel), 6, 24);
  ragloom::parallel_for(0, a.N / kPanel, 2, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; b += block) {
      const int64_t b_end = std::min(end, b + block);
      for (int64_t m = 0; m < a.M; m += rows_at_once)
        panel_block_any<kOffset>(std::min(rows_at_once, a.M - m), a, m, b, b_end);
    }
  });
}

void check(const at::Tensor& q, const at::Tensor& scale, const at::Tensor& offset) {
  TORCH_CHECK(q.dim() == 3 && q.size(2) == kPanel && q.scalar_type() == at::kChar && q.is_contiguous(),
              "q must be a contiguous int8 [N / 8, K, 8] tensor (panels of 8 rows)");
  TORCH_CHECK(scale.dim() == 3 && scale.size(2) == kPanel && scale.scalar_type() == at::kFloat &&
                  scale.is_contiguous() && scale.size(0) == q.size(0),
              "scale must be a contiguous float32 [N / 8, K / group, 8] tensor");
  TORCH_CHECK(scale.size(1) > 0 && q.size(1) % scale.size(1) == 0, "the group size must divide K");
  TORCH_CHECK(offset.numel() == 0 || (offset.sizes() == scale.sizes() && offset.scalar_type() == at::kFloat &&
                                      offset.is_contiguous()),
              "offset must be empty or shaped like scale");
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
  check(q, scale, offset);
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.size(-1) == q.size(1), "x must be float32 [..., K]");
  const auto xc = x.reshape({-1, q.size(1)}).contiguous();
  const int64_t M = xc.size(0), N = q.size(0) * kPanel, K = q.size(1), g = K / scale.size(1);
  auto sizes = x.sizes().vec();
  sizes.back() = N;
  auto y = at::empty({M, N}, x.options());
  const bool with_offset = offset.numel() > 0;
  const int64_t groups = K / g;
  const float* xp = xc.data_ptr<float>();
  std::vector<float> xsum(with_offset ? M * groups : 0);  // (read with offsets only)
  if (with_offset) group_sums(xp, M, K, g, xsum.data());
  const Product a{xp, q.data_ptr<int8_t>(), scale.data_ptr<float>(), with_offset ? offset.data_ptr<float>() : nullptr,
                  xsum.data(), y.data_ptr<float>(), M, N, K, g, groups};
  if (with_offset)
    linear_impl<true>(a);
  else
    linear_impl<false>(a);
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
// an exact integer sum (maddubs/madd), scaled by the weight's and the activation's scales:
//
//     y[m, n] = sum_G scale[n, G] * d[m, G] * sum_{k in G} xq[m, k] q[n, k]  -  sum_G offset[n, G] * xsum[m, G]
//
// where xsum is the float sum of x over the group. Only the activations' rounding changes the
// numbers (ragloom.runtime.layers.gguf_linear.reference_q8_linear is the torch version);
// groups of 16 or 32 inputs.

// One row of x: int8 codes and one scale per 32 inputs (scalar: O(K), not the hot loop).
void quantize_row_q8(const float* x, int64_t K, int8_t* xq, float* d) {
  for (int64_t b = 0; b < K / 32; ++b) {
    float amax = 0.f;
    for (int k = 0; k < 32; ++k) amax = std::max(amax, std::fabs(x[b * 32 + k]));
    const float scale = amax / 127.f;
    const float inv = scale != 0.f ? 1.f / scale : 0.f;
    d[b] = scale;
    for (int k = 0; k < 32; ++k) xq[b * 32 + k] = static_cast<int8_t>(std::nearbyint(x[b * 32 + k] * inv));
  }
}

// sum_k q[k] * xq[k] over 32 inputs as 8 int32 lanes (lane i: inputs 4i..4i+3), converted to
// float. |q| is the unsigned operand (|-128| = 128 fits), xq carries q's sign: no saturation,
// since |xq| <= 127 and 2 * 128 * 127 < 32768.
inline __m256 dot32(__m256i aq, __m256i q, const int8_t* xq) {
  const __m256i sx = _mm256_sign_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq)), q);
  const __m256i pairs = _mm256_maddubs_epi16(aq, sx);
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
}

template <int R>
inline void q8_rows(const int8_t* xq, const float* dx, int64_t K, const int8_t* qn, const float* sn,
                    int64_t g, __m256* acc) {
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  const int64_t blocks = K / 32;
  for (int64_t b = 0; b < blocks; ++b) {
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qn + b * 32));
    const __m256i aq = _mm256_sign_epi8(q, q);
    // the weight's scale per lane: one group of 32, or two of 16 (lanes 0-3, 4-7)
    const __m256 sw =
        g == 32 ? _mm256_set1_ps(sn[b])
                : _mm256_permutevar8x32_ps(
                      _mm256_castps128_ps256(_mm_castsi128_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(sn + 2 * b)))),
                      _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1));
    for (int r = 0; r < R; ++r) {
      const __m256 s = _mm256_mul_ps(sw, _mm256_set1_ps(dx[r * blocks + b]));
      acc[r] = _mm256_fmadd_ps(dot32(aq, q, xq + r * K + b * 32), s, acc[r]);
    }
  }
}

inline float dot_f32(const float* a, const float* b, int64_t n) {
  float total = 0.f;
  for (int64_t i = 0; i < n; ++i) total += a[i] * b[i];
  return total;
}

void check_rows(const at::Tensor& q, const at::Tensor& scale, const at::Tensor& offset) {
  TORCH_CHECK(q.dim() == 2 && q.scalar_type() == at::kChar && q.is_contiguous(), "q must be a contiguous int8 [N, K] tensor");
  TORCH_CHECK(scale.dim() == 2 && scale.scalar_type() == at::kFloat && scale.is_contiguous() && scale.size(0) == q.size(0),
              "scale must be a contiguous float32 [N, K / group] tensor");
  TORCH_CHECK(scale.size(1) > 0 && q.size(1) % scale.size(1) == 0, "the group size must divide K");
  TORCH_CHECK(offset.numel() == 0 || (offset.sizes() == scale.sizes() && offset.scalar_type() == at::kFloat && offset.is_contiguous()),
              "offset must be empty or shaped like scale");
}

at::Tensor q8_linear(const at::Tensor& x, const at::Tensor& q, const at::Tensor& scale, const at::Tensor& offset) {
  check_rows(q, scale, offset);
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.size(-1) == q.size(1), "x must be float32 [..., K]");
  const auto xc = x.reshape({-1, q.size(1)}).contiguous();
  const int64_t M = xc.size(0), N = q.size(0), K = q.size(1), g = K / scale.size(1), groups = K / g;
  TORCH_CHECK((g == 16 || g == 32) && K % 32 == 0, "int8 activations need groups of 16 or 32 inputs and K % 32 == 0");
  auto xq = at::empty({M, K}, q.options());
  auto dx = at::empty({M, K / 32}, scale.options());
  auto xsum = at::empty({M, groups}, scale.options());
  const float* xp = xc.data_ptr<float>();
  for (int64_t m = 0; m < M; ++m)
    quantize_row_q8(xp + m * K, K, xq.data_ptr<int8_t>() + m * K, dx.data_ptr<float>() + m * (K / 32));
  group_sums(xp, M, K, g, xsum.data_ptr<float>());
  auto sizes = x.sizes().vec();
  sizes.back() = N;
  auto y = at::empty({M, N}, x.options());
  const int8_t* xqp = xq.data_ptr<int8_t>();
  const float* dxp = dx.data_ptr<float>();
  const float* xs = xsum.data_ptr<float>();
  const int8_t* qp = q.data_ptr<int8_t>();
  const float* sp = scale.data_ptr<float>();
  const float* op = offset.numel() ? offset.data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  ragloom::parallel_for(0, N, 16, [&](int64_t begin, int64_t end) {
    __m256 acc[4];
    for (int64_t n = begin; n < end; ++n) {
      const int8_t* qn = qp + n * K;
      const float* sn = sp + n * groups;
      for (int64_t m = 0; m < M; m += 4) {
        const int64_t rows = std::min<int64_t>(4, M - m);
        const int8_t* xr = xqp + m * K;
        const float* dr = dxp + m * (K / 32);
        switch (rows) {
          case 4: q8_rows<4>(xr, dr, K, qn, sn, g, acc); break;
          case 3: q8_rows<3>(xr, dr, K, qn, sn, g, acc); break;
          case 2: q8_rows<2>(xr, dr, K, qn, sn, g, acc); break;
          default: q8_rows<1>(xr, dr, K, qn, sn, g, acc); break;
        }
        for (int64_t r = 0; r < rows; ++r) {
          float out = hsum8(acc[r]);
          if (op != nullptr) out -= dot_f32(op + n * groups, xs + (m + r) * groups, groups);
          yp[(m + r) * N + n] = out;
        }
      }
    }
  });
  return y.view(sizes);
}

}  // namespace

TORCH_LIBRARY(ragloom_gguf, m) {
  m.def("grouped_linear(Tensor x, Tensor q, Tensor scale, Tensor offset) -> Tensor");
  m.def("grouped_dequantize(Tensor q, Tensor scale, Tensor offset) -> Tensor");
  m.def("q8_linear(Tensor x, Tensor q, Tensor scale, Tensor offset) -> Tensor");
}
TORCH_LIBRARY_IMPL(ragloom_gguf, CPU, m) {
  m.impl("grouped_linear", &grouped_linear);
  m.impl("grouped_dequantize", &grouped_dequantize);
  m.impl("q8_linear", &q8_linear);
}
