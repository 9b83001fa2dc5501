//! The audit log: an append-only file of hash-chained records, one JSON line
//! each, sealed by the audit guest, and its verifier.
//!
//! A record is written and `fsync`ed before the request it records is
//! answered. On opening, a torn last line (a crash mid-write, whose request
//! was therefore never answered) is cut off and reported; the chain resumes
//! from the last whole record.

use crate::engine::AuditSealer;
use crate::error::Error;
use crate::wit::{AuditEvent, SealedRecord};
use serde::Deserialize;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};

/// The `prev_hash` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The last record's position in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

impl Head {
    fn genesis() -> Self {
        Head {
            seq: 0,
            hash: GENESIS.to_string(),
        }
    }
}

/// An open audit log, positioned at its end.
pub struct AuditLog {
    path: PathBuf,
    file: File,
    /// The last durable record.
    head: Head,
    /// The file's durable length: where a failed write is cut back to.
    len: u64,
}

/// What opening found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Bytes of a torn last line that were cut off.
    pub truncated_bytes: u64,
}

impl AuditLog {
    /// Opens (or creates) the log at `path` and finds its head.
    pub fn open(path: &Path) -> Result<(Self, Recovery), Error> {
        let io = |what: &str, e: std::io::Error| {
            Error::internal(
                "audit_log_unusable",
                format!("cannot {what} audit log {}: {e}", path.display()),
            )
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| io("open", e))?;
        let len = file.metadata().map_err(|e| io("stat", e))?.len();
        let (last_line, whole_len) = last_whole_line(&mut file, len).map_err(|e| io("read", e))?;
        let truncated_bytes = len - whole_len;
        if truncated_bytes > 0 {
            file.set_len(whole_len).map_err(|e| io("truncate", e))?;
            file.sync_all().map_err(|e| io("sync", e))?;
        }
        let head = match last_line {
            None => Head::genesis(),
            Some(line) => {
                let record = parse_record(&line).map_err(|why| {
                    Error::internal(
                        "audit_log_corrupt",
                        format!(
                            "the last record of {} is damaged ({why}); run `teller audit verify`",
                            path.display()
                        ),
                    )
                })?;
                Head {
                    seq: record.seq,
                    hash: record.hash,
                }
            }
        };
        Ok((
            AuditLog {
                path: path.to_path_buf(),
                file,
                head,
                len: whole_len,
            },
            Recovery { truncated_bytes },
        ))
    }

    pub fn head(&self) -> &Head {
        &self.head
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Seals `event` as the next record, writes it and makes it durable.
    pub fn append(
        &mut self,
        sealer: &dyn AuditSealer,
        event: &AuditEvent,
    ) -> Result<SealedRecord, Error> {
        self.append_group(sealer, &[event])
            .pop()
            .unwrap_or_else(|| Err(Error::internal("internal", "no result for the record")))
    }

    /// Seals `events` as the next records and makes them durable with one
    /// write and one `fsync` (group commit). Each event gets its own result;
    /// if the write fails, none of the group's records count, the file is
    /// cut back to its last durable length and the chain stays where it was.
    pub fn append_group(
        &mut self,
        sealer: &dyn AuditSealer,
        events: &[&AuditEvent],
    ) -> Vec<Result<SealedRecord, Error>> {
        let mut pending = self.head.clone();
        let mut lines = Vec::new();
        let mut results = Vec::with_capacity(events.len());
        for event in events {
            let seq = pending.seq + 1;
            let sealed = sealer.seal(seq, &pending.hash, event).and_then(|record| {
                if record.seq != seq
                    || record.prev_hash != pending.hash
                    || record.line.contains('\n')
                {
                    return Err(Error::guest(
                        "guest_bad_output",
                        "the audit guest returned a record that does not continue the chain",
                    ));
                }
                Ok(record)
            });
            if let Ok(record) = &sealed {
                lines.extend_from_slice(record.line.as_bytes());
                lines.push(b'\n');
                pending = Head {
                    seq,
                    hash: record.hash.clone(),
                };
            }
            results.push(sealed);
        }
        if lines.is_empty() {
            return results;
        }
        let written = self
            .file
            .write_all(&lines)
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.head = pending;
                self.len += lines.len() as u64;
            }
            Err(e) => {
                // A partial group would break the chain for every later
                // record: cut back to what was durable before reporting.
                let _ = self
                    .file
                    .set_len(self.len)
                    .and_then(|()| self.file.sync_data());
                let failed = Error::internal(
                    "audit_write_failed",
                    format!("cannot write audit log {}: {e}", self.path.display()),
                );
                for result in &mut results {
                    if result.is_ok() {
                        *result = Err(failed.clone());
                    }
                }
            }
        }
        results
    }
}

/// Appends to an [`AuditLog`] from a thread of its own, so that concurrent
/// requests share `fsync`s: while one group is being made durable the next
/// one gathers (group commit). Each caller still gets its answer only once
/// its own record is on disk.
pub struct AuditWriter {
    jobs: Option<mpsc::SyncSender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Job {
    event: AuditEvent,
    reply: mpsc::SyncSender<Result<SealedRecord, Error>>,
}

/// Records one `fsync` covers at most.
const MAX_GROUP: usize = 1024;

impl AuditWriter {
    pub fn start(mut log: AuditLog, sealer: Arc<dyn AuditSealer>) -> Result<Self, Error> {
        let (jobs, queue) = mpsc::sync_channel::<Job>(MAX_GROUP * 4);
        let thread = std::thread::Builder::new()
            .name("teller-audit".into())
            .spawn(move || {
                while let Ok(first) = queue.recv() {
                    let mut group = vec![first];
                    while group.len() < MAX_GROUP {
                        match queue.try_recv() {
                            Ok(job) => group.push(job),
                            Err(_) => break,
                        }
                    }
                    let events: Vec<&AuditEvent> = group.iter().map(|j| &j.event).collect();
                    let results = log.append_group(sealer.as_ref(), &events);
                    for (job, result) in group.into_iter().zip(results) {
                        let _ = job.reply.send(result);
                    }
                }
            })
            .map_err(|e| {
                Error::internal(
                    "audit_log_unusable",
                    format!("cannot start the audit writer: {e}"),
                )
            })?;
        Ok(AuditWriter {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Records `event`; returns once its record is durable.
    pub fn append(&self, event: AuditEvent) -> Result<SealedRecord, Error> {
        let stopped = || Error::internal("audit_log_unusable", "the audit writer has stopped");
        let (reply, answer) = mpsc::sync_channel(1);
        self.jobs
            .as_ref()
            .ok_or_else(stopped)?
            .send(Job { event, reply })
            .map_err(|_| stopped())?;
        answer.recv().map_err(|_| stopped())?
    }
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

/// The last newline-terminated line of `file` (without its newline) and the
/// length of the file up to and including it.
fn last_whole_line(file: &mut File, len: u64) -> std::io::Result<(Option<String>, u64)> {
    const BLOCK: u64 = 64 * 1024;
    // Walk back from the end in blocks until two newlines (or the start of
    // the file) bracket the last whole line.
    let mut tail: Vec<u8> = Vec::new();
    let mut start = len;
    loop {
        let newlines: Vec<usize> = tail
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .map(|(i, _)| i)
            .collect();
        let last_nl = newlines.last().copied();
        let prev_nl = newlines
            .len()
            .checked_sub(2)
            .and_then(|i| newlines.get(i))
            .copied();
        if let Some(end) = last_nl
            && (prev_nl.is_some() || start == 0)
        {
            let begin = prev_nl.map_or(0, |p| p + 1);
            let line = tail.get(begin..end).unwrap_or_default();
            let whole_len = start + end as u64 + 1;
            return Ok((Some(String::from_utf8_lossy(line).into_owned()), whole_len));
        }
        if start == 0 {
            return Ok((None, 0));
        }
        let step = BLOCK.min(start);
        start -= step;
        let mut block = vec![0; step as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut block)?;
        block.extend_from_slice(&tail);
        tail = block;
    }
}

/// The fields of a record the chain depends on.
#[derive(Debug, Deserialize)]
struct ChainFields {
    seq: u64,
    prev_hash: String,
}

#[derive(Debug)]
struct ParsedRecord {
    seq: u64,
    prev_hash: String,
    hash: String,
}

/// Splits a record line into its hashed body and hash and checks the hash.
fn parse_record(line: &str) -> Result<ParsedRecord, String> {
    const MARK: &str = ",\"hash\":\"";
    let at = line.rfind(MARK).ok_or("no hash field")?;
    let (body_open, tail) = line.split_at(at);
    let hash = tail
        .strip_prefix(MARK)
        .and_then(|t| t.strip_suffix("\"}"))
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or("malformed hash field")?;
    let body = format!("{body_open}}}");
    let computed = crate::policy::sha256_hex(body.as_bytes());
    if computed != hash {
        return Err("its hash does not match its content".to_string());
    }
    let fields: ChainFields =
        serde_json::from_str(&body).map_err(|e| format!("not a valid record: {e}"))?;
    Ok(ParsedRecord {
        seq: fields.seq,
        prev_hash: fields.prev_hash,
        hash: hash.to_string(),
    })
}

/// A verification failure: the first record that breaks the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyError {
    /// 1-based line number in the file.
    pub line: u64,
    /// The sequence number the chain expected there.
    pub expected_seq: u64,
    pub reason: String,
}

impl std::fmt::Display for VerifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "record {} (line {}) is bad: {}",
            self.expected_seq, self.line, self.reason
        )
    }
}

/// The last whole record of the log at `path`, read without changing the
/// file and without walking the chain: what to anchor outside the machine.
/// Its own hash is checked; `verify` checks the rest.
pub fn head(path: &Path) -> Result<Head, Error> {
    let unreadable = |e: std::io::Error| {
        Error::bad_request(
            "audit_log_unreadable",
            format!("cannot read {}: {e}", path.display()),
        )
    };
    let mut file = File::open(path).map_err(unreadable)?;
    let len = file.metadata().map_err(unreadable)?.len();
    let (line, _) = last_whole_line(&mut file, len).map_err(unreadable)?;
    match line {
        None => Ok(Head::genesis()),
        Some(line) => {
            let record = parse_record(&line).map_err(|why| {
                Error::internal(
                    "audit_log_corrupt",
                    format!("the last record of {} is damaged ({why})", path.display()),
                )
            })?;
            Ok(Head {
                seq: record.seq,
                hash: record.hash,
            })
        }
    }
}

/// Recomputes the whole chain of the log at `path`; returns its head.
pub fn verify(path: &Path) -> Result<Result<Head, VerifyError>, Error> {
    let file = File::open(path).map_err(|e| {
        Error::bad_request(
            "audit_log_unreadable",
            format!("cannot open {}: {e}", path.display()),
        )
    })?;
    let mut reader = BufReader::new(file);
    let mut head = Head::genesis();
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(|e| {
            Error::internal(
                "audit_log_unreadable",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        if n == 0 {
            return Ok(Ok(head));
        }
        line_no += 1;
        let expected_seq = head.seq + 1;
        let bad = |reason: String| {
            Ok(Err(VerifyError {
                line: line_no,
                expected_seq,
                reason,
            }))
        };
        if buf.last() != Some(&b'\n') {
            return bad("the last line is torn (no newline): a write was cut short".into());
        }
        buf.pop();
        let Ok(line) = std::str::from_utf8(&buf) else {
            return bad("not UTF-8".into());
        };
        let record = match parse_record(line) {
            Ok(r) => r,
            Err(why) => return bad(format!("{why}: it was modified")),
        };
        if record.seq != expected_seq {
            return bad(format!(
                "it has seq {}: records were deleted, inserted or reordered",
                record.seq
            ));
        }
        if record.prev_hash != head.hash {
            return bad(
                "its prev_hash is not the previous record's hash: the chain is broken".into(),
            );
        }
        head = Head {
            seq: record.seq,
            hash: record.hash,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::sha256_hex;
    use crate::wit::{Actor, Origin, PolicyRef};

    /// Seals the minimal record the verifier accepts; refuses `refuse`.
    struct FakeSealer;

    impl AuditSealer for FakeSealer {
        fn policy(&self) -> &PolicyRef {
            unimplemented!()
        }

        fn seal(&self, seq: u64, prev: &str, event: &AuditEvent) -> Result<SealedRecord, Error> {
            if event.action == "refuse" {
                return Err(Error::guest("guest_refused", "refused"));
            }
            let body = format!("{{\"seq\":{seq},\"prev_hash\":\"{prev}\"}}");
            let hash = sha256_hex(body.as_bytes());
            Ok(SealedRecord {
                seq,
                prev_hash: prev.to_string(),
                line: format!("{},\"hash\":\"{hash}\"}}", &body[..body.len() - 1]),
                hash,
            })
        }
    }

    fn event(action: &str) -> AuditEvent {
        AuditEvent {
            id: String::new(),
            timestamp: String::new(),
            actor: Actor {
                id: String::new(),
                role: String::new(),
            },
            action: action.to_string(),
            resource: vec![],
            outcome: String::new(),
            reasons: vec![],
            origin: Origin {
                client: String::new(),
                request_id: String::new(),
            },
            policy: None,
            engine: String::new(),
            details: vec![],
        }
    }

    #[test]
    fn a_refused_record_leaves_the_rest_of_its_group_intact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let (mut log, _) = AuditLog::open(&path).unwrap();
        let events = [event("a"), event("refuse"), event("b"), event("c")];
        let refs: Vec<&AuditEvent> = events.iter().collect();
        let results = log.append_group(&FakeSealer, &refs);
        let seqs: Vec<Option<u64>> = results
            .iter()
            .map(|r| r.as_ref().ok().map(|r| r.seq))
            .collect();
        assert_eq!(seqs, [Some(1), None, Some(2), Some(3)]);
        assert_eq!(log.head().seq, 3);
        assert_eq!(verify(&path).unwrap().unwrap().seq, 3);
    }

    #[test]
    fn the_writer_answers_every_concurrent_caller_after_its_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let (log, _) = AuditLog::open(&path).unwrap();
        let writer = AuditWriter::start(log, Arc::new(FakeSealer)).unwrap();
        let mut seqs: Vec<u64> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|_| {
                    s.spawn(|| {
                        (0..50)
                            .map(|_| writer.append(event("x")).unwrap().seq)
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=800).collect::<Vec<_>>());
        drop(writer);
        assert_eq!(verify(&path).unwrap().unwrap().seq, 800);
        let (log, recovery) = AuditLog::open(&path).unwrap();
        assert_eq!((log.head().seq, recovery.truncated_bytes), (800, 0));
    }
}
