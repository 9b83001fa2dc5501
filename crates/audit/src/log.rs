//! Appending to the segmented log: group writes, one `fsync` each, rotation
//! by size, and recovery of a torn tail at start-up.

use super::{Head, last_whole_line, parse_record, segment_head, segment_name, segments};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use teller_contract::Error;
use teller_contract::ErrorCode;
use teller_contract::{AuditEvent, SealedRecord};
use teller_engine::AuditSealer;

/// An open audit log, positioned at the end of its last segment.
pub struct AuditLog {
    dir: PathBuf,
    segment_bytes: u64,
    /// The segment being written.
    segment: PathBuf,
    file: File,
    /// The last durable record.
    head: Head,
    /// The segment's durable length: where a failed write is cut back to.
    len: u64,
    /// How long the last group's write and `fsync` took.
    last_commit: std::time::Duration,
    /// Commits still to fail, half written: tests of the failure path.
    #[cfg(test)]
    pub(crate) failing: u32,
    /// How long each failing commit takes before it fails.
    #[cfg(test)]
    pub(crate) failing_after: std::time::Duration,
}

/// Records sealed onto the log's head, not yet written: see
/// [`AuditLog::group`].
pub struct Group {
    /// The head the group was sealed on.
    base: u64,
    /// The group's last record (the head once it is durable).
    chain: Head,
    lines: Vec<u8>,
}

impl Group {
    /// An empty group chained on `head`: the log's head, or the last record
    /// of a group still being written (see [`AuditLog::commit_group`]).
    pub fn on(head: Head) -> Group {
        Group {
            base: head.seq,
            chain: head,
            lines: Vec::new(),
        }
    }

    /// The record the group was sealed on.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The group's last record: the next group chains on it.
    pub fn last(&self) -> &Head {
        &self.chain
    }

    /// Seals `event` as the group's next record. A record the check refuses
    /// is not part of the group, and the chain goes on from the last good
    /// one.
    pub fn seal(
        &mut self,
        sealer: &dyn AuditSealer,
        event: &AuditEvent,
    ) -> Result<SealedRecord, Error> {
        let record = seal_next(sealer, &mut self.chain, event)?;
        self.lines.extend_from_slice(record.line.as_bytes());
        self.lines.push(b'\n');
        Ok(record)
    }

    /// Whether no record was sealed into it: committing it writes nothing.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

/// What opening found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Bytes of a torn last line that were cut off.
    pub truncated_bytes: u64,
    pub segments: usize,
}

impl AuditLog {
    /// Opens (or creates) the log in `dir` and finds its head.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<(Self, Recovery), Error> {
        let io = |what: &str, path: &Path, e: std::io::Error| {
            Error::internal(
                ErrorCode::AuditLogUnusable,
                format!("cannot {what} audit log {}: {e}", path.display()),
            )
        };
        std::fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
        let mut found = segments(dir)?;
        let Some((first_seq, path)) = found.pop() else {
            let head = Head::genesis();
            let (segment, file) = create_segment(dir, head.seq + 1)?;
            let log = AuditLog {
                dir: dir.to_path_buf(),
                segment_bytes,
                segment,
                file,
                head,
                len: 0,
                last_commit: std::time::Duration::ZERO,
                #[cfg(test)]
                failing: 0,
                #[cfg(test)]
                failing_after: std::time::Duration::ZERO,
            };
            return Ok((
                log,
                Recovery {
                    truncated_bytes: 0,
                    segments: 1,
                },
            ));
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|e| io("open", &path, e))?;
        let len = file.metadata().map_err(|e| io("stat", &path, e))?.len();
        let (last_line, whole_len) =
            last_whole_line(&mut file, len).map_err(|e| io("read", &path, e))?;
        let truncated_bytes = len - whole_len;
        if truncated_bytes > 0 {
            file.set_len(whole_len)
                .and_then(|()| file.sync_all())
                .map_err(|e| io("cut back", &path, e))?;
        }
        let corrupt = |why: String| {
            Error::internal(
                ErrorCode::AuditLogCorrupt,
                format!(
                    "audit log {}: {why}; run `teller audit verify`",
                    path.display()
                ),
            )
        };
        let head = match last_line {
            Some(line) => {
                let record = parse_record(&line)
                    .map_err(|why| corrupt(format!("its last record is damaged ({why})")))?;
                Head {
                    seq: record.fields.seq,
                    hash: record.hash.to_string(),
                }
            }
            // An empty last segment (rotation, then a crash): the head is
            // in the segments before it.
            None => {
                let mut head = Head::genesis();
                for (_, earlier) in found.iter().rev() {
                    if let Some(h) = segment_head(earlier)? {
                        head = h;
                        break;
                    }
                }
                if head.seq + 1 != first_seq {
                    return Err(corrupt(format!(
                        "it is empty and named for record {first_seq}, but the record before it is {}",
                        head.seq
                    )));
                }
                head
            }
        };
        Ok((
            AuditLog {
                dir: dir.to_path_buf(),
                segment_bytes,
                segment: path,
                file,
                head,
                len: whole_len,
                last_commit: std::time::Duration::ZERO,
                #[cfg(test)]
                failing: 0,
                #[cfg(test)]
                failing_after: std::time::Duration::ZERO,
            },
            Recovery {
                truncated_bytes,
                segments: found.len() + 1,
            },
        ))
    }

    pub fn head(&self) -> &Head {
        &self.head
    }

    /// How long the last group's write and `fsync` took.
    pub fn last_commit(&self) -> std::time::Duration {
        self.last_commit
    }

    /// Seals `event` as the next record, writes it and makes it durable.
    pub fn append(
        &mut self,
        sealer: &dyn AuditSealer,
        event: &AuditEvent,
    ) -> Result<SealedRecord, Error> {
        self.append_group(sealer, &[event])
            .pop()
            .unwrap_or_else(|| {
                Err(Error::internal(
                    ErrorCode::Internal,
                    "no result for the record",
                ))
            })
    }

    /// Seals `events` as the next records and makes them durable with one
    /// write and one `fsync` (group commit). Each event gets its own result;
    /// if the write fails, none of the group's records count, the segment is
    /// cut back to its last durable length and the chain stays where it was.
    pub fn append_group(
        &mut self,
        sealer: &dyn AuditSealer,
        events: &[&AuditEvent],
    ) -> Vec<Result<SealedRecord, Error>> {
        let mut group = self.group();
        let mut results: Vec<Result<SealedRecord, Error>> = events
            .iter()
            .map(|event| group.seal(sealer, event))
            .collect();
        if let Err(failed) = self.commit_group(group) {
            for result in &mut results {
                if result.is_ok() {
                    *result = Err(failed.clone());
                }
            }
        }
        results
    }

    /// An empty group on the current head, to seal records into one by one
    /// and then make durable together with [`AuditLog::commit_group`].
    pub fn group(&self) -> Group {
        Group::on(self.head.clone())
    }

    /// Writes the group's records with one `fsync`. If that fails, none of
    /// them count: the segment is cut back to its last durable length and
    /// the head stays where it was. A group must be sealed on the head: one
    /// sealed on a group that was never written is refused.
    pub fn commit_group(&mut self, group: Group) -> Result<(), Error> {
        if group.base != self.head.seq {
            return Err(Error::internal(
                ErrorCode::AuditLogUnusable,
                format!(
                    "a group sealed on record {} cannot follow record {}",
                    group.base, self.head.seq
                ),
            ));
        }
        if group.lines.is_empty() {
            return Ok(());
        }
        self.commit(&group.lines, group.chain)
    }

    /// Writes `lines`, whole records chained on the head and ending at
    /// `last`, with one `fsync`. If that fails, the segment is cut back to
    /// its last durable length and the head stays where it was.
    fn commit(&mut self, lines: &[u8], last: Head) -> Result<(), Error> {
        let started = std::time::Instant::now();
        let written = self.write_durably(lines);
        self.last_commit = started.elapsed();
        match written {
            Ok(()) => {
                self.head = last;
                self.len += lines.len() as u64;
                if self.len >= self.segment_bytes
                    && let Err(e) = self.rotate()
                {
                    // The records are safe; the segment just grows on
                    // until a rotation succeeds.
                    tracing::error!("audit log: cannot start a new segment: {e}");
                }
                Ok(())
            }
            Err(e) => {
                // A partial group would break the chain for every later
                // record: cut back to what was durable before reporting.
                let _ = self
                    .file
                    .set_len(self.len)
                    .and_then(|()| self.file.sync_data());
                Err(Error::internal(
                    ErrorCode::AuditWriteFailed,
                    format!("cannot write audit log {}: {e}", self.segment.display()),
                ))
            }
        }
    }

    fn write_durably(&mut self, lines: &[u8]) -> std::io::Result<()> {
        #[cfg(test)]
        if self.failing > 0 {
            self.failing -= 1;
            std::thread::sleep(self.failing_after);
            // Half the group reaches the file, as when a disk fills up.
            self.file
                .write_all(lines.get(..lines.len() / 2).unwrap_or_default())?;
            return Err(std::io::Error::other("injected write failure"));
        }
        self.file.write_all(lines)?;
        self.file.sync_data()
    }

    /// Starts the next segment, named for the next record.
    fn rotate(&mut self) -> Result<(), Error> {
        let (segment, file) = create_segment(&self.dir, self.head.seq + 1)?;
        self.segment = segment;
        self.file = file;
        self.len = 0;
        Ok(())
    }
}

/// Creates the segment for `first_seq` and makes its name durable.
fn create_segment(dir: &Path, first_seq: u64) -> Result<(PathBuf, File), Error> {
    let path = dir.join(segment_name(first_seq));
    let io = |what: &str, e: std::io::Error| {
        Error::internal(
            ErrorCode::AuditLogUnusable,
            format!("cannot {what} audit segment {}: {e}", path.display()),
        )
    };
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| io("create", e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("sync the directory of", e))?;
    Ok((path, file))
}

/// Seals `event` as the record after `chain` and checks that it continues
/// the chain; `chain` moves on to it. A refused record leaves `chain` as it
/// was, so the next record takes its place.
fn seal_next(
    sealer: &dyn AuditSealer,
    chain: &mut Head,
    event: &AuditEvent,
) -> Result<SealedRecord, Error> {
    let seq = chain.seq + 1;
    let record = sealer.seal(seq, &chain.hash, event)?;
    continues(&record, seq, &chain.hash)?;
    *chain = Head {
        seq,
        hash: record.hash.clone(),
    };
    Ok(record)
}

/// Checks what the guest sealed before it reaches the disk: the line is one
/// line, its hash is the hash of its own bytes, and the `seq` and
/// `prev_hash` inside it (not only the fields the guest returned beside it)
/// continue the chain. A record that fails is refused, never chained.
fn continues(record: &SealedRecord, seq: u64, prev_hash: &str) -> Result<(), Error> {
    let refused = |why: String| {
        Error::guest(
            ErrorCode::GuestBadOutput,
            format!("the audit guest's record {seq} was refused: {why}"),
        )
    };
    if record.line.contains('\n') {
        return Err(refused("it spans several lines".to_string()));
    }
    let parsed = parse_record(&record.line).map_err(refused)?;
    if parsed.fields.seq != seq || record.seq != seq {
        return Err(refused(format!(
            "it has seq {} (line) / {} (result), not {seq}",
            parsed.fields.seq, record.seq
        )));
    }
    if parsed.fields.prev_hash != prev_hash || record.prev_hash != prev_hash {
        return Err(refused(
            "its prev_hash is not the previous record's hash".to_string(),
        ));
    }
    if parsed.hash != record.hash {
        return Err(refused(
            "the hash it returned is not the hash in its line".to_string(),
        ));
    }
    Ok(())
}
