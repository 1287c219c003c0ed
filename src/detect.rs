//! The use case every door calls: label one image, whichever protocol asked.
//!
//! ```text
//! detect(): ready? → admit (bounded) → fetch bytes [async] → decode + preprocess [decode threads]
//!           → batcher (queue → model thread) → labels + CentricScore [decode threads] → Detection
//! ```
//!
//! Transport-neutral: no tonic, no HTTP status codes here. The async parts only wait; every
//! CPU-heavy step runs on the decode threads (see [`DecodeThreads`]) or on a model thread.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{oneshot, Semaphore};

use crate::batcher::{BatchError, Batcher};
use crate::error::ErrorCode;
use crate::image::{decode_and_prepare, DecodeError, ImageLimits, ImageProperties, Prepared};
use crate::labels::{labels_for, Label, LabelOptions};
use crate::model::{ClassifierHead, ModelKind};
use crate::observe::{self, Rejection};
use crate::source::{Buckets, SourceError};
use crate::taxonomy::Taxonomy;
use crate::worker_pool::WorkerPool;

/// Where the image comes from.
#[derive(Debug, Clone)]
pub enum ImageSource {
    /// The encoded bytes, sent with the request (a view of the buffer they were received in).
    Bytes(Bytes),
    /// `oss://bucket/key` in a configured bucket.
    Uri(String),
    /// An object named by bucket and (decoded) key, as the OSS door receives it.
    Object { bucket: String, key: String },
}

/// One labelling request, already parsed and validated by its front door.
#[derive(Debug, Clone)]
pub struct DetectRequest {
    pub source: ImageSource,
    pub options: LabelOptions,
    pub request_id: String,
    /// When the caller stops waiting; the request is dropped unanswered by the model after it.
    pub deadline: Option<Instant>,
}

/// Where one request's time went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    /// Fetching, validating, decoding and preprocessing.
    pub decode: Duration,
    /// Waiting for a model worker.
    pub queue: Duration,
    /// The forward pass of the batch.
    pub inference: Duration,
    /// Receipt to answer.
    pub total: Duration,
    /// Images in the forward pass.
    pub batch_size: usize,
}

/// A labelled image.
#[derive(Debug, Clone)]
pub struct Detection {
    pub labels: Vec<Label>,
    /// Only when the request asked for them.
    pub properties: Option<ImageProperties>,
    pub request_id: String,
    pub model: ModelKind,
    pub timings: Timings,
}

/// Why a request got no labels.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("invalid {name}: {reason}")]
    InvalidArgument { name: &'static str, reason: String },
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("the server is overloaded ({0} requests in progress); retry later")]
    Overloaded(usize),
    #[error(
        "the server is overloaded: this request would wait about {} ms for the model, more than the {} ms it may (3/4 of its deadline, or of --max-wait-ms without one); retry later",
        .ahead.as_millis(), .budget.as_millis()
    )]
    TooBusy { ahead: Duration, budget: Duration },
    #[error("the deadline passed before the image was labelled")]
    DeadlineExceeded,
    #[error("the server is {0}")]
    NotReady(&'static str),
    #[error("internal error: {0}")]
    Internal(String),
}

impl DetectError {
    /// The code this error is reported as.
    pub fn code(&self) -> ErrorCode {
        match self {
            DetectError::InvalidArgument { .. } => ErrorCode::InvalidArgument,
            DetectError::Decode(e) => e.code(),
            DetectError::Source(e) => e.code(),
            DetectError::Overloaded(_) | DetectError::TooBusy { .. } => ErrorCode::Overloaded,
            DetectError::DeadlineExceeded => ErrorCode::DeadlineExceeded,
            DetectError::NotReady(_) => ErrorCode::NotReady,
            DetectError::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl From<BatchError> for DetectError {
    fn from(e: BatchError) -> Self {
        match e {
            BatchError::QueueFull(n) => DetectError::Overloaded(n),
            BatchError::DeadlineExceeded => DetectError::DeadlineExceeded,
            BatchError::Stopped => DetectError::NotReady("shutting down"),
            BatchError::Model(reason) => DetectError::Internal(reason.to_string()),
        }
    }
}

/// Share of a request's time budget the estimated wait for the model may take (see
/// [`Detector::detect`]); the rest is room for decoding and for the pace to change.
pub const PACE_HEADROOM: f64 = 0.75;

/// Waits for `work` until `deadline` at most: a bucket that stops answering fails the request
/// when its caller stops waiting, not only when the store's own timeout runs out.
async fn within<T>(
    deadline: Option<Instant>,
    work: impl std::future::Future<Output = T>,
) -> Result<T, DetectError> {
    match deadline {
        None => Ok(work.await),
        Some(deadline) => tokio::time::timeout_at(deadline.into(), work)
            .await
            .map_err(|_| {
                observe::rejected(Rejection::DeadlineExpired);
                DetectError::DeadlineExceeded
            }),
    }
}

/// Serving state, shared by the doors and health reporting.
#[derive(Debug, Default)]
pub struct Readiness(AtomicU8);

impl Readiness {
    const STARTING: u8 = 0;
    const SERVING: u8 = 1;
    const DRAINING: u8 = 2;

    /// Marks the model warm: requests are served from now on.
    pub fn set_serving(&self) {
        let _ = self.0.compare_exchange(
            Self::STARTING,
            Self::SERVING,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }

    /// Marks the server as draining (reported by health; calls in progress still finish).
    pub fn set_draining(&self) {
        self.0.store(Self::DRAINING, Ordering::SeqCst);
    }

    /// True while requests are admitted.
    pub fn is_serving(&self) -> bool {
        self.0.load(Ordering::SeqCst) == Self::SERVING
    }

    /// Why a request would be refused now. Only while warming up: during a drain, new calls are
    /// refused by the transport (HTTP/2 GOAWAY, no new connections), and every call that reached
    /// a handler is served to the end.
    fn refusal(&self) -> Option<&'static str> {
        (self.0.load(Ordering::SeqCst) == Self::STARTING).then_some("warming up")
    }
}

/// What a [`Detector`] needs.
pub struct DetectorParts {
    pub batcher: Batcher,
    pub taxonomy: Arc<Taxonomy>,
    pub head: Arc<ClassifierHead>,
    pub model: ModelKind,
    pub limits: ImageLimits,
    pub buckets: Buckets,
    /// Threads of a decode pool of its own; `None` decodes on the compute pool (see
    /// [`DecodeThreads`]).
    pub decode_workers: Option<usize>,
    /// Most requests admitted at once (decoding, queued or in the model).
    pub max_in_flight: usize,
    pub readiness: Arc<Readiness>,
}

/// The labelling use case; cheap to clone.
#[derive(Clone)]
pub struct Detector {
    inner: Arc<Inner>,
}

struct Inner {
    parts: DetectorParts,
    decoders: DecodeThreads,
    admission: Arc<Semaphore>,
}

/// Where decoding, preprocessing and labelling run.
///
/// Why the compute pool by default: on a small machine the decode work and the model's share the
/// same cores. With threads of their own, each decode job preempted a compute thread in the
/// middle of a pass (four busy threads on two cores), whose lane then stalled while its L2 filled
/// with a photo. On the compute pool (rayon's global pool) a decode job is only taken by a
/// compute thread that has no model work left to take or steal: between passes, or while it waits
/// on the other thread. End to end at 32 callers on 2 cores (`bench/batching.sh`, alternating
/// pairs): Lite0 +0-7 %, Lite2 +4-8 %, Lite2 with 12-MP photos +8-14 % (see BENCHMARKS.md).
/// A decode pool of its own is still there for a server that wants one (`--decode-workers N`).
enum DecodeThreads {
    /// rayon's global pool, where the CPU model computes.
    Compute,
    /// A pool of its own.
    Own(WorkerPool),
}

impl DecodeThreads {
    /// Runs `work` there and waits for it without blocking. A panic in `work` is caught there and
    /// fails only this call (uncaught, a panic in a spawned rayon job would abort the process).
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, DetectError> {
        let (tx, rx) = oneshot::channel();
        let job = move || {
            let _ = tx.send(std::panic::catch_unwind(AssertUnwindSafe(work)));
        };
        match self {
            // Spawned from outside the pool (an async task), the job goes to the pool's global
            // queue, first in first out, which its threads read only when they have nothing else.
            DecodeThreads::Compute => rayon::spawn(job),
            DecodeThreads::Own(pool) => pool.spawn(job),
        }
        match rx.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err(DetectError::Internal("a decode worker panicked".into())),
            Err(_) => Err(DetectError::Internal("a decode worker stopped".into())),
        }
    }
}

impl Detector {
    /// Builds the detector and its decode pool, if it has one of its own.
    ///
    /// # Errors
    /// When the decode threads cannot be started.
    pub fn new(parts: DetectorParts) -> std::io::Result<Detector> {
        let decoders = match parts.decode_workers {
            None => DecodeThreads::Compute,
            Some(threads) => {
                DecodeThreads::Own(WorkerPool::new(threads, |i| format!("labeld-decode-{i}"))?)
            }
        };
        let admission = Arc::new(Semaphore::new(parts.max_in_flight));
        Ok(Detector {
            inner: Arc::new(Inner {
                parts,
                decoders,
                admission,
            }),
        })
    }

    /// Requests admitted now (decoding, queued or in the model).
    pub fn in_flight(&self) -> usize {
        self.inner
            .parts
            .max_in_flight
            .saturating_sub(self.inner.admission.available_permits())
    }

    /// The parts it was built from (model, taxonomy, batching settings).
    pub fn parts(&self) -> &DetectorParts {
        &self.inner.parts
    }

    /// Labels one image.
    ///
    /// # Errors
    /// [`DetectError`]; the caller maps its [`DetectError::code`] to its protocol.
    pub async fn detect(&self, request: DetectRequest) -> Result<Detection, DetectError> {
        let received = Instant::now();
        let parts = &self.inner.parts;
        if let Some(why) = parts.readiness.refusal() {
            observe::rejected(Rejection::NotReady);
            return Err(DetectError::NotReady(why));
        }
        let _admitted = Arc::clone(&self.inner.admission)
            .try_acquire_owned()
            .map_err(|_| {
                observe::rejected(Rejection::Overloaded);
                DetectError::Overloaded(parts.max_in_flight)
            })?;
        let deadline = request.deadline;
        let expired = || deadline.is_some_and(|d| d <= Instant::now());
        // Refuse now, rather than admit a request the model's recent pace says would wait past
        // its deadline (or `max_wait` without one): it would only hold a slot and fail later.
        // The estimate must fit in PACE_HEADROOM of the budget: the pace is a recent mean, and
        // on a shared machine it can slow down after a request is admitted.
        let ahead = self.in_flight().saturating_sub(1);
        if let Some(wait) = parts.batcher.estimated_wait(ahead) {
            let budget = deadline.map_or(parts.batcher.config().max_wait, |d| {
                d.saturating_duration_since(received)
            });
            let budget = budget.mul_f64(PACE_HEADROOM);
            if wait > budget {
                observe::rejected(Rejection::TooBusy);
                return Err(DetectError::TooBusy {
                    ahead: wait,
                    budget,
                });
            }
        }

        let max_bytes = parts.limits.max_bytes;
        let bytes = match request.source {
            ImageSource::Bytes(bytes) => bytes,
            ImageSource::Uri(uri) => {
                let (bucket, key) = Buckets::parse_uri(&uri)?;
                Bytes::from(within(deadline, parts.buckets.fetch(bucket, key, max_bytes)).await??)
            }
            ImageSource::Object { bucket, key } => {
                Bytes::from(within(deadline, parts.buckets.fetch(&bucket, &key, max_bytes)).await??)
            }
        };
        let inner = Arc::clone(&self.inner);
        let options = request.options;
        let Prepared { input, properties } = self
            .on_pool(move || inner.prepare(&bytes, &options))
            .await??;
        let geometry = input.geometry;
        let decoded = Instant::now();
        if expired() {
            observe::rejected(Rejection::DeadlineExpired);
            return Err(DetectError::DeadlineExceeded);
        }

        let inferred = parts
            .batcher
            .submit(input, deadline)?
            .await
            .map_err(|_| DetectError::Internal("a model worker stopped".into()))??;

        let inner = Arc::clone(&self.inner);
        let prediction = inferred.prediction;
        let labels = self
            .on_pool(move || {
                let parts = &inner.parts;
                labels_for(
                    &parts.taxonomy,
                    &parts.head,
                    &prediction,
                    &geometry,
                    &options,
                )
            })
            .await?;
        Ok(Detection {
            labels,
            properties,
            request_id: request.request_id,
            model: parts.model,
            timings: Timings {
                decode: decoded.duration_since(received),
                queue: inferred.queued,
                inference: inferred.inference,
                total: received.elapsed(),
                batch_size: inferred.batch_size,
            },
        })
    }

    /// Runs `work` on the decode threads; a panic there fails only this request.
    async fn on_pool<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, DetectError> {
        self.inner.decoders.run(work).await
    }
}

impl Inner {
    fn prepare(&self, bytes: &[u8], options: &LabelOptions) -> Result<Prepared, DetectError> {
        let parts = &self.parts;
        let size = parts.model.input_size();
        Ok(decode_and_prepare(
            bytes,
            &parts.limits,
            size,
            options.colour_names(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_on_the_decode_threads_fails_only_its_own_job() {
        let own = WorkerPool::new(1, |i| format!("test-decode-{i}")).expect("a thread");
        for threads in [DecodeThreads::Compute, DecodeThreads::Own(own)] {
            let failed = threads.run(|| -> u32 { panic!("a bad image") }).await;
            assert!(
                matches!(failed, Err(DetectError::Internal(_))),
                "{failed:?}"
            );
            assert_eq!(threads.run(|| 7).await.expect("the next job runs"), 7);
        }
    }
}
