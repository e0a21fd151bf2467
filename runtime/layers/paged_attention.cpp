// ragloom's CPU kernel for decode attention over the paged KV cache.
//
// paged_decode_attention(q [B, H, D], k_cache [S, KVH, D], v_cache [S, KVH, D],
//                        slots [B, L] int64, lengths [B] int64, scale) -> [B, H, D]
//
// Sequence b's query heads attend to the first lengths[b] slots of row b of `slots` (the rest
// is padding and never read), straight from the cache: no gathered copy of the context. Query
// head h reads key/value head h / (H / KVH), as grouped-query attention repeats them. Scores
// are scale * (q . k), softmax with the row's maximum subtracted, then the weighted sum of the
// values, all in float32.
//
// Why a kernel: torch's path (gather the context, sdpa) costs a few microseconds of work per
// layer and step, but both ops start a parallel region, and on two cores their thread
// hand-offs cost more than the work (a decode step at two threads took 55-58 ms against 44-48
// ms with attention on one thread). Here the work is split over threads only when there is
// enough of it (long contexts, many sequences). Each (sequence, KV head) is computed by one
// thread in one fixed order, so a sequence's numbers never depend on the batch it is in.
//
// Built with gguf_matmul.cpp into one library (ragloom.runtime.layers.kernels);
// ragloom.runtime.layers.attention holds the torch path the tests compare it to.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <immintrin.h>
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace {

inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float dot(const float* a, const float* b, int64_t D) {  // D % 8 == 0
  __m256 acc = _mm256_setzero_ps();
  for (int64_t d = 0; d < D; d += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + d), _mm256_loadu_ps(b + d), acc);
  return hsum8(acc);
}

// One sequence and one KV head: its `group` query heads q [group, D] over `len` slots.
// `p` is scratch for group * len scores; `out` [group, D] (heads of one sequence are adjacent).
void attend(const float* q, const float* kc, const float* vc, int64_t row, const int64_t* slots, int64_t len,
            int64_t group, int64_t D, float scale, float* p, float* out) {
  for (int64_t j = 0; j < len; ++j) {  // each key row is read once for all heads of the group
    const float* k = kc + slots[j] * row;
    for (int64_t h = 0; h < group; ++h) p[h * len + j] = dot(q + h * D, k, D) * scale;
  }
  for (int64_t h = 0; h < group; ++h) {
    float* ph = p + h * len;
    float top = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < len; ++j) top = std::max(top, ph[j]);
    float total = 0.f;
    for (int64_t j = 0; j < len; ++j) {
      ph[j] = std::exp(ph[j] - top);
      total += ph[j];
    }
    const float inv = 1.f / total;
    for (int64_t j = 0; j < len; ++j) ph[j] *= inv;
    std::fill(out + h * D, out + (h + 1) * D, 0.f);
  }
  for (int64_t j = 0; j < len; ++j) {  // each value row is read once for all heads
    const float* v = vc + slots[j] * row;
    for (int64_t h = 0; h < group; ++h) {
      const __m256 w = _mm256_set1_ps(p[h * len + j]);
      float* o = out + h * D;
      for (int64_t d = 0; d < D; d += 8)
        _mm256_storeu_ps(o + d, _mm256_fmadd_ps(w, _mm256_loadu_ps(v + d), _mm256_loadu_ps(o + d)));
    }
  }
}

at::Tensor paged_decode_attention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                                  const at::Tensor& slots, const at::Tensor& lengths, double scale) {
  TORCH_CHECK(q.dim() == 3 && q.scalar_type() == at::kFloat, "q must be float32 [B, H, D]");
  TORCH_CHECK(k_cache.dim() == 3 && k_cache.scalar_type() == at::kFloat && k_cache.is_contiguous() &&
                  v_cache.sizes() == k_cache.sizes() && v_cache.scalar_type() == at::kFloat && v_cache.is_contiguous(),
              "k_cache and v_cache must be contiguous float32 [S, KVH, D] tensors of one shape");
  const int64_t B = q.size(0), H = q.size(1), D = q.size(2), S = k_cache.size(0), KVH = k_cache.size(1);
  TORCH_CHECK(k_cache.size(2) == D && D % 8 == 0, "head size must match the cache's and be a multiple of 8");
  TORCH_CHECK(KVH > 0 && H % KVH == 0, "query heads must be a multiple of key/value heads");
  TORCH_CHECK(slots.dim() == 2 && slots.size(0) == B && slots.scalar_type() == at::kLong, "slots must be int64 [B, L]");
  TORCH_CHECK(lengths.dim() == 1 && lengths.size(0) == B && lengths.scalar_type() == at::kLong, "lengths must be int64 [B]");
  const auto qc = q.contiguous();
  const auto sc = slots.contiguous();
  const auto lc = lengths.contiguous();
  const int64_t L = sc.size(1), group = H / KVH;
  const int64_t* len = lc.data_ptr<int64_t>();
  const int64_t* slot = sc.data_ptr<int64_t>();
  int64_t work = 0;  // key/value rows read, times the heads that read them
  for (int64_t b = 0; b < B; ++b) {
    TORCH_CHECK(len[b] >= 1 && len[b] <= L, "sequence ", b, " has length ", len[b], " outside 1..", L);
    for (int64_t j = 0; j < len[b]; ++j)
      TORCH_CHECK(slot[b * L + j] >= 0 && slot[b * L + j] < S, "slot ", slot[b * L + j], " outside the cache");
    work += len[b] * H;
  }
  auto out = at::empty({B, H, D}, q.options());
  const float* qp = qc.data_ptr<float>();
  const float* kp = k_cache.data_ptr<float>();
  const float* vp = v_cache.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const float s = static_cast<float>(scale);
  const int64_t row = KVH * D;
  auto run = [&](int64_t begin, int64_t end) {
    std::vector<float> p;
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / KVH, kv = i % KVH;
      p.resize(group * len[b]);
      attend(qp + (b * H + kv * group) * D, kp + kv * D, vp + kv * D, row, slot + b * L, len[b], group, D, s,
             p.data(), op + (b * H + kv * group) * D);
    }
  };
  // subtle: a parallel region costs tens of microseconds of thread hand-off on a shared CPU,
  // more than a short context's whole attention; only long ones are split
  if (work * D < (1 << 20)) run(0, B * KVH);
  else at::parallel_for(0, B * KVH, 1, run);
  return out;
}

}  // namespace

TORCH_LIBRARY(ragloom_attention, m) {
  m.def("paged_decode_attention(Tensor q, Tensor k_cache, Tensor v_cache, Tensor slots, Tensor lengths, float scale) -> Tensor");
}
TORCH_LIBRARY_IMPL(ragloom_attention, CPU, m) {
  m.impl("paged_decode_attention", &paged_decode_attention);
}
