//! Golden tests: the candle model and the preprocessing against the numpy reference.

use labeld::image::{channel_major, decode_rgb, resize_and_crop, ImageLimits, ModelInput};
use labeld::model::ModelKind;

use crate::support::{argmax, golden, labeler, max_abs_diff, read_fixture, PHOTOS, PNG_PHOTOS};

/// Logit tolerance required by the issue.
const TOLERANCE: f32 = 1e-3;

fn input_from_crop(stem: &str, size: u32) -> ModelInput {
    let crop = image::load_from_memory(&read_fixture(&format!("golden/{stem}.{size}.crop.png")))
        .unwrap()
        .to_rgb8();
    let (_, geometry) = resize_and_crop(&crop, size);
    ModelInput {
        pixels: channel_major(&crop),
        geometry,
    }
}

/// The model alone: fed the reference's own preprocessed crop, candle gives the reference logits.
#[test]
fn model_logits_match_the_numpy_reference() {
    for kind in ModelKind::ALL {
        let labeler = labeler(kind);
        let inputs: Vec<_> = PHOTOS
            .iter()
            .map(|stem| input_from_crop(stem, kind.input_size()))
            .collect();
        let refs: Vec<_> = inputs.iter().collect();
        let predictions = labeler.predict(&refs).unwrap();
        for (stem, prediction) in PHOTOS.iter().zip(&predictions) {
            let reference = golden(stem, kind);
            assert_eq!(reference.size, kind.input_size());
            let diff = max_abs_diff(&prediction.logits, &reference.logits);
            assert!(diff <= TOLERANCE, "{kind} {stem}: max |logit diff| {diff}");
            assert_eq!(argmax(&prediction.logits), argmax(&reference.logits));
        }
    }
}

/// Decoding + Pillow-exact resize + crop reproduce the reference's crop byte for byte on PNGs,
/// so the whole pipeline matches the reference logits.
#[test]
fn pipeline_matches_the_reference_end_to_end_on_pngs() {
    for kind in ModelKind::ALL {
        let size = kind.input_size();
        let labeler = labeler(kind);
        for stem in PNG_PHOTOS {
            let rgb = decode_rgb(
                &read_fixture(&format!("{stem}.png")),
                &ImageLimits::default(),
            )
            .unwrap();
            let (crop, _) = resize_and_crop(&rgb, size);
            let reference =
                image::load_from_memory(&read_fixture(&format!("golden/{stem}.{size}.crop.png")))
                    .unwrap()
                    .to_rgb8();
            assert!(
                crop == reference,
                "{stem} at {size}: crop differs from Pillow's"
            );

            let input = labeler
                .prepare(&read_fixture(&format!("{stem}.png")))
                .unwrap();
            let prediction = labeler.predict(&[&input]).unwrap().remove(0);
            let reference = golden(stem, kind);
            let diff = max_abs_diff(&prediction.logits, &reference.logits);
            assert!(diff <= TOLERANCE, "{kind} {stem}: max |logit diff| {diff}");
            assert_eq!(
                argmax(&prediction.logits),
                argmax(&reference.logits),
                "{kind} {stem}: top-1"
            );
        }
    }
}

/// JPEG decoders differ in their IDCT and chroma upsampling (the reference used libjpeg-turbo),
/// so a JPEG's pixels may differ by a level or two: the pipeline stays close, not identical.
#[test]
fn pipeline_stays_close_to_the_reference_on_jpeg() {
    for kind in ModelKind::ALL {
        jpeg_close_to_reference(kind);
    }
}

fn jpeg_close_to_reference(kind: ModelKind) {
    let labeler = labeler(kind);
    let input = labeler.prepare(&read_fixture("rocket.jpg")).unwrap();
    let reference = input_from_crop("rocket", kind.input_size());
    let levels: Vec<f32> = input
        .pixels
        .iter()
        .zip(&reference.pixels)
        .map(|(&a, &b)| f32::from(a.abs_diff(b)))
        .collect();
    let pixel_diff = levels.iter().copied().fold(0.0, f32::max);
    let mean_diff = levels.iter().sum::<f32>() / levels.len() as f32;
    assert!(
        mean_diff < 1.5,
        "mean pixel difference {mean_diff} (max {pixel_diff})"
    );
    let prediction = labeler.predict(&[&input]).unwrap().remove(0);
    let reference = golden("rocket", kind);
    assert_eq!(
        argmax(&prediction.logits),
        argmax(&reference.logits),
        "{kind}: top-1"
    );
}

/// A batch of N gives the same result as N single images.
#[test]
fn a_batch_equals_single_images() {
    for kind in ModelKind::ALL {
        let labeler = labeler(kind);
        let inputs: Vec<_> = PHOTOS
            .iter()
            .map(|stem| input_from_crop(stem, kind.input_size()))
            .collect();
        let refs: Vec<_> = inputs.iter().collect();
        let batched = labeler.predict(&refs).unwrap();
        for (input, batch_prediction) in inputs.iter().zip(&batched) {
            let single = labeler.predict(&[input]).unwrap().remove(0);
            let diff = max_abs_diff(&single.logits, &batch_prediction.logits);
            assert!(diff <= 1e-4, "{kind}: batch vs single differ by {diff}");
            assert_eq!(
                single.features.data.len(),
                batch_prediction.features.data.len()
            );
            let diff = max_abs_diff(&single.features.data, &batch_prediction.features.data);
            assert!(diff <= 1e-4, "{kind}: feature maps differ by {diff}");
        }
    }
}
