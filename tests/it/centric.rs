//! CentricScore on real activation maps: the same photo of a cat pasted on a plain canvas.

use image::{imageops, Rgb, RgbImage};
use labeld::image::{decode_rgb, prepare, ImageLimits};
use labeld::labels::LabelOptions;
use labeld::model::ModelKind;

use crate::support::{labeler, read_fixture};

/// CentricScore of the label `name` for `canvas`.
fn score_of(canvas: &RgbImage, name: &str) -> f32 {
    let labeler = labeler(ModelKind::EfficientNetLite2);
    let input = prepare(canvas, ModelKind::EfficientNetLite2.input_size());
    let prediction = labeler.predict(&[&input]).unwrap().remove(0);
    let options = LabelOptions {
        threshold: 0.0,
        ..Default::default()
    };
    let labels = labeler.labels(&input, &prediction, &options);
    labels
        .iter()
        .find(|l| l.label_name == name)
        .unwrap_or_else(|| panic!("no label {name}"))
        .centric_score
}

/// A square grey canvas with the cat photo scaled to `width` pixels wide, top-left at `(x, y)`.
fn canvas_with_cat(width: u32, x: i64, y: i64) -> RgbImage {
    let cat = decode_rgb(&read_fixture("chelsea.png"), &ImageLimits::default()).unwrap();
    let height = width * cat.height() / cat.width();
    let cat = imageops::resize(&cat, width, height, imageops::FilterType::Triangle);
    let mut canvas = RgbImage::from_pixel(600, 600, Rgb([128, 128, 128]));
    imageops::overlay(&mut canvas, &cat, x, y);
    canvas
}

#[test]
fn a_centred_subject_scores_higher_than_one_in_a_corner() {
    let (w, h) = (240, 160);
    let centre = canvas_with_cat(w, (600 - i64::from(w)) / 2, (600 - i64::from(h)) / 2);
    let corner = canvas_with_cat(w, 0, 0);
    for name in ["Cat", "Animal"] {
        let (c, k) = (score_of(&centre, name), score_of(&corner, name));
        assert!(c > k, "{name}: centre {c} vs corner {k}");
    }
}

#[test]
fn a_large_subject_scores_higher_than_a_small_one() {
    let large = canvas_with_cat(560, 20, 113);
    let small = canvas_with_cat(180, 210, 240);
    for name in ["Cat", "Animal"] {
        let (l, s) = (score_of(&large, name), score_of(&small, name));
        assert!(l > s, "{name}: large {l} vs small {s}");
    }
}
