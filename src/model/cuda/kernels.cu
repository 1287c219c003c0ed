// labeld's own CUDA kernels, on NCHW tensors, one thread per output value, computing in f32
// whatever the storage type (f32, f16, bf16). Compiled to PTX by build.rs with `--features cuda`;
// launched by src/model/cuda_ops.rs.
//
// depthwise_*: kxk depthwise convolution (TensorFlow SAME padding) with the folded-BatchNorm bias
//              and ReLU6 fused.
// bias_act_*:  a convolution's epilogue in one pass: + bias per channel, then ReLU6 if asked.
#include <cuda_fp16.h>
#include <cuda_bf16.h>

template <typename T> __device__ __forceinline__ float load(const T v);
template <> __device__ __forceinline__ float load<float>(const float v) { return v; }
template <> __device__ __forceinline__ float load<__half>(const __half v) { return __half2float(v); }
template <> __device__ __forceinline__ float load<__nv_bfloat16>(const __nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T store(const float v);
template <> __device__ __forceinline__ float store<float>(const float v) { return v; }
template <> __device__ __forceinline__ __half store<__half>(const float v) { return __float2half(v); }
template <> __device__ __forceinline__ __nv_bfloat16 store<__nv_bfloat16>(const float v) { return __float2bfloat16(v); }

// x: [n, c, h, w]; weight: [c, k * k]; bias: [c]; out: [n, c, ho, wo].
template <typename T>
__device__ void depthwise(const T *__restrict__ x, const T *__restrict__ weight,
                          const T *__restrict__ bias, T *__restrict__ out, unsigned long long total,
                          int c, int h, int w, int ho, int wo, int k, int stride, int pad_top,
                          int pad_left, int relu6) {
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < total;
         i += (unsigned long long)blockDim.x * gridDim.x) {
        const int ox = i % wo;
        const int oy = (i / wo) % ho;
        const unsigned long long plane = i / ((unsigned long long)wo * ho);  // n * c + ch
        const int ch = plane % c;
        const T *src = x + plane * h * w;
        const T *taps = weight + ch * k * k;
        const int y0 = oy * stride - pad_top;
        const int x0 = ox * stride - pad_left;
        float acc = load(bias[ch]);
        for (int dy = 0; dy < k; ++dy) {
            const int y = y0 + dy;
            if (y < 0 || y >= h) continue;
            for (int dx = 0; dx < k; ++dx) {
                const int xx = x0 + dx;
                if (xx < 0 || xx >= w) continue;
                acc += load(src[y * w + xx]) * load(taps[dy * k + dx]);
            }
        }
        if (relu6) acc = fminf(fmaxf(acc, 0.0f), 6.0f);
        out[i] = store<T>(acc);
    }
}

#define DEPTHWISE(NAME, T)                                                                        \
    extern "C" __global__ void NAME(const T *x, const T *weight, const T *bias, T *out,           \
                                    unsigned long long total, int c, int h, int w, int ho, int wo, \
                                    int k, int stride, int pad_top, int pad_left, int relu6) {    \
        depthwise<T>(x, weight, bias, out, total, c, h, w, ho, wo, k, stride, pad_top, pad_left,   \
                     relu6);                                                                      \
    }

DEPTHWISE(depthwise_f32, float)
DEPTHWISE(depthwise_f16, __half)
DEPTHWISE(depthwise_bf16, __nv_bfloat16)

// x, out: [n, c, hw]; bias: [c].
template <typename T>
__device__ void bias_act(const T *__restrict__ x, const T *__restrict__ bias, T *__restrict__ out,
                         unsigned long long total, int c, int hw, int relu6) {
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < total;
         i += (unsigned long long)blockDim.x * gridDim.x) {
        float v = load(x[i]) + load(bias[(i / hw) % c]);
        if (relu6) v = fminf(fmaxf(v, 0.0f), 6.0f);
        out[i] = store<T>(v);
    }
}

#define BIAS_ACT(NAME, T)                                                                         \
    extern "C" __global__ void NAME(const T *x, const T *bias, T *out, unsigned long long total,  \
                                    int c, int hw, int relu6) {                                   \
        bias_act<T>(x, bias, out, total, c, hw, relu6);                                           \
    }

BIAS_ACT(bias_act_f32, float)
BIAS_ACT(bias_act_f16, __half)
BIAS_ACT(bias_act_bf16, __nv_bfloat16)
