//! The horizontal pass of the Pillow-exact bicubic resize ([`super::resize`]) on CPUs with
//! AVX-512 VBMI: up to sixteen output pixels of one channel per vector.
//!
//! The SSE4.1 row computes one output pixel at a time with a 32-bit multiply per tap, ~16 % of
//! decoding and preprocessing an ImageNet-size JPEG. Here a vector holds, for a group of
//! neighbouring output pixels, two taps' input bytes each, widened to 16 bits: `vpermt2b` picks
//! them straight out of the 128 interleaved RGB bytes the group's taps cover (no de-interleaving
//! pass), and `vpmaddwd` multiplies and adds a pair of taps in one instruction.
//!
//! `vpmaddwd` takes 16-bit weights and Pillow's are 22-bit fixed point, so each weight is split
//! `w = hi * 2^11 + lo` (`hi` in -2048..=2048, `lo` in 0..2048) and the sum rebuilt as
//! `(Σ p·hi << 11) + Σ p·lo` in wrapping 32-bit arithmetic. That equals Pillow's sum modulo
//! 2^32, and Pillow's sum fits in 32 bits, so the bytes are Pillow's exactly.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use super::resize::{Taps, HALF, PRECISION_BITS};

/// Output pixels a vector can hold (one 32-bit lane each).
const LANES: usize = 16;

/// The bytes `vpermt2b` picks from (two 64-byte registers): a group's taps must lie within them.
const WINDOW_BYTES: usize = 128;

/// Bits of a weight's low part.
const LO_BITS: u32 = 11;

/// The tables of one resize's horizontal pass: which input bytes and weights each group of
/// output pixels uses. Built once per resize and shared by all its rows.
pub(super) struct Groups {
    /// Per group: the byte offset in the line its window starts at, and its output pixels.
    groups: Vec<(usize, usize)>,
    /// Tap pairs per output pixel (the taps' `ksize`, rounded up to even, halved).
    pairs: usize,
    /// Per group and tap pair: for output pixel `j`, bytes `4j` and `4j + 2` index its two
    /// taps' red bytes in the window (green and blue are one and two further on).
    index: Vec<[u8; 64]>,
    /// Per group and tap pair: the `hi` words then the `lo` words, two per output pixel in the
    /// order of `index`.
    weights: Vec<[i16; 32]>,
    /// Output pixels in all.
    width: usize,
}

impl Groups {
    /// The tables for output pixels `left..left + width` of `taps`, in groups of 16, or of 8
    /// or 4 when a larger downscale spreads 16 pixels' taps over more than 128 bytes. `None`
    /// when even 4 do not fit (a downscale of more than about 5x).
    pub(super) fn new(taps: &Taps, left: usize, width: usize) -> Option<Groups> {
        [LANES, LANES / 2, LANES / 4]
            .into_iter()
            .find_map(|per_group| Groups::with(taps, left, width, per_group))
    }

    fn with(taps: &Taps, left: usize, width: usize, per_group: usize) -> Option<Groups> {
        let pairs = taps.ksize.div_ceil(2);
        let mut tables = Groups {
            groups: Vec::with_capacity(width.div_ceil(per_group)),
            pairs,
            index: Vec::new(),
            weights: Vec::new(),
            width,
        };
        for first in (left..left + width).step_by(per_group) {
            let outputs = per_group.min(left + width - first);
            let base = taps.bounds[first].0;
            let end = (first..first + outputs)
                .map(|x| taps.bounds[x].0 + taps.bounds[x].1)
                .max()
                .unwrap_or(base);
            if 3 * (end - base) > WINDOW_BYTES {
                return None;
            }
            tables.groups.push((3 * base, outputs));
            for pair in 0..pairs {
                let mut index = [0u8; 64];
                let (mut hi, mut lo) = ([0i16; 32], [0i16; 32]);
                for j in 0..outputs {
                    let (start, weights) = taps.of(first + j);
                    for t in 0..2 {
                        let k = 2 * pair + t;
                        let Some(&w) = weights.get(k) else { continue };
                        // Below WINDOW_BYTES - 2, checked above.
                        index[4 * j + 2 * t] = (3 * (start + k - base)) as u8;
                        hi[2 * j + t] = (w >> LO_BITS) as i16;
                        lo[2 * j + t] = (w & ((1 << LO_BITS) - 1)) as i16;
                    }
                }
                tables.index.push(index);
                tables.weights.push(hi);
                tables.weights.push(lo);
            }
        }
        Some(tables)
    }

    /// One row: the red, green and blue rows of the output (`width` bytes each) from the RGB
    /// `line` the taps were made for.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F, BW and VBMI.
    ///
    /// # Panics
    /// If an output row is not `width` bytes long (or the line is empty).
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    pub(super) unsafe fn row(&self, line: &[u8], mut out: [&mut [u8]; 3]) {
        for plane in &out {
            assert_eq!(plane.len(), self.width, "resize row length. This is a bug.");
        }
        let even_bytes = 0x5555_5555_5555_5555u64;
        let channel = [0i16, 1, 2].map(|c| _mm512_set1_epi16(c));
        let mut at = 0;
        for (g, &(base, outputs)) in self.groups.iter().enumerate() {
            assert!(base < line.len(), "resize line length. This is a bug.");
            let ptr = line.as_ptr().add(base);
            let available = line.len() - base;
            // SAFETY (both loads): masked-off bytes are not read, and the mask ends at the line.
            let low = _mm512_maskz_loadu_epi8(first_bytes(available), ptr.cast());
            let high = if available > 64 {
                _mm512_maskz_loadu_epi8(first_bytes(available - 64), ptr.add(64).cast())
            } else {
                _mm512_setzero_si512()
            };
            let mut sum_hi = [_mm512_setzero_si512(); 3];
            let mut sum_lo = [_mm512_set1_epi32(HALF); 3];
            for pair in g * self.pairs..(g + 1) * self.pairs {
                let index = _mm512_loadu_si512(self.index[pair].as_ptr().cast());
                let hi = _mm512_loadu_si512(self.weights[2 * pair].as_ptr().cast());
                let lo = _mm512_loadu_si512(self.weights[2 * pair + 1].as_ptr().cast());
                for c in 0..3 {
                    let taps = _mm512_add_epi8(index, channel[c]);
                    let pixels = _mm512_maskz_permutex2var_epi8(even_bytes, low, taps, high);
                    sum_hi[c] = _mm512_add_epi32(sum_hi[c], _mm512_madd_epi16(pixels, hi));
                    sum_lo[c] = _mm512_add_epi32(sum_lo[c], _mm512_madd_epi16(pixels, lo));
                }
            }
            for (c, plane) in out.iter_mut().enumerate() {
                let sum = _mm512_add_epi32(_mm512_slli_epi32::<LO_BITS>(sum_hi[c]), sum_lo[c]);
                let shifted = _mm512_srai_epi32::<PRECISION_BITS>(sum);
                // clip8: negative to 0 here, above 255 by the unsigned saturating narrow.
                let bytes =
                    _mm512_cvtusepi32_epi8(_mm512_max_epi32(shifted, _mm512_setzero_si512()));
                // SAFETY: at + outputs <= width = plane.len() (the groups cover `width` pixels).
                _mm512_mask_storeu_epi8(
                    plane.as_mut_ptr().add(at).cast(),
                    first_bytes(outputs),
                    _mm512_castsi128_si512(bytes),
                );
            }
            at += outputs;
        }
    }
}

/// The mask of the first `n` bytes of a 64-byte vector.
fn first_bytes(n: usize) -> u64 {
    if n >= 64 {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

/// Whether this CPU can run [`Groups::row`].
pub(super) fn available() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vbmi")
}
