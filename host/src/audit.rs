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
    head: Head,
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
        let seq = self.head.seq + 1;
        let record = sealer.seal(seq, &self.head.hash, event)?;
        if record.seq != seq || record.prev_hash != self.head.hash || record.line.contains('\n') {
            return Err(Error::guest(
                "guest_bad_output",
                "the audit guest returned a record that does not continue the chain",
            ));
        }
        let mut line = Vec::with_capacity(record.line.len() + 1);
        line.extend_from_slice(record.line.as_bytes());
        line.push(b'\n');
        let written = self
            .file
            .write_all(&line)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // A partial line would break the chain for every later record:
            // cut it off again before reporting.
            let _ = self.truncate_to_head();
            return Err(Error::internal(
                "audit_write_failed",
                format!("cannot write audit log {}: {e}", self.path.display()),
            ));
        }
        self.head = Head {
            seq,
            hash: record.hash.clone(),
        };
        Ok(record)
    }

    fn truncate_to_head(&mut self) -> std::io::Result<()> {
        let len = self.file.metadata()?.len();
        let (_, whole) = last_whole_line(&mut self.file, len)?;
        self.file.set_len(whole)
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
