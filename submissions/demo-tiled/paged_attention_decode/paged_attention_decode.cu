// Paged-attention decode: one thread block per (query head, sequence), WARPS warps splitting the context.
//
// Warp w takes tokens w, w + WARPS, ... of the sequence; its 32 lanes each hold D / 32 elements of q, of the running
// output and of each K and V row. Per token: a warp-wide dot product (shuffle reduction), then the online softmax
// update m' = max(m, s), l' = l e^(m - m') + e^(s - m'), acc' = acc e^(m - m') + e^(s - m') v, all in float32.
// At the end the warps' (m, l, acc) partials meet in shared memory and are merged with the same rule.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

namespace {

constexpr int WARPS = 4;
constexpr int THREADS = WARPS * 32;

__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T, int D>
__global__ void __launch_bounds__(THREADS)
    paged_decode_kernel(const T* __restrict__ q, const T* __restrict__ k_cache, const T* __restrict__ v_cache,
                        const int* __restrict__ block_tables, const int* __restrict__ context_lens, int num_heads,
                        int num_kv_heads, int block_size, int max_blocks, float scale, float* __restrict__ out) {
  constexpr int PER_LANE = D / 32;
  const int h = blockIdx.x, b = blockIdx.y;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int kv_head = h / (num_heads / num_kv_heads);  // grouped-query attention
  const int length = context_lens[b];
  const int* table = block_tables + (size_t)b * max_blocks;

  float qv[PER_LANE], acc[PER_LANE];
  const T* q_row = q + ((size_t)b * num_heads + h) * D + lane * PER_LANE;
#pragma unroll
  for (int i = 0; i < PER_LANE; ++i) {
    qv[i] = to_float(q_row[i]);
    acc[i] = 0.f;
  }
  float m = -INFINITY, l = 0.f;
  for (int t = warp; t < length; t += WARPS) {
    const size_t block = (size_t)table[t / block_size];
    const size_t row = ((block * block_size + t % block_size) * num_kv_heads + kv_head) * D + lane * PER_LANE;
    float s = 0.f;
#pragma unroll
    for (int i = 0; i < PER_LANE; ++i) s += qv[i] * to_float(k_cache[row + i]);
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) s += __shfl_xor_sync(0xffffffffu, s, offset);
    s *= scale;
    const float m_new = fmaxf(m, s);
    const float alpha = expf(m - m_new);  // 0 at the first token (m = -inf)
    const float p = expf(s - m_new);
    l = l * alpha + p;
#pragma unroll
    for (int i = 0; i < PER_LANE; ++i) acc[i] = acc[i] * alpha + p * to_float(v_cache[row + i]);
    m = m_new;
  }

  __shared__ float part_m[WARPS], part_l[WARPS];
  __shared__ float part_acc[WARPS][D];
  if (lane == 0) {
    part_m[warp] = m;
    part_l[warp] = l;
  }
#pragma unroll
  for (int i = 0; i < PER_LANE; ++i) part_acc[warp][lane * PER_LANE + i] = acc[i];
  __syncthreads();  // every warp's partial is written before any thread merges them

  for (int d = threadIdx.x; d < D; d += THREADS) {
    float top = -INFINITY;
    for (int w = 0; w < WARPS; ++w) top = fmaxf(top, part_m[w]);
    float num = 0.f, den = 0.f;
    for (int w = 0; w < WARPS; ++w) {
      const float c = part_m[w] == -INFINITY ? 0.f : expf(part_m[w] - top);  // a warp with no token adds nothing
      num += c * part_acc[w][d];
      den += c * part_l[w];
    }
    out[((size_t)b * num_heads + h) * D + d] = num / den;
  }
}

template <typename T>
cudaError_t launch(const void* q, const void* k_cache, const void* v_cache, const int* block_tables,
                   const int* context_lens, int num_seqs, int num_heads, int num_kv_heads, int head_dim,
                   int block_size, int max_blocks, float scale, float* out, cudaStream_t stream) {
  const dim3 grid(num_heads, num_seqs);
  const T* qt = static_cast<const T*>(q);
  const T* kt = static_cast<const T*>(k_cache);
  const T* vt = static_cast<const T*>(v_cache);
  if (head_dim == 64) {
    paged_decode_kernel<T, 64><<<grid, THREADS, 0, stream>>>(qt, kt, vt, block_tables, context_lens, num_heads,
                                                             num_kv_heads, block_size, max_blocks, scale, out);
  } else if (head_dim == 128) {
    paged_decode_kernel<T, 128><<<grid, THREADS, 0, stream>>>(qt, kt, vt, block_tables, context_lens, num_heads,
                                                              num_kv_heads, block_size, max_blocks, scale, out);
  } else {
    return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace

extern "C" int paged_attention_decode(const void* q, const void* k_cache, const void* v_cache,
                                      const int* block_tables, const int* context_lens, int num_seqs, int num_heads,
                                      int num_kv_heads, int head_dim, int block_size, int max_blocks_per_seq,
                                      int dtype, float scale, float* out, cudaStream_t stream) {
  if (num_seqs < 1 || num_kv_heads < 1 || num_heads % num_kv_heads != 0 || block_size < 1) {
    return cudaErrorInvalidValue;
  }
  if (dtype == 0) {
    return launch<__half>(q, k_cache, v_cache, block_tables, context_lens, num_seqs, num_heads, num_kv_heads,
                          head_dim, block_size, max_blocks_per_seq, scale, out, stream);
  }
  if (dtype == 1) {
    return launch<__nv_bfloat16>(q, k_cache, v_cache, block_tables, context_lens, num_seqs, num_heads,
                                 num_kv_heads, head_dim, block_size, max_blocks_per_seq, scale, out, stream);
  }
  return cudaErrorInvalidValue;
}
