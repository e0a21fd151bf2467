// ragloom's CPU kernels for the small per-token layers of a decode step: RMSNorm fused with the
// residual add before it, and rotary position embeddings for queries and keys together.
//
// add_rms_norm(x [T, n], residual [T, n] or empty, weight [n], eps) -> (out, new residual):
//     h = x + residual (or x), out = weight * (h * (1 / sqrt(mean(h^2) + eps)))
// rotary(q [T, H, D], k [T, KVH, D], cos [P, D], sin [P, D], positions [T]) -> (q', k'):
//     x' = x * cos[p] + rotate_half(x) * sin[p], rotate_half(x) = [-x[D/2:], x[:D/2]]
// silu_mul(x [T, 2I]) -> [T, I]: silu(gate) * up for x = [gate, up], silu(g) = g / (1 + e^-g)
//
// Why kernels: in torch these are 5-10 small ops each, a few microseconds apiece, 24 times a
// step; one call each costs less than one of those ops. Rotary does the very float32 operations
// of the torch path (built with -ffp-contract=off: a multiply, a multiply, an add), so its
// results are the same bit for bit; the norm sums its squares in another order (float32
// rounding only), and silu_mul's e^x is ragloom::exp8 (relative error ~1e-7) where torch uses
// Sleef's. Only silu_mul, whose e^x costs ~2 ns an element, splits its work over threads, and
// only for many rows (prefill chunks, whose GEMMs may run on torch's threads next: the pool's
// workers do not linger after it). The norm and the rotary stay on the calling thread: they
// stream memory at ~0.4 ns an element (75 us for a 194-row chunk of Qwen2.5-0.5B), less than
// it costs to wake a sleeping thread on a virtual machine (measured here: 1.5-2 ms), which a
// split paid whenever the other thread slept; the norm also adds the residual in the same pass
// instead of through torch's add, one of torch's parallel ops, which had the same cost.
//
// Built with the other kernels into one library (ragloom.runtime.layers.kernels);
// ragloom.runtime.layers.rmsnorm, .rotary and .activation hold the torch paths the tests
// compare them to.
#include <ATen/ATen.h>
#include <torch/library.h>
#include <immintrin.h>
#include "avx2.h"
#include "parallel.h"
#include <cmath>
#include <tuple>

namespace {

constexpr int64_t kParallelWork = 1 << 16;  // silu_mul: outputs below which it stays on one thread

inline float sum_squares(const float* h, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(h + i);
    acc = _mm256_add_ps(acc, _mm256_mul_ps(v, v));
  }
  float total = ragloom::hsum8(acc);
  for (; i < n; ++i) total += h[i] * h[i];
  return total;
}

std::tuple<at::Tensor, at::Tensor> add_rms_norm(const at::Tensor& x, const at::Tensor& residual,
                                                const at::Tensor& weight, double eps) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.dim() == 2 && x.is_contiguous(), "x must be contiguous float32 [T, n]");
  TORCH_CHECK(residual.numel() == 0 || (residual.sizes() == x.sizes() && residual.scalar_type() == at::kFloat),
              "residual must be empty or float32 shaped like x");
  TORCH_CHECK(weight.scalar_type() == at::kFloat && weight.dim() == 1 && weight.size(0) == x.size(1) && weight.is_contiguous(),
              "weight must be contiguous float32 [n]");
  const int64_t T = x.size(0), n = x.size(1);
  const at::Tensor rc = residual.numel() ? residual.contiguous() : residual;
  const at::Tensor h = residual.numel() ? at::empty_like(x) : x;
  auto out = at::empty_like(x);
  const float* xp = x.data_ptr<float>();
  const float* rp = residual.numel() ? rc.data_ptr<float>() : nullptr;
  float* hp = h.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const float e = static_cast<float>(eps);
  for (int64_t t = 0; t < T; ++t) {
    float* row = hp + t * n;
    if (rp != nullptr)  // h = x + residual, as torch's add (one rounding an element)
      for (int64_t i = 0; i < n; ++i) row[i] = xp[t * n + i] + rp[t * n + i];
    const float inv = 1.f / std::sqrt(sum_squares(row, n) / static_cast<float>(n) + e);
    float* o = op + t * n;
    for (int64_t i = 0; i < n; ++i) o[i] = wp[i] * (row[i] * inv);
  }
  return {out, h};
}

// one tensor's heads: out [T, heads, D] from x (rows `stride` apart, heads D apart)
void rotate(const float* x, int64_t stride, int64_t T, int64_t heads, int64_t D, const float* cos, const float* sin,
            const int64_t* pos, float* out, int64_t begin, int64_t end) {
  const int64_t half = D / 2;
  for (int64_t t = begin; t < end; ++t) {
    const float* c = cos + pos[t] * D;
    const float* s = sin + pos[t] * D;
    for (int64_t h = 0; h < heads; ++h) {
      const float* v = x + t * stride + h * D;
      float* o = out + (t * heads + h) * D;
      for (int64_t i = 0; i < half; ++i) o[i] = v[i] * c[i] + (-v[i + half]) * s[i];
      for (int64_t i = half; i < D; ++i) o[i] = v[i] * c[i] + v[i - half] * s[i];
    }
  }
}

std::tuple<at::Tensor, at::Tensor> rotary(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
                                          const at::Tensor& sin, const at::Tensor& positions) {
  for (const auto* x : {&q, &k})
    TORCH_CHECK(x->scalar_type() == at::kFloat && x->dim() == 3 && x->stride(2) == 1 && x->stride(1) == x->size(2) &&
                    x->stride(0) >= x->size(1) * x->size(2),
                "q and k must be float32 [T, heads, D] with contiguous heads");
  const int64_t T = q.size(0), D = q.size(2);
  TORCH_CHECK(k.size(0) == T && k.size(2) == D && D % 2 == 0, "q and k must have the same tokens and an even head size");
  TORCH_CHECK(cos.scalar_type() == at::kFloat && sin.scalar_type() == at::kFloat && cos.dim() == 2 && cos.size(1) == D &&
                  cos.is_contiguous() && sin.sizes() == cos.sizes() && sin.is_contiguous(),
              "cos and sin must be contiguous float32 [positions, D] tables");
  TORCH_CHECK(positions.scalar_type() == at::kLong && positions.dim() == 1 && positions.size(0) == T, "positions must be int64 [T]");
  const auto pc = positions.contiguous();
  const int64_t* pos = pc.data_ptr<int64_t>();
  for (int64_t t = 0; t < T; ++t)
    TORCH_CHECK(pos[t] >= 0 && pos[t] < cos.size(0), "position ", pos[t], " outside the table of ", cos.size(0));
  auto q_out = at::empty({T, q.size(1), D}, q.options());
  auto k_out = at::empty({T, k.size(1), D}, k.options());
  rotate(q.data_ptr<float>(), q.stride(0), T, q.size(1), D, cos.data_ptr<float>(), sin.data_ptr<float>(), pos,
         q_out.data_ptr<float>(), 0, T);
  rotate(k.data_ptr<float>(), k.stride(0), T, k.size(1), D, cos.data_ptr<float>(), sin.data_ptr<float>(), pos,
         k_out.data_ptr<float>(), 0, T);
  return {q_out, k_out};
}

// out[i] = gate[i] / (1 + e^-gate[i]) * up[i] for i < n, eight at a time (the last 1-7
// through a padded copy, so every element takes the same operations)
inline void silu_mul_row(const float* gate, const float* up, int64_t n, float* out) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 zero = _mm256_setzero_ps();
  auto eight = [&](__m256 g, __m256 u) {
    return _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, ragloom::exp8(_mm256_sub_ps(zero, g)))), u);
  };
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, eight(_mm256_loadu_ps(gate + i), _mm256_loadu_ps(up + i)));
  if (i < n) {
    alignas(32) float g[8] = {}, u[8] = {}, o[8];
    for (int64_t t = 0; i + t < n; ++t) g[t] = gate[i + t], u[t] = up[i + t];
    _mm256_store_ps(o, eight(_mm256_load_ps(g), _mm256_load_ps(u)));
    for (int64_t t = 0; i + t < n; ++t) out[i + t] = o[t];
  }
}

at::Tensor silu_mul(const at::Tensor& x) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.dim() == 2 && x.stride(1) == 1 && x.size(1) % 2 == 0,
              "x must be float32 [T, 2 * I] with contiguous rows");
  const int64_t T = x.size(0), n = x.size(1) / 2, ld = x.stride(0);
  auto out = at::empty({T, n}, x.options());
  const float* xp = x.data_ptr<float>();
  float* op = out.data_ptr<float>();
  auto rows = [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) silu_mul_row(xp + t * ld, xp + t * ld + n, n, op + t * n);
  };
  if (T * n < kParallelWork) rows(0, T);
  else ragloom::parallel_for(0, T, std::max<int64_t>(1, kParallelWork / n), rows, /*linger=*/false);
  return out;
}

}  // namespace

TORCH_LIBRARY(ragloom_layers, m) {
  m.def("add_rms_norm(Tensor x, Tensor residual, Tensor weight, float eps) -> (Tensor, Tensor)");
  m.def("rotary(Tensor q, Tensor k, Tensor cos, Tensor sin, Tensor positions) -> (Tensor, Tensor)");
  m.def("silu_mul(Tensor x) -> Tensor");
}
TORCH_LIBRARY_IMPL(ragloom_layers, CPU, m) {
  m.impl("add_rms_norm", &add_rms_norm);
  m.impl("rotary", &rotary);
  m.impl("silu_mul", &silu_mul);
}
