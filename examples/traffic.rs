//! Open-loop traffic for `labeld serve`, over gRPC and the JSON door at once: requests are sent
//! at a fixed offered rate whatever the server answers (unlike `examples/load.rs`, whose callers
//! wait for each answer), so it can offer far more than the server's capacity. The overload
//! (`bench/overload.sh`) and soak (`bench/soak.sh`) runs are made of it.
//!
//! ```text
//! cargo run --release --example traffic -- --grpc 127.0.0.1:50051 --http 127.0.0.1:8080 \
//!     --rate 900 --seconds 30 [--warmup 2] [--http-share 0.5] [--bad-share 0] \
//!     [--deadline-ms 2000] [--images FILE[,FILE...]] [--connections 4] \
//!     [--max-outstanding 20000] [--pid SERVER_PID] [--json OUT.json]
//! ```
//!
//! * Each request goes to the JSON door with probability `--http-share`, else over gRPC; it
//!   carries a bad input with probability `--bad-share` (in turn: a JPEG cut in half, random
//!   bytes, a PNG declaring 100000 x 100000 pixels, a good image with threshold 1.5), else a good
//!   image (round-robin over `--images`). A fixed-seed generator makes the sequence repeatable.
//! * gRPC calls carry `grpc-timeout: --deadline-ms`; JSON calls have no deadline header, so the
//!   client gives up after twice the deadline. An OK answer later than the deadline counts as
//!   a deadline miss on either door.
//! * With `--pid`, the server's VmRSS and open descriptors are read from /proc every 250 ms.
//! * Counted: requests *sent* inside the window (after `--warmup`), once answered. Reported per
//!   door: answers by outcome (gRPC code name, or HTTP status and error Code), latency
//!   p50/p99/max of OK answers and of overload refusals (RESOURCE_EXHAUSTED, 503
//!   ServiceOverloaded), how many 503s had `Retry-After`, deadline misses, and requests the
//!   client could not even send (over `--max-outstanding`, or a transport error).
//!
//! The exit status is 0 whatever the server answered (read the report); 1 when the client itself
//! fails.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use labeld::pb::detect_image_labels_request::Source;
use labeld::pb::image_labels_client::ImageLabelsClient;
use labeld::pb::DetectImageLabelsRequest;
use tonic::transport::Channel;

struct Args {
    grpc: Option<String>,
    http: Option<String>,
    rate: f64,
    seconds: f64,
    warmup: f64,
    http_share: f64,
    bad_share: f64,
    deadline: Duration,
    images: Vec<String>,
    connections: usize,
    max_outstanding: usize,
    pid: Option<u32>,
    json: Option<String>,
}

fn parse() -> anyhow::Result<Args> {
    let mut args = Args {
        grpc: None,
        http: None,
        rate: 100.0,
        seconds: 10.0,
        warmup: 2.0,
        http_share: 0.5,
        bad_share: 0.0,
        deadline: Duration::from_millis(2000),
        images: vec!["tests/fixtures/chelsea.png".into()],
        connections: 4,
        max_outstanding: 20_000,
        pid: None,
        json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            println!("usage: traffic --grpc ADDR --http ADDR --rate R --seconds S [--warmup S] [--http-share F] [--bad-share F] [--deadline-ms MS] [--images F,...] [--connections N] [--max-outstanding N] [--pid PID] [--json OUT]");
            std::process::exit(0);
        }
        let value = it
            .next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        let number = |v: &str| -> anyhow::Result<f64> {
            v.parse()
                .map_err(|_| anyhow::anyhow!("{flag}: {v:?} is not a number"))
        };
        match flag.as_str() {
            "--grpc" => args.grpc = Some(value),
            "--http" => args.http = Some(value),
            "--rate" => args.rate = number(&value)?,
            "--seconds" => args.seconds = number(&value)?,
            "--warmup" => args.warmup = number(&value)?,
            "--http-share" => args.http_share = number(&value)?,
            "--bad-share" => args.bad_share = number(&value)?,
            "--deadline-ms" => args.deadline = Duration::from_secs_f64(number(&value)? / 1e3),
            "--images" => args.images = value.split(',').map(String::from).collect(),
            "--connections" => args.connections = number(&value)? as usize,
            "--max-outstanding" => args.max_outstanding = number(&value)? as usize,
            "--pid" => args.pid = Some(number(&value)? as u32),
            "--json" => args.json = Some(value),
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    anyhow::ensure!(
        args.rate > 0.0 && args.seconds > 0.0,
        "--rate and --seconds must be > 0"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.http_share) && (0.0..=1.0).contains(&args.bad_share),
        "--http-share and --bad-share are fractions"
    );
    anyhow::ensure!(args.connections >= 1, "--connections must be at least 1");
    if args.http_share < 1.0 {
        anyhow::ensure!(
            args.grpc.is_some(),
            "--grpc is needed unless --http-share is 1"
        );
    }
    if args.http_share > 0.0 {
        anyhow::ensure!(
            args.http.is_some(),
            "--http is needed unless --http-share is 0"
        );
    }
    Ok(args)
}

/// One request's input.
#[derive(Clone)]
struct Input {
    bytes: Bytes,
    /// `Some` for the bad-parameter input.
    threshold: Option<f32>,
    good: bool,
}

/// The bad inputs, in the order they are used.
fn bad_inputs(good: &[u8]) -> Vec<Input> {
    let bad = |bytes: Vec<u8>, threshold: Option<f32>| Input {
        bytes: Bytes::from(bytes),
        threshold,
        good: false,
    };
    // An IHDR declaring 100000 x 100000 (its CRC is not checked before the size limit).
    let mut huge = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    huge.extend_from_slice(&100_000u32.to_be_bytes());
    huge.extend_from_slice(&100_000u32.to_be_bytes());
    huge.extend_from_slice(&[8, 2, 0, 0, 0, 0, 0, 0, 0]);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let noise = (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    vec![
        bad(good[..good.len() / 2].to_vec(), None),
        bad(noise, None),
        bad(huge, None),
        bad(good.to_vec(), Some(1.5)),
    ]
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Door {
    Grpc,
    Json,
}

impl Door {
    fn name(self) -> &'static str {
        match self {
            Door::Grpc => "grpc",
            Door::Json => "json",
        }
    }
}

/// What came back for one request.
struct Answer {
    door: Door,
    good: bool,
    /// `OK`, a gRPC code name, `HTTP <status> <Code>`, or `client: ...`.
    outcome: String,
    ok: bool,
    overload: bool,
    retry_after: bool,
    latency: Duration,
}

fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let x = (sorted.len() - 1) as f64 * p;
    let (lo, hi) = (x.floor() as usize, x.ceil() as usize);
    let (a, b) = (sorted[lo].as_secs_f64(), sorted[hi].as_secs_f64());
    (a + (b - a) * (x - lo as f64)) * 1e3
}

/// VmRSS (kB) and open descriptors of `pid`.
fn sample(pid: u32) -> Option<(u64, usize)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some((rss, fds))
}

fn main() -> anyhow::Result<()> {
    let args = parse()?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn grpc_call(
    mut client: ImageLabelsClient<Channel>,
    input: Input,
    deadline: Duration,
) -> (String, bool, bool) {
    let mut request = tonic::Request::new(DetectImageLabelsRequest {
        source: Some(Source::Image(input.bytes.clone())),
        threshold: input.threshold,
        ..Default::default()
    });
    request.set_timeout(deadline);
    match client.detect_image_labels(request).await {
        Ok(_) => ("OK".into(), true, false),
        Err(status) => {
            let overload = status.code() == tonic::Code::ResourceExhausted;
            (format!("{:?}", status.code()), false, overload)
        }
    }
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

async fn json_call(
    client: HttpClient,
    base: Arc<str>,
    input: Input,
    deadline: Duration,
) -> (String, bool, bool, bool) {
    let query = input
        .threshold
        .map_or_else(String::new, |t| format!("?threshold={t}"));
    let request = http::Request::post(format!("{base}/v1/labels{query}"))
        .header("content-type", "application/octet-stream")
        .body(Full::new(input.bytes.clone()));
    let request = match request {
        Ok(r) => r,
        Err(e) => return (format!("client: {e}"), false, false, false),
    };
    let call = async {
        let response = client.request(request).await?;
        let status = response.status();
        let retry_after = response.headers().contains_key("retry-after");
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, retry_after, body))
    };
    match tokio::time::timeout(deadline * 2, call).await {
        Err(_) => (
            "client: no answer within twice the deadline".into(),
            false,
            false,
            false,
        ),
        Ok(Err(e)) => (format!("client: {e}"), false, false, false),
        Ok(Ok((status, retry_after, body))) if status.is_success() => {
            let _ = body;
            ("OK".into(), true, false, retry_after)
        }
        Ok(Ok((status, retry_after, body))) => {
            let code = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("Code").and_then(|c| c.as_str()).map(String::from))
                .unwrap_or_default();
            let overload =
                status == http::StatusCode::SERVICE_UNAVAILABLE && code == "ServiceOverloaded";
            (
                format!("HTTP {} {code}", status.as_u16()),
                false,
                overload,
                retry_after,
            )
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let goods: Vec<Input> = args
        .images
        .iter()
        .map(|p| {
            std::fs::read(p)
                .map(|bytes| Input {
                    bytes: Bytes::from(bytes),
                    threshold: None,
                    good: true,
                })
                .map_err(|e| anyhow::anyhow!("reading {p}: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let bads = bad_inputs(&goods[0].bytes);

    let mut channels = Vec::new();
    if let Some(addr) = &args.grpc {
        let url = if addr.contains("://") {
            addr.clone()
        } else {
            format!("http://{addr}")
        };
        for _ in 0..args.connections {
            channels.push(
                Channel::from_shared(url.clone())?
                    .connect()
                    .await
                    .map_err(|e| anyhow::anyhow!("connecting to {url}: {e}"))?,
            );
        }
    }
    let http_base: Arc<str> = args
        .http
        .as_deref()
        .map(|a| {
            if a.contains("://") {
                a.to_string()
            } else {
                format!("http://{a}")
            }
        })
        .unwrap_or_default()
        .into();
    let http_client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build_http();

    // The server's memory and descriptors, sampled while the traffic runs.
    let samples = Arc::new(Mutex::new(Vec::<(f64, u64, usize)>::new()));
    let started = Instant::now();
    let sampler = args.pid.map(|pid| {
        let samples = Arc::clone(&samples);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                match sample(pid) {
                    Some((rss, fds)) => samples.lock().expect("sampler lock").push((
                        started.elapsed().as_secs_f64(),
                        rss,
                        fds,
                    )),
                    None => break,
                }
            }
        })
    });

    let window_start = started + Duration::from_secs_f64(args.warmup);
    let end = window_start + Duration::from_secs_f64(args.seconds);
    let period = Duration::from_secs_f64(1.0 / args.rate);
    let outstanding = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Answer>();
    let mut random = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        random = random
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (random >> 11) as f64 / (1u64 << 53) as f64
    };
    let (mut sent, mut not_sent, mut goods_used, mut bads_used) = (0usize, 0usize, 0usize, 0usize);
    let mut late_sends = 0usize;
    for i in 0u64.. {
        let at = started + period.mul_f64(i as f64);
        if at >= end {
            break;
        }
        tokio::time::sleep_until(at.into()).await;
        if Instant::now() > at + Duration::from_millis(10) {
            late_sends += 1;
        }
        let counted = at >= window_start;
        let door = if next() < args.http_share {
            Door::Json
        } else {
            Door::Grpc
        };
        let input = if next() < args.bad_share {
            bads_used += 1;
            bads[(bads_used - 1) % bads.len()].clone()
        } else {
            goods_used += 1;
            goods[(goods_used - 1) % goods.len()].clone()
        };
        if outstanding.load(std::sync::atomic::Ordering::Relaxed) >= args.max_outstanding {
            if counted {
                not_sent += 1;
            }
            continue;
        }
        if counted {
            sent += 1;
        }
        outstanding.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tx = tx.clone();
        let outstanding = Arc::clone(&outstanding);
        let deadline = args.deadline;
        let good = input.good;
        let grpc = (door == Door::Grpc).then(|| {
            ImageLabelsClient::new(channels[i as usize % channels.len()].clone())
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20)
        });
        let (client, base) = (http_client.clone(), Arc::clone(&http_base));
        tokio::spawn(async move {
            let t = Instant::now();
            let (outcome, ok, overload, retry_after) = match grpc {
                Some(grpc) => {
                    let (o, ok, overload) = grpc_call(grpc, input, deadline).await;
                    (o, ok, overload, false)
                }
                None => json_call(client, base, input, deadline).await,
            };
            outstanding.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            if counted {
                let _ = tx.send(Answer {
                    door,
                    good,
                    outcome,
                    ok,
                    overload,
                    retry_after,
                    latency: t.elapsed(),
                });
            }
        });
    }
    drop(tx);
    let mut answers = Vec::new();
    while let Some(a) = rx.recv().await {
        answers.push(a);
    }
    let drained = started.elapsed().as_secs_f64();
    if let Some(s) = sampler {
        s.abort();
    }
    let samples = samples.lock().expect("sampler lock").clone();
    report(
        &args, sent, not_sent, late_sends, drained, &answers, &samples,
    )
}

fn report(
    args: &Args,
    sent: usize,
    not_sent: usize,
    late_sends: usize,
    drained: f64,
    answers: &[Answer],
    samples: &[(f64, u64, usize)],
) -> anyhow::Result<()> {
    println!(
        "traffic: offered {:.0} req/s for {:.0} s (+{:.0} s warm-up), {:.0}% JSON door, {:.0}% bad inputs, deadline {} ms",
        args.rate,
        args.seconds,
        args.warmup,
        args.http_share * 100.0,
        args.bad_share * 100.0,
        args.deadline.as_millis()
    );
    println!(
        "  sent {sent} in the window ({:.0}/s), not sent (client over --max-outstanding) {not_sent}, sends >10 ms late {late_sends}; all answered after {drained:.1} s",
        sent as f64 / args.seconds
    );
    let mut doors = serde_json::Map::new();
    for door in [Door::Grpc, Door::Json] {
        let mine: Vec<&Answer> = answers.iter().filter(|a| a.door == door).collect();
        if mine.is_empty() {
            continue;
        }
        let mut outcomes: BTreeMap<String, [usize; 2]> = BTreeMap::new();
        for a in &mine {
            outcomes.entry(a.outcome.clone()).or_default()[usize::from(!a.good)] += 1;
        }
        let mut ok: Vec<Duration> = mine.iter().filter(|a| a.ok).map(|a| a.latency).collect();
        let mut refused: Vec<Duration> = mine
            .iter()
            .filter(|a| a.overload)
            .map(|a| a.latency)
            .collect();
        ok.sort();
        refused.sort();
        let late = ok.iter().filter(|&&d| d > args.deadline).count();
        let unavailable = mine
            .iter()
            .filter(|a| a.outcome.starts_with("HTTP 503"))
            .count();
        let with_retry_after = mine
            .iter()
            .filter(|a| a.outcome.starts_with("HTTP 503") && a.retry_after)
            .count();
        let ms = |v: &[Duration]| {
            (
                percentile_ms(v, 0.5),
                percentile_ms(v, 0.99),
                v.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
            )
        };
        let (ok50, ok99, okmax) = ms(&ok);
        let (r50, r99, rmax) = ms(&refused);
        println!("  {} answers: {}", door.name(), mine.len());
        for (outcome, [good, bad]) in &outcomes {
            println!("    {outcome:<40} good inputs {good:>7}  bad inputs {bad:>7}");
        }
        println!(
            "    OK latency ms p50 {ok50:.1} p99 {ok99:.1} max {okmax:.1}; OK later than the deadline: {late}"
        );
        if !refused.is_empty() {
            println!("    overload refusals latency ms p50 {r50:.1} p99 {r99:.1} max {rmax:.1}");
        }
        if unavailable > 0 {
            println!("    503 answers with Retry-After: {with_retry_after} of {unavailable}");
        }
        let outcomes_json: serde_json::Map<String, serde_json::Value> = outcomes
            .iter()
            .map(|(k, [g, b])| (k.clone(), serde_json::json!({"good": g, "bad": b})))
            .collect();
        doors.insert(
            door.name().into(),
            serde_json::json!({
                "answers": mine.len(), "outcomes": outcomes_json,
                "ok_ms": {"p50": ok50, "p99": ok99, "max": okmax, "count": ok.len()},
                "ok_later_than_deadline": late,
                "refused_ms": {"p50": r50, "p99": r99, "max": rmax, "count": refused.len()},
                "http_503": unavailable, "http_503_with_retry_after": with_retry_after,
            }),
        );
    }
    let memory = if samples.is_empty() {
        serde_json::Value::Null
    } else {
        let peak = samples.iter().map(|s| s.1).max().unwrap_or(0);
        let (first, last) = (samples[0], samples[samples.len() - 1]);
        let fd_max = samples.iter().map(|s| s.2).max().unwrap_or(0);
        println!(
            "  server: VmRSS {} MB at start, peak {} MB, {} MB at the end; descriptors {} at start, max {}, {} at the end ({} samples)",
            first.1 / 1024,
            peak / 1024,
            last.1 / 1024,
            first.2,
            fd_max,
            last.2,
            samples.len()
        );
        serde_json::json!({
            "rss_kb_start": first.1, "rss_kb_peak": peak, "rss_kb_end": last.1,
            "fds_start": first.2, "fds_max": fd_max, "fds_end": last.2,
            "samples": samples.iter().map(|s| serde_json::json!([s.0, s.1, s.2])).collect::<Vec<_>>(),
        })
    };
    if let Some(path) = &args.json {
        let out = serde_json::json!({
            "offered_rate": args.rate, "seconds": args.seconds, "warmup": args.warmup,
            "http_share": args.http_share, "bad_share": args.bad_share,
            "deadline_ms": args.deadline.as_millis() as u64,
            "sent": sent, "not_sent": not_sent, "late_sends": late_sends, "drained_s": drained,
            "doors": doors, "server": memory,
        });
        std::fs::write(path, serde_json::to_string_pretty(&out)?)?;
    }
    Ok(())
}
