//! Where a label is in the photo: its heatmap and bounding box, from the label's class activation
//! map (see [`crate::centric`] for how the map is made).
//!
//! The map lives on the grid of the last feature map (7 × 7 for Lite0, 9 × 9 for Lite2), which
//! covers the model's centre crop. To find a box:
//! 1. the map is upsampled bilinearly (cell centres as sample points) to one value per
//!    [`BOX_STRIDE`] × [`BOX_STRIDE`] pixels of the crop (56 × 56 for Lite0);
//! 2. cells reaching [`BOX_THRESHOLD`] of the map's positive peak are kept;
//! 3. the largest 4-connected region of kept cells (by area; ties go to the one with more
//!    evidence) is the label's region, and its bounding rectangle is mapped back through the
//!    crop and the resize to the original (upright) image's pixels.
//!
//! A map with no positive evidence has no box. The heatmap is returned as it is computed: the
//! positive part of the map divided by its peak, on the feature grid, with the region of the
//! photo that grid covers, so a client can draw it with any smoothing it likes.
//!
//! Pure and cheap (tens of microseconds per label); explanations are computed only when asked.

use serde::Serialize;

use crate::image::CropGeometry;

/// Pixels of the crop per cell of the upsampled map used to find boxes.
pub const BOX_STRIDE: u32 = 4;

/// Share of the positive peak a cell must reach to be part of a label's region.
pub const BOX_THRESHOLD: f32 = 0.2;

/// A rectangle in the original image's pixels (after EXIF orientation), IMM-style names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PixelBox {
    pub left: u32,
    pub top: u32,
    pub width: u32,
    pub height: u32,
}

/// A label's activation on the feature grid.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Heatmap {
    /// Grid columns.
    pub width: u32,
    /// Grid rows.
    pub height: u32,
    /// `width * height` values in 0..1, row-major: the positive part of the map over its peak.
    pub values: Vec<f32>,
    /// The part of the original image the grid covers (the model's centre crop).
    pub region: PixelBox,
}

/// Why the model gave a label, as far as its activation map tells.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// `None` when the map has no positive evidence.
    pub bounding_box: Option<PixelBox>,
    pub heatmap: Heatmap,
}

/// The explanation of one activation map (`height × width`, row-major) of an image whose crop
/// is described by `geometry`.
pub fn explain(map: &[f32], height: usize, width: usize, geometry: &CropGeometry) -> Explanation {
    debug_assert_eq!(map.len(), height * width);
    let peak = map.iter().copied().fold(0f32, f32::max);
    let values = if peak > 0.0 {
        map.iter().map(|&v| (v.max(0.0) / peak).min(1.0)).collect()
    } else {
        vec![0.0; map.len()]
    };
    let crop = geometry.size;
    Explanation {
        bounding_box: (peak > 0.0)
            .then(|| largest_region(map, height, width, crop))
            .flatten()
            .map(|(x0, y0, x1, y1)| original_box(geometry, x0, y0, x1, y1)),
        heatmap: Heatmap {
            width: width as u32,
            height: height as u32,
            values,
            region: original_box(geometry, 0.0, 0.0, f64::from(crop), f64::from(crop)),
        },
    }
}

/// The bounding rectangle, in crop pixels `(x0, y0, x1, y1)`, of the largest region of the map
/// upsampled to `crop / BOX_STRIDE` cells per side whose values reach `BOX_THRESHOLD` of the peak.
fn largest_region(
    map: &[f32],
    height: usize,
    width: usize,
    crop: u32,
) -> Option<(f64, f64, f64, f64)> {
    let side = (crop / BOX_STRIDE).max(1) as usize;
    let cell = f64::from(crop) / side as f64;
    let fine = upsample(map, height, width, side);
    let peak = fine.iter().copied().fold(0f32, f32::max);
    if peak <= 0.0 {
        return None;
    }
    let kept: Vec<bool> = fine.iter().map(|&v| v >= BOX_THRESHOLD * peak).collect();

    // Flood fill every region; keep the best one's (area, mass, (r0, c0, r1, c1)).
    type Region = (usize, f32, (usize, usize, usize, usize));
    let mut seen = vec![false; kept.len()];
    let mut best: Option<Region> = None;
    let mut stack = Vec::new();
    for start in 0..kept.len() {
        if !kept[start] || seen[start] {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let (mut area, mut mass) = (0usize, 0f32);
        let (mut r0, mut c0, mut r1, mut c1) = (usize::MAX, usize::MAX, 0, 0);
        while let Some(i) = stack.pop() {
            let (r, c) = (i / side, i % side);
            area += 1;
            mass += fine[i];
            (r0, c0, r1, c1) = (r0.min(r), c0.min(c), r1.max(r), c1.max(c));
            let neighbours = [
                (r > 0).then(|| i - side),
                (r + 1 < side).then(|| i + side),
                (c > 0).then(|| i - 1),
                (c + 1 < side).then(|| i + 1),
            ];
            for n in neighbours.into_iter().flatten() {
                if kept[n] && !seen[n] {
                    seen[n] = true;
                    stack.push(n);
                }
            }
        }
        let better = best.is_none_or(|(a, m, _)| area > a || (area == a && mass > m));
        if better {
            best = Some((area, mass, (r0, c0, r1, c1)));
        }
    }
    best.map(|(_, _, (r0, c0, r1, c1))| {
        (
            c0 as f64 * cell,
            r0 as f64 * cell,
            (c1 + 1) as f64 * cell,
            (r1 + 1) as f64 * cell,
        )
    })
}

/// Bilinear upsampling of a `height × width` grid to `side × side`, each value sampled at the
/// centre of its cell (values beyond the outer cell centres are held, not extrapolated).
fn upsample(map: &[f32], height: usize, width: usize, side: usize) -> Vec<f32> {
    let coordinate = |i: usize, n: usize| {
        let x = ((i as f64 + 0.5) * n as f64 / side as f64 - 0.5).clamp(0.0, (n - 1) as f64);
        let lo = x.floor() as usize;
        let hi = (lo + 1).min(n - 1);
        (lo, hi, (x - lo as f64) as f32)
    };
    let mut out = Vec::with_capacity(side * side);
    for r in 0..side {
        let (r0, r1, fr) = coordinate(r, height);
        for c in 0..side {
            let (c0, c1, fc) = coordinate(c, width);
            let top = map[r0 * width + c0] * (1.0 - fc) + map[r0 * width + c1] * fc;
            let bottom = map[r1 * width + c0] * (1.0 - fc) + map[r1 * width + c1] * fc;
            out.push(top * (1.0 - fr) + bottom * fr);
        }
    }
    out
}

/// A rectangle of crop pixels mapped to the original image's pixels, rounded outwards and
/// clamped to the image.
fn original_box(geometry: &CropGeometry, x0: f64, y0: f64, x1: f64, y1: f64) -> PixelBox {
    let (left, top) = geometry.crop_to_original(x0, y0);
    let (right, bottom) = geometry.crop_to_original(x1, y1);
    let (w, h) = (
        f64::from(geometry.original_width),
        f64::from(geometry.original_height),
    );
    let left = left.floor().clamp(0.0, w) as u32;
    let top = top.floor().clamp(0.0, h) as u32;
    let right = (right.ceil().clamp(0.0, w) as u32).max(left);
    let bottom = (bottom.ceil().clamp(0.0, h) as u32).max(top);
    PixelBox {
        left,
        top,
        width: right - left,
        height: bottom - top,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 640 × 427 photo prepared for a 224 crop: resized to 384 × 256, crop at (80, 16).
    fn landscape() -> CropGeometry {
        CropGeometry {
            source_width: 640,
            source_height: 427,
            original_width: 640,
            original_height: 427,
            resized_width: 384,
            resized_height: 256,
            crop_left: 80,
            crop_top: 16,
            size: 224,
        }
    }

    #[test]
    fn the_heatmap_region_is_the_centre_crop_in_original_pixels() {
        let e = explain(&[0.0; 49], 7, 7, &landscape());
        // x: 80 × 640/384 = 133.3 → 133, 304 × 640/384 = 506.7 → 507;
        // y: 16 × 427/256 = 26.7 → 26, 240 × 427/256 = 400.3 → 401.
        assert_eq!(
            e.heatmap.region,
            PixelBox {
                left: 133,
                top: 26,
                width: 374,
                height: 375,
            }
        );
        assert_eq!(e.bounding_box, None, "no positive evidence, no box");
        assert!(e.heatmap.values.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn a_blob_gets_a_box_around_it_and_the_largest_blob_wins() {
        // Evidence in the top-left 2 × 2 cells (strong) and one bottom-right cell (stronger but
        // alone): the box goes round the larger region.
        let mut map = vec![-1.0f32; 49];
        for (r, c) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
            map[r * 7 + c] = 4.0;
        }
        map[6 * 7 + 6] = 5.0;
        let g = CropGeometry {
            source_width: 224,
            source_height: 224,
            original_width: 224,
            original_height: 224,
            resized_width: 224,
            resized_height: 224,
            crop_left: 0,
            crop_top: 0,
            size: 224,
        };
        let e = explain(&map, 7, 7, &g);
        let b = e.bounding_box.expect("a box");
        assert_eq!((b.left, b.top), (0, 0), "{b:?}");
        // Cells are 32 px; the region spans the two cells and part of the next.
        assert!((56..=96).contains(&b.width) && b.width == b.height, "{b:?}");
        assert_eq!(e.heatmap.values[48], 1.0);
        assert_eq!(e.heatmap.values[0], 0.8);
        assert_eq!(e.heatmap.values[3], 0.0);
    }

    #[test]
    fn boxes_are_scaled_back_to_the_original_photo() {
        // All evidence in the centre cell of a 12-MP photo decoded at 1/8 scale.
        let mut map = vec![0.0f32; 49];
        map[24] = 1.0;
        let g = CropGeometry {
            source_width: 500,
            source_height: 375,
            original_width: 4000,
            original_height: 3000,
            resized_width: 341,
            resized_height: 256,
            crop_left: 58,
            crop_top: 16,
            size: 224,
        };
        let b = explain(&map, 7, 7, &g).bounding_box.expect("a box");
        let (cx, cy) = (b.left + b.width / 2, b.top + b.height / 2);
        assert!(cx.abs_diff(2000) <= 30 && cy.abs_diff(1500) <= 30, "{b:?}");
        assert!(b.width > 100 && b.width < 1500, "{b:?}");
    }

    #[test]
    fn upsampling_keeps_cell_centres_and_holds_the_edges() {
        let up = upsample(&[0.0, 1.0, 2.0, 3.0], 2, 2, 4);
        assert_eq!(up[0], 0.0);
        assert_eq!(up[15], 3.0);
        assert_eq!(up[1], 0.25);
    }
}
