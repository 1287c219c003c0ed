//! From an upright RGB image to the model's input: the EfficientNet-Lite evaluation transform.
//!
//! Shorter side resized to `round(size / 0.875)` with Pillow's bicubic filter, centre crop of
//! `size` × `size`, then `(x - 127) / 128` per channel, laid out CHW as f32. This is exactly what
//! the numpy reference does (`weights/tools/effnet_lite_numpy.py`), including Python's
//! round-half-to-even, so PNG inputs give the reference's logits bit for bit.

use image::RgbImage;

use super::resize::{
    resize_bicubic_window, resize_rows_window_planes, resize_window_planes, source_window, Rows,
};
use super::ycc::{planes_to_rgb, YccImage};

/// Where the model's square input came from in the original (upright) image. Needed to map
/// activation maps back to the photo's pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CropGeometry {
    /// Size of the decoded image the resize started from (upright; a scaled JPEG decode makes it
    /// smaller than the original).
    pub source_width: u32,
    pub source_height: u32,
    /// Size of the original image, upright (after EXIF orientation): what boxes are reported in.
    pub original_width: u32,
    pub original_height: u32,
    /// Size after the shorter-side resize.
    pub resized_width: u32,
    pub resized_height: u32,
    /// Top-left corner of the crop in the resized image.
    pub crop_left: u32,
    pub crop_top: u32,
    /// Side of the square crop (the model's input size).
    pub size: u32,
}

impl CropGeometry {
    /// The same crop of an image that was decoded smaller than its `width × height` original
    /// (a scaled JPEG decode), so that points map back to the original's pixels.
    pub fn with_original(self, width: u32, height: u32) -> CropGeometry {
        CropGeometry {
            original_width: width,
            original_height: height,
            ..self
        }
    }

    /// A point of the crop (pixels, `0..size`) in the original image's pixels. The resize scales
    /// both axes of the decoded image, and a scaled decode scales them again: the crop's offset
    /// plus the point, times original over resized, on each axis.
    pub fn crop_to_original(&self, x: f64, y: f64) -> (f64, f64) {
        (
            (x + f64::from(self.crop_left)) * f64::from(self.original_width)
                / f64::from(self.resized_width),
            (y + f64::from(self.crop_top)) * f64::from(self.original_height)
                / f64::from(self.resized_height),
        )
    }
}

/// One image ready for the model.
#[derive(Debug, Clone)]
pub struct ModelInput {
    /// `3 * size * size` 8-bit levels, channel-major (CHW): what the resize computes. The model
    /// normalises them as it reads them ([`crate::model::normalised`]), so an image waits in the
    /// queue and is copied into its batch at a quarter of the bytes of floats.
    pub pixels: Vec<u8>,
    pub geometry: CropGeometry,
}

/// The length the shorter side is resized to for a model input of `size`: `round(size / 0.875)`
/// (ties to even, as the reference), 256 for 224 and 297 for 260.
pub fn resize_target(size: u32) -> u32 {
    (f64::from(size) / 0.875).round_ties_even() as u32
}

/// Where the centre `size` × `size` crop of a `width` × `height` image's shorter-side resize
/// lies.
fn crop_geometry(width: u32, height: u32, size: u32) -> CropGeometry {
    let scale = f64::from(resize_target(size)) / f64::from(width.min(height));
    let rw = (f64::from(width) * scale)
        .round_ties_even()
        .max(f64::from(size)) as u32;
    let rh = (f64::from(height) * scale)
        .round_ties_even()
        .max(f64::from(size)) as u32;
    CropGeometry {
        source_width: width,
        source_height: height,
        original_width: width,
        original_height: height,
        resized_width: rw,
        resized_height: rh,
        crop_left: (rw - size) / 2,
        crop_top: (rh - size) / 2,
        size,
    }
}

impl CropGeometry {
    /// The crop as a `(left, top, width, height)` window of the resize.
    fn window(&self) -> (u32, u32, u32, u32) {
        (self.crop_left, self.crop_top, self.size, self.size)
    }
}

/// Resizes the shorter side to `round(size / 0.875)` and crops the centre `size` × `size`.
/// Only the crop's pixels of the resize are computed (identical to cropping a full resize).
pub fn resize_and_crop(image: &RgbImage, size: u32) -> (RgbImage, CropGeometry) {
    let g = crop_geometry(image.width(), image.height(), size);
    let crop = resize_bicubic_window(image, g.resized_width, g.resized_height, g.window());
    (crop, g)
}

/// Every channel of every pixel, HWC to CHW.
pub fn channel_major(crop: &RgbImage) -> Vec<u8> {
    let plane = (crop.width() * crop.height()) as usize;
    let mut out = vec![0u8; 3 * plane];
    for (i, px) in crop.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = px.0[c];
        }
    }
    out
}

/// The whole transform: resize and crop. The resize writes the crop channel-major as it
/// computes it (what [`channel_major`] gives for the crop, without an HWC crop in between or
/// its scattered stores: those took ~6 % of decoding and preprocessing an ImageNet-size JPEG).
pub fn prepare(image: &RgbImage, size: u32) -> ModelInput {
    let geometry = crop_geometry(image.width(), image.height(), size);
    let planes = resize_window_planes(
        image,
        geometry.resized_width,
        geometry.resized_height,
        geometry.window(),
        |level| level,
    );
    ModelInput {
        pixels: planes,
        geometry,
    }
}

/// The pixels of a `width × height` image that [`prepare`] (and [`prepare_ycc`]) read for a
/// model input of `size`, as `(left, top, right, bottom)` with exclusive ends: the centre crop's
/// source and the resize filter's reach around it.
pub(super) fn model_window(width: u32, height: u32, size: u32) -> (usize, usize, usize, usize) {
    let g = crop_geometry(width, height, size);
    source_window(
        (width as usize, height as usize),
        g.resized_width,
        g.resized_height,
        g.window(),
    )
}

/// [`prepare`] from a JPEG's components instead of an RGB image (see [`super::ycc`]): the same
/// geometry and resize, colour converted at the crop's pixels.
pub(super) fn prepare_ycc(mut image: YccImage, size: u32) -> ModelInput {
    let (width, height) = image.size();
    let geometry = crop_geometry(width as u32, height as u32, size);
    let ycc = resize_rows_window_planes(
        &mut image,
        geometry.resized_width,
        geometry.resized_height,
        geometry.window(),
        |level| level,
    );
    ModelInput {
        pixels: planes_to_rgb(&ycc, |level| level),
        geometry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::test_pixels::random_bytes;

    #[test]
    fn shorter_side_goes_to_size_over_0_875() {
        let img = RgbImage::new(640, 427);
        let (crop, g) = resize_and_crop(&img, 224);
        assert_eq!(crop.dimensions(), (224, 224));
        assert_eq!((g.resized_width, g.resized_height), (384, 256));
        assert_eq!((g.crop_left, g.crop_top), (80, 16));
        let (_, g) = resize_and_crop(&img, 260);
        assert_eq!(g.resized_height, 297);
    }

    #[test]
    fn tiny_images_are_upscaled_to_at_least_the_crop() {
        let img = RgbImage::new(1, 1);
        let input = prepare(&img, 224);
        assert_eq!(input.pixels.len(), 3 * 224 * 224);
        // A black pixel is level 0 everywhere.
        assert!(input.pixels.iter().all(|&v| v == 0));
    }

    /// `prepare` (the channel-major resize) gives the interleaved crop's levels channel-major:
    /// down- and upscales, landscape and portrait, an unchanged width.
    #[test]
    fn prepare_equals_the_crop_channel_major() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for (w, h) in [(564, 375), (375, 500), (100, 60), (256, 300), (224, 224)] {
            let pixels = random_bytes(3 * w as usize * h as usize, &mut seed);
            let img = RgbImage::from_raw(w, h, pixels).expect("3 bytes a pixel");
            let (crop, geometry) = resize_and_crop(&img, 224);
            let input = prepare(&img, 224);
            assert_eq!(input.geometry, geometry, "{w}x{h}");
            assert_eq!(input.pixels, channel_major(&crop), "{w}x{h}");
        }
    }

    #[test]
    fn channel_major_puts_each_channel_in_its_plane() {
        let img = RgbImage::from_pixel(2, 2, image::Rgb([255, 127, 0]));
        let v = channel_major(&img);
        assert_eq!(&v[0..4], &[255; 4]);
        assert_eq!(&v[4..8], &[127; 4]);
        assert_eq!(&v[8..12], &[0; 4]);
    }
}
