//! The model forward pass alone: images/s and per-call latency for each batch size.
//!
//! ```text
//! cargo run --release --example forward -- [--model lite0|lite2] [--batches 1,4,8,16]
//!                                          [--seconds 5] [--threads N] [--json OUT.json]
//!                                          [--device cpu|cuda|metal] [--precision f32|f16|bf16]
//!                                          [--workers N]
//! ```
//!
//! The input is a real photo (tests/fixtures/chelsea.png) preprocessed as the service does, so
//! the numbers include everything `Classifier::classify` does (the copy to the device, softmax,
//! logits and feature maps copied back), nothing of decoding. Threads: `--threads` sizes the
//! compute pool (default: the CPUs this process may use, cgroup quota included).
//!
//! On another device than the CPU it first compares that device's logits for the photo with
//! the CPU's f32 ones (largest difference, same top-5), so a GPU figure comes with its accuracy,
//! and it splits each call's time into the upload, the compute (forward pass and logits back)
//! and the feature maps' download. `--workers N` runs N threads, each with its own copy of the
//! model calling it in a loop, as `labeld serve --model-workers N` does (on CUDA each thread
//! has its own stream, so one's transfers can overlap another's kernels).

mod common;

use std::time::Instant;

use candle_core::{DType, Device};
use labeld::image::{decode_rgb, prepare, ImageLimits};
use labeld::labeler::default_weights_dir;
use labeld::model::{Classifier, LiteClassifier, ModelKind, Phases};

struct Args {
    model: ModelKind,
    batches: Vec<usize>,
    seconds: f64,
    threads: Option<usize>,
    json: Option<String>,
    device: String,
    precision: DType,
    workers: usize,
}

fn parse() -> anyhow::Result<Args> {
    let mut args = Args {
        model: ModelKind::EfficientNetLite0,
        batches: vec![1, 4, 8, 16],
        seconds: 5.0,
        threads: None,
        json: None,
        device: "cpu".into(),
        precision: DType::F32,
        workers: 1,
    };
    for pair in common::flags() {
        let (flag, value) = pair?;
        match flag.as_str() {
            "--model" => args.model = common::model(&value)?,
            "--batches" => {
                args.batches = value.split(',').map(str::parse).collect::<Result<_, _>>()?
            }
            "--seconds" => args.seconds = value.parse()?,
            "--threads" => args.threads = Some(value.parse()?),
            "--json" => args.json = Some(value),
            "--device" => args.device = value,
            "--precision" => args.precision = labeld::model::parse_precision(&value)?,
            "--workers" => args.workers = value.parse::<usize>()?.max(1),
            _ => anyhow::bail!("unknown flag {flag}"),
        }
    }
    Ok(args)
}

fn main() -> anyhow::Result<()> {
    let args = parse()?;
    let threads = labeld::model::init_threads(args.threads);
    let device = labeld::model::parse_device(&args.device)?;
    let models = (0..args.workers)
        .map(|_| LiteClassifier::load(args.model, &default_weights_dir(), &device, args.precision))
        .collect::<Result<Vec<_>, _>>()?;
    let model = &models[0];
    let bytes = std::fs::read("tests/fixtures/chelsea.png")?;
    let rgb = decode_rgb(&bytes, &ImageLimits::default())?;
    let input = prepare(&rgb, args.model.input_size());
    let accuracy = if device.is_cpu() {
        None
    } else {
        Some(compare_with_cpu(model, args.model, &input.pixels)?)
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    let engine = if device.is_cpu() {
        format!("{threads} thread(s), {cpu}")
    } else {
        format!("{} {:?}", args.device, args.precision).to_lowercase()
    };
    let engine = match args.workers {
        1 => engine,
        n => format!("{engine}, {n} workers"),
    };
    println!(
        "model forward: {} ({} px), {engine}",
        args.model,
        args.model.input_size()
    );
    if let Some(a) = &accuracy {
        println!(
            "vs the CPU in f32: largest logit difference {:.2e}, top-5 {}",
            a["max_abs_logit_diff"].as_f64().unwrap_or(f64::NAN),
            if a["same_top5"] == true {
                "the same"
            } else {
                "DIFFERENT"
            }
        );
    }
    println!(
        "| batch | images/s | p50 ms | p90 ms | p99 ms | calls | upload ms | compute ms | download ms |"
    );
    println!(
        "|------:|---------:|-------:|-------:|-------:|------:|----------:|-----------:|------------:|"
    );
    let mut rows = Vec::new();
    for &batch in &args.batches {
        let inputs: Vec<&[u8]> = (0..batch).map(|_| input.pixels.as_slice()).collect();
        let run = measure(&models, &inputs, args.seconds)?;
        let mut latencies = run.latencies;
        latencies.sort();
        let calls = latencies.len();
        let ips = (calls * batch) as f64 / run.wall;
        let (p50, p90, p99) = (
            common::percentile_ms(&latencies, 0.5),
            common::percentile_ms(&latencies, 0.9),
            common::percentile_ms(&latencies, 0.99),
        );
        let mean_ms = |d: std::time::Duration| d.as_secs_f64() * 1e3 / calls as f64;
        let (upload, compute, download) = (
            mean_ms(run.phases.upload),
            mean_ms(run.phases.compute),
            mean_ms(run.phases.download),
        );
        println!(
            "| {batch:5} | {ips:8.1} | {p50:6.1} | {p90:6.1} | {p99:6.1} | {calls:5} | {upload:9.2} | {compute:10.2} | {download:11.2} |"
        );
        rows.push(serde_json::json!({
            "batch": batch, "images_per_s": ips, "p50_ms": p50, "p90_ms": p90, "p99_ms": p99,
            "calls": calls, "mean_upload_ms": upload, "mean_compute_ms": compute,
            "mean_download_ms": download,
        }));
    }
    if let Some(path) = args.json {
        let report = serde_json::json!({
            "what": "model forward (Classifier::classify)",
            "engine": "candle",
            "model": args.model.name(),
            "input_size": args.model.input_size(),
            "threads": threads,
            "workers": args.workers,
            "cpu": cpu,
            "device": args.device,
            "precision": format!("{:?}", args.precision).to_lowercase(),
            "vs_cpu_f32": accuracy,
            "results": rows,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}

/// What one batch size measured: every call's latency, the phases summed over the calls, and
/// the wall-clock seconds from the first timed call to the last one's end.
struct Run {
    latencies: Vec<std::time::Duration>,
    phases: Phases,
    wall: f64,
}

/// Each model on its own thread calls it with `inputs` for `seconds` (at least 3 calls each),
/// after two warm-up calls (the first ones allocate and fault in buffers).
fn measure(models: &[LiteClassifier], inputs: &[&[u8]], seconds: f64) -> anyhow::Result<Run> {
    for model in models {
        for _ in 0..2 {
            model.classify(inputs)?;
        }
    }
    let started = Instant::now();
    let per_worker = std::thread::scope(|scope| {
        let handles: Vec<_> = models
            .iter()
            .map(|model| {
                scope.spawn(move || {
                    let mut latencies = Vec::new();
                    let mut phases = Phases::default();
                    while started.elapsed().as_secs_f64() < seconds || latencies.len() < 3 {
                        let t = Instant::now();
                        let (_, p) = model.classify_timed(inputs)?;
                        latencies.push(t.elapsed());
                        phases += p;
                    }
                    anyhow::Ok((latencies, phases))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow::anyhow!("a worker panicked"))?)
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    let wall = started.elapsed().as_secs_f64();
    let mut run = Run {
        latencies: Vec::new(),
        phases: Phases::default(),
        wall,
    };
    for (latencies, phases) in per_worker {
        run.latencies.extend(latencies);
        run.phases += phases;
    }
    Ok(run)
}

/// The device's logits for one image against the CPU's f32 ones.
fn compare_with_cpu(
    model: &LiteClassifier,
    kind: ModelKind,
    pixels: &[u8],
) -> anyhow::Result<serde_json::Value> {
    let cpu = LiteClassifier::load(kind, &default_weights_dir(), &Device::Cpu, DType::F32)?;
    let reference = cpu.classify(&[pixels])?.remove(0).logits;
    let logits = model.classify(&[pixels])?.remove(0).logits;
    let diff = reference
        .iter()
        .zip(&logits)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let top5 = |v: &[f32]| {
        let mut i: Vec<usize> = (0..v.len()).collect();
        i.sort_by(|&a, &b| v[b].total_cmp(&v[a]));
        i.truncate(5);
        i
    };
    Ok(serde_json::json!({
        "max_abs_logit_diff": diff,
        "same_top5": top5(&reference) == top5(&logits),
    }))
}
