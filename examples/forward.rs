//! The model forward pass alone: images/s and per-call latency for each batch size.
//!
//! ```text
//! cargo run --release --example forward -- [--model lite0|lite2] [--batches 1,4,8,16]
//!                                          [--seconds 5] [--threads N] [--json OUT.json]
//! ```
//!
//! The input is a real photo (tests/fixtures/chelsea.png) preprocessed as the service does, so
//! the numbers include everything `Classifier::classify` does (softmax, feature maps copied
//! out), nothing of decoding. Threads: `--threads` sizes the compute pool (default: the CPUs
//! this process may use, cgroup quota included).

use std::time::{Duration, Instant};

use labeld::image::{decode_rgb, prepare, ImageLimits};
use labeld::labeler::default_weights_dir;
use labeld::model::{Classifier, LiteClassifier, ModelKind};

struct Args {
    model: ModelKind,
    batches: Vec<usize>,
    seconds: f64,
    threads: Option<usize>,
    json: Option<String>,
}

fn parse() -> anyhow::Result<Args> {
    let mut args = Args {
        model: ModelKind::EfficientNetLite0,
        batches: vec![1, 4, 8, 16],
        seconds: 5.0,
        threads: None,
        json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--model" => {
                args.model = ModelKind::from_name(&value)
                    .ok_or_else(|| anyhow::anyhow!("unknown model {value}"))?
            }
            "--batches" => {
                args.batches = value.split(',').map(str::parse).collect::<Result<_, _>>()?
            }
            "--seconds" => args.seconds = value.parse()?,
            "--threads" => args.threads = Some(value.parse()?),
            "--json" => args.json = Some(value),
            _ => anyhow::bail!("unknown flag {flag}"),
        }
    }
    Ok(args)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn main() -> anyhow::Result<()> {
    let args = parse()?;
    let threads = labeld::model::init_threads(args.threads);
    let model = LiteClassifier::load(
        args.model,
        &default_weights_dir(),
        &candle_core::Device::Cpu,
    )?;
    let bytes = std::fs::read("tests/fixtures/chelsea.png")?;
    let rgb = decode_rgb(&bytes, &ImageLimits::default())?;
    let input = prepare(&rgb, args.model.input_size());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    println!(
        "model forward: {} ({} px), {threads} thread(s), {cpu}",
        args.model,
        args.model.input_size()
    );
    println!("| batch | images/s | p50 ms | p90 ms | p99 ms | calls |");
    println!("|------:|---------:|-------:|-------:|-------:|------:|");
    let mut rows = Vec::new();
    for &batch in &args.batches {
        let inputs: Vec<&[f32]> = (0..batch).map(|_| input.pixels.as_slice()).collect();
        // Warm-up: first calls allocate and fault in buffers.
        for _ in 0..2 {
            model.classify(&inputs)?;
        }
        let mut latencies = Vec::new();
        let started = Instant::now();
        while started.elapsed().as_secs_f64() < args.seconds || latencies.len() < 3 {
            let t = Instant::now();
            model.classify(&inputs)?;
            latencies.push(t.elapsed());
        }
        let wall = started.elapsed().as_secs_f64();
        latencies.sort();
        let ips = (latencies.len() * batch) as f64 / wall;
        let (p50, p90, p99) = (
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.9),
            percentile(&latencies, 0.99),
        );
        println!(
            "| {batch:5} | {ips:8.1} | {p50:6.1} | {p90:6.1} | {p99:6.1} | {:5} |",
            latencies.len()
        );
        rows.push(serde_json::json!({
            "batch": batch, "images_per_s": ips, "p50_ms": p50, "p90_ms": p90, "p99_ms": p99,
            "calls": latencies.len(),
        }));
    }
    if let Some(path) = args.json {
        let report = serde_json::json!({
            "what": "model forward (Classifier::classify)",
            "engine": "candle",
            "model": args.model.name(),
            "input_size": args.model.input_size(),
            "threads": threads,
            "cpu": cpu,
            "results": rows,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}
