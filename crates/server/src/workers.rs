//! The threads guest calls run on, never tokio's async workers: a guest may
//! run up to its deadline, and an async worker stuck in one cannot answer
//! `/healthz` or `/readyz`, so a kubelet would restart a healthy pod.
//!
//! A fixed set of threads takes jobs from one queue, as Kubewarden's
//! policy-server does with its worker pool. Admission (`api::Limits`)
//! bounds how many jobs can wait, so the queue needs no bound of its own.

use crossbeam_channel::{Receiver, Sender};
use teller_contract::Error;
use teller_contract::ErrorCode;

type Job = Box<dyn FnOnce() + Send>;

/// A bounded pool of threads for blocking work.
pub struct Workers {
    jobs: Option<Sender<Job>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// Starts `threads` threads (at least one), named `teller-worker-N`.
    pub fn start(threads: usize) -> Result<Workers, Error> {
        let (jobs, queue) = crossbeam_channel::unbounded::<Job>();
        let threads = (0..threads.max(1))
            .map(|n| {
                let queue: Receiver<Job> = queue.clone();
                std::thread::Builder::new()
                    .name(format!("teller-worker-{n}"))
                    .spawn(move || {
                        for job in queue {
                            job();
                        }
                    })
                    .map_err(|e| {
                        Error::internal(
                            ErrorCode::Runtime,
                            format!("cannot start a worker thread: {e}"),
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Workers {
            jobs: Some(jobs),
            threads,
        })
    }

    /// One thread per core: guest calls are CPU-bound.
    pub fn per_core() -> Result<Workers, Error> {
        Self::start(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// Runs `work` on a worker and waits for it without blocking the
    /// caller's async worker. A panic in `work` is an error for this call;
    /// the worker goes on.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Error> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
            let _ = reply.send(result);
        });
        let stopped = || Error::internal(ErrorCode::Internal, "the worker threads have stopped");
        self.jobs
            .as_ref()
            .ok_or_else(stopped)?
            .send(job)
            .map_err(|_| stopped())?;
        match answer.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err(Error::internal(
                ErrorCode::Internal,
                "a worker thread panicked",
            )),
            Err(_) => Err(stopped()),
        }
    }
}

impl Drop for Workers {
    /// Lets queued jobs finish, then joins the threads.
    fn drop(&mut self) {
        drop(self.jobs.take());
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn jobs_run_off_the_async_thread_and_a_panic_costs_one_call() {
        let workers = Workers::start(2).unwrap();
        let caller = std::thread::current().id();
        let ran_on = workers.run(|| std::thread::current().id()).await.unwrap();
        assert_ne!(ran_on, caller);
        #[allow(clippy::panic)]
        let e = workers.run(|| panic!("boom")).await.unwrap_err();
        assert!(e.message.contains("panicked"), "{e}");
        assert_eq!(workers.run(|| 7).await.unwrap(), 7);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn no_more_than_the_pool_runs_at_once() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let workers = Arc::new(Workers::start(2).unwrap());
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (now, most) = (now.clone(), most.clone());
            let workers = workers.clone();
            calls.spawn(async move {
                workers
                    .run(move || {
                        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(n, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        now.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await
                    .unwrap()
            });
        }
        while calls.join_next().await.is_some() {}
        assert_eq!(most.load(Ordering::SeqCst), 2);
    }
}
