// ragloom's CPU kernel for linear layers that keep a GGUF file's own quantised weights.
//
// A weight is stored as int8 codes q with one float32 scale (and, for the types that have one,
// one float32 offset) per group of g consecutive inputs of a row:
//
//     w[n, k] = scale[n, k / g] * q[n, k] - offset[n, k / g]
//
// which is exactly how gguf dequantises Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 (g = 32), Q4_K/Q5_K (g = 32)
// and Q6_K (g = 16). Each weight is decoded in registers with the same float32 operations, in
// the same order (multiply, then subtract; built with -ffp-contract=off so no FMA fuses them),
// so the products use the very weights the float32 model holds: only the summation order of
// the dot products differs. A decode step then streams 1.1-1.25 bytes per weight instead of 4.
//
// Float32 activations (the default) take the codes in panels of 8 output rows, interleaved
// input by input: q [N / 8, K, 8], scale and offset [N / 8, K / g, 8]
// (ragloom.runtime.layers.gguf_linear.pack_panels).
//   grouped_linear(x [M, K], q, scale, offset) -> [M, N]; `offset` may be empty.
//   grouped_dequantize(q, scale, offset) -> [N, K] (the weights the products use).
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
// One 8-byte load is the codes of one input for 8 outputs, decoded into one vector, and each
// row of x meets it as a broadcast of one float. The kernel keeps R rows x NP panels of outputs
// in registers, so x is read once per 8 outputs, and each decoded weight serves R rows. (Before,
// each output was a dot product over a row of codes: x was re-read for every output, from L2
// for rows of 4,864 inputs, and the down projection ran at half speed; 8 rows at 896 x 4,864:
// 92 -> 139 GFLOP/s on two threads, 54-256 rows of any layer 111-140 -> 140-157, where torch's
// GEMM on decoded tiles of the weight ran 83-154.)
// Every output is one FMA chain over its inputs in order: a row's result never depends on how
// many rows share its step, nor on the threads.

constexpr int64_t kPanel = 8;

// the weights of input k of a panel, for its 8 outputs: scale * q (- offset), as gguf decodes
template <bool kOffset>
inline __m256 decode_panel(const int8_t* q, const float* sc, const float* off) {
  __m256 w = _mm256_mul_ps(
      _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q)))),
      _mm256_loadu_ps(sc));
  if constexpr (kOffset) w = _mm256_sub_ps(w, _mm256_loadu_ps(off));
  return w;
}

// y[r, 8p .. 8p + 7] = x[r] . W[panel p]^T for R rows of x (ldx apart) and NP panels (pq codes
// and ps scales apart). The R * NP accumulators and either the NP decoded weights or the R
// broadcasts (whichever are fewer) fit AVX2's 16 registers. (subtle) GCC kept the accumulators
// in registers only with every small loop unrolled; else it stored them after each FMA.
template <int R, int NP, bool kOffset>
inline void panel_rows(const float* x, int64_t ldx, const int8_t* q, int64_t pq, const float* sc, const float* off,
                       int64_t ps, int64_t K, int64_t g, float* y, int64_t ldy) {
  __m256 acc[R][NP];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int p = 0; p < NP; ++p) acc[r][p] = _mm256_setzero_ps();
  int64_t in_group = 0;
  for (int64_t k = 0; k < K; ++k) {
    if constexpr (NP > R) {  // the broadcasts held, one decoded weight at a time
      __m256 xr[R];
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) xr[r] = _mm256_broadcast_ss(x + r * ldx + k);
#pragma GCC unroll 8
      for (int p = 0; p < NP; ++p) {
        const __m256 w = decode_panel<kOffset>(q + p * pq + k * kPanel, sc + p * ps, kOffset ? off + p * ps : nullptr);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) acc[r][p] = _mm256_fmadd_ps(w, xr[r], acc[r][p]);
      }
    } else {  // the decoded weights held, one broadcast at a time
      __m256 w[NP];
#pragma GCC unroll 8
      for (int p = 0; p < NP; ++p)
        w[p] = decode_panel<kOffset>(q + p * pq + k * kPanel, sc + p * ps, kOffset ? off + p * ps : nullptr);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const __m256 xr = _mm256_broadcast_ss(x + r * ldx + k);
#pragma GCC unroll 8
        for (int p = 0; p < NP; ++p) acc[r][p] = _mm256_fmadd_ps(w[p], xr, acc[r][p]);
      }
    }
    if (++in_group == g) {  // on to the next group's scales (and offsets)
      in_group = 0;
      sc += kPanel;
      if constexpr (kOffset) off += kPanel;
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int p = 0; p < NP; ++p) _mm256_storeu_ps(y + r * ldy + p * kPanel, acc[r][p]);
}

// R rows of x over panels [p0, p1), NP panels at a time. NP for R rows: as many accumulators as
// fit (one row: 8 chains hide the FMA latency; six rows x two panels: 12 FMAs per two decoded
// weights, the most of any shape; seven or eight rows: one panel).
template <int R, bool kOffset>
inline void panel_block(const float* x, int64_t ldx, const int8_t* q, const float* sc, const float* off, int64_t K,
                        int64_t groups, int64_t g, int64_t p0, int64_t p1, float* y, int64_t N) {
  constexpr int NP = R == 1 ? 8 : R == 2 ? 6 : R == 3 ? 4 : R == 4 ? 3 : R <= 6 ? 2 : 1;
  const int64_t pq = K * kPanel, ps = groups * kPanel;
  int64_t p = p0;
  for (; p + NP <= p1; p += NP)
    panel_rows<R, NP, kOffset>(x, ldx, q + p * pq, pq, sc + p * ps, kOffset ? off + p * ps : nullptr, ps, K, g,
                               y + p * kPanel, N);
  for (; p < p1; ++p)
    panel_rows<R, 1, kOffset>(x, ldx, q + p * pq, pq, sc + p * ps, kOffset ? off + p * ps : nullptr, ps, K, g,
                              y + p * kPanel, N);
}

template <bool kOffset>
void panel_block_any(int64_t rows, const float* x, const int8_t* q, const float* sc, const float* off, int64_t K,
                     int64_t groups, int64_t g, int64_t p0, int64_t p1, float* y, int64_t N) {
  switch (rows) {
    case 8: panel_block<8, kOffset>(x, K, q, sc, off, K, groups, g, p0, p1, y, N); break;
    case 7: panel_block<7, kOffset>(x, K, q, sc, off, K, groups, g, p0, p1, y, N); break;
    case 6: panel_block<6, kOffset>(x, K, q, sc, off, K, groups, g, p0, p1, y, N); break;
    case 5: panel_block<5, kOffset>(x, K, q, sc, off, K, groups, g, p0, p1, y, N); break;
    case 4: panel_block<4, kOffset>(x, K, q, sc, off, K, groups, g, p0, p1, y, N); break;
    case 3: panel_block<3, kOffset>(x, K, q, sc, off, K, groups, g, p0, p1, y, N); break;
    case 2: panel_block<2, kOffset>(x, K, q, sc, off, K, groups, g, p0, p1, y, N); break;
    case 1: panel_block<1, kOffset>(x, K, q, sc, off, K, groups, g, p0, p1, y, N); break;
    default: break;
  }
}

// --- 32 rows or more: each block of panels decoded once to float32, then plain FMAs ----------
//
// Decoding in registers costs a multiply (and a convert) per weight, which a step of many rows
// repeats for every 6 of them. From 32 rows, each thread decodes 12 panels x 512 inputs at a
// time into a buffer (192 KB, in L2) and runs only FMAs over it, 6 rows x 2 panels at a time: two
// threads, Qwen2.5-0.5B's shapes, 54-512 rows 138-155 -> 164-187 GFLOP/s (below 32 rows the
// decode in registers was faster). Each output's FMA chain is the same, in the same order (a
// slice's sums are stored and picked up by the next): the numbers equal the other path's.
constexpr int64_t kDecodedRows = 32;
constexpr int64_t kDecodedPanels = 12;  // panels decoded at a time
constexpr int64_t kSlice = 512;         // inputs decoded at a time

// float_rows / float_block: panel_rows / panel_block over decoded weights w [panels][kc][8];
// `add` picks up the sums of the previous slice of inputs from y
template <int R, int NP>
inline void float_rows(const float* x, int64_t ldx, const float* w, int64_t pw, int64_t kc, float* y, int64_t ldy,
                       bool add) {
  __m256 acc[R][NP];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int p = 0; p < NP; ++p) acc[r][p] = add ? _mm256_loadu_ps(y + r * ldy + p * kPanel) : _mm256_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    __m256 wv[NP];
#pragma GCC unroll 8
    for (int p = 0; p < NP; ++p) wv[p] = _mm256_loadu_ps(w + p * pw + k * kPanel);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m256 xr = _mm256_broadcast_ss(x + r * ldx + k);
#pragma GCC unroll 8
      for (int p = 0; p < NP; ++p) acc[r][p] = _mm256_fmadd_ps(wv[p], xr, acc[r][p]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int p = 0; p < NP; ++p) _mm256_storeu_ps(y + r * ldy + p * kPanel, acc[r][p]);
}

template <int R>
inline void float_block(const float* x, int64_t ldx, const float* w, int64_t panels, int64_t kc, float* y, int64_t N,
                        bool add) {
  constexpr int NP = R <= 4 ? 3 : R <= 6 ? 2 : 1;
  const int64_t pw = kc * kPanel;
  int64_t p = 0;
  for (; p + NP <= panels; p += NP) float_rows<R, NP>(x, ldx, w + p * pw, pw, kc, y + p * kPanel, N, add);
  for (; p < panels; ++p) float_rows<R, 1>(x, ldx, w + p * pw, pw, kc, y + p * kPanel, N, add);
}

inline void float_block_any(int64_t rows, const float* x, int64_t ldx, const float* w, int64_t panels, int64_t kc,
                            float* y, int64_t N, bool add) {
  switch (rows) {
    case 6: float_block<6>(x, ldx, w, panels, kc, y, N, add); break;
    case 5: float_block<5>(x, ldx, w, panels, kc, y, N, add); break;
    case 4: float_block<4>(x, ldx, w, panels, kc, y, N, add); break;
    case 3: float_block<3>(x, ldx, w, panels, kc, y, N, add); break;
    case 2: float_block<2>(x, ldx, w, panels, kc, y, N, add); break;
    case 1: float_block<1>(x, ldx, w, panels, kc, y, N, add); break;
    default: break;
  }
}

// inputs [k0, k0 + kc) of one panel, decoded as decode_panel decodes them into w: input k's
// 8 weights at w + k * ldw. (subtle: a separate function with plain pointer arguments; written
// inline in a parallel_for lambda, the loop re-read the captured pointers after every store)
template <bool kOffset>
inline void decode_slice(const int8_t* q, const float* sc, const float* off, int64_t k0, int64_t kc, int64_t g,
                         float* w, int64_t ldw) {
  const int64_t G0 = k0 / g;
  int64_t in_group = k0 - G0 * g;
  sc += G0 * kPanel;
  if constexpr (kOffset) off += G0 * kPanel;
  for (int64_t k = 0; k < kc; ++k) {
    _mm256_storeu_ps(w + k * ldw, decode_panel<kOffset>(q + (k0 + k) * kPanel, sc, off));
    if (++in_group == g) {
      in_group = 0;
      sc += kPanel;
      if constexpr (kOffset) off += kPanel;
    }
  }
}

template <bool kOffset>
void linear_decoded(const float* x, int64_t M, const int8_t* q, const float* sc, const float* off, int64_t N,
                    int64_t K, int64_t g, float* y) {
  const int64_t groups = K / g, panels = N / kPanel;
  ragloom::parallel_for(0, panels, 2, [&](int64_t begin, int64_t end) {
    static thread_local std::vector<float> buffer;  // (per thread of the pool, kept)
    buffer.resize(kDecodedPanels * kSlice * kPanel);
    float* w = buffer.data();
    for (int64_t b = begin; b < end; b += kDecodedPanels) {
      const int64_t n_panels = std::min(end, b + kDecodedPanels) - b;
      for (int64_t k0 = 0; k0 < K; k0 += kSlice) {
        const int64_t kc = std::min(kSlice, K - k0);
        for (int64_t p = 0; p < n_panels; ++p)
          decode_slice<kOffset>(q + (b + p) * K * kPanel, sc + (b + p) * groups * kPanel,
                                kOffset ? off + (b + p) * groups * kPanel : nullptr, k0, kc, g, w + p * kc * kPanel,
                                kPanel);
        for (int64_t m = 0; m < M; m += 6)
          float_block_any(std::min<int64_t>(6, M - m), x + m * K + k0, K, w, n_panels, kc, y + m * N + b * kPanel, N,
                          k0 > 0);
      }
    }
  });
}

template <bool kOffset>
void linear_impl(const float* x, int64_t M, const int8_t* q, const float* sc, const float* off, int64_t N,
                 int64_t K, int64_t g, float* y) {
  if (M >= kDecodedRows) {
    linear_decoded<kOffset>(x, M, q, sc, off, N, K, g, y);
    return;
  }
  const int64_t groups = K / g, panels = N / kPanel;
  // up to 8 rows (decodes) in one pass over the weights, which stream from memory once; 9-31
  // rows 6 at a time, over blocks of panels that stay in L2 (192 KB) while the rows pass
  const int64_t rows_at_once = M <= 8 ? M : 6;
  const int64_t block = M <= 8 ? 24 : std::clamp<int64_t>((192 << 10) / (K * kPanel), 6, 24);
  ragloom::parallel_for(0, panels, 2, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; b += block) {
      const int64_t b_end = std::min(end, b + block);
      for (int64_t m = 0; m < M; m += rows_at_once)
        panel_block_any<kOffset>(std::min(rows_at_once, M - m), x + m * K, q, sc, off, K, groups, g, b, b_end,
                                 y + m * N, N);
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

at::Tensor grouped_linear(const at::Tensor& x, const at::Tensor& q, const at::Tensor& scale, const at::Tensor& offset) {
  check(q, scale, offset);
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.size(-1) == q.size(1), "x must be float32 [..., K]");
  const auto xc = x.reshape({-1, q.size(1)}).contiguous();
  const int64_t M = xc.size(0), N = q.size(0) * kPanel, K = q.size(1), g = K / scale.size(1);
  auto sizes = x.sizes().vec();
  sizes.back() = N;
  auto y = at::empty({M, N}, x.options());
  if (offset.numel())
    linear_impl<true>(xc.data_ptr<float>(), M, q.data_ptr<int8_t>(), scale.data_ptr<float>(), offset.data_ptr<float>(),
                      N, K, g, y.data_ptr<float>());
  else
    linear_impl<false>(xc.data_ptr<float>(), M, q.data_ptr<int8_t>(), scale.data_ptr<float>(), nullptr, N, K, g,
                       y.data_ptr<float>());
  return y.view(sizes);
}

// panel by panel into w^T [K, 8 * panels]
template <bool kOffset>
void dequant_impl(const int8_t* q, const float* sc, const float* off, int64_t panels, int64_t K, int64_t g, float* wt) {
  const int64_t groups = K / g;
  ragloom::parallel_for(0, panels, 4, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p)
      decode_slice<kOffset>(q + p * K * kPanel, sc + p * groups * kPanel, kOffset ? off + p * groups * kPanel : nullptr,
                            0, K, g, wt + p * kPanel, panels * kPanel);
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
  for (int64_t m = 0; m < M; ++m) {
    quantize_row_q8(xp + m * K, K, xq.data_ptr<int8_t>() + m * K, dx.data_ptr<float>() + m * (K / 32));
    for (int64_t G = 0; G < groups; ++G) {
      float total = 0.f;
      for (int64_t k = G * g; k < (G + 1) * g; ++k) total += xp[m * K + k];
      xsum.data_ptr<float>()[m * groups + G] = total;
    }
  }
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
