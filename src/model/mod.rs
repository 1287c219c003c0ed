//! The model: the only module that knows candle.
//!
//! [`Classifier`] is the small interface the rest of the service sees (input size, 8-bit CHW
//! levels from `image` in, probabilities + last feature map out), so another candle
//! classifier can be added here without touching the pipeline or the front doors. Its methods are
//! blocking and must run on the model's own OS thread, never on the async runtime.

mod aligned;
mod block;
mod channels_last;
#[cfg(feature = "cuda")]
mod cuda_ops;
mod depthwise512;
mod device;
mod efficientnet_lite;
mod nhwc;
mod pointwise512;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

pub use device::{init_threads, parse_device, parse_precision, DeviceError};
pub use efficientnet_lite::EfficientNetLite;

/// EfficientNet-Lite's input normalisation of one 8-bit level, `(x - 127) / 128`, applied where
/// the model reads its input (the CPU's copy into the pass, the GPU after the upload), so that
/// images travel from the decoder to the model as a quarter of the bytes. Exact in f32: the
/// subtraction is an integer and the division a power of two.
pub fn normalised(level: u8) -> f32 {
    (f32::from(level) - 127.0) / 128.0
}

/// [`normalised`] on a tensor of levels, on its device, as f32: x / 128 - 127 / 128, exact in
/// f32 as (x - 127) / 128 is, so the same floats.
fn normalised_tensor(levels: &Tensor) -> candle_core::Result<Tensor> {
    levels
        .to_dtype(DType::F32)?
        .affine(1.0 / 128.0, -127.0 / 128.0)
}

/// Models this build knows how to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelKind {
    EfficientNetLite0,
    EfficientNetLite2,
}

impl ModelKind {
    /// All known models, default first.
    pub const ALL: [ModelKind; 2] = [ModelKind::EfficientNetLite2, ModelKind::EfficientNetLite0];

    /// Public name, used by `--model`, in replies and in metrics.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::EfficientNetLite0 => "efficientnet-lite0",
            ModelKind::EfficientNetLite2 => "efficientnet-lite2",
        }
    }

    /// Square input side in pixels.
    pub fn input_size(self) -> u32 {
        match self {
            ModelKind::EfficientNetLite0 => 224,
            ModelKind::EfficientNetLite2 => 260,
        }
    }

    /// File name under the weights directory.
    pub fn weights_file(self) -> &'static str {
        match self {
            ModelKind::EfficientNetLite0 => "efficientnet_lite0.safetensors",
            ModelKind::EfficientNetLite2 => "efficientnet_lite2.safetensors",
        }
    }

    /// Parses `efficientnet-lite0`, `lite0`, `efficientnet-lite2`, `lite2`.
    pub fn from_name(name: &str) -> Option<ModelKind> {
        let name = name.trim().to_ascii_lowercase();
        let short = name.strip_prefix("efficientnet-").unwrap_or(&name);
        match short {
            "lite0" => Some(ModelKind::EfficientNetLite0),
            "lite2" => Some(ModelKind::EfficientNetLite2),
            _ => None,
        }
    }
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot load weights from {path}: {source}")]
    Load {
        path: PathBuf,
        #[source]
        source: candle_core::Error,
    },
    #[error("the weights have no tensor named {0}")]
    MissingTensor(String),
    #[error("the weights do not have an EfficientNet-Lite layout: {0}")]
    Layout(&'static str),
    #[error("expected {expected} input values per image, got {got}")]
    InputSize { expected: usize, got: usize },
    #[error("{0:?} needs a GPU device: the CPU computes in f32")]
    Precision(candle_core::DType),
    #[error("model computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// The last feature map of one image, CHW, on the CPU.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureMap {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// `channels * height * width` values.
    pub data: Vec<f32>,
}

/// What the model says about one image.
#[derive(Debug, Clone)]
pub struct Prediction {
    pub logits: Vec<f32>,
    /// Softmax of `logits`.
    pub probabilities: Vec<f32>,
    pub features: FeatureMap,
}

/// The linear classifier after global average pooling, copied to the CPU: class activation maps
/// are this weight matrix applied to the feature map.
#[derive(Debug, Clone)]
pub struct ClassifierHead {
    pub classes: usize,
    pub channels: usize,
    /// `classes * channels`, row-major.
    pub weight: Vec<f32>,
}

impl ClassifierHead {
    /// Row `class` of the weight matrix.
    pub fn row(&self, class: usize) -> &[f32] {
        &self.weight[class * self.channels..(class + 1) * self.channels]
    }
}

/// An image classifier with a GAP + linear head.
pub trait Classifier: Send + Sync {
    /// Which model this is.
    fn kind(&self) -> ModelKind;
    /// The device it runs on.
    fn device(&self) -> &Device;
    /// The classifier weights, for class activation maps.
    fn head(&self) -> &ClassifierHead;
    /// Runs a batch of preprocessed images (`3 * size * size` CHW 8-bit levels each, not yet
    /// normalised: see [`normalised`]).
    ///
    /// # Errors
    /// [`ModelError::InputSize`] for a wrongly sized input; [`ModelError::Candle`] when the
    /// computation fails.
    fn classify(&self, batch: &[&[u8]]) -> Result<Vec<Prediction>, ModelError>;
}

/// Softmax of one image's logits, in f32 (what [`efficientnet_lite::softmax`] computes on a
/// device).
fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

/// EfficientNet-Lite behind the [`Classifier`] interface.
#[derive(Debug)]
pub struct LiteClassifier {
    kind: ModelKind,
    device: Device,
    net: EfficientNetLite,
    head: ClassifierHead,
    /// On a GPU, the host buffers a batch goes through.
    staging: std::sync::Mutex<Staging>,
}

/// The host buffers of a GPU batch, reused from one call to the next: a batch of 256 Lite0
/// images is 38.5 MB of levels (64 images' feature maps 16 MB), past glibc's largest mmap
/// threshold (32 MB) or near it, so a fresh buffer would be a fresh mapping, page-faulted in on
/// every call. On CUDA they are page-locked, as PyTorch's are.
#[derive(Debug, Default)]
struct Staging {
    /// The batch before it is uploaded (Metal).
    host: Vec<u8>,
    /// The batch's upload and the feature maps' download (CUDA).
    #[cfg(feature = "cuda")]
    pinned: cuda_ops::PinnedBuffers,
}

impl LiteClassifier {
    fn staging(&self) -> std::sync::MutexGuard<'_, Staging> {
        self.staging
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl LiteClassifier {
    /// Loads `kind` from `weights_dir` onto `device`, to compute in `dtype` (f32 on the CPU;
    /// f32, f16 or bf16 on a GPU).
    ///
    /// # Errors
    /// [`ModelError::Load`] when the file is missing or unreadable, a layout error, or
    /// [`ModelError::Precision`] for half precision on the CPU.
    pub fn load(
        kind: ModelKind,
        weights_dir: &Path,
        device: &Device,
        dtype: DType,
    ) -> Result<Self, ModelError> {
        let path = weights_dir.join(kind.weights_file());
        // Loaded on the CPU first: BatchNorm folding is done once there, then moved.
        let tensors = candle_core::safetensors::load(&path, &Device::Cpu)
            .map_err(|source| ModelError::Load { path, source })?;
        let net = EfficientNetLite::from_weights(&tensors, device, dtype)?;
        #[cfg(feature = "cuda")]
        if let Device::Cuda(cuda) = device {
            cuda_ops::keep_freed_memory(cuda)?;
        }
        let (w, _) = net.classifier();
        let (classes, channels) = w.dims2()?;
        let head = ClassifierHead {
            classes,
            channels,
            weight: w
                .to_dtype(DType::F32)?
                .to_device(&Device::Cpu)?
                .flatten_all()?
                .to_vec1::<f32>()?,
        };
        Ok(LiteClassifier {
            kind,
            device: device.clone(),
            net,
            head,
            staging: std::sync::Mutex::default(),
        })
    }
}

impl Classifier for LiteClassifier {
    fn kind(&self) -> ModelKind {
        self.kind
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn head(&self) -> &ClassifierHead {
        &self.head
    }

    fn classify(&self, batch: &[&[u8]]) -> Result<Vec<Prediction>, ModelError> {
        self.classify_timed(batch)
            .map(|(predictions, _)| predictions)
    }
}

/// Where the wall-clock time of one [`LiteClassifier::classify_timed`] call went. On a GPU each
/// phase ends at a point where the host waits for the device anyway (the upload's copy, the
/// logits' download, the feature maps' download), so timing them adds no synchronisation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Phases {
    /// Copying the images into the device's input (host copy and upload); 0 on the CPU.
    pub upload: std::time::Duration,
    /// The forward pass, softmax and the logits and probabilities back on the host (the whole
    /// call on the CPU).
    pub compute: std::time::Duration,
    /// The feature maps back on the host, one per image; 0 on the CPU.
    pub download: std::time::Duration,
}

impl std::ops::AddAssign for Phases {
    fn add_assign(&mut self, other: Phases) {
        self.upload += other.upload;
        self.compute += other.compute;
        self.download += other.download;
    }
}

impl LiteClassifier {
    /// [`Classifier::classify`], also saying where its time went (examples/forward reports it,
    /// so the GPU figures show how much of a call is transfers).
    ///
    /// # Errors
    /// As [`Classifier::classify`].
    pub fn classify_timed(&self, batch: &[&[u8]]) -> Result<(Vec<Prediction>, Phases), ModelError> {
        let mut phases = Phases::default();
        if batch.is_empty() {
            return Ok((Vec::new(), phases));
        }
        let started = std::time::Instant::now();
        let size = self.kind.input_size() as usize;
        let per_image = 3 * size * size;
        if let Some(image) = batch.iter().find(|image| image.len() != per_image) {
            return Err(ModelError::InputSize {
                expected: per_image,
                got: image.len(),
            });
        }
        if let Some(out) = self.net.classify_cpu(batch, [3, size, size])? {
            let probabilities = out.logits.iter().map(|l| softmax(l)).collect();
            phases.compute = started.elapsed();
            let predictions =
                predictions(out.logits, probabilities, out.features, out.feature_dims);
            return Ok((predictions, phases));
        }
        let shape = (batch.len(), 3, size, size);
        let levels = match &self.device {
            #[cfg(feature = "cuda")]
            Device::Cuda(cuda) => self.staging().pinned.upload(cuda, batch, shape.into())?,
            _ => {
                let staging = &mut self.staging().host;
                staging.clear();
                for image in batch {
                    staging.extend_from_slice(image);
                }
                Tensor::from_slice(staging, shape, &self.device)?
            }
        };
        phases.upload = started.elapsed();
        let (logits, features) = self.net.forward(&normalised_tensor(&levels)?)?;
        let probabilities = efficientnet_lite::softmax(&logits)?;
        let logits = logits.to_device(&Device::Cpu)?.to_vec2::<f32>()?;
        let probabilities = probabilities.to_device(&Device::Cpu)?.to_vec2::<f32>()?;
        phases.compute = started.elapsed() - phases.upload;
        let (_, channels, height, width) = features.dims4()?;
        let plane = channels * height * width;
        let per_image = |all: &[f32]| all.chunks_exact(plane).map(<[f32]>::to_vec).collect();
        let features = features.to_dtype(candle_core::DType::F32)?.contiguous()?;
        let features: Vec<Vec<f32>> = match &self.device {
            #[cfg(feature = "cuda")]
            Device::Cuda(_) => per_image(self.staging().pinned.download(&features)?),
            _ => per_image(
                &features
                    .to_device(&Device::Cpu)?
                    .flatten_all()?
                    .to_vec1::<f32>()?,
            ),
        };
        let predictions = predictions(logits, probabilities, features, [channels, height, width]);
        phases.download = started.elapsed() - phases.upload - phases.compute;
        Ok((predictions, phases))
    }
}

/// One [`Prediction`] per image from the batch's logits, probabilities and feature maps (each
/// `[channels, height, width]` = `dims`, CHW).
fn predictions(
    logits: Vec<Vec<f32>>,
    probabilities: Vec<Vec<f32>>,
    features: Vec<Vec<f32>>,
    [channels, height, width]: [usize; 3],
) -> Vec<Prediction> {
    logits
        .into_iter()
        .zip(probabilities)
        .zip(features)
        .map(|((logits, probabilities), data)| Prediction {
            logits,
            probabilities,
            features: FeatureMap {
                channels,
                height,
                width,
                data,
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_normalise_to_about_minus_one_to_one() {
        assert_eq!(normalised(255), 1.0);
        assert_eq!(normalised(127), 0.0);
        assert_eq!(normalised(0), -127.0 / 128.0);
    }

    /// The GPU path normalises with candle's ops: the same floats as [`normalised`], for every
    /// level.
    #[test]
    fn the_device_normalisation_gives_the_same_floats() {
        let levels: Vec<u8> = (0..=255).collect();
        let on_device = Tensor::from_slice(&levels, 256, &Device::Cpu)
            .and_then(|t| normalised_tensor(&t))
            .and_then(|t| t.to_vec1::<f32>())
            .expect("normalised");
        let here: Vec<f32> = levels.into_iter().map(normalised).collect();
        assert_eq!(on_device, here);
    }
}
