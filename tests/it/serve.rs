//! `labeld serve` as a process: SIGTERM under load answers every admitted request and exits 0;
//! its JSON log has one line per answered request.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use labeld::pb::detect_image_labels_request::Source;
use labeld::pb::image_labels_client::ImageLabelsClient;
use labeld::pb::DetectImageLabelsRequest;
use labeld::server::SERVICE_NAME;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::support::{read_fixture, root};

/// Starts `labeld serve` on a free port with JSON logs and returns the child, its address (read
/// from its log line, so no port is guessed) and a receiver of its later log lines.
fn spawn_server() -> (
    std::process::Child,
    String,
    std::sync::mpsc::Receiver<String>,
) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_labeld"))
        .current_dir(root())
        .args([
            "serve",
            "--model",
            "lite0",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--max-queue",
            "256",
            // This test is about the drain: no pace-based shedding, however slow the machine.
            "--max-wait-ms",
            "600000",
        ])
        .args(["--drain-timeout-secs", "300", "--log-format", "json"])
        .env("LABELD_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let addr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(300))
            .expect("the server logs its address");
        let event: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
        if let Some(addr) = event["addr"].as_str() {
            break addr.to_string();
        }
    };
    (child, addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_answers_every_admitted_request_and_exits_0() {
    let (mut child, addr, log) = spawn_server();
    let url = format!("http://{addr}");
    let channel = loop {
        match tonic::transport::Channel::from_shared(url.clone())
            .unwrap()
            .connect()
            .await
        {
            Ok(channel) => break channel,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let mut health = HealthClient::new(channel.clone());
    let mut watch = health
        .watch(HealthCheckRequest {
            service: SERVICE_NAME.into(),
        })
        .await
        .unwrap()
        .into_inner();
    while let Some(update) = watch.message().await.unwrap() {
        if update.status == ServingStatus::Serving as i32 {
            break;
        }
    }
    // A watch never ends by itself: an open one would hold the drain until its timeout.
    drop(watch);
    drop(health);

    let image = read_fixture("chelsea.png");
    let mut tasks = tokio::task::JoinSet::new();
    let (first_tx, mut first_rx) = tokio::sync::mpsc::channel::<()>(64);
    for i in 0..40 {
        let mut client = ImageLabelsClient::new(channel.clone());
        let request = DetectImageLabelsRequest {
            source: Some(Source::Image(image.clone().into())),
            request_id: format!("load-{i}"),
            ..Default::default()
        };
        let first_tx = first_tx.clone();
        tasks.spawn(async move {
            let result = client.detect_image_labels(request).await;
            let _ = first_tx.send(()).await;
            result
        });
    }
    // Once one answer is back, every request has long been sent and admitted: now stop.
    first_rx.recv().await.unwrap();
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());

    let mut ok = 0;
    while let Some(result) = tasks.join_next().await {
        let response = result
            .unwrap()
            .unwrap_or_else(|status| panic!("an admitted request was lost: {status:?}"));
        assert!(!response.into_inner().labels.is_empty());
        ok += 1;
    }
    assert_eq!(ok, 40);
    drop(channel);
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "labeld serve exit status");
    // It drained by itself (every call finished), not by giving up at the drain timeout.
    // Every line up to the end of its stderr (the reader thread ends there).
    let log: Vec<String> = log.iter().collect();
    assert!(log.iter().any(|l| l.contains("stopped")), "{log:#?}");
    assert!(!log.iter().any(|l| l.contains("abandoning")), "{log:#?}");

    // One JSON line per answered request, with its id, door, outcome and stage timings; no
    // image bytes (a line stays short).
    let events: Vec<serde_json::Value> = log
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let mut ids: Vec<&str> = events
        .iter()
        .filter(|e| e["target"] == "labeld::request")
        .map(|e| {
            assert_eq!(e["door"], "grpc", "{e}");
            assert_eq!(e["outcome"], "ok", "{e}");
            for field in [
                "total_us",
                "decode_us",
                "queue_us",
                "inference_us",
                "batch",
                "labels",
            ] {
                assert!(e[field].is_u64(), "{field} in {e}");
            }
            e["request_id"].as_str().unwrap()
        })
        .collect();
    ids.sort_unstable();
    let mut want: Vec<String> = (0..40).map(|i| format!("load-{i}")).collect();
    want.sort_unstable();
    assert_eq!(ids, want);
    assert!(log.iter().all(|l| l.len() < 1000), "{log:#?}");
}
