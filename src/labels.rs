//! From a model prediction to the labels of one image: taxonomy aggregation (class → group →
//! category), threshold, ordering, language and CentricScore. Pure and cheap (microseconds);
//! callable from any thread.

use serde::Serialize;

use crate::centric::{activation_map, centric_score};
use crate::explain::{explain, Heatmap, PixelBox};
use crate::image::{ColourNames, CropGeometry, ImageProperties};
use crate::model::{ClassifierHead, Prediction};
use crate::taxonomy::{Language, Taxonomy};

/// Default confidence threshold (`thr_70`): what IMM returns when no threshold is given.
pub const DEFAULT_THRESHOLD: f32 = 0.70;

/// What the caller asked for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LabelOptions {
    /// Labels with a lower confidence are left out (0..=1).
    pub threshold: f32,
    pub language: Language,
    /// At most this many labels, the most confident first; `None` for all.
    pub max_labels: Option<usize>,
    /// Add each label's heatmap and bounding box ([`crate::explain`]).
    pub explain: bool,
    /// Measure the image's [`ImageProperties`] (colours, brightness, sharpness, contrast).
    pub properties: bool,
}

impl Default for LabelOptions {
    fn default() -> Self {
        LabelOptions {
            threshold: DEFAULT_THRESHOLD,
            language: Language::En,
            max_labels: None,
            explain: false,
            properties: false,
        }
    }
}

impl LabelOptions {
    /// The language to name colours in, when image properties were asked for.
    pub fn colour_names(&self) -> Option<ColourNames> {
        self.properties.then_some(match self.language {
            Language::En => ColourNames::English,
            Language::ZhHans => ColourNames::Chinese,
        })
    }
}

/// One label of an answer, with the field names of Alibaba IMM's `DetectImageLabels`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Label {
    pub label_name: String,
    pub label_confidence: f32,
    /// 1 = category, 2 = group, 3 = fine label.
    pub label_level: u8,
    /// Empty for categories.
    pub parent_label_name: String,
    pub centric_score: f32,
    /// BCP 47 tag of the names.
    pub language: &'static str,
    /// Where the label is, in the original image's pixels; only when explanations were asked
    /// for and the label's map has positive evidence (IMM has no such field: absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bounding_box: Option<PixelBox>,
    /// The label's activation map; only when explanations were asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heatmap: Option<Heatmap>,
}

/// The body of an answer, exactly IMM's `{"Labels":[...],"RequestId":"..."}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct LabelsResponse {
    pub labels: Vec<Label>,
    pub request_id: String,
    /// Only when asked for (not an IMM field: absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_properties: Option<ImageProperties>,
}

/// The labels of one prediction, most confident first.
///
/// Every label whose confidence reaches `options.threshold` is returned; because a parent's
/// confidence is the sum of its children's, the ancestors of a returned label are returned too.
/// Ties keep parents before children so the order is stable. With `options.explain`, each label
/// carries its heatmap and box, mapped to the original image through `geometry`.
pub fn labels_for(
    taxonomy: &Taxonomy,
    head: &ClassifierHead,
    prediction: &Prediction,
    geometry: &CropGeometry,
    options: &LabelOptions,
) -> Vec<Label> {
    let confidences = taxonomy.confidences(&prediction.probabilities);
    let mut chosen: Vec<usize> = (0..confidences.len())
        .filter(|&i| confidences[i] >= options.threshold)
        .collect();
    let all = taxonomy.labels();
    chosen.sort_by(|&a, &b| {
        confidences[b]
            .total_cmp(&confidences[a])
            .then(all[a].level.cmp(&all[b].level))
            .then(a.cmp(&b))
    });
    if let Some(max) = options.max_labels {
        chosen.truncate(max);
    }
    let features = &prediction.features;
    chosen
        .into_iter()
        .map(|i| {
            let label = &all[i];
            let weighted = label
                .classes
                .iter()
                .map(|&c| (c, prediction.probabilities[c]));
            let map = activation_map(head, features, weighted);
            let explanation = options
                .explain
                .then(|| explain(&map, features.height, features.width, geometry));
            let (bounding_box, heatmap) = match explanation {
                Some(e) => (e.bounding_box, Some(e.heatmap)),
                None => (None, None),
            };
            Label {
                label_name: label.name(options.language).to_string(),
                label_confidence: confidences[i],
                label_level: label.level,
                parent_label_name: label
                    .parent
                    .map(|p| all[p].name(options.language).to_string())
                    .unwrap_or_default(),
                centric_score: centric_score(&map, features.height, features.width),
                language: options.language.tag(),
                bounding_box,
                heatmap,
            }
        })
        .collect()
}
