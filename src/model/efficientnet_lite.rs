//! EfficientNet-Lite (Lite0..Lite4 share this code) as a candle module.
//!
//! EfficientNet-Lite is EfficientNet-B0's block table without squeeze-excitation, with ReLU6 in
//! place of swish, a fixed 32-channel stem and 1280-channel head, and TensorFlow "SAME" padding
//! (asymmetric: a 3x3 stride-2 convolution on 224 px pads 0 on top and 1 below). Every BatchNorm
//! (eps 1e-3) is folded into the convolution before it when the weights are loaded, so a layer
//! at run time is one convolution plus a bias, then ReLU6 where the network has one.
//!
//! The block layout is derived from tensor shapes, not from a per-variant table: a block starts a
//! new stage exactly when its input and output channels differ, and stages have the fixed strides
//! 1, 2, 2, 2, 1, 2, 1. That is how one file serves Lite0 (16 blocks) and Lite2 (21 blocks).

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, D};

use super::depthwise::DepthwiseConv;
use super::ModelError;

/// BatchNorm epsilon of the TF EfficientNet-Lite checkpoints.
const BN_EPS: f64 = 1e-3;
/// Stride of the first block of each of the seven stages.
const STAGE_STRIDES: [usize; 7] = [1, 2, 2, 2, 1, 2, 1];

type Weights = HashMap<String, Tensor>;

fn take(weights: &Weights, name: &str) -> Result<Tensor, ModelError> {
    weights
        .get(name)
        .cloned()
        .ok_or_else(|| ModelError::MissingTensor(name.to_string()))
}

/// A bias-free convolution with its BatchNorm folded in: `conv(x, w * s) + (beta - mean * s)`
/// where `s = gamma / sqrt(var + eps)`.
#[derive(Debug)]
struct ConvBn {
    weight: Tensor,
    /// Shape `[C_out, 1, 1]`, broadcast over the spatial dimensions.
    bias: Tensor,
    kernel: usize,
    stride: usize,
    groups: usize,
    relu6: bool,
    /// The fused CPU kernel for depthwise layers (candle's grouped conv is used on GPUs).
    cpu_depthwise: Option<DepthwiseConv>,
}

impl ConvBn {
    fn load(
        weights: &Weights,
        conv: &str,
        bn: &str,
        stride: usize,
        depthwise: bool,
        relu6: bool,
        device: &Device,
    ) -> Result<ConvBn, ModelError> {
        let w = take(weights, &format!("{conv}.weight"))?;
        let gamma = take(weights, &format!("{bn}.weight"))?;
        let beta = take(weights, &format!("{bn}.bias"))?;
        let mean = take(weights, &format!("{bn}.running_mean"))?;
        let var = take(weights, &format!("{bn}.running_var"))?;
        let (c_out, _, kernel, _) = w.dims4()?;
        let scale = (gamma / (var + BN_EPS)?.sqrt()?)?;
        let weight = w.broadcast_mul(&scale.reshape((c_out, 1, 1, 1))?)?;
        let bias = (beta - (mean * &scale)?)?.reshape((c_out, 1, 1))?;
        let cpu_depthwise = match (depthwise, device) {
            (true, Device::Cpu) => Some(DepthwiseConv {
                weight: weight.flatten_all()?.to_vec1::<f32>()?,
                bias: bias.flatten_all()?.to_vec1::<f32>()?,
                kernel,
                stride,
                relu6,
            }),
            _ => None,
        };
        Ok(ConvBn {
            cpu_depthwise,
            weight: weight.to_device(device)?,
            bias: bias.to_device(device)?,
            kernel,
            stride,
            groups: if depthwise { c_out } else { 1 },
            relu6,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if let Some(op) = &self.cpu_depthwise {
            return x.contiguous()?.apply_op1_no_bwd(op);
        }
        let x = same_pad(x, self.kernel, self.stride)?;
        let y = x
            .conv2d(&self.weight, 0, self.stride, 1, self.groups)?
            .broadcast_add(&self.bias)?;
        if self.relu6 {
            y.clamp(0f32, 6f32)
        } else {
            Ok(y)
        }
    }
}

/// TensorFlow "SAME" padding for an NCHW tensor: output = ceil(input / stride), the extra row or
/// column (if any) goes to the bottom/right.
fn same_pad(x: &Tensor, kernel: usize, stride: usize) -> candle_core::Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let pad = |size: usize| {
        let out = size.div_ceil(stride);
        ((out - 1) * stride + kernel).saturating_sub(size)
    };
    let (ph, pw) = (pad(h), pad(w));
    if ph == 0 && pw == 0 {
        return Ok(x.clone());
    }
    x.pad_with_zeros(2, ph / 2, ph - ph / 2)?
        .pad_with_zeros(3, pw / 2, pw - pw / 2)
}

/// Inverted residual block: optional 1x1 expansion, depthwise kxk, 1x1 projection (no activation),
/// plus the input when shape is preserved.
#[derive(Debug)]
struct MbConv {
    expand: Option<ConvBn>,
    depthwise: ConvBn,
    project: ConvBn,
    residual: bool,
}

impl MbConv {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut y = match &self.expand {
            Some(expand) => expand.forward(x)?,
            None => x.clone(),
        };
        y = self.depthwise.forward(&y)?;
        y = self.project.forward(&y)?;
        if self.residual {
            y + x
        } else {
            Ok(y)
        }
    }
}

/// The network. `forward` returns the logits and the last feature map (the input of global
/// average pooling), which class activation maps are computed from.
#[derive(Debug)]
pub struct EfficientNetLite {
    stem: ConvBn,
    blocks: Vec<MbConv>,
    head: ConvBn,
    /// `[classes, channels]`.
    fc_weight: Tensor,
    /// `[classes]`.
    fc_bias: Tensor,
}

impl EfficientNetLite {
    /// Builds the network from the converted checkpoint's tensors (original names:
    /// `_conv_stem`, `_bn0`, `_blocks.N.{_expand_conv,_bn0,_depthwise_conv,_bn1,_project_conv,_bn2}`,
    /// `_conv_head`, `_bn1`, `_fc`).
    ///
    /// # Errors
    /// [`ModelError::MissingTensor`] or a shape error when the file is not an EfficientNet-Lite.
    pub fn from_weights(weights: &Weights, device: &Device) -> Result<Self, ModelError> {
        let stem = ConvBn::load(weights, "_conv_stem", "_bn0", 2, false, true, device)?;
        let mut blocks = Vec::new();
        let mut stage: Option<usize> = None;
        for b in 0.. {
            let p = format!("_blocks.{b}");
            let Some(project) = weights.get(&format!("{p}._project_conv.weight")) else {
                break;
            };
            let c_out = project.dim(0)?;
            let has_expand = weights.contains_key(&format!("{p}._expand_conv.weight"));
            let c_in = if has_expand {
                take(weights, &format!("{p}._expand_conv.weight"))?.dim(1)?
            } else {
                take(weights, &format!("{p}._depthwise_conv.weight"))?.dim(0)?
            };
            let new_stage = c_in != c_out;
            if new_stage {
                stage = Some(stage.map_or(0, |s| s + 1));
            }
            let stage_index = stage.ok_or(ModelError::Layout(
                "the first block does not change the channel count",
            ))?;
            let stride = match (new_stage, STAGE_STRIDES.get(stage_index)) {
                (false, _) => 1,
                (true, Some(&s)) => s,
                (true, None) => return Err(ModelError::Layout("more than seven stages")),
            };
            let expand = if has_expand {
                Some(ConvBn::load(
                    weights,
                    &format!("{p}._expand_conv"),
                    &format!("{p}._bn0"),
                    1,
                    false,
                    true,
                    device,
                )?)
            } else {
                None
            };
            let depthwise = ConvBn::load(
                weights,
                &format!("{p}._depthwise_conv"),
                &format!("{p}._bn1"),
                stride,
                true,
                true,
                device,
            )?;
            let project = ConvBn::load(
                weights,
                &format!("{p}._project_conv"),
                &format!("{p}._bn2"),
                1,
                false,
                false,
                device,
            )?;
            blocks.push(MbConv {
                expand,
                depthwise,
                project,
                residual: stride == 1 && c_in == c_out,
            });
        }
        if blocks.is_empty() {
            return Err(ModelError::MissingTensor(
                "_blocks.0._project_conv.weight".into(),
            ));
        }
        let head = ConvBn::load(weights, "_conv_head", "_bn1", 1, false, true, device)?;
        let fc_weight = take(weights, "_fc.weight")?.to_device(device)?;
        let fc_bias = take(weights, "_fc.bias")?.to_device(device)?;
        Ok(EfficientNetLite {
            stem,
            blocks,
            head,
            fc_weight,
            fc_bias,
        })
    }

    /// Number of MBConv blocks (16 for Lite0, 21 for Lite2).
    pub fn block_count(&self) -> usize {
        self.blocks.len()
    }

    /// The classifier as `(weight [classes, channels], bias [classes])`.
    pub fn classifier(&self) -> (&Tensor, &Tensor) {
        (&self.fc_weight, &self.fc_bias)
    }

    /// `x`: `[N, 3, S, S]` f32. Returns `(logits [N, classes], features [N, channels, h, w])`.
    ///
    /// # Errors
    /// Any candle error (shape mismatch, device failure).
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let mut x = self.stem.forward(x)?;
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        let features = self.head.forward(&x)?;
        let pooled = features.mean((2, 3))?;
        let logits = pooled
            .matmul(&self.fc_weight.t()?)?
            .broadcast_add(&self.fc_bias)?;
        Ok((logits.to_dtype(DType::F32)?, features))
    }
}

/// Softmax over the last dimension, computed in f32 on the tensor's device.
pub fn softmax(logits: &Tensor) -> candle_core::Result<Tensor> {
    let max = logits.max_keepdim(D::Minus1)?;
    let e = logits.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}
