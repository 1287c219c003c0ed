//! The committed taxonomy (`weights/taxonomy.json`) as the service loads it.

use labeld::labels::LabelOptions;
use labeld::model::ModelKind;
use labeld::taxonomy::{Language, Taxonomy};

use crate::support::{labeler, read_fixture, root};

fn taxonomy() -> Taxonomy {
    Taxonomy::load(&root().join("weights/taxonomy.json")).expect("taxonomy loads and is consistent")
}

#[test]
fn covers_the_1000_classes_with_at_least_30_categories() {
    let t = taxonomy();
    t.check_class_count(1000).unwrap();
    assert!(
        t.count_at_level(1) >= 30,
        "{} categories",
        t.count_at_level(1)
    );
    assert!(t.count_at_level(2) > t.count_at_level(1));
    // Every class is a fine label (level 3) or, where no group fits, a level-2 label.
    for class in 0..1000 {
        assert!(t.class_label(class).level >= 2, "class {class}");
    }
}

#[test]
fn every_label_has_an_english_and_a_chinese_name() {
    let t = taxonomy();
    for label in t.labels() {
        let en = label.name(Language::En);
        let zh = label.name(Language::ZhHans);
        assert!(!en.trim().is_empty(), "{}: no English name", label.id);
        assert!(
            en.is_ascii() || en.chars().all(|c| !('\u{4e00}'..='\u{9fff}').contains(&c)),
            "{}: {en}",
            label.id
        );
        // A real Chinese name: at least one CJK ideograph and no Latin letters (no pinyin).
        assert!(
            zh.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)),
            "{}: {zh:?}",
            label.id
        );
        assert!(
            !zh.chars().any(|c| c.is_ascii_alphabetic()),
            "{}: {zh:?}",
            label.id
        );
    }
    for (class, en, zh) in [
        (207, "Golden retriever", "金毛寻回犬"),
        (1, "Goldfish", "金鱼"),
    ] {
        let label = t.class_label(class);
        assert_eq!(label.name(Language::En), en);
        assert_eq!(label.name(Language::ZhHans), zh);
    }
}

#[test]
fn golden_retriever_sits_under_dog_under_animal() {
    let t = taxonomy();
    let labels = t.labels();
    let retriever = t.class_label(207);
    let dog = &labels[retriever.parent.unwrap()];
    let animal = &labels[dog.parent.unwrap()];
    assert_eq!(
        (dog.name(Language::En), dog.name(Language::ZhHans)),
        ("Dog", "狗")
    );
    assert_eq!(
        (animal.name(Language::En), animal.name(Language::ZhHans)),
        ("Animal", "动物")
    );
}

/// Parents are the sum of their children and are returned with them, in both languages.
#[test]
fn labels_come_with_their_ancestors_and_parent_names() {
    let labeler = labeler(ModelKind::EfficientNetLite2);
    let input = labeler.prepare(&read_fixture("chelsea.png")).unwrap();
    let prediction = labeler.predict(&[&input]).unwrap().remove(0);
    for language in Language::ALL {
        let options = LabelOptions {
            threshold: 0.5,
            language,
            ..Default::default()
        };
        let labels = labeler.labels(&input, &prediction, &options);
        let levels: Vec<u8> = labels.iter().map(|l| l.label_level).collect();
        assert_eq!(levels, vec![1, 2, 3], "{labels:?}");
        assert!(labels
            .windows(2)
            .all(|w| w[0].label_confidence >= w[1].label_confidence));
        assert_eq!(labels[0].parent_label_name, "");
        assert_eq!(labels[1].parent_label_name, labels[0].label_name);
        assert_eq!(labels[2].parent_label_name, labels[1].label_name);
        assert!(labels.iter().all(|l| l.language == language.tag()));
        let expected = match language {
            Language::En => ["Animal", "Cat", "Egyptian cat"],
            Language::ZhHans => ["动物", "猫", "埃及猫"],
        };
        let names: Vec<&str> = labels.iter().map(|l| l.label_name.as_str()).collect();
        assert_eq!(names, expected);
    }
    // A threshold of 0 returns every label; max_labels caps it.
    let all = labeler.labels(
        &input,
        &prediction,
        &LabelOptions {
            threshold: 0.0,
            ..Default::default()
        },
    );
    assert_eq!(all.len(), labeler.taxonomy().labels().len());
    let categories: f32 = all
        .iter()
        .filter(|l| l.label_level == 1)
        .map(|l| l.label_confidence)
        .sum();
    assert!(
        (categories - 1.0).abs() < 1e-4,
        "categories sum to {categories}"
    );
    let top2 = labeler.labels(
        &input,
        &prediction,
        &LabelOptions {
            threshold: 0.0,
            max_labels: Some(2),
            ..Default::default()
        },
    );
    assert_eq!(top2.len(), 2);
}
