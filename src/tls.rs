//! Optional TLS on the gRPC and HTTP ports (`--tls-cert`, `--tls-key`): the certificate chain
//! and private key are loaded once, at start-up, into rustls configurations (the aws-lc-rs
//! provider, TLS 1.2 and 1.3), and every accepted connection goes through the handshake before
//! its protocol is spoken.
//!
//! Our own acceptor rather than tonic's `ServerTlsConfig`: one code path for both ports, the
//! handshake bounded by the same deadline as an HTTP client's request headers, and the
//! handshake run in the connection's own task. A client that connects and never sends its
//! ClientHello costs one idle task until the deadline; it never holds up the accept loop, so
//! the other clients are served meanwhile.
//!
//! Secrets: the private key goes from its file into rustls and nowhere else. Errors name the
//! files and say what is wrong with them, never what they hold, and [`ServerTls`]'s `Debug`
//! shows the certificate's path only.

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::aws_lc_rs;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ServerConfig;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::InconsistentKeys;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;

use crate::api::http_serve::accept;

/// ALPN of the HTTP port: hyper serves both, and picks by what the client negotiated.
const HTTP_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];
/// ALPN of the gRPC port: gRPC is HTTP/2 only.
const GRPC_ALPN: [&[u8]; 1] = [b"h2"];

/// Why TLS could not be set up. Each names the file at fault and never its contents.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS certificate {}: {reason}", path.display())]
    Certificate { path: PathBuf, reason: String },
    #[error("TLS private key {}: {reason}", path.display())]
    Key { path: PathBuf, reason: String },
    #[error(
        "TLS private key {} does not match the certificate {} (the first certificate of the \
         chain must be the one the key belongs to)",
        key.display(),
        cert.display()
    )]
    Mismatch { cert: PathBuf, key: PathBuf },
    /// The crypto provider refused the protocol versions: a build problem, not a file problem.
    #[error("TLS setup: {0}")]
    Setup(rustls::Error),
}

/// TLS for the gRPC and HTTP ports: one certificate and key, one rustls configuration per port
/// (they differ only in ALPN). Cheap to clone.
#[derive(Clone)]
pub struct ServerTls {
    cert_path: PathBuf,
    http: TlsAcceptor,
    grpc: TlsAcceptor,
}

/// Shows the certificate's path only: the configurations hold the private key.
impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert", &self.cert_path)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads a PEM certificate chain (the server's certificate first, then any intermediates)
    /// and its PEM private key (PKCS#8 `PRIVATE KEY`, PKCS#1 `RSA PRIVATE KEY` or SEC1
    /// `EC PRIVATE KEY`; not encrypted), and checks that the key belongs to the certificate.
    ///
    /// # Errors
    /// When a file cannot be read, holds no certificate or no key, is not valid PEM, the key is
    /// of a kind the provider cannot sign with, or the key does not match the certificate.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<ServerTls, TlsError> {
        let cert_error = |reason: String| TlsError::Certificate {
            path: cert_path.to_path_buf(),
            reason,
        };
        let key_error = |reason: String| TlsError::Key {
            path: key_path.to_path_buf(),
            reason,
        };
        let cert_pem = std::fs::read(cert_path).map_err(|e| cert_error(e.to_string()))?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| cert_error(pem_reason(&e, "CERTIFICATE")))?;
        if chain.is_empty() {
            return Err(cert_error("no PEM CERTIFICATE section found".into()));
        }
        let key = {
            let key_pem = std::fs::read(key_path).map_err(|e| key_error(e.to_string()))?;
            PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
                key_error(pem_reason(
                    &e,
                    "PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY (unencrypted)",
                ))
            })?
        };

        let provider = Arc::new(aws_lc_rs::default_provider());
        // rustls's own messages here name the key's kind or the problem, not its bytes.
        let signing_key = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| key_error(format!("not a usable private key: {e}")))?;
        let certified = CertifiedKey::new(chain, signing_key);
        match certified.keys_match() {
            // A key that cannot tell its public half is used as it is, as rustls itself does.
            Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
            Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
                return Err(TlsError::Mismatch {
                    cert: cert_path.to_path_buf(),
                    key: key_path.to_path_buf(),
                })
            }
            Err(e) => return Err(cert_error(format!("not a valid certificate: {e}"))),
        }
        let certified = Arc::new(certified);
        let acceptor = |alpn: &[&[u8]]| -> Result<TlsAcceptor, TlsError> {
            let mut config = ServerConfig::builder_with_provider(Arc::clone(&provider))
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .map_err(TlsError::Setup)?
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(SingleCertAndKey::from(Arc::clone(&certified))));
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(TlsAcceptor::from(Arc::new(config)))
        };
        Ok(ServerTls {
            cert_path: cert_path.to_path_buf(),
            http: acceptor(&HTTP_ALPN)?,
            grpc: acceptor(&GRPC_ALPN)?,
        })
    }

    /// The certificate file this was loaded from (for the start-up log line).
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// The HTTP port's acceptor (ALPN `h2`, `http/1.1`).
    pub fn http_acceptor(&self) -> TlsAcceptor {
        self.http.clone()
    }

    /// The gRPC port's acceptor (ALPN `h2`).
    pub fn grpc_acceptor(&self) -> TlsAcceptor {
        self.grpc.clone()
    }
}

/// What is wrong with a PEM file, in words that quote none of it (pki-types' own messages quote
/// the offending line).
fn pem_reason(e: &pem::Error, wanted: &str) -> String {
    match e {
        pem::Error::NoItemsFound => format!("no PEM {wanted} section found"),
        pem::Error::MissingSectionEnd { .. } => "not valid PEM: a section has no END line".into(),
        pem::Error::IllegalSectionStart { .. } => "not valid PEM: a malformed BEGIN line".into(),
        pem::Error::Base64Decode(_) => "not valid PEM: a section is not valid base64".into(),
        pem::Error::Io(e) => e.to_string(),
        _ => "not valid PEM".into(),
    }
}

/// Runs the server side of the handshake on `stream`, bounded by `timeout`. `None` when the
/// client fails it (plain HTTP on the TLS port, an untrusted certificate, no shared ALPN) or
/// does not finish in time: the connection is closed and logged at debug, since it says
/// something about that client, not about the server, which goes on serving.
pub(crate) async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    timeout: Duration,
) -> Option<TlsStream<TcpStream>> {
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed; connection closed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, ?timeout, "TLS handshake timed out; connection closed");
            None
        }
    }
}

/// The gRPC port's connections with TLS done, for tonic's `serve_with_incoming_shutdown`.
///
/// A task accepts; each connection's handshake runs in a task of its own; connections are
/// handed over as their handshakes finish. When tonic drops the stream (at shutdown, once it
/// stops accepting) the task ends and the listener closes, as with a plain `TcpListenerStream`.
pub(crate) fn incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    timeout: Duration,
) -> ReceiverStream<Result<TlsStream<TcpStream>, Infallible>> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                (stream, peer) = accept(&listener, "gRPC") => {
                    let tx = tx.clone();
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        if let Some(tls) = handshake(&acceptor, stream, peer, timeout).await {
                            // Fails only when tonic has stopped accepting: the connection closes.
                            let _ = tx.send(Ok(tls)).await;
                        }
                    });
                }
                () = tx.closed() => break,
            }
        }
    });
    ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!(
                "labeld-tls-{name}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
        fn write(&self, name: &str, contents: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, contents).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A self-signed certificate for localhost and its PKCS#8 key, as PEM.
    fn self_signed() -> (String, String) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        (certified.cert.pem(), certified.signing_key.serialize_pem())
    }

    /// The base64 body of a PEM document, as it would appear if leaked into a message.
    fn body_line(pem: &str) -> String {
        pem.lines().nth(1).unwrap().to_string()
    }

    #[test]
    fn a_matching_certificate_and_key_load() {
        let dir = TempDir::new("ok");
        let (cert, key) = self_signed();
        let tls = ServerTls::load(&dir.write("c.pem", &cert), &dir.write("k.pem", &key)).unwrap();
        let debug = format!("{tls:?}");
        assert!(debug.contains("c.pem"), "{debug}");
        assert!(!debug.contains(&body_line(&key)), "{debug}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let dir = TempDir::new("missing");
        let (cert, _) = self_signed();
        let cert = dir.write("c.pem", &cert);
        let missing = dir.0.join("nowhere.pem");
        let err = ServerTls::load(&cert, &missing).unwrap_err();
        assert!(matches!(err, TlsError::Key { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("TLS private key") && text.contains("nowhere.pem"),
            "{text}"
        );
        let err = ServerTls::load(&missing, &cert).unwrap_err();
        assert!(matches!(err, TlsError::Certificate { .. }), "{err:?}");
        assert!(err.to_string().contains("nowhere.pem"), "{err}");
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let dir = TempDir::new("mismatch");
        let (cert, _) = self_signed();
        let (_, other_key) = self_signed();
        let err = ServerTls::load(&dir.write("c.pem", &cert), &dir.write("k.pem", &other_key))
            .unwrap_err();
        assert!(matches!(err, TlsError::Mismatch { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("does not match") && text.contains("c.pem") && text.contains("k.pem"),
            "{text}"
        );
        assert!(!text.contains(&body_line(&other_key)), "{text}");
    }

    #[test]
    fn a_certificate_without_a_key_is_refused() {
        let dir = TempDir::new("nokey");
        let (cert, key) = self_signed();
        let cert_path = dir.write("c.pem", &cert);
        // The certificate given as the key too: a file with no key in it.
        let err = ServerTls::load(&cert_path, &cert_path).unwrap_err();
        assert!(matches!(err, TlsError::Key { .. }), "{err:?}");
        assert!(err.to_string().contains("no PEM PRIVATE KEY"), "{err}");
        // And the other way round: the key given as the certificate.
        let key_path = dir.write("k.pem", &key);
        let err = ServerTls::load(&key_path, &key_path).unwrap_err();
        assert!(matches!(err, TlsError::Certificate { .. }), "{err:?}");
        assert!(err.to_string().contains("no PEM CERTIFICATE"), "{err}");
        assert!(!err.to_string().contains(&body_line(&key)), "{err}");
    }

    #[test]
    fn broken_pem_is_refused_without_quoting_it() {
        let dir = TempDir::new("broken");
        let (cert, key) = self_signed();
        let cert_path = dir.write("c.pem", &cert);
        // A key cut short: no END line.
        let cut = &key[..key.len() / 2];
        let err = ServerTls::load(&cert_path, &dir.write("k.pem", cut)).unwrap_err();
        assert!(matches!(err, TlsError::Key { .. }), "{err:?}");
        assert!(err.to_string().contains("not valid PEM"), "{err}");
        assert!(!err.to_string().contains(&body_line(&key)), "{err}");
        // A well-formed PEM key section whose contents are no key at all.
        let junk = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        let err = ServerTls::load(&cert_path, &dir.write("j.pem", junk)).unwrap_err();
        assert!(matches!(err, TlsError::Key { .. }), "{err:?}");
        assert!(
            err.to_string().contains("not a usable private key"),
            "{err}"
        );
        // An empty certificate file.
        let err = ServerTls::load(&dir.write("e.pem", ""), &dir.write("k2.pem", &key)).unwrap_err();
        assert!(matches!(err, TlsError::Certificate { .. }), "{err:?}");
    }
}
