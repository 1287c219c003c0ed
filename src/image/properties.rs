//! Image properties that Rekognition reports and IMM does not: dominant colours with names,
//! brightness, sharpness and contrast. Opt-in per request, computed on the decoded image in a few
//! milliseconds.
//!
//! Everything is measured on a working copy whose shorter side is brought down to about
//! [`WORKING_SIDE`] pixels by averaging whole blocks (so a 12-MP photo and its scaled decode give
//! the same answer, and the cost does not grow with the photo):
//! - **brightness**: mean luma (Rec. 601), 0 black .. 1 white;
//! - **contrast**: RMS contrast, the standard deviation of luma, doubled so that an image half
//!   black and half white is 1 (clamped to 0..1);
//! - **sharpness**: from the variance `v` of the 4-neighbour Laplacian of luma (0..255 scale),
//!   `v / (v + SHARPNESS_HALF)`: 0 for a flat image, 0.5 at [`SHARPNESS_HALF`], near 1 for crisp
//!   detail; monotone, so it ranks photos, and a blurred copy always scores lower;
//! - **dominant colours**: k-means (k = [`COLOURS`], deterministic seeding) over the pixels of a
//!   thumbnail, in CIELAB so that distances follow perception; clusters named after the nearest
//!   colour of a fixed palette in the same space, merged when they share a name, and reported
//!   with their share of the image (at least [`MIN_SHARE`]), largest first.

use image::RgbImage;
use serde::Serialize;

/// Shorter side of the working copy the measures are taken on.
pub const WORKING_SIDE: u32 = 256;

/// Laplacian variance at which sharpness is 0.5.
pub const SHARPNESS_HALF: f64 = 200.0;

/// Clusters of the colour k-means.
pub const COLOURS: usize = 6;

/// Smallest share of the image a reported colour covers.
pub const MIN_SHARE: f32 = 0.05;

/// Longer side of the thumbnail the colours are clustered on.
const THUMBNAIL_SIDE: u32 = 64;

/// The language colour names are given in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColourNames {
    English,
    Chinese,
}

/// One dominant colour.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DominantColour {
    /// The nearest palette colour's name, in the requested language.
    pub name: &'static str,
    /// The cluster's mean colour, `#rrggbb`.
    pub hex: String,
    pub red: u8,
    pub green: u8,
    pub blue: u8,
    /// Share of the image's pixels, 0..1.
    pub fraction: f32,
}

/// What an image looks like, beyond its labels.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageProperties {
    /// Original size, upright.
    pub width: u32,
    pub height: u32,
    /// 0..1, see the module docs.
    pub brightness: f32,
    pub sharpness: f32,
    pub contrast: f32,
    /// Largest share first.
    pub dominant_colors: Vec<DominantColour>,
}

/// Palette the clusters are named from: `(en, zh-Hans, r, g, b)`.
const PALETTE: [(&str, &str, u8, u8, u8); 24] = [
    ("black", "黑色", 0, 0, 0),
    ("dark gray", "深灰色", 64, 64, 64),
    ("gray", "灰色", 128, 128, 128),
    ("silver", "银色", 192, 192, 192),
    ("white", "白色", 255, 255, 255),
    ("red", "红色", 220, 20, 30),
    ("maroon", "栗色", 128, 0, 0),
    ("pink", "粉色", 255, 170, 190),
    ("orange", "橙色", 255, 140, 0),
    ("brown", "棕色", 140, 80, 30),
    ("dark brown", "深棕色", 75, 45, 20),
    ("tan", "棕褐色", 175, 135, 100),
    ("beige", "米色", 225, 205, 165),
    ("gold", "金色", 230, 180, 40),
    ("yellow", "黄色", 255, 230, 0),
    ("olive", "橄榄色", 128, 128, 0),
    ("green", "绿色", 40, 160, 40),
    ("dark green", "深绿色", 0, 90, 30),
    ("teal", "青绿色", 0, 128, 128),
    ("cyan", "青色", 0, 220, 230),
    ("sky blue", "天蓝色", 120, 190, 235),
    ("blue", "蓝色", 30, 70, 210),
    ("navy", "藏青色", 10, 20, 90),
    ("purple", "紫色", 120, 40, 160),
];

/// Measures an upright decoded image whose original is `original_width × original_height`.
pub fn image_properties(
    image: &RgbImage,
    original_width: u32,
    original_height: u32,
    names: ColourNames,
) -> ImageProperties {
    let working = block_average(image, block_for(image, WORKING_SIDE, true));
    let luma: Vec<f64> = working
        .pixels()
        .map(|p| 0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2]))
        .collect();
    let n = luma.len().max(1) as f64;
    let mean = luma.iter().sum::<f64>() / n;
    let variance = luma.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / n;
    let laplacian = laplacian_variance(&luma, working.width() as usize, working.height() as usize);

    let thumbnail = block_average(image, block_for(image, THUMBNAIL_SIDE, false));
    ImageProperties {
        width: original_width,
        height: original_height,
        brightness: (mean / 255.0).clamp(0.0, 1.0) as f32,
        contrast: (2.0 * variance.sqrt() / 255.0).clamp(0.0, 1.0) as f32,
        sharpness: (laplacian / (laplacian + SHARPNESS_HALF)) as f32,
        dominant_colors: dominant_colours(&thumbnail, names),
    }
}

/// Block size that brings the shorter (`shorter = true`) or longer side down to about `side`.
fn block_for(image: &RgbImage, side: u32, shorter: bool) -> u32 {
    let (w, h) = image.dimensions();
    let reference = if shorter { w.min(h) } else { w.max(h) };
    (reference / side).max(1)
}

/// Averages `block × block` squares (the ragged right and bottom edges are dropped).
fn block_average(image: &RgbImage, block: u32) -> RgbImage {
    if block <= 1 {
        return image.clone();
    }
    let (w, h) = (image.width() / block, image.height() / block);
    let (w, h) = (w.max(1), h.max(1));
    let area = u32::pow(block, 2).min(image.width() * image.height());
    let mut out = RgbImage::new(w, h);
    let mut sums = vec![[0u32; 3]; w as usize];
    for by in 0..h {
        sums.iter_mut().for_each(|s| *s = [0; 3]);
        for y in by * block..((by + 1) * block).min(image.height()) {
            for (bx, sum) in sums.iter_mut().enumerate() {
                let x0 = bx as u32 * block;
                for x in x0..(x0 + block).min(image.width()) {
                    let p = image.get_pixel(x, y);
                    for c in 0..3 {
                        sum[c] += u32::from(p[c]);
                    }
                }
            }
        }
        for (bx, sum) in sums.iter().enumerate() {
            let px = sum.map(|s| (s / area).min(255) as u8);
            out.put_pixel(bx as u32, by, image::Rgb(px));
        }
    }
    out
}

/// Variance of the 4-neighbour Laplacian over the interior pixels.
fn laplacian_variance(luma: &[f64], width: usize, height: usize) -> f64 {
    if width < 3 || height < 3 {
        return 0.0;
    }
    let mut values = Vec::with_capacity((width - 2) * (height - 2));
    for y in 1..height - 1 {
        for x in 1..width - 1 {
            let i = y * width + x;
            values.push(
                luma[i - 1] + luma[i + 1] + luma[i - width] + luma[i + width] - 4.0 * luma[i],
            );
        }
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n
}

/// sRGB 0..255 to CIELAB (D65).
fn lab(r: u8, g: u8, b: u8) -> [f32; 3] {
    let linear = |c: u8| {
        let c = f32::from(c) / 255.0;
        if c <= 0.04045 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    let (r, g, b) = (linear(r), linear(g), linear(b));
    let x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047;
    let y = 0.2126 * r + 0.7152 * g + 0.0722 * b;
    let z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883;
    let f = |t: f32| {
        if t > 0.008856 {
            t.cbrt()
        } else {
            7.787 * t + 16.0 / 116.0
        }
    };
    let (fx, fy, fz) = (f(x), f(y), f(z));
    [116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)]
}

fn distance2(a: &[f32; 3], b: &[f32; 3]) -> f32 {
    (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)
}

/// k-means over the thumbnail's pixels in CIELAB, named and merged by palette colour.
fn dominant_colours(thumbnail: &RgbImage, names: ColourNames) -> Vec<DominantColour> {
    let rgb: Vec<[u8; 3]> = thumbnail.pixels().map(|p| p.0).collect();
    let points: Vec<[f32; 3]> = rgb.iter().map(|p| lab(p[0], p[1], p[2])).collect();
    if points.is_empty() {
        return Vec::new();
    }
    let k = COLOURS.min(points.len());

    // k-means++ seeding with a fixed LCG: the same image always gives the same colours.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut random = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut centres = vec![points[points.len() / 2]];
    let mut nearest: Vec<f32> = points.iter().map(|p| distance2(p, &centres[0])).collect();
    while centres.len() < k {
        let total: f64 = nearest.iter().map(|&d| f64::from(d)).sum();
        if total <= 0.0 {
            break;
        }
        let mut target = random() * total;
        let mut chosen = points.len() - 1;
        for (i, &d) in nearest.iter().enumerate() {
            target -= f64::from(d);
            if target <= 0.0 {
                chosen = i;
                break;
            }
        }
        centres.push(points[chosen]);
        for (n, p) in nearest.iter_mut().zip(&points) {
            *n = n.min(distance2(p, &points[chosen]));
        }
    }

    let mut assignment = vec![0usize; points.len()];
    for _ in 0..12 {
        let mut changed = false;
        for (a, p) in assignment.iter_mut().zip(&points) {
            let best = (0..centres.len())
                .min_by(|&i, &j| distance2(p, &centres[i]).total_cmp(&distance2(p, &centres[j])))
                .unwrap_or(0);
            changed |= *a != best;
            *a = best;
        }
        let mut sums = vec![([0f32; 3], 0usize); centres.len()];
        for (&a, p) in assignment.iter().zip(&points) {
            for (sum, v) in sums[a].0.iter_mut().zip(p) {
                *sum += v;
            }
            sums[a].1 += 1;
        }
        for (centre, (sum, count)) in centres.iter_mut().zip(sums) {
            if count > 0 {
                *centre = sum.map(|s| s / count as f32);
            }
        }
        if !changed {
            break;
        }
    }

    // Name each cluster by the palette colour nearest its mean; merge clusters of one name.
    let palette: Vec<[f32; 3]> = PALETTE
        .iter()
        .map(|&(_, _, r, g, b)| lab(r, g, b))
        .collect();
    let mut named: Vec<(usize, [u64; 3], usize)> = Vec::new(); // (palette index, rgb sums, count)
    for (&a, p) in assignment.iter().zip(&rgb) {
        let name = (0..palette.len())
            .min_by(|&i, &j| {
                distance2(&centres[a], &palette[i]).total_cmp(&distance2(&centres[a], &palette[j]))
            })
            .unwrap_or(0);
        let entry = match named.iter().position(|(n, _, _)| *n == name) {
            Some(i) => &mut named[i],
            None => {
                named.push((name, [0; 3], 0));
                named.last_mut().expect("just pushed")
            }
        };
        for (sum, &v) in entry.1.iter_mut().zip(p) {
            *sum += u64::from(v);
        }
        entry.2 += 1;
    }
    named.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
    let total = rgb.len() as f32;
    named
        .into_iter()
        .map(|(name, sums, count)| {
            let [red, green, blue] = sums.map(|s| (s / count as u64) as u8);
            let (en, zh, ..) = PALETTE[name];
            DominantColour {
                name: match names {
                    ColourNames::English => en,
                    ColourNames::Chinese => zh,
                },
                hex: format!("#{red:02x}{green:02x}{blue:02x}"),
                red,
                green,
                blue,
                fraction: count as f32 / total,
            }
        })
        .filter(|c| c.fraction >= MIN_SHARE)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measure(image: &RgbImage) -> ImageProperties {
        image_properties(image, image.width(), image.height(), ColourNames::English)
    }

    #[test]
    fn flat_images_have_no_contrast_or_sharpness() {
        let grey = RgbImage::from_pixel(300, 200, image::Rgb([128, 128, 128]));
        let p = measure(&grey);
        assert!((p.brightness - 128.0 / 255.0).abs() < 1e-3, "{p:?}");
        assert_eq!((p.contrast, p.sharpness), (0.0, 0.0));
        assert_eq!(p.dominant_colors.len(), 1);
        assert_eq!(p.dominant_colors[0].name, "gray");
        assert_eq!(p.dominant_colors[0].hex, "#808080");
        assert_eq!(p.dominant_colors[0].fraction, 1.0);
        assert_eq!((p.width, p.height), (300, 200));
    }

    #[test]
    fn half_black_half_white_has_full_contrast_and_two_colours() {
        let image = RgbImage::from_fn(400, 400, |x, _| {
            if x < 200 {
                image::Rgb([0, 0, 0])
            } else {
                image::Rgb([255, 255, 255])
            }
        });
        let p = measure(&image);
        assert!((p.contrast - 1.0).abs() < 0.01, "{p:?}");
        assert!((p.brightness - 0.5).abs() < 0.01, "{p:?}");
        let names: Vec<_> = p.dominant_colors.iter().map(|c| c.name).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(
            names.contains(&"black") && names.contains(&"white"),
            "{names:?}"
        );
        let chinese = image_properties(&image, 400, 400, ColourNames::Chinese);
        assert!(chinese.dominant_colors.iter().any(|c| c.name == "白色"));
    }

    #[test]
    fn colours_are_named_and_ordered_by_share() {
        // Three quarters red, one quarter navy.
        let image = RgbImage::from_fn(256, 256, |x, _| {
            if x < 192 {
                image::Rgb([220, 25, 35])
            } else {
                image::Rgb([12, 22, 88])
            }
        });
        let p = measure(&image);
        assert_eq!(p.dominant_colors[0].name, "red", "{p:?}");
        assert!((p.dominant_colors[0].fraction - 0.75).abs() < 0.02, "{p:?}");
        assert_eq!(p.dominant_colors[1].name, "navy", "{p:?}");
    }

    #[test]
    fn blurring_lowers_sharpness() {
        // A fine checkerboard, then the same averaged over 4 × 4 blocks and scaled back up.
        let sharp = RgbImage::from_fn(512, 512, |x, y| {
            let v = if (x / 2 + y / 2) % 2 == 0 { 30 } else { 220 };
            image::Rgb([v, v, v])
        });
        let small = block_average(&sharp, 8);
        let blurred =
            image::imageops::resize(&small, 512, 512, image::imageops::FilterType::Triangle);
        let (a, b) = (measure(&sharp).sharpness, measure(&blurred).sharpness);
        assert!(a > 0.5 && b < a, "sharp {a} blurred {b}");
    }
}
