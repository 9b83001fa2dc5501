//! The audit writer thread: group commit for concurrent requests.

use super::{AuditLog, Encrypter};
use prometheus_client::metrics::{counter::Counter, gauge::Gauge, histogram::Histogram};
use std::sync::{Arc, RwLock, mpsc};
use teller_contract::Error;
use teller_contract::ErrorCode;
use teller_contract::{AuditEvent, SealedRecord};
use teller_engine::AuditSealer;

/// The sealer the writer uses for its next group; a reload swaps it.
pub type SealerSlot = Arc<RwLock<Arc<dyn AuditSealer>>>;

/// What the writer reports: handles to metrics the server registers.
#[derive(Clone)]
pub struct AuditMetrics {
    /// Records made durable.
    pub records: Counter,
    /// How long each group's write and `fsync` took.
    pub fsync_seconds: Histogram,
    /// Records waiting for the writer.
    pub queue_depth: Gauge,
}

impl Default for AuditMetrics {
    /// Handles registered nowhere: for a writer whose figures nobody reads
    /// (benchmarks, tests).
    fn default() -> Self {
        AuditMetrics {
            records: Counter::default(),
            fsync_seconds: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(1e-4, 2.0, 16),
            ),
            queue_depth: Gauge::default(),
        }
    }
}

/// How records are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Commit {
    /// One `fsync` covers every record queued while the last one ran.
    #[default]
    Group,
    /// One `fsync` per record: the baseline group commit is measured
    /// against.
    PerRecord,
}

/// Appends to an [`AuditLog`] from a thread of its own, so that concurrent
/// requests share `fsync`s: while one group is being made durable the next
/// one gathers (group commit). Each caller still gets its answer only once
/// its own record is on disk.
pub struct AuditWriter {
    jobs: Option<mpsc::SyncSender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Encrypts in the caller's thread, so the writer thread only seals.
    encrypter: Option<Encrypter>,
    metrics: AuditMetrics,
}

/// Told the outcome of one record once its group is durable (or failed).
pub type Reply = Box<dyn FnOnce(Result<SealedRecord, Error>) + Send>;

struct Job {
    event: AuditEvent,
    reply: Reply,
}

/// Records one `fsync` covers at most.
const MAX_GROUP: usize = 1024;

impl AuditWriter {
    pub fn start(
        mut log: AuditLog,
        sealer: SealerSlot,
        encrypter: Option<Encrypter>,
        commit: Commit,
        metrics: AuditMetrics,
    ) -> Result<Self, Error> {
        let max_group = match commit {
            Commit::Group => MAX_GROUP,
            Commit::PerRecord => 1,
        };
        let (jobs, queue) = mpsc::sync_channel::<Job>(MAX_GROUP * 4);
        let counted = metrics.clone();
        let thread = std::thread::Builder::new()
            .name("teller-audit".into())
            .spawn(move || {
                while let Ok(first) = queue.recv() {
                    let mut group = vec![first];
                    while group.len() < max_group {
                        match queue.try_recv() {
                            Ok(job) => group.push(job),
                            Err(_) => break,
                        }
                    }
                    counted.queue_depth.dec_by(group.len() as i64);
                    let events: Vec<&AuditEvent> = group.iter().map(|j| &j.event).collect();
                    let current = sealer.read().map(|s| s.clone());
                    let results = match current {
                        Ok(current) => log.append_group(current.as_ref(), &events),
                        Err(_) => events
                            .iter()
                            .map(|_| {
                                Err(Error::internal(
                                    ErrorCode::AuditLogUnusable,
                                    "the audit sealer was poisoned",
                                ))
                            })
                            .collect(),
                    };
                    counted
                        .fsync_seconds
                        .observe(log.last_commit().as_secs_f64());
                    let durable = results.iter().filter(|r| r.is_ok()).count();
                    counted.records.inc_by(durable as u64);
                    for (job, result) in group.into_iter().zip(results) {
                        // A reply that panics must not take the writer
                        // (and every later record) with it.
                        let reply = job.reply;
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                            reply(result)
                        }));
                    }
                }
            })
            .map_err(|e| {
                Error::internal(
                    ErrorCode::AuditLogUnusable,
                    format!("cannot start the audit writer: {e}"),
                )
            })?;
        Ok(AuditWriter {
            jobs: Some(jobs),
            thread: Some(thread),
            encrypter,
            metrics,
        })
    }

    /// Records `event`; returns once its record is durable.
    pub fn append(&self, event: AuditEvent) -> Result<SealedRecord, Error> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.submit(
            event,
            Box::new(move |result| {
                let _ = reply.send(result);
            }),
        )?;
        answer.recv().map_err(|_| stopped())?
    }

    /// Queues `event` for the next group (waiting only while the queue of
    /// 4,096 records is full) and returns; `reply` is told when its record
    /// is durable. A server awaits that without holding a thread through
    /// the `fsync`.
    pub fn submit(&self, mut event: AuditEvent, reply: Reply) -> Result<(), Error> {
        if let Some(encrypter) = &self.encrypter {
            event.encrypted = None;
            event.encrypted = Some(encrypter.encrypt(&event)?);
        }
        self.metrics.queue_depth.inc();
        self.jobs
            .as_ref()
            .ok_or_else(stopped)?
            .send(Job { event, reply })
            .map_err(|_| {
                self.metrics.queue_depth.dec();
                stopped()
            })
    }
}

fn stopped() -> Error {
    Error::internal(ErrorCode::AuditLogUnusable, "the audit writer has stopped")
}

impl Drop for AuditWriter {
    /// Writes whatever is queued, then stops the thread.
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
