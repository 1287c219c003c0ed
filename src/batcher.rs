//! The dynamic batcher: a bounded queue of preprocessed images in front of the model workers.
//!
//! ```text
//! submit() ──try_send──> [queue, max_queue] ──> model worker threads
//!   full → QueueFull        the free worker takes up to max_batch jobs,
//!                           waiting at most max_delay for the batch to fill;
//!                           drops jobs whose deadline passed or whose caller has gone
//! ```
//!
//! Each model worker is a dedicated OS thread that owns its copy of the model (candle's forward
//! pass is blocking and must never run on the async runtime). A batch is only formed when a worker
//! is free, so while the model is busy requests wait in the queue and the next batch takes all of
//! them at once: batches grow with load without any waiting at low load beyond `max_delay`.
//! The worker forms its next batch itself, the moment its last one is answered: when the batch
//! was formed by a task on the async runtime, the model waited for that task to be scheduled,
//! and on a busy machine (the decode workers holding both cores of a 2-core box) that wait was
//! up to ~5 ms between batches of ~40 ms (`perf sched timehist` of `labeld serve` under load).
//! A panic or error in a forward pass is caught; the batch is retried image by image so that only
//! the image that fails alone gets an internal error, and the worker lives on.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::image::ModelInput;
use crate::model::{Classifier, Prediction};
use crate::observe::{self, Rejection};

/// Batching settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Most images in one forward pass.
    pub max_batch: usize,
    /// Longest a batch waits to fill once a worker is free and a first image is there.
    pub max_delay: Duration,
    /// Most images waiting in the queue.
    pub max_queue: usize,
    /// Longest a request without a deadline of its own should wait for the model: one that the
    /// model's recent pace says would wait longer is refused at once (see
    /// [`Batcher::estimated_wait`]). Requests with a deadline use it instead.
    pub max_wait: Duration,
}

/// Why a submitted image got no prediction.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BatchError {
    #[error("the queue is full ({0} images waiting)")]
    QueueFull(usize),
    #[error("the deadline passed while the image was queued")]
    DeadlineExceeded,
    #[error("the model workers have stopped")]
    Stopped,
    #[error("the model failed: {0}")]
    Model(Arc<str>),
}

/// A successful forward pass for one image, with where its time went.
#[derive(Debug)]
pub struct Inferred {
    pub prediction: Prediction,
    /// From submission to the start of the forward pass.
    pub queued: Duration,
    /// The forward pass of the whole batch.
    pub inference: Duration,
    /// Images in that batch.
    pub batch_size: usize,
}

/// Counters, for metrics and for tests that count instead of timing.
#[derive(Debug, Default)]
pub struct BatchStats {
    /// Forward passes run (warm-up excluded).
    pub model_calls: AtomicU64,
    /// Images that went through a forward pass.
    pub images_inferred: AtomicU64,
    /// Images dropped because their deadline passed while queued.
    pub expired: AtomicU64,
    /// Images dropped because their caller had gone.
    pub cancelled: AtomicU64,
    /// Images refused because the queue was full.
    pub rejected: AtomicU64,
    /// Images waiting in the queue now.
    pub queue_depth: AtomicUsize,
    /// Recent model time per image, in nanoseconds (an exponentially weighted mean over real
    /// batches, warm-up excluded); 0 until the first batch.
    pub image_nanos: AtomicU64,
}

impl BatchStats {
    /// Folds one forward pass of `images` images that took `took` into [`BatchStats::image_nanos`]
    /// (weight 1/5: a change of pace shows within a few batches, one odd batch does not swing it).
    fn record_pace(&self, images: usize, took: Duration) {
        let per_image = (took.as_nanos() / images.max(1) as u128).min(u128::from(u64::MAX)) as u64;
        let old = self.image_nanos.load(Ordering::Relaxed);
        let new = if old == 0 {
            per_image
        } else {
            (old / 5) * 4 + per_image / 5
        };
        self.image_nanos.store(new.max(1), Ordering::Relaxed);
    }
}

struct Job {
    input: ModelInput,
    deadline: Option<Instant>,
    submitted: Instant,
    reply: oneshot::Sender<Result<Inferred, BatchError>>,
}

/// Handle to the batcher; cheap to clone.
#[derive(Clone)]
pub struct Batcher {
    queue: SyncSender<Job>,
    config: BatchConfig,
    stats: Arc<BatchStats>,
    /// Model workers (each computes one batch at a time).
    workers: usize,
}

/// Owns the batcher's threads; [`BatcherThreads::join`] waits for them after the last
/// [`Batcher`] handle is dropped.
pub struct BatcherThreads {
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl BatcherThreads {
    /// Waits until every queued image has been answered and the workers have exited.
    pub async fn join(self) {
        let workers = self.workers;
        let _ = tokio::task::spawn_blocking(move || {
            for w in workers {
                let _ = w.join();
            }
        })
        .await;
    }
}

impl Batcher {
    /// Starts one worker thread per model. Each worker first runs a warm-up forward pass at
    /// `max_batch`; `warmed` is sent `()` by each worker when its warm-up is done.
    pub fn start(
        models: Vec<Box<dyn Classifier>>,
        config: BatchConfig,
        warmed: mpsc::Sender<Result<(), String>>,
    ) -> (Batcher, BatcherThreads) {
        assert!(!models.is_empty() && config.max_batch > 0 && config.max_queue > 0);
        let stats = Arc::new(BatchStats::default());
        let (queue_tx, queue_rx) = mpsc::sync_channel(config.max_queue);
        // Workers take turns at the queue: the one holding the lock is forming its batch.
        let queue_rx = Arc::new(Mutex::new(queue_rx));
        let worker_count = models.len();
        let workers = models
            .into_iter()
            .enumerate()
            .map(|(i, model)| {
                let queue = Arc::clone(&queue_rx);
                let stats = Arc::clone(&stats);
                let warmed = warmed.clone();
                std::thread::Builder::new()
                    .name(format!("labeld-model-{i}"))
                    .spawn(move || worker(model, &queue, &stats, &config, warmed))
                    .expect("cannot spawn a model thread")
            })
            .collect();
        (
            Batcher {
                queue: queue_tx,
                config,
                stats,
                workers: worker_count,
            },
            BatcherThreads { workers },
        )
    }

    /// Queues one image. Fails at once with [`BatchError::QueueFull`] when the queue is full.
    ///
    /// # Errors
    /// [`BatchError::QueueFull`] or [`BatchError::Stopped`].
    pub fn submit(
        &self,
        input: ModelInput,
        deadline: Option<Instant>,
    ) -> Result<oneshot::Receiver<Result<Inferred, BatchError>>, BatchError> {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            input,
            deadline,
            submitted: Instant::now(),
            reply,
        };
        // Counted before it is sent: a waiting worker may take it (and count it out) at once,
        // and the gauge must never dip below zero, where it would wrap.
        self.stats.queue_depth.fetch_add(1, Ordering::Relaxed);
        match self.queue.try_send(job) {
            Ok(()) => Ok(rx),
            Err(refused) => {
                self.stats.queue_depth.fetch_sub(1, Ordering::Relaxed);
                match refused {
                    TrySendError::Full(_) => {
                        self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                        observe::rejected(Rejection::Overloaded);
                        Err(BatchError::QueueFull(self.config.max_queue))
                    }
                    TrySendError::Disconnected(_) => Err(BatchError::Stopped),
                }
            }
        }
    }

    /// How long a request that has `ahead` admitted requests before it would take to get
    /// through the model, at the model's recent pace: the full batches needed for it and those
    /// ahead, `ceil((ahead + 1) / max_batch) × max_batch × time per image / workers`.
    /// `None` before the first real batch (no pace known yet: admit).
    pub fn estimated_wait(&self, ahead: usize) -> Option<Duration> {
        let per_image = self.stats.image_nanos.load(Ordering::Relaxed);
        (per_image > 0).then(|| {
            let batch = self.config.max_batch.max(1) as u64;
            let images = (ahead as u64 + 1).div_ceil(batch) * batch;
            let nanos = per_image.saturating_mul(images) / self.workers.max(1) as u64;
            Duration::from_nanos(nanos)
        })
    }

    /// The settings.
    pub fn config(&self) -> &BatchConfig {
        &self.config
    }

    /// Live counters.
    pub fn stats(&self) -> &Arc<BatchStats> {
        &self.stats
    }
}

fn worker(
    model: Box<dyn Classifier>,
    queue: &Mutex<Receiver<Job>>,
    stats: &BatchStats,
    config: &BatchConfig,
    warmed: mpsc::Sender<Result<(), String>>,
) {
    // Warm-up at the largest batch: allocations, thread pools and page faults happen now, not on
    // the first real request.
    let size = model.kind().input_size() as usize;
    let grey = vec![127u8; 3 * size * size];
    let warm: Vec<&[u8]> = (0..config.max_batch).map(|_| grey.as_slice()).collect();
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| model.classify(&warm)));
    let ok = matches!(outcome, Ok(Ok(_)));
    let _ = warmed.send(match outcome {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the warm-up forward pass panicked".to_string()),
    });
    drop(warmed);
    if !ok {
        return;
    }
    while let Some(jobs) = next_batch(queue, config, stats) {
        run_batch(model.as_ref(), jobs, stats);
    }
}

/// The next batch for a worker that is free: the first job to come, then whatever else is
/// queued up to `max_batch`, waiting at most `max_delay` for more. Jobs whose caller has gone or
/// whose deadline has passed are answered (or dropped) here, before the model sees them. `None`
/// once every [`Batcher`] handle is gone and the queue is empty: shut down.
fn next_batch(
    queue: &Mutex<Receiver<Job>>,
    config: &BatchConfig,
    stats: &BatchStats,
) -> Option<Vec<Job>> {
    loop {
        let jobs = {
            // Held while the batch forms, so that one batch takes everything queued; another
            // worker may be computing meanwhile.
            let queue = queue
                .lock()
                .expect("a model worker panicked while holding the queue lock. This is a bug.");
            let first = queue.recv().ok()?;
            let mut jobs = vec![first];
            let flush_at = Instant::now() + config.max_delay;
            while jobs.len() < config.max_batch {
                match queue.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(TryRecvError::Empty) if !config.max_delay.is_zero() => {
                        match queue.recv_timeout(flush_at.saturating_duration_since(Instant::now()))
                        {
                            Ok(job) => jobs.push(job),
                            Err(_) => break,
                        }
                    }
                    Err(_) => break,
                }
            }
            jobs
        };
        stats.queue_depth.fetch_sub(jobs.len(), Ordering::Relaxed);
        let now = Instant::now();
        let mut live = Vec::with_capacity(jobs.len());
        for job in jobs {
            if job.reply.is_closed() {
                stats.cancelled.fetch_add(1, Ordering::Relaxed);
                observe::rejected(Rejection::ClientGone);
            } else if job.deadline.is_some_and(|d| d <= now) {
                stats.expired.fetch_add(1, Ordering::Relaxed);
                observe::rejected(Rejection::DeadlineExpired);
                let _ = job.reply.send(Err(BatchError::DeadlineExceeded));
            } else {
                live.push(job);
            }
        }
        if !live.is_empty() {
            return Some(live);
        }
    }
}

fn run_batch(model: &dyn Classifier, jobs: Vec<Job>, stats: &BatchStats) {
    let started = Instant::now();
    let outcome = forward(model, &jobs, stats);
    let inference = started.elapsed();
    match outcome {
        Ok(predictions) => {
            let batch_size = jobs.len();
            stats.record_pace(batch_size, inference);
            for (job, prediction) in jobs.into_iter().zip(predictions) {
                let _ = job.reply.send(Ok(Inferred {
                    prediction,
                    queued: started.duration_since(job.submitted),
                    inference,
                    batch_size,
                }));
            }
        }
        // One bad image must not fail its batch-mates: retry each alone, so only the image
        // that fails by itself gets the error.
        Err(_) if jobs.len() > 1 => {
            for job in jobs {
                run_batch(model, vec![job], stats);
            }
        }
        Err(reason) => {
            for job in jobs {
                let _ = job.reply.send(Err(BatchError::Model(Arc::clone(&reason))));
            }
        }
    }
}

/// One forward pass, with panics caught and turned into an error.
fn forward(
    model: &dyn Classifier,
    jobs: &[Job],
    stats: &BatchStats,
) -> Result<Vec<Prediction>, Arc<str>> {
    let inputs: Vec<&[u8]> = jobs.iter().map(|j| j.input.pixels.as_slice()).collect();
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| model.classify(&inputs)));
    stats.model_calls.fetch_add(1, Ordering::Relaxed);
    observe::batch_ran(jobs.len());
    stats
        .images_inferred
        .fetch_add(jobs.len() as u64, Ordering::Relaxed);
    match outcome {
        Ok(Ok(predictions)) if predictions.len() == jobs.len() => Ok(predictions),
        Ok(Ok(_)) => Err("the model returned the wrong number of predictions".into()),
        Ok(Err(e)) => {
            tracing::error!(error = %e, images = jobs.len(), "forward pass failed");
            Err(e.to_string().into())
        }
        Err(_) => {
            tracing::error!(images = jobs.len(), "forward pass panicked");
            Err("the forward pass panicked".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::CropGeometry;
    use crate::model::{ClassifierHead, FeatureMap, ModelError, ModelKind};
    use candle_core::Device;
    use std::sync::Condvar;

    /// Stands in for the model in *when* it answers, which is what the batcher decides: each
    /// forward pass records its batch size and waits until the test lets batches through. (The
    /// real model behind the batcher is tested in `tests/it`.)
    struct Recorder {
        head: ClassifierHead,
        device: Device,
        /// Batch sizes of the passes after warm-up, and how many batches may still finish.
        state: Mutex<(Vec<usize>, usize)>,
        changed: Condvar,
        warmed_up: std::sync::atomic::AtomicBool,
    }

    impl Recorder {
        fn new() -> Arc<Recorder> {
            Arc::new(Recorder {
                head: ClassifierHead {
                    classes: 1,
                    channels: 1,
                    weight: vec![1.0],
                },
                device: Device::Cpu,
                state: Mutex::new((Vec::new(), 0)),
                changed: Condvar::new(),
                warmed_up: std::sync::atomic::AtomicBool::new(false),
            })
        }

        /// Lets `n` more batches finish.
        fn release(&self, n: usize) {
            self.state.lock().unwrap().1 += n;
            self.changed.notify_all();
        }

        /// Waits until `n` batches have entered the model; their sizes in order. Fails rather
        /// than hangs when they never do (a minute is no test machine's slowness).
        fn wait_entered(&self, n: usize) -> Vec<usize> {
            let (state, timeout) = self
                .changed
                .wait_timeout_while(self.state.lock().unwrap(), Duration::from_secs(60), |s| {
                    s.0.len() < n
                })
                .unwrap();
            assert!(
                !timeout.timed_out(),
                "{n} batches never entered the model: {:?}",
                state.0
            );
            state.0.clone()
        }
    }

    /// A `Box<dyn Classifier>` that shares its [`Recorder`] with the test.
    struct Shared(Arc<Recorder>);

    impl Classifier for Shared {
        fn kind(&self) -> ModelKind {
            ModelKind::EfficientNetLite0
        }
        fn device(&self) -> &Device {
            &self.0.device
        }
        fn head(&self) -> &ClassifierHead {
            &self.0.head
        }
        fn classify(&self, batch: &[&[u8]]) -> Result<Vec<Prediction>, ModelError> {
            let recorder = &self.0;
            if recorder.warmed_up.load(Ordering::SeqCst) {
                let mut state = recorder.state.lock().unwrap();
                state.0.push(batch.len());
                recorder.changed.notify_all();
                while state.1 == 0 {
                    state = recorder.changed.wait(state).unwrap();
                }
                state.1 -= 1;
            }
            Ok(batch
                .iter()
                .map(|_| Prediction {
                    logits: vec![0.0],
                    probabilities: vec![1.0],
                    features: FeatureMap {
                        channels: 1,
                        height: 1,
                        width: 1,
                        data: vec![0.0],
                    },
                })
                .collect())
        }
    }

    fn input() -> ModelInput {
        ModelInput {
            pixels: Vec::new(),
            geometry: CropGeometry {
                source_width: 1,
                source_height: 1,
                original_width: 1,
                original_height: 1,
                resized_width: 1,
                resized_height: 1,
                crop_left: 0,
                crop_top: 0,
                size: 1,
            },
        }
    }

    fn config(max_batch: usize, max_delay: Duration) -> BatchConfig {
        BatchConfig {
            max_batch,
            max_delay,
            max_queue: 64,
            max_wait: Duration::from_secs(60),
        }
    }

    /// Starts the batcher on `workers` copies sharing `recorder`, past their warm-up.
    fn start(
        recorder: &Arc<Recorder>,
        workers: usize,
        config: BatchConfig,
    ) -> (Batcher, BatcherThreads) {
        let (warmed, done) = mpsc::channel();
        let models = (0..workers)
            .map(|_| Box::new(Shared(Arc::clone(recorder))) as Box<dyn Classifier>)
            .collect();
        let started = Batcher::start(models, config, warmed);
        for _ in 0..workers {
            done.recv().unwrap().unwrap();
        }
        // Every worker has warmed up: from now on passes are recorded and held.
        recorder.warmed_up.store(true, Ordering::SeqCst);
        started
    }

    /// Submits `n` images without a deadline; their replies in order.
    fn submit_many(
        batcher: &Batcher,
        n: usize,
    ) -> Vec<oneshot::Receiver<Result<Inferred, BatchError>>> {
        (0..n)
            .map(|_| batcher.submit(input(), None).unwrap())
            .collect()
    }

    fn stop(batcher: Batcher, threads: BatcherThreads) {
        drop(batcher);
        for worker in threads.workers {
            worker.join().unwrap();
        }
    }

    #[test]
    fn a_free_worker_takes_everything_queued_while_it_was_busy() {
        let recorder = Recorder::new();
        let (batcher, threads) = start(&recorder, 1, config(8, Duration::ZERO));
        let first = batcher.submit(input(), None).unwrap();
        assert_eq!(recorder.wait_entered(1), [1]);
        let waiting = submit_many(&batcher, 5);
        recorder.release(2);
        assert_eq!(recorder.wait_entered(2), [1, 5]);
        assert_eq!(first.blocking_recv().unwrap().unwrap().batch_size, 1);
        for reply in waiting {
            assert_eq!(reply.blocking_recv().unwrap().unwrap().batch_size, 5);
        }
        assert_eq!(batcher.stats().queue_depth.load(Ordering::Relaxed), 0);
        stop(batcher, threads);
    }

    #[test]
    fn a_batch_waits_up_to_max_delay_to_fill() {
        let recorder = Recorder::new();
        // A delay no test machine reaches: the batch goes when it is full, not on the timer.
        let (batcher, threads) = start(&recorder, 1, config(3, Duration::from_secs(600)));
        recorder.release(1);
        let replies: Vec<_> = (0..3)
            .map(|_| {
                std::thread::sleep(Duration::from_millis(20));
                batcher.submit(input(), None).unwrap()
            })
            .collect();
        for reply in replies {
            assert_eq!(reply.blocking_recv().unwrap().unwrap().batch_size, 3);
        }
        assert_eq!(recorder.wait_entered(1), [3]);
        stop(batcher, threads);
    }

    #[test]
    fn workers_compute_side_by_side() {
        let recorder = Recorder::new();
        let (batcher, threads) = start(&recorder, 2, config(1, Duration::ZERO));
        let replies = submit_many(&batcher, 2);
        // Both are in the model at once: the queue is not held while a worker computes.
        assert_eq!(recorder.wait_entered(2), [1, 1]);
        recorder.release(2);
        for reply in replies {
            assert!(reply.blocking_recv().unwrap().is_ok());
        }
        stop(batcher, threads);
    }

    #[test]
    fn expired_and_abandoned_jobs_never_reach_the_model() {
        let recorder = Recorder::new();
        let (batcher, threads) = start(&recorder, 1, config(8, Duration::ZERO));
        let busy = batcher.submit(input(), None).unwrap();
        assert_eq!(recorder.wait_entered(1), [1]);
        let expired = batcher.submit(input(), Some(Instant::now())).unwrap();
        drop(batcher.submit(input(), None).unwrap());
        let live = batcher.submit(input(), None).unwrap();
        recorder.release(2);
        assert!(matches!(
            expired.blocking_recv().unwrap(),
            Err(BatchError::DeadlineExceeded)
        ));
        assert_eq!(live.blocking_recv().unwrap().unwrap().batch_size, 1);
        assert!(busy.blocking_recv().unwrap().is_ok());
        assert_eq!(recorder.wait_entered(2), [1, 1]);
        let stats = batcher.stats();
        assert_eq!(stats.expired.load(Ordering::Relaxed), 1);
        assert_eq!(stats.cancelled.load(Ordering::Relaxed), 1);
        stop(batcher, threads);
    }

    #[test]
    fn shutting_down_answers_everything_queued() {
        let recorder = Recorder::new();
        let (batcher, threads) = start(&recorder, 1, config(2, Duration::ZERO));
        let replies = submit_many(&batcher, 5);
        recorder.release(usize::MAX / 2);
        stop(batcher, threads);
        for mut reply in replies {
            assert!(reply.try_recv().unwrap().is_ok());
        }
    }

    #[test]
    fn a_full_queue_refuses_at_once() {
        let recorder = Recorder::new();
        let config = BatchConfig {
            max_queue: 2,
            ..config(1, Duration::ZERO)
        };
        let (batcher, threads) = start(&recorder, 1, config);
        let busy = batcher.submit(input(), None).unwrap();
        assert_eq!(recorder.wait_entered(1), [1]);
        let queued = submit_many(&batcher, 2);
        assert!(matches!(
            batcher.submit(input(), None),
            Err(BatchError::QueueFull(2))
        ));
        // The refused image is not counted as waiting.
        assert_eq!(batcher.stats().queue_depth.load(Ordering::Relaxed), 2);
        assert_eq!(batcher.stats().rejected.load(Ordering::Relaxed), 1);
        recorder.release(usize::MAX / 2);
        assert!(busy.blocking_recv().unwrap().is_ok());
        for reply in queued {
            assert!(reply.blocking_recv().unwrap().is_ok());
        }
        stop(batcher, threads);
    }
}
