//! Depthwise convolution (one kxk filter per channel) as a candle CPU op, with TF "SAME" padding,
//! the folded-BatchNorm bias and ReLU6 fused in.
//!
//! candle runs a grouped convolution on the CPU as one single-channel convolution per channel,
//! one after another, and that was 85 % of EfficientNet-Lite's time. Here every (image, channel)
//! plane is an independent job on rayon's pool, reading the unpadded input directly (the zero
//! border is handled by clipping the kernel window, so no padded copy is made). GPU devices keep
//! candle's own grouped convolution.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape};
use rayon::prelude::*;

/// A depthwise convolution with fixed (already folded) weights.
#[derive(Debug, Clone)]
pub struct DepthwiseConv {
    /// `channels * kernel * kernel`.
    pub weight: Vec<f32>,
    /// `channels`.
    pub bias: Vec<f32>,
    pub kernel: usize,
    pub stride: usize,
    pub relu6: bool,
}

/// TF "SAME" geometry for one axis: `(output size, padding before)`.
fn same(size: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let out = size.div_ceil(stride);
    let pad = ((out - 1) * stride + kernel).saturating_sub(size);
    (out, pad / 2)
}

impl CustomOp1 for DepthwiseConv {
    fn name(&self) -> &'static str {
        "depthwise-conv-bias-relu6"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("depthwise conv: only f32 is supported on the CPU");
        };
        let (start, end) = layout.contiguous_offsets().ok_or_else(|| {
            candle_core::Error::Msg("depthwise conv: input not contiguous".into())
        })?;
        let input = &data[start..end];
        let (n, c, h, w) = layout.shape().dims4()?;
        if c * self.kernel * self.kernel != self.weight.len() || c != self.bias.len() {
            candle_core::bail!("depthwise conv: {c} channels do not match the weights");
        }
        let k = self.kernel;
        let s = self.stride;
        let (oh, pad_top) = same(h, k, s);
        let (ow, pad_left) = same(w, k, s);
        let mut output = vec![0f32; n * c * oh * ow];
        output
            .par_chunks_mut(oh * ow)
            .enumerate()
            .for_each(|(plane, out)| {
                let ch = plane % c;
                let src = &input[plane * h * w..(plane + 1) * h * w];
                let filter = &self.weight[ch * k * k..(ch + 1) * k * k];
                let bias = self.bias[ch];
                for oy in 0..oh {
                    // Rows of the kernel window that fall inside the image.
                    let y0 = (oy * s) as isize - pad_top as isize;
                    let ky_lo = (-y0).max(0) as usize;
                    let ky_hi = k.min((h as isize - y0).max(0) as usize);
                    let row = &mut out[oy * ow..(oy + 1) * ow];
                    row.fill(bias);
                    for ky in ky_lo..ky_hi {
                        let line = &src[(y0 + ky as isize) as usize * w..][..w];
                        let taps = &filter[ky * k..(ky + 1) * k];
                        for (ox, acc) in row.iter_mut().enumerate() {
                            let x0 = (ox * s) as isize - pad_left as isize;
                            let kx_lo = (-x0).max(0) as usize;
                            let kx_hi = k.min((w as isize - x0).max(0) as usize);
                            let mut sum = 0f32;
                            for kx in kx_lo..kx_hi {
                                sum += taps[kx] * line[(x0 + kx as isize) as usize];
                            }
                            *acc += sum;
                        }
                    }
                    if self.relu6 {
                        for v in row.iter_mut() {
                            *v = v.clamp(0.0, 6.0);
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(output), Shape::from((n, c, oh, ow))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// The fused op equals candle's pad + grouped conv2d + bias + clamp.
    #[test]
    fn matches_candles_grouped_convolution() {
        let dev = Device::Cpu;
        for (k, s, h, w) in [
            (3, 1, 7, 9),
            (3, 2, 8, 8),
            (5, 2, 9, 7),
            (5, 1, 5, 5),
            (3, 2, 1, 1),
        ] {
            let c = 4;
            let x = Tensor::randn(0f32, 1.0, (2, c, h, w), &dev).unwrap();
            let wt = Tensor::randn(0f32, 1.0, (c, 1, k, k), &dev).unwrap();
            let b = Tensor::randn(0f32, 1.0, c, &dev).unwrap();
            let (oh, pt) = same(h, k, s);
            let (ow, pl) = same(w, k, s);
            let ph = (oh - 1) * s + k - h.min((oh - 1) * s + k);
            let pw = (ow - 1) * s + k - w.min((ow - 1) * s + k);
            let padded = x
                .pad_with_zeros(2, pt, ph - pt)
                .unwrap()
                .pad_with_zeros(3, pl, pw - pl)
                .unwrap();
            let expected = padded
                .conv2d(&wt, 0, s, 1, c)
                .unwrap()
                .broadcast_add(&b.reshape((c, 1, 1)).unwrap())
                .unwrap()
                .clamp(0f32, 6f32)
                .unwrap();
            let op = DepthwiseConv {
                weight: wt.flatten_all().unwrap().to_vec1().unwrap(),
                bias: b.to_vec1().unwrap(),
                kernel: k,
                stride: s,
                relu6: true,
            };
            let got = x.apply_op1_no_bwd(&op).unwrap();
            assert_eq!(got.dims(), expected.dims());
            let diff = (got - expected)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-5, "k{k} s{s} {h}x{w}: {diff}");
        }
    }
}
