//! The embedded store: daily totals in a fjall database under a directory
//! of this machine, for one process (fjall locks its directory).
//!
//! Every reservation is committed as one write batch (the new total and the
//! request id's answer together) and reaches the operating system before
//! the guest sees its answer, so a `kill -9` loses nothing; a background
//! thread syncs the journal to disk every second against power loss, and
//! drops days that are over.

use crate::{day_bytes, request_bytes};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use teller_contract::{DailyReservation, Reservation};
use teller_engine::state::{Day, Granted, Reserved, StateError, StateStore};

pub struct Embedded {
    dir: PathBuf,
    db: fjall::Database,
    /// Total per (day, key).
    totals: fjall::Keyspace,
    /// Answer per (day, key, request id): granted byte, then the total.
    requests: fjall::Keyspace,
    /// Reservations are read-modify-write: one at a time.
    write: Mutex<()>,
}

/// A request id's first answer, what it was for, and whether a retry has
/// been given it since (then the grant is no longer one caller's to take
/// back: the retry may have been allowed).
struct Remembered {
    granted: bool,
    total: u64,
    amount: u64,
    limit: u64,
    replayed: bool,
}

impl Remembered {
    fn write(&self) -> Vec<u8> {
        let mut out = vec![u8::from(self.granted)];
        for n in [self.total, self.amount, self.limit] {
            out.extend_from_slice(&n.to_be_bytes());
        }
        out.push(u8::from(self.replayed));
        out
    }

    fn read(bytes: &[u8]) -> Option<Remembered> {
        let (granted, rest) = bytes.split_first()?;
        let n = |i: usize| -> Option<u64> {
            Some(u64::from_be_bytes(
                rest.get(i * 8..i * 8 + 8)?.try_into().ok()?,
            ))
        };
        Some(Remembered {
            granted: *granted == 1,
            total: n(0)?,
            amount: n(1)?,
            limit: n(2)?,
            replayed: rest.get(24) == Some(&1),
        })
    }
}

/// How often the journal is synced to disk and old days are dropped.
const SYNC_EVERY: Duration = Duration::from_secs(1);

impl Embedded {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Arc<Embedded>, StateError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StateError(format!(
                "cannot create state directory {}: {e}",
                dir.display()
            ))
        })?;
        let failed = |e: fjall::Error| {
            let hint = match &e {
                fjall::Error::Locked => " (another teller process is using it)",
                _ => "",
            };
            StateError(format!(
                "cannot open the state store in {}{hint}: {e}",
                dir.display()
            ))
        };
        let db = fjall::Database::builder(dir)
            .worker_threads(1)
            .open()
            .map_err(failed)?;
        let totals = db
            .keyspace("daily_totals", fjall::KeyspaceCreateOptions::default)
            .map_err(failed)?;
        let requests = db
            .keyspace("daily_requests", fjall::KeyspaceCreateOptions::default)
            .map_err(failed)?;
        let store = Arc::new(Embedded {
            dir: dir.to_path_buf(),
            db,
            totals,
            requests,
            write: Mutex::new(()),
        });
        store.drop_old_days(Day::today(0))?;
        let weak = Arc::downgrade(&store);
        std::thread::Builder::new()
            .name("teller-state-sync".into())
            .spawn(move || {
                while let Some(store) = weak.upgrade() {
                    if let Err(e) = store.db.persist(fjall::PersistMode::SyncData) {
                        tracing::error!(dir = %store.dir.display(), "cannot sync the state store: {e}");
                    }
                    if let Err(e) = store.drop_old_days(Day::today(0)) {
                        tracing::warn!("{e}");
                    }
                    drop(store);
                    std::thread::sleep(SYNC_EVERY);
                }
            })
            .map_err(|e| StateError(format!("cannot start the state sync thread: {e}")))?;
        Ok(store)
    }

    fn io(&self, e: fjall::Error) -> StateError {
        StateError(format!("state store {}: {e}", self.dir.display()))
    }

    /// Removes totals of days that ended more than a day ago at any offset.
    fn drop_old_days(&self, today_utc: Day) -> Result<(), StateError> {
        let end = day_bytes(today_utc.number - 2);
        for keyspace in [&self.totals, &self.requests] {
            let old: Vec<_> = keyspace
                .range(..end.as_slice())
                .map(|kv| kv.key())
                .collect::<Result<_, _>>()
                .map_err(|e| self.io(e))?;
            if old.is_empty() {
                continue;
            }
            let mut batch = self.db.batch();
            for key in old {
                batch.remove(keyspace, key);
            }
            batch.commit().map_err(|e| self.io(e))?;
        }
        Ok(())
    }

    fn total(&self, key: &[u8]) -> Result<u64, StateError> {
        match self.totals.get(key).map_err(|e| self.io(e))? {
            None => Ok(0),
            Some(v) => <[u8; 8]>::try_from(v.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| {
                    StateError(format!(
                        "state store {}: a damaged total",
                        self.dir.display()
                    ))
                }),
        }
    }
}

impl StateStore for Embedded {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn reserve(&self, day: Day, r: &DailyReservation) -> Result<Reserved, StateError> {
        let total_key = crate::total_bytes(day, &r.key);
        let request_key = r
            .request_id
            .as_deref()
            .map(|id| request_bytes(day, &r.key, id));
        let _one_at_a_time = self.write.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(request_key) = &request_key
            && let Some(seen) = self.requests.get(request_key).map_err(|e| self.io(e))?
        {
            let seen = Remembered::read(&seen)
                .ok_or_else(|| StateError("state store: a damaged request record".into()))?;
            if seen.amount == r.amount && seen.limit == r.limit {
                if seen.granted && !seen.replayed {
                    let replayed = Remembered {
                        replayed: true,
                        ..seen
                    };
                    let mut batch = self.db.batch();
                    batch.insert(&self.requests, request_key.clone(), replayed.write());
                    batch.commit().map_err(|e| self.io(e))?;
                }
                return Ok(Reserved {
                    answer: Reservation {
                        granted: seen.granted,
                        total: seen.total,
                    },
                    replayed: true,
                });
            }
            // The same id for another transfer: refused, never replayed.
            return Ok(Reserved {
                answer: Reservation {
                    granted: false,
                    total: self.total(&total_key)?,
                },
                replayed: false,
            });
        }
        let total = self.total(&total_key)?;
        let after = total.checked_add(r.amount).filter(|t| *t <= r.limit);
        let answer = match after {
            Some(after) => Reservation {
                granted: true,
                total: after,
            },
            None => Reservation {
                granted: false,
                total,
            },
        };
        let mut batch = self.db.batch();
        if answer.granted {
            batch.insert(&self.totals, total_key, answer.total.to_be_bytes());
        }
        if let Some(request_key) = request_key {
            let record = Remembered {
                granted: answer.granted,
                total: answer.total,
                amount: r.amount,
                limit: r.limit,
                replayed: false,
            };
            batch.insert(&self.requests, request_key, record.write());
        }
        batch.commit().map_err(|e| self.io(e))?;
        Ok(Reserved {
            answer,
            replayed: false,
        })
    }

    fn release(&self, g: &Granted) -> Result<(), StateError> {
        let total_key = crate::total_bytes(g.day, &g.key);
        let _one_at_a_time = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch = self.db.batch();
        if let Some(id) = &g.request_id {
            let request_key = request_bytes(g.day, &g.key, id);
            let seen = self.requests.get(&request_key).map_err(|e| self.io(e))?;
            match seen.as_deref().and_then(Remembered::read) {
                Some(seen) if seen.granted && !seen.replayed => {
                    batch.remove(&self.requests, request_key);
                }
                // Never granted, released already, or given to a retry that
                // may have been allowed: the total stays.
                _ => return Ok(()),
            }
        }
        let total = self.total(&total_key)?;
        batch.insert(
            &self.totals,
            total_key,
            total.saturating_sub(g.amount).to_be_bytes(),
        );
        batch.commit().map_err(|e| self.io(e))
    }

    fn daily_total(&self, day: Day, key: &str) -> Result<u64, StateError> {
        self.total(&crate::total_bytes(day, key))
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        let _ = self.db.persist(fjall::PersistMode::SyncAll);
    }
}
