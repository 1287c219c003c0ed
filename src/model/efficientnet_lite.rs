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
use rayon::prelude::*;

use super::aligned::{aligned, grown};
use super::block::{Block, Layers, Source};
use super::nhwc::{average_pool, Depthwise, GlobalAvgPool, Pointwise, Stem};
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
    /// With candle's ops, the folded weight and bias on the device in the compute dtype, laid
    /// out for the graph that runs them: NCHW (Metal) `[C_out, C_in / groups, k, k]` and
    /// `[C_out, 1, 1]`; channels-last (CUDA) see [`ChannelsLastWeights`]. With the CPU ops
    /// `None` (the op has its own copy).
    candle: Option<(Tensor, Tensor)>,
    kernel: usize,
    stride: usize,
    groups: usize,
    relu6: bool,
    /// On the CPU, the channels-last op that runs this layer.
    cpu: Option<CpuLayer>,
}

/// How the layers run: the CPU's own fast ops (f32, channels-last); candle's own ops on NCHW
/// tensors (any device, f32 or f16: what Metal uses); or the channels-last graph of
/// [`super::channels_last`], candle's GEMM plus labeld's kernels (what CUDA uses).
#[derive(Debug, Clone, Copy)]
enum Ops<'a> {
    Cpu,
    Candle { device: &'a Device, dtype: DType },
    ChannelsLast { device: &'a Device, dtype: DType },
}

/// The channels-last graph's weight layouts, made from the folded NCHW weight
/// `[C_out, C_in / groups, k, k]`: depthwise `[k * k, C]`, 1x1 `[C_in, C_out]` (the right-hand
/// side of the GEMM), the stem `[k, k, C_in, C_out]`; the bias flat, `[C_out]`.
struct ChannelsLastWeights;

impl ChannelsLastWeights {
    fn weight(weight: &Tensor, depthwise: bool) -> candle_core::Result<Tensor> {
        let (c_out, c_in, k, _) = weight.dims4()?;
        if depthwise {
            weight.reshape((c_out, k * k))?.t()?.contiguous()
        } else if k == 1 {
            weight.reshape((c_out, c_in))?.t()?.contiguous()
        } else {
            weight.permute((2, 3, 1, 0))?.contiguous()
        }
    }
}

/// A layer's channels-last CPU op (see [`super::nhwc`]).
#[derive(Debug)]
enum CpuLayer {
    Stem(Stem),
    Pointwise(Pointwise),
    Depthwise(Depthwise),
}

impl CpuLayer {
    /// Rearranges folded NCHW weights `[C_out, C_in / groups, k, k]` for the NHWC ops.
    fn new(
        weight: &Tensor,
        bias: &Tensor,
        stride: usize,
        depthwise: bool,
        relu6: bool,
    ) -> Result<CpuLayer, ModelError> {
        let (c_out, c_in, k, _) = weight.dims4()?;
        let w = weight.flatten_all()?.to_vec1::<f32>()?;
        let bias = bias.flatten_all()?.to_vec1::<f32>()?;
        let taps = k * k;
        if depthwise {
            let mut weight = vec![0f32; taps * c_out];
            for c in 0..c_out {
                for t in 0..taps {
                    weight[t * c_out + c] = w[c * taps + t];
                }
            }
            return Ok(CpuLayer::Depthwise(Depthwise {
                weight,
                bias,
                channels: c_out,
                kernel: k,
                stride,
                relu6,
                allow_avx512: true,
            }));
        }
        if k == 1 && stride == 1 {
            let mut weight = vec![0f32; c_in * c_out];
            for co in 0..c_out {
                for ci in 0..c_in {
                    weight[ci * c_out + co] = w[co * c_in + ci];
                }
            }
            return Ok(CpuLayer::Pointwise(Pointwise::new(
                weight, bias, c_in, c_out, relu6,
            )));
        }
        if !relu6 {
            return Err(ModelError::Layout("a full convolution without ReLU6"));
        }
        let mut weight = vec![0f32; taps * c_in * c_out];
        for co in 0..c_out {
            for ci in 0..c_in {
                for t in 0..taps {
                    weight[(t * c_in + ci) * c_out + co] = w[(co * c_in + ci) * taps + t];
                }
            }
        }
        Ok(CpuLayer::Stem(Stem::new(
            weight, bias, c_in, c_out, k, stride,
        )))
    }
}

impl ConvBn {
    fn load(
        weights: &Weights,
        conv: &str,
        bn: &str,
        stride: usize,
        depthwise: bool,
        relu6: bool,
        ops: Ops<'_>,
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
        let (cpu, candle) = match ops {
            Ops::Cpu => (
                Some(CpuLayer::new(&weight, &bias, stride, depthwise, relu6)?),
                None,
            ),
            Ops::Candle { device, dtype } => (
                None,
                Some((
                    weight.to_dtype(dtype)?.to_device(device)?,
                    bias.to_dtype(dtype)?.to_device(device)?,
                )),
            ),
            Ops::ChannelsLast { device, dtype } => (
                None,
                Some((
                    ChannelsLastWeights::weight(&weight, depthwise)?
                        .to_dtype(dtype)?
                        .to_device(device)?,
                    bias.flatten_all()?.to_dtype(dtype)?.to_device(device)?,
                )),
            ),
        };
        Ok(ConvBn {
            cpu,
            candle,
            kernel,
            stride,
            groups: if depthwise { c_out } else { 1 },
            relu6,
        })
    }

    /// The layer on an NHWC tensor in the channels-last graph (CUDA): a 1x1 convolution is one
    /// GEMM over all pixels of the batch then its epilogue (+ bias, ReLU6, or + bias + the
    /// block's input `residual`); the depthwise and the stem are one kernel each. The stem
    /// reads the NCHW images as they come.
    fn forward_channels_last(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        use super::channels_last::{BiasAct, BiasResidual, Depthwise, Stem};
        let Some((weight, bias)) = &self.candle else {
            candle_core::bail!("a CPU layer has no candle weights");
        };
        let (kernel, stride) = (self.kernel, self.stride);
        if self.groups > 1 {
            let relu6 = self.relu6;
            let op = Depthwise {
                kernel,
                stride,
                relu6,
            };
            return x.apply_op3_no_bwd(weight, bias, &op);
        }
        if kernel > 1 || stride > 1 {
            if !self.relu6 {
                candle_core::bail!("a full convolution without ReLU6");
            }
            return x.apply_op3_no_bwd(weight, bias, &Stem { kernel, stride });
        }
        let (n, h, w, c_in) = x.dims4()?;
        let c_out = weight.dim(1)?;
        let y = x.reshape((n * h * w, c_in))?.matmul(weight)?;
        let y = match residual {
            Some(_) if self.relu6 => candle_core::bail!("a residual after ReLU6"),
            Some(r) => y.apply_op3_no_bwd(bias, &r.reshape((n * h * w, c_out))?, &BiasResidual)?,
            None => y.apply_op2_no_bwd(bias, &BiasAct { relu6: self.relu6 })?,
        };
        y.reshape((n, h, w, c_out))
    }

    /// The layer on an NCHW tensor with candle's own ops (Metal). `six` is the ReLU6 ceiling
    /// as a one-element tensor on the device, in the compute dtype (a Rust scalar would be
    /// copied to the device on every call).
    fn forward(&self, x: &Tensor, six: &Tensor) -> candle_core::Result<Tensor> {
        let Some((weight, bias)) = &self.candle else {
            candle_core::bail!("a CPU layer has no candle weights");
        };
        let y = if self.groups > 1 {
            depthwise(x, weight, self.kernel, self.stride)?
        } else if self.kernel == 1 && self.stride == 1 {
            pointwise(x, weight)?
        } else {
            same_pad(x, self.kernel, self.stride)?.conv2d(weight, 0, self.stride, 1, 1)?
        };
        let y = y.broadcast_add(bias)?;
        if self.relu6 {
            y.relu()?.broadcast_minimum(six)
        } else {
            Ok(y)
        }
    }
}

/// A 1x1 convolution as one batched matrix product, `[C_out, C_in] x [N, C_in, H*W]` (cuBLAS
/// on CUDA, tensor cores in f16), instead of candle's image-to-columns convolution.
fn pointwise(x: &Tensor, weight: &Tensor) -> candle_core::Result<Tensor> {
    let (n, c_in, h, w) = x.dims4()?;
    let c_out = weight.dim(0)?;
    let weight = weight
        .reshape((1, c_out, c_in))?
        .broadcast_as((n, c_out, c_in))?;
    weight
        .matmul(&x.reshape((n, c_in, h * w))?)?
        .reshape((n, c_out, h, w))
}

/// A depthwise kxk convolution (SAME padding) as a sum over its k*k taps: each tap is a
/// shifted view of the padded input (of one of its parity phases for stride 2) times that tap's
/// per-channel weight. That is 2 * k * k elementwise kernels over the whole batch; candle's
/// grouped `conv2d` would instead run one convolution per channel (1152 of them in a late
/// Lite0 block).
fn depthwise(
    x: &Tensor,
    weight: &Tensor,
    kernel: usize,
    stride: usize,
) -> candle_core::Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (ho, wo) = (h.div_ceil(stride), w.div_ceil(stride));
    let x = same_pad(x, kernel, stride)?;
    // Stride 2: the padded input is split once into its four (row, column) parity phases, so
    // that every tap is a plain shifted view of one phase: tap (dy, dx) reads phase
    // (dy % 2, dx % 2) from row dy / 2, column dx / 2. An odd padded size gets one more zero
    // row (column) first, which no output reads.
    let phases = if stride > 1 {
        let (_, _, hp, wp) = x.dims4()?;
        let x = x
            .pad_with_zeros(2, 0, hp % stride)?
            .pad_with_zeros(3, 0, wp % stride)?;
        let (hp, wp) = (hp.div_ceil(stride), wp.div_ceil(stride));
        let x = x.reshape((n, c, hp, stride, wp, stride))?;
        let mut phases = Vec::with_capacity(stride * stride);
        for a in 0..stride {
            for b in 0..stride {
                phases.push(
                    x.narrow(3, a, 1)?
                        .narrow(5, b, 1)?
                        .contiguous()?
                        .reshape((n, c, hp, wp))?,
                );
            }
        }
        phases
    } else {
        vec![x]
    };
    let taps = weight.reshape((c, kernel * kernel))?;
    let mut sum: Option<Tensor> = None;
    for dy in 0..kernel {
        for dx in 0..kernel {
            let phase = &phases[(dy % stride) * stride + dx % stride];
            let view = phase
                .narrow(2, dy / stride, ho)?
                .narrow(3, dx / stride, wo)?;
            let tap = taps.narrow(1, dy * kernel + dx, 1)?.reshape((1, c, 1, 1))?;
            let term = view.broadcast_mul(&tap)?;
            sum = Some(match sum {
                None => term,
                Some(sum) => (sum + term)?,
            });
        }
    }
    sum.ok_or_else(|| candle_core::Error::Msg("a depthwise kernel with no taps".into()))
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
    /// The block on an NHWC tensor in the channels-last graph (CUDA); the residual is added in
    /// the projection's epilogue.
    fn forward_channels_last(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = match &self.expand {
            Some(expand) => expand.forward_channels_last(x, None)?,
            None => x.clone(),
        };
        let y = self.depthwise.forward_channels_last(&y, None)?;
        self.project
            .forward_channels_last(&y, self.residual.then_some(x))
    }

    fn forward(&self, x: &Tensor, six: &Tensor) -> candle_core::Result<Tensor> {
        let mut y = match &self.expand {
            Some(expand) => expand.forward(x, six)?,
            None => x.clone(),
        };
        y = self.depthwise.forward(&y, six)?;
        y = self.project.forward(&y, six)?;
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
    /// On the CPU, the classifier as a pointwise op over the pooled features (candle's matmul
    /// repacks the 1000 x 1280 weights on every call, ~5 % of a Lite0 pass).
    fc_cpu: Option<Pointwise>,
    /// With candle's ops: the compute dtype and the ReLU6 ceiling on the device.
    candle: Option<(DType, Tensor)>,
    /// Whether candle's ops run the channels-last graph (CUDA) rather than NCHW.
    channels_last: bool,
    /// CPU activation buffers (unused on GPUs).
    workspace: std::sync::Mutex<Workspace>,
}

impl EfficientNetLite {
    /// Builds the network from the converted checkpoint's tensors (original names:
    /// `_conv_stem`, `_bn0`, `_blocks.N.{_expand_conv,_bn0,_depthwise_conv,_bn1,_project_conv,_bn2}`,
    /// `_conv_head`, `_bn1`, `_fc`).
    ///
    /// On the CPU the network runs in f32 on the CPU's own channels-last ops; on CUDA in
    /// `dtype` (f32, or f16/bf16 for tensor cores) on the channels-last graph (labeld's own
    /// kernels around candle's GEMM), on Metal on candle's NCHW ops. Logits and features are
    /// returned in f32 either way.
    ///
    /// # Errors
    /// [`ModelError::MissingTensor`] or a shape error when the file is not an EfficientNet-Lite;
    /// [`ModelError::Precision`] for a half-precision dtype on the CPU.
    pub fn from_weights(
        weights: &Weights,
        device: &Device,
        dtype: DType,
    ) -> Result<Self, ModelError> {
        let ops = match device {
            Device::Cpu if dtype == DType::F32 => Ops::Cpu,
            Device::Cpu => return Err(ModelError::Precision(dtype)),
            Device::Cuda(_) => Ops::ChannelsLast { device, dtype },
            Device::Metal(_) => Ops::Candle { device, dtype },
        };
        Self::build(weights, ops)
    }

    fn build(weights: &Weights, ops: Ops<'_>) -> Result<Self, ModelError> {
        let stem = ConvBn::load(weights, "_conv_stem", "_bn0", 2, false, true, ops)?;
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
                    ops,
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
                ops,
            )?;
            let project = ConvBn::load(
                weights,
                &format!("{p}._project_conv"),
                &format!("{p}._bn2"),
                1,
                false,
                false,
                ops,
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
        let head = ConvBn::load(weights, "_conv_head", "_bn1", 1, false, true, ops)?;
        let mut fc_weight = take(weights, "_fc.weight")?;
        let mut fc_bias = take(weights, "_fc.bias")?;
        let fc_cpu = match ops {
            Ops::Cpu => {
                let (classes, channels) = fc_weight.dims2()?;
                Some(Pointwise::new(
                    fc_weight.t()?.contiguous()?.flatten_all()?.to_vec1()?,
                    fc_bias.to_vec1()?,
                    channels,
                    classes,
                    false,
                ))
            }
            Ops::Candle { .. } | Ops::ChannelsLast { .. } => None,
        };
        let candle = match ops {
            Ops::Cpu => None,
            Ops::Candle { device, dtype } | Ops::ChannelsLast { device, dtype } => {
                fc_weight = fc_weight.to_dtype(dtype)?.to_device(device)?;
                fc_bias = fc_bias.to_dtype(dtype)?.to_device(device)?;
                let six = Tensor::new(&[6f32], device)?.to_dtype(dtype)?;
                Some((dtype, six))
            }
        };
        Ok(EfficientNetLite {
            stem,
            blocks,
            head,
            fc_weight,
            fc_bias,
            fc_cpu,
            candle,
            channels_last: matches!(ops, Ops::ChannelsLast { .. }),
            workspace: std::sync::Mutex::default(),
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
        let Some((dtype, six)) = &self.candle else {
            return self.forward_cpu(x);
        };
        let x = x.to_dtype(*dtype)?.contiguous()?;
        let features = if self.channels_last {
            let mut x = self.stem.forward_channels_last(&x, None)?;
            for block in &self.blocks {
                x = block.forward_channels_last(&x)?;
            }
            // [N, h, w, C] -> NCHW, as callers take it (7 x 7 x 1280 an image: a small copy).
            self.head
                .forward_channels_last(&x, None)?
                .permute((0, 3, 1, 2))?
                .contiguous()?
        } else {
            let mut x = self.stem.forward(&x, six)?;
            for block in &self.blocks {
                x = block.forward(&x, six)?;
            }
            self.head.forward(&x, six)?
        };
        let pooled = features.mean((2, 3))?;
        let logits = pooled
            .matmul(&self.fc_weight.t()?)?
            .broadcast_add(&self.fc_bias)?;
        Ok((logits.to_dtype(DType::F32)?, features.to_dtype(DType::F32)?))
    }
}

/// Activation buffers reused from one CPU forward pass to the next. Allocating a layer's output
/// afresh (tens of MB at batch 8) costs a page fault per 4 KiB on first touch, about a fifth of
/// the pass; these grow to the largest batch once (at warm-up) and then stay, so the resident
/// memory of a warm server is flat. (A block's expanded and filtered rows live in per-thread
/// scratch, see [`super::block`].)
#[derive(Debug, Default)]
struct Workspace {
    /// The images of one pass, contiguous.
    batch: Vec<f32>,
    /// The head's output for one pass.
    features: Vec<f32>,
    /// One set per lane (see [`CpuBody::passes`]).
    bodies: Vec<BodyBuffers>,
}

/// What the body's passes reuse.
#[derive(Debug, Default)]
struct BodyBuffers {
    /// The current activation and the next block's output.
    activations: [Vec<f32>; 2],
    /// The stem's image-to-columns scratch, when it runs on its own.
    columns: Vec<f32>,
    /// The buffers of the blocks that run layer by layer.
    layers: Layers,
}

/// Images the CPU body runs through the network together. The banded blocks keep their large
/// activations in per-thread scratch, so a pass's own buffers hold only the blocks' outputs
/// (about 1 MB an image at most); more images per pass amortise the late blocks' weights.
/// Measured with `examples/forward --model lite0 --threads 2 --batches 8`, four alternating
/// rounds on this 2-core VM: 135-148 images/s two at a time, 136-156 four, 155-160 eight.
const IMAGES_PER_PASS: usize = 8;

/// How many images each lane of a pass takes: one lane per thread when every thread gets at
/// least one image, else one lane for the whole pass.
///
/// Why: a lane runs its images through the whole network on its own, so a thread keeps its
/// own activations in its own L2 and never waits at the end of a layer for the other threads.
/// Measured on this 2-core VM (`examples/forward --threads 2 --batches 4,8,16`, two
/// alternating rounds): best batch Lite0 212-214 images/s with one lane, 221-223 with two;
/// Lite2 98-101 and 101-102. Two separate one-thread processes were only ~5-9 % ahead of one
/// lane, which bounds what this can gain. A lane's layers still split across the pool
/// (rayon), so a thread that finishes its lane early helps with the other's (3 images on 2
/// threads). Below one image per thread (batch 1) the layers split across the threads
/// instead, which is what keeps batch-1 latency low.
fn lane_sizes(images: usize, threads: usize) -> Vec<usize> {
    let lanes = if images >= threads { threads.max(1) } else { 1 };
    (0..lanes)
        .map(|lane| images * (lane + 1) / lanes - images * lane / lanes)
        .collect()
}

/// The whole CPU network body (stem to head) as one candle op over [`Workspace`] buffers:
/// NCHW images in, the head's NHWC feature map out.
struct CpuBody<'a> {
    net: &'a EfficientNetLite,
}

fn cpu_layer<'a>(layer: &'a ConvBn, name: &str) -> candle_core::Result<&'a CpuLayer> {
    layer
        .cpu
        .as_ref()
        .ok_or_else(|| candle_core::Error::Msg(format!("{name}: no CPU op")))
}

impl candle_core::CustomOp1 for CpuBody<'_> {
    fn name(&self) -> &'static str {
        "efficientnet-lite-body-nhwc"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let candle_core::CpuStorage::F32(data) = storage else {
            candle_core::bail!("the CPU network takes f32 input");
        };
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("input not contiguous".into()))?;
        let (n, c, h, w) = layout.shape().dims4()?;
        let images: Vec<&[f32]> = data[start..end].chunks_exact(c * h * w).collect();
        let [_, fh, fw, fc] = self.feature_dims([1, c, h, w])?;
        let mut features = Vec::with_capacity(n * fh * fw * fc);
        self.passes(&images, [c, h, w], |pass| {
            features.extend_from_slice(pass);
            Ok(())
        })?;
        Ok((
            candle_core::CpuStorage::F32(features),
            candle_core::Shape::from((n, fh, fw, fc)),
        ))
    }
}

/// What a pass's images arrive as: the service's 8-bit levels, normalised as they are copied
/// into the pass, or floats already normalised (the tensor path of [`EfficientNetLite::forward`]).
trait PassInput: Sync {
    fn len(&self) -> usize;
    /// The image's normalised values into `dst` (as long as the image).
    fn normalise_into(&self, dst: &mut [f32]);
}

impl PassInput for [u8] {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }

    fn normalise_into(&self, dst: &mut [f32]) {
        for (value, &level) in dst.iter_mut().zip(self) {
            *value = super::normalised(level);
        }
    }
}

impl PassInput for [f32] {
    fn len(&self) -> usize {
        <[f32]>::len(self)
    }

    fn normalise_into(&self, dst: &mut [f32]) {
        dst.copy_from_slice(self);
    }
}

impl CpuBody<'_> {
    /// The stem, and whether the first block takes it as its source (see [`super::block`]):
    /// it can when that block has no expansion, as in every EfficientNet-Lite.
    fn stem(&self) -> candle_core::Result<(&Stem, bool)> {
        let CpuLayer::Stem(stem) = cpu_layer(&self.net.stem, "stem")? else {
            candle_core::bail!("the first layer is not a stem");
        };
        let fused = self.net.blocks.first().is_some_and(|b| b.expand.is_none());
        Ok((stem, fused))
    }

    /// Block `i`'s CPU ops.
    fn block(&self, i: usize) -> candle_core::Result<Block<'_>> {
        let block = &self.net.blocks[i];
        let source = match &block.expand {
            Some(expand) => match cpu_layer(expand, "expand")? {
                CpuLayer::Pointwise(op) => Source::Expand(op),
                _ => candle_core::bail!("expansion is not pointwise"),
            },
            None => match self.stem()? {
                (stem, true) if i == 0 => Source::Stem(stem),
                _ => Source::Input,
            },
        };
        let CpuLayer::Depthwise(depthwise) = cpu_layer(&block.depthwise, "depthwise")? else {
            candle_core::bail!("not a depthwise layer");
        };
        let CpuLayer::Pointwise(project) = cpu_layer(&block.project, "project")? else {
            candle_core::bail!("projection is not pointwise");
        };
        Ok(Block {
            source,
            depthwise,
            project,
            residual: block.residual,
        })
    }

    fn head(&self) -> candle_core::Result<&Pointwise> {
        match cpu_layer(&self.net.head, "head")? {
            CpuLayer::Pointwise(head) => Ok(head),
            _ => candle_core::bail!("the head is not pointwise"),
        }
    }

    /// The head's output shape for an input of shape `dims` (NCHW).
    fn feature_dims(&self, dims: [usize; 4]) -> candle_core::Result<[usize; 4]> {
        let (stem, fused) = self.stem()?;
        let mut d = if fused { dims } else { stem.out_dims(dims)? };
        for i in 0..self.net.blocks.len() {
            d = self.block(i)?.out_dims(d)?;
        }
        self.head()?.out_dims(d)
    }

    /// Runs `images` (each `c * h * w`, CHW) through the network up to [`IMAGES_PER_PASS`] at a
    /// time, each pass split into lanes (see [`lane_sizes`]), handing each pass's head output
    /// (NHWC, `[images][h][w][c]`) to `each`.
    fn passes<I: PassInput + ?Sized>(
        &self,
        images: &[&I],
        [c, h, w]: [usize; 3],
        mut each: impl FnMut(&[f32]) -> candle_core::Result<()>,
    ) -> candle_core::Result<()> {
        let [_, fh, fw, fc] = self.feature_dims([1, c, h, w])?;
        let per_image = fh * fw * fc;
        let mut guard = self
            .net
            .workspace
            .lock()
            .map_err(|_| candle_core::Error::Msg("a forward pass panicked".into()))?;
        let Workspace {
            batch,
            features,
            bodies,
        } = &mut *guard;
        let threads = rayon::current_num_threads();
        for pass in images.chunks(IMAGES_PER_PASS) {
            let k = pass.len();
            if let Some(image) = pass.iter().find(|image| image.len() != c * h * w) {
                candle_core::bail!("an image of {} values, expected {}", image.len(), c * h * w);
            }
            // Normalised into the pass's floats on the compute pool: a pass's images are
            // megabytes, and the pool would otherwise wait for one thread to convert them.
            let batch = grown(batch, k * c * h * w);
            batch
                .par_chunks_exact_mut(c * h * w)
                .zip(pass.par_iter())
                .for_each(|(dst, image)| image.normalise_into(dst));
            let out = grown(features, k * per_image);
            let sizes = lane_sizes(k, threads);
            if bodies.len() < sizes.len() {
                bodies.resize_with(sizes.len(), BodyBuffers::default);
            }
            let mut lanes = Vec::with_capacity(sizes.len());
            let (mut x, mut o) = (&batch[..k * c * h * w], &mut out[..]);
            for (&m, buffers) in sizes.iter().zip(bodies.iter_mut()) {
                let (lane_x, x_rest) = x.split_at(m * c * h * w);
                let (lane_out, o_rest) = std::mem::take(&mut o).split_at_mut(m * per_image);
                lanes.push((buffers, lane_x, lane_out, m));
                (x, o) = (x_rest, o_rest);
            }
            lanes
                .into_par_iter()
                .try_for_each(|(buffers, x, out, m)| self.images(buffers, x, [m, c, h, w], out))?;
            each(out)?;
        }
        Ok(())
    }

    /// Stem to head for the images in `input` (`dims`, NCHW), the head's NHWC output written to
    /// `features`.
    fn images(
        &self,
        buffers: &mut BodyBuffers,
        input: &[f32],
        dims: [usize; 4],
        features: &mut [f32],
    ) -> candle_core::Result<()> {
        let BodyBuffers {
            activations: [cur, next],
            columns,
            layers,
        } = buffers;
        let (stem, fused) = self.stem()?;
        let mut d = dims;
        let mut x = input;
        if !fused {
            d = stem.out_dims(dims)?;
            stem.run_into(input, dims, columns, grown(cur, d.iter().product()))?;
            x = aligned(cur);
        }
        for i in 0..self.net.blocks.len() {
            let block = self.block(i)?;
            let out = block.out_dims(d)?;
            block.run_into(x, d, grown(next, out.iter().product()), layers)?;
            std::mem::swap(cur, next);
            x = aligned(cur);
            d = out;
        }
        self.head()?.run_into(x, d, None, features)?;
        Ok(())
    }
}

/// One CPU forward pass's results for a batch.
#[derive(Debug)]
pub struct CpuOutput {
    /// `[images][classes]`.
    pub logits: Vec<Vec<f32>>,
    /// Each image's last feature map, `[channels][height][width]`.
    pub features: Vec<Vec<f32>>,
    /// `[channels, height, width]`.
    pub feature_dims: [usize; 3],
}

impl EfficientNetLite {
    /// The CPU path without candle tensors around it, for serving: `images` (each `c * h * w`,
    /// CHW) are read where they lie, and each image's feature map is written once, already in
    /// the CHW layout callers keep (through tensors the batch was copied in, and the feature
    /// maps transposed and copied twice more: ~15 % of a Lite0 pass). `None` when the network
    /// runs on candle's ops.
    ///
    /// # Errors
    /// An image of the wrong size, or a failed pass.
    pub fn classify_cpu(
        &self,
        images: &[&[u8]],
        dims: [usize; 3],
    ) -> candle_core::Result<Option<CpuOutput>> {
        let Some(fc) = &self.fc_cpu else {
            return Ok(None);
        };
        let body = CpuBody { net: self };
        let [_, fh, fw, channels] = body.feature_dims([1, dims[0], dims[1], dims[2]])?;
        let cells = fh * fw;
        let mut logits = Vec::with_capacity(images.len());
        let mut features = Vec::with_capacity(images.len());
        let mut pooled = Vec::new();
        let mut scores = Vec::new();
        body.passes(images, dims, |pass| {
            let k = pass.len() / (cells * channels);
            pooled.resize(k * channels, 0.0);
            // Per image, on the compute pool (between two passes it would otherwise idle).
            let pass_features: Vec<Vec<f32>> = pass
                .par_chunks_exact(cells * channels)
                .zip(pooled.par_chunks_exact_mut(channels))
                .map(|(image, pooled)| {
                    average_pool(image, pooled);
                    let mut chw = vec![0f32; cells * channels];
                    for (cell, pixel) in image.chunks_exact(channels).enumerate() {
                        for (ch, &v) in pixel.iter().enumerate() {
                            chw[ch * cells + cell] = v;
                        }
                    }
                    chw
                })
                .collect();
            features.extend(pass_features);
            scores.resize(k * fc.c_out, 0.0);
            fc.run_into(&pooled, [k, 1, 1, channels], None, &mut scores)?;
            logits.extend(scores.chunks_exact(fc.c_out).map(<[f32]>::to_vec));
            Ok(())
        })?;
        Ok(Some(CpuOutput {
            logits,
            features,
            feature_dims: [channels, fh, fw],
        }))
    }

    /// The CPU path: channels-last from the stem (which reads the NCHW input) to the head.
    fn forward_cpu(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let features = x.contiguous()?.apply_op1_no_bwd(&CpuBody { net: self })?;
        let pooled = features.apply_op1_no_bwd(&GlobalAvgPool)?;
        let fc = self
            .fc_cpu
            .as_ref()
            .ok_or_else(|| candle_core::Error::Msg("no CPU classifier".into()))?;
        let (n, channels) = pooled.dims2()?;
        let logits = pooled
            .reshape((n, 1, 1, channels))?
            .apply_op1_no_bwd(fc)?
            .reshape((n, fc.c_out))?;
        Ok((logits, features.permute((0, 3, 1, 2))?))
    }
}

/// Softmax over the last dimension, computed in f32 on the tensor's device.
pub fn softmax(logits: &Tensor) -> candle_core::Result<Tensor> {
    let max = logits.max_keepdim(D::Minus1)?;
    let e = logits.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{normalised, ModelKind};

    fn weights(kind: ModelKind) -> Weights {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("weights")
            .join(kind.weights_file());
        candle_core::safetensors::load(path, &Device::Cpu).expect("weights")
    }

    /// A smooth, non-constant batch of two images' 8-bit levels, so that every tap and both
    /// images matter.
    fn levels(size: usize) -> Vec<u8> {
        (0..2 * 3 * size * size)
            .map(|i| (((i % 977) as f32 * 0.013).sin() * 127.5 + 127.5) as u8)
            .collect()
    }

    /// [`levels`] normalised, as the network's input tensor.
    fn input(size: usize) -> Tensor {
        let data: Vec<f32> = levels(size).into_iter().map(normalised).collect();
        Tensor::from_vec(data, (2, 3, size, size), &Device::Cpu).expect("input")
    }

    /// The largest absolute difference between two equally long slices.
    fn worst(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>())
            .expect("diff")
    }

    /// The paths GPUs take compute the same network as the CPU's own ops: candle's NCHW ops
    /// (Metal: batched-matmul pointwise, tap-sum depthwise, parity phases for stride 2) and the
    /// channels-last graph (CUDA: one GEMM per 1x1 convolution, its weight layouts, the fused
    /// residual, the kernels' arithmetic in their CPU versions). Run here on the CPU, so CI
    /// checks the GPU arithmetic without a GPU (the CUDA kernels' own indexing is checked where
    /// a GPU is: `examples/forward --device cuda` compares with the CPU first). Lite2 has 5x5
    /// stride-2 layers and odd sizes (260 -> 130 -> 65 -> 33 -> 17 -> 9) that Lite0 lacks.
    #[test]
    fn candle_ops_compute_what_the_cpu_ops_compute() {
        let cpu = &Device::Cpu;
        let dtype = DType::F32;
        for kind in [ModelKind::EfficientNetLite0, ModelKind::EfficientNetLite2] {
            let weights = weights(kind);
            let x = input(kind.input_size() as usize);
            let fast = EfficientNetLite::build(&weights, Ops::Cpu).expect("cpu ops");
            let (fast_logits, fast_features) = fast.forward(&x).expect("cpu forward");
            let fast_features = fast_features.contiguous().expect("features");
            for (graph, ops) in [
                ("NCHW", Ops::Candle { device: cpu, dtype }),
                ("channels-last", Ops::ChannelsLast { device: cpu, dtype }),
            ] {
                let net = EfficientNetLite::build(&weights, ops).expect(graph);
                let (logits, features) = net.forward(&x).expect(graph);
                assert_eq!(features.dims(), fast_features.dims(), "{kind} {graph}");
                let d = max_diff(&logits, &fast_logits);
                assert!(d < 1e-3, "{kind} {graph}: logits differ by {d}");
                let d = max_diff(&features, &fast_features);
                assert!(d < 1e-3, "{kind} {graph}: features differ by {d}");
            }
            // The serving path (no tensors) returns the same logits and CHW feature maps.
            let size = kind.input_size() as usize;
            let flat = levels(size);
            let images: Vec<&[u8]> = flat.chunks_exact(3 * size * size).collect();
            let out = fast
                .classify_cpu(&images, [3, size, size])
                .expect("classify_cpu")
                .expect("the CPU ops");
            assert_eq!(out.logits.len(), images.len());
            let [c, h, w] = out.feature_dims;
            assert_eq!(fast_features.dims(), [images.len(), c, h, w]);
            let want_logits = fast_logits.to_vec2::<f32>().expect("logits");
            let want_features = fast_features.flatten_all().and_then(|t| t.to_vec1::<f32>());
            let want_features = want_features.expect("features");
            for (i, (got_logits, got_features)) in out.logits.iter().zip(&out.features).enumerate()
            {
                let d = worst(got_logits, &want_logits[i]);
                assert!(d < 1e-3, "{kind}: classify_cpu logits differ by {d}");
                let d = worst(got_features, &want_features[i * c * h * w..][..c * h * w]);
                assert!(d < 1e-3, "{kind}: classify_cpu features differ by {d}");
            }
        }
    }

    /// Split into lanes (one per thread, each image in exactly one) or not, a batch computes
    /// the same logits and feature maps: 5 images on 1, 2 and 3 threads (lanes of 5; 2 + 3;
    /// 1 + 2 + 2), against the images one at a time.
    #[test]
    fn lanes_compute_what_one_lane_computes() {
        assert_eq!(lane_sizes(5, 3), [1, 2, 2]);
        assert_eq!(lane_sizes(8, 2), [4, 4]);
        assert_eq!(lane_sizes(1, 2), [1]);
        assert_eq!(lane_sizes(3, 4), [3]);
        assert_eq!(lane_sizes(0, 2), [0]);
        let kind = ModelKind::EfficientNetLite0;
        let net = EfficientNetLite::build(&weights(kind), Ops::Cpu).expect("cpu ops");
        let size = kind.input_size() as usize;
        let per_image = 3 * size * size;
        let flat: Vec<u8> = (0..5 * per_image)
            .map(|i| (((i % 1009) as f32 * 0.017).sin() * 127.5 + 127.5) as u8)
            .collect();
        let images: Vec<&[u8]> = flat.chunks_exact(per_image).collect();
        let classify = |threads: usize, images: &[&[u8]]| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("pool");
            pool.install(|| net.classify_cpu(images, [3, size, size]))
                .expect("classify_cpu")
                .expect("the CPU ops")
        };
        let single: Vec<CpuOutput> = images.iter().map(|&x| classify(1, &[x])).collect();
        for threads in [1, 2, 3] {
            let out = classify(threads, &images);
            for (i, want) in single.iter().enumerate() {
                let d = worst(&out.logits[i], &want.logits[0]);
                assert!(
                    d < 1e-5,
                    "{threads} threads, image {i}: logits differ by {d}"
                );
                let d = worst(&out.features[i], &want.features[0]);
                assert!(
                    d < 1e-5,
                    "{threads} threads, image {i}: features differ by {d}"
                );
            }
        }
    }

    /// The f16 graph (what `--precision f16` runs on a GPU) holds together: every op gets the
    /// dtype it expects, the outputs come back in f32, and the answer stays the same.
    #[test]
    fn the_candle_ops_run_in_half_precision() {
        let kind = ModelKind::EfficientNetLite0;
        let weights = weights(kind);
        let x = input(kind.input_size() as usize);
        let fast = EfficientNetLite::build(&weights, Ops::Cpu).expect("cpu ops");
        let half = EfficientNetLite::build(
            &weights,
            Ops::Candle {
                device: &Device::Cpu,
                dtype: DType::F16,
            },
        )
        .expect("f16 ops");
        let (want, _) = fast.forward(&x).expect("cpu forward");
        let (got, features) = half.forward(&x).expect("f16 forward");
        assert_eq!((got.dtype(), features.dtype()), (DType::F32, DType::F32));
        let d = max_diff(&got, &want);
        assert!(d < 0.25, "f16 logits differ by {d}");
        let top = |t: &Tensor| {
            t.argmax(1)
                .and_then(|a| a.to_vec1::<u32>())
                .expect("argmax")
        };
        assert_eq!(top(&got), top(&want));
    }

    #[test]
    fn half_precision_is_refused_on_the_cpu() {
        let weights = weights(ModelKind::EfficientNetLite0);
        let err = EfficientNetLite::from_weights(&weights, &Device::Cpu, DType::F16)
            .expect_err("f16 on the CPU");
        assert!(err.to_string().contains("needs a GPU"), "{err}");
    }
}
