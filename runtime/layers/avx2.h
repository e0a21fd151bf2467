// Small AVX2 helpers shared by ragloom's CPU kernels (gguf_matmul.cpp, paged_attention.cpp,
// layer_ops.cpp); compiled into each of them (ragloom.runtime.layers.kernels builds them).
#pragma once
#include <immintrin.h>

namespace ragloom {

// The sum of a vector's eight floats: the halves, then pairs, then the last two.
inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

}  // namespace ragloom
