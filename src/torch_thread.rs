//! One long-lived thread for all libtorch work of a process that serves frames from other
//! threads (the GStreamer elements, whose streaming threads come and go).
//!
//! Why: the CPU libtorch runs its intra-op parallelism on GNU OpenMP. Every OS thread that starts
//! OpenMP work gets its own team of worker threads, and once the process holds more
//! OpenMP-managed threads than CPUs, libgomp makes every team spin only briefly before sleeping
//! between parallel regions. libtorch starts many small parallel regions per frame, so the
//! detector then runs at about half speed (measured on 2 cores: 130 ms on a second thread
//! against 76 ms when a single thread does all the work). Running load and inference on one
//! thread keeps a single team, whatever thread a frame arrives on.
//!
//! Jobs run in submission order; a job that panics is reported as an error and the thread
//! lives on.

use crate::{Error, Result};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Mutex, OnceLock};
use std::thread::ThreadId;

type Job = Box<dyn FnOnce() + Send>;

/// Handle to the process-wide libtorch thread.
pub struct TorchThread {
    jobs: Mutex<Sender<Job>>,
    id: ThreadId,
}

static THREAD: OnceLock<TorchThread> = OnceLock::new();

/// The process-wide libtorch thread, started on first use.
pub fn torch_thread() -> &'static TorchThread {
    THREAD.get_or_init(|| {
        let (tx, rx) = channel::<Job>();
        let handle = std::thread::Builder::new()
            .name("clsflow-torch".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .expect("cannot start the clsflow-torch thread");
        TorchThread {
            jobs: Mutex::new(tx),
            id: handle.thread().id(),
        }
    })
}

/// Runs `f` on the process-wide libtorch thread and waits for its result (see the module docs).
pub fn run<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Result<R> {
    torch_thread().run(f)
}

/// Queues `f` on the process-wide libtorch thread without waiting for it (a panic in it is
/// caught there); the job reports its results through channels of its own.
pub fn spawn(f: impl FnOnce() + Send + 'static) -> Result<()> {
    torch_thread().spawn(f)
}

/// [`run`] for a job that can fail: its error and a panic come back as one [`Result`].
pub fn try_run<R: Send + 'static>(f: impl FnOnce() -> Result<R> + Send + 'static) -> Result<R> {
    run(f)?
}

impl TorchThread {
    /// Runs `f` on this thread and waits for its result. Called from the thread itself, `f` runs
    /// at once (no deadlock). A panic in `f` becomes [`Error::Panicked`].
    pub fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> Result<R> {
        if std::thread::current().id() == self.id {
            return catch_unwind(AssertUnwindSafe(f)).map_err(panic_error);
        }
        let (tx, rx) = channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(catch_unwind(AssertUnwindSafe(f)));
        });
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(job)
            .map_err(|_| Error::Panicked("the clsflow-torch thread has stopped".into()))?;
        rx.recv()
            .map_err(|_| Error::Panicked("the clsflow-torch thread dropped a job".into()))?
            .map_err(panic_error)
    }

    /// Queues `f` on this thread without waiting for it (see [`spawn`]).
    pub fn spawn(&self, f: impl FnOnce() + Send + 'static) -> Result<()> {
        let job: Job = Box::new(move || {
            let _ = catch_unwind(AssertUnwindSafe(f));
        });
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(job)
            .map_err(|_| Error::Panicked("the clsflow-torch thread has stopped".into()))
    }

    /// Whether the caller is the libtorch thread.
    pub fn is_current(&self) -> bool {
        std::thread::current().id() == self.id
    }
}

fn panic_error(payload: Box<dyn std::any::Any + Send>) -> Error {
    let msg = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    Error::Panicked(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_run_on_one_thread_in_order_and_survive_panics() {
        let a = run(|| std::thread::current().id()).unwrap();
        let b = std::thread::spawn(|| run(|| std::thread::current().id()).unwrap())
            .join()
            .unwrap();
        assert_eq!(a, b, "every caller reaches the same thread");
        assert_ne!(a, std::thread::current().id());
        let err = run(|| -> u32 { panic!("boom in a job") }).unwrap_err();
        assert!(err.to_string().contains("boom in a job"), "{err}");
        assert_eq!(
            run(|| 2 + 2).unwrap(),
            4,
            "the thread lives on after a panic"
        );
        // nested calls from the thread itself run inline instead of deadlocking
        assert_eq!(run(|| run(|| 7).unwrap()).unwrap(), 7);
        let t = tch::Tensor::from_slice(&[1.0f32, 2.0]);
        let s = run(move || t.sum(tch::Kind::Float).double_value(&[])).unwrap();
        assert_eq!(s, 3.0);
        // try_run: the job's own error and a panic both come back as the one Result
        let e = try_run(|| -> Result<u8> { Err(Error::Input("bad frame".into())) }).unwrap_err();
        assert!(e.to_string().contains("bad frame"), "{e}");
        assert!(try_run(|| -> Result<u8> { panic!("boom") }).is_err());
        assert_eq!(try_run(|| Ok(5u8)).unwrap(), 5);
        // spawned jobs run there too, in order, and a panic in one does not stop the thread
        let (tx, rx) = std::sync::mpsc::channel();
        spawn(|| panic!("boom in a spawned job")).unwrap();
        spawn(move || tx.send(std::thread::current().id()).unwrap()).unwrap();
        assert_eq!(rx.recv().unwrap(), a);
    }
}
