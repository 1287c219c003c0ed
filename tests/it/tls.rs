//! TLS on the gRPC and HTTP ports over real sockets. The certificates are made here: a CA, and
//! a server certificate for `localhost` and 127.0.0.1 that it signs; every client trusts that
//! CA only, so a passing test means the server presented the chain it was given.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use labeld::pb::detect_image_labels_request::Source;
use labeld::pb::image_labels_client::ImageLabelsClient;
use labeld::pb::DetectImageLabelsRequest;
use labeld::server::{Listeners, Server, SERVICE_NAME};
use labeld::tls::ServerTls;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::http::http;
use crate::support::{lite0, read_fixture, taxonomy};

/// A CA and a server certificate it signed, written to a folder of their own.
struct Pki {
    dir: PathBuf,
    ca: CertificateDer<'static>,
    ca_pem: String,
    /// The chain: the server certificate, then the CA.
    cert: PathBuf,
    key: PathBuf,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn pki(name: &str) -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "labeld test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &ca).unwrap();

    let dir = std::env::temp_dir().join(format!("labeld-it-tls-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert_path = dir.join("tls.crt");
    let key_path = dir.join("tls.key");
    std::fs::write(&cert_path, format!("{}{}", cert.pem(), ca.pem())).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    Pki {
        dir,
        ca: ca.der().clone(),
        ca_pem: ca.pem(),
        cert: cert_path,
        key: key_path,
    }
}

/// A server on port 0 with TLS from `pki` on gRPC and HTTP, and a plain metrics port; returns
/// once `/health/ready` answers 200 over HTTPS.
async fn start(pki: &Pki, header_timeout: Duration) -> Server {
    let tls = ServerTls::load(&pki.cert, &pki.key).unwrap();
    let mut settings = crate::grpc::settings(4, 16);
    settings.batch.max_delay = Duration::ZERO;
    settings.header_timeout = header_timeout;
    let bind = || tokio::net::TcpListener::bind("127.0.0.1:0");
    let listeners = Listeners {
        grpc: bind().await.unwrap(),
        http: Some(bind().await.unwrap()),
        metrics: Some(bind().await.unwrap()),
    };
    let server = Server::start_with_tls(listeners, vec![lite0()], taxonomy(), settings, Some(tls))
        .await
        .unwrap();
    let addr = server.http_addr().unwrap();
    for _ in 0..24_000 {
        let ready = https1(pki, addr, TLS13, "GET", "/health/ready", b"").await;
        if ready.0 == 200 {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("never ready");
}

const TLS12: &SupportedProtocolVersion = &rustls::version::TLS12;
const TLS13: &SupportedProtocolVersion = &rustls::version::TLS13;

/// A TLS connection to `addr` that trusts only `pki`'s CA, speaks only `version` and offers
/// only `alpn`; checks that both were what the server agreed to.
async fn connect(
    pki: &Pki,
    addr: SocketAddr,
    version: &'static SupportedProtocolVersion,
    alpn: &[u8],
) -> TlsStream<TcpStream> {
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (_, session) = tls.get_ref();
    assert_eq!(session.alpn_protocol(), Some(alpn));
    assert_eq!(session.protocol_version(), Some(version.version));
    tls
}

/// One HTTP/1.1 request over TLS (`Connection: close`): status and body.
async fn https1(
    pki: &Pki,
    addr: SocketAddr,
    version: &'static SupportedProtocolVersion,
    method: &str,
    target: &str,
    body: &[u8],
) -> (u16, Vec<u8>) {
    let mut tls = connect(pki, addr, version, b"http/1.1").await;
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    // What was read stays in `raw` even if the close is not a clean close_notify.
    let _ = tls.read_to_end(&mut raw).await;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header block in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let body = &raw[split + 4..];
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    (
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_vec()
        },
    )
}

/// The payload of a chunked HTTP/1.1 body.
fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&data[..end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .expect("a chunk size line");
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[end + 2..end + 2 + size]);
        data = &data[end + 4 + size..];
    }
    out
}

/// One request over HTTP/2 (`h2`) or HTTP/1.1.
async fn https(
    pki: &Pki,
    addr: SocketAddr,
    version: &'static SupportedProtocolVersion,
    h2: bool,
    method: &str,
    target: &str,
    body: &[u8],
) -> (u16, Vec<u8>) {
    if h2 {
        https2(pki, addr, version, method, target, body).await
    } else {
        https1(pki, addr, version, method, target, body).await
    }
}

/// One HTTP/2 request over TLS: status and body.
async fn https2(
    pki: &Pki,
    addr: SocketAddr,
    version: &'static SupportedProtocolVersion,
    method: &str,
    target: &str,
    body: &[u8],
) -> (u16, Vec<u8>) {
    let tls = connect(pki, addr, version, b"h2").await;
    let (h2, connection) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(connection);
    let mut h2 = h2.ready().await.unwrap();
    let request = ::http::Request::builder()
        .method(method)
        .uri(format!("https://localhost{target}"))
        .body(())
        .unwrap();
    let (response, mut send) = h2.send_request(request, body.is_empty()).unwrap();
    if !body.is_empty() {
        send.send_data(body.to_vec().into(), true).unwrap();
    }
    let response = response.await.unwrap();
    let status = response.status().as_u16();
    let mut stream = response.into_body();
    let mut out = Vec::new();
    while let Some(chunk) = stream.data().await {
        let chunk = chunk.unwrap();
        stream.flow_control().release_capacity(chunk.len()).unwrap();
        out.extend_from_slice(&chunk);
    }
    (status, out)
}

/// The label names of a JSON door answer.
fn label_names(body: &[u8]) -> Vec<String> {
    let body: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)));
    body["Labels"]
        .as_array()
        .unwrap_or_else(|| panic!("no Labels in {body}"))
        .iter()
        .map(|l| l["LabelName"].as_str().unwrap().to_string())
        .collect()
}

/// Reads `stream` until the server closes it (EOF or reset) and returns how long that took,
/// or `None` if it is still open after `limit`. Any bytes the server sent come back too.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<(Duration, Vec<u8>)> {
    let started = Instant::now();
    let mut got = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 512];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok().map(|()| (started.elapsed(), got))
}

/// A gRPC channel over TLS that trusts only `pki`'s CA.
async fn grpc_channel(pki: &Pki, server: &Server) -> Channel {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_pem))
        .domain_name("localhost");
    Channel::from_shared(format!("https://127.0.0.1:{}", server.local_addr().port()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls_labels_a_photo_and_plaintext_is_refused() {
    let pki = pki("grpc");
    let server = start(&pki, Duration::from_secs(10)).await;
    let port = server.local_addr().port();
    let mut client = ImageLabelsClient::new(grpc_channel(&pki, &server).await);
    let reply = client
        .detect_image_labels(DetectImageLabelsRequest {
            source: Some(Source::Image(read_fixture("chelsea.png").into())),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = reply.labels.iter().map(|l| l.label_name.as_str()).collect();
    assert!(
        names.contains(&"Animal") && names.contains(&"Cat"),
        "{names:?}"
    );

    // Plaintext HTTP/2 (what `grpcurl -plaintext` sends) on the TLS port: the call fails, and
    // the server goes on serving TLS clients.
    let plain = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5));
    let refused = match plain.connect().await {
        Ok(channel) => ImageLabelsClient::new(channel)
            .detect_image_labels(DetectImageLabelsRequest {
                source: Some(Source::Image(read_fixture("chelsea.png").into())),
                ..Default::default()
            })
            .await
            .is_err(),
        Err(_) => true,
    };
    assert!(refused, "a plaintext call on the TLS port was answered");
    let again = client
        .detect_image_labels(DetectImageLabelsRequest {
            source: Some(Source::SourceUri("oss://fixtures/chelsea.png".into())),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.labels, reply.labels);

    // Graceful shutdown as without TLS: the drain ends well before the 30 s drain timeout.
    drop(client);
    server.shutdown();
    tokio::time::timeout(Duration::from_secs(20), server.wait())
        .await
        .expect("drained in time")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_http1_and_h2_on_tls12_and_tls13() {
    let pki = pki("https");
    let server = start(&pki, Duration::from_secs(10)).await;
    let addr = server.http_addr().unwrap();
    let photo = read_fixture("chelsea.png");
    for version in [TLS12, TLS13] {
        for h2 in [false, true] {
            let what = format!("{:?} h2={h2}", version.version);
            let (status, body) = https(&pki, addr, version, h2, "GET", "/health/ready", b"").await;
            assert_eq!(status, 200, "{what}: {}", String::from_utf8_lossy(&body));
            let (status, body) = https(&pki, addr, version, h2, "POST", "/v1/labels", &photo).await;
            assert_eq!(status, 200, "{what}: {}", String::from_utf8_lossy(&body));
            let names = label_names(&body);
            assert!(names.contains(&"Cat".to_string()), "{what}: {names:?}");
            let (status, body) = https(&pki, addr, version, h2, "GET", "/metrics", b"").await;
            assert_eq!(status, 200, "{what}");
            assert!(String::from_utf8_lossy(&body).contains("labeld_"), "{what}");
        }
    }

    // The metrics port stays plain HTTP.
    let scrape = http(server.metrics_addr().unwrap(), "GET", "/metrics", &[], b"").await;
    assert_eq!(scrape.status, 200);
    assert!(scrape.text().contains("labeld_"));
    server.shutdown();
    server.wait().await.unwrap();
}

/// A plaintext request on the TLS port is refused; a client that connects and never sends its
/// ClientHello is cut off after the handshake timeout (the header timeout) on both ports, and
/// meanwhile clients that came after it are served at once; shutdown does not wait for such a
/// client beyond that timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_and_silent_clients_are_cut_off_and_the_server_goes_on() {
    let pki = pki("silent");
    let timeout = Duration::from_secs(3);
    let server = start(&pki, timeout).await;
    let addr = server.http_addr().unwrap();

    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET /health/ready HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let (_, answer) = closed_within(&mut plain, Duration::from_secs(5))
        .await
        .expect("a plaintext client is disconnected");
    assert!(
        !answer.starts_with(b"HTTP/"),
        "answered in plaintext: {:?}",
        String::from_utf8_lossy(&answer)
    );

    // The silent clients are accepted first; had their handshakes run in the accept loop, the
    // clients after them would wait out the timeout.
    let connected = Instant::now();
    let mut silent_http = TcpStream::connect(addr).await.unwrap();
    let mut silent_grpc = TcpStream::connect(server.local_addr()).await.unwrap();
    let (status, _) = https1(&pki, addr, TLS13, "GET", "/health/ready", b"").await;
    assert_eq!(status, 200);
    let mut health = HealthClient::new(grpc_channel(&pki, &server).await);
    let check = health
        .check(HealthCheckRequest {
            service: SERVICE_NAME.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(check.status, ServingStatus::Serving as i32);
    let served_in = connected.elapsed();
    assert!(
        served_in < timeout,
        "held up by a silent client: {served_in:?}"
    );
    let mut buf = [0u8; 1];
    for silent in [&silent_http, &silent_grpc] {
        // Still open, nothing sent: the server is waiting for its ClientHello.
        let still_open = silent.try_read(&mut buf);
        assert!(
            matches!(&still_open, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "{still_open:?}"
        );
    }
    let photo = read_fixture("chelsea.png");
    let (status, body) = https2(&pki, addr, TLS13, "POST", "/v1/labels", &photo).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));

    for silent in [&mut silent_http, &mut silent_grpc] {
        let (_, sent) = closed_within(silent, Duration::from_secs(15))
            .await
            .expect("a silent client is disconnected");
        assert!(sent.is_empty(), "{sent:?}");
    }
    assert!(
        connected.elapsed() >= timeout - Duration::from_millis(50),
        "cut off before the handshake timeout: {:?}",
        connected.elapsed()
    );

    // Shutdown with a handshake in progress: done within about the handshake timeout, not the
    // 30 s drain timeout.
    let _silent = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    server.shutdown();
    tokio::time::timeout(timeout + Duration::from_secs(7), server.wait())
        .await
        .expect("drained in time")
        .unwrap();
}
