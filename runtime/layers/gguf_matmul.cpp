// ragloom's CPU kernel for linear layers that keep a GGUF file's own quantised weights.
//
// A weight is stored as int8 codes q [N, K] with one float32 scale (and, for the types that
// have one, one float32 offset) per group of g consecutive inputs of a row:
//
//     w[n, k] = scale[n, k / g] * q[n, k] - offset[n, k / g]
//
// which is exactly how gguf dequantises Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 (g = 32), Q4_K/Q5_K (g = 32)
// and Q6_K (g = 16). Each weight is decoded in registers with the same float32 operations, in
// the same order (multiply, then subtract; built with -ffp-contract=off so no FMA fuses them),
// so the products use the very weights the float32 model holds: only the summation order of
// the dot products differs. A decode step then streams 1.1-1.25 bytes per weight instead of 4.
//
// grouped_linear(x [M, K] float32, q, scale, offset) -> [M, N] float32; `offset` may be empty.
// grouped_dequantize(q, scale, offset) -> [N, K] float32, and grouped_dequantize_out into a
// given buffer (products of many rows run faster as a BLAS GEMM on decoded tiles of the weight;
// a reused buffer stays in the cache and takes no page faults).
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

namespace {

// Eight weights of one group, decoded exactly as gguf does: scale * q (- offset).
template <bool kOffset>
inline __m256 decode8(const int8_t* q, __m256 sc, __m256 off) {
  __m256 w = _mm256_mul_ps(
      _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q)))), sc);
  if constexpr (kOffset) w = _mm256_sub_ps(w, off);
  return w;
}

using ragloom::hsum8;

template <int R, int U, bool kOffset, bool kAdd = false>
inline void rows_dot(const float* x, int64_t ldx, const int8_t* q, const float* sc, const float* off,
                     int64_t K, int64_t g, float* y, int64_t ldy) {
  // U independent accumulators per row (unrolled over U chunks of 8) hide the FMA latency
  // when there are few rows; g is a multiple of 8 * U. kAdd: add the dot products to y (a
  // later slice of the inputs), else store them; x's rows are ldx floats apart.
  __m256 acc[R][U];
  for (int r = 0; r < R; ++r)
    for (int u = 0; u < U; ++u) acc[r][u] = _mm256_setzero_ps();
  const int64_t groups = K / g;
  for (int64_t G = 0; G < groups; ++G) {
    const __m256 s = _mm256_set1_ps(sc[G]);
    const __m256 o = kOffset ? _mm256_set1_ps(off[G]) : _mm256_setzero_ps();
    for (int64_t j = G * g; j < (G + 1) * g; j += 8 * U) {
      for (int u = 0; u < U; ++u) {
        const __m256 w = decode8<kOffset>(q + j + 8 * u, s, o);
        for (int r = 0; r < R; ++r)
          acc[r][u] = _mm256_fmadd_ps(w, _mm256_loadu_ps(x + r * ldx + j + 8 * u), acc[r][u]);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    __m256 total = acc[r][0];
    for (int u = 1; u < U; ++u) total = _mm256_add_ps(total, acc[r][u]);
    if constexpr (kAdd) y[r * ldy] += hsum8(total);
    else y[r * ldy] = hsum8(total);
  }
}

template <bool kOffset, bool kAdd = false>
inline void rows_dot_any(const float* x, int64_t ldx, int64_t M, const int8_t* qn, const float* sn, const float* on,
                         int64_t K, int64_t g, float* y, int64_t N) {
  int64_t m = 0;
  // a batch of decodes: 8 rows share each decoded weight (8 accumulators + the weight
  // and its scale/offset fit AVX2's 16 registers)
  for (; m + 8 <= M; m += 8) rows_dot<8, 1, kOffset, kAdd>(x + m * ldx, ldx, qn, sn, on, K, g, y + m * N, N);
  // 5-7 rows (a batch a request has left) in one pass too: as 4 + 1-3 they decoded every
  // weight twice and ran 1.5x slower than 8 rows
  switch (M - m) {
    case 7: rows_dot<7, 1, kOffset, kAdd>(x + m * ldx, ldx, qn, sn, on, K, g, y + m * N, N); break;
    case 6: rows_dot<6, 1, kOffset, kAdd>(x + m * ldx, ldx, qn, sn, on, K, g, y + m * N, N); break;
    case 5: rows_dot<5, 1, kOffset, kAdd>(x + m * ldx, ldx, qn, sn, on, K, g, y + m * N, N); break;
    case 4: rows_dot<4, 1, kOffset, kAdd>(x + m * ldx, ldx, qn, sn, on, K, g, y + m * N, N); break;
    case 3: rows_dot<3, 1, kOffset, kAdd>(x + m * ldx, ldx, qn, sn, on, K, g, y + m * N, N); break;
    case 2:
      if (g % 16 == 0) rows_dot<2, 2, kOffset, kAdd>(x + m * ldx, ldx, qn, sn, on, K, g, y + m * N, N);
      else rows_dot<2, 1, kOffset, kAdd>(x + m * ldx, ldx, qn, sn, on, K, g, y + m * N, N);
      break;
    case 1:  // a decode step: unroll so 4 (or 2) FMA chains run at once
      if (g % 32 == 0) rows_dot<1, 4, kOffset, kAdd>(x + m * ldx, ldx, qn, sn, on, K, g, y + m * N, N);
      else if (g % 16 == 0) rows_dot<1, 2, kOffset, kAdd>(x + m * ldx, ldx, qn, sn, on, K, g, y + m * N, N);
      else rows_dot<1, 1, kOffset, kAdd>(x + m * ldx, ldx, qn, sn, on, K, g, y + m * N, N);
      break;
    default: break;
  }
}

template <bool kOffset>
void linear_impl(const float* x, int64_t M, const int8_t* q, const float* sc, const float* off,
                 int64_t N, int64_t K, int64_t g, float* y) {
  const int64_t groups = K / g;
  // weight rows are taken in tiles that stay in L2 while every 8-row block of x passes over them
  const int64_t tile = std::max<int64_t>(8, (64 << 10) / K);
  // ... from L1 where 8 rows fit it (K <= 1,024). Longer rows, from 32 rows of x on, are taken
  // 512 inputs at a time (16 KB of x), each slice's dot products added into y: 32-64 rows over
  // 4,864 inputs ran in 0.75-0.87 of the time (one and two threads). Fewer rows keep whole
  // rows: each weight row's slices lie 4,864 bytes apart, and with one or two 8-row blocks of x
  // the slices cost more than reading x from L2 (8 rows: 1.2-1.3x the time).
  const int64_t kc = (M < 32 || K <= 1024) ? K : std::max<int64_t>(g, 512 / g * g);
  ragloom::parallel_for(0, N, 16, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; t += tile) {
      const int64_t t_end = std::min(end, t + tile);
      for (int64_t m = 0; m < M; m += 8) {
        const int64_t rows = std::min<int64_t>(8, M - m);
        for (int64_t k0 = 0; k0 < K; k0 += kc) {
          const int64_t len = std::min(kc, K - k0);
          for (int64_t n = t; n < t_end; ++n) {
            const float* sn = sc + n * groups + k0 / g;
            const float* on = kOffset ? off + n * groups + k0 / g : nullptr;
            if (k0 == 0)
              rows_dot_any<kOffset, false>(x + m * K, K, rows, q + n * K, sn, on, len, g, y + m * N + n, N);
            else
              rows_dot_any<kOffset, true>(x + m * K + k0, K, rows, q + n * K + k0, sn, on, len, g, y + m * N + n, N);
          }
        }
      }
    }
  });
}

void check(const at::Tensor& q, const at::Tensor& scale, const at::Tensor& offset) {
  TORCH_CHECK(q.dim() == 2 && q.scalar_type() == at::kChar && q.is_contiguous(), "q must be a contiguous int8 [N, K] tensor");
  TORCH_CHECK(scale.dim() == 2 && scale.scalar_type() == at::kFloat && scale.is_contiguous() && scale.size(0) == q.size(0),
              "scale must be a contiguous float32 [N, K / group] tensor");
  TORCH_CHECK(q.size(1) % scale.size(1) == 0 && (q.size(1) / scale.size(1)) % 8 == 0, "group size must be a multiple of 8");
  TORCH_CHECK(offset.numel() == 0 || (offset.sizes() == scale.sizes() && offset.scalar_type() == at::kFloat && offset.is_contiguous()),
              "offset must be empty or shaped like scale");
}

at::Tensor grouped_linear(const at::Tensor& x, const at::Tensor& q, const at::Tensor& scale, const at::Tensor& offset) {
  check(q, scale, offset);
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.size(-1) == q.size(1), "x must be float32 [..., K]");
  const auto xc = x.reshape({-1, q.size(1)}).contiguous();
  const int64_t M = xc.size(0), N = q.size(0), K = q.size(1), g = K / scale.size(1);
  auto sizes = x.sizes().vec();
  sizes.back() = N;
  auto y = at::empty({M, N}, x.options());
  if (offset.numel())
    linear_impl<true>(xc.data_ptr<float>(), M, q.data_ptr<int8_t>(), scale.data_ptr<float>(), offset.data_ptr<float>(), N, K, g, y.data_ptr<float>());
  else
    linear_impl<false>(xc.data_ptr<float>(), M, q.data_ptr<int8_t>(), scale.data_ptr<float>(), nullptr, N, K, g, y.data_ptr<float>());
  return y.view(sizes);
}

template <bool kOffset>
inline void dequant_row(const int8_t* q, const float* sc, const float* off, int64_t K, int64_t g, float* w) {
  // subtle: a separate function with plain pointer arguments; written inline in the
  // parallel_for lambda, the loop re-read the captured pointers after every store (2.4 vs
  // ~8 G weights/s)
  for (int64_t G = 0; G < K / g; ++G) {
    const __m256 s = _mm256_set1_ps(sc[G]);
    const __m256 o = kOffset ? _mm256_set1_ps(off[G]) : _mm256_setzero_ps();
    for (int64_t j = G * g; j < (G + 1) * g; j += 8) _mm256_storeu_ps(w + j, decode8<kOffset>(q + j, s, o));
  }
}

template <bool kOffset>
void dequant_impl(const int8_t* q, const float* sc, const float* off, int64_t N, int64_t K, int64_t g, float* w) {
  const int64_t groups = K / g;
  // (a torch GEMM on these weights comes next, on torch's threads: no lingering workers)
  ragloom::parallel_for(
      0, N, 16,
      [&](int64_t begin, int64_t end) {
        for (int64_t n = begin; n < end; ++n)
          dequant_row<kOffset>(q + n * K, sc + n * groups, kOffset ? off + n * groups : nullptr, K, g, w + n * K);
      },
      /*linger=*/false);
}

at::Tensor& grouped_dequantize_out(const at::Tensor& q, const at::Tensor& scale, const at::Tensor& offset,
                                   at::Tensor& out) {
  check(q, scale, offset);
  const int64_t N = q.size(0), K = q.size(1), g = K / scale.size(1);
  TORCH_CHECK(out.scalar_type() == at::kFloat && out.is_contiguous() && out.numel() == N * K,
              "out must be a contiguous float32 tensor of N * K elements");
  if (offset.numel())
    dequant_impl<true>(q.data_ptr<int8_t>(), scale.data_ptr<float>(), offset.data_ptr<float>(), N, K, g, out.data_ptr<float>());
  else
    dequant_impl<false>(q.data_ptr<int8_t>(), scale.data_ptr<float>(), nullptr, N, K, g, out.data_ptr<float>());
  return out;
}

at::Tensor grouped_dequantize(const at::Tensor& q, const at::Tensor& scale, const at::Tensor& offset) {
  auto out = at::empty({q.size(0), q.size(1)}, scale.options());
  grouped_dequantize_out(q, scale, offset, out);
  return out;
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

at::Tensor q8_linear(const at::Tensor& x, const at::Tensor& q, const at::Tensor& scale, const at::Tensor& offset) {
  check(q, scale, offset);
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
  m.def("grouped_dequantize_out(Tensor q, Tensor scale, Tensor offset, Tensor(a!) out) -> Tensor(a!)");
  m.def("q8_linear(Tensor x, Tensor q, Tensor scale, Tensor offset) -> Tensor");
}
TORCH_LIBRARY_IMPL(ragloom_gguf, CPU, m) {
  m.impl("grouped_linear", &grouped_linear);
  m.impl("grouped_dequantize", &grouped_dequantize);
  m.impl("grouped_dequantize_out", &grouped_dequantize_out);
  m.impl("q8_linear", &q8_linear);
}
