//! The labelling pipeline in one process: bytes → decoded, preprocessed input → model → labels.
//!
//! [`Labeler`] owns the model and the taxonomy. Its steps are separate methods because they run in
//! different places: [`Labeler::prepare`] on any worker thread, [`Labeler::label`] (the forward
//! pass) on the one thread that owns the model. The CLI calls both in turn; the servers put a
//! batcher between them.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};

use crate::image::{
    decode_and_prepare, ColourNames, DecodeError, ImageLimits, ModelInput, Prepared,
};
use crate::labels::{labels_for, Label, LabelOptions};
use crate::model::{Classifier, LiteClassifier, ModelError, ModelKind, Prediction};
use crate::taxonomy::{Taxonomy, TaxonomyError};

/// File name of the taxonomy inside the weights directory.
pub const TAXONOMY_FILE: &str = "taxonomy.json";

/// What a [`Labeler`] is built from.
#[derive(Debug, Clone)]
pub struct LabelerConfig {
    pub weights_dir: PathBuf,
    pub model: ModelKind,
    pub device: Device,
    /// Compute precision: f32 on the CPU; f32, f16 or bf16 on a GPU.
    pub precision: DType,
    pub limits: ImageLimits,
}

/// Why a [`Labeler`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Taxonomy(#[from] TaxonomyError),
}

/// Model + taxonomy + limits: everything needed to label an image.
pub struct Labeler {
    model: Box<dyn Classifier>,
    taxonomy: Taxonomy,
    limits: ImageLimits,
}

impl Labeler {
    /// Loads the model and the taxonomy and checks that they agree on the class count.
    ///
    /// # Errors
    /// [`LoadError`] when a file is missing or inconsistent.
    pub fn load(config: &LabelerConfig) -> Result<Labeler, LoadError> {
        let model = LiteClassifier::load(
            config.model,
            &config.weights_dir,
            &config.device,
            config.precision,
        )?;
        let taxonomy = Taxonomy::load(&config.weights_dir.join(TAXONOMY_FILE))?;
        Labeler::new(Box::new(model), taxonomy, config.limits)
    }

    /// Assembles a labeler from parts (tests use this with a small taxonomy or another model).
    ///
    /// # Errors
    /// [`LoadError::Taxonomy`] when the taxonomy does not cover the model's classes.
    pub fn new(
        model: Box<dyn Classifier>,
        taxonomy: Taxonomy,
        limits: ImageLimits,
    ) -> Result<Labeler, LoadError> {
        taxonomy.check_class_count(model.head().classes)?;
        Ok(Labeler {
            model,
            taxonomy,
            limits,
        })
    }

    /// The model.
    pub fn model(&self) -> &dyn Classifier {
        self.model.as_ref()
    }

    /// The taxonomy.
    pub fn taxonomy(&self) -> &Taxonomy {
        &self.taxonomy
    }

    /// The image limits enforced by [`Labeler::prepare`].
    pub fn limits(&self) -> &ImageLimits {
        &self.limits
    }

    /// Validates, decodes and preprocesses one encoded image. CPU-bound; call it off the async
    /// runtime.
    ///
    /// # Errors
    /// [`DecodeError`] for anything wrong with the image.
    pub fn prepare(&self, bytes: &[u8]) -> Result<ModelInput, DecodeError> {
        Ok(self.prepare_with(bytes, None)?.input)
    }

    /// [`Labeler::prepare`], also measuring the image's properties when `properties` names the
    /// language of colour names.
    ///
    /// # Errors
    /// [`DecodeError`] for anything wrong with the image.
    pub fn prepare_with(
        &self,
        bytes: &[u8],
        properties: Option<ColourNames>,
    ) -> Result<Prepared, DecodeError> {
        let size = self.model.kind().input_size();
        decode_and_prepare(bytes, &self.limits, size, properties)
    }

    /// Runs the model on a batch of prepared inputs.
    ///
    /// # Errors
    /// [`ModelError`] when the forward pass fails.
    pub fn predict(&self, inputs: &[&ModelInput]) -> Result<Vec<Prediction>, ModelError> {
        let batch: Vec<&[u8]> = inputs.iter().map(|i| i.pixels.as_slice()).collect();
        self.model.classify(&batch)
    }

    /// Turns one prediction of `input` into labels.
    pub fn labels(
        &self,
        input: &ModelInput,
        prediction: &Prediction,
        options: &LabelOptions,
    ) -> Vec<Label> {
        labels_for(
            &self.taxonomy,
            self.model.head(),
            prediction,
            &input.geometry,
            options,
        )
    }

    /// Runs the model on a batch and returns each image's labels.
    ///
    /// # Errors
    /// [`ModelError`] when the forward pass fails.
    pub fn label(
        &self,
        inputs: &[&ModelInput],
        options: &LabelOptions,
    ) -> Result<Vec<Vec<Label>>, ModelError> {
        Ok(self
            .predict(inputs)?
            .iter()
            .zip(inputs)
            .map(|(p, input)| self.labels(input, p, options))
            .collect())
    }
}

/// The weights directory used when none is configured: `./weights` when it exists (a checkout or
/// an image's working directory), else the one this binary was built from.
pub fn default_weights_dir() -> PathBuf {
    let local = Path::new("weights");
    if local.join(TAXONOMY_FILE).exists() {
        local.to_path_buf()
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("weights")
    }
}
