//! Decoding and preprocessing alone, on one thread: what a decode worker spends on each image
//! before the model sees it.
//!
//! ```text
//! cargo run --release --example decode -- --images a.jpg,b.jpg [--model lite0|lite2]
//!                                         [--seconds 3] [--json OUT.json]
//! ```
//!
//! Each image goes through `image::decode_and_prepare` exactly as `labeld serve` runs it
//! (validation, the scaled JPEG decode where the file is big enough, EXIF, resize, centre crop
//! to channel-major 8-bit levels; the model normalises them), round-robin over the files for
//! `--seconds`. It reports milliseconds per image (mean, p50, p90) and the images/s one core
//! sustains. (Decoding and the resize are no longer two steps for every file: a full-size
//! JPEG's components go straight into the resize.)
//! `bench/decode_bench.py` does the same with libjpeg-turbo (Pillow) on the same files: that is
//! the yardstick, and with the model's figures it bounds what end to end can reach on N cores.

mod common;

use std::time::{Duration, Instant};

use labeld::image::{decode_and_prepare, decode_for_model, resize_target, ImageLimits};
use labeld::model::ModelKind;

struct Args {
    images: Vec<String>,
    model: ModelKind,
    seconds: f64,
    json: Option<String>,
}

fn parse() -> anyhow::Result<Args> {
    let mut args = Args {
        images: Vec::new(),
        model: ModelKind::EfficientNetLite0,
        seconds: 3.0,
        json: None,
    };
    for pair in common::flags() {
        let (flag, value) = pair?;
        match flag.as_str() {
            "--images" => args.images = value.split(',').map(String::from).collect(),
            "--model" => args.model = common::model(&value)?,
            "--seconds" => args.seconds = value.parse()?,
            "--json" => args.json = Some(value),
            _ => anyhow::bail!("unknown flag {flag}"),
        }
    }
    anyhow::ensure!(!args.images.is_empty(), "--images needs at least one file");
    Ok(args)
}

/// In `labeld serve` the decode workers share their malloc arenas with the I/O and compute
/// threads, whose live buffers keep each arena's top in use: freed image buffers are reused
/// (about 2 page faults an image, `perf stat -e page-faults --per-thread`). Alone in this
/// process, glibc would hand every freed image back to the kernel and fault it in again (about
/// 350 faults an image, a third of the time measured). Keeping freed memory measures what a
/// decode worker pays.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    const KEEP: libc::c_int = 256 << 20;
    // SAFETY: plain calls into glibc's allocator before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, KEEP);
        libc::mallopt(libc::M_MMAP_THRESHOLD, KEEP);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() -> anyhow::Result<()> {
    let args = parse()?;
    let files = args
        .images
        .iter()
        .map(|path| std::fs::read(path).map_err(|e| anyhow::anyhow!("{path}: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    keep_freed_memory();
    let limits = ImageLimits::default();
    let size = args.model.input_size();
    let run = |bytes: &[u8]| -> anyhow::Result<Duration> {
        let t = Instant::now();
        let prepared = decode_and_prepare(bytes, &limits, size, None)?;
        let took = t.elapsed();
        drop(std::hint::black_box(prepared));
        Ok(took)
    };
    // Warm-up: each file once (page cache, allocator).
    let mut decoded_sizes = Vec::new();
    for bytes in &files {
        run(bytes)?;
        let decoded = decode_for_model(bytes, &limits, resize_target(size))?;
        decoded_sizes.push(decoded.image.dimensions());
    }
    let mut totals = Vec::new();
    let started = Instant::now();
    while started.elapsed().as_secs_f64() < args.seconds || totals.len() < files.len() {
        totals.push(run(&files[totals.len() % files.len()])?);
    }
    let wall = started.elapsed().as_secs_f64();
    let mean = |v: &[Duration]| ms(v.iter().sum::<Duration>()) / v.len() as f64;
    let total_mean = mean(&totals);
    totals.sort();
    let (p50, p90) = (
        common::percentile_ms(&totals, 0.5),
        common::percentile_ms(&totals, 0.9),
    );
    let per_core = totals.len() as f64 / wall;
    let mean_bytes = files.iter().map(Vec::len).sum::<usize>() as f64 / files.len() as f64;
    println!(
        "decode + preprocess for {} ({} px), one thread, {} file(s) of {:.0} KiB on average, \
         decoded to {:?}",
        args.model,
        size,
        files.len(),
        mean_bytes / 1024.0,
        decoded_sizes
    );
    println!(
        "{} images: {total_mean:.2} ms per image, p50 {p50:.2}, p90 {p90:.2}; {per_core:.1} \
         images/s on one core",
        totals.len()
    );
    if let Some(path) = args.json {
        let report = serde_json::json!({
            "what": "decode + preprocess (image::decode_and_prepare, as labeld serve), one thread",
            "engine": "labeld",
            "model": args.model.name(),
            "input_size": size,
            "files": args.images,
            "mean_file_bytes": mean_bytes,
            "decoded_sizes": decoded_sizes,
            "images": totals.len(),
            "mean_ms": total_mean,
            "p50_ms": p50,
            "p90_ms": p90,
            "images_per_s_one_core": per_core,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}
