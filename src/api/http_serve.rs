//! Serves an axum router on a listener, with the limits `axum::serve` does not set: a client
//! must send its request headers within a deadline (else the connection is closed), and a
//! request body must arrive within another (see [`super::http`]'s body reads). Without them a
//! client that trickles one byte a minute holds a connection and its memory forever (slowloris).
//!
//! With TLS, each connection's handshake runs in that connection's own task, bounded by the
//! header timeout (see [`crate::tls`]): the accept loop only accepts, so a client that never
//! sends its ClientHello holds up nobody.
//!
//! Shutdown is graceful: on `stop` the listener closes, idle connections close, and requests in
//! progress finish before [`serve`] returns (a handshake in progress finishes or times out first).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::tls;

/// Serves `router` on `listener` until `stop` turns true, then drains. With `tls`, only TLS is
/// spoken (HTTP/1.1 or HTTP/2, as the client negotiated by ALPN).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_timeout: Duration,
    tls: Option<TlsAcceptor>,
    stop: watch::Receiver<bool>,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let mut stopped = std::pin::pin!(stopped(stop));
    loop {
        tokio::select! {
            (stream, peer) = accept(&listener, "HTTP") => {
                let service = TowerToHyperService::new(router.clone());
                // Taken here, not in the task: shutdown waits for this connection from now on,
                // its handshake included.
                let watcher = graceful.watcher();
                let builder = Arc::clone(&builder);
                let tls = tls.clone();
                tokio::spawn(async move {
                    let served = match tls {
                        None => {
                            let io = TokioIo::new(stream);
                            watcher.watch(builder.serve_connection(io, service).into_owned()).await
                        }
                        Some(acceptor) => {
                            let Some(stream) =
                                tls::handshake(&acceptor, stream, peer, header_timeout).await
                            else {
                                return;
                            };
                            let io = TokioIo::new(stream);
                            watcher.watch(builder.serve_connection(io, service).into_owned()).await
                        }
                    };
                    if let Err(e) = served {
                        tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
                    }
                });
            }
            () = &mut stopped => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The next connection on `listener` (`door` names it in the log), with Nagle's algorithm off
/// (see [`no_delay`]). A failed accept (out of descriptors, a connection reset before it was
/// accepted) is logged and retried after a short pause instead of spinning; the port keeps
/// serving. Used by the gRPC port's TLS acceptor too.
pub(crate) async fn accept(listener: &TcpListener, door: &str) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => {
                no_delay(&accepted.0);
                return accepted;
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting a {door} connection failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Turns Nagle's algorithm off on an accepted connection. A reply goes out as several small
/// writes (HTTP/2: headers, data, trailers); with Nagle on, a write waits for the ACK of the one
/// before, which a client delays by up to 40 ms. Measured on an H100 machine before this
/// (labeld serve --device cuda, 32 callers): 44 ms at the client for 7 ms in the server.
pub(crate) fn no_delay(stream: &TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY not set");
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}
