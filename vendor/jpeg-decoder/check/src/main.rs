//! Decodes every JPEG named on the command line with both copies of jpeg-decoder, at full size
//! and at the 1/8, 1/4 (or 1/2) and full scales, whole and damaged (cut short at four places,
//! bytes flipped six ways, the same for both), and reports any case where they disagree: one
//! fails and the other does not, or both succeed with different pixels or sizes.
//!
//! ```text
//! cargo run --release -- FILE.jpg...     # exit status 1 when any case differs
//! ```
//!
//! The patched copy must agree on every case, damaged ones included: it keeps the release's
//! behaviour on damaged data on purpose (`decode_sequential_block` in ../src/huffman.rs).

use std::io::Cursor;
use std::process::ExitCode;

type Outcome = Result<(Vec<u8>, Option<(u16, u16)>), String>;

fn upstream(bytes: &[u8], scale: Option<(u16, u16)>) -> Outcome {
    let mut decoder = upstream::Decoder::new(Cursor::new(bytes));
    if let Some((w, h)) = scale {
        decoder.read_info().map_err(|e| e.to_string())?;
        decoder.scale(w, h).map_err(|e| e.to_string())?;
    }
    let pixels = decoder.decode().map_err(|e| e.to_string())?;
    Ok((pixels, decoder.info().map(|i| (i.width, i.height))))
}

fn patched(bytes: &[u8], scale: Option<(u16, u16)>) -> Outcome {
    let mut decoder = patched::Decoder::new(Cursor::new(bytes));
    if let Some((w, h)) = scale {
        decoder.read_info().map_err(|e| e.to_string())?;
        decoder.scale(w, h).map_err(|e| e.to_string())?;
    }
    let pixels = decoder.decode().map_err(|e| e.to_string())?;
    Ok((pixels, decoder.info().map(|i| (i.width, i.height))))
}

/// The file whole, cut short at four places, and with bytes flipped (a fixed xorshift sequence
/// over the last three quarters, where the entropy-coded data is).
fn variants(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let len = bytes.len();
    let mut out = vec![("whole".to_string(), bytes.to_vec())];
    for cut in [
        len / 3,
        len / 2,
        len - (len / 4).min(100),
        len.saturating_sub(2),
    ] {
        out.push((format!("cut at {cut}"), bytes[..cut].to_vec()));
    }
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ len as u64;
    for round in 0..6 {
        let mut damaged = bytes.to_vec();
        for _ in 0..1 + round * 3 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let at = len / 4 + (x as usize % (len - len / 4));
            damaged[at] ^= (x >> 32) as u8 | 1;
        }
        out.push((format!("flipped ({round})"), damaged));
    }
    out
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut cases, mut both_failed, mut differ) = (0, 0, 0);
    for path in &args {
        let bytes = match std::fs::read(path) {
            Ok(bytes) if bytes.len() > 16 => bytes,
            Ok(_) => continue,
            Err(e) => {
                eprintln!("{path}: {e}");
                return ExitCode::FAILURE;
            }
        };
        for (name, data) in variants(&bytes) {
            // Full size, the smallest scale (1/8), and a quarter of the size (1/4 or 1/2).
            let quarter = {
                let mut d = upstream::Decoder::new(Cursor::new(&data[..]));
                d.read_info()
                    .ok()
                    .and_then(|()| d.info())
                    .map(|i| (i.width / 4 + 1, i.height / 4 + 1))
            };
            for scale in [None, Some((1, 1)), Some((u16::MAX, u16::MAX)), quarter] {
                cases += 1;
                let (a, b) = (upstream(&data, scale), patched(&data, scale));
                match (&a, &b) {
                    (Ok(x), Ok(y)) if x == y => {}
                    (Err(_), Err(_)) => both_failed += 1,
                    _ => {
                        differ += 1;
                        let show = |o: &Outcome| match o {
                            Ok((pixels, info)) => format!("ok {} bytes {info:?}", pixels.len()),
                            Err(e) => format!("error {e}"),
                        };
                        println!(
                            "DIFFERS {path} {name} scale {scale:?}: upstream {} / patched {}",
                            show(&a),
                            show(&b)
                        );
                    }
                }
            }
        }
    }
    println!(
        "{cases} cases: {} identical, {both_failed} failed in both, {differ} differ",
        cases - both_failed - differ
    );
    if differ == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
