//! The audit writer: group commit for concurrent requests, with sealing
//! and writing pipelined on two threads.

use super::{AuditLog, Encrypter, Group, Head};
use prometheus_client::metrics::{counter::Counter, gauge::Gauge, histogram::Histogram};
use std::sync::{Arc, Mutex, RwLock, mpsc};
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

/// Appends to an [`AuditLog`] from threads of its own, so that concurrent
/// requests share `fsync`s (group commit). One thread seals records into a
/// group while the other writes and syncs the group before it: the guest's
/// work and the disk's overlap. Each caller still gets its answer only once
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
        let failed = |e: std::io::Error| {
            Error::internal(
                ErrorCode::AuditLogUnusable,
                format!("cannot start the audit writer: {e}"),
            )
        };
        // Where the next group chains on: after a failed write, the head
        // on disk, which the sealing thread goes back to.
        let chain = log.head().clone();
        let rewind: Arc<Mutex<Option<Head>>> = Arc::default();
        // Capacity 0: the sealing thread hands a group over only when the
        // syncing thread takes it, so at most one group is being written
        // while the next one is sealed.
        let (sealed, to_sync) = mpsc::sync_channel::<Sealed>(0);
        let syncer = {
            let (rewind, counted) = (rewind.clone(), metrics.clone());
            std::thread::Builder::new()
                .name("teller-audit-sync".into())
                .spawn(move || {
                    for group in to_sync {
                        sync(&mut log, group, &rewind, &counted);
                    }
                })
                .map_err(failed)?
        };
        let counted = metrics.clone();
        let thread = std::thread::Builder::new()
            .name("teller-audit".into())
            .spawn(move || {
                let mut chain = chain;
                while let Ok(first) = queue.recv() {
                    let rewound = rewind.lock().unwrap_or_else(|p| p.into_inner()).take();
                    if let Some(head) = rewound {
                        chain = head;
                    }
                    let current = sealer.read().map(|s| s.clone());
                    let mut group = Group::on(chain.clone());
                    let mut jobs = Vec::new();
                    let mut results = Vec::new();
                    // Each record is sealed as it is taken, and the group
                    // takes on while more are queued: those that arrive
                    // while it is sealed share its fsync instead of waiting
                    // for one of their own.
                    let mut next = Some(first);
                    while let Some(job) = next {
                        results.push(match &current {
                            Ok(current) => group.seal(current.as_ref(), &job.event),
                            Err(_) => Err(Error::internal(
                                ErrorCode::AuditLogUnusable,
                                "the audit sealer was poisoned",
                            )),
                        });
                        jobs.push(job);
                        next = if jobs.len() < max_group {
                            queue.try_recv().ok()
                        } else {
                            None
                        };
                    }
                    counted.queue_depth.dec_by(jobs.len() as i64);
                    chain = group.last().clone();
                    let group = Sealed {
                        group,
                        jobs,
                        results,
                    };
                    if let Err(mpsc::SendError(lost)) = sealed.send(group) {
                        // The syncing thread is gone (it panicked): nothing
                        // more can be made durable.
                        reply_all(lost.jobs, lost.results.into_iter().map(|_| Err(stopped())));
                    }
                }
                drop(sealed);
                let _ = syncer.join();
            })
            .map_err(failed)?;
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

/// A group sealed and not yet written, with whom to tell.
struct Sealed {
    group: Group,
    jobs: Vec<Job>,
    results: Vec<Result<SealedRecord, Error>>,
}

/// Writes `sealed` with one `fsync` and answers its callers. A group sealed
/// on one whose write failed fails too; after a failed write the sealing
/// thread is told to chain on the head on disk again.
fn sync(log: &mut AuditLog, sealed: Sealed, rewind: &Mutex<Option<Head>>, counted: &AuditMetrics) {
    let Sealed {
        group,
        jobs,
        mut results,
    } = sealed;
    let writes = !group.is_empty();
    let committed = if group.base() == log.head().seq {
        let committed = log.commit_group(group);
        if committed.is_err() {
            *rewind.lock().unwrap_or_else(|p| p.into_inner()) = Some(log.head().clone());
        }
        committed
    } else {
        Err(Error::internal(
            ErrorCode::AuditWriteFailed,
            "cannot write audit log: the group this record was chained on could not be written",
        ))
    };
    if let Err(failed) = committed {
        for result in &mut results {
            if result.is_ok() {
                *result = Err(failed.clone());
            }
        }
    } else if writes {
        counted
            .fsync_seconds
            .observe(log.last_commit().as_secs_f64());
    }
    let durable = results.iter().filter(|r| r.is_ok()).count();
    counted.records.inc_by(durable as u64);
    reply_all(jobs, results);
}

fn reply_all(jobs: Vec<Job>, results: impl IntoIterator<Item = Result<SealedRecord, Error>>) {
    for (job, result) in jobs.into_iter().zip(results) {
        // A reply that panics must not take the writer (and every later
        // record) with it.
        let reply = job.reply;
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || reply(result)));
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
