//! Real-world image variants (made by `weights/tools/make_variants.py`): every colour layout and
//! orientation either works or is refused with a clear error.

use labeld::image::{
    decode_and_prepare, decode_for_model, decode_rgb, prepare, resize_target, DecodeError,
    ImageLimits,
};
use labeld::labels::LabelOptions;
use labeld::model::ModelKind;

use crate::support::{labeler, read_fixture};

fn variant(name: &str) -> Vec<u8> {
    read_fixture(&format!("variants/{name}"))
}

fn mean_abs_diff(a: &image::RgbImage, b: &image::RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let sum: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| u64::from(x.abs_diff(y)))
        .sum();
    sum as f64 / a.as_raw().len() as f64
}

/// Each colour layout of the same cat photo decodes, and the model still sees a cat.
#[test]
fn every_colour_layout_is_labelled_a_cat() {
    let labeler = labeler(ModelKind::EfficientNetLite0);
    let names = [
        "rgb.jpg",
        "progressive.jpg",
        "cmyk.jpg",
        "gray.jpg",
        "gray.png",
        "gray_alpha.png",
        "rgba.png",
        "palette.png",
        "rgb16.png",
        "gray16.png",
    ];
    let inputs: Vec<_> = names
        .iter()
        .map(|n| {
            labeler
                .prepare(&variant(n))
                .unwrap_or_else(|e| panic!("{n}: {e}"))
        })
        .collect();
    let refs: Vec<_> = inputs.iter().collect();
    let options = LabelOptions {
        threshold: 0.0,
        max_labels: Some(3),
        ..Default::default()
    };
    for (name, labels) in names.iter().zip(labeler.label(&refs, &options).unwrap()) {
        let names: Vec<&str> = labels.iter().map(|l| l.label_name.as_str()).collect();
        assert!(names.contains(&"Cat"), "{name}: {names:?}");
    }
}

/// A JPEG decoded at full size reaches the model as its components (luma and chroma planes
/// resized as they are, colour converted at the model's pixels) when nothing else needs its
/// RGB pixels: the model's input is the RGB path's within a level or two, for every JPEG
/// layout and orientation (the turned ones and CMYK take the RGB path), in the same geometry.
#[test]
fn model_input_from_jpeg_components_is_the_rgb_paths() {
    let limits = ImageLimits::default();
    let mut files: Vec<(String, Vec<u8>)> = [
        "rgb.jpg",
        "progressive.jpg",
        "cmyk.jpg",
        "gray.jpg",
        "one_pixel.jpg",
        "exif_o1.jpg",
        "exif_o6.jpg",
    ]
    .iter()
    .map(|n| (n.to_string(), variant(n)))
    .collect();
    files.push(("rocket.jpg".into(), read_fixture("rocket.jpg")));
    files.push(("cat_jpeg(1)".into(), cat_jpeg(1, None)));
    for kind in [ModelKind::EfficientNetLite0, ModelKind::EfficientNetLite2] {
        let size = kind.input_size();
        for (name, bytes) in &files {
            let fast = decode_and_prepare(bytes, &limits, size, None)
                .unwrap()
                .input;
            let decoded = decode_for_model(bytes, &limits, resize_target(size)).unwrap();
            let mut slow = prepare(&decoded.image, size);
            slow.geometry = slow
                .geometry
                .with_original(decoded.original_width, decoded.original_height);
            assert_eq!(fast.geometry, slow.geometry, "{name} at {size}");
            let levels: Vec<f32> = fast
                .pixels
                .iter()
                .zip(&slow.pixels)
                .map(|(&a, &b)| f32::from(a.abs_diff(b)))
                .collect();
            let mean = levels.iter().sum::<f32>() / levels.len() as f32;
            let max = levels.iter().copied().fold(0.0, f32::max);
            assert!(
                mean < 1.0,
                "{name} at {size}: mean {mean} levels (max {max})"
            );
        }
    }
}

/// The 16-bit PNGs hold the 8-bit picture × 257, so they decode to exactly the 8-bit picture
/// (`rgba.png` carries the same RGB with an alpha channel, which is dropped).
#[test]
fn sixteen_bit_samples_and_alpha_reduce_exactly() {
    let limits = ImageLimits::default();
    let decode = |name: &str| decode_rgb(&variant(name), &limits).unwrap();
    assert_eq!(decode("rgb16.png"), decode("rgba.png"));
    assert_eq!(decode("gray16.png"), decode("gray.png"));
    assert_eq!(decode("gray_alpha.png"), decode("gray.png"));
}

/// All eight EXIF orientations come out upright: the same picture as orientation 1.
#[test]
fn exif_orientation_is_applied_before_anything_else() {
    let limits = ImageLimits::default();
    let upright = decode_rgb(&variant("exif_o1.jpg"), &limits).unwrap();
    assert_eq!(upright.dimensions(), (240, 160));
    for o in 2..=8 {
        let decoded = decode_rgb(&variant(&format!("exif_o{o}.jpg")), &limits).unwrap();
        assert_eq!(decoded.dimensions(), (240, 160), "orientation {o}");
        let diff = mean_abs_diff(&decoded, &upright);
        // JPEG re-encoding of a transformed picture costs a level or two; a wrong transform
        // costs tens of levels.
        assert!(diff < 4.0, "orientation {o}: mean difference {diff}");
    }
}

#[test]
fn one_pixel_images_are_labelled() {
    let labeler = labeler(ModelKind::EfficientNetLite0);
    for name in ["one_pixel.png", "one_pixel.jpg"] {
        let input = labeler.prepare(&variant(name)).unwrap();
        assert_eq!(input.geometry.source_width, 1);
        assert_eq!(
            labeler
                .label(&[&input], &LabelOptions::default())
                .unwrap()
                .len(),
            1
        );
    }
}

#[test]
fn truncated_files_are_corrupt() {
    for name in ["truncated.jpg", "truncated.png"] {
        match decode_rgb(&variant(name), &ImageLimits::default()) {
            Err(err @ DecodeError::Corrupt { .. }) => {
                assert!(!err.is_over_limit());
                let message = err.to_string();
                assert!(
                    message.contains("truncated") || message.contains("end"),
                    "{message}"
                );
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    // Truncated at several offsets, never a panic and never a success.
    let full = variant("rgb.jpg");
    for cut in [3, 20, 200, full.len() / 2, full.len() - 2] {
        assert!(
            decode_rgb(&full[..cut], &ImageLimits::default()).is_err(),
            "cut at {cut}"
        );
    }
}

/// A large photo as a JPEG, with an EXIF orientation: chelsea.png upscaled 5x (2255 x 1500).
pub(crate) fn big_jpeg(orientation: Option<u8>) -> Vec<u8> {
    cat_jpeg(5, orientation)
}

/// chelsea.png upscaled `times` (451 x 300 each time) as a q92 JPEG, with an EXIF orientation.
fn cat_jpeg(times: u32, orientation: Option<u8>) -> Vec<u8> {
    use image::ImageEncoder;
    let cat = image::load_from_memory(&read_fixture("chelsea.png"))
        .unwrap()
        .to_rgb8();
    let (w, h) = cat.dimensions();
    let mut big = image::imageops::resize(&cat, w * times, h * times, image::imageops::Triangle);
    if orientation == Some(6) {
        // Stored rotated a quarter turn anticlockwise; EXIF 6 says "rotate 90° clockwise".
        big = image::imageops::rotate270(&big);
    }
    let mut bytes = Vec::new();
    let mut encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 92);
    if let Some(o) = orientation {
        // A minimal little-endian TIFF with one IFD entry: Orientation (0x0112), SHORT, 1.
        let mut exif = b"II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0".to_vec();
        exif.extend_from_slice(&[o, 0, 0, 0, 0, 0, 0, 0]);
        encoder.set_exif_metadata(exif).unwrap();
    }
    encoder
        .write_image(
            big.as_raw(),
            big.width(),
            big.height(),
            image::ExtendedColorType::Rgb8,
        )
        .unwrap();
    bytes
}

/// Each `block`x`block` block of `image` (clipped at the right and bottom edges) as its mean.
fn block_means(image: &image::RgbImage, block: u32) -> image::RgbImage {
    let (w, h) = image.dimensions();
    image::RgbImage::from_fn(w.div_ceil(block), h.div_ceil(block), |bx, by| {
        let (mut sum, mut n) = ([0u32; 3], 0);
        for y in by * block..((by + 1) * block).min(h) {
            for x in bx * block..((bx + 1) * block).min(w) {
                for (s, &v) in sum.iter_mut().zip(&image.get_pixel(x, y).0) {
                    *s += u32::from(v);
                }
                n += 1;
            }
        }
        image::Rgb(sum.map(|s| ((s + n / 2) / n) as u8))
    })
}

/// A photo big enough for the 1/8 scale (2100 pixels on its short side: 2100 / 8 >= 256) is
/// decoded from its DC coefficients alone, the AC ones read past without being stored. A DC
/// coefficient is its block's mean, so each pixel must match the mean of its 8x8 block in the
/// full decode (another decoder: zune-jpeg) up to rounding and chroma upsampling, all the way to
/// the last block: an entropy decoder that lost its place in the bit stream would turn the rest
/// of the image into noise. And the model sees the same cat.
#[test]
fn eighth_scale_decode_is_the_block_means_of_the_full_decode() {
    use labeld::image::{decode_rgb_covering, prepare, resize_target};
    let limits = ImageLimits::default();
    let bytes = cat_jpeg(7, None);
    let full = decode_rgb(&bytes, &limits).unwrap();
    assert_eq!(full.dimensions(), (3157, 2100));
    let need = resize_target(ModelKind::EfficientNetLite0.input_size());
    let scaled = decode_rgb_covering(&bytes, &limits, need).unwrap();
    assert_eq!(scaled.dimensions(), (395, 263));

    let means = block_means(&full, 8);
    let diff = mean_abs_diff(&scaled, &means);
    assert!(diff < 1.5, "mean difference {diff}");
    // The last row of blocks too (a decoder out of step would have drifted by then).
    let last_row =
        |image: &image::RgbImage| image::imageops::crop_imm(image, 0, 262, 395, 1).to_image();
    let diff = mean_abs_diff(&last_row(&scaled), &last_row(&means));
    assert!(diff < 2.0, "last row: mean difference {diff}");

    let labeler = labeler(ModelKind::EfficientNetLite0);
    let size = ModelKind::EfficientNetLite0.input_size();
    let (a, b) = (prepare(&full, size), prepare(&scaled, size));
    let p = labeler.predict(&[&a, &b]).unwrap();
    let top = |i: usize| crate::support::argmax(&p[i].probabilities);
    assert_eq!(top(0), top(1));
}

/// A large JPEG is decoded at a reduced scale (DCT domain), upright, to no less than the resize
/// needs, and the model sees the same cat as from a full-size decode.
#[test]
fn large_jpegs_decode_scaled_and_label_the_same() {
    use labeld::image::{decode_rgb_covering, prepare, resize_target};
    let limits = ImageLimits::default();
    let labeler = labeler(ModelKind::EfficientNetLite0);
    let need = resize_target(ModelKind::EfficientNetLite0.input_size());
    for orientation in [None, Some(6)] {
        let bytes = big_jpeg(orientation);
        let full = decode_rgb(&bytes, &limits).unwrap();
        assert_eq!(full.dimensions(), (2255, 1500), "{orientation:?}");
        let scaled = decode_rgb_covering(&bytes, &limits, need).unwrap();
        // 1500 / 4 = 375 >= 256 and 1500 / 8 < 256: a quarter of each side.
        assert_eq!(scaled.dimensions(), (564, 375), "{orientation:?}");
        // Upright like the full decode: compare at the same size.
        let shrunk = image::imageops::resize(&full, 564, 375, image::imageops::Triangle);
        let diff = mean_abs_diff(&scaled, &shrunk);
        assert!(diff < 4.0, "{orientation:?}: mean difference {diff}");

        let size = ModelKind::EfficientNetLite0.input_size();
        let (a, b) = (prepare(&full, size), prepare(&scaled, size));
        let p = labeler.predict(&[&a, &b]).unwrap();
        let top = |i: usize| crate::support::argmax(&p[i].probabilities);
        assert_eq!(top(0), top(1), "{orientation:?}");
        // And the labeller itself takes the scaled path.
        let input = labeler.prepare(&bytes).unwrap();
        assert_eq!(input.geometry.source_width, 564);
        // Boxes are reported in the original's pixels, upright.
        let g = input.geometry;
        assert_eq!((g.original_width, g.original_height), (2255, 1500));
    }
}
