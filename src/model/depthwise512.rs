//! The depthwise kxk convolution on CPUs with AVX-512, channels-last.
//!
//! Each output row is computed a few pixels (`R`) at a time, and for those pixels every group of
//! 16 channels in turn: `R` independent accumulators hide the fused multiply-add latency, and the
//! input window of those pixels (all channels) stays in L1 while its channel groups are
//! computed. Each input vector of the window is loaded once per window row and feeds every tap
//! that reads it (see [`row`]). Input is read straight from the unpadded tensor: columns outside
//! the image are masked loads that read nothing, rows outside it are skipped. Bias and ReLU6 are
//! applied before the single store; a channel count that is not a multiple of 16 ends with
//! masked loads and stores.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

/// The shape of one depthwise layer's input and output.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    pub h: usize,
    pub w: usize,
    pub channels: usize,
    pub stride: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    pub ow: usize,
}

/// Whether [`rows_for`] has a kernel for a `kernel` x `kernel` convolution of stride `stride`.
pub fn supports(kernel: usize, stride: usize) -> bool {
    matches!((kernel, stride), (3 | 5, 1 | 2))
}

/// [`rows`] for the layer's kernel size and the geometry's stride, with the output pixels per
/// group measured best for each (`depthwise_speed`, one thread): 8 for 3x3 stride 1, 4
/// otherwise (3x3 stride 2 with 8 reads 17 columns a row and ran at 28 GFLOP/s against 38;
/// 5x5 with 8 was faster on 33x33 maps and slower on 17x17 ones). `count` output rows (1 or
/// 2) from `oy`.
///
/// # Safety
/// As [`rows`]; and [`supports`]`(kernel, g.stride)`.
///
/// # Panics
/// When the shape is not supported (callers check [`supports`] first), or `count` is not 1 or 2.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn rows_for(
    kernel: usize,
    g: &Geometry,
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    relu6: bool,
    oy: usize,
    count: usize,
    out: &mut [f32],
) {
    match (kernel, g.stride, count) {
        (3, 1, 1) => rows::<3, 8, 1, 1>(g, input, weight, bias, relu6, oy, out),
        (3, 1, 2) => rows::<3, 8, 1, 2>(g, input, weight, bias, relu6, oy, out),
        (5, 1, 1) => rows::<5, 4, 1, 1>(g, input, weight, bias, relu6, oy, out),
        (5, 1, 2) => rows::<5, 4, 1, 2>(g, input, weight, bias, relu6, oy, out),
        // Stride 2: two rows share one input row of three (five), which did not pay for the
        // registers (3x3: 21 GFLOP/s in pairs against 25 one at a time).
        (k @ (3 | 5), 2, 1 | 2) => {
            let row_len = g.ow * g.channels;
            for (n, out) in out.chunks_mut(row_len).take(count).enumerate() {
                if k == 3 {
                    rows::<3, 4, 2, 1>(g, input, weight, bias, relu6, oy + n, out);
                } else {
                    rows::<5, 4, 2, 1>(g, input, weight, bias, relu6, oy + n, out);
                }
            }
        }
        (k, s, n) => {
            panic!("no AVX-512 depthwise kernel for {k}x{k} stride {s}, {n} rows. This is a bug.")
        }
    }
}

/// Most input columns one group of output pixels reads: `(R - 1) * S + K` for the kernels
/// dispatched (3x3 R 8 stride 2: 17).
const MAX_SPAN: usize = 17;

/// Output rows `oy..oy + N` of one image, `R` output pixels at a time. `input` is the image
/// (`h * w * channels`), `out` the rows (`N * ow * channels`), `weight` is `[tap][channel]`;
/// the stride is `S` (the geometry's stride must be `S`).
///
/// For each input row of the window the `(R - 1) * S + K` input vectors the group reads are
/// loaded once, walking one pointer along the row, and each feeds every tap that reads it
/// (`acc[r] += x[r * S + kx] * w[kx]`): 13 loads for 24 multiply-adds (3x3, R = 8), where
/// loading per tap took 27 and, with `K * R` addresses live at once, spilled the pointers to
/// the stack (a reload per load). A column outside the image is loaded with an empty mask
/// (which reads nothing and gives zeros), so the edge groups run the same loop.
///
/// Two output rows at once (`N = 2`) share the input rows both read: a 3x3 stride-1 pair
/// loads 4 rows for 2 outputs instead of 3 for each. The input comes from L2 (three rows of
/// a 65-pixel, 144-channel map are 112 KB), so the loads, not the multiply-adds, set the pace.
///
/// # Safety
/// The CPU must have AVX-512F, and the slices must have the sizes above.
#[target_feature(enable = "avx512f")]
pub unsafe fn rows<const K: usize, const R: usize, const S: usize, const N: usize>(
    g: &Geometry,
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    relu6: bool,
    oy: usize,
    out: &mut [f32],
) {
    let span = (R - 1) * S + K;
    debug_assert!(span <= MAX_SPAN && g.stride == S);
    debug_assert!(input.len() >= g.h * g.w * g.channels);
    debug_assert!(out.len() >= N * g.ow * g.channels);
    let c = g.channels;
    // The first input row the first output row reads, and the window's input rows
    // `0..(N - 1) * S + K` from there that lie inside the image.
    let y0 = (oy * S) as isize - g.pad_top as isize;
    let window_rows = (N - 1) * S + K;
    let ky_lo = (-y0).max(0) as usize;
    let ky_hi = window_rows.min((g.h as isize - y0).max(0) as usize);
    let zero = _mm512_setzero_ps();
    let six = _mm512_set1_ps(6.0);
    let inp = input.as_ptr();
    let dst = out.as_mut_ptr();
    let row_len = g.ow * c;
    let mut ox = 0;
    while ox < g.ow {
        // Input column of the group's first tap, and which of its `span` columns lie inside
        // the image (as a mask per column: all lanes or none).
        let x0 = (ox * S) as isize - g.pad_left as isize;
        let mut inside = [0u16; MAX_SPAN];
        for (j, m) in inside.iter_mut().enumerate().take(span) {
            let ix = x0 + j as isize;
            *m = if ix >= 0 && (ix as usize) < g.w {
                0xFFFF
            } else {
                0
            };
        }
        let interior = inside[..span].iter().all(|&m| m == 0xFFFF);
        let pixels = R.min(g.ow - ox);
        let mut c0 = 0;
        while c0 < c {
            let lanes = (c - c0).min(16);
            let mask: __mmask16 = if lanes == 16 {
                0xFFFF
            } else {
                (1u16 << lanes) - 1
            };
            let wt = weight.as_ptr().add(c0);
            let mut acc = [[_mm512_maskz_loadu_ps(mask, bias.as_ptr().add(c0)); R]; N];
            for ky in ky_lo..ky_hi {
                let line = inp
                    .wrapping_offset((((y0 + ky as isize) * g.w as isize) + x0) * c as isize)
                    .wrapping_add(c0);
                let mut x = [zero; MAX_SPAN];
                let mut at = line;
                for (j, xj) in x.iter_mut().enumerate().take(span) {
                    let m = if interior { mask } else { inside[j] & mask };
                    *xj = _mm512_maskz_loadu_ps(m, at);
                    at = at.wrapping_add(c);
                }
                // Output row `n` reads this input row with its kernel row `ky - n * S`.
                for (n, acc_n) in acc.iter_mut().enumerate() {
                    let Some(tap_row) = ky.checked_sub(n * S).filter(|&t| t < K) else {
                        continue;
                    };
                    for kx in 0..K {
                        let wv = _mm512_maskz_loadu_ps(mask, wt.add((tap_row * K + kx) * c));
                        for (r, a) in acc_n.iter_mut().enumerate() {
                            *a = _mm512_fmadd_ps(x[r * S + kx], wv, *a);
                        }
                    }
                }
            }
            for (n, acc_n) in acc.iter().enumerate() {
                for (r, &a) in acc_n.iter().enumerate().take(pixels) {
                    let v = if relu6 {
                        _mm512_min_ps(_mm512_max_ps(a, zero), six)
                    } else {
                        a
                    };
                    _mm512_mask_storeu_ps(dst.add(n * row_len + (ox + r) * c + c0), mask, v);
                }
            }
            c0 += 16;
        }
        ox += R;
    }
}

#[cfg(test)]
mod speed {
    use super::*;

    /// GFLOP/s of one thread on Lite2's depthwise shapes (the input in L1-L3 as it comes):
    /// `RAYON_NUM_THREADS=1 cargo test --release --lib depthwise_speed -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn depthwise_speed() {
        for (h, c, k, s) in [
            (130usize, 32usize, 3usize, 1usize),
            (130, 96, 3, 2),
            (65, 144, 3, 1),
            (33, 288, 5, 1),
            (17, 720, 5, 1),
            (17, 528, 3, 1),
            (9, 1248, 5, 1),
        ] {
            let ow = h.div_ceil(s);
            let pad = ((ow - 1) * s + k).saturating_sub(h);
            let g = Geometry {
                h,
                w: h,
                channels: c,
                stride: s,
                pad_top: pad / 2,
                pad_left: pad / 2,
                ow,
            };
            let input = vec![0.5f32; h * h * c];
            let weight = vec![0.01f32; k * k * c];
            let bias = vec![0f32; c];
            let mut out = vec![0f32; 2 * ow * c];
            let macs = (ow * ow * c * k * k) as f64;
            let reps = (1e9 / macs).ceil() as usize;
            let t = std::time::Instant::now();
            for _ in 0..reps {
                for oy in (0..ow).step_by(2) {
                    let count = (ow - oy).min(2);
                    // SAFETY: a test on this project's CPUs, which have AVX-512F; the
                    // buffers have the geometry's sizes.
                    unsafe { rows_for(k, &g, &input, &weight, &bias, true, oy, count, &mut out) };
                }
            }
            let gf = 2.0 * macs * reps as f64 / t.elapsed().as_secs_f64() / 1e9;
            println!("{h}x{h}x{c} k{k} s{s}: {gf:.1} GFLOP/s");
        }
    }
}
