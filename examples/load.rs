//! A gRPC load generator for `labeld serve`: N concurrent callers send unary `DetectImageLabels`
//! requests back to back (closed loop, one request in flight per caller), taking the images
//! round-robin, for a warm-up and then a timed window.
//!
//! ```text
//! cargo run --release --example load -- [--addr http://127.0.0.1:50051]
//!     [--images FILE[,FILE...]] [--concurrency 8] [--seconds 10] [--warmup 2]
//!     [--connections 1] [--client-threads 1] [--json OUT.json]
//! cargo run --release --example load -- --addr 127.0.0.1:50051 \
//!     --images tests/fixtures/chelsea.png,tests/fixtures/rocket.jpg --concurrency 32 --seconds 8
//! ```
//!
//! Flags (each takes a value):
//!
//! * `--addr`: the gRPC address; `http://` is added when there is no scheme.
//! * `--images`: comma-separated image files (default tests/fixtures/chelsea.png), read once.
//! * `--concurrency`: callers. `--connections`: HTTP/2 connections they share, round-robin.
//! * `--seconds`: the timed window. `--warmup`: seconds of the same load before it, not counted.
//! * `--client-threads`: tokio worker threads of this client (it shares the machine's cores with
//!   the server it measures, so keep it small).
//! * `--json`: also write the results to this file.
//!
//! What counts: a request counts in the window when it *finishes* inside it. images/s is the
//! number of OK answers finished in the window divided by the window's length; requests still in
//! flight when it closes are awaited but not counted. Latency p50/p90/p99 (linear interpolation,
//! as numpy) are end to end as the client sees them (encode, send, server, receive) over the OK
//! answers. Server-side stage timings are the means of the `StageTimings` the OK answers carry
//! (decode, queue, inference, total, batch size). Every non-OK gRPC code is counted by name, with
//! its first message; after a non-OK answer the caller sleeps 1 ms so that instant rejections do
//! not turn the loop into a busy spin. The exit status is 0 even when requests fail: read the
//! counts (the status is 1 only when the client itself fails, e.g. it cannot connect).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use labeld::pb::detect_image_labels_request::Source;
use labeld::pb::image_labels_client::ImageLabelsClient;
use labeld::pb::{DetectImageLabelsRequest, GetModelInfoRequest};

struct Args {
    addr: String,
    images: Vec<String>,
    concurrency: usize,
    seconds: f64,
    warmup: f64,
    connections: usize,
    client_threads: usize,
    json: Option<String>,
}

fn parse() -> anyhow::Result<Args> {
    let mut args = Args {
        addr: "http://127.0.0.1:50051".into(),
        images: vec!["tests/fixtures/chelsea.png".into()],
        concurrency: 8,
        seconds: 10.0,
        warmup: 2.0,
        connections: 1,
        client_threads: 1,
        json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            println!("usage: load [--addr URL] [--images FILE[,FILE...]] [--concurrency N] [--seconds S] [--warmup S] [--connections N] [--client-threads N] [--json OUT]");
            std::process::exit(0);
        }
        let value = it
            .next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--addr" => {
                args.addr = if value.contains("://") {
                    value
                } else {
                    format!("http://{value}")
                }
            }
            "--images" => {
                args.images = value
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            }
            "--concurrency" => args.concurrency = value.parse()?,
            "--seconds" => args.seconds = value.parse()?,
            "--warmup" => args.warmup = value.parse()?,
            "--connections" => args.connections = value.parse()?,
            "--client-threads" => args.client_threads = value.parse()?,
            "--json" => args.json = Some(value),
            _ => anyhow::bail!("unknown flag {flag} (try --help)"),
        }
    }
    anyhow::ensure!(!args.images.is_empty(), "--images needs at least one file");
    anyhow::ensure!(
        args.concurrency > 0 && args.connections > 0 && args.client_threads > 0,
        "--concurrency, --connections and --client-threads must be at least 1"
    );
    anyhow::ensure!(
        args.seconds > 0.0 && args.warmup >= 0.0,
        "--seconds must be > 0 and --warmup >= 0"
    );
    Ok(args)
}

/// What one caller saw inside the timed window.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    /// Sums over OK answers: decode, queue, inference, total (µs), batch size.
    stages: [u64; 5],
    /// Non-OK gRPC code name -> (count, first message).
    errors: BTreeMap<String, (usize, String)>,
    warmup_ok: usize,
    warmup_errors: usize,
    model: Option<String>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        for (total, part) in self.stages.iter_mut().zip(other.stages) {
            *total += part;
        }
        for (code, (n, msg)) in other.errors {
            let e = self.errors.entry(code).or_insert((0, msg));
            e.0 += n;
        }
        self.warmup_ok += other.warmup_ok;
        self.warmup_errors += other.warmup_errors;
        if self.model.is_none() {
            self.model = other.model;
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let x = (sorted.len() - 1) as f64 * p;
    let (lo, hi) = (x.floor() as usize, x.ceil() as usize);
    let (a, b) = (sorted[lo].as_secs_f64(), sorted[hi].as_secs_f64());
    (a + (b - a) * (x - lo as f64)) * 1e3
}

fn loadavg() -> Option<Vec<f64>> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    s.split_whitespace()
        .take(3)
        .map(|v| v.parse().ok())
        .collect()
}

fn main() -> anyhow::Result<()> {
    let args = parse()?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads)
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    // Shared buffers: a request's copy of its image is a reference count, not a 4 MB memcpy on
    // the cores the server under test is using.
    let images: Vec<bytes::Bytes> = args
        .images
        .iter()
        .map(|p| std::fs::read(p).map_err(|e| anyhow::anyhow!("reading {p}: {e}")))
        .map(|read| read.map(bytes::Bytes::from))
        .collect::<Result<_, _>>()?;
    let image_bytes: Vec<usize> = images.iter().map(bytes::Bytes::len).collect();
    let images = Arc::new(images);
    let mut channels = Vec::new();
    for _ in 0..args.connections {
        let channel = tonic::transport::Channel::from_shared(args.addr.clone())?
            .connect()
            .await
            .map_err(|e| anyhow::anyhow!("connecting to {}: {e}", args.addr))?;
        channels.push(channel);
    }
    let info = ImageLabelsClient::new(channels[0].clone())
        .get_model_info(GetModelInfoRequest {})
        .await
        .ok()
        .map(|r| r.into_inner());
    let load_start = loadavg();

    let started = Instant::now();
    let window_start = started + Duration::from_secs_f64(args.warmup);
    let window_end = window_start + Duration::from_secs_f64(args.seconds);
    let next_image = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.concurrency {
        let mut client = ImageLabelsClient::new(channels[i % channels.len()].clone())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        let images = Arc::clone(&images);
        let next_image = Arc::clone(&next_image);
        tasks.spawn(async move {
            let mut tally = Tally::default();
            while Instant::now() < window_end {
                let k = next_image.fetch_add(1, Ordering::Relaxed) % images.len();
                let request = DetectImageLabelsRequest {
                    source: Some(Source::Image(images[k].clone())),
                    ..Default::default()
                };
                let t = Instant::now();
                let result = client.detect_image_labels(request).await;
                let done = Instant::now();
                let counted = done >= window_start && done <= window_end;
                match result {
                    Ok(response) if counted => {
                        let response = response.into_inner();
                        tally.latencies.push(done - t);
                        if let Some(s) = response.timings {
                            tally.stages[0] += s.decode_us;
                            tally.stages[1] += s.queue_us;
                            tally.stages[2] += s.inference_us;
                            tally.stages[3] += s.total_us;
                            tally.stages[4] += u64::from(s.batch_size);
                        }
                        if tally.model.is_none() {
                            tally.model = Some(response.model);
                        }
                    }
                    Ok(_) => {
                        if done < window_start {
                            tally.warmup_ok += 1
                        }
                    }
                    Err(status) => {
                        if counted {
                            let e = tally
                                .errors
                                .entry(format!("{:?}", status.code()))
                                .or_insert((0, status.message().to_string()));
                            e.0 += 1;
                        } else if done < window_start {
                            tally.warmup_errors += 1;
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
            tally
        });
    }
    let mut tally = Tally::default();
    while let Some(done) = tasks.join_next().await {
        tally.merge(done?);
    }
    let drained_s = Instant::now()
        .saturating_duration_since(window_end)
        .as_secs_f64();
    let load_end = loadavg();

    tally.latencies.sort();
    let lat = &tally.latencies;
    let ok = lat.len();
    let images_per_s = ok as f64 / args.seconds;
    let (p50, p90, p99) = (
        percentile(lat, 0.5),
        percentile(lat, 0.9),
        percentile(lat, 0.99),
    );
    let mean_ms = if ok == 0 {
        0.0
    } else {
        lat.iter().map(Duration::as_secs_f64).sum::<f64>() / ok as f64 * 1e3
    };
    let max_ms = lat.last().map_or(0.0, |d| d.as_secs_f64() * 1e3);
    let n = ok.max(1) as f64;
    let mean_stage_ms = |i: usize| tally.stages[i] as f64 / n / 1e3;
    let mean_batch = tally.stages[4] as f64 / n;
    let errors_total: usize = tally.errors.values().map(|(c, _)| c).sum();

    let names: Vec<&str> = args
        .images
        .iter()
        .map(|p| p.rsplit('/').next().unwrap_or(p))
        .collect();
    println!(
        "load: {} model={} concurrency={} connections={} window={:.1}s (warm-up {:.1}s) images={} ({:.0} KB mean)",
        args.addr,
        tally.model.as_deref().unwrap_or("?"),
        args.concurrency,
        args.connections,
        args.seconds,
        args.warmup,
        names.join(","),
        image_bytes.iter().sum::<usize>() as f64 / image_bytes.len() as f64 / 1024.0,
    );
    println!(
        "  ok={ok} images/s={images_per_s:.1} latency ms: p50={p50:.1} p90={p90:.1} p99={p99:.1} \
         mean={mean_ms:.1} max={max_ms:.1}"
    );
    println!(
        "  server means ms: decode={:.1} queue={:.1} inference={:.1} total={:.1} batch={mean_batch:.2}",
        mean_stage_ms(0),
        mean_stage_ms(1),
        mean_stage_ms(2),
        mean_stage_ms(3),
    );
    if tally.errors.is_empty() {
        println!("  errors: none");
    } else {
        for (code, (count, message)) in &tally.errors {
            println!("  errors: {code} x{count} (first: {message})");
        }
    }
    if tally.warmup_errors > 0 {
        println!("  warm-up errors (not counted): {}", tally.warmup_errors);
    }

    if let Some(path) = &args.json {
        let errors: serde_json::Map<String, serde_json::Value> = tally
            .errors
            .iter()
            .map(|(code, (count, message))| {
                (
                    code.clone(),
                    serde_json::json!({"count": count, "first_message": message}),
                )
            })
            .collect();
        let server = info.map(|i| {
            serde_json::json!({
                "model": i.model, "device": i.device, "input_size": i.input_size,
                "max_batch": i.max_batch, "max_delay_us": i.max_delay_us, "max_queue": i.max_queue,
                "model_workers": i.model_workers, "decode_workers": i.decode_workers,
                "version": i.version,
            })
        });
        let report = serde_json::json!({
            "what": "end to end over gRPC (unary DetectImageLabels, closed loop)",
            "addr": args.addr,
            "model": tally.model,
            "server": server,
            "images": args.images,
            "image_bytes": image_bytes,
            "concurrency": args.concurrency,
            "connections": args.connections,
            "client_threads": args.client_threads,
            "seconds": args.seconds,
            "warmup_s": args.warmup,
            "drained_s": drained_s,
            "ok": ok,
            "errors_total": errors_total,
            "errors": errors,
            "warmup_ok": tally.warmup_ok,
            "warmup_errors": tally.warmup_errors,
            "images_per_s": images_per_s,
            "latency_ms": {"p50": p50, "p90": p90, "p99": p99, "mean": mean_ms, "max": max_ms},
            "server_mean_ms": {
                "decode": mean_stage_ms(0), "queue": mean_stage_ms(1),
                "inference": mean_stage_ms(2), "total": mean_stage_ms(3),
            },
            "mean_batch": mean_batch,
            "loadavg_start": load_start,
            "loadavg_end": load_end,
        });
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}
