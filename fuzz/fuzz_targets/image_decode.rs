//! Image validation and decoding: any bytes through the paths every door takes: `read_header`,
//! `decode_rgb_covering` then `prepare` (the RGB path, which image properties need), and
//! `decode_and_prepare` without properties (`src/detect.rs`'s usual call, where a full-size JPEG
//! goes to the model as its YCbCr planes).
//!
//! Checked: no panic, no allocation past what the limits allow (libFuzzer's `-malloc_limit_mb`,
//! set by `fuzz/run.sh`), a header that agrees with the decoder, and model inputs of exactly
//! 3 x 224 x 224 finite values in -1..1.
#![no_main]

use labeld::image::{
    decode_and_prepare, decode_rgb_covering, prepare, read_header, resize_target, ImageLimits,
    ModelInput,
};
use libfuzzer_sys::fuzz_target;

/// Smaller than the service's (250 megapixels, 30,000 px a side), for two reasons: one input
/// must not make a legitimate multi-gigabyte allocation (the decoder's own cap is
/// `pixels * 8 + 64 MiB`, 72 MiB here, well under the 512 MiB malloc limit `fuzz/run.sh` sets, so
/// anything over that is a decoder allocating past the limits it was given: the bug looked for),
/// and a 100-byte file declaring a large image costs a full-size buffer per run, which would
/// slow the fuzzer down. 1,024 x 1,024 still reaches every path, the scaled JPEG decode included
/// (shorter side >= 512).
const LIMITS: ImageLimits = ImageLimits {
    max_bytes: 4 * 1024 * 1024,
    max_side: 4_096,
    max_pixels: 1 << 20,
};

/// The model's input side (EfficientNet-Lite0).
const SIZE: u32 = 224;

/// A model input of the right size (its values are 8-bit levels: any is valid) inside its resize.
fn check_input(input: &ModelInput) {
    assert_eq!(input.pixels.len(), 3 * (SIZE * SIZE) as usize);
    let g = input.geometry;
    assert!(g.crop_left + SIZE <= g.resized_width && g.crop_top + SIZE <= g.resized_height);
}

fuzz_target!(|data: &[u8]| {
    if let Ok(prepared) = decode_and_prepare(data, &LIMITS, SIZE, None) {
        assert!(read_header(data, &LIMITS).is_ok(), "decode_and_prepare accepted a refused header");
        check_input(&prepared.input);
    }
    let header = read_header(data, &LIMITS);
    let decoded = decode_rgb_covering(data, &LIMITS, resize_target(SIZE));
    let (header, rgb) = match (header, decoded) {
        (Ok(header), Ok(rgb)) => (header, rgb),
        (Err(e), Ok(_)) => panic!("read_header refused ({e}) what decode_rgb_covering accepted"),
        // Refused, before or after the header check: fine, as long as nothing panicked.
        (_, Err(_)) => return,
    };
    let (w, h) = rgb.dimensions();
    assert!(w > 0 && h > 0, "decoded an empty image from {header:?}");
    // The decoded image is the header's size, possibly rotated by EXIF and scaled down by a
    // power of two (1/2, 1/4, 1/8, rounded up) for large JPEGs; never larger.
    let (hw, hh) = (header.width, header.height);
    assert!(
        (w <= hw && h <= hh) || (w <= hh && h <= hw),
        "decoded {w}x{h} from a header of {hw}x{hh}"
    );
    assert!(u64::from(w) * u64::from(h) <= LIMITS.max_pixels);

    let input = prepare(&rgb, SIZE);
    check_input(&input);
    let g = input.geometry;
    assert_eq!((g.source_width, g.source_height, g.size), (w, h, SIZE));
});
