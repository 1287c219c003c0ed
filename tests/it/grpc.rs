//! The gRPC service, in-process on port 0, driven by the generated tonic client.
//!
//! The model is real (Lite0). Tests about queueing wrap it in [`Gated`], which holds a forward
//! pass until the test opens the gate: that makes "the queue is full" and "the deadline passed
//! while queued" deterministic instead of a race against the machine's speed.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use labeld::batcher::BatchConfig;
use labeld::image::ImageLimits;
use labeld::labels::LabelOptions;
use labeld::model::{Classifier, ModelKind};
use labeld::pb::detect_image_labels_request::Source;
use labeld::pb::image_labels_client::ImageLabelsClient;
use labeld::pb::{DetectImageLabelsRequest, GetModelInfoRequest};
use labeld::server::{Listeners, ServeSettings, Server, SERVICE_NAME};
use labeld::source::Buckets;
use tonic::transport::Channel;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::support::{
    fixture, flat_png, labeler, lite0, read_fixture, taxonomy, Gate, Gated, PanicsOnWhite,
};

pub(crate) fn settings(max_batch: usize, max_queue: usize) -> ServeSettings {
    let bucket = format!("fixtures={}", fixture("").display());
    ServeSettings {
        batch: BatchConfig {
            max_batch,
            max_delay: Duration::from_millis(2),
            max_queue,
            max_wait: Duration::from_secs(60),
        },
        decode_workers: Some(2),
        limits: ImageLimits::default(),
        buckets: Buckets::from_specs(&[bucket]).unwrap(),
        device_name: "cpu".into(),
        drain_timeout: Duration::from_secs(30),
        credentials: labeld::api::auth::Credentials::new(),
        region: "cn-hangzhou".into(),
        api_keys: labeld::api::api_keys::ApiKeys::none(),
        header_timeout: Duration::from_secs(10),
        body_timeout: Duration::from_secs(60),
        language: labeld::taxonomy::Language::En,
    }
}

pub(crate) async fn start(models: Vec<Box<dyn Classifier>>, settings: ServeSettings) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listeners = Listeners {
        grpc: listener,
        http: None,
        metrics: None,
    };
    Server::start(listeners, models, taxonomy(), settings)
        .await
        .unwrap()
}

async fn channel(server: &Server) -> Channel {
    Channel::from_shared(format!("http://{}", server.local_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

pub(crate) async fn client(server: &Server) -> ImageLabelsClient<Channel> {
    ImageLabelsClient::new(channel(server).await).max_decoding_message_size(64 << 20)
}

/// Waits (health watch, no sleeping) until the service reports `want`.
pub(crate) async fn wait_for_health(server: &Server, want: ServingStatus) {
    let mut health = HealthClient::new(channel(server).await);
    let mut stream = health
        .watch(HealthCheckRequest {
            service: SERVICE_NAME.into(),
        })
        .await
        .unwrap()
        .into_inner();
    while let Some(update) = stream.message().await.unwrap() {
        if update.status == want as i32 {
            return;
        }
    }
    panic!("health stream ended before {want:?}");
}

fn image_request(name: &str) -> DetectImageLabelsRequest {
    DetectImageLabelsRequest {
        source: Some(Source::Image(read_fixture(name).into())),
        ..Default::default()
    }
}

/// Sends one `DetectImageLabels` call with a `grpc-timeout` header over a bare HTTP/2
/// connection and waits for the server's answer however late it comes: the server, not a
/// client-side timer, decides the status. Returns `grpc-status` and `grpc-message`.
pub(crate) async fn unary_with_grpc_timeout(
    server: &Server,
    message: DetectImageLabelsRequest,
    timeout: &str,
) -> (i32, String) {
    use prost::Message;
    let tcp = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    let (h2, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut h2 = h2.ready().await.unwrap();
    let request = http::Request::post(format!(
        "http://{}/labeld.v1.ImageLabels/DetectImageLabels",
        server.local_addr()
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .header("grpc-timeout", timeout)
    .body(())
    .unwrap();
    let (response, mut send) = h2.send_request(request, false).unwrap();
    let payload = message.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    send.reserve_capacity(frame.len());
    send.send_data(frame.into(), true).unwrap();
    let response = response.await.unwrap();
    let (head, mut body) = response.into_parts();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    // A status-only answer carries grpc-status in the headers; otherwise it is in the trailers.
    let trailers = body.trailers().await.unwrap().unwrap_or_default();
    let field = |name: &str| {
        trailers
            .get(name)
            .or_else(|| head.headers.get(name))
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let status = field("grpc-status").parse().expect("a grpc-status");
    (status, field("grpc-message"))
}

/// Polls a counter until it reaches `want` (the server's own progress, not wall time).
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    // Generous: it returns as soon as the condition holds, and a loaded machine must not fail it.
    for _ in 0..24_000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("gave up waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_photo_gets_the_same_labels_as_the_cli_and_reflection_info_health_work() {
    let server = start(vec![lite0()], settings(8, 64)).await;
    wait_for_health(&server, ServingStatus::Serving).await;
    let mut client = client(&server).await;
    let mut request = image_request("chelsea.png");
    request.threshold = Some(0.1);
    request.language = "zh-Hans".into();
    request.request_id = "my-id-1".into();
    let response = client.detect_image_labels(request).await.unwrap();
    assert_eq!(response.metadata().get("x-request-id").unwrap(), "my-id-1");
    let response = response.into_inner();
    assert_eq!(response.request_id, "my-id-1");
    assert_eq!(response.model, "efficientnet-lite0");
    let timings = response.timings.unwrap();
    assert!(timings.total_us >= timings.inference_us && timings.batch_size >= 1);

    // The in-process pipeline (what `labeld label` runs) on the same bytes.
    let labeler = labeler(ModelKind::EfficientNetLite0);
    let input = labeler.prepare(&read_fixture("chelsea.png")).unwrap();
    let options = LabelOptions {
        threshold: 0.1,
        language: labeld::taxonomy::Language::ZhHans,
        ..Default::default()
    };
    let expected = labeler.label(&[&input], &options).unwrap().remove(0);
    assert_eq!(response.labels.len(), expected.len());
    for (got, want) in response.labels.iter().zip(&expected) {
        assert_eq!(got.label_name, want.label_name);
        assert_eq!(i32::from(want.label_level), got.label_level);
        assert_eq!(got.parent_label_name, want.parent_label_name);
        assert!((got.label_confidence - want.label_confidence).abs() < 1e-5);
        assert!((got.centric_score - want.centric_score).abs() < 1e-5);
        assert_eq!(got.language, "zh-Hans");
    }

    // The same image by reference to a configured bucket.
    let by_uri = DetectImageLabelsRequest {
        source: Some(Source::SourceUri("oss://fixtures/chelsea.png".into())),
        threshold: Some(0.1),
        language: "zh-Hans".into(),
        ..Default::default()
    };
    let by_uri = client
        .detect_image_labels(by_uri)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_uri.labels, response.labels);
    for (uri, code) in [
        ("oss://fixtures/none.png", Code::NotFound),
        ("oss://nobucket/chelsea.png", Code::NotFound),
        ("oss://fixtures/../Cargo.toml", Code::InvalidArgument),
        ("http://x/y", Code::InvalidArgument),
    ] {
        let request = DetectImageLabelsRequest {
            source: Some(Source::SourceUri(uri.into())),
            ..Default::default()
        };
        let status = client.detect_image_labels(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{uri}: {status:?}");
    }

    let info = client
        .get_model_info(GetModelInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (info.model.as_str(), info.input_size, info.class_count),
        ("efficientnet-lite0", 224, 1000)
    );
    assert!(info.category_count >= 30);
    assert_eq!(info.max_batch, 8);

    server.shutdown();
    server.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_invalid_argument_and_the_next_request_still_works() {
    let server = start(vec![lite0()], settings(4, 16)).await;
    wait_for_health(&server, ServingStatus::Serving).await;
    let mut client = client(&server).await;
    let mut corrupt = read_fixture("rocket.jpg");
    corrupt.truncate(corrupt.len() / 2);
    let cases = [
        (
            Some(Source::Image(corrupt.into())),
            None,
            Code::InvalidArgument,
        ),
        (
            Some(Source::Image(b"GIF89a......".to_vec().into())),
            None,
            Code::InvalidArgument,
        ),
        (
            Some(Source::Image(Vec::new().into())),
            None,
            Code::InvalidArgument,
        ),
        (None, None, Code::InvalidArgument),
        (
            Some(Source::Image(read_fixture("coffee.png").into())),
            Some(1.5),
            Code::InvalidArgument,
        ),
    ];
    for (source, threshold, code) in cases {
        let request = DetectImageLabelsRequest {
            source,
            threshold,
            ..Default::default()
        };
        let status = client.detect_image_labels(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.metadata().get("x-request-id").is_some());
        let good = client
            .detect_image_labels(image_request("coffee.png"))
            .await
            .unwrap();
        assert_eq!(good.into_inner().labels[0].label_name, "Drink");
    }
    server.shutdown();
    server.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_forward_passes() {
    let gate = Gate::closed();
    let server = start(vec![Gated::boxed(lite0(), &gate)], settings(8, 64)).await;
    gate.open();
    wait_for_health(&server, ServingStatus::Serving).await;
    gate.close();
    let stats = Arc::clone(server.stats());
    let calls_before = stats.model_calls.load(Ordering::SeqCst);
    let entered = gate.entered();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64 {
        let mut client = client(&server).await;
        tasks.spawn(async move {
            client
                .detect_image_labels(image_request("chelsea.png"))
                .await
        });
        if i == 0 {
            // The first request alone in the (held) model, so that the other 63 all queue.
            until("the first request in the model", || {
                gate.entered() == entered + 1
            })
            .await;
        }
    }
    until("63 queued", || {
        stats.queue_depth.load(Ordering::SeqCst) == 63
    })
    .await;
    gate.open();
    while let Some(result) = tasks.join_next().await {
        assert!(!result.unwrap().unwrap().into_inner().labels.is_empty());
    }
    let calls = stats.model_calls.load(Ordering::SeqCst) - calls_before;
    assert!(calls < 64, "{calls} forward passes for 64 requests");
    assert_eq!(calls, 1 + 63usize.div_ceil(8) as u64);
    server.shutdown();
    server.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_resource_exhausted_at_once() {
    let gate = Gate::closed();
    let server = start(vec![Gated::boxed(lite0(), &gate)], settings(1, 2)).await;
    gate.open();
    wait_for_health(&server, ServingStatus::Serving).await;
    gate.close();
    let stats = Arc::clone(server.stats());
    let entered = gate.entered();
    let mut first = client(&server).await;
    let first =
        tokio::spawn(async move { first.detect_image_labels(image_request("coffee.png")).await });
    until("the first request in the model", || {
        gate.entered() == entered + 1
    })
    .await;
    let mut second = client(&server).await;
    let second = tokio::spawn(async move {
        second
            .detect_image_labels(image_request("coffee.png"))
            .await
    });
    until("the second request queued", || {
        stats.queue_depth.load(Ordering::SeqCst) == 1
    })
    .await;

    let mut third = client(&server).await;
    let status = third
        .detect_image_labels(image_request("coffee.png"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    gate.open();
    assert!(first.await.unwrap().is_ok());
    assert!(second.await.unwrap().is_ok());
    // Capacity is back.
    assert!(third
        .detect_image_labels(image_request("coffee.png"))
        .await
        .is_ok());
    server.shutdown();
    server.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_deadline_is_deadline_exceeded_and_never_reaches_the_model() {
    let gate = Gate::closed();
    let server = start(vec![Gated::boxed(lite0(), &gate)], settings(1, 8)).await;
    gate.open();
    wait_for_health(&server, ServingStatus::Serving).await;
    gate.close();
    let stats = Arc::clone(server.stats());
    let inferred_before = stats.images_inferred.load(Ordering::SeqCst);
    let entered = gate.entered();
    let mut blocker = client(&server).await;
    let blocker = tokio::spawn(async move {
        blocker
            .detect_image_labels(image_request("coffee.png"))
            .await
    });
    until("the blocker in the model", || gate.entered() == entered + 1).await;

    // A 300 ms deadline while the only model worker is held: the server itself must answer
    // DEADLINE_EXCEEDED. Sent by a raw HTTP/2 client because tonic's client enforces the same
    // deadline locally and, on a loaded machine, may give up first (reporting CANCELLED).
    let (status, message) =
        unary_with_grpc_timeout(&server, image_request("chelsea.png"), "300m").await;
    assert_eq!(status, Code::DeadlineExceeded as i32, "{message}");

    gate.open();
    assert!(blocker.await.unwrap().is_ok());
    until("the expired request dropped", || {
        stats.expired.load(Ordering::SeqCst) + stats.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(
        stats.images_inferred.load(Ordering::SeqCst) - inferred_before,
        1
    );
    server.shutdown();
    server.wait().await.unwrap();
}

/// Once the model's pace is known, a call whose deadline is shorter than the work ahead of it
/// is refused at once with RESOURCE_EXHAUSTED (admitted, it would only hold a slot and expire
/// in the queue), while a call with time enough is admitted and served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_cannot_meet_its_deadline_is_refused_at_once() {
    let gate = Gate::closed();
    let server = start(vec![Gated::boxed(lite0(), &gate)], settings(1, 8)).await;
    gate.open();
    wait_for_health(&server, ServingStatus::Serving).await;
    // One forward pass, held at the gate for 300 ms: now the pace (model time per image) is
    // known, and long, as for a slow model. The budgets below are multiples of it, so that a
    // busy test machine cannot run a call out of time before the server looks at it (with the
    // real model's few milliseconds a budget this test failed twice in full `cargo test` runs
    // on the 2-core VM).
    gate.close();
    let entered = gate.entered();
    let mut caller = client(&server).await;
    let first = tokio::spawn(async move {
        caller
            .detect_image_labels(image_request("chelsea.png"))
            .await
    });
    until("the first call in the model", || {
        gate.entered() == entered + 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    gate.open();
    assert!(first.await.unwrap().is_ok());
    let per_image = Duration::from_nanos(server.stats().image_nanos.load(Ordering::SeqCst));
    assert!(per_image >= Duration::from_millis(300), "{per_image:?}");

    gate.close();
    let entered = gate.entered();
    let mut blocker = client(&server).await;
    let blocker = tokio::spawn(async move {
        blocker
            .detect_image_labels(image_request("coffee.png"))
            .await
    });
    until("the blocker in the model", || gate.entered() == entered + 1).await;
    // With the blocker ahead, a new call needs about two images' time; give it just that:
    // the estimate must fit in 75 % of the budget, so it is refused.
    let (status, message) = unary_with_grpc_timeout(
        &server,
        image_request("chelsea.png"),
        &format!("{}u", 2 * per_image.as_micros()),
    )
    .await;
    assert_eq!(status, Code::ResourceExhausted as i32, "{message}");
    assert!(message.contains("would%20wait%20about"), "{message}");
    // Time enough: admitted, and served once the model moves.
    let mut patient = client(&server).await;
    let patient = tokio::spawn(async move {
        let mut request = tonic::Request::new(image_request("chelsea.png"));
        request.set_timeout(Duration::from_secs(60));
        patient.detect_image_labels(request).await
    });
    gate.open();
    assert!(blocker.await.unwrap().is_ok());
    assert!(patient.await.unwrap().is_ok());
    server.shutdown();
    server.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_turns_serving_after_warm_up() {
    let gate = Gate::closed();
    let server = start(vec![Gated::boxed(lite0(), &gate)], settings(4, 8)).await;
    let mut health = HealthClient::new(channel(&server).await);
    for service in ["", SERVICE_NAME] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::NotServing as i32, "{service:?}");
    }
    // Requests during warm-up are refused as UNAVAILABLE.
    let status = client(&server)
        .await
        .detect_image_labels(image_request("coffee.png"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    gate.open();
    let mut watch = health
        .watch(HealthCheckRequest {
            service: SERVICE_NAME.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while let Some(update) = watch.message().await.unwrap() {
        seen.push(update.status);
        if update.status == ServingStatus::Serving as i32 {
            break;
        }
    }
    assert!(server.is_serving());
    // Draining: health turns NOT_SERVING on the same watch, before the server stops.
    server.shutdown();
    while let Some(update) = watch.message().await.unwrap() {
        seen.push(update.status);
        if update.status == ServingStatus::NotServing as i32 {
            break;
        }
    }
    assert_eq!(
        seen.last(),
        Some(&(ServingStatus::NotServing as i32)),
        "{seen:?}"
    );
    drop(watch);
    drop(health);
    server.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_20_images_gets_20_tagged_answers() {
    let server = start(vec![lite0()], settings(8, 64)).await;
    wait_for_health(&server, ServingStatus::Serving).await;
    let mut client = client(&server).await;
    let names = ["chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png"];
    let requests: Vec<_> = (0..20)
        .map(|i| {
            let mut r = image_request(names[i % names.len()]);
            r.request_id = format!("img-{i}");
            if i == 7 {
                r.source = Some(Source::Image(b"not an image".to_vec().into()));
            }
            r
        })
        .collect();
    let mut answers = client
        .detect_image_labels_stream(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut seen = std::collections::BTreeMap::new();
    while let Some(answer) = answers.message().await.unwrap() {
        seen.insert(answer.request_id.clone(), answer);
    }
    assert_eq!(seen.len(), 20);
    for i in 0..20 {
        let answer = &seen[&format!("img-{i}")];
        if i == 7 {
            let error = answer.error.as_ref().expect("the bad image fails alone");
            assert_eq!(error.code, Code::InvalidArgument as i32);
            assert_eq!(error.reason, "InvalidArgument");
        } else {
            assert!(answer.error.is_none(), "{i}: {:?}", answer.error);
            assert_eq!(answer.model, "efficientnet-lite0");
        }
    }
    server.shutdown();
    server.wait().await.unwrap();
}

/// A panic inside the model fails only the image that causes it, with INTERNAL, even when it
/// shares a batch; the server goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_model_fails_only_its_own_request() {
    let gate = Gate::closed();
    let model = Gated::boxed(PanicsOnWhite::boxed(lite0()), &gate);
    let server = start(vec![model], settings(8, 16)).await;
    gate.open();
    wait_for_health(&server, ServingStatus::Serving).await;
    gate.close();
    let stats = Arc::clone(server.stats());
    let entered = gate.entered();
    let mut blocker = client(&server).await;
    let blocker = tokio::spawn(async move {
        blocker
            .detect_image_labels(image_request("coffee.png"))
            .await
    });
    until("the blocker in the model", || gate.entered() == entered + 1).await;
    // The poison and a good image wait in the queue together, so they share the next batch.
    let white = DetectImageLabelsRequest {
        source: Some(Source::Image(flat_png([255, 255, 255]).into())),
        ..Default::default()
    };
    let mut poison = client(&server).await;
    let poison = tokio::spawn(async move { poison.detect_image_labels(white).await });
    let mut good = client(&server).await;
    let good =
        tokio::spawn(async move { good.detect_image_labels(image_request("chelsea.png")).await });
    until("both queued", || {
        stats.queue_depth.load(Ordering::SeqCst) == 2
    })
    .await;
    gate.open();
    assert!(blocker.await.unwrap().is_ok());
    let status = poison.await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert!(
        !status.message().contains("provoked"),
        "internal details stay in the log: {status:?}"
    );
    assert!(good.await.unwrap().is_ok(), "the batch-mate is served");
    let mut after = client(&server).await;
    assert!(after
        .detect_image_labels(image_request("coffee.png"))
        .await
        .is_ok());
    server.shutdown();
    server.wait().await.unwrap();
}

/// With API keys every `ImageLabels` call needs `authorization: Bearer <key>`; health does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_guard_every_image_labels_call_but_not_health() {
    let key = "grpc-door-key-0123456789";
    let mut settings = settings(4, 8);
    settings.api_keys = labeld::api::api_keys::ApiKeys::parse(key).unwrap();
    let server = start(vec![lite0()], settings).await;
    wait_for_health(&server, ServingStatus::Serving).await;
    let mut client = client(&server).await;
    let with = |auth: Option<&str>| {
        let mut request = tonic::Request::new(image_request("coffee.png"));
        if let Some(a) = auth {
            request
                .metadata_mut()
                .insert("authorization", a.parse().unwrap());
        }
        request
    };
    for (auth, code) in [
        (None, "AccessDenied"),
        (Some("Bearer not-the-key-0123456789"), "InvalidAccessKeyId"),
    ] {
        let status = client.detect_image_labels(with(auth)).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{auth:?}");
        let got = status.metadata().get("x-labeld-error-code").unwrap();
        assert_eq!(got.to_str().unwrap(), code);
        assert!(!status.message().contains("0123456789"), "{status:?}");
    }
    let ok = client
        .detect_image_labels(with(Some(&format!("Bearer {key}"))))
        .await
        .unwrap();
    assert!(!ok.into_inner().labels.is_empty());
    let info = client
        .get_model_info(GetModelInfoRequest {})
        .await
        .unwrap_err();
    assert_eq!(info.code(), Code::Unauthenticated);
    let stream = client
        .detect_image_labels_stream(tokio_stream::iter(vec![image_request("coffee.png")]))
        .await;
    assert_eq!(stream.unwrap_err().code(), Code::Unauthenticated);
    // Health stays open for probes.
    let mut health = HealthClient::new(channel(&server).await);
    let check = health
        .check(HealthCheckRequest {
            service: SERVICE_NAME.into(),
        })
        .await
        .unwrap();
    assert_eq!(check.into_inner().status, ServingStatus::Serving as i32);
    server.shutdown();
    server.wait().await.unwrap();
}

/// `explain` and `properties` over gRPC: boxes and heatmaps per label, properties per image;
/// neither is sent unless asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_and_properties_are_returned_only_when_asked() {
    let server = start(vec![lite0()], settings(8, 64)).await;
    wait_for_health(&server, ServingStatus::Serving).await;
    let mut client = client(&server).await;
    let mut request = image_request("coffee.png");
    request.threshold = Some(0.2);
    let plain = client
        .detect_image_labels(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(!plain.labels.is_empty());
    assert!(plain.properties.is_none());
    assert!(plain
        .labels
        .iter()
        .all(|l| l.bounding_box.is_none() && l.heatmap.is_none()));

    request.explain = true;
    request.properties = true;
    let explained = client
        .detect_image_labels(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(explained.labels.len(), plain.labels.len());
    for label in &explained.labels {
        let b = label.bounding_box.expect("a box");
        assert!(
            b.width > 0 && b.left + b.width <= 600 && b.top + b.height <= 400,
            "{b:?}"
        );
        let h = label.heatmap.as_ref().expect("a heatmap");
        assert_eq!(h.values.len(), (h.width * h.height) as usize);
        assert!(h.values.contains(&1.0));
    }
    let p = explained.properties.expect("properties");
    assert_eq!((p.width, p.height), (600, 400));
    assert!(p.brightness > 0.0 && p.brightness < 1.0);
    assert!(!p.dominant_colors.is_empty());
    server.shutdown();
    server.wait().await.unwrap();
}
