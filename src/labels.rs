//! From a model prediction to the labels of one image: taxonomy aggregation (class → group →
//! category), threshold, ordering, language and CentricScore. Pure and cheap (microseconds);
//! callable from any thread.

use serde::Serialize;

use crate::centric::{activation_map, centric_score};
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
}

impl Default for LabelOptions {
    fn default() -> Self {
        LabelOptions {
            threshold: DEFAULT_THRESHOLD,
            language: Language::En,
            max_labels: None,
        }
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
}

/// The body of an answer, exactly IMM's `{"Labels":[...],"RequestId":"..."}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct LabelsResponse {
    pub labels: Vec<Label>,
    pub request_id: String,
}

/// The labels of one prediction, most confident first.
///
/// Every label whose confidence reaches `options.threshold` is returned; because a parent's
/// confidence is the sum of its children's, the ancestors of a returned label are returned too.
/// Ties keep parents before children so the order is stable.
pub fn labels_for(
    taxonomy: &Taxonomy,
    head: &ClassifierHead,
    prediction: &Prediction,
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
            }
        })
        .collect()
}
