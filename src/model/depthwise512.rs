//! The depthwise kxk convolution on CPUs with AVX-512, channels-last.
//!
//! Each output row is computed a few pixels (`R`) at a time, and for those pixels every group of
//! 16 channels in turn: `R` independent accumulators hide the fused multiply-add latency, and the
//! input window of those pixels (all channels) stays in L1 while its channel groups are
//! computed. Input is read straight from the unpadded tensor: pixel groups wholly inside the
//! image take a path without bounds checks, the others skip the taps outside it. Bias and ReLU6
//! are applied before the single store; a channel count that is not a multiple of 16 ends with
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

/// Output row `oy` of one image, interior pixels `R` at a time. `input` is the image (`h * w * channels`), `out` the row
/// (`ow * channels`), `weight` is `[tap][channel]`.
///
/// # Safety
/// The CPU must have AVX-512F, and the slices must have the sizes above.
#[target_feature(enable = "avx512f")]
pub unsafe fn row<const K: usize, const R: usize>(
    g: &Geometry,
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    relu6: bool,
    oy: usize,
    out: &mut [f32],
) {
    debug_assert!(input.len() >= g.h * g.w * g.channels);
    debug_assert!(out.len() >= g.ow * g.channels);
    let c = g.channels;
    let s = g.stride;
    let y0 = (oy * s) as isize - g.pad_top as isize;
    let ky_lo = (-y0).max(0) as usize;
    let ky_hi = K.min((g.h as isize - y0).max(0) as usize);
    // Output columns whose whole window is inside the image: [ox_lo, ox_hi).
    let ox_lo = g.pad_left.div_ceil(s);
    let ox_hi = if g.w + g.pad_left >= K {
        ((g.w + g.pad_left - K) / s + 1).min(g.ow)
    } else {
        0
    }
    .max(ox_lo);
    let full_rows = ky_lo == 0 && ky_hi == K;
    let zero = _mm512_setzero_ps();
    let six = _mm512_set1_ps(6.0);
    let inp = input.as_ptr();
    let dst = out.as_mut_ptr();
    let finish = |acc: __m512| {
        if relu6 {
            _mm512_min_ps(_mm512_max_ps(acc, zero), six)
        } else {
            acc
        }
    };
    // `R` output pixels at a time (R independent accumulator chains hide the fused
    // multiply-add latency), and for those pixels every group of 16 channels in turn: the input
    // window of R pixels (k rows x (R*s + k) columns x all channels) stays in L1 while all its
    // channel groups are computed. Weights are read per tap (they stay in L1 too). Groups wholly
    // inside the image take the unchecked path; the others skip taps outside the image, and the
    // last group stores only real pixels.
    let mut ox = 0;
    while ox < g.ow {
        let interior = full_rows && ox >= ox_lo && ox + R <= ox_hi;
        let mut c0 = 0;
        while c0 < c {
            let lanes = (c - c0).min(16);
            let mask: __mmask16 = if lanes == 16 {
                0xFFFF
            } else {
                (1u16 << lanes) - 1
            };
            let wt = weight.as_ptr().add(c0);
            let mut acc = [_mm512_maskz_loadu_ps(mask, bias.as_ptr().add(c0)); R];
            if interior {
                let base = inp.add(((y0 as usize) * g.w + ox * s - g.pad_left) * c + c0);
                for ky in 0..K {
                    for kx in 0..K {
                        let wv = _mm512_maskz_loadu_ps(mask, wt.add((ky * K + kx) * c));
                        for (r, a) in acc.iter_mut().enumerate() {
                            let x =
                                _mm512_maskz_loadu_ps(mask, base.add((ky * g.w + kx + r * s) * c));
                            *a = _mm512_fmadd_ps(x, wv, *a);
                        }
                    }
                }
            } else {
                for ky in ky_lo..ky_hi {
                    let line = inp.add(((y0 + ky as isize) as usize) * g.w * c + c0);
                    for kx in 0..K {
                        let wv = _mm512_maskz_loadu_ps(mask, wt.add((ky * K + kx) * c));
                        for (r, a) in acc.iter_mut().enumerate() {
                            // A tap outside the image loads nothing (an all-zero mask reads no
                            // memory) and adds zero: no branch, so the accumulators stay in
                            // registers.
                            let ix = ((ox + r) * s + kx) as isize - g.pad_left as isize;
                            let inside = ix >= 0 && (ix as usize) < g.w;
                            let m = if inside { mask } else { 0 };
                            let at = line.wrapping_offset(ix * c as isize);
                            let x = _mm512_maskz_loadu_ps(m, at);
                            *a = _mm512_fmadd_ps(x, wv, *a);
                        }
                    }
                }
            }
            for (r, &a) in acc.iter().enumerate().take(g.ow - ox) {
                _mm512_mask_storeu_ps(dst.add((ox + r) * c + c0), mask, finish(a));
            }
            c0 += 16;
        }
        ox += R;
    }
}
