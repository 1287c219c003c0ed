//! Bicubic resampling that reproduces Pillow's `Image.resize(..., Image.BICUBIC)` bit for bit.
//!
//! The model's reference preprocessing (and the weights' training pipeline) used Pillow, and the
//! golden tests compare logits to 1e-3, so "a bicubic resize" is not good enough: a different
//! kernel support or rounding moves pixels by one or two levels and logits by more than that.
//! This is Pillow's separable convolution (`libImaging/Resample.c`): a horizontal pass into an
//! 8-bit intermediate, then a vertical pass, with coefficients normalised to 22-bit fixed point.
//! A pass is skipped when its axis keeps its size, exactly as Pillow does.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use image::RgbImage;

#[cfg(target_arch = "x86_64")]
use super::resize512;

/// Fixed-point precision of the 8-bit path (`32 - 8 - 2` in Pillow).
pub(super) const PRECISION_BITS: u32 = 22;

/// Pillow's bicubic kernel (a = -0.5), support 2.
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Per-output-pixel filter taps: the first input index and its fixed-point weights.
pub(super) struct Taps {
    /// The axis these taps resize: `(input size, output size)`.
    sizes: (usize, usize),
    /// `(first input index, number of taps)` per output pixel.
    pub(super) bounds: Vec<(usize, usize)>,
    /// `ksize` weights per output pixel, 22-bit fixed point.
    weights: Vec<i32>,
    /// Most taps of any output pixel.
    pub(super) ksize: usize,
}

impl Taps {
    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for the whole axis `0..in_size`.
    fn new(in_size: usize, out_size: usize) -> Taps {
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = 2.0 * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let mut bounds = Vec::with_capacity(out_size);
        let mut weights = vec![0i32; out_size * ksize];
        let mut k = vec![0f64; ksize];
        for xx in 0..out_size {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            // C's `(int)` truncates toward zero; negative values are clamped to 0 right after.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let count = xmax.saturating_sub(xmin);
            let mut total = 0.0;
            for (x, slot) in k.iter_mut().enumerate().take(count) {
                let w = bicubic((x as f64 + xmin as f64 - center + 0.5) * ss);
                *slot = w;
                total += w;
            }
            let row = &mut weights[xx * ksize..(xx + 1) * ksize];
            for (x, slot) in row.iter_mut().enumerate().take(count) {
                let w = if total != 0.0 { k[x] / total } else { k[x] };
                let fixed = w * f64::from(1u32 << PRECISION_BITS);
                *slot = if w < 0.0 {
                    (fixed - 0.5) as i32
                } else {
                    (fixed + 0.5) as i32
                };
            }
            bounds.push((xmin, count));
        }
        Taps {
            sizes: (in_size, out_size),
            bounds,
            weights,
            ksize,
        }
    }

    /// [`Taps::new`] from this thread's cache of the last few axes: a service sees the same
    /// photo sizes again and again, and the kernel's f64 evaluations were ~2 % of decoding and
    /// preprocessing an ImageNet-size JPEG.
    fn cached(in_size: usize, out_size: usize) -> Rc<Taps> {
        /// Axes kept per thread (two per resize).
        const KEPT: usize = 8;
        thread_local! {
            static RECENT: RefCell<VecDeque<Rc<Taps>>> = const { RefCell::new(VecDeque::new()) };
        }
        RECENT.with_borrow_mut(|recent| {
            let found = recent
                .iter()
                .position(|taps| taps.sizes == (in_size, out_size));
            let taps = match found.and_then(|i| recent.remove(i)) {
                Some(taps) => taps,
                None => Rc::new(Taps::new(in_size, out_size)),
            };
            recent.truncate(KEPT - 1);
            recent.push_front(Rc::clone(&taps));
            taps
        })
    }

    pub(super) fn of(&self, out: usize) -> (usize, &[i32]) {
        let (start, count) = self.bounds[out];
        (
            start,
            &self.weights[out * self.ksize..out * self.ksize + count],
        )
    }
}

/// Pillow's `clip8`: drop the fixed-point fraction and clamp to 0..=255.
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// The rounding offset every accumulator starts from (one half in fixed point).
pub(super) const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// One row of one resize's horizontal pass: the red, green and blue rows of the output (its
/// three planes) from the RGB `line`.
type HorizontalRow<'a> = Box<dyn Fn(&[u8], [&mut [u8]; 3]) + 'a>;

/// The horizontal pass's row for output pixels `left..left + width` of `taps`, for this CPU:
/// with AVX-512 VBMI up to sixteen output pixels of a channel are one vector (see
/// [`resize512`]); with SSE4.1 the three channels of a pixel are one vector (see
/// [`horizontal_row_sse41`]); elsewhere [`horizontal_row`].
fn horizontal_row_for_this_cpu(taps: &Taps, left: usize, width: usize) -> HorizontalRow<'_> {
    #[cfg(target_arch = "x86_64")]
    {
        if resize512::available() {
            if let Some(groups) = resize512::Groups::new(taps, left, width) {
                // SAFETY: the CPU has AVX-512 F, BW and VBMI, checked just above.
                return Box::new(move |line, out| unsafe { groups.row(line, out) });
            }
        }
        if std::arch::is_x86_feature_detected!("sse4.1") {
            // SAFETY: the CPU has SSE4.1, checked just above.
            return Box::new(move |line, out| unsafe {
                horizontal_row_sse41(line, taps, left, out)
            });
        }
    }
    Box::new(move |line, out| horizontal_row(line, taps, left, out))
}

/// One row of the horizontal pass in portable scalar code, output pixels `left..` of `taps`
/// into the three planes' rows: three accumulators a pixel.
fn horizontal_row(line: &[u8], taps: &Taps, left: usize, [red, green, blue]: [&mut [u8]; 3]) {
    let pixels = red.iter_mut().zip(green.iter_mut()).zip(blue.iter_mut());
    for (x, ((r_out, g_out), b_out)) in pixels.enumerate() {
        let (start, weights) = taps.of(left + x);
        // The taps' pixels as one slice: the loop below then has no bounds checks.
        let window = &line[start * 3..(start + weights.len()) * 3];
        let (mut r, mut g, mut b) = (HALF, HALF, HALF);
        for (p, &wt) in window.chunks_exact(3).zip(weights) {
            r += i32::from(p[0]) * wt;
            g += i32::from(p[1]) * wt;
            b += i32::from(p[2]) * wt;
        }
        *r_out = clip8(r);
        *g_out = clip8(g);
        *b_out = clip8(b);
    }
}

/// [`horizontal_row`] with SSE4.1: a tap is one 4-byte load (the pixel's R, G, B and the next
/// pixel's R, whose lane is computed and dropped) widened to four i32 lanes, one 32-bit multiply
/// by the weight and one add, instead of three scalar multiply-adds. Integer sums do not depend
/// on their order, so the bytes are Pillow's exactly; the shift and the two saturating packs are
/// [`clip8`]. A pixel whose last tap ends the line (the 4-byte load would pass its end) takes
/// the scalar path.
///
/// # Safety
/// The CPU must have SSE4.1.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.1")]
unsafe fn horizontal_row_sse41(
    line: &[u8],
    taps: &Taps,
    left: usize,
    [red, green, blue]: [&mut [u8]; 3],
) {
    use std::arch::x86_64::{
        _mm_add_epi32, _mm_cvtepu8_epi32, _mm_cvtsi128_si32, _mm_cvtsi32_si128, _mm_mullo_epi32,
        _mm_packs_epi32, _mm_packus_epi16, _mm_set1_epi32, _mm_srai_epi32,
    };
    for x in 0..red.len().min(green.len()).min(blue.len()) {
        let (start, weights) = taps.of(left + x);
        if (start + weights.len()) * 3 + 1 > line.len() {
            horizontal_row(
                line,
                taps,
                left + x,
                [&mut red[x..=x], &mut green[x..=x], &mut blue[x..=x]],
            );
            continue;
        }
        let base = line[start * 3..].as_ptr();
        let mut acc = _mm_set1_epi32(HALF);
        for (i, &wt) in weights.iter().enumerate() {
            // SAFETY: bytes start*3 + 3i .. + 4 lie inside `line` (checked above for the last
            // tap; earlier taps end before it).
            let bytes = unsafe { std::ptr::read_unaligned(base.add(i * 3).cast::<i32>()) };
            let pixel = _mm_cvtepu8_epi32(_mm_cvtsi32_si128(bytes));
            acc = _mm_add_epi32(acc, _mm_mullo_epi32(pixel, _mm_set1_epi32(wt)));
        }
        let v = _mm_srai_epi32::<{ PRECISION_BITS as i32 }>(acc);
        let v = _mm_packus_epi16(_mm_packs_epi32(v, v), _mm_packs_epi32(v, v));
        [red[x], green[x], blue[x], _] = _mm_cvtsi128_si32(v).to_le_bytes();
    }
}

/// Resizes `src` to `width` × `height` exactly as Pillow's bicubic filter does.
///
/// # Panics
/// If `width` or `height` is zero (callers compute them from a validated, non-empty image).
pub fn resize_bicubic(src: &RgbImage, width: u32, height: u32) -> RgbImage {
    resize_bicubic_window(src, width, height, (0, 0, width, height))
}

/// The `(left, top, w, h)` window of [`resize_bicubic`]`(src, width, height)`: see
/// [`resize_window_planes`], interleaved back into an RGB image.
///
/// # Panics
/// As [`resize_window_planes`].
pub fn resize_bicubic_window(
    src: &RgbImage,
    width: u32,
    height: u32,
    window: (u32, u32, u32, u32),
) -> RgbImage {
    let planes = resize_window_planes(src, width, height, window, |level| level);
    let n = planes.len() / 3;
    let (red, rest) = planes.split_at(n);
    let (green, blue) = rest.split_at(n);
    let rgb = red
        .iter()
        .zip(green)
        .zip(blue)
        .flat_map(|((&r, &g), &b)| [r, g, b])
        .collect();
    RgbImage::from_raw(window.2, window.3, rgb).expect("buffer sized above. This is a bug.")
}

/// The `(left, top, w, h)` window of [`resize_bicubic`]`(src, width, height)`, channel-major:
/// the red, green and blue planes of `w × h` samples each, the layout the model's input takes,
/// each pixel's 8-bit level turned into a sample by `sample` as it is written (the model's
/// normalisation, or none). Only the window's pixels are computed: each output pixel depends
/// on its own taps alone, so the window is identical to cropping the full resize, for the cost
/// of the window (a centre crop of 224 out of a 385 x 256 resize is 58 % of it).
///
/// # Panics
/// If the resize is empty or the window does not fit in it (callers compute both from a
/// validated, non-empty image).
pub(super) fn resize_window_planes<T: Copy>(
    src: &RgbImage,
    width: u32,
    height: u32,
    window: (u32, u32, u32, u32),
    sample: impl Fn(u8) -> T + Copy,
) -> Vec<T> {
    resize_rows_window_planes(&mut ImageRows(src), width, height, window, sample)
}

/// Where a resize reads its input: rows of three 8-bit channels a pixel.
pub(super) trait Rows {
    /// `(width, height)` in pixels.
    fn size(&self) -> (usize, usize);
    /// Row `y` (`0..height`), `3 × width` bytes.
    fn row(&mut self, y: usize) -> &[u8];
}

/// An RGB image's own rows.
struct ImageRows<'a>(&'a RgbImage);

impl Rows for ImageRows<'_> {
    fn size(&self) -> (usize, usize) {
        (self.0.width() as usize, self.0.height() as usize)
    }

    fn row(&mut self, y: usize) -> &[u8] {
        let stride = 3 * self.0.width() as usize;
        &self.0.as_raw()[y * stride..(y + 1) * stride]
    }
}

/// [`resize_window_planes`] of any [`Rows`]: only the rows the window needs are asked for, once
/// each, top to bottom. The three channels are resized alike, whatever they hold.
///
/// # Panics
/// As [`resize_window_planes`].
pub(super) fn resize_rows_window_planes<T: Copy>(
    src: &mut impl Rows,
    width: u32,
    height: u32,
    (left, top, w, h): (u32, u32, u32, u32),
    sample: impl Fn(u8) -> T + Copy,
) -> Vec<T> {
    assert!(
        width > 0 && height > 0 && w > 0 && h > 0 && left + w <= width && top + h <= height,
        "resize window out of range. This is a bug."
    );
    let (in_w, in_h) = src.size();
    let (out_w, out_h) = (width as usize, height as usize);
    let (left, top, win_w, win_h) = (left as usize, top as usize, w as usize, h as usize);

    // Horizontal pass over the input rows the vertical pass will read (Pillow's ybox), for the
    // window's columns only. Skipped, as in Pillow, when the width does not change.
    let vertical = (out_h != in_h).then(|| Taps::cached(in_h, out_h));
    let (first_row, last_row) = read_span(vertical.as_deref(), top, win_h);
    let plane = (last_row - first_row) * win_w;
    with_scratch(3 * plane, |temp| {
        let (red, rest) = temp.split_at_mut(plane);
        let (green, blue) = rest.split_at_mut(plane);
        let rows = red
            .chunks_exact_mut(win_w)
            .zip(green.chunks_exact_mut(win_w))
            .zip(blue.chunks_exact_mut(win_w));
        let lines = first_row..last_row;
        if out_w != in_w {
            let taps = Taps::cached(in_w, out_w);
            let row = horizontal_row_for_this_cpu(&taps, left, win_w);
            for (((r, g), b), y) in rows.zip(lines) {
                row(src.row(y), [r, g, b]);
            }
        } else {
            for (((r, g), b), y) in rows.zip(lines) {
                let line = src.row(y);
                for (x, p) in line[left * 3..].chunks_exact(3).take(win_w).enumerate() {
                    [r[x], g[x], b[x]] = [p[0], p[1], p[2]];
                }
            }
        }

        let Some(vertical) = vertical else {
            return temp.iter().map(|&level| sample(level)).collect();
        };
        let mut out = Vec::with_capacity(3 * win_h * win_w);
        for temp in temp.chunks_exact(plane) {
            let window = VerticalWindow {
                temp,
                stride: win_w,
                first_row,
                taps: &vertical,
                top,
                rows: win_h,
            };
            vertical_pass_for_this_cpu(&window, &mut out, sample);
        }
        out
    })
}

/// Runs `f` on a `len`-byte buffer this thread keeps between calls. Every byte of it is written
/// before it is read, so a reused buffer needs no zeroing: allocating and zeroing a fresh one for
/// each image was ~4 % of a decode worker's time under load (`perf` of `labeld serve`).
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    /// Enough for any photo the size of a 12-MP one, which the decoder scales down first.
    const KEPT_BYTES: usize = 4 << 20;
    thread_local! {
        static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    // Taken out for the call: a nested call would get a buffer of its own, not a second borrow.
    let mut buffer = SCRATCH.with_borrow_mut(std::mem::take);
    if buffer.len() < len {
        buffer.resize(len, 0);
    }
    let out = f(&mut buffer[..len]);
    // A panorama's buffer is not kept: a worker holds at most `KEPT_BYTES` between images.
    if buffer.len() <= KEPT_BYTES {
        SCRATCH.with_borrow_mut(|kept| *kept = buffer);
    }
    out
}

/// The input indices `first..end` that output pixels `start..start + len` of an axis read:
/// `taps` of a resized axis, or the same indices where the axis keeps its size (`None`).
fn read_span(taps: Option<&Taps>, start: usize, len: usize) -> (usize, usize) {
    match taps {
        None => (start, start + len),
        Some(taps) => taps.bounds[start..start + len]
            .iter()
            .fold((usize::MAX, 0), |(first, end), &(from, count)| {
                (first.min(from), end.max(from + count))
            }),
    }
}

/// The input pixels [`resize_rows_window_planes`] reads for the `(left, top, w, h)` window of a
/// resize of `in_w × in_h` to `width × height`, as `(left, top, right, bottom)` with exclusive
/// ends: a decoder that is told this may leave everything outside it undecoded.
///
/// # Panics
/// As [`resize_window_planes`].
pub(super) fn source_window(
    (in_w, in_h): (usize, usize),
    width: u32,
    height: u32,
    (left, top, w, h): (u32, u32, u32, u32),
) -> (usize, usize, usize, usize) {
    assert!(
        width > 0 && height > 0 && w > 0 && h > 0 && left + w <= width && top + h <= height,
        "resize window out of range. This is a bug."
    );
    let (out_w, out_h) = (width as usize, height as usize);
    let columns = (out_w != in_w).then(|| Taps::cached(in_w, out_w));
    let rows = (out_h != in_h).then(|| Taps::cached(in_h, out_h));
    let (x0, x1) = read_span(columns.as_deref(), left as usize, w as usize);
    let (y0, y1) = read_span(rows.as_deref(), top as usize, h as usize);
    (x0, y0, x1, y1)
}

/// The vertical pass's input: the horizontal pass's rows `first_row..` (each `stride` bytes)
/// in `temp`, and the taps of output rows `top..top + rows`.
struct VerticalWindow<'a> {
    temp: &'a [u8],
    stride: usize,
    first_row: usize,
    taps: &'a Taps,
    top: usize,
    rows: usize,
}

/// [`vertical_pass`] for this CPU: the portable loop compiled for AVX-512 or AVX2 where the CPU
/// has it (sixteen or eight 32-bit lanes and a native 32-bit multiply, against SSE2's four and
/// an emulated multiply: the pass took ~10 % of decoding and preprocessing an ImageNet-size
/// JPEG). Integer sums, so the same bytes on every path.
fn vertical_pass_for_this_cpu<T>(
    window: &VerticalWindow<'_>,
    out: &mut Vec<T>,
    sample: impl Fn(u8) -> T + Copy,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
        {
            // SAFETY: the CPU has AVX-512 F and BW, checked just above.
            return unsafe { vertical_pass_avx512(window, out, sample) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { vertical_pass_avx2(window, out, sample) };
        }
    }
    vertical_pass(window, out, sample);
}

/// [`vertical_pass`] compiled for AVX-512.
///
/// # Safety
/// The CPU must have AVX-512 F and BW.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn vertical_pass_avx512<T>(
    window: &VerticalWindow<'_>,
    out: &mut Vec<T>,
    sample: impl Fn(u8) -> T + Copy,
) {
    vertical_pass(window, out, sample);
}

/// [`vertical_pass`] compiled for AVX2.
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn vertical_pass_avx2<T>(
    window: &VerticalWindow<'_>,
    out: &mut Vec<T>,
    sample: impl Fn(u8) -> T + Copy,
) {
    vertical_pass(window, out, sample);
}

/// The vertical pass in portable code: each output row's samples appended to `out`.
///
/// Columns go in runs of `RUN` with the accumulators held in registers over all of a row's
/// taps (a whole row of accumulators in memory was loaded and stored again at every tap); the
/// last, shorter run takes the same loop over a slice, whose length the compiler cannot fix.
#[inline(always)]
fn vertical_pass<T>(window: &VerticalWindow<'_>, out: &mut Vec<T>, sample: impl Fn(u8) -> T) {
    /// Columns a run: two AVX-512 or four AVX2 registers of 32-bit accumulators.
    const RUN: usize = 32;
    let stride = window.stride;
    for yy in 0..window.rows {
        let (start, weights) = window.taps.of(window.top + yy);
        let first = (start - window.first_row) * stride;
        let rows = &window.temp[first..first + weights.len() * stride];
        let mut x = 0;
        while x + RUN <= stride {
            let mut acc = [HALF; RUN];
            for (row, &wt) in rows.chunks_exact(stride).zip(weights) {
                let pixels: &[u8; RUN] = row[x..x + RUN].try_into().expect("RUN bytes");
                for (a, &p) in acc.iter_mut().zip(pixels) {
                    *a += i32::from(p) * wt;
                }
            }
            out.extend(acc.iter().map(|&a| sample(clip8(a))));
            x += RUN;
        }
        let mut acc = [HALF; RUN];
        let tail = stride - x;
        for (row, &wt) in rows.chunks_exact(stride).zip(weights) {
            for (a, &p) in acc.iter_mut().zip(&row[x..]) {
                *a += i32::from(p) * wt;
            }
        }
        out.extend(acc[..tail].iter().map(|&a| sample(clip8(a))));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::test_pixels::random_bytes;

    #[test]
    fn a_flat_image_stays_flat() {
        let src = RgbImage::from_pixel(37, 23, image::Rgb([200, 10, 99]));
        for (w, h) in [(10, 10), (37, 5), (80, 23), (1, 1)] {
            let out = resize_bicubic(&src, w, h);
            assert_eq!(out.dimensions(), (w, h));
            assert!(out.pixels().all(|p| p.0 == [200, 10, 99]), "{w}x{h}");
        }
    }

    #[test]
    fn same_size_is_the_identity() {
        let src = RgbImage::from_fn(9, 7, |x, y| image::Rgb([(x * 20) as u8, (y * 30) as u8, 7]));
        assert_eq!(resize_bicubic(&src, 9, 7), src);
    }

    #[test]
    fn a_window_equals_the_crop_of_the_full_resize() {
        let src = RgbImage::from_fn(61, 43, |x, y| {
            image::Rgb([(x * 7 + y) as u8, (y * 5) as u8, ((x ^ y) * 3) as u8])
        });
        for (w, h, window) in [
            (40, 25, (7, 3, 25, 20)),
            (61, 30, (10, 0, 40, 30)),
            (35, 43, (0, 9, 35, 20)),
            (61, 43, (5, 5, 9, 9)),
            (90, 70, (0, 0, 90, 70)),
        ] {
            let full = resize_bicubic(&src, w, h);
            let crop =
                image::imageops::crop_imm(&full, window.0, window.1, window.2, window.3).to_image();
            assert_eq!(
                resize_bicubic_window(&src, w, h, window),
                crop,
                "{w}x{h} {window:?}"
            );
        }
    }

    /// Down- and upscales (1.5x like an ImageNet-size photo, 3.4x and 9x that need smaller
    /// groups or none in the AVX-512 row), odd widths, and lines whose last taps end the line.
    const ROW_CASES: [(usize, usize); 10] = [
        (564, 256),
        (375, 224),
        (1000, 297),
        (640, 150),
        (2000, 224),
        (7, 3),
        (9, 40),
        (1, 5),
        (2, 1),
        (640, 297),
    ];

    /// Each case of [`ROW_CASES`] from every window start kind: `row(line, taps, left, width,
    /// planes)` against the scalar row's bytes.
    fn check_rows(row: impl Fn(&[u8], &Taps, usize, usize, [&mut [u8]; 3])) {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for (in_w, out_w) in ROW_CASES {
            let line = random_bytes(in_w * 3, &mut seed);
            let taps = Taps::new(in_w, out_w);
            for left in [0, out_w / 3, out_w - 1] {
                for width in [out_w - left, (out_w - left).min(17)] {
                    let mut want = vec![0u8; width * 3];
                    let mut got = vec![1u8; width * 3];
                    horizontal_row(&line, &taps, left, planes(&mut want, width));
                    row(&line, &taps, left, width, planes(&mut got, width));
                    assert_eq!(got, want, "{in_w} -> {out_w}, {width} from {left}");
                }
            }
        }
    }

    /// `buffer` as three planes of `width` bytes.
    fn planes(buffer: &mut [u8], width: usize) -> [&mut [u8]; 3] {
        let (red, rest) = buffer.split_at_mut(width);
        let (green, blue) = rest.split_at_mut(width);
        [red, green, blue]
    }

    /// The row this CPU runs writes the scalar row's bytes.
    #[test]
    fn the_cpu_specific_row_computes_what_the_scalar_row_computes() {
        check_rows(|line, taps, left, width, out| {
            horizontal_row_for_this_cpu(taps, left, width)(line, out)
        });
    }

    /// The SSE4.1 row (which an AVX-512 CPU only runs for downscales past ~5x) on its own.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_sse41_row_computes_what_the_scalar_row_computes() {
        if !std::arch::is_x86_feature_detected!("sse4.1") {
            eprintln!("skipped: this CPU has no SSE4.1");
            return;
        }
        // SAFETY: the CPU has SSE4.1, checked just above.
        check_rows(|line, taps, left, _, out| unsafe {
            horizontal_row_sse41(line, taps, left, out)
        });
    }

    /// The AVX-512 VBMI row on its own, in each group size it picks; the scales it cannot
    /// take are the ones expected.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx512_row_computes_what_the_scalar_row_computes() {
        let taps = Taps::new(564, 385);
        assert!(resize512::Groups::new(&taps, 80, 224).is_some());
        assert!(resize512::Groups::new(&Taps::new(2000, 224), 0, 224).is_none());
        if !resize512::available() {
            eprintln!("skipped: this CPU has no AVX-512 VBMI");
            return;
        }
        check_rows(|line, taps, left, width, out| {
            match resize512::Groups::new(taps, left, width) {
                // SAFETY: the CPU has AVX-512 F, BW and VBMI, checked above.
                Some(groups) => unsafe { groups.row(line, out) },
                None => horizontal_row(line, taps, left, out),
            }
        });
    }

    /// The vertical passes this CPU can run write the portable pass's bytes, and the same
    /// samples when the samples are not bytes: down- and upscales, windows from the first, a
    /// middle and the last output row, row lengths that are not a multiple of any vector width.
    #[test]
    fn the_cpu_specific_vertical_passes_compute_what_the_portable_pass_computes() {
        type Pass<T> = fn(&VerticalWindow<'_>, &mut Vec<T>);
        let mut bytes: Vec<(&str, Pass<u8>)> = vec![("dispatch", |w, out| {
            vertical_pass_for_this_cpu(w, out, |v| v)
        })];
        let mut floats: Vec<(&str, Pass<f32>)> = vec![("dispatch", |w, out| {
            vertical_pass_for_this_cpu(w, out, signed)
        })];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
            {
                // SAFETY: the CPU has AVX-512 F and BW, checked just above.
                bytes.push(("avx512", |w, out| unsafe {
                    vertical_pass_avx512(w, out, |v| v)
                }));
                floats.push(("avx512", |w, out| unsafe {
                    vertical_pass_avx512(w, out, signed)
                }));
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2, checked just above.
                bytes.push(("avx2", |w, out| unsafe {
                    vertical_pass_avx2(w, out, |v| v)
                }));
                floats.push(("avx2", |w, out| unsafe {
                    vertical_pass_avx2(w, out, signed)
                }));
            }
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for (in_h, out_h, stride) in [(375, 256, 672), (564, 224, 3 * 97), (7, 3, 5), (9, 40, 33)] {
            let temp = random_bytes(in_h * stride, &mut seed);
            let taps = Taps::new(in_h, out_h);
            for top in [0, out_h / 3, out_h - 1] {
                let first_row = taps.bounds[top].0;
                let window = VerticalWindow {
                    temp: &temp[first_row * stride..],
                    stride,
                    first_row,
                    taps: &taps,
                    top,
                    rows: out_h - top,
                };
                let mut want = Vec::new();
                vertical_pass(&window, &mut want, |v| v);
                assert_eq!(want.len(), (out_h - top) * stride);
                let want_floats: Vec<f32> = want.iter().map(|&v| signed(v)).collect();
                for (name, pass) in &bytes {
                    let mut got = vec![7u8; 3];
                    pass(&window, &mut got);
                    assert_eq!(got[..3], [7; 3], "{name} wrote over what was there");
                    assert_eq!(got[3..], want, "{name}: {in_h} -> {out_h}, from {top}");
                }
                for (name, pass) in &floats {
                    let mut got = Vec::new();
                    pass(&window, &mut got);
                    assert_eq!(
                        got, want_floats,
                        "{name} (f32): {in_h} -> {out_h}, from {top}"
                    );
                }
            }
        }
    }

    /// A sample that is not a byte: the level centred on zero.
    fn signed(level: u8) -> f32 {
        f32::from(level) - 128.0
    }

    /// The cache hands back the taps of the axis asked for, however many other axes came
    /// between.
    #[test]
    fn cached_taps_are_the_axis_asked_for() {
        for (in_size, out_size) in [(564, 385), (375, 256), (564, 385), (1000, 297), (10, 20)]
            .into_iter()
            .cycle()
            .take(40)
            .chain((1..20).map(|k| (100 + k, 50)))
            .chain([(564, 385), (375, 256)])
        {
            let cached = Taps::cached(in_size, out_size);
            let fresh = Taps::new(in_size, out_size);
            assert_eq!(cached.sizes, (in_size, out_size));
            assert_eq!(
                (&cached.bounds, &cached.weights, cached.ksize),
                (&fresh.bounds, &fresh.weights, fresh.ksize)
            );
        }
    }

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        let taps = Taps::new(1000, 297);
        for out in 0..297 {
            let (_, w) = taps.of(out);
            let sum: i32 = w.iter().sum();
            assert!(
                (sum - (1 << PRECISION_BITS)).abs() <= w.len() as i32,
                "{out}: {sum}"
            );
        }
    }
}
