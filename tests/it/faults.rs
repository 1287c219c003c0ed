//! Faults around a running server: a bucket folder that disappears and comes back, an S3
//! endpoint that stops answering, a shutdown while HTTP and gRPC requests are in progress. In
//! each the server answers clearly, in time, and goes on serving. (A panic inside a request is
//! `grpc::a_panic_in_the_model_fails_only_its_own_request`; an S3 endpoint that stops and comes
//! back, with the real moto server, is a step of `tests/clients/run.sh`.)

use std::time::{Duration, Instant};

use labeld::pb::detect_image_labels_request::Source;
use labeld::pb::DetectImageLabelsRequest;
use labeld::server::{Listeners, Server};
use labeld::source::Buckets;
use tonic::Code;

use tonic_health::pb::health_check_response::ServingStatus;

use crate::grpc::{client, settings, start, unary_with_grpc_timeout, wait_for_health};
use crate::http::http;
use crate::support::{fixture, lite0, read_fixture, taxonomy, Gate, Gated};

fn from_bucket(uri: &str) -> DetectImageLabelsRequest {
    DetectImageLabelsRequest {
        source: Some(Source::SourceUri(uri.into())),
        threshold: Some(0.3),
        ..Default::default()
    }
}

/// A local bucket's folder is moved away (an unmounted volume): NOT_FOUND naming the object,
/// at once; when it is back, the same request is labelled again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_folder_that_disappears_is_not_found_and_recovers() {
    let base = std::env::temp_dir().join(format!("labeld-faults-{}", std::process::id()));
    let (folder, away) = (base.join("photos"), base.join("photos-away"));
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::copy(fixture("chelsea.png"), folder.join("cat.png")).unwrap();
    let mut settings = settings(4, 16);
    settings.buckets = Buckets::from_specs(&[format!("photos={}", folder.display())]).unwrap();
    let server = start(vec![lite0()], settings).await;
    wait_for_health(&server, ServingStatus::Serving).await;
    let mut client = client(&server).await;

    let first = client
        .detect_image_labels(from_bucket("oss://photos/cat.png"))
        .await;
    assert!(!first.unwrap().into_inner().labels.is_empty());

    std::fs::rename(&folder, &away).unwrap();
    let started = Instant::now();
    let gone = client
        .detect_image_labels(from_bucket("oss://photos/cat.png"))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound, "{gone:?}");
    assert!(gone.message().contains("cat.png"), "{gone:?}");
    assert!(started.elapsed() < Duration::from_secs(5));

    std::fs::rename(&away, &folder).unwrap();
    let back = client
        .detect_image_labels(from_bucket("oss://photos/cat.png"))
        .await;
    assert!(!back.unwrap().into_inner().labels.is_empty());
    server.shutdown();
    server.wait().await.unwrap();
    std::fs::remove_dir_all(&base).ok();
}

/// An S3 endpoint that accepts connections and never answers (a hung store): a call with a
/// 1.5 s deadline is answered DEADLINE_EXCEEDED by the server at its deadline, not after the
/// store's 20 s timeout, and photos sent inline are still labelled meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_s3_endpoint_fails_within_the_callers_deadline() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let s3 = object_store::aws::AmazonS3Builder::new()
        .with_region("us-east-1")
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .with_access_key_id("test")
        .with_secret_access_key("test");
    let mut settings = settings(4, 16);
    settings.buckets = Buckets::with_s3(&["hung=s3://hung"], &s3).unwrap();
    let server = start(vec![lite0()], settings).await;
    wait_for_health(&server, ServingStatus::Serving).await;

    let started = Instant::now();
    let (status, message) =
        unary_with_grpc_timeout(&server, from_bucket("oss://hung/cat.jpg"), "1500m").await;
    let waited = started.elapsed();
    assert_eq!(status, Code::DeadlineExceeded as i32, "{message}");
    assert!(
        waited < Duration::from_secs(10),
        "answered after {waited:?}"
    );

    let mut client = client(&server).await;
    let inline = DetectImageLabelsRequest {
        source: Some(Source::Image(read_fixture("chelsea.png").into())),
        ..Default::default()
    };
    assert!(client.detect_image_labels(inline).await.is_ok());
    held.abort();
    server.shutdown();
    server.wait().await.unwrap();
}

/// Shutdown (what SIGTERM triggers) while requests are in the model on both doors: every
/// admitted request is answered with its labels, then the server stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_every_admitted_request_on_both_doors() {
    let gate = Gate::closed();
    let listeners = Listeners {
        grpc: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        http: Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()),
        metrics: None,
    };
    let server = Server::start(
        listeners,
        vec![Gated::boxed(lite0(), &gate)],
        taxonomy(),
        settings(2, 16),
    )
    .await
    .unwrap();
    // Warm-up passes the gate too: let it through, then close it for the requests.
    gate.open();
    let http_addr = server.http_addr().unwrap();
    for _ in 0..24_000 {
        if http(http_addr, "GET", "/health/ready", &[], b"")
            .await
            .status
            == 200
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gate.close();
    let before = gate.entered();

    let photo = read_fixture("chelsea.png");
    let mut json = Vec::new();
    for _ in 0..3 {
        let photo = photo.clone();
        json.push(tokio::spawn(async move {
            http(http_addr, "POST", "/v1/labels?threshold=0.3", &[], &photo).await
        }));
    }
    let mut grpc = Vec::new();
    for _ in 0..3 {
        let mut client = client(&server).await;
        let request = DetectImageLabelsRequest {
            source: Some(Source::Image(photo.clone().into())),
            threshold: Some(0.3),
            ..Default::default()
        };
        grpc.push(tokio::spawn(async move {
            client.detect_image_labels(request).await
        }));
    }
    // Wait until the first batch is at the gate and the in-flight gauge shows all six (a
    // request sent but not yet admitted would be served too: a drain finishes what the
    // connections already carry, so the answers below do not depend on this wait).
    for _ in 0..2_000 {
        let metrics = http(http_addr, "GET", "/metrics", &[], b"").await.text();
        if gate.entered() > before && metrics.contains("labeld_inflight_requests 6") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    server.shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    gate.open();
    for reply in json {
        let reply = reply.await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert!(reply.text().contains("\"Labels\""));
    }
    for call in grpc {
        let labels = call.await.unwrap().expect("answered").into_inner().labels;
        assert!(!labels.is_empty());
    }
    server.wait().await.unwrap();
    // Stopped: no new connection is accepted.
    assert!(tokio::net::TcpStream::connect(http_addr).await.is_err());
}
