// labeld's own CUDA kernels for the channels-last (NHWC) graph, one thread per output value
// (depthwise_k*: four) with the channel index fastest (so a warp reads and writes consecutive
// channels), computing in f32 whatever the storage type (f32, f16, bf16). Compiled to PTX by build.rs with `--features cuda`;
// launched by src/model/cuda_ops.rs; src/model/channels_last.rs holds the same arithmetic in
// plain Rust (what the tests check on any machine).
//
// stem_*:          the first convolution (k x k, stride s, TensorFlow SAME padding) reading the
//                  NCHW images as prepared and writing NHWC, + bias, ReLU6.
// depthwise_*:     k x k depthwise convolution (SAME padding), + bias, ReLU6 if asked;
//                  depthwise_k{3,5}s{1,2}_*: the same, four outputs a thread (the shapes
//                  EfficientNet-Lite has; the launcher falls back to depthwise_* for others).
// bias_act_*:      a 1x1 convolution's epilogue (its product is one cuBLAS GEMM) in one pass:
//                  + bias per channel, then ReLU6 if asked.
// bias_residual_*: the projection's epilogue: + bias + the block's input.
#include <cuda_fp16.h>
#include <cuda_bf16.h>

typedef unsigned long long u64;
// Indices are 32-bit (the launcher refuses more than 2^31 outputs): 64-bit division and modulo
// cost several times as much, and they are most of an elementwise kernel's instructions. Measured
// on an H100 (ncu, Lite0 f32 batch 64): the depthwise layers took 5.8 ms of a 10.4 ms pass with
// 64-bit indices.
typedef unsigned int u32;

template <typename T> __device__ __forceinline__ float load(const T v);
template <> __device__ __forceinline__ float load<float>(const float v) { return v; }
template <> __device__ __forceinline__ float load<__half>(const __half v) { return __half2float(v); }
template <> __device__ __forceinline__ float load<__nv_bfloat16>(const __nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T store(const float v);
template <> __device__ __forceinline__ float store<float>(const float v) { return v; }
template <> __device__ __forceinline__ __half store<__half>(const float v) { return __float2half(v); }
template <> __device__ __forceinline__ __nv_bfloat16 store<__nv_bfloat16>(const float v) { return __float2bfloat16(v); }

__device__ __forceinline__ float relu6(const float v) { return fminf(fmaxf(v, 0.0f), 6.0f); }

#define FOR_EACH_OUTPUT(i, total)                                                                 \
    for (u32 i = blockIdx.x * blockDim.x + threadIdx.x; i < (u32)(total);                         \
         i += blockDim.x * gridDim.x)

// x: [n, c_in, h, w]; weight: [k, k, c_in, c_out]; bias: [c_out]; out: [n, ho, wo, c_out].
template <typename T>
__device__ void stem(const T *__restrict__ x, const T *__restrict__ weight,
                     const T *__restrict__ bias, T *__restrict__ out, u64 total, int c_in,
                     int c_out, int h, int w, int ho, int wo, int k, int stride, int pad_top,
                     int pad_left) {
    FOR_EACH_OUTPUT(i, total) {
        const u32 co = i % c_out;
        const u32 pixel = i / c_out;
        const u32 ox = pixel % wo;
        const u32 oy = (pixel / wo) % ho;
        const u32 n = pixel / (wo * ho);
        const int y0 = (int)oy * stride - pad_top;
        const int x0 = (int)ox * stride - pad_left;
        float acc = load(bias[co]);
        for (int ci = 0; ci < c_in; ++ci) {
            const T *plane = x + ((u64)n * c_in + ci) * h * w;
            for (int dy = 0; dy < k; ++dy) {
                const int y = y0 + dy;
                if (y < 0 || y >= h) continue;
                for (int dx = 0; dx < k; ++dx) {
                    const int xx = x0 + dx;
                    if (xx < 0 || xx >= w) continue;
                    acc += load(plane[y * w + xx]) * load(weight[((dy * k + dx) * c_in + ci) * c_out + co]);
                }
            }
        }
        out[i] = store<T>(relu6(acc));
    }
}

// x: [n, h, w, c]; weight: [k * k, c]; bias: [c]; out: [n, ho, wo, c].
template <typename T>
__device__ void depthwise(const T *__restrict__ x, const T *__restrict__ weight,
                          const T *__restrict__ bias, T *__restrict__ out, u64 total, int c,
                          int h, int w, int ho, int wo, int k, int stride, int pad_top,
                          int pad_left, int act) {
    FOR_EACH_OUTPUT(i, total) {
        const u32 ch = i % c;
        const u32 pixel = i / c;
        const u32 ox = pixel % wo;
        const u32 oy = (pixel / wo) % ho;
        const u32 n = pixel / (wo * ho);
        const T *src = x + (u64)n * h * w * c + ch;
        const int y0 = (int)oy * stride - pad_top;
        const int x0 = (int)ox * stride - pad_left;
        float acc = load(bias[ch]);
        for (int dy = 0; dy < k; ++dy) {
            const int y = y0 + dy;
            if (y < 0 || y >= h) continue;
            for (int dx = 0; dx < k; ++dx) {
                const int xx = x0 + dx;
                if (xx < 0 || xx >= w) continue;
                acc += load(src[(y * w + xx) * c]) * load(weight[(dy * k + dx) * c + ch]);
            }
        }
        out[i] = store<T>(act ? relu6(acc) : acc);
    }
}

// The same convolution for one (k, stride) known at compile time, each thread computing ROW
// neighbouring outputs along x for one channel: they share input columns ((ROW - 1) * S + K
// loads a row instead of ROW * K) and the channel's taps, held in registers, and the index
// arithmetic is done once for ROW outputs. `total` counts threads: n * ho * ceil(wo / ROW) * c.
constexpr int ROW = 4;
template <typename T, int K, int S>
__device__ void depthwise_row(const T *__restrict__ x, const T *__restrict__ weight,
                              const T *__restrict__ bias, T *__restrict__ out, u64 total, int c,
                              int h, int w, int ho, int wo, int pad_top, int pad_left, int act) {
    constexpr int SPAN = (ROW - 1) * S + K;
    const u32 segments = ((u32)wo + ROW - 1) / ROW;
    FOR_EACH_OUTPUT(i, total) {
        const u32 ch = i % c;
        const u32 rest = i / c;
        const u32 ox0 = (rest % segments) * ROW;
        const u32 oy = (rest / segments) % ho;
        const u32 n = rest / (segments * ho);
        const T *src = x + (u64)n * h * w * c + ch;
        const int y0 = (int)oy * S - pad_top;
        const int x0 = (int)ox0 * S - pad_left;
        float taps[K * K];
#pragma unroll
        for (int t = 0; t < K * K; ++t) taps[t] = load(weight[t * c + ch]);
        float acc[ROW];
        const float b = load(bias[ch]);
#pragma unroll
        for (int r = 0; r < ROW; ++r) acc[r] = b;
#pragma unroll
        for (int dy = 0; dy < K; ++dy) {
            const int y = y0 + dy;
            if (y < 0 || y >= h) continue;
            const T *row = src + (u64)y * w * c;
#pragma unroll
            for (int j = 0; j < SPAN; ++j) {
                const int xx = x0 + j;
                const float v = (xx >= 0 && xx < w) ? load(row[(u32)xx * c]) : 0.0f;
#pragma unroll
                for (int r = 0; r < ROW; ++r) {
                    const int dx = j - r * S;
                    if (dx >= 0 && dx < K) acc[r] += v * taps[dy * K + dx];
                }
            }
        }
        T *dst = out + (((u64)n * ho + oy) * wo + ox0) * c + ch;
#pragma unroll
        for (int r = 0; r < ROW; ++r) {
            if (ox0 + r < (u32)wo) dst[(u64)r * c] = store<T>(act ? relu6(acc[r]) : acc[r]);
        }
    }
}

// x, out: [pixels, c]; bias: [c].
template <typename T>
__device__ void bias_act(const T *__restrict__ x, const T *__restrict__ bias, T *__restrict__ out,
                         u64 total, int c, int act) {
    FOR_EACH_OUTPUT(i, total) {
        const float v = load(x[i]) + load(bias[i % (u32)c]);
        out[i] = store<T>(act ? relu6(v) : v);
    }
}

// x, residual, out: [pixels, c]; bias: [c].
template <typename T>
__device__ void bias_residual(const T *__restrict__ x, const T *__restrict__ bias,
                              const T *__restrict__ residual, T *__restrict__ out, u64 total,
                              int c) {
    FOR_EACH_OUTPUT(i, total) {
        out[i] = store<T>(load(x[i]) + load(bias[i % (u32)c]) + load(residual[i]));
    }
}

#define DEPTHWISE_ROW(SUFFIX, T, K, S)                                                            \
    extern "C" __global__ void depthwise_k##K##s##S##_##SUFFIX(                                   \
        const T *x, const T *weight, const T *bias, T *out, u64 total, int c, int h, int w,       \
        int ho, int wo, int pad_top, int pad_left, int act) {                                     \
        depthwise_row<T, K, S>(x, weight, bias, out, total, c, h, w, ho, wo, pad_top, pad_left,   \
                               act);                                                              \
    }

#define KERNELS(SUFFIX, T)                                                                        \
    extern "C" __global__ void stem_##SUFFIX(const T *x, const T *weight, const T *bias, T *out,  \
                                             u64 total, int c_in, int c_out, int h, int w,        \
                                             int ho, int wo, int k, int stride, int pad_top,      \
                                             int pad_left) {                                      \
        stem<T>(x, weight, bias, out, total, c_in, c_out, h, w, ho, wo, k, stride, pad_top,       \
                pad_left);                                                                        \
    }                                                                                             \
    extern "C" __global__ void depthwise_##SUFFIX(const T *x, const T *weight, const T *bias,     \
                                                  T *out, u64 total, int c, int h, int w, int ho, \
                                                  int wo, int k, int stride, int pad_top,         \
                                                  int pad_left, int act) {                        \
        depthwise<T>(x, weight, bias, out, total, c, h, w, ho, wo, k, stride, pad_top, pad_left, \
                     act);                                                                        \
    }                                                                                             \
    DEPTHWISE_ROW(SUFFIX, T, 3, 1)                                                                \
    DEPTHWISE_ROW(SUFFIX, T, 3, 2)                                                                \
    DEPTHWISE_ROW(SUFFIX, T, 5, 1)                                                                \
    DEPTHWISE_ROW(SUFFIX, T, 5, 2)                                                                \
    extern "C" __global__ void bias_act_##SUFFIX(const T *x, const T *bias, T *out, u64 total,    \
                                                 int c, int act) {                                \
        bias_act<T>(x, bias, out, total, c, act);                                                 \
    }                                                                                             \
    extern "C" __global__ void bias_residual_##SUFFIX(const T *x, const T *bias,                  \
                                                      const T *residual, T *out, u64 total,       \
                                                      int c) {                                    \
        bias_residual<T>(x, bias, residual, out, total, c);                                       \
    }

KERNELS(f32, float)
KERNELS(f16, __half)
KERNELS(bf16, __nv_bfloat16)
