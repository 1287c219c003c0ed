//! Heatmap overlays for people (`labeld label --explain DIR`): the photo with a label's heatmap
//! blended over the part the model saw and its bounding box drawn, as an RGB image ready to be
//! written as PNG.
//!
//! The heatmap is sampled bilinearly between cell centres (as [`crate::explain`] does for boxes),
//! coloured from transparent through red to yellow with its value, and blended at up to
//! [`MAX_ALPHA`]; the box is a [`BOX_LINE`]-pixel green frame.

use image::{imageops, Rgb, RgbImage};

use crate::explain::{Heatmap, PixelBox};

/// Longer side of an overlay, in pixels (smaller photos keep their size).
pub const OVERLAY_SIDE: u32 = 800;

/// Strongest blend of the heatmap colour over the photo.
pub const MAX_ALPHA: f32 = 0.6;

/// Thickness of the box's frame.
pub const BOX_LINE: u32 = 3;

/// The photo (`image`, upright, of an original `original_width` wide) with `heatmap` blended over
/// it and `bounding_box` framed, scaled so its longer side is at most [`OVERLAY_SIDE`].
pub fn render_overlay(
    image: &RgbImage,
    original_width: u32,
    heatmap: &Heatmap,
    bounding_box: Option<&PixelBox>,
) -> RgbImage {
    let (w, h) = image.dimensions();
    let fit = f64::from(OVERLAY_SIDE) / f64::from(w.max(h));
    let mut out = if fit < 1.0 {
        let (ow, oh) = (
            ((f64::from(w) * fit).round() as u32).max(1),
            ((f64::from(h) * fit).round() as u32).max(1),
        );
        imageops::resize(image, ow, oh, imageops::FilterType::Triangle)
    } else {
        image.clone()
    };
    // Original pixels → overlay pixels.
    let scale = f64::from(out.width()) / f64::from(original_width.max(1));
    let (width, height) = out.dimensions();
    let to_out = |b: &PixelBox| {
        let x0 = (f64::from(b.left) * scale).floor() as u32;
        let y0 = (f64::from(b.top) * scale).floor() as u32;
        let x1 = (f64::from(b.left + b.width) * scale).ceil() as u32;
        let y1 = (f64::from(b.top + b.height) * scale).ceil() as u32;
        (x0.min(width), y0.min(height), x1.min(width), y1.min(height))
    };

    let (rx0, ry0, rx1, ry1) = to_out(&heatmap.region);
    let (gw, gh) = (heatmap.width as usize, heatmap.height as usize);
    if gw > 0 && gh > 0 && heatmap.values.len() == gw * gh && rx1 > rx0 && ry1 > ry0 {
        let sample = |grid: usize, at: f64| {
            let x = (at * grid as f64 - 0.5).clamp(0.0, (grid - 1) as f64);
            let lo = x.floor() as usize;
            (lo, (lo + 1).min(grid - 1), (x - lo as f64) as f32)
        };
        for y in ry0..ry1 {
            let (r0, r1, fr) = sample(gh, (f64::from(y - ry0) + 0.5) / f64::from(ry1 - ry0));
            for x in rx0..rx1 {
                let (c0, c1, fc) = sample(gw, (f64::from(x - rx0) + 0.5) / f64::from(rx1 - rx0));
                let v = &heatmap.values;
                let top = v[r0 * gw + c0] * (1.0 - fc) + v[r0 * gw + c1] * fc;
                let bottom = v[r1 * gw + c0] * (1.0 - fc) + v[r1 * gw + c1] * fc;
                let value = (top * (1.0 - fr) + bottom * fr).clamp(0.0, 1.0);
                blend(
                    out.get_pixel_mut(x, y),
                    heat_colour(value),
                    MAX_ALPHA * value.sqrt(),
                );
            }
        }
    }
    if let Some(b) = bounding_box {
        let (x0, y0, x1, y1) = to_out(b);
        frame(&mut out, x0, y0, x1, y1, Rgb([40, 230, 90]));
    }
    out
}

/// Red at low values, through orange to yellow at the peak.
fn heat_colour(value: f32) -> [f32; 3] {
    [255.0, 230.0 * value, 40.0 * value]
}

fn blend(pixel: &mut Rgb<u8>, colour: [f32; 3], alpha: f32) {
    for (p, c) in pixel.0.iter_mut().zip(colour) {
        *p = (f32::from(*p) * (1.0 - alpha) + c * alpha)
            .round()
            .clamp(0.0, 255.0) as u8;
    }
}

/// A frame of [`BOX_LINE`] pixels inside `x0..x1 × y0..y1`.
fn frame(image: &mut RgbImage, x0: u32, y0: u32, x1: u32, y1: u32, colour: Rgb<u8>) {
    for y in y0..y1 {
        for x in x0..x1 {
            let edge =
                x < x0 + BOX_LINE || x + BOX_LINE >= x1 || y < y0 + BOX_LINE || y + BOX_LINE >= y1;
            if edge {
                image.put_pixel(x, y, colour);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heatmap_tints_its_region_and_the_box_is_framed() {
        let photo = RgbImage::from_pixel(1600, 1200, Rgb([0, 0, 255]));
        let heatmap = Heatmap {
            width: 2,
            height: 2,
            values: vec![1.0, 0.0, 0.0, 0.0],
            region: PixelBox {
                left: 200,
                top: 0,
                width: 1200,
                height: 1200,
            },
        };
        let b = PixelBox {
            left: 200,
            top: 0,
            width: 600,
            height: 600,
        };
        let out = render_overlay(&photo, 1600, &heatmap, Some(&b));
        assert_eq!(out.dimensions(), (800, 600));
        // Outside the region: untouched.
        assert_eq!(out.get_pixel(50, 300), &Rgb([0, 0, 255]));
        // At the peak (inside the region's top-left cell, clear of the frame): tinted yellow-red.
        let hot = out.get_pixel(170, 100);
        assert!(hot[0] > 100 && hot[2] < 200, "{hot:?}");
        // Far corner of the region (value 0): untouched.
        assert_eq!(out.get_pixel(690, 590), &Rgb([0, 0, 255]));
        // The frame, in overlay pixels (box scaled by 1/2).
        assert_eq!(out.get_pixel(100, 150), &Rgb([40, 230, 90]));
        assert_eq!(out.get_pixel(399, 150), &Rgb([40, 230, 90]));
    }
}
