//! The channels-last (NHWC) graph's own ops, which CUDA runs: the stem, the depthwise
//! convolutions and the 1x1 convolutions' epilogues as candle custom ops. Each has its CUDA
//! kernel (`cuda/kernels.cu`, launched by `cuda_ops.rs`, built with the `cuda` feature) and the
//! same arithmetic in plain Rust for the CPU, which is what lets the tests check the whole graph
//! on a machine with no GPU.
//! (The CPU's serving path has its own fast ops, [`super::nhwc`]; these CPU versions are simple
//! loops, not meant to be fast.)
//!
//! Why channels-last on a GPU: a 1x1 convolution over `[N, H, W, C_in]` is one GEMM,
//! `[N*H*W, C_in] x [C_in, C_out]`, whatever the batch. On NCHW it is N products that share one
//! weight matrix (a strided-batched GEMM with a zero batch stride), which cuBLAS ran ever more
//! slowly past batch 32 on an H200 (Lite0 f32: 4,091 images/s at batch 32, 1,255 at 256).

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape};

/// Output size and leading padding of a TensorFlow "SAME" convolution along one axis: the output
/// is `ceil(size / stride)`; the total padding makes that work, and its extra row or column (if
/// odd) goes last.
fn same(size: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let out = size.div_ceil(stride);
    let pad = ((out - 1) * stride + kernel).saturating_sub(size);
    (out, pad / 2)
}

/// The f32 data of a contiguous CPU tensor.
fn f32_data<'a>(op: &str, storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: the CPU version runs in f32");
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op}: inputs must be contiguous");
    };
    Ok(&data[start..end])
}

fn expect_dims(op: &str, what: &str, layout: &Layout, want: &[usize]) -> Result<()> {
    if layout.shape().dims() != want {
        candle_core::bail!("{op}: {what} is {:?}, expected {want:?}", layout.shape());
    }
    Ok(())
}

fn relu6(v: f32) -> f32 {
    v.clamp(0.0, 6.0)
}

/// The first convolution: NCHW images `[N, C_in, H, W]` in (as prepared), weight
/// `[k, k, C_in, C_out]`, bias `[C_out]`, NHWC `[N, Ho, Wo, C_out]` out, with ReLU6.
#[derive(Debug, Clone, Copy)]
pub struct Stem {
    pub kernel: usize,
    pub stride: usize,
}

impl Stem {
    /// `(n, c_in, c_out, h, w, ho, wo, pad_top, pad_left)`, the shapes checked.
    fn geometry(&self, x: &Layout, w: &Layout, b: &Layout) -> Result<[usize; 9]> {
        let (n, c_in, h, wd) = x.shape().dims4()?;
        let (k, s) = (self.kernel, self.stride);
        let c_out = b.shape().dims1()?;
        expect_dims("stem", "the weight", w, &[k, k, c_in, c_out])?;
        let ((ho, pad_top), (wo, pad_left)) = (same(h, k, s), same(wd, k, s));
        Ok([n, c_in, c_out, h, wd, ho, wo, pad_top, pad_left])
    }
}

impl CustomOp3 for Stem {
    fn name(&self) -> &'static str {
        "stem-nhwc"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let [n, c_in, c_out, h, w, ho, wo, pad_top, pad_left] = self.geometry(xl, wl, bl)?;
        let (x, weight, bias) = (
            f32_data("stem", xs, xl)?,
            f32_data("stem", ws, wl)?,
            f32_data("stem", bs, bl)?,
        );
        let (k, s) = (self.kernel, self.stride);
        let mut out = Vec::with_capacity(n * ho * wo * c_out);
        for image in x.chunks_exact(c_in * h * w) {
            for oy in 0..ho {
                for ox in 0..wo {
                    for co in 0..c_out {
                        let mut acc = bias[co];
                        for (ci, plane) in image.chunks_exact(h * w).enumerate() {
                            for dy in 0..k {
                                let Some(y) = (oy * s + dy).checked_sub(pad_top) else {
                                    continue;
                                };
                                for dx in 0..k {
                                    let Some(xx) = (ox * s + dx).checked_sub(pad_left) else {
                                        continue;
                                    };
                                    if y < h && xx < w {
                                        acc += plane[y * w + xx]
                                            * weight[((dy * k + dx) * c_in + ci) * c_out + co];
                                    }
                                }
                            }
                        }
                        out.push(relu6(acc));
                    }
                }
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((n, ho, wo, c_out))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        ws: &candle_core::CudaStorage,
        wl: &Layout,
        bs: &candle_core::CudaStorage,
        bl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let [n, c_in, c_out, h, w, ho, wo, pad_top, pad_left] = self.geometry(xl, wl, bl)?;
        let params = [
            c_in,
            c_out,
            h,
            w,
            ho,
            wo,
            self.kernel,
            self.stride,
            pad_top,
            pad_left,
        ];
        let out = super::cuda_ops::launch(
            "stem",
            &[(xs, xl), (ws, wl), (bs, bl)],
            n * ho * wo * c_out,
            &params,
        )?;
        Ok((out, Shape::from((n, ho, wo, c_out))))
    }
}

/// Outputs along x that one thread of kernels.cu's `depthwise_row` computes (its `ROW`).
#[cfg(feature = "cuda")]
const DEPTHWISE_ROW: usize = 4;

/// A depthwise convolution: `[N, H, W, C]` in, weight `[k * k, C]`, bias `[C]`,
/// `[N, Ho, Wo, C]` out, ReLU6 if asked.
#[derive(Debug, Clone, Copy)]
pub struct Depthwise {
    pub kernel: usize,
    pub stride: usize,
    pub relu6: bool,
}

impl Depthwise {
    /// `(n, c, h, w, ho, wo, pad_top, pad_left)`, the shapes checked.
    fn geometry(&self, x: &Layout, w: &Layout, b: &Layout) -> Result<[usize; 8]> {
        let (n, h, wd, c) = x.shape().dims4()?;
        let (k, s) = (self.kernel, self.stride);
        expect_dims("depthwise", "the weight", w, &[k * k, c])?;
        expect_dims("depthwise", "the bias", b, &[c])?;
        let ((ho, pad_top), (wo, pad_left)) = (same(h, k, s), same(wd, k, s));
        Ok([n, c, h, wd, ho, wo, pad_top, pad_left])
    }
}

impl CustomOp3 for Depthwise {
    fn name(&self) -> &'static str {
        "depthwise-nhwc"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let [n, c, h, w, ho, wo, pad_top, pad_left] = self.geometry(xl, wl, bl)?;
        let (x, weight, bias) = (
            f32_data("depthwise", xs, xl)?,
            f32_data("depthwise", ws, wl)?,
            f32_data("depthwise", bs, bl)?,
        );
        let (k, s) = (self.kernel, self.stride);
        let mut out = Vec::with_capacity(n * ho * wo * c);
        for image in x.chunks_exact(h * w * c) {
            for oy in 0..ho {
                for ox in 0..wo {
                    let start = out.len();
                    out.extend_from_slice(bias);
                    let acc = &mut out[start..];
                    for dy in 0..k {
                        let Some(y) = (oy * s + dy).checked_sub(pad_top).filter(|&y| y < h) else {
                            continue;
                        };
                        for dx in 0..k {
                            let Some(xx) = (ox * s + dx).checked_sub(pad_left).filter(|&x| x < w)
                            else {
                                continue;
                            };
                            let pixel = &image[(y * w + xx) * c..][..c];
                            let taps = &weight[(dy * k + dx) * c..][..c];
                            for ((a, v), t) in acc.iter_mut().zip(pixel).zip(taps) {
                                *a += v * t;
                            }
                        }
                    }
                    if self.relu6 {
                        acc.iter_mut().for_each(|a| *a = relu6(*a));
                    }
                }
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((n, ho, wo, c))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        ws: &candle_core::CudaStorage,
        wl: &Layout,
        bs: &candle_core::CudaStorage,
        bl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let [n, c, h, w, ho, wo, pad_top, pad_left] = self.geometry(xl, wl, bl)?;
        let (k, s, act) = (self.kernel, self.stride, usize::from(self.relu6));
        let inputs = [(xs, xl), (ws, wl), (bs, bl)];
        let total = n * ho * wo * c;
        let out = match (k, s) {
            // Several outputs a thread, for the shapes kernels.cu builds depthwise_row for.
            (3 | 5, 1 | 2) => super::cuda_ops::launch_threads(
                &format!("depthwise_k{k}s{s}"),
                &inputs,
                total,
                n * ho * wo.div_ceil(DEPTHWISE_ROW) * c,
                &[c, h, w, ho, wo, pad_top, pad_left, act],
            )?,
            _ => super::cuda_ops::launch(
                "depthwise",
                &inputs,
                total,
                &[c, h, w, ho, wo, k, s, pad_top, pad_left, act],
            )?,
        };
        Ok((out, Shape::from((n, ho, wo, c))))
    }
}

/// The channel count of a `[.., C]` tensor whose bias is `[C]`.
fn channels(op: &str, x: &Layout, bias: &Layout) -> Result<usize> {
    let c = bias.shape().dims1()?;
    if x.shape().dims().last() != Some(&c) {
        candle_core::bail!("{op}: bias {:?} for {:?}", bias.shape(), x.shape());
    }
    Ok(c)
}

/// A 1x1 convolution's epilogue on its GEMM's output `[pixels, C]`: + bias `[C]`, then ReLU6 if
/// asked.
#[derive(Debug, Clone, Copy)]
pub struct BiasAct {
    pub relu6: bool,
}

impl CustomOp2 for BiasAct {
    fn name(&self) -> &'static str {
        "bias-act-nhwc"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let c = channels("bias-act", xl, bl)?;
        let (x, bias) = (f32_data("bias-act", xs, xl)?, f32_data("bias-act", bs, bl)?);
        let mut out = Vec::with_capacity(x.len());
        for pixel in x.chunks_exact(c) {
            for (v, b) in pixel.iter().zip(bias) {
                let v = v + b;
                out.push(if self.relu6 { relu6(v) } else { v });
            }
        }
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        bs: &candle_core::CudaStorage,
        bl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let c = channels("bias-act", xl, bl)?;
        let params = [c, usize::from(self.relu6)];
        let total = xl.shape().elem_count();
        let out = super::cuda_ops::launch("bias_act", &[(xs, xl), (bs, bl)], total, &params)?;
        Ok((out, xl.shape().clone()))
    }
}

/// A projection's epilogue in a residual block: its GEMM's output `[pixels, C]` + bias `[C]` +
/// the block's input (same shape as the output).
#[derive(Debug, Clone, Copy)]
pub struct BiasResidual;

impl CustomOp3 for BiasResidual {
    fn name(&self) -> &'static str {
        "bias-residual-nhwc"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
        rs: &CpuStorage,
        rl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let c = channels("bias-residual", xl, bl)?;
        expect_dims("bias-residual", "the residual", rl, xl.shape().dims())?;
        let x = f32_data("bias-residual", xs, xl)?;
        let bias = f32_data("bias-residual", bs, bl)?;
        let residual = f32_data("bias-residual", rs, rl)?;
        let mut out = Vec::with_capacity(x.len());
        for (pixel, skip) in x.chunks_exact(c).zip(residual.chunks_exact(c)) {
            out.extend(
                pixel
                    .iter()
                    .zip(bias)
                    .zip(skip)
                    .map(|((v, b), r)| v + b + r),
            );
        }
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        bs: &candle_core::CudaStorage,
        bl: &Layout,
        rs: &candle_core::CudaStorage,
        rl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let c = channels("bias-residual", xl, bl)?;
        expect_dims("bias-residual", "the residual", rl, xl.shape().dims())?;
        let total = xl.shape().elem_count();
        let out = super::cuda_ops::launch(
            "bias_residual",
            &[(xs, xl), (bs, bl), (rs, rl)],
            total,
            &[c],
        )?;
        Ok((out, xl.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn same_padding_matches_tensorflow() {
        // 224 -> 112 with a 3x3 stride 2: 1 padding row in all, after the image.
        assert_eq!(same(224, 3, 2), (112, 0));
        // 260 -> 130 with a 5x5 stride 2: 3 in all, 1 before.
        assert_eq!(same(260, 5, 2), (130, 1));
        // 17 -> 9 with a 3x3 stride 2: 2 in all, 1 before.
        assert_eq!(same(17, 3, 2), (9, 1));
        // stride 1 keeps the size, k / 2 before.
        assert_eq!(same(14, 5, 1), (14, 2));
    }
}
