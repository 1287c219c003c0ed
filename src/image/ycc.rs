//! A JPEG's colour components as the decoder leaves them (luma and chroma planes, chroma usually
//! at half resolution), made into the model's input without an RGB image of the original.
//!
//! Why: an ImageNet-size photo is decoded at full size (no smaller DCT scale covers the model's
//! input), chroma upsampled and every pixel converted to RGB, though the model only sees a
//! centre crop of a downscaled copy. Skipping that (and zune-jpeg for jpeg-decoder's faster
//! entropy decoding) took decoding and preprocessing from 0.67 to 0.60 ms of CPU a photo for
//! Lite0 (`examples/decode`, 2026-12-06; BENCHMARKS.md). So the components are
//! resized as they are, three channels alike (luma, blue and red difference), and colour is
//! converted once per model pixel. Chroma is repeated over the luma pixels it covers (its
//! JFIF siting) as the resize reads each row; the resize's own filter then smooths it, where a
//! decoder's "fancy" upsampling would have interpolated first. The result differs from
//! decode-then-convert by a level or two, as JPEG decoders differ among themselves.

use super::resize::Rows;

/// A decoded JPEG's components: one (grey) or three (Y, Cb, Cr), each with how many image
/// pixels one of its samples covers along each axis.
pub struct YccImage {
    width: usize,
    height: usize,
    planes: Vec<Component>,
    /// The interleaved row handed to the resize.
    row: Vec<u8>,
}

struct Component {
    plane: jpeg_decoder::Plane,
    /// Image pixels per sample, across and down (1 for luma, 2 for 4:2:0 chroma).
    per_sample: (usize, usize),
}

impl YccImage {
    /// The components of a `width × height` image, or `None` when they are not one grey or three
    /// YCbCr components whose sampling divides the largest evenly and whose planes cover the
    /// image (anything else goes through the decoder's own colour conversion).
    pub fn new(width: usize, height: usize, planes: jpeg_decoder::Planes) -> Option<YccImage> {
        use jpeg_decoder::ColorTransform;
        match (planes.planes.len(), planes.color_transform) {
            (1, ColorTransform::Grayscale) | (3, ColorTransform::YCbCr) => {}
            _ => return None,
        }
        if width == 0 || height == 0 {
            return None;
        }
        let h_max = planes
            .planes
            .iter()
            .map(|p| p.horizontal_sampling_factor)
            .max()?;
        let v_max = planes
            .planes
            .iter()
            .map(|p| p.vertical_sampling_factor)
            .max()?;
        let planes = planes
            .planes
            .into_iter()
            .map(|plane| {
                let (h, v) = (
                    plane.horizontal_sampling_factor,
                    plane.vertical_sampling_factor,
                );
                if h == 0 || v == 0 || h_max % h != 0 || v_max % v != 0 {
                    return None;
                }
                let per_sample = (usize::from(h_max / h), usize::from(v_max / v));
                let covers = plane.width * per_sample.0 >= width
                    && plane.height * per_sample.1 >= height
                    && plane.width > 0
                    && plane.stride >= plane.width
                    && plane.data.len() >= plane.height * plane.stride;
                covers.then_some(Component { plane, per_sample })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(YccImage {
            width,
            height,
            planes,
            // Grey writes only the first channel: no colour difference, so R = G = B = Y.
            row: [0, 128, 128].repeat(width),
        })
    }
}

/// The three resized channels (`Y`, `Cb`, `Cr` planes of `n` samples each, as
/// [`super::resize::resize_rows_window_planes`] writes them) as the model's RGB input:
/// JFIF's conversion in libjpeg's 16-bit fixed point (`jdcolor.c`), each channel clamped to
/// an 8-bit level as an RGB decode would store it, then `sample`d into CHW.
///
/// One channel after the other, each a straight pass that writes its plane in order: the
/// compiler vectorises those (eight pixels a step with AVX2), where one loop writing three
/// planes a pixel at a time into a zeroed buffer took ~12 % of decoding and preprocessing a
/// photo (`perf`, `examples/decode`).
pub fn planes_to_rgb<T: Copy>(ycc: &[u8], sample: impl Fn(u8) -> T + Copy) -> Vec<T> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { to_rgb_avx2(ycc, sample) };
        }
    }
    to_rgb_portable(ycc, sample)
}

/// [`to_rgb_portable`] compiled for AVX2.
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn to_rgb_avx2<T: Copy>(ycc: &[u8], sample: impl Fn(u8) -> T + Copy) -> Vec<T> {
    to_rgb_portable(ycc, sample)
}

/// [`planes_to_rgb`]: JFIF's YCbCr to RGB in libjpeg's 16-bit fixed point (`jdcolor.c`), each
/// channel clamped to an 8-bit level.
#[inline(always)]
fn to_rgb_portable<T: Copy>(ycc: &[u8], sample: impl Fn(u8) -> T + Copy) -> Vec<T> {
    const HALF: i32 = 1 << 15;
    let n = ycc.len() / 3;
    let (luma, rest) = ycc.split_at(n);
    let (cb, cr) = rest.split_at(n);
    let level =
        |y: u8, offset: i32| sample((i32::from(y) + ((offset + HALF) >> 16)).clamp(0, 255) as u8);
    let diff = |c: u8| i32::from(c) - 128;
    // 1.402, 0.344136, 0.714136 and 1.772 times 2^16.
    let mut out = Vec::with_capacity(3 * n);
    out.extend(
        luma.iter()
            .zip(cr)
            .map(|(&y, &r)| level(y, 91_881 * diff(r))),
    );
    out.extend(
        luma.iter()
            .zip(cb)
            .zip(cr)
            .map(|((&y, &b), &r)| level(y, -22_554 * diff(b) - 46_802 * diff(r))),
    );
    out.extend(
        luma.iter()
            .zip(cb)
            .map(|(&y, &b)| level(y, 116_130 * diff(b))),
    );
    out
}

impl Rows for YccImage {
    fn size(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    fn row(&mut self, y: usize) -> &[u8] {
        let width = self.width;
        let line = |component| source_line(component, y);
        match &self.planes[..] {
            [luma, cb, cr]
                if luma.per_sample.0 == 1
                    && cb.per_sample.0 == cr.per_sample.0
                    && matches!(cb.per_sample.0, 1 | 2) =>
            {
                interleave(
                    [line(luma), line(cb), line(cr)],
                    cb.per_sample.0,
                    &mut self.row,
                );
            }
            planes => {
                for (channel, component) in planes.iter().enumerate() {
                    let (line, across) = (line(component), component.per_sample.0);
                    for (x, px) in self.row.chunks_exact_mut(3).take(width).enumerate() {
                        px[channel] = line[(x / across).min(line.len() - 1)];
                    }
                }
            }
        }
        &self.row
    }
}

/// The samples of `component` that image row `y` takes.
fn source_line(component: &Component, y: usize) -> &[u8] {
    let plane = &component.plane;
    let source_row = (y / component.per_sample.1).min(plane.height - 1);
    &plane.data[source_row * plane.stride..][..plane.width]
}

/// Interleaves a row of luma with its chroma, each chroma sample covering `across` (1 or 2)
/// luma samples, into `out` (3 bytes a pixel, as many pixels as it holds). With SSSE3, sixteen
/// pixels are a few byte shuffles (a byte at a time, this was a quarter of the decode).
fn interleave([luma, cb, cr]: [&[u8]; 3], across: usize, out: &mut [u8]) {
    let width = out.len() / 3;
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("ssse3") {
            // SAFETY: the CPU has SSSE3, checked just above.
            done = unsafe { interleave_ssse3([luma, cb, cr], across, out) };
        }
    }
    for x in done..width {
        let c = (x / across).min(cb.len() - 1).min(cr.len() - 1);
        out[3 * x..3 * x + 3].copy_from_slice(&[luma[x.min(luma.len() - 1)], cb[c], cr[c]]);
    }
}

/// The whole sixteen-pixel groups of [`interleave`] that the three lines cover; returns how
/// many pixels it wrote.
///
/// # Safety
/// The CPU must have SSSE3.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "ssse3")]
unsafe fn interleave_ssse3([luma, cb, cr]: [&[u8]; 3], across: usize, out: &mut [u8]) -> usize {
    use std::arch::x86_64::*;
    /// `[channel][k]`: for byte `at` of the group's 16-byte output block `k` (pixel `j / 3`,
    /// channel `j % 3`, `j = 16 k + at`), the byte of that channel's register holding it, or
    /// 0x80 (a zero) in the other channels' masks. A chroma register holds the samples of
    /// sixteen pixels: sixteen (`across` 1) or eight (2).
    const fn masks(across: usize) -> [[[i8; 16]; 3]; 3] {
        let mut m = [[[-128i8; 16]; 3]; 3];
        let mut j = 0;
        while j < 48 {
            let (pixel, channel) = (j / 3, j % 3);
            let sample = if channel == 0 { pixel } else { pixel / across };
            m[channel][j / 16][j % 16] = sample as i8;
            j += 1;
        }
        m
    }
    const MASKS: [[[[i8; 16]; 3]; 3]; 2] = [masks(1), masks(2)];
    let masks = &MASKS[across - 1];
    let width = out.len() / 3;
    let chroma = 16 / across;
    let mut x = 0;
    while x + 16 <= width
        && x + 16 <= luma.len()
        && x / across + chroma <= cb.len()
        && x / across + chroma <= cr.len()
    {
        // SAFETY (all loads and stores): the loop condition keeps 16 luma bytes, `chroma`
        // bytes of each chroma line and 48 output bytes in bounds.
        let c = x / across;
        let load = |line: &[u8]| {
            if across == 2 {
                _mm_loadl_epi64(line.as_ptr().add(c).cast())
            } else {
                _mm_loadu_si128(line.as_ptr().add(c).cast())
            }
        };
        let channels = [
            _mm_loadu_si128(luma.as_ptr().add(x).cast()),
            load(cb),
            load(cr),
        ];
        let outp = out.as_mut_ptr().add(3 * x);
        for k in 0..3 {
            let mut v = _mm_setzero_si128();
            for (register, mask) in channels.iter().zip(masks) {
                let mask = _mm_loadu_si128(mask[k].as_ptr().cast());
                v = _mm_or_si128(v, _mm_shuffle_epi8(*register, mask));
            }
            _mm_storeu_si128(outp.add(16 * k).cast(), v);
        }
        x += 16;
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::test_pixels::random_bytes;

    /// The byte-at-a-time interleave, the reference for the vector one.
    fn interleave_reference([luma, cb, cr]: [&[u8]; 3], across: usize, width: usize) -> Vec<u8> {
        (0..width)
            .flat_map(|x| [luma[x], cb[x / across], cr[x / across]])
            .collect()
    }

    #[test]
    fn interleave_puts_each_chroma_sample_over_the_pixels_it_covers() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for across in [1, 2] {
            for width in [1, 15, 16, 17, 31, 32, 33, 100, 564] {
                let luma = random_bytes(width, &mut seed);
                let chroma = width.div_ceil(across);
                let (cb, cr) = (
                    random_bytes(chroma, &mut seed),
                    random_bytes(chroma, &mut seed),
                );
                let mut out = vec![0; 3 * width];
                interleave([&luma, &cb, &cr], across, &mut out);
                assert_eq!(
                    out,
                    interleave_reference([&luma, &cb, &cr], across, width),
                    "across {across}, width {width}"
                );
            }
        }
    }

    #[test]
    fn colour_conversion_is_jfif() {
        // Y, Cb, Cr planes of four pixels: grey, and the JFIF codes of red, green and blue.
        let ycc = [128, 76, 150, 29, 128, 85, 44, 255, 128, 255, 21, 107];
        let rgb = planes_to_rgb(&ycc, f32::from);
        let [red, green, blue] = [&rgb[0..4], &rgb[4..8], &rgb[8..12]];
        assert_eq!((red[0], green[0], blue[0]), (128.0, 128.0, 128.0));
        let close = |got: f32, want: f32| (got - want).abs() <= 1.0;
        for (i, want) in [
            (1, [255.0, 0.0, 0.0]),
            (2, [0.0, 255.0, 0.0]),
            (3, [0.0, 0.0, 255.0]),
        ] {
            let got = [red[i], green[i], blue[i]];
            assert!(
                got.iter().zip(want).all(|(&g, w)| close(g, w)),
                "pixel {i}: {got:?}, want {want:?}"
            );
        }
    }
}
