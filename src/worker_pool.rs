//! A fixed set of named threads that run blocking jobs in the order they arrive: the decode
//! pool a server gets with `--decode-workers N` (decoding and preprocessing before the model,
//! labels and CentricScore after it). Without it, those jobs run on the compute pool (see
//! `detect::DecodeThreads`).
//!
//! Why not a rayon pool of its own: an idle rayon worker spins and yields for a while before it
//! sleeps, in case more work comes. Under load that was ~5 % of the decode threads' CPU time
//! (`perf` of `labeld serve` at concurrency 32), and on a small machine every cycle the decode
//! threads spend comes out of the model's share. Here an idle worker waits on a condition
//! variable at once. Jobs are independent (no fork-join), so work stealing bought nothing.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, PoisonError};

type Job = Box<dyn FnOnce() + Send>;

/// The pool. Dropping it lets its threads finish the jobs already queued and exit; it does
/// not wait for them (it may be dropped on an async thread).
pub struct WorkerPool {
    queue: Arc<Queue>,
}

struct Queue {
    state: Mutex<State>,
    ready: Condvar,
}

struct State {
    jobs: VecDeque<Job>,
    closed: bool,
}

impl WorkerPool {
    /// Starts `threads` threads (at least one), thread `i` named `name(i)`.
    ///
    /// # Errors
    /// When a thread cannot be started.
    pub fn new(threads: usize, name: impl Fn(usize) -> String) -> std::io::Result<WorkerPool> {
        let queue = Arc::new(Queue {
            state: Mutex::new(State {
                jobs: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
        });
        let pool = WorkerPool { queue };
        for i in 0..threads.max(1) {
            let queue = Arc::clone(&pool.queue);
            std::thread::Builder::new()
                .name(name(i))
                .spawn(move || queue.work())?;
        }
        Ok(pool)
    }

    /// Queues `job` for the next free thread. A job that panics is caught there (the thread
    /// goes on with the next job): callers that need to know wrap their own `catch_unwind`.
    pub fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        let mut state = self.queue.lock();
        state.jobs.push_back(Box::new(job));
        drop(state);
        self.queue.ready.notify_one();
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.queue.lock().closed = true;
        self.queue.ready.notify_all();
    }
}

impl Queue {
    /// Jobs run outside the lock, so no job can poison it; a poisoned lock would only mean a
    /// panic in this file's few lines, and the queue is still consistent then.
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A worker thread's life: the next job, or sleep until there is one; exit once the pool
    /// is dropped and the queue is empty.
    fn work(&self) {
        loop {
            let job = {
                let mut state = self.lock();
                loop {
                    if let Some(job) = state.jobs.pop_front() {
                        break job;
                    }
                    if state.closed {
                        return;
                    }
                    state = self
                        .ready
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            };
            let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn runs_every_job_on_its_named_threads() {
        let pool = WorkerPool::new(3, |i| format!("test-worker-{i}")).expect("threads start");
        let (tx, rx) = mpsc::channel();
        for n in 0..100 {
            let tx = tx.clone();
            pool.spawn(move || {
                let name = std::thread::current().name().map(String::from);
                let _ = tx.send((n, name));
            });
        }
        let mut seen: Vec<(i32, Option<String>)> = (0..100)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).expect("job ran"))
            .collect();
        seen.sort();
        assert_eq!(
            seen.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            (0..100).collect::<Vec<_>>()
        );
        assert!(seen.iter().all(|(_, name)| name
            .as_deref()
            .is_some_and(|n| n.starts_with("test-worker-"))));
    }

    #[test]
    fn a_panicking_job_does_not_stop_its_thread() {
        let pool = WorkerPool::new(1, |_| "test-worker".into()).expect("thread starts");
        pool.spawn(|| panic!("this job fails"));
        let (tx, rx) = mpsc::channel();
        pool.spawn(move || {
            let _ = tx.send(42);
        });
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(42));
    }

    #[test]
    fn dropping_the_pool_finishes_queued_jobs_and_stops_the_threads() {
        let pool = WorkerPool::new(1, |_| "test-worker".into()).expect("thread starts");
        let (tx, rx) = mpsc::channel();
        let (gate_tx, gate_rx) = mpsc::channel::<()>();
        // The first job holds the only thread until the pool is dropped.
        pool.spawn(move || {
            let _ = gate_rx.recv_timeout(Duration::from_secs(10));
        });
        let queued = tx.clone();
        pool.spawn(move || {
            let _ = queued.send("queued job ran");
        });
        let weak = Arc::downgrade(&pool.queue);
        drop(pool);
        let _ = gate_tx.send(());
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(10)),
            Ok("queued job ran")
        );
        // The thread exits and drops its handle on the queue.
        for _ in 0..1000 {
            if weak.strong_count() == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the worker thread did not exit");
    }
}
