//! The audit log: a directory of append-only segments of hash-chained
//! records, one JSON line each, sealed by the audit guest; its verifier; and
//! the reader that decrypts records for whoever holds the key.
//!
//! A record is written and `fsync`ed before the request it records is
//! answered. Segments are named by their first sequence number
//! (`audit-00000000000000000001.log`) and rotate by size; the chain runs on
//! across them. On opening, a torn last line (a crash mid-write, whose
//! request was therefore never answered) is cut off and reported; the chain
//! resumes from the last whole record.

#![forbid(unsafe_code)]

mod keys;
mod log;
mod writer;

pub use keys::{AuditKeys, Encrypter, KEY_ENV};
pub use log::{AuditLog, Group, Recovery};
pub use writer::{AuditMetrics, AuditWriter, Commit, Reply, SealerSlot};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use teller_contract::{EncryptedEvent, Error, ErrorCode};

/// The `prev_hash` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Segments rotate once they reach this size, unless configured otherwise.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// The smallest segment size accepted: below it every group would rotate.
pub const MIN_SEGMENT_BYTES: u64 = 4096;

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

/// How a teller writes its audit log.
#[derive(Debug)]
pub struct AuditSettings {
    pub dir: PathBuf,
    pub segment_bytes: u64,
    /// When set, each record also carries its event AES-256-GCM encrypted.
    pub keys: Option<AuditKeys>,
    pub commit: Commit,
}

/// The file name of the segment whose first record is `first_seq`.
fn segment_name(first_seq: u64) -> String {
    format!("audit-{first_seq:020}.log")
}

/// The segments of the log in `dir`, in chain order.
fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, Error> {
    let unreadable = |e: std::io::Error| {
        Error::bad_request(
            ErrorCode::AuditLogUnreadable,
            format!("cannot read audit log directory {}: {e}", dir.display()),
        )
    };
    if dir.is_file() {
        return Err(Error::bad_request(
            ErrorCode::AuditLogUnreadable,
            format!(
                "{} is a file; an audit log is a directory of segments (audit-<seq>.log)",
                dir.display()
            ),
        ));
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        let name = entry.file_name();
        let Some(seq) = name
            .to_str()
            .and_then(|n| n.strip_prefix("audit-"))
            .and_then(|n| n.strip_suffix(".log"))
            .filter(|n| n.len() == 20)
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        found.push((seq, entry.path()));
    }
    found.sort();
    Ok(found)
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

/// The fields of a record the chain and the reader depend on, borrowed
/// from the line where they need no unescaping.
#[derive(Debug, Deserialize)]
struct RecordFields<'a> {
    seq: u64,
    #[serde(borrow)]
    prev_hash: Cow<'a, str>,
    #[serde(default, borrow)]
    id: Cow<'a, str>,
    #[serde(default)]
    encrypted: Option<EncryptedEvent>,
}

#[derive(Debug)]
struct ParsedRecord<'a> {
    fields: RecordFields<'a>,
    hash: &'a str,
}

/// Checks a record line's hash against its body and reads its fields.
///
/// A line is its body, a JSON object, with `,"hash":"<64 hex digits>"`
/// inserted before the closing brace. The hash covers the body; the fields
/// are read from the whole line, which holds the same members and the hash.
fn parse_record(line: &str) -> Result<ParsedRecord<'_>, String> {
    const MARK: &str = ",\"hash\":\"";
    let at = line.rfind(MARK).ok_or("no hash field")?;
    let (body_open, tail) = line.split_at(at);
    let hash = tail
        .strip_prefix(MARK)
        .and_then(|t| t.strip_suffix("\"}"))
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or("malformed hash field")?;
    let computed = Sha256::new()
        .chain_update(body_open)
        .chain_update("}")
        .finalize();
    if !hex_is(hash, &computed) {
        return Err("its hash does not match its content".to_string());
    }
    let fields: RecordFields =
        serde_json::from_str(line).map_err(|e| format!("not a valid record: {e}"))?;
    Ok(ParsedRecord { fields, hash })
}

/// Whether `hex` is `bytes` in lowercase hexadecimal.
fn hex_is(hex: &str, bytes: &[u8]) -> bool {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    hex.len() == bytes.len() * 2
        && hex.as_bytes().chunks_exact(2).zip(bytes).all(|(pair, b)| {
            pair.first() == DIGITS.get(usize::from(b >> 4))
                && pair.get(1) == DIGITS.get(usize::from(b & 0xf))
        })
}

/// The head recorded in one segment file, if it has a whole record.
fn segment_head(path: &Path) -> Result<Option<Head>, Error> {
    let unreadable = |e: std::io::Error| {
        Error::bad_request(
            ErrorCode::AuditLogUnreadable,
            format!("cannot read {}: {e}", path.display()),
        )
    };
    let mut file = File::open(path).map_err(unreadable)?;
    let len = file.metadata().map_err(unreadable)?.len();
    let (line, _) = last_whole_line(&mut file, len).map_err(unreadable)?;
    line.map(|line| {
        parse_record(&line)
            .map(|r| Head {
                seq: r.fields.seq,
                hash: r.hash.to_string(),
            })
            .map_err(|why| {
                Error::internal(
                    ErrorCode::AuditLogCorrupt,
                    format!(
                        "the last record of {} is damaged ({why}); run `teller audit verify`",
                        path.display()
                    ),
                )
            })
    })
    .transpose()
}

/// The last whole record of the log in `dir`, read without changing it and
/// without walking the chain: what to anchor outside the machine. Its own
/// hash is checked; `verify` checks the rest.
pub fn head(dir: &Path) -> Result<Head, Error> {
    for (_, path) in segments(dir)?.iter().rev() {
        if let Some(head) = segment_head(path)? {
            return Ok(head);
        }
    }
    Ok(Head::genesis())
}

/// Where a record sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub segment: PathBuf,
    /// 1-based line number in the segment.
    pub line: u64,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self.segment.file_name().unwrap_or_default();
        write!(f, "{} line {}", name.to_string_lossy(), self.line)
    }
}

/// Every line of every segment, in chain order. A line without its newline
/// (a torn write) comes out with `whole == false`.
fn for_each_line(
    dir: &Path,
    mut visit: impl FnMut(Place, &[u8], bool) -> Result<bool, Error>,
) -> Result<(), Error> {
    for (_, path) in segments(dir)? {
        let unreadable = |e: std::io::Error| {
            Error::bad_request(
                ErrorCode::AuditLogUnreadable,
                format!("cannot read {}: {e}", path.display()),
            )
        };
        let mut reader = BufReader::new(File::open(&path).map_err(unreadable)?);
        let mut buf = Vec::new();
        let mut line = 0u64;
        loop {
            buf.clear();
            if reader.read_until(b'\n', &mut buf).map_err(unreadable)? == 0 {
                break;
            }
            line += 1;
            let whole = buf.last() == Some(&b'\n');
            if whole {
                buf.pop();
            }
            let place = Place {
                segment: path.clone(),
                line,
            };
            if !visit(place, &buf, whole)? {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// A verification failure: the first record that breaks the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyError {
    pub place: Place,
    /// The sequence number the chain expected there.
    pub expected_seq: u64,
    pub reason: String,
}

impl std::fmt::Display for VerifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "record {} ({}) is bad: {}",
            self.expected_seq, self.place, self.reason
        )
    }
}

/// What an intact log holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub head: Head,
    pub segments: usize,
}

/// Recomputes the whole chain of the log in `dir`, across its segments.
pub fn verify(dir: &Path) -> Result<Result<Verified, VerifyError>, Error> {
    let count = segments(dir)?.len();
    let mut head = Head::genesis();
    let mut failure = None;
    for_each_line(dir, |place, line, whole| {
        let expected_seq = head.seq + 1;
        let mut bad = |reason: String| {
            failure = Some(VerifyError {
                place: place.clone(),
                expected_seq,
                reason,
            });
            Ok(false)
        };
        if !whole {
            return bad("the last line is torn (no newline): a write was cut short".into());
        }
        let Ok(line) = std::str::from_utf8(line) else {
            return bad("not UTF-8".into());
        };
        let record = match parse_record(line) {
            Ok(r) => r,
            Err(why) => return bad(format!("{why}: it was modified")),
        };
        if record.fields.seq != expected_seq {
            return bad(format!(
                "it has seq {}: records were deleted, inserted or reordered",
                record.fields.seq
            ));
        }
        if record.fields.prev_hash != head.hash {
            return bad(
                "its prev_hash is not the previous record's hash: the chain is broken".into(),
            );
        }
        head = Head {
            seq: record.fields.seq,
            hash: record.hash.to_string(),
        };
        Ok(true)
    })?;
    Ok(match failure {
        Some(bad) => Err(bad),
        None => Ok(Verified {
            head,
            segments: count,
        }),
    })
}

/// What `decrypt` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decrypted {
    pub opened: u64,
    /// Records written without a key.
    pub plain: u64,
}

/// Writes, as one JSON line each, the plaintext event of every encrypted
/// record in `dir` (or only record `seq`) to `out`. Each record's own hash
/// is checked first; a record that will not open is an error naming it.
pub fn decrypt(
    dir: &Path,
    keys: &AuditKeys,
    seq: Option<u64>,
    out: &mut dyn Write,
) -> Result<Decrypted, Error> {
    let mut done = Decrypted::default();
    let mut found = false;
    for_each_line(dir, |place, line, whole| {
        let damaged = |why: String| {
            Error::bad_request(
                ErrorCode::AuditRecordDamaged,
                format!("the record at {place} is damaged ({why}); run `teller audit verify`"),
            )
        };
        if !whole {
            return Ok(true);
        }
        let line = std::str::from_utf8(line).map_err(|_| damaged("not UTF-8".into()))?;
        let record = parse_record(line).map_err(damaged)?.fields;
        if seq.is_some_and(|want| want != record.seq) {
            return Ok(true);
        }
        found = true;
        let Some(sealed) = &record.encrypted else {
            done.plain += 1;
            if seq.is_some() {
                return Err(Error::bad_request(
                    ErrorCode::AuditRecordNotEncrypted,
                    format!(
                        "record {} was written without an audit key; its masked form is all there is",
                        record.seq
                    ),
                ));
            }
            return Ok(true);
        };
        let plaintext = keys.decrypt(&record.id, sealed).map_err(|why| {
            Error::bad_request(
                ErrorCode::AuditDecryptFailed,
                format!("cannot decrypt record {} ({place}): {why}", record.seq),
            )
        })?;
        let event: serde_json::Value = serde_json::from_slice(&plaintext)
            .map_err(|e| damaged(format!("its plaintext is not JSON: {e}")))?;
        let shown = serde_json::json!({"seq": record.seq, "id": record.id, "event": event});
        writeln!(out, "{shown}").map_err(|e| {
            Error::internal(
                ErrorCode::OutputFailed,
                format!("cannot write the plaintext: {e}"),
            )
        })?;
        done.opened += 1;
        Ok(seq.is_none())
    })?;
    if let (Some(want), false) = (seq, found) {
        return Err(Error::bad_request(
            ErrorCode::AuditRecordNotFound,
            format!("the log in {} has no record {want}", dir.display()),
        ));
    }
    Ok(done)
}
#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use teller_contract::{AuditEvent, PolicyRef, SealedRecord};
    use teller_engine::AuditSealer;
    use teller_engine::artifact::sha256_hex;

    /// Seals the minimal record the verifier accepts; refuses `refuse`.
    struct FakeSealer;

    impl AuditSealer for FakeSealer {
        fn policy(&self) -> &PolicyRef {
            unimplemented!()
        }

        fn seal(&self, seq: u64, prev: &str, event: &AuditEvent) -> Result<SealedRecord, Error> {
            if event.action == "refuse" {
                return Err(Error::guest(ErrorCode::GuestRefused, "refused"));
            }
            let line_seq = if event.action == "lie-seq" {
                seq + 1
            } else {
                seq
            };
            let body = format!("{{\"seq\":{line_seq},\"prev_hash\":\"{prev}\"}}");
            let mut hash = sha256_hex(body.as_bytes());
            if event.action == "lie-hash" {
                hash = sha256_hex(b"other bytes");
            }
            Ok(SealedRecord {
                seq,
                prev_hash: prev.to_string(),
                line: format!("{},\"hash\":\"{hash}\"}}", &body[..body.len() - 1]),
                hash,
            })
        }
    }

    /// A group-commit writer on `log` that seals with [`FakeSealer`].
    fn group_writer(log: AuditLog, metrics: AuditMetrics) -> AuditWriter {
        let sealer: Arc<dyn AuditSealer> = Arc::new(FakeSealer);
        AuditWriter::start(
            log,
            Arc::new(std::sync::RwLock::new(sealer)),
            None,
            Commit::Group,
            metrics,
        )
        .unwrap()
    }

    fn event(action: &str) -> AuditEvent {
        AuditEvent {
            action: action.to_string(),
            ..AuditEvent::default()
        }
    }

    /// `body` with its hash put in, as the audit guest writes a line.
    fn line_of(body: &str) -> String {
        let hash = sha256_hex(body.as_bytes());
        format!("{},\"hash\":\"{hash}\"}}", &body[..body.len() - 1])
    }

    #[test]
    fn a_record_is_read_from_its_line_and_its_hash_covers_the_body() {
        let body = format!(
            r#"{{"seq":7,"id":"caf\u00e9 \"x\"","prev_hash":"{GENESIS}","outcome":"allow"}}"#
        );
        let line = line_of(&body);
        let record = parse_record(&line).unwrap();
        assert_eq!(record.fields.seq, 7);
        assert_eq!(record.fields.prev_hash, GENESIS);
        assert_eq!(record.fields.id, "café \"x\"", "escapes are read");
        assert_eq!(record.hash, sha256_hex(body.as_bytes()));

        let altered = line.replacen("allow", "alloW", 1);
        assert_eq!(
            parse_record(&altered).unwrap_err(),
            "its hash does not match its content"
        );
        let upper = line.replace(record.hash, &record.hash.to_uppercase());
        assert!(parse_record(&upper).is_err(), "the hash is lowercase hex");
        // Hashed as written, but not a record.
        for body in [
            r#"{"seq":7,"prev_hash":"00",}"#,
            r#"{"prev_hash":"00"}"#,
            "{}",
        ] {
            let why = parse_record(&line_of(body)).unwrap_err();
            assert!(why.starts_with("not a valid record"), "{body}: {why}");
        }
    }

    #[test]
    fn a_refused_record_leaves_the_rest_of_its_group_intact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit");
        let (mut log, _) = AuditLog::open(&path, DEFAULT_SEGMENT_BYTES).unwrap();
        let events = [event("a"), event("refuse"), event("b"), event("c")];
        let refs: Vec<&AuditEvent> = events.iter().collect();
        let results = log.append_group(&FakeSealer, &refs);
        let seqs: Vec<Option<u64>> = results
            .iter()
            .map(|r| r.as_ref().ok().map(|r| r.seq))
            .collect();
        assert_eq!(seqs, [Some(1), None, Some(2), Some(3)]);
        assert_eq!(log.head().seq, 3);
        assert_eq!(verify(&path).unwrap().unwrap().head.seq, 3);
    }

    #[test]
    fn a_record_that_does_not_continue_the_chain_is_refused_before_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit");
        let (mut log, _) = AuditLog::open(&path, DEFAULT_SEGMENT_BYTES).unwrap();
        let events = [event("a"), event("lie-hash"), event("lie-seq"), event("b")];
        let refs: Vec<&AuditEvent> = events.iter().collect();
        let results = log.append_group(&FakeSealer, &refs);
        let codes: Vec<Result<u64, &str>> = results
            .iter()
            .map(|r| r.as_ref().map(|r| r.seq).map_err(|e| e.code.as_str()))
            .collect();
        assert_eq!(
            codes,
            [
                Ok(1),
                Err("guest_bad_output"),
                Err("guest_bad_output"),
                Ok(2)
            ]
        );
        let message = &results[1].as_ref().unwrap_err().message;
        assert!(message.contains("hash does not match"), "{message}");
        let message = &results[2].as_ref().unwrap_err().message;
        assert!(message.contains("seq 3 (line)"), "{message}");
        assert_eq!(verify(&path).unwrap().unwrap().head.seq, 2);
    }

    #[test]
    fn the_writer_answers_every_concurrent_caller_after_its_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit");
        let (log, _) = AuditLog::open(&path, DEFAULT_SEGMENT_BYTES).unwrap();
        let writer = group_writer(log, Default::default());
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
        assert_eq!(verify(&path).unwrap().unwrap().head.seq, 800);
        let (log, recovery) = AuditLog::open(&path, DEFAULT_SEGMENT_BYTES).unwrap();
        assert_eq!((log.head().seq, recovery.truncated_bytes), (800, 0));
    }

    /// A write that fails fails every record of its group, even one that
    /// was sealed; the segment is cut back, and the next record takes the
    /// place of the first lost one, chained on what is on disk.
    #[test]
    fn a_failed_write_fails_its_group_and_the_chain_goes_on_from_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit");
        let (mut log, _) = AuditLog::open(&path, DEFAULT_SEGMENT_BYTES).unwrap();
        let first = log.append(&FakeSealer, &event("a")).unwrap();
        let on_disk = std::fs::metadata(segments(&path).unwrap()[0].1.clone())
            .unwrap()
            .len();
        log.failing = 1;
        let events = [event("b"), event("refuse"), event("c")];
        let refs: Vec<&AuditEvent> = events.iter().collect();
        let codes: Vec<&str> = log
            .append_group(&FakeSealer, &refs)
            .iter()
            .map(|r| r.as_ref().unwrap_err().code.as_str())
            .collect();
        assert_eq!(
            codes,
            ["audit_write_failed", "guest_refused", "audit_write_failed"]
        );
        assert_eq!(log.head().seq, 1);
        let next = log.append(&FakeSealer, &event("d")).unwrap();
        assert_eq!(
            (next.seq, next.prev_hash.as_str()),
            (2, first.hash.as_str())
        );
        let segment = segments(&path).unwrap()[0].1.clone();
        let lines = std::fs::read_to_string(&segment).unwrap();
        assert_eq!(lines.len() as u64, on_disk + next.line.len() as u64 + 1);
        let verified = verify(&path).unwrap().unwrap();
        assert_eq!((verified.head.seq, verified.head.hash), (2, next.hash));
    }

    /// The writer seals the next group while the one before is written. If
    /// that write fails, the group sealed on it fails too (its records
    /// chain on records that are not on disk), and the next group chains
    /// on the disk's head again.
    #[test]
    fn a_group_sealed_on_a_failed_write_fails_and_the_next_chains_on_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit");
        let (mut log, _) = AuditLog::open(&path, DEFAULT_SEGMENT_BYTES).unwrap();
        let first = log.append(&FakeSealer, &event("first")).unwrap();
        log.failing = 1;
        log.failing_after = std::time::Duration::from_millis(300);
        let metrics = AuditMetrics::default();
        let writer = group_writer(log, metrics.clone());
        let submit = |action: &str| {
            let (tx, rx) = std::sync::mpsc::channel();
            writer
                .submit(
                    event(action),
                    Box::new(move |r| {
                        let _ = tx.send(r);
                    }),
                )
                .unwrap();
            rx
        };
        let a = submit("a");
        // `a` is sealed alone once the queue is empty again; its write
        // then takes 300 ms to fail, and `b` is sealed on it meanwhile.
        while metrics.queue_depth.get() != 0 {
            std::thread::yield_now();
        }
        let b = submit("b");
        let a = a.recv().unwrap().unwrap_err();
        assert_eq!(a.code.as_str(), "audit_write_failed", "{a}");
        assert!(a.message.contains("injected"), "{a}");
        let b = b.recv().unwrap().unwrap_err();
        assert_eq!(b.code.as_str(), "audit_write_failed", "{b}");
        assert!(b.message.contains("could not be written"), "{b}");
        let next = writer.append(event("c")).unwrap();
        assert_eq!(
            (next.seq, next.prev_hash.as_str()),
            (2, first.hash.as_str())
        );
        drop(writer);
        let verified = verify(&path).unwrap().unwrap();
        assert_eq!((verified.head.seq, verified.head.hash), (2, next.hash));
        assert_eq!(metrics.records.get(), 1);
    }

    #[test]
    fn segments_rotate_by_size_and_the_chain_runs_across_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit");
        let (mut log, _) = AuditLog::open(&path, MIN_SEGMENT_BYTES).unwrap();
        for _ in 0..100 {
            log.append(&FakeSealer, &event("x")).unwrap();
        }
        let found = segments(&path).unwrap();
        assert!(found.len() > 2, "{found:?}");
        assert_eq!(found[0].0, 1);
        let verified = verify(&path).unwrap().unwrap();
        assert_eq!((verified.head.seq, verified.segments), (100, found.len()));
        assert_eq!(head(&path).unwrap(), verified.head);
        drop(log);

        // Reopening continues in the last segment, even an empty one.
        let (log, recovery) = AuditLog::open(&path, MIN_SEGMENT_BYTES).unwrap();
        assert_eq!((log.head().seq, recovery.segments), (100, found.len()));

        // A segment lost from the middle is found at the next one.
        std::fs::remove_file(&found[1].1).unwrap();
        let bad = verify(&path).unwrap().unwrap_err();
        assert_eq!(bad.expected_seq, found[1].0);
        assert!(bad.reason.contains("deleted"), "{bad}");
        assert!(bad.to_string().contains(&segment_name(found[2].0)), "{bad}");
    }
}
