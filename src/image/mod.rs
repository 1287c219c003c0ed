//! Images: validation, decoding and the model's preprocessing. Pure CPU work with no async and no
//! model types, so it can run on any worker thread (and be fuzzed on its own).

mod decode;
mod preprocess;
mod resize;

pub use decode::{
    decode_rgb, decode_rgb_covering, read_header, sniff_format, DecodeError, ImageFormat,
    ImageHeader, ImageLimits,
};
pub use preprocess::{
    normalise, prepare, resize_and_crop, resize_target, CropGeometry, ModelInput,
};
pub use resize::resize_bicubic;
