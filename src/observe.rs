//! What operators see: Prometheus metrics and one log line per answered request.
//!
//! Every door reports each answer once, through [`answered`]; the batcher and the detector
//! report refusals through [`rejected`] and forward passes through [`batch_ran`]. Gauges that
//! describe a state (queue depth, requests in flight, readiness) are not updated on the hot
//! path: the server sets them from its counters when `/metrics` is scraped ([`Scrape`]).
//!
//! The recorder is process-wide (the `metrics` facade has one global recorder), installed once
//! by the first server; a library user who starts no server records into `metrics`' no-op
//! recorder. Names follow Prometheus conventions: `labeld_` prefix, base units (seconds),
//! `_total` on counters; histograms have explicit buckets.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::detect::Timings;
use crate::error::ErrorCode;

/// Content type of a Prometheus text-format scrape.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Which front door a request came through (the `door` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// gRPC `DetectImageLabels`.
    Grpc,
    /// One image on gRPC `DetectImageLabelsStream`.
    GrpcStream,
    /// The OSS-compatible HTTP door (`GET /{bucket}/{key}`).
    Oss,
    /// The JSON HTTP door (`POST /v1/labels`).
    Json,
}

impl Door {
    pub fn as_str(self) -> &'static str {
        match self {
            Door::Grpc => "grpc",
            Door::GrpcStream => "grpc_stream",
            Door::Oss => "oss",
            Door::Json => "json",
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    /// Labels were returned.
    Labelled { timings: &'a Timings, labels: usize },
    /// Answered without the model (the OSS door returning an object).
    Served,
    /// An error answer; `message` is what the client was told (never a secret).
    Failed { code: ErrorCode, message: &'a str },
}

/// Why a request was refused without being labelled (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Admission limit or model queue full.
    Overloaded,
    /// The model's pace says it would wait past its deadline (or the longest wait allowed).
    TooBusy,
    /// Warming up.
    NotReady,
    /// Its deadline passed before the model reached it.
    DeadlineExpired,
    /// Its caller stopped waiting before the model reached it.
    ClientGone,
}

impl Rejection {
    fn as_str(self) -> &'static str {
        match self {
            Rejection::Overloaded => "overloaded",
            Rejection::TooBusy => "too_busy",
            Rejection::NotReady => "not_ready",
            Rejection::DeadlineExpired => "deadline_expired",
            Rejection::ClientGone => "client_gone",
        }
    }
}

const REQUESTS: &str = "labeld_requests_total";
const REQUEST_DURATION: &str = "labeld_request_duration_seconds";
const DECODE_DURATION: &str = "labeld_decode_duration_seconds";
const QUEUE_DURATION: &str = "labeld_queue_duration_seconds";
const INFERENCE_DURATION: &str = "labeld_inference_duration_seconds";
const BATCH_SIZE: &str = "labeld_batch_size";
const QUEUE_DEPTH: &str = "labeld_queue_depth";
const INFLIGHT: &str = "labeld_inflight_requests";
const INFLIGHT_LIMIT: &str = "labeld_inflight_limit";
const REJECTED: &str = "labeld_rejected_requests_total";
const READY: &str = "labeld_ready";
const MODEL_INFO: &str = "labeld_model_info";
const BUILD_INFO: &str = "labeld_build_info";

/// Receipt to answer: from a few milliseconds (a cached small image on a GPU) to the longest
/// deadline anyone should set.
const REQUEST_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.0, 2.5, 5.0, 10.0, 30.0,
];
/// One stage of one request: decoding a small JPEG takes under a millisecond, a 12 MP one tens.
const STAGE_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// Installs the process-wide recorder (once) and returns its handle.
///
/// # Panics
/// Never in practice: the bucket lists are constant and non-empty. If another recorder was
/// installed first (an embedding program's), metrics go there and scrapes come out empty.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed; /metrics will be empty");
            }
            describe();
            gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "git_sha" => env!("LABELD_GIT_SHA")).set(1.0);
            // Histograms keep recent samples until upkeep folds them into their buckets.
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("labeld-metrics".into())
                .spawn(move || loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                });
            handle
        })
        .clone()
}

/// A recorder with labeld's histogram buckets.
fn recorder() -> PrometheusRecorder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.into()), REQUEST_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Suffix("_duration_seconds".into()), STAGE_BUCKETS)
        })
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), BATCH_BUCKETS))
        .expect("constant, non-empty buckets")
        .build_recorder()
}

fn describe() {
    describe_counter!(
        REQUESTS,
        "Requests answered, by door and outcome (ok or the error code)."
    );
    describe_histogram!(
        REQUEST_DURATION,
        metrics::Unit::Seconds,
        "Receipt to answer, every outcome, by door."
    );
    describe_histogram!(
        DECODE_DURATION,
        metrics::Unit::Seconds,
        "Fetching, validating, decoding and preprocessing one labelled image."
    );
    describe_histogram!(
        QUEUE_DURATION,
        metrics::Unit::Seconds,
        "Waiting for a model worker, per labelled image."
    );
    describe_histogram!(
        INFERENCE_DURATION,
        metrics::Unit::Seconds,
        "The forward pass an image was part of."
    );
    describe_histogram!(BATCH_SIZE, "Images per forward pass.");
    describe_gauge!(QUEUE_DEPTH, "Images waiting for a model worker.");
    describe_gauge!(
        INFLIGHT,
        "Requests admitted: decoding, queued or in the model."
    );
    describe_gauge!(
        INFLIGHT_LIMIT,
        "Most requests admitted at once (--max-queue)."
    );
    describe_counter!(REJECTED, "Requests refused before the model, by reason.");
    describe_gauge!(READY, "1 while serving; 0 while warming up or draining.");
    describe_gauge!(MODEL_INFO, "The model served (always 1).");
    describe_gauge!(BUILD_INFO, "This build of labeld (always 1).");
}

/// Records the model a server runs (`labeld_model_info`).
pub fn model_info(model: &str, device: &str, taxonomy_version: &str) {
    gauge!(
        MODEL_INFO,
        "model" => model.to_string(),
        "device" => device.to_string(),
        "taxonomy_version" => taxonomy_version.to_string()
    )
    .set(1.0);
}

/// Records one answered request and writes its log line.
pub fn answered(door: Door, request_id: &str, elapsed: Duration, outcome: Outcome<'_>) {
    let door_label = door.as_str();
    histogram!(REQUEST_DURATION, "door" => door_label).record(elapsed.as_secs_f64());
    let total_us = micros(elapsed);
    match outcome {
        Outcome::Labelled { timings, labels } => {
            counter!(REQUESTS, "door" => door_label, "outcome" => "ok").increment(1);
            histogram!(DECODE_DURATION).record(timings.decode.as_secs_f64());
            histogram!(QUEUE_DURATION).record(timings.queue.as_secs_f64());
            histogram!(INFERENCE_DURATION).record(timings.inference.as_secs_f64());
            tracing::info!(
                target: "labeld::request",
                request_id,
                door = door_label,
                outcome = "ok",
                total_us,
                decode_us = micros(timings.decode),
                queue_us = micros(timings.queue),
                inference_us = micros(timings.inference),
                batch = timings.batch_size,
                labels,
                "labelled"
            );
        }
        Outcome::Served => {
            counter!(REQUESTS, "door" => door_label, "outcome" => "ok").increment(1);
            tracing::info!(target: "labeld::request", request_id, door = door_label, outcome = "ok", total_us, "served");
        }
        Outcome::Failed { code, message } => {
            counter!(REQUESTS, "door" => door_label, "outcome" => code.name()).increment(1);
            tracing::info!(
                target: "labeld::request",
                request_id,
                door = door_label,
                outcome = code.name(),
                total_us,
                error = message,
                "failed"
            );
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Records a request refused before the model.
pub fn rejected(reason: Rejection) {
    counter!(REJECTED, "reason" => reason.as_str()).increment(1);
}

/// Records one forward pass.
pub fn batch_ran(images: usize) {
    histogram!(BATCH_SIZE).record(images as f64);
}

/// The state gauges, read when `/metrics` is scraped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct State {
    pub queue_depth: usize,
    pub in_flight: usize,
    pub in_flight_limit: usize,
    pub ready: bool,
}

/// A `/metrics` endpoint: the recorder's handle plus where the state gauges come from.
#[derive(Clone)]
pub struct Scrape {
    handle: PrometheusHandle,
    state: Arc<dyn Fn() -> State + Send + Sync>,
}

impl Scrape {
    pub fn new(handle: PrometheusHandle, state: Arc<dyn Fn() -> State + Send + Sync>) -> Self {
        Scrape { handle, state }
    }

    /// The Prometheus text exposition, gauges refreshed first.
    pub fn render(&self) -> String {
        let state = (self.state)();
        gauge!(QUEUE_DEPTH).set(state.queue_depth as f64);
        gauge!(INFLIGHT).set(state.in_flight as f64);
        gauge!(INFLIGHT_LIMIT).set(state.in_flight_limit as f64);
        gauge!(READY).set(if state.ready { 1.0 } else { 0.0 });
        self.handle.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_count_by_door_and_outcome_in_explicit_buckets() {
        let recorder = recorder();
        let handle = recorder.handle();
        let ms = Duration::from_millis;
        metrics::with_local_recorder(&recorder, || {
            describe();
            let timings = Timings {
                decode: ms(2),
                queue: ms(1),
                inference: ms(30),
                total: ms(40),
                batch_size: 3,
            };
            let labelled = Outcome::Labelled {
                timings: &timings,
                labels: 2,
            };
            answered(Door::Grpc, "a", ms(40), labelled);
            answered(Door::Grpc, "b", ms(40), labelled);
            let denied = Outcome::Failed {
                code: ErrorCode::AccessDenied,
                message: "anonymous",
            };
            answered(Door::Oss, "c", ms(1), denied);
            answered(Door::Oss, "d", ms(1), Outcome::Served);
            rejected(Rejection::Overloaded);
            batch_ran(3);
        });
        let text = handle.render();
        for line in [
            r#"labeld_requests_total{door="grpc",outcome="ok"} 2"#,
            r#"labeld_requests_total{door="oss",outcome="AccessDenied"} 1"#,
            r#"labeld_requests_total{door="oss",outcome="ok"} 1"#,
            r#"labeld_request_duration_seconds_bucket{door="grpc",le="0.025"} 0"#,
            r#"labeld_request_duration_seconds_bucket{door="grpc",le="0.05"} 2"#,
            r#"labeld_inference_duration_seconds_bucket{le="0.025"} 0"#,
            r#"labeld_inference_duration_seconds_bucket{le="0.05"} 2"#,
            r#"labeld_batch_size_bucket{le="2"} 0"#,
            r#"labeld_batch_size_bucket{le="4"} 1"#,
            r#"labeld_rejected_requests_total{reason="overloaded"} 1"#,
            "# TYPE labeld_decode_duration_seconds histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
    }
}
