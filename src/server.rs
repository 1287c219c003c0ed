//! Wiring for `labeld serve`: model workers + batcher + detector, the gRPC server (with health
//! and reflection) and the HTTP doors on one shared detector, and the shutdown sequence. No
//! request logic lives here.
//!
//! Start-up: the listener is bound and health answers at once (NOT_SERVING) while each model
//! worker warms up at the largest batch; then health turns SERVING and requests are admitted.
//! Shutdown: health NOT_SERVING, no new connections or calls (HTTP/2 GOAWAY), every call in
//! progress finishes (up to the drain timeout), the batcher answers everything still queued, and
//! only then does [`Server::wait`] return.
//!
//! TLS ([`Server::start_with_tls`]) covers the gRPC port and the HTTP port; the separate metrics
//! port stays plain HTTP, for in-cluster scrapers that reach it on a network of their own.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tonic::codec::CompressionEncoding;
use tonic_health::ServingStatus;

use crate::api::api_keys::ApiKeys;
use crate::api::auth::Credentials;
use crate::api::grpc::{mark_received, ImageLabelsService};
use crate::api::http::{metrics_router, router, HttpState};
use crate::api::http_serve;
use crate::batcher::{BatchConfig, BatchStats, Batcher};
use crate::detect::{Detector, DetectorParts, Readiness};
use crate::image::ImageLimits;
use crate::model::Classifier;
use crate::observe::{self, Scrape};
use crate::pb;
use crate::pb::image_labels_server::ImageLabelsServer;
use crate::source::Buckets;
use crate::taxonomy::{Language, Taxonomy};
use crate::tls::{self, ServerTls};

/// Largest gRPC message accepted: a 20 MiB image plus the rest of the request.
pub const MAX_MESSAGE_BYTES: usize = 21 * 1024 * 1024;

/// Name of the service in `grpc.health.v1` (the empty name means "the whole server").
pub const SERVICE_NAME: &str = "labeld.v1.ImageLabels";

/// Reports `status` for the whole server (the empty service name) and for [`SERVICE_NAME`]:
/// the two always change together.
async fn report(health: &tonic_health::server::HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    health.set_service_status(SERVICE_NAME, status).await;
}

/// Everything `serve` needs besides the models, the taxonomy and the listener.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub batch: BatchConfig,
    /// Threads of a decode pool of its own; `None` (the default) decodes on the compute pool.
    pub decode_workers: Option<usize>,
    pub limits: ImageLimits,
    pub buckets: Buckets,
    /// Shown by `GetModelInfo` ("cpu", "cuda:0").
    pub device_name: String,
    /// Access keys of the OSS door (empty: every OSS request is refused, as OSS refuses anonymous
    /// access to `image/labels`).
    pub credentials: Credentials,
    /// The region V4 signatures are scoped to.
    pub region: String,
    /// API keys of the gRPC door and `POST /v1/labels` (empty: open).
    pub api_keys: ApiKeys,
    /// An HTTP client must send its request headers within this, or its connection is closed.
    pub header_timeout: Duration,
    /// A `POST /v1/labels` body must arrive within this (504 RequestTimeout otherwise).
    pub body_timeout: Duration,
    /// Language of label names on the OSS door.
    pub language: Language,
    /// Longest wait for calls in progress after shutdown starts; then remaining connections
    /// (e.g. a health `Watch` that never ends) are closed. Keep it below Kubernetes'
    /// `terminationGracePeriodSeconds`.
    pub drain_timeout: Duration,
}

/// The sockets a server answers on.
pub struct Listeners {
    /// gRPC: `labeld.v1.ImageLabels`, health, reflection.
    pub grpc: TcpListener,
    /// The HTTP doors, health and `/metrics`.
    pub http: Option<TcpListener>,
    /// A port of its own for `/metrics`, for setups that keep scraping off the serving port.
    pub metrics: Option<TcpListener>,
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    stats: Arc<BatchStats>,
    readiness: Arc<Readiness>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Server {
    /// Starts serving on `listeners`, without TLS. Returns once they are serving (not yet warm).
    ///
    /// # Errors
    /// When the decode pool cannot start.
    pub async fn start(
        listeners: Listeners,
        models: Vec<Box<dyn Classifier>>,
        taxonomy: Taxonomy,
        settings: ServeSettings,
    ) -> anyhow::Result<Server> {
        Server::start_with_tls(listeners, models, taxonomy, settings, None).await
    }

    /// Starts serving on `listeners`; with `tls`, the gRPC and HTTP listeners speak TLS only
    /// (the metrics listener stays plain), each handshake bounded by the header timeout.
    /// TLS is an argument of its own rather than a field of [`ServeSettings`] so that every
    /// caller without TLS stays as it is.
    ///
    /// # Errors
    /// When the decode pool cannot start.
    pub async fn start_with_tls(
        listeners: Listeners,
        models: Vec<Box<dyn Classifier>>,
        taxonomy: Taxonomy,
        settings: ServeSettings,
        tls: Option<ServerTls>,
    ) -> anyhow::Result<Server> {
        let Listeners {
            grpc: listener,
            http: http_listener,
            metrics: metrics_listener,
        } = listeners;
        let addr = listener.local_addr()?;
        let http_addr = http_listener.as_ref().map(|l| l.local_addr()).transpose()?;
        let metrics_addr = metrics_listener
            .as_ref()
            .map(|l| l.local_addr())
            .transpose()?;
        let first = models.first().context("no model to serve")?;
        let kind = first.kind();
        let head = Arc::new(first.head().clone());
        taxonomy.check_class_count(head.classes)?;
        let workers = models.len();
        let readiness = Arc::new(Readiness::default());
        let (warm_tx, warm_rx) = std::sync::mpsc::channel();
        let (batcher, threads) = Batcher::start(models, settings.batch, warm_tx);
        let stats = Arc::clone(batcher.stats());
        let info = pb::ModelInfo {
            model: kind.name().to_string(),
            input_size: kind.input_size(),
            device: settings.device_name.clone(),
            class_count: taxonomy.class_count() as u32,
            label_count: taxonomy.labels().len() as u32,
            category_count: taxonomy.count_at_level(1) as u32,
            group_count: taxonomy.group_count() as u32,
            taxonomy_version: taxonomy.version().to_string(),
            max_batch: settings.batch.max_batch as u32,
            max_delay_us: settings.batch.max_delay.as_micros() as u64,
            max_queue: settings.batch.max_queue as u32,
            model_workers: workers as u32,
            decode_workers: settings
                .decode_workers
                .unwrap_or_else(rayon::current_num_threads) as u32,
            version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let scrape_handle = observe::install();
        observe::model_info(kind.name(), &settings.device_name, taxonomy.version());
        let detector = Detector::new(DetectorParts {
            batcher,
            taxonomy: Arc::new(taxonomy),
            head,
            model: kind,
            limits: settings.limits,
            buckets: settings.buckets.clone(),
            decode_workers: settings.decode_workers,
            max_in_flight: settings.batch.max_queue,
            readiness: Arc::clone(&readiness),
        })?;

        let scrape = {
            let detector = detector.clone();
            let stats = Arc::clone(&stats);
            let readiness = Arc::clone(&readiness);
            let limit = settings.batch.max_queue;
            Scrape::new(
                scrape_handle,
                Arc::new(move || observe::State {
                    queue_depth: stats.queue_depth.load(Ordering::Relaxed),
                    in_flight: detector.in_flight(),
                    in_flight_limit: limit,
                    ready: readiness.is_serving(),
                }),
            )
        };

        let (health, health_service) = tonic_health::server::health_reporter();
        report(&health, ServingStatus::NotServing).await;
        // Reflection in both versions: v1, and v1alpha for older tools (grpcio-reflection's
        // Python client, older grpcurl).
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;
        let api_keys = Arc::new(settings.api_keys.clone());
        let http_state = HttpState {
            detector: detector.clone(),
            buckets: settings.buckets.clone(),
            credentials: Arc::new(settings.credentials.clone()),
            region: settings.region.clone(),
            language: settings.language,
            readiness: Arc::clone(&readiness),
            max_body_bytes: settings.limits.max_bytes as usize,
            scrape: scrape.clone(),
            api_keys: Arc::clone(&api_keys),
            body_timeout: settings.body_timeout,
        };
        let labels = ImageLabelsServer::new(ImageLabelsService::new(detector, info, api_keys))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip);
        let labels = tonic::service::interceptor::InterceptedService::new(labels, mark_received);

        // Warm-up in the background: health flips to SERVING when every worker is warm.
        let (stop, mut stop_rx) = watch::channel(false);
        {
            let readiness = Arc::clone(&readiness);
            let health = health.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let warm = tokio::task::spawn_blocking(move || {
                    (0..workers)
                        .map(|_| warm_rx.recv().unwrap_or(Err("a model worker died".into())))
                        .collect::<Result<Vec<()>, String>>()
                })
                .await;
                match warm {
                    Ok(Ok(_)) if !*stop.borrow() => {
                        readiness.set_serving();
                        report(&health, ServingStatus::Serving).await;
                        tracing::info!("model warm; serving");
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "warm-up failed; shutting down");
                        let _ = stop.send(true);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "warm-up task failed; shutting down");
                        let _ = stop.send(true);
                    }
                }
            });
        }

        let drain = {
            let readiness = Arc::clone(&readiness);
            let health = health.clone();
            async move {
                let _ = stop_rx.wait_for(|stop| *stop).await;
                readiness.set_draining();
                report(&health, ServingStatus::NotServing).await;
                tracing::info!("draining: finishing admitted requests");
            }
        };
        let drain_timeout = settings.drain_timeout;
        let mut deadline_rx = stop.subscribe();
        let http_stop = stop.subscribe();
        let header_timeout = settings.header_timeout;
        let metrics_stop = stop.subscribe();
        let http_tls = tls.as_ref().map(ServerTls::http_acceptor);
        let grpc_tls = tls.as_ref().map(ServerTls::grpc_acceptor);
        let task = tokio::spawn(async move {
            let http = async move {
                match http_listener {
                    Some(listener) => {
                        let router = router(http_state);
                        http_serve::serve(listener, router, header_timeout, http_tls, http_stop)
                            .await;
                        anyhow::Ok(())
                    }
                    None => {
                        drop(http_state);
                        Ok(())
                    }
                }
            };
            // The metrics port stops with the rest: a scrape during the drain still answers.
            // Plain HTTP even with TLS: it is for in-cluster scrapers on a network of their own.
            let metrics = async move {
                match metrics_listener {
                    Some(listener) => {
                        let router = metrics_router(scrape);
                        http_serve::serve(listener, router, header_timeout, None, metrics_stop)
                            .await;
                        anyhow::Ok(())
                    }
                    None => Ok(()),
                }
            };
            let routes = tonic::transport::Server::builder()
                .http2_keepalive_interval(Some(Duration::from_secs(30)))
                .add_service(health_service)
                .add_service(reflection_v1)
                .add_service(reflection_v1alpha)
                .add_service(labels);
            let grpc = async move {
                match grpc_tls {
                    None => {
                        let incoming = TcpListenerStream::new(listener)
                            .map(|conn| conn.inspect(http_serve::no_delay));
                        routes.serve_with_incoming_shutdown(incoming, drain).await
                    }
                    Some(acceptor) => {
                        let incoming = tls::incoming(listener, acceptor, header_timeout);
                        routes.serve_with_incoming_shutdown(incoming, drain).await
                    }
                }
            };
            let serve = async move {
                let (grpc, http, metrics) = tokio::join!(grpc, http, metrics);
                grpc.context("gRPC server failed")?;
                http?;
                metrics
            };
            let overdue = async move {
                let _ = deadline_rx.wait_for(|stop| *stop).await;
                tokio::time::sleep(drain_timeout).await;
            };
            tokio::select! {
                served = serve => served?,
                () = overdue => {
                    // Connection tasks that are still running keep the service (and the batcher)
                    // alive, so there is nothing left to wait for: give up on them.
                    tracing::warn!(?drain_timeout, "drain timeout: abandoning calls still open");
                    return Ok(());
                }
            }
            // Every call has been answered; the service (and its batcher handle) is dropped, so
            // the batcher answers what is left in its queue and its threads exit.
            threads.join().await;
            Ok(())
        });
        Ok(Server {
            addr,
            http_addr,
            metrics_addr,
            stats,
            readiness,
            stop,
            task,
        })
    }

    /// The address the gRPC server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address the HTTP doors listen on, when they do.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The address of the metrics-only port, when there is one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Batcher counters.
    pub fn stats(&self) -> &Arc<BatchStats> {
        &self.stats
    }

    /// True once warm and until shutdown starts.
    pub fn is_serving(&self) -> bool {
        self.readiness.is_serving()
    }

    /// Resolves once shutdown has started, by [`Server::shutdown`] or by a failed warm-up.
    pub async fn stopped(&self) {
        let mut rx = self.stop.subscribe();
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// Starts the shutdown sequence (idempotent).
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits until the server has drained and stopped.
    ///
    /// # Errors
    /// When the server failed.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("server task panicked")?
    }
}
