//! The HTTP doors over a real socket, with a minimal HTTP/1.1 client (no client library needed
//! to check status lines, headers and bodies byte for byte).

use std::time::Duration;

use labeld::batcher::BatchConfig;
use labeld::image::ImageLimits;
use labeld::server::{Listeners, ServeSettings, Server};
use labeld::source::Buckets;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{fixture, lite0, read_fixture, taxonomy};

/// A parsed HTTP response.
pub(crate) struct Reply {
    pub(crate) status: u16,
    headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub(crate) async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    // A server may answer (e.g. 400 for a body over the limit) and close before the whole body
    // is written: the answer is what is checked, so a broken pipe here is not an error.
    let _ = stream.write_all(body).await;
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw).await;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..line_end]).unwrap().trim(), 16)
                .unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[line_end + 2..line_end + 2 + size]);
        data = &data[line_end + 4 + size..];
    }
}

async fn start() -> Server {
    start_with(labeld::api::api_keys::ApiKeys::none()).await
}

pub(crate) async fn start_with(api_keys: labeld::api::api_keys::ApiKeys) -> Server {
    start_configured(api_keys, Duration::from_secs(10), Duration::from_secs(60)).await
}

async fn start_configured(
    api_keys: labeld::api::api_keys::ApiKeys,
    header_timeout: Duration,
    body_timeout: Duration,
) -> Server {
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let web = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut credentials = labeld::api::auth::Credentials::new();
    credentials.insert("test-ak", "test-secret");
    let settings = ServeSettings {
        batch: BatchConfig {
            max_batch: 4,
            max_delay: Duration::ZERO,
            max_queue: 16,
            max_wait: Duration::from_secs(60),
        },
        decode_workers: None,
        limits: ImageLimits::default(),
        buckets: Buckets::from_specs(&[format!("fixtures={}", fixture("").display())]).unwrap(),
        device_name: "cpu".into(),
        drain_timeout: Duration::from_secs(30),
        credentials,
        region: "cn-hangzhou".into(),
        api_keys,
        header_timeout,
        body_timeout,
        language: labeld::taxonomy::Language::En,
    };
    let server = Server::start(
        Listeners {
            grpc,
            http: Some(web),
            metrics: Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()),
        },
        vec![lite0()],
        taxonomy(),
        settings,
    )
    .await
    .unwrap();
    let addr = server.http_addr().unwrap();
    // Readiness is what the HTTP door reports; poll it (the server's own signal, not a sleep).
    for _ in 0..24_000 {
        if http(addr, "GET", "/health/ready", &[], b"").await.status == 200 {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("never ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_json_door_and_anonymous_oss_requests() {
    let server = start().await;
    let addr = server.http_addr().unwrap();
    let live = http(addr, "GET", "/health/live", &[], b"").await;
    assert_eq!(live.status, 200);

    // The JSON door: labels as IMM's body.
    let reply = http(
        addr,
        "POST",
        "/v1/labels?threshold=0.5&language=zh-Hans",
        &[("Content-Type", "image/png")],
        &read_fixture("chelsea.png"),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.header("content-type"),
        Some("application/json;charset=utf-8")
    );
    let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["Labels", "RequestId"]);
    assert_eq!(reply.header("x-oss-request-id"), body["RequestId"].as_str());
    assert_eq!(body["Labels"][0]["LabelName"], "动物");
    assert!(reply.header("x-oss-hash-crc64ecma").is_none());

    // JSON door errors: the same codes, as JSON.
    for (target, payload, status, code) in [
        (
            "/v1/labels?threshold=2",
            read_fixture("coffee.png"),
            400,
            "InvalidArgument",
        ),
        (
            "/v1/labels?language=fr",
            read_fixture("coffee.png"),
            400,
            "InvalidArgument",
        ),
        (
            "/v1/labels?colour=red",
            read_fixture("coffee.png"),
            400,
            "InvalidArgument",
        ),
        ("/v1/labels", b"GIF89a....".to_vec(), 400, "InvalidArgument"),
        (
            "/v1/labels",
            vec![0u8; 21 * 1024 * 1024],
            400,
            "ImageTooLarge",
        ),
    ] {
        let reply = http(addr, "POST", target, &[], &payload).await;
        assert_eq!(reply.status, status, "{target}: {}", reply.text());
        let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(body["Code"], code, "{target}");
        assert!(reply.header("x-oss-request-id").is_some());
    }

    // The OSS door refuses anonymous requests, as OSS does for image/labels.
    let reply = http(
        addr,
        "GET",
        "/fixtures/chelsea.png?x-oss-process=image%2Flabels",
        &[],
        b"",
    )
    .await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/xml"));
    let text = reply.text();
    assert!(text.contains("<Code>AccessDenied</Code>"), "{text}");
    let id = reply.header("x-oss-request-id").unwrap();
    assert!(
        text.contains(&format!("<RequestId>{id}</RequestId>")),
        "{text}"
    );
    assert!(text.contains("<EC>"), "{text}");

    server.shutdown();
    server.wait().await.unwrap();
}

/// The value of one sample line (`name{labels} value`) in a Prometheus text scrape.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_answers_on_the_http_port_and_the_metrics_port() {
    let server = start().await;
    let addr = server.http_addr().unwrap();
    let metrics_addr = server.metrics_addr().unwrap();
    let ok = r#"labeld_requests_total{door="json",outcome="ok"}"#;
    let bad = r#"labeld_requests_total{door="json",outcome="InvalidArgument"}"#;
    let before = http(addr, "GET", "/metrics", &[], b"").await.text();

    for _ in 0..2 {
        let reply = http(addr, "POST", "/v1/labels", &[], &read_fixture("coffee.png")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let reply = http(
        addr,
        "POST",
        "/v1/labels?threshold=2",
        &[],
        &read_fixture("coffee.png"),
    )
    .await;
    assert_eq!(reply.status, 400);

    for port in [addr, metrics_addr] {
        let reply = http(port, "GET", "/metrics", &[], b"").await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        let after = reply.text();
        // Other tests in this process share the recorder: they can only add to the counts.
        let delta =
            |series| sample(&after, series).unwrap_or(0.0) - sample(&before, series).unwrap_or(0.0);
        assert!(delta(ok) >= 2.0, "{after}");
        assert!(delta(bad) >= 1.0, "{after}");
        for (name, kind) in [
            ("labeld_requests_total", "counter"),
            ("labeld_request_duration_seconds", "histogram"),
            ("labeld_decode_duration_seconds", "histogram"),
            ("labeld_queue_duration_seconds", "histogram"),
            ("labeld_inference_duration_seconds", "histogram"),
            ("labeld_batch_size", "histogram"),
            ("labeld_queue_depth", "gauge"),
            ("labeld_inflight_requests", "gauge"),
            ("labeld_inflight_limit", "gauge"),
            ("labeld_ready", "gauge"),
            ("labeld_model_info", "gauge"),
            ("labeld_build_info", "gauge"),
        ] {
            assert!(
                after.contains(&format!("# TYPE {name} {kind}\n")),
                "{name}: {after}"
            );
            assert!(
                after.contains(&format!("# HELP {name} ")),
                "{name}: {after}"
            );
        }
        assert!(after.contains(r#"labeld_request_duration_seconds_bucket{door="json",le="0.005"}"#));
        assert!(after.contains(
            r#"labeld_model_info{model="efficientnet-lite0",device="cpu",taxonomy_version=""#
        ));
        assert_eq!(sample(&after, "labeld_ready"), Some(1.0));
    }
    // The metrics port serves /metrics only.
    let reply = http(
        metrics_addr,
        "POST",
        "/v1/labels",
        &[],
        &read_fixture("coffee.png"),
    )
    .await;
    assert_eq!(reply.status, 404);
    server.shutdown();
    server.wait().await.unwrap();
}

/// With API keys, `POST /v1/labels` needs `Authorization: Bearer <key>`; health and metrics stay
/// open for probes and scrapers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_guard_the_json_door_only() {
    let key = "json-door-key-0123456789";
    let keys = labeld::api::api_keys::ApiKeys::parse(key).unwrap();
    let server = start_with(keys).await;
    let addr = server.http_addr().unwrap();
    let photo = read_fixture("coffee.png");
    let bearer = format!("Bearer {key}");
    for (auth, status, code) in [
        (None, 403, Some("AccessDenied")),
        (
            Some("Bearer not-the-key-0123456789"),
            403,
            Some("InvalidAccessKeyId"),
        ),
        (Some("Basic Zm9vOmJhcg=="), 400, Some("InvalidArgument")),
        (Some(bearer.as_str()), 200, None),
    ] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        let reply = http(addr, "POST", "/v1/labels", &headers, &photo).await;
        assert_eq!(reply.status, status, "{auth:?}: {}", reply.text());
        if let Some(code) = code {
            let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
            assert_eq!(body["Code"], code, "{auth:?}");
            assert!(
                !reply.text().contains("0123456789"),
                "a key echoed: {}",
                reply.text()
            );
        }
    }
    for open in ["/health/ready", "/health/live", "/metrics"] {
        assert_eq!(
            http(addr, "GET", open, &[], b"").await.status,
            200,
            "{open}"
        );
    }
    server.shutdown();
    server.wait().await.unwrap();
}

/// A client that trickles its headers is disconnected after the header timeout, one that
/// trickles its body gets 504 RequestTimeout after the body timeout, and the server goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_the_server_goes_on() {
    let none = labeld::api::api_keys::ApiKeys::none();
    let server = start_configured(none, Duration::from_secs(1), Duration::from_secs(1)).await;
    let addr = server.http_addr().unwrap();

    // Headers never finished: the server closes the connection (EOF), well before our limit.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"POST /v1/labels HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(60), slow.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the connection stayed open");

    // A body that stops after 10 of 1000 bytes: 504 RequestTimeout.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(
        b"POST /v1/labels HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n0123456789",
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    let answered = tokio::time::timeout(Duration::from_secs(60), slow.read_to_end(&mut raw)).await;
    assert!(answered.is_ok(), "no answer to a stalled body");
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 504"), "{text}");
    assert!(text.contains("RequestTimeout"), "{text}");

    // Everyone else is still served.
    let reply = http(addr, "POST", "/v1/labels", &[], &read_fixture("coffee.png")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    server.shutdown();
    server.wait().await.unwrap();
}

/// `explain` and `properties` add fields to the JSON door's answer; without them the body is
/// IMM's, byte for byte the same shape; a bad flag is a 400 naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_door_explains_and_measures_when_asked() {
    let server = start().await;
    let addr = server.http_addr().unwrap();
    let photo = read_fixture("chelsea.png");
    let json =
        |reply: &Reply| -> serde_json::Value { serde_json::from_slice(&reply.body).unwrap() };

    let plain = http(addr, "POST", "/v1/labels?threshold=0.3", &[], &photo).await;
    assert_eq!(plain.status, 200, "{}", plain.text());
    let plain = json(&plain);
    assert_eq!(plain.as_object().unwrap().len(), 2, "{plain}");
    for label in plain["Labels"].as_array().unwrap() {
        assert_eq!(label.as_object().unwrap().len(), 6, "{label}");
    }

    let target = "/v1/labels?threshold=0.3&explain=true&properties=true&language=zh-Hans";
    let reply = http(addr, "POST", target, &[], &photo).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = json(&reply);
    let labels = body["Labels"].as_array().unwrap();
    assert_eq!(labels.len(), plain["Labels"].as_array().unwrap().len());
    for label in labels {
        let b = &label["BoundingBox"];
        let (left, width) = (b["Left"].as_u64().unwrap(), b["Width"].as_u64().unwrap());
        let (top, height) = (b["Top"].as_u64().unwrap(), b["Height"].as_u64().unwrap());
        assert!(
            width > 0 && height > 0 && left + width <= 451 && top + height <= 300,
            "{b}"
        );
        let heatmap = &label["Heatmap"];
        assert_eq!(
            (heatmap["Width"].as_u64(), heatmap["Height"].as_u64()),
            (Some(7), Some(7))
        );
        assert_eq!(heatmap["Values"].as_array().unwrap().len(), 49);
        assert!(heatmap["Region"]["Width"].as_u64().unwrap() <= 451);
    }
    let properties = &body["ImageProperties"];
    assert_eq!(
        (properties["Width"].as_u64(), properties["Height"].as_u64()),
        (Some(451), Some(300))
    );
    let colours = properties["DominantColors"].as_array().unwrap();
    assert!(!colours.is_empty(), "{properties}");
    assert!(
        colours[0]["Name"].as_str().unwrap().ends_with('色'),
        "{properties}"
    );
    assert!(colours[0]["Hex"].as_str().unwrap().starts_with('#'));

    let bad = http(addr, "POST", "/v1/labels?explain=yes", &[], &photo).await;
    assert_eq!(bad.status, 400);
    let bad = json(&bad);
    assert_eq!(bad["Code"], "InvalidArgument");
    assert!(
        bad["Message"].as_str().unwrap().contains("explain"),
        "{bad}"
    );
    server.shutdown();
    server.wait().await.unwrap();
}

/// The web page is served at `/` from the binary, with a policy that keeps it on this origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_page_is_served_at_the_root() {
    let server = start().await;
    let addr = server.http_addr().unwrap();
    let page = http(addr, "GET", "/", &[], b"").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let policy = page.header("content-security-policy").unwrap();
    assert!(policy.contains("connect-src 'self'") && policy.contains("default-src 'none'"));
    let html = page.text();
    assert!(html.contains("<title>labeld</title>") && html.contains("/v1/labels?"));
    // No external resource: everything the page needs is in it.
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "external URL in the page"
    );
    server.shutdown();
    server.wait().await.unwrap();
}
