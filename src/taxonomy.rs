//! The label hierarchy: category (level 1) > group (level 2) > fine label (level 3).
//!
//! Read from `weights/taxonomy.json`, which `weights/taxonomy/build_taxonomy.py` generates from
//! WordNet 3.0 and the ImageNet-1k synset list; the service only reads it. Everything that could
//! go wrong with it (a class without a label, a parent that does not exist, a missing name, two
//! labels with the same name) is checked once here at start-up, so lookups at request time are
//! plain indexing that cannot fail.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Languages every label is named in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Language {
    #[default]
    En,
    ZhHans,
}

impl Language {
    /// Every supported language.
    pub const ALL: [Language; 2] = [Language::En, Language::ZhHans];

    /// BCP 47 tag as used on the wire (`Language` field of a label).
    pub fn tag(self) -> &'static str {
        match self {
            Language::En => "en",
            Language::ZhHans => "zh-Hans",
        }
    }

    /// Parses a BCP 47 tag; accepts the common spellings `zh-hans`, `zh-CN`, `zh`.
    pub fn from_tag(tag: &str) -> Option<Language> {
        match tag.trim().to_ascii_lowercase().as_str() {
            "en" | "en-us" | "en-gb" => Some(Language::En),
            "zh-hans" | "zh" | "zh-cn" | "zh-sg" | "zh-hans-cn" => Some(Language::ZhHans),
            _ => None,
        }
    }

    fn index(self) -> usize {
        match self {
            Language::En => 0,
            Language::ZhHans => 1,
        }
    }
}

impl std::fmt::Display for Language {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.tag())
    }
}

/// Why the taxonomy file was refused.
#[derive(Debug, thiserror::Error)]
pub enum TaxonomyError {
    #[error("cannot read taxonomy {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("taxonomy is not valid JSON of the expected shape: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("taxonomy is inconsistent: {0}")]
    Invalid(String),
    #[error("taxonomy has {taxonomy} classes but the model predicts {model}")]
    ClassCount { taxonomy: usize, model: usize },
}

/// One node of the hierarchy.
#[derive(Debug, Clone)]
pub struct TaxonomyLabel {
    /// Stable identifier (`category:animal`, `group:dog`, or a WordNet id such as `n02099601`).
    pub id: String,
    /// 1 = category, 2 = group, 3 = fine label.
    pub level: u8,
    /// Index of the parent label; `None` for categories.
    pub parent: Option<usize>,
    /// Model classes under this label (itself, for a class label), in class order.
    pub classes: Vec<usize>,
    /// The model class this label *is*, for leaves.
    pub class: Option<usize>,
    names: [String; 2],
}

impl TaxonomyLabel {
    /// The label's name in `language`.
    pub fn name(&self, language: Language) -> &str {
        &self.names[language.index()]
    }
}

/// The whole hierarchy, checked.
#[derive(Debug, Clone)]
pub struct Taxonomy {
    version: String,
    labels: Vec<TaxonomyLabel>,
    /// Label index of each model class.
    class_labels: Vec<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTaxonomy {
    version: String,
    num_classes: usize,
    labels: Vec<RawLabel>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLabel {
    id: String,
    level: u8,
    parent: Option<String>,
    en: String,
    #[serde(rename = "zh-Hans")]
    zh_hans: String,
    #[serde(default)]
    wordnet: Option<String>,
    #[serde(default)]
    class: Option<usize>,
}

impl Taxonomy {
    /// Reads and checks a taxonomy file.
    ///
    /// # Errors
    /// [`TaxonomyError`] when the file cannot be read or is inconsistent.
    pub fn load(path: &Path) -> Result<Taxonomy, TaxonomyError> {
        let text = std::fs::read_to_string(path).map_err(|source| TaxonomyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Taxonomy::from_json(&text)
    }

    /// Parses and checks a taxonomy from its JSON text.
    ///
    /// # Errors
    /// [`TaxonomyError`] naming the first inconsistency found.
    pub fn from_json(text: &str) -> Result<Taxonomy, TaxonomyError> {
        let raw: RawTaxonomy = serde_json::from_str(text)?;
        let invalid = |msg: String| Err(TaxonomyError::Invalid(msg));
        let mut index_of: HashMap<&str, usize> = HashMap::new();
        let mut labels: Vec<TaxonomyLabel> = Vec::with_capacity(raw.labels.len());
        let mut class_labels = vec![usize::MAX; raw.num_classes];
        let mut seen_names: [HashSet<&str>; 2] = [HashSet::new(), HashSet::new()];
        for (i, label) in raw.labels.iter().enumerate() {
            let _ = &label.wordnet;
            if index_of.insert(label.id.as_str(), i).is_some() {
                return invalid(format!("duplicate id {}", label.id));
            }
            if !(1..=3).contains(&label.level) {
                return invalid(format!("{} has level {}", label.id, label.level));
            }
            let parent = match (&label.parent, label.level) {
                (None, 1) => None,
                (None, _) => return invalid(format!("{} has no parent", label.id)),
                (Some(_), 1) => return invalid(format!("category {} has a parent", label.id)),
                (Some(p), level) => match index_of.get(p.as_str()) {
                    Some(&pi) if labels[pi].level + 1 == level => Some(pi),
                    Some(_) => return invalid(format!("{} is not one level below {p}", label.id)),
                    None => {
                        return invalid(format!(
                            "{}'s parent {p} is not listed before it",
                            label.id
                        ))
                    }
                },
            };
            for (lang, name) in [&label.en, &label.zh_hans].into_iter().enumerate() {
                if name.trim().is_empty() {
                    return invalid(format!("{} has no {} name", label.id, Language::ALL[lang]));
                }
                if !seen_names[lang].insert(name.as_str()) {
                    return invalid(format!("two labels are named {name:?}"));
                }
            }
            if let Some(class) = label.class {
                match class_labels.get_mut(class) {
                    Some(slot) if *slot == usize::MAX => *slot = i,
                    Some(_) => return invalid(format!("class {class} appears twice")),
                    None => return invalid(format!("class {class} is out of range")),
                }
                if label.level == 1 {
                    return invalid(format!("class {class} is a category"));
                }
            }
            labels.push(TaxonomyLabel {
                id: label.id.clone(),
                level: label.level,
                parent,
                classes: Vec::new(),
                class: label.class,
                names: [label.en.clone(), label.zh_hans.clone()],
            });
        }
        if let Some(missing) = class_labels.iter().position(|&l| l == usize::MAX) {
            return invalid(format!("class {missing} has no label"));
        }
        for (class, &leaf) in class_labels.iter().enumerate() {
            let mut at = Some(leaf);
            while let Some(i) = at {
                labels[i].classes.push(class);
                at = labels[i].parent;
            }
        }
        for label in &labels {
            if label.classes.is_empty() {
                return invalid(format!("{} has no classes under it", label.id));
            }
            if label.class.is_some() && label.classes.len() != 1 {
                return invalid(format!("class label {} has children", label.id));
            }
        }
        Ok(Taxonomy {
            version: raw.version,
            labels,
            class_labels,
        })
    }

    /// Fails unless the taxonomy covers exactly the model's classes.
    ///
    /// # Errors
    /// [`TaxonomyError::ClassCount`].
    pub fn check_class_count(&self, model_classes: usize) -> Result<(), TaxonomyError> {
        if self.class_labels.len() == model_classes {
            Ok(())
        } else {
            Err(TaxonomyError::ClassCount {
                taxonomy: self.class_labels.len(),
                model: model_classes,
            })
        }
    }

    /// Version string of the data file.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// All labels; parents come before their children.
    pub fn labels(&self) -> &[TaxonomyLabel] {
        &self.labels
    }

    /// Number of model classes.
    pub fn class_count(&self) -> usize {
        self.class_labels.len()
    }

    /// Number of labels at `level`.
    pub fn count_at_level(&self, level: u8) -> usize {
        self.labels.iter().filter(|l| l.level == level).count()
    }

    /// The label of a model class.
    pub fn class_label(&self, class: usize) -> &TaxonomyLabel {
        &self.labels[self.class_labels[class]]
    }

    /// Number of groups: level-2 labels that have classes under them (not classes themselves).
    pub fn group_count(&self) -> usize {
        self.labels
            .iter()
            .filter(|l| l.level == 2 && l.class.is_none())
            .count()
    }

    /// Finds a label by its English name (case-insensitive); for tests and tools.
    pub fn find(&self, english: &str) -> Option<usize> {
        self.labels
            .iter()
            .position(|l| l.name(Language::En).eq_ignore_ascii_case(english))
    }

    /// Confidence of every label: a class label's is its probability, a parent's the sum of its
    /// children's (the classes are mutually exclusive, so this is their marginal probability).
    ///
    /// # Panics
    /// If `probabilities` does not have one entry per class (checked at start-up).
    pub fn confidences(&self, probabilities: &[f32]) -> Vec<f32> {
        assert_eq!(
            probabilities.len(),
            self.class_labels.len(),
            "class count was checked at start-up. This is a bug."
        );
        // Accumulate in f64 and add each class to every ancestor: rounding is monotonic, so a
        // parent can never come out below one of its children.
        let mut sums = vec![0f64; self.labels.len()];
        for (class, &p) in probabilities.iter().enumerate() {
            let mut at = Some(self.class_labels[class]);
            while let Some(i) = at {
                sums[i] += f64::from(p);
                at = self.labels[i].parent;
            }
        }
        sums.into_iter().map(|s| s as f32).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"{
      "version": "test", "num_classes": 3,
      "labels": [
        {"id": "category:animal", "level": 1, "parent": null, "en": "Animal", "zh-Hans": "动物"},
        {"id": "group:dog", "level": 2, "parent": "category:animal", "en": "Dog", "zh-Hans": "狗"},
        {"id": "n1", "level": 3, "parent": "group:dog", "en": "Beagle", "zh-Hans": "比格犬", "class": 0},
        {"id": "n2", "level": 3, "parent": "group:dog", "en": "Pug", "zh-Hans": "巴哥犬", "class": 2},
        {"id": "n3", "level": 2, "parent": "category:animal", "en": "Axolotl", "zh-Hans": "美西螈", "class": 1}
      ]}"#;

    #[test]
    fn parents_sum_their_children() {
        let t = Taxonomy::from_json(SMALL).unwrap();
        let c = t.confidences(&[0.5, 0.2, 0.3]);
        assert_eq!(c, vec![1.0, 0.8, 0.5, 0.3, 0.2]);
        assert_eq!(t.class_label(1).name(Language::ZhHans), "美西螈");
        assert_eq!(t.labels()[0].classes, vec![0, 1, 2]);
        t.check_class_count(3).unwrap();
        assert!(t.check_class_count(1000).is_err());
    }

    #[test]
    fn inconsistencies_are_refused() {
        let cases = [
            (
                SMALL.replace(r#""class": 2"#, r#""class": 0"#),
                "class 0 appears twice",
            ),
            (
                SMALL.replace(r#""zh-Hans": "巴哥犬""#, r#""zh-Hans": "比格犬""#),
                "two labels",
            ),
            (
                SMALL.replace(r#""en": "Pug""#, r#""en": " ""#),
                "no en name",
            ),
            (
                SMALL.replace(
                    r#""parent": "group:dog", "en": "Pug""#,
                    r#""parent": "group:cat", "en": "Pug""#,
                ),
                "not listed",
            ),
            (
                SMALL.replace(r#""num_classes": 3"#, r#""num_classes": 4"#),
                "class 3 has no label",
            ),
        ];
        for (text, expected) in cases {
            let err = Taxonomy::from_json(&text).unwrap_err().to_string();
            assert!(err.contains(expected), "{err} should mention {expected}");
        }
    }

    #[test]
    fn language_tags_round_trip() {
        for lang in Language::ALL {
            assert_eq!(Language::from_tag(lang.tag()), Some(lang));
        }
        assert_eq!(Language::from_tag("zh-CN"), Some(Language::ZhHans));
        assert_eq!(Language::from_tag("fr"), None);
    }
}
