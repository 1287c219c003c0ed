//! Validation and decoding: bytes in, an upright 8-bit RGB image out.
//!
//! The order is the point of this module. The format is decided by magic bytes, the byte size and
//! the dimensions declared in the header are checked against [`ImageLimits`], and only then is a
//! single pixel decoded — so a 100-byte PNG that claims to be 100,000 × 100,000 is refused without
//! allocating anything. Runs on a blocking worker thread; never on the async runtime.

use std::io::Cursor;

use image::codecs::jpeg::JpegDecoder;
use image::codecs::png::PngDecoder;
use image::{DynamicImage, ImageDecoder, RgbImage};

use super::preprocess::{model_window, resize_target};
use super::ycc::YccImage;

/// The container formats the service accepts. Anything else is refused by its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Jpeg,
    Png,
}

impl ImageFormat {
    /// Human name used in error messages.
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "JPEG",
            ImageFormat::Png => "PNG",
        }
    }
}

/// Limits checked before decoding (the OSS/IMM limits: 20 MB, 30,000 px a side, 250 megapixels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// Largest accepted encoded size, in bytes.
    pub max_bytes: u64,
    /// Largest accepted width and height, in pixels.
    pub max_side: u32,
    /// Largest accepted width × height.
    pub max_pixels: u64,
}

impl Default for ImageLimits {
    fn default() -> Self {
        ImageLimits {
            max_bytes: 20 * 1024 * 1024,
            max_side: 30_000,
            max_pixels: 250_000_000,
        }
    }
}

/// Why an image was refused. Each kind is its own variant so that callers can map the "over a
/// limit" cases to `ImageTooLarge` and the rest to `InvalidArgument`.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("the image is empty (0 bytes)")]
    Empty,
    #[error("unsupported image format ({detected}); only JPEG and PNG are accepted")]
    UnsupportedFormat { detected: &'static str },
    #[error("the image is {bytes} bytes; the limit is {limit} bytes")]
    TooManyBytes { bytes: u64, limit: u64 },
    #[error("the image is {width} x {height} pixels; each side may be at most {limit} pixels")]
    SideTooLong { width: u32, height: u32, limit: u32 },
    #[error("the image is {width} x {height} = {pixels} pixels; the limit is {limit} pixels")]
    TooManyPixels {
        width: u32,
        height: u32,
        pixels: u64,
        limit: u64,
    },
    #[error("the image has a zero width or height")]
    ZeroSized,
    #[error("the {format} image is corrupt or truncated: {reason}")]
    Corrupt {
        format: &'static str,
        reason: String,
    },
    #[error("the {format} image uses a feature this decoder does not support: {reason}")]
    UnsupportedFeature {
        format: &'static str,
        reason: String,
    },
}

impl DecodeError {
    /// True for the "image over a limit" kinds (reported as `ImageTooLarge`).
    pub fn is_over_limit(&self) -> bool {
        matches!(
            self,
            DecodeError::TooManyBytes { .. }
                | DecodeError::SideTooLong { .. }
                | DecodeError::TooManyPixels { .. }
        )
    }
}

/// What the header says, read without decoding pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeader {
    pub format: ImageFormat,
    /// Width and height as stored, before any EXIF rotation.
    pub width: u32,
    pub height: u32,
}

/// Decides the format from the first bytes. Other well-known formats are named in the error so
/// that a user who sends a GIF learns that GIFs are not accepted, not that "the image is corrupt".
pub fn sniff_format(bytes: &[u8]) -> Result<ImageFormat, DecodeError> {
    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n";
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Ok(ImageFormat::Jpeg);
    }
    if bytes.starts_with(PNG) {
        return Ok(ImageFormat::Png);
    }
    let detected = if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        "GIF"
    } else if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        "WebP"
    } else if bytes.starts_with(b"BM") {
        "BMP"
    } else if bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*") {
        "TIFF"
    } else if bytes.len() >= 12 && &bytes[4..8] == b"ftyp" {
        match &bytes[8..12] {
            b"avif" | b"avis" => "AVIF",
            _ => "HEIF/HEIC",
        }
    } else if looks_like_svg(bytes) {
        "SVG"
    } else {
        "unknown"
    };
    Err(DecodeError::UnsupportedFormat { detected })
}

fn looks_like_svg(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(512)];
    let text = String::from_utf8_lossy(head);
    let trimmed = text.trim_start();
    trimmed.starts_with("<?xml") || trimmed.starts_with("<svg")
}

/// Checks the byte size, the format and the header's dimensions against `limits`.
///
/// # Errors
/// Any [`DecodeError`] except the pixel-level ones.
pub fn read_header(bytes: &[u8], limits: &ImageLimits) -> Result<ImageHeader, DecodeError> {
    let len = bytes.len() as u64;
    if len > limits.max_bytes {
        return Err(DecodeError::TooManyBytes {
            bytes: len,
            limit: limits.max_bytes,
        });
    }
    let format = sniff_format(bytes)?;
    let (width, height) = match format {
        ImageFormat::Jpeg => jpeg_frame(bytes)?,
        ImageFormat::Png => png_dimensions(bytes)?,
    };
    let header = ImageHeader {
        format,
        width,
        height,
    };
    check_dimensions(&header, limits)?;
    Ok(header)
}

/// Width and height from a PNG's IHDR chunk, which the format requires to come first.
fn png_dimensions(bytes: &[u8]) -> Result<(u32, u32), DecodeError> {
    let corrupt = |reason: &str| DecodeError::Corrupt {
        format: "PNG",
        reason: reason.to_string(),
    };
    let ihdr = bytes
        .get(8..24)
        .ok_or_else(|| corrupt("the file ends inside the header"))?;
    if &ihdr[4..8] != b"IHDR" {
        return Err(corrupt("the first chunk is not IHDR"));
    }
    let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Ok((be32(&ihdr[8..12]), be32(&ihdr[12..16])))
}

/// Width and height from a JPEG's frame header (SOFn), found by walking the marker segments
/// without decoding anything. Also refuses a file cut short: the decoder would fill the missing
/// part with grey and say nothing, so the end-of-image marker must follow the first scan (an
/// EXIF thumbnail's own end marker sits inside APP1, before the scan, and does not count).
fn jpeg_frame(bytes: &[u8]) -> Result<(u32, u32), DecodeError> {
    let (width, height, scan) = jpeg_headers(bytes)?;
    let end = bytes.windows(2).rposition(|w| w == [0xFF, 0xD9]);
    if end.is_none_or(|at| at <= scan) {
        return Err(DecodeError::Corrupt {
            format: "JPEG",
            reason: "the file is truncated (no end-of-image marker after the image data)".into(),
        });
    }
    Ok((width, height))
}

/// Walks the marker segments up to the first scan: `(width, height, offset of the scan)`.
fn jpeg_headers(bytes: &[u8]) -> Result<(u32, u32, usize), DecodeError> {
    let corrupt = |reason: &str| DecodeError::Corrupt {
        format: "JPEG",
        reason: reason.to_string(),
    };
    let be16 = |at: usize| -> Option<usize> {
        Some(usize::from(u16::from_be_bytes([
            *bytes.get(at)?,
            *bytes.get(at + 1)?,
        ])))
    };
    let mut size = None;
    let mut at = 2; // after SOI
    loop {
        // Each segment starts with 0xFF (possibly repeated as fill) and a marker byte.
        if bytes.get(at) != Some(&0xFF) {
            return Err(corrupt(
                "a marker segment is malformed or the file ends before the image data",
            ));
        }
        while bytes.get(at) == Some(&0xFF) {
            at += 1;
        }
        let marker = *bytes
            .get(at)
            .ok_or_else(|| corrupt("the file ends before the image data"))?;
        at += 1;
        match marker {
            // Markers without a length.
            0x01 | 0xD0..=0xD7 => continue,
            0xD9 => return Err(corrupt("the image ends before its first scan")),
            0xDA => {
                let (width, height) =
                    size.ok_or_else(|| corrupt("no frame header before the image data"))?;
                return Ok((width, height, at));
            }
            _ => {
                let len = be16(at).ok_or_else(|| corrupt("the file ends inside a segment"))?;
                if len < 2 {
                    return Err(corrupt("a segment has an invalid length"));
                }
                // SOF0..SOF15 except DHT (C4), JPG (C8), DAC (CC): precision, height, width.
                if (0xC0..=0xCF).contains(&marker) && !matches!(marker, 0xC4 | 0xC8 | 0xCC) {
                    let short = || corrupt("the frame header is cut short");
                    let height = be16(at + 3).ok_or_else(short)?;
                    let width = be16(at + 5).ok_or_else(short)?;
                    size = Some((width as u32, height as u32));
                }
                at += len;
            }
        }
    }
}

fn check_dimensions(header: &ImageHeader, limits: &ImageLimits) -> Result<(), DecodeError> {
    let (width, height) = (header.width, header.height);
    if width == 0 || height == 0 {
        return Err(DecodeError::ZeroSized);
    }
    if width > limits.max_side || height > limits.max_side {
        return Err(DecodeError::SideTooLong {
            width,
            height,
            limit: limits.max_side,
        });
    }
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels {
        return Err(DecodeError::TooManyPixels {
            width,
            height,
            pixels,
            limit: limits.max_pixels,
        });
    }
    Ok(())
}

/// Validates and decodes `bytes` into an upright RGB image: EXIF orientation is applied, alpha is
/// dropped (as PIL's `convert("RGB")` does), grey and palette images are expanded, 16-bit samples
/// are reduced to 8 bits.
///
/// # Errors
/// A [`DecodeError`] describing the first problem found; nothing is decoded when a limit fails.
pub fn decode_rgb(bytes: &[u8], limits: &ImageLimits) -> Result<RgbImage, DecodeError> {
    let header = read_header(bytes, limits)?;
    let format = header.format.name();
    // The decoder's own allocation cap: the declared pixels at the widest sample layout
    // (RGBA, 16 bits) plus slack, so a header that lies about its size cannot make the decoder
    // allocate more than the limits allow.
    let pixels = u64::from(header.width) * u64::from(header.height);
    let mut caps = image::Limits::default();
    caps.max_image_width = Some(limits.max_side);
    caps.max_image_height = Some(limits.max_side);
    caps.max_alloc = Some(pixels.saturating_mul(8).saturating_add(64 << 20));
    let image = match header.format {
        ImageFormat::Jpeg => decode_with(jpeg_decoder(bytes)?, caps, format)?,
        ImageFormat::Png => decode_with(png_decoder(bytes)?, caps, format)?,
    };
    Ok(match image {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.to_rgb8(),
    })
}

/// An image decoded for the model, and the size of the original it came from.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// Upright RGB pixels; smaller than the original after a scaled JPEG decode.
    pub image: RgbImage,
    /// The original's size, upright (after EXIF orientation).
    pub original_width: u32,
    pub original_height: u32,
}

/// Decodes an image that will be resized so that its shorter side is `short_side` (see
/// [`super::preprocess::resize_target`]). A JPEG whose shorter side is at least twice that is
/// decoded with a scaled IDCT (1/2, 1/4 or 1/8 per axis, in the DCT domain) to the smallest size
/// whose shorter side still covers `short_side`: a 12-megapixel photo comes out near 0.2
/// megapixels and never exists at full size, which is most of its decoding time and memory.
/// Everything else (PNG, small JPEGs, and the JPEG kinds the scaled decoder does not handle:
/// CMYK, 16-bit) takes [`decode_rgb`]'s path. EXIF orientation is applied either way.
///
/// # Errors
/// As [`decode_rgb`].
pub fn decode_rgb_covering(
    bytes: &[u8],
    limits: &ImageLimits,
    short_side: u32,
) -> Result<RgbImage, DecodeError> {
    decode_for_model(bytes, limits, short_side).map(|d| d.image)
}

/// [`decode_rgb_covering`], also telling the original's upright size (to map boxes back to it).
///
/// # Errors
/// As [`decode_rgb`].
pub fn decode_for_model(
    bytes: &[u8],
    limits: &ImageLimits,
    short_side: u32,
) -> Result<Decoded, DecodeError> {
    let header = read_header(bytes, limits)?;
    decode_with_header(bytes, limits, header, short_side)
}

/// What [`decode_model_input`] decoded: a JPEG's components, or upright RGB pixels.
pub(super) enum ModelSource {
    Ycc(YccImage),
    Rgb(Decoded),
}

/// [`decode_for_model`] for a caller that only needs the model's input: a JPEG decoded at full
/// size (no smaller DCT scale covers `short_side`), stored upright, in grey or YCbCr, comes back
/// as its components, without upsampling or colour conversion (see [`super::ycc`]); everything
/// else as [`decode_for_model`] decodes it.
///
/// # Errors
/// As [`decode_rgb`].
pub(super) fn decode_model_input(
    bytes: &[u8],
    limits: &ImageLimits,
    size: u32,
) -> Result<ModelSource, DecodeError> {
    let header = read_header(bytes, limits)?;
    let short_side = resize_target(size);
    if header.format == ImageFormat::Jpeg && header.width.min(header.height) < 2 * short_side {
        let window = model_window(header.width, header.height, size);
        if let Some(ycc) = decode_jpeg_ycc(bytes, &header, window) {
            return Ok(ModelSource::Ycc(ycc));
        }
    }
    decode_with_header(bytes, limits, header, short_side).map(ModelSource::Rgb)
}

/// The full-size decode to components, or `None` to fall back to the RGB decoders (which then
/// report any error in the file with their usual message): EXIF orientations other than "as
/// stored" (the RGB path turns the pixels), and colour spaces other than grey and YCbCr.
///
/// Only `window` (`left, top, right, bottom`, the pixels the model's resize reads) is decoded
/// to samples: blocks outside it are entropy-decoded but not transformed, and the rows of blocks
/// below it are not read (a centre crop of a 564 × 375 photo reads 58 % of it).
fn decode_jpeg_ycc(
    bytes: &[u8],
    header: &ImageHeader,
    (left, top, right, bottom): (usize, usize, usize, usize),
) -> Option<YccImage> {
    let mut decoder = jpeg_decoder::Decoder::new(Cursor::new(bytes));
    decoder.read_info().ok()?;
    // The planes are allocated from this frame: it must be the one the limits were checked on.
    let info = decoder.info()?;
    if (u32::from(info.width), u32::from(info.height)) != (header.width, header.height) {
        return None;
    }
    let turned = decoder
        .exif_data()
        .and_then(image::metadata::Orientation::from_exif_chunk)
        .is_some_and(|o| o != image::metadata::Orientation::NoTransforms);
    if turned {
        return None;
    }
    let window = jpeg_decoder::PlanesWindow {
        left,
        top,
        right,
        bottom,
    };
    let planes = decoder.decode_to_planes_within(window).ok()?;
    if (u32::from(planes.width), u32::from(planes.height)) != (header.width, header.height) {
        return None;
    }
    YccImage::new(header.width as usize, header.height as usize, planes)
}

/// [`decode_for_model`] once the header is read.
fn decode_with_header(
    bytes: &[u8],
    limits: &ImageLimits,
    header: ImageHeader,
    short_side: u32,
) -> Result<Decoded, DecodeError> {
    if header.format == ImageFormat::Jpeg && header.width.min(header.height) >= 2 * short_side {
        if let Some(decoded) = decode_jpeg_scaled(bytes, &header, short_side) {
            return Ok(decoded);
        }
    }
    if header.format == ImageFormat::Jpeg {
        if let Some(decoded) = decode_jpeg_full(bytes, &header) {
            return Ok(decoded);
        }
    }
    let image = decode_rgb(bytes, limits)?;
    Ok(Decoded {
        original_width: image.width(),
        original_height: image.height(),
        image,
    })
}

/// The full-size decode of a YCbCr or greyscale JPEG with zune-jpeg directly, or `None` to fall
/// back to [`decode_rgb`] (other colour spaces, and any error, which it then reports with its
/// usual message). The `image` crate's JPEG decoder parses the headers three times (dimensions,
/// EXIF, pixels) and copies the file first; on an ImageNet-size photo that was ~6 % of decoding.
/// The header was validated against the limits before (`read_header`), so the buffer is at
/// most `max_pixels` × 3 bytes.
fn decode_jpeg_full(bytes: &[u8], header: &ImageHeader) -> Option<Decoded> {
    use zune_core::colorspace::ColorSpace;
    let options = zune_core::options::DecoderOptions::default()
        .set_strict_mode(false)
        .set_max_width(header.width as usize)
        .set_max_height(header.height as usize);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(
        zune_core::bytestream::ZCursor::new(bytes),
        options,
    );
    decoder.decode_headers().ok()?;
    let colour = match decoder.input_colorspace()? {
        ColorSpace::YCbCr | ColorSpace::RGB => ColorSpace::RGB,
        ColorSpace::Luma => ColorSpace::Luma,
        _ => return None,
    };
    decoder.set_options(decoder.options().jpeg_set_out_colorspace(colour));
    let (width, height) = decoder.dimensions()?;
    let (width, height) = (u32::try_from(width).ok()?, u32::try_from(height).ok()?);
    if (width, height) != (header.width, header.height) {
        return None;
    }
    let mut pixels = vec![0u8; decoder.output_buffer_size()?];
    decoder.decode_into(&mut pixels).ok()?;
    let rgb = match colour {
        ColorSpace::Luma => grey_to_rgb(&pixels),
        _ => pixels,
    };
    let image = RgbImage::from_raw(width, height, rgb)?;
    Some(upright(image, decoder.exif().map(Vec::as_slice), header))
}

/// Greyscale samples as RGB pixels (each grey level three times), the shape the rest expects.
fn grey_to_rgb(grey: &[u8]) -> Vec<u8> {
    grey.iter().flat_map(|&v| [v, v, v]).collect()
}

/// `image` turned upright by the EXIF orientation in `exif` (none: as stored), with the
/// original's upright size from its `header`.
fn upright(image: RgbImage, exif: Option<&[u8]>, header: &ImageHeader) -> Decoded {
    let orientation = exif
        .and_then(image::metadata::Orientation::from_exif_chunk)
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let stored_width = image.width();
    let mut image = DynamicImage::ImageRgb8(image);
    image.apply_orientation(orientation);
    // Orientations that turn the picture a quarter turn swap the original's sides too.
    let turned = image.width() != stored_width;
    let (original_width, original_height) = if turned {
        (header.height, header.width)
    } else {
        (header.width, header.height)
    };
    Decoded {
        image: image.into_rgb8(),
        original_width,
        original_height,
    }
}

/// The scaled-IDCT decode, or `None` to fall back to the full decoder (which then reports any
/// error in the file with its usual message).
fn decode_jpeg_scaled(bytes: &[u8], header: &ImageHeader, short_side: u32) -> Option<Decoded> {
    let short = header.width.min(header.height);
    let factor = [8u32, 4, 2].into_iter().find(|k| short / k >= short_side)?;
    let mut decoder = jpeg_decoder::Decoder::new(Cursor::new(bytes));
    let requested = (
        u16::try_from(header.width.div_ceil(factor)).ok()?,
        u16::try_from(header.height.div_ceil(factor)).ok()?,
    );
    decoder.scale(requested.0, requested.1).ok()?;
    let pixels = decoder.decode().ok()?;
    let info = decoder.info()?;
    let (width, height) = (u32::from(info.width), u32::from(info.height));
    if width.min(height) < short_side {
        return None;
    }
    let rgb = match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => RgbImage::from_raw(width, height, pixels)?,
        jpeg_decoder::PixelFormat::L8 => RgbImage::from_raw(width, height, grey_to_rgb(&pixels))?,
        jpeg_decoder::PixelFormat::L16 | jpeg_decoder::PixelFormat::CMYK32 => return None,
    };
    Some(upright(rgb, decoder.exif_data(), header))
}

fn decode_with(
    mut decoder: impl ImageDecoder,
    caps: image::Limits,
    format: &'static str,
) -> Result<DynamicImage, DecodeError> {
    decoder
        .set_limits(caps)
        .map_err(|e| image_error(e, format))?;
    // A broken EXIF block is not worth refusing a photo for: fall back to "as stored".
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| image_error(e, format))?;
    image.apply_orientation(orientation);
    Ok(image)
}

fn jpeg_decoder(bytes: &[u8]) -> Result<JpegDecoder<Cursor<&[u8]>>, DecodeError> {
    JpegDecoder::new(Cursor::new(bytes)).map_err(|e| image_error(e, "JPEG"))
}

fn png_decoder(bytes: &[u8]) -> Result<PngDecoder<Cursor<&[u8]>>, DecodeError> {
    PngDecoder::new(Cursor::new(bytes)).map_err(|e| image_error(e, "PNG"))
}

fn image_error(error: image::ImageError, format: &'static str) -> DecodeError {
    use image::ImageError as E;
    match error {
        E::Unsupported(e) => DecodeError::UnsupportedFeature {
            format,
            reason: e.to_string(),
        },
        E::Limits(e) => DecodeError::UnsupportedFeature {
            format,
            reason: format!("decoding would exceed the memory limit ({e})"),
        },
        other => DecodeError::Corrupt {
            format,
            reason: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_with_header(width: u32, height: u32) -> Vec<u8> {
        // A PNG signature and an IHDR chunk (with a valid CRC) declaring the given size, and no
        // pixel data at all: enough for the header check, nothing to decode.
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(b"IHDR");
        ihdr.extend_from_slice(&width.to_be_bytes());
        ihdr.extend_from_slice(&height.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        out.extend_from_slice(&13u32.to_be_bytes());
        out.extend_from_slice(&ihdr);
        out.extend_from_slice(&crc32(&ihdr).to_be_bytes());
        out
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &byte in data {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn formats_are_decided_by_magic_bytes() {
        assert_eq!(
            sniff_format(b"\xFF\xD8\xFF\xE0").unwrap(),
            ImageFormat::Jpeg
        );
        assert_eq!(
            sniff_format(&png_with_header(1, 1)).unwrap(),
            ImageFormat::Png
        );
        for (bytes, name) in [
            (&b"GIF89a...."[..], "GIF"),
            (b"RIFF\0\0\0\0WEBPVP8 ", "WebP"),
            (b"BM\0\0\0\0", "BMP"),
            (b"II*\0\x08\0", "TIFF"),
            (b"\0\0\0\x18ftypheic\0\0", "HEIF/HEIC"),
            (b"<svg xmlns=''/>", "SVG"),
            (b"hello", "unknown"),
        ] {
            match sniff_format(bytes) {
                Err(DecodeError::UnsupportedFormat { detected }) => assert_eq!(detected, name),
                other => panic!("{name}: {other:?}"),
            }
        }
        assert!(matches!(sniff_format(b""), Err(DecodeError::Empty)));
    }

    #[test]
    fn huge_declared_dimensions_are_refused_from_the_header() {
        let limits = ImageLimits::default();
        let bomb = png_with_header(100_000, 100_000);
        assert!(bomb.len() < 100);
        let err = decode_rgb(&bomb, &limits).unwrap_err();
        assert!(matches!(err, DecodeError::SideTooLong { .. }), "{err}");
        assert!(err.is_over_limit());

        // 15,812 x 15,812 = 250,019,344 pixels: each side fine, the product one step over.
        let err = read_header(&png_with_header(15_812, 15_812), &limits).unwrap_err();
        assert!(matches!(err, DecodeError::TooManyPixels { .. }), "{err}");
        let err = read_header(&png_with_header(30_001, 10), &limits).unwrap_err();
        assert!(matches!(err, DecodeError::SideTooLong { .. }), "{err}");
        // Exactly at the limits is fine as far as the header is concerned.
        let ok = read_header(&png_with_header(30_000, 8_333), &limits).unwrap();
        assert_eq!((ok.width, ok.height), (30_000, 8_333));
    }

    #[test]
    fn byte_limit_is_checked_first() {
        let limits = ImageLimits {
            max_bytes: 10,
            ..ImageLimits::default()
        };
        let err = read_header(&[0u8; 11], &limits).unwrap_err();
        assert!(matches!(
            err,
            DecodeError::TooManyBytes {
                bytes: 11,
                limit: 10
            }
        ));
    }

    #[test]
    fn truncated_png_is_corrupt_not_a_panic() {
        let header_only = png_with_header(64, 64);
        let err = decode_rgb(&header_only, &ImageLimits::default()).unwrap_err();
        assert!(matches!(err, DecodeError::Corrupt { .. }), "{err}");
    }

    /// A `width × height` baseline JPEG (the `image` crate's encoder) of smooth colour with
    /// detail, so that every block has AC coefficients to transform.
    fn synthetic_jpeg(width: u32, height: u32) -> Vec<u8> {
        let image = RgbImage::from_fn(width, height, |x, y| {
            let wave = |v: u32, k: u32| ((v * k) % 251) as u8;
            image::Rgb([wave(x, 3) ^ wave(y, 5), wave(x + y, 7), wave(x * y + 11, 1)])
        });
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .encode_image(&image)
            .expect("encoding to memory");
        out
    }

    /// Decoding only the pixels the model's resize reads (`decode_jpeg_ycc`'s window: blocks
    /// outside it not transformed, the rows below it not read) changes nothing the model sees:
    /// the same input, bit for bit, as from the whole image's components. Landscape, portrait
    /// and panoramic, 4:2:0 and 4:4:4, grey, progressive (no early stop), one pixel; both
    /// models' input sizes.
    #[test]
    fn the_model_window_decodes_what_the_whole_image_gives() {
        use crate::image::preprocess::prepare_ycc;
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let read = |name: &str| std::fs::read(fixtures.join(name)).expect("fixture");
        let mut files = vec![
            ("rocket.jpg".to_string(), read("rocket.jpg")),
            ("564x375".to_string(), synthetic_jpeg(564, 375)),
            ("375x564".to_string(), synthetic_jpeg(375, 564)),
            ("1000x300".to_string(), synthetic_jpeg(1000, 300)),
        ];
        for name in ["rgb.jpg", "progressive.jpg", "gray.jpg", "one_pixel.jpg"] {
            files.push((name.to_string(), read(&format!("variants/{name}"))));
        }
        let limits = ImageLimits::default();
        for (name, bytes) in &files {
            let header = read_header(bytes, &limits).expect("a valid JPEG");
            let (width, height) = (header.width as usize, header.height as usize);
            let mut decoder = jpeg_decoder::Decoder::new(Cursor::new(&bytes[..]));
            let whole = decoder.decode_to_planes().expect("decodes");
            for size in [224, 260] {
                let window = model_window(header.width, header.height, size);
                let (left, top, right, bottom) = window;
                assert!(left < right && right <= width && top < bottom && bottom <= height);
                let part = decode_jpeg_ycc(bytes, &header, window).expect("the plane path");
                let whole = YccImage::new(width, height, whole.clone()).expect("the plane path");
                assert_eq!(
                    prepare_ycc(part, size).pixels,
                    prepare_ycc(whole, size).pixels,
                    "{name} at {size}, window {window:?}"
                );
            }
        }
        // The photos' windows leave out part of the image (otherwise nothing was tested).
        let header = read_header(&files[1].1, &limits).expect("a valid JPEG");
        let (left, top, right, bottom) = model_window(header.width, header.height, 224);
        assert!(
            right - left < 400 && bottom - top < 375,
            "{left} {top} {right} {bottom}"
        );
    }
}
