//! CentricScore: how much a label is the main subject of the picture, from its class activation
//! map (CAM).
//!
//! The model's head is global average pooling followed by a linear layer, so the logit of class
//! `c` is the spatial mean of `M_c = W_c · F` (the classifier row applied to every cell of the
//! last feature map `F`): `M_c` shows *where* the evidence for `c` is. A label's map is the
//! probability-weighted sum of the maps of the classes under it, `M_L = Σ p_c M_c` (for a parent
//! this is the probability-weighted sum of its children's maps).
//!
//! From the positive part `P = max(M_L, 0)` of that map, on the `h × w` grid of `F`:
//! - **centrality** `C = Σ p_ij · exp(-d_ij² / (2σ²))` with `p = P / ΣP` the share of the
//!   evidence in cell `ij`, `d_ij` the distance from the cell's centre to the image centre
//!   (0 at the centre, 1 at a corner) and `σ = 0.5`. All evidence at the centre gives 1, evidence
//!   spread evenly over the frame about 0.56, evidence in a corner about 0.14.
//! - **extent** `A = (ΣP)² / (N · ΣP²)` over the `N = h·w` cells (the participation ratio): how
//!   much of the frame the evidence covers, 1 when it is spread evenly over every cell and `1/N`
//!   when it sits in a single cell. Unlike a threshold on the peak it needs no tuning, and it
//!   still grows when a large subject's map peaks on its most telling part (a cat's face) and
//!   stays lower over the rest of its body.
//! - **CentricScore** `= √(C · √A)`, in 0..1: the geometric mean of centrality and the square root
//!   of extent, so that a subject must be both central and large to score high, and extent
//!   matters less than position for mid-sized subjects. A map with no positive evidence scores 0.

use crate::model::{ClassifierHead, FeatureMap};

/// Width of the centrality kernel, in units of the centre-to-corner distance.
const SIGMA: f64 = 0.5;

/// The class activation map of a label: `Σ_c weight_c · (W_c · F)` over `classes`, one value
/// per cell of the feature map (row-major `h × w`).
///
/// A label high in the taxonomy sums hundreds of classifier rows (~53 µs for 400 classes on
/// SSE2; the labels of a request took ~4.6 % of a decode worker's time under load, by `perf`),
/// so the loops are compiled for AVX-512 or AVX2 where the CPU has them. Each output element is
/// still summed class after class in the same order (no reductions across lanes, no fused
/// multiply-add), so every path gives the same bits.
pub fn activation_map(
    head: &ClassifierHead,
    features: &FeatureMap,
    classes: impl IntoIterator<Item = (usize, f32)>,
) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512 F, checked just above.
            return unsafe { activation_map_avx512(head, features, classes) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { activation_map_avx2(head, features, classes) };
        }
    }
    activation_map_portable(head, features, classes)
}

/// [`activation_map_portable`] compiled for AVX-512.
///
/// # Safety
/// The CPU must have AVX-512 F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn activation_map_avx512(
    head: &ClassifierHead,
    features: &FeatureMap,
    classes: impl IntoIterator<Item = (usize, f32)>,
) -> Vec<f32> {
    activation_map_portable(head, features, classes)
}

/// [`activation_map_portable`] compiled for AVX2.
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn activation_map_avx2(
    head: &ClassifierHead,
    features: &FeatureMap,
    classes: impl IntoIterator<Item = (usize, f32)>,
) -> Vec<f32> {
    activation_map_portable(head, features, classes)
}

/// [`activation_map`] in portable code.
#[inline(always)]
fn activation_map_portable(
    head: &ClassifierHead,
    features: &FeatureMap,
    classes: impl IntoIterator<Item = (usize, f32)>,
) -> Vec<f32> {
    // Σ_c p_c W_c first (one vector), then one dot product per cell: cheaper than one map per class.
    let mut direction = vec![0f32; head.channels];
    for (class, weight) in classes {
        for (d, &w) in direction.iter_mut().zip(head.row(class)) {
            *d += weight * w;
        }
    }
    let cells = features.height * features.width;
    let mut map = vec![0f32; cells];
    for (k, &d) in direction.iter().enumerate().take(features.channels) {
        let plane = &features.data[k * cells..(k + 1) * cells];
        for (m, &f) in map.iter_mut().zip(plane) {
            *m += d * f;
        }
    }
    map
}

/// CentricScore of an activation map on an `height × width` grid (see the module docs).
pub fn centric_score(map: &[f32], height: usize, width: usize) -> f32 {
    debug_assert_eq!(map.len(), height * width);
    let total: f64 = map.iter().map(|&v| f64::from(v.max(0.0))).sum();
    if total <= 0.0 {
        return 0.0;
    }
    let mut centrality = 0.0;
    let mut squares = 0.0;
    for (i, &v) in map.iter().enumerate() {
        let p = f64::from(v.max(0.0));
        let (row, col) = (i / width, i % width);
        // Cell centre in -1..1 on each axis; d is 0 at the centre and 1 at a corner.
        let u = 2.0 * (col as f64 + 0.5) / width as f64 - 1.0;
        let v2 = 2.0 * (row as f64 + 0.5) / height as f64 - 1.0;
        let d2 = (u * u + v2 * v2) / 2.0;
        centrality += (p / total) * (-d2 / (2.0 * SIGMA * SIGMA)).exp();
        squares += p * p;
    }
    let extent = total * total / (map.len() as f64 * squares);
    (centrality * extent.sqrt()).sqrt().clamp(0.0, 1.0) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 9 × 9 map that is 1 inside the square `[r0, r0+n) × [c0, c0+n)` and 0 elsewhere.
    fn blob(r0: usize, c0: usize, n: usize) -> Vec<f32> {
        let mut m = vec![0f32; 81];
        for r in r0..r0 + n {
            for c in c0..c0 + n {
                m[r * 9 + c] = 1.0;
            }
        }
        m
    }

    #[test]
    fn central_beats_corner_and_large_beats_small() {
        let centre = centric_score(&blob(3, 3, 3), 9, 9);
        let corner = centric_score(&blob(0, 0, 3), 9, 9);
        let large = centric_score(&blob(1, 1, 7), 9, 9);
        let tiny = centric_score(&blob(4, 4, 1), 9, 9);
        assert!(centre > corner, "{centre} vs {corner}");
        assert!(large > centre && centre > tiny, "{large} {centre} {tiny}");
        let full = centric_score(&[1.0; 81], 9, 9);
        assert!((0.7..=1.0).contains(&full), "{full}");
    }

    #[test]
    fn no_positive_evidence_scores_zero() {
        assert_eq!(centric_score(&[-1.0; 49], 7, 7), 0.0);
        assert_eq!(centric_score(&[0.0; 49], 7, 7), 0.0);
    }

    #[test]
    fn the_map_is_the_weighted_classifier_applied_per_cell() {
        let head = ClassifierHead {
            classes: 2,
            channels: 2,
            weight: vec![1.0, 0.0, 0.0, 2.0],
        };
        let features = FeatureMap {
            channels: 2,
            height: 1,
            width: 2,
            data: vec![1.0, 2.0, 10.0, 20.0],
        };
        assert_eq!(activation_map(&head, &features, [(0, 1.0)]), vec![1.0, 2.0]);
        assert_eq!(
            activation_map(&head, &features, [(0, 0.5), (1, 0.25)]),
            vec![5.5, 11.0]
        );
    }
}
