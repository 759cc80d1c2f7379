// Fused softmax + top-K with K fixed at compile time (K <= 32), as models often write it: a templated kernel, int64
// indices, and a launcher of its own signature. adapter.cu beside it meets the grader's contract on top of it.
//
// One block per row, two passes over the row: the row max, then the sum of exp(x - max) while each thread keeps its
// K best (logit, index) pairs in registers. K rounds of a block-wide argmax merge the per-thread lists (a thread holds
// at most K of the row's top K, so its list never runs dry). Ties go to the lower index.

#pragma once
#include <cstdint>
#include <cuda_runtime.h>
#include <math_constants.h>

namespace fused {

constexpr int kBlock = 128;

struct Pair {
  float value;
  int64_t index;
};

__device__ __forceinline__ bool ahead(const Pair& a, const Pair& b) {
  return a.value > b.value || (a.value == b.value && a.index < b.index);
}

__device__ float block_max(float v, float* scratch) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
  __syncthreads();
  float r = scratch[0];
  for (int w = 1; w < kBlock / 32; ++w) r = fmaxf(r, scratch[w]);
  __syncthreads();
  return r;
}

__device__ float block_sum(float v, float* scratch) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
  __syncthreads();
  float r = 0.0f;
  for (int w = 0; w < kBlock / 32; ++w) r += scratch[w];
  __syncthreads();
  return r;
}

__device__ Pair block_argmax(Pair p, Pair* scratch) {
  for (int o = 16; o > 0; o >>= 1) {
    Pair q = {__shfl_xor_sync(0xffffffffu, p.value, o), __shfl_xor_sync(0xffffffffu, p.index, o)};
    if (ahead(q, p)) p = q;
  }
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = p;
  __syncthreads();
  Pair r = scratch[0];
  for (int w = 1; w < kBlock / 32; ++w) {
    if (ahead(scratch[w], r)) r = scratch[w];
  }
  __syncthreads();
  return r;
}

template <int K>
__global__ void __launch_bounds__(kBlock)
    softmax_topk_kernel(const float* __restrict__ logits, int64_t* __restrict__ out_idx, float* __restrict__ out_p,
                        int V) {
  __shared__ float scratch_f[kBlock / 32];
  __shared__ Pair scratch_p[kBlock / 32];
  const float* x = logits + (size_t)blockIdx.x * V;

  float local_max = -CUDART_INF_F;
  for (int j = threadIdx.x; j < V; j += kBlock) local_max = fmaxf(local_max, x[j]);
  const float row_max = block_max(local_max, scratch_f);

  Pair best[K];
  for (int t = 0; t < K; ++t) best[t] = {-CUDART_INF_F, INT64_MAX};
  float local_sum = 0.0f;
  for (int j = threadIdx.x; j < V; j += kBlock) {
    const float v = x[j];
    local_sum += __expf(v - row_max);  // exp(-inf) = 0: masked entries add nothing
    Pair p = {v, j};
    if (ahead(p, best[K - 1])) {
      int t = K - 1;
      while (t > 0 && ahead(p, best[t - 1])) {
        best[t] = best[t - 1];
        --t;
      }
      best[t] = p;
    }
  }
  const float row_sum = block_sum(local_sum, scratch_f);

  int head = 0;
  for (int r = 0; r < K; ++r) {
    Pair mine = head < K ? best[head] : Pair{-CUDART_INF_F, INT64_MAX};
    Pair winner = block_argmax(mine, scratch_p);
    if (head < K && mine.index == winner.index) ++head;
    if (threadIdx.x == 0) {
      out_idx[(size_t)blockIdx.x * K + r] = winner.index;
      out_p[(size_t)blockIdx.x * K + r] = __expf(winner.value - row_max) / row_sum;
    }
  }
}

}  // namespace fused

// The launcher: K as a template parameter, int64 indices, the stream last.
template <int K>
cudaError_t launch_fused_softmax_topk(const float* logits, int64_t* out_idx, float* out_p, int rows, int V,
                                      cudaStream_t stream) {
  static_assert(K >= 1 && K <= 32, "K is kept in registers per thread");
  if (V < K) return cudaErrorInvalidValue;
  fused::softmax_topk_kernel<K><<<rows, fused::kBlock, 0, stream>>>(logits, out_idx, out_p, V);
  return cudaGetLastError();
}
