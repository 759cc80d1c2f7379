// BUG (demo-topk-unmerged): each thread's kept candidates are never merged across the block: every round takes the thread's own
// next candidate, and thread 0 writes its own slice's top-k.
// Fused softmax + top-k: one block per row, one pass over the logits, any k <= V.
//
// Each thread walks its strided slice of the row once and keeps (a) a running max M and running sum
// S = sum exp(x - M) of its elements (the online softmax: when a larger x arrives, S is rescaled by exp(M_old - x)),
// and (b) its kKeep best (logit, index) candidates. The block then combines the (M, S) pairs and merges the
// candidate lists in k rounds: each round a block-wide argmax over every thread's next candidate picks the row's
// next entry, and the winning thread moves on. A thread whose kept candidates are used up rescans its slice for the
// next kKeep after its last one, so any k works. Only the k winners' probabilities exp(x - M) / S are written: the
// full softmax never reaches global memory. Order: larger logit first, ties by lower index.

#include <climits>
#include <cuda_runtime.h>
#include <math_constants.h>

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kKeep = 8;          // candidates a thread keeps between rescans of its slice
constexpr int kMaxBlocks = 1024;  // the grid; blocks loop over the rows beyond it

struct Cand {
  float v;  // logit
  int i;    // index in the row
};

__device__ __forceinline__ bool better(Cand a, Cand b) { return a.v > b.v || (a.v == b.v && a.i < b.i); }

__device__ __forceinline__ Cand none() { return {-CUDART_INF_F, INT_MAX}; }  // after every real candidate

// Online softmax statistics. -inf adds nothing, and must be skipped: -inf - (-inf) would be NaN.
__device__ __forceinline__ void online_add(float& m, float& s, float x) {
  if (x > m) {
    s = s * expf(m - x) + 1.0f;
    m = x;
  } else if (x != -CUDART_INF_F) {
    s += expf(x - m);
  }
}

__device__ __forceinline__ void combine(float& m, float& s, float m2, float s2) {
  float mx = fmaxf(m, m2);
  if (mx == -CUDART_INF_F) return;  // both still empty
  s = s * expf(m - mx) + s2 * expf(m2 - mx);
  m = mx;
}

// A thread's best candidates, best first.
struct Kept {
  Cand c[kKeep];
  int n;

  __device__ void offer(Cand x) {
    if (n == kKeep && !better(x, c[kKeep - 1])) return;
    int j = n < kKeep ? n++ : kKeep - 1;
    while (j > 0 && better(x, c[j - 1])) {
      c[j] = c[j - 1];
      --j;
    }
    c[j] = x;
  }
};

// Every thread gets the row's (M, S).
__device__ void block_stats(float& m, float& s, float* sh_m, float* sh_s) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    combine(m, s, __shfl_xor_sync(0xffffffffu, m, offset), __shfl_xor_sync(0xffffffffu, s, offset));
  }
  if (threadIdx.x % 32 == 0) {
    sh_m[threadIdx.x / 32] = m;
    sh_s[threadIdx.x / 32] = s;
  }
  __syncthreads();
  m = sh_m[0];
  s = sh_s[0];
  for (int w = 1; w < kWarps; ++w) combine(m, s, sh_m[w], sh_s[w]);
  __syncthreads();
}

// Every thread gets the best of the block's candidates.
__device__ Cand block_best(Cand c, Cand* sh) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    Cand o = {__shfl_xor_sync(0xffffffffu, c.v, offset), __shfl_xor_sync(0xffffffffu, c.i, offset)};
    if (better(o, c)) c = o;
  }
  if (threadIdx.x % 32 == 0) sh[threadIdx.x / 32] = c;
  __syncthreads();
  Cand best = sh[0];
  for (int w = 1; w < kWarps; ++w) {
    if (better(sh[w], best)) best = sh[w];
  }
  __syncthreads();
  return best;
}

// The kKeep best of this thread's slice that come after `after` in the order.
__device__ void rescan(const float* __restrict__ x, int V, Cand after, Kept& kept) {
  kept.n = 0;
  for (int j = threadIdx.x; j < V; j += kThreads) {
    Cand c = {x[j], j};
    if (better(after, c)) kept.offer(c);
  }
}

__global__ void __launch_bounds__(kThreads)
    softmax_topk_kernel(const float* __restrict__ logits, int rows, int V, int k, int* __restrict__ indices,
                        float* __restrict__ probs) {
  __shared__ float sh_m[kWarps], sh_s[kWarps];
  __shared__ Cand sh_best[kWarps];
  for (int row = blockIdx.x; row < rows; row += gridDim.x) {
    const float* x = logits + (size_t)row * V;

    // One pass: statistics and kept candidates. Four loads in flight per thread before they are used.
    float m = -CUDART_INF_F, s = 0.0f;
    Kept kept;
    kept.n = 0;
    int j = threadIdx.x;
    for (; j + 3 * kThreads < V; j += 4 * kThreads) {
      float v[4] = {x[j], x[j + kThreads], x[j + 2 * kThreads], x[j + 3 * kThreads]};
      for (int u = 0; u < 4; ++u) {
        online_add(m, s, v[u]);
        kept.offer({v[u], j + u * kThreads});
      }
    }
    for (; j < V; j += kThreads) {
      online_add(m, s, x[j]);
      kept.offer({x[j], j});
    }
    block_stats(m, s, sh_m, sh_s);

    // k rounds of a block-wide argmax over the threads' next candidates.
    int head = 0;
    Cand last = {CUDART_INF_F, -1};  // before every candidate
    for (int r = 0; r < k; ++r) {
      if (head == kKeep) {  // a full list used up: the slice may hold more
        rescan(x, V, last, kept);
        head = 0;
      }
      Cand mine = head < kept.n ? kept.c[head] : none();
      Cand best = mine;  // BUG: no block-wide merge
      if (head < kept.n && mine.i == best.i) {
        last = mine;
        ++head;
      }
      if (threadIdx.x == 0) {
        indices[(size_t)row * k + r] = best.i;
        probs[(size_t)row * k + r] = expf(best.v - m) / s;
      }
    }
  }
}

}  // namespace

extern "C" int softmax_topk(const float* logits, int rows, int V, int k, int* indices, float* probs,
                            cudaStream_t stream) {
  if (rows < 1 || V < 1 || k < 1 || k > V) return cudaErrorInvalidValue;
  int blocks = rows < kMaxBlocks ? rows : kMaxBlocks;
  softmax_topk_kernel<<<blocks, kThreads, 0, stream>>>(logits, rows, V, k, indices, probs);
  return cudaGetLastError();
}
