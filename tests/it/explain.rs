//! Explanations (heatmaps and boxes) and image properties, in-process with the real model.

use image::{imageops, ImageEncoder, Rgb, RgbImage};
use labeld::explain::PixelBox;
use labeld::image::{decode_rgb, ColourNames, ImageLimits};
use labeld::labels::{Label, LabelOptions};
use labeld::model::ModelKind;

use crate::support::{labeler, read_fixture};

fn png(image: &RgbImage) -> Vec<u8> {
    let mut bytes = Vec::new();
    image::codecs::png::PngEncoder::new(&mut bytes)
        .write_image(
            image.as_raw(),
            image.width(),
            image.height(),
            image::ExtendedColorType::Rgb8,
        )
        .unwrap();
    bytes
}

/// The labels of `bytes` with explanations, from Lite2.
fn explained(bytes: &[u8]) -> Vec<Label> {
    let labeler = labeler(ModelKind::EfficientNetLite2);
    let input = labeler.prepare(bytes).unwrap();
    let options = LabelOptions {
        threshold: 0.05,
        explain: true,
        ..Default::default()
    };
    labeler.label(&[&input], &options).unwrap().remove(0)
}

fn label<'a>(labels: &'a [Label], name: &str) -> &'a Label {
    labels
        .iter()
        .find(|l| l.label_name == name)
        .unwrap_or_else(|| panic!("no label {name} in {labels:?}"))
}

/// Intersection over union of two boxes.
fn iou(a: &PixelBox, b: &PixelBox) -> f64 {
    let x0 = a.left.max(b.left);
    let y0 = a.top.max(b.top);
    let x1 = (a.left + a.width).min(b.left + b.width);
    let y1 = (a.top + a.height).min(b.top + b.height);
    let inter = f64::from(x1.saturating_sub(x0)) * f64::from(y1.saturating_sub(y0));
    let area = |r: &PixelBox| f64::from(r.width) * f64::from(r.height);
    inter / (area(a) + area(b) - inter)
}

/// The cat photo scaled to `width` and pasted at `(x, y)` on a grey 800 × 800 canvas.
fn cat_at(width: u32, x: u32, y: u32) -> (RgbImage, PixelBox) {
    let cat = decode_rgb(&read_fixture("chelsea.png"), &ImageLimits::default()).unwrap();
    let height = width * cat.height() / cat.width();
    let cat = imageops::resize(&cat, width, height, imageops::FilterType::Triangle);
    let mut canvas = RgbImage::from_pixel(800, 800, Rgb([128, 128, 128]));
    imageops::overlay(&mut canvas, &cat, i64::from(x), i64::from(y));
    let pasted = PixelBox {
        left: x,
        top: y,
        width,
        height,
    };
    (canvas, pasted)
}

/// Wherever the cat is pasted, its box lands on it, in the canvas's pixels.
#[test]
fn the_box_of_a_label_is_where_its_subject_is() {
    for (x, y) in [(40, 60), (400, 420), (230, 250)] {
        let (canvas, pasted) = cat_at(360, x, y);
        let labels = explained(&png(&canvas));
        let cat = label(&labels, "Cat");
        let found = cat.bounding_box.expect("a box");
        let overlap = iou(&found, &pasted);
        assert!(
            overlap > 0.3,
            "pasted {pasted:?}, found {found:?}: IoU {overlap:.2}"
        );
        let heatmap = cat.heatmap.as_ref().expect("a heatmap");
        assert_eq!((heatmap.width, heatmap.height), (9, 9));
        assert_eq!(heatmap.values.iter().copied().fold(0f32, f32::max), 1.0);
        assert!(heatmap.values.iter().all(|v| (0.0..=1.0).contains(v)));
        // The model saw the centre crop: 260 of 297 pixels, 700 of 800, 50 in from each side.
        let seen = PixelBox {
            left: 48,
            top: 48,
            width: 701,
            height: 701,
        };
        assert_eq!(heatmap.region, seen);
    }
}

/// Without `explain`, labels carry no box or heatmap and serialise to IMM's six fields only.
#[test]
fn explanations_are_absent_unless_asked_for() {
    let labeler = labeler(ModelKind::EfficientNetLite2);
    let input = labeler.prepare(&read_fixture("chelsea.png")).unwrap();
    let labels = labeler
        .label(&[&input], &LabelOptions::default())
        .unwrap()
        .remove(0);
    assert!(!labels.is_empty());
    for l in &labels {
        assert!(l.bounding_box.is_none() && l.heatmap.is_none());
        let json = serde_json::to_value(l).unwrap();
        let mut keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "CentricScore",
                "LabelConfidence",
                "LabelLevel",
                "LabelName",
                "Language",
                "ParentLabelName"
            ]
        );
    }
}

/// A 2255 × 1500 JPEG is decoded at a quarter scale, and stored turned with EXIF orientation 6:
/// boxes still come out in the upright original's pixels, where a full decode puts them.
#[test]
fn boxes_survive_scaled_decoding_and_exif_rotation() {
    let limits = ImageLimits::default();
    let labeler = labeler(ModelKind::EfficientNetLite2);
    let options = LabelOptions {
        threshold: 0.05,
        explain: true,
        ..Default::default()
    };
    for orientation in [None, Some(6)] {
        let bytes = crate::images::big_jpeg(orientation);
        // The reference: the full-size decode, prepared directly (no scaled decode).
        let full = decode_rgb(&bytes, &limits).unwrap();
        let reference = labeld::image::prepare(&full, ModelKind::EfficientNetLite2.input_size());
        let expected = labeler.label(&[&reference], &options).unwrap().remove(0);
        let got = explained(&bytes);
        let (want, have) = (label(&expected, "Cat"), label(&got, "Cat"));
        let (want, have) = (want.bounding_box.unwrap(), have.bounding_box.unwrap());
        assert!(
            iou(&want, &have) > 0.8,
            "{orientation:?}: {want:?} vs {have:?}"
        );
        assert!(have.left + have.width <= 2255 && have.top + have.height <= 1500);
        let region = label(&got, "Cat").heatmap.as_ref().unwrap().region;
        // 2255 × 1500 → about 446 × 297 → centre crop 260 from (93, 18): times 1500/297 back.
        let near = |a: u32, b: u32| a.abs_diff(b) <= 3;
        assert!(near(region.left, 470) && near(region.top, 90), "{region:?}");
        assert!(
            near(region.width, 1315) && near(region.height, 1315),
            "{region:?}"
        );
    }
}

/// Image properties of a real photo and of synthetic images with known answers.
#[test]
fn image_properties_describe_the_photo() {
    let labeler = labeler(ModelKind::EfficientNetLite0);
    let prepared = labeler
        .prepare_with(&read_fixture("chelsea.png"), Some(ColourNames::English))
        .unwrap();
    let p = prepared.properties.expect("properties");
    assert_eq!((p.width, p.height), (451, 300));
    for v in [p.brightness, p.sharpness, p.contrast] {
        assert!(v > 0.05 && v < 0.95, "{p:?}");
    }
    let shares: f32 = p.dominant_colors.iter().map(|c| c.fraction).sum();
    assert!(
        !p.dominant_colors.is_empty() && shares <= 1.0 + 1e-6,
        "{p:?}"
    );
    assert!(p
        .dominant_colors
        .windows(2)
        .all(|w| w[0].fraction >= w[1].fraction));

    // A blurred copy is less sharp; a darker copy is less bright.
    let photo = decode_rgb(&read_fixture("chelsea.png"), &ImageLimits::default()).unwrap();
    let blurred = imageops::blur(&photo, 3.0);
    let darker = RgbImage::from_fn(photo.width(), photo.height(), |x, y| {
        Rgb(photo.get_pixel(x, y).0.map(|v| v / 2))
    });
    let measure = |image: &RgbImage| {
        labeler
            .prepare_with(&png(image), Some(ColourNames::English))
            .unwrap()
            .properties
            .unwrap()
    };
    assert!(measure(&blurred).sharpness < p.sharpness / 2.0);
    assert!(measure(&darker).brightness < p.brightness * 0.6);
    // Not asked for: not measured.
    let plain = labeler
        .prepare_with(&read_fixture("chelsea.png"), None)
        .unwrap();
    assert!(plain.properties.is_none());
}
