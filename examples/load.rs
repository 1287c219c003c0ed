//! A gRPC load generator for `labeld serve`: C concurrent callers send one image for D seconds;
//! prints images/s, latency percentiles and the outcome counts.
//!
//! ```text
//! cargo run --release --example load -- [ADDR] [IMAGE] [CONCURRENCY] [SECONDS]
//! cargo run --release --example load -- http://127.0.0.1:50051 tests/fixtures/chelsea.png 8 10
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use labeld::pb::detect_image_labels_request::Source;
use labeld::pb::image_labels_client::ImageLabelsClient;
use labeld::pb::DetectImageLabelsRequest;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let addr = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "http://127.0.0.1:50051".into());
    let image_path = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| "tests/fixtures/chelsea.png".into());
    let concurrency: usize = args.get(3).map_or(Ok(8), |s| s.parse())?;
    let seconds: u64 = args.get(4).map_or(Ok(10), |s| s.parse())?;
    let image = std::fs::read(&image_path)?;
    let channel = tonic::transport::Channel::from_shared(addr.clone())?
        .connect()
        .await?;
    let end = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let mut client =
            ImageLabelsClient::new(channel.clone()).max_decoding_message_size(64 << 20);
        let image = image.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut stages = [0u64; 4];
            let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
            while Instant::now() < end {
                let request = DetectImageLabelsRequest {
                    source: Some(Source::Image(image.clone())),
                    ..Default::default()
                };
                let t = Instant::now();
                let outcome = match client.detect_image_labels(request).await {
                    Ok(response) => {
                        latencies.push(t.elapsed());
                        if let Some(s) = response.into_inner().timings {
                            stages[0] += s.decode_us;
                            stages[1] += s.queue_us;
                            stages[2] += s.inference_us;
                            stages[3] += u64::from(s.batch_size);
                        }
                        "OK".to_string()
                    }
                    Err(status) => format!("{:?}", status.code()),
                };
                *outcomes.entry(outcome).or_default() += 1;
            }
            (latencies, stages, outcomes)
        });
    }
    let mut latencies = Vec::new();
    let mut stages = [0u64; 4];
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    while let Some(done) = tasks.join_next().await {
        let (l, s, o) = done?;
        latencies.extend(l);
        for (total, part) in stages.iter_mut().zip(s) {
            *total += part;
        }
        for (k, v) in o {
            *outcomes.entry(k).or_default() += v;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    let n = latencies.len().max(1) as f64;
    println!(
        "{addr} image={image_path} concurrency={concurrency} seconds={elapsed:.1} ok/s={:.1} \
         p50={:.1}ms p90={:.1}ms p99={:.1}ms mean: decode={:.1}ms queue={:.1}ms inference={:.1}ms \
         batch={:.1} outcomes={outcomes:?}",
        latencies.len() as f64 / elapsed,
        pct(0.50),
        pct(0.90),
        pct(0.99),
        stages[0] as f64 / n / 1e3,
        stages[1] as f64 / n / 1e3,
        stages[2] as f64 / n / 1e3,
        stages[3] as f64 / n,
    );
    Ok(())
}
