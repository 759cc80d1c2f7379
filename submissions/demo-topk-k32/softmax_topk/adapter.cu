// Adapter: the grader's contract on top of kernel.cu's own launcher.
//
//   extern "C" int softmax_topk(const float* logits, int rows, int V, int k, int* indices, float* probs,
//                               cudaStream_t stream);
//
// kernel.cu takes K as a template parameter and writes int64 indices; the contract passes k at run time and wants
// int32. So: dispatch k to the instantiations the submission supports, let it write int64 indices into a scratch
// buffer on the same stream, and narrow them. Any other k returns cudaErrorInvalidValue: "unsupported K", which fails
// that case only.
#include "kernel.cu"

namespace {

__global__ void narrow_indices(const int64_t* wide, int* narrow, size_t n) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) narrow[i] = (int)wide[i];
}

template <int K>
int run(const float* logits, int rows, int V, int* indices, float* probs, cudaStream_t stream) {
  const size_t n = (size_t)rows * K;
  int64_t* wide = nullptr;
  cudaError_t err = cudaMallocAsync(&wide, n * sizeof(int64_t), stream);
  if (err != cudaSuccess) return err;
  err = launch_fused_softmax_topk<K>(logits, wide, probs, rows, V, stream);
  if (err == cudaSuccess) {
    narrow_indices<<<(unsigned)((n + 255) / 256), 256, 0, stream>>>(wide, indices, n);
    err = cudaGetLastError();
  }
  cudaError_t freed = cudaFreeAsync(wide, stream);
  return err != cudaSuccess ? err : freed;
}

}  // namespace

extern "C" int softmax_topk(const float* logits, int rows, int V, int k, int* indices, float* probs,
                            cudaStream_t stream) {
  switch (k) {
    case 1: return run<1>(logits, rows, V, indices, probs, stream);
    case 8: return run<8>(logits, rows, V, indices, probs, stream);
    case 16: return run<16>(logits, rows, V, indices, probs, stream);
    case 32: return run<32>(logits, rows, V, indices, probs, stream);
    default: return cudaErrorInvalidValue;  // unsupported K
  }
}
