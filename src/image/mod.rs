//! Images: validation, decoding and the model's preprocessing. Pure CPU work with no async and no
//! model types, so it can run on any worker thread (and be fuzzed on its own).

mod decode;
mod preprocess;
mod properties;
mod resize;
mod resize512;
mod ycc;

pub use decode::{
    decode_for_model, decode_rgb, decode_rgb_covering, read_header, sniff_format, DecodeError,
    Decoded, ImageFormat, ImageHeader, ImageLimits,
};
pub use preprocess::{
    channel_major, prepare, resize_and_crop, resize_target, CropGeometry, ModelInput,
};
pub use properties::{image_properties, ColourNames, DominantColour, ImageProperties};
pub use resize::resize_bicubic;

/// An image made ready for the model, and its properties when they were asked for.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub input: ModelInput,
    pub properties: Option<ImageProperties>,
}

/// Validates, decodes and preprocesses one encoded image for a model whose input is
/// `size × size`; measures its [`ImageProperties`] when `properties` says in which language to
/// name the colours. Everything a worker thread does before the model.
///
/// # Errors
/// [`DecodeError`] for anything wrong with the image.
pub fn decode_and_prepare(
    bytes: &[u8],
    limits: &ImageLimits,
    size: u32,
    properties: Option<ColourNames>,
) -> Result<Prepared, DecodeError> {
    let decoded = if properties.is_none() {
        // Only the model's input is wanted: a JPEG's components can go to it directly.
        match decode::decode_model_input(bytes, limits, size)? {
            decode::ModelSource::Ycc(image) => {
                return Ok(Prepared {
                    input: preprocess::prepare_ycc(image, size),
                    properties: None,
                })
            }
            decode::ModelSource::Rgb(decoded) => decoded,
        }
    } else {
        decode_for_model(bytes, limits, resize_target(size))?
    };
    let (width, height) = (decoded.original_width, decoded.original_height);
    let mut input = prepare(&decoded.image, size);
    input.geometry = input.geometry.with_original(width, height);
    let properties = properties.map(|names| image_properties(&decoded.image, width, height, names));
    Ok(Prepared { input, properties })
}

/// Pixels for the image tests.
#[cfg(test)]
pub(crate) mod test_pixels {
    /// `len` pseudo-random bytes (xorshift64 from `seed`): noise that exercises every tap of a
    /// resize, reproducibly.
    pub(crate) fn random_bytes(len: usize, seed: &mut u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                (*seed >> 24) as u8
            })
            .collect()
    }
}
