//! The host side of `bank:policy/state`: running totals per key and day,
//! behind one trait with an embedded store and Redis (`teller-state`).
//!
//! Engines answer a guest's `reserve` and `daily-total` imports through a
//! [`StateStore`]. A store error ends the guest's call with
//! `state_unavailable`: the guest never sees a made-up total, so the
//! transfer is refused (fail closed).
//!
//! Only allowed transfers count. A guest reserves only once its own rules
//! allow, but a set of policies may still deny, or the audit log may fail,
//! after it reserved. Every granted reservation made during a decision is
//! therefore written to that thread's [`Journal`] (all the guests of one
//! decision run on the thread that asked), and the server releases them
//! when the decision does not end in an allow.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use teller_contract::{DailyReservation, Error, ErrorCode, Reservation};

/// One calendar day at a UTC offset: what a daily total is kept for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Day {
    /// Days since 1970-01-01 at the offset.
    pub number: i64,
    /// Seconds until the day ends: how long a key must live at least.
    pub seconds_left: u64,
}

impl Day {
    /// Today at `offset_minutes` east of UTC, by this host's clock.
    pub fn today(offset_minutes: i32) -> Day {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        Day::at(now, offset_minutes)
    }

    /// The day `unix_seconds` falls in at `offset_minutes` east of UTC.
    pub fn at(unix_seconds: u64, offset_minutes: i32) -> Day {
        let local =
            i64::try_from(unix_seconds).unwrap_or(i64::MAX) + i64::from(offset_minutes) * 60;
        Day {
            number: local.div_euclid(86_400),
            seconds_left: u64::try_from(86_400 - local.rem_euclid(86_400)).unwrap_or(86_400),
        }
    }

    /// How long a key of this day is kept: to the day's end, and one more
    /// day for replicas whose clocks are a little behind.
    pub fn ttl_seconds(&self) -> u64 {
        self.seconds_left + 86_400
    }
}

/// A granted reservation, as the host needs it to take it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    pub day: Day,
    pub key: String,
    pub amount: u64,
    pub request_id: Option<String>,
}

/// What a store answered to a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reserved {
    pub answer: Reservation,
    /// The request id was seen before: this is its first answer again, and
    /// nothing was added (so nothing is taken back either).
    pub replayed: bool,
}

/// A store of daily totals, shared by every guest of a process (and, for
/// Redis, by every replica).
pub trait StateStore: Send + Sync {
    /// What `--state` named, for logs and metrics (`embedded`, `redis`).
    fn kind(&self) -> &'static str;

    /// Whether the store has answered since start-up: until then `/readyz`
    /// says starting, so a balancer routes nothing to a replica whose
    /// first decisions would wait for a connection.
    fn ready(&self) -> bool {
        true
    }

    /// Adds `r.amount` to `r.key`'s total for `day` if it stays within
    /// `r.limit`, atomically; a request id seen before with the same amount
    /// and limit gets its first answer again and adds nothing, one seen with
    /// another amount or limit is refused (an id is not a pass to replay a
    /// grant for a different transfer).
    fn reserve(&self, day: Day, r: &DailyReservation) -> Result<Reserved, StateError>;

    /// Takes back a granted reservation and forgets its request id (so a
    /// retry is decided afresh), unless a retry has already been given the
    /// grant: that retry may have been allowed, so the amount stays.
    fn release(&self, granted: &Granted) -> Result<(), StateError>;

    /// `key`'s total for `day`.
    fn daily_total(&self, day: Day, key: &str) -> Result<u64, StateError>;
}

/// The store could not answer: unreachable, too slow, or broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateError(pub String);

impl std::fmt::Display for StateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StateError {}

impl From<StateError> for Error {
    fn from(e: StateError) -> Error {
        state_unavailable(&e.0)
    }
}

/// What a store failure during a guest's call becomes: 503, fail closed.
pub fn state_unavailable(why: &str) -> Error {
    Error::new(
        teller_contract::Kind::Unavailable,
        ErrorCode::StateUnavailable,
        format!("the state store did not answer, so the transfer is not allowed: {why}"),
    )
}

/// The state a guest's imports reach: a store, or none (a process started
/// without one, such as `teller check`), which answers every call with
/// `state_unavailable`.
#[derive(Clone, Default)]
pub struct GuestState {
    store: Option<Arc<dyn StateStore>>,
}

impl GuestState {
    pub fn new(store: Arc<dyn StateStore>) -> Self {
        GuestState { store: Some(store) }
    }

    /// No store: every state call fails closed.
    pub fn none() -> Self {
        GuestState { store: None }
    }

    pub fn store(&self) -> Option<&Arc<dyn StateStore>> {
        self.store.as_ref()
    }

    fn get(&self) -> Result<&Arc<dyn StateStore>, StateError> {
        self.store
            .as_ref()
            .ok_or_else(|| StateError("this process was started without a state store".into()))
    }

    /// `state.reserve` for a guest: the day is the host's, a grant goes to
    /// the calling thread's journal.
    pub fn reserve(&self, r: &DailyReservation) -> Result<Reservation, StateError> {
        let store = self.get()?;
        let day = Day::today(r.day_offset_minutes);
        let Reserved { answer, replayed } = store.reserve(day, r)?;
        if answer.granted && !replayed {
            Journal::record(Granted {
                day,
                key: r.key.clone(),
                amount: r.amount,
                request_id: r.request_id.clone(),
            });
        }
        Ok(answer)
    }

    /// `state.daily-total` for a guest.
    pub fn daily_total(&self, key: &str, day_offset_minutes: i32) -> Result<u64, StateError> {
        self.get()?.daily_total(Day::today(day_offset_minutes), key)
    }
}

thread_local! {
    static JOURNAL: RefCell<Option<Vec<Granted>>> = const { RefCell::new(None) };
}

/// The reservations granted on this thread since [`Journal::begin`]: what
/// the server takes back when a decision does not end in an allow.
pub struct Journal(());

impl Journal {
    /// Starts recording this thread's grants (dropping any left over).
    pub fn begin() -> Journal {
        JOURNAL.with(|j| *j.borrow_mut() = Some(Vec::new()));
        Journal(())
    }

    /// The grants since `begin`, and stops recording.
    pub fn finish(self) -> Vec<Granted> {
        JOURNAL.with(|j| j.borrow_mut().take().unwrap_or_default())
    }

    fn record(granted: Granted) {
        JOURNAL.with(|j| {
            if let Some(list) = j.borrow_mut().as_mut() {
                list.push(granted);
            }
        });
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        JOURNAL.with(|j| j.borrow_mut().take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_turn_at_the_offset() {
        // 16:00 UTC is already the next day at +08:00.
        let t = 20_788 * 86_400 + 16 * 3600;
        let utc = Day::at(t, 0);
        let east = Day::at(t, 480);
        assert_eq!(east.number, utc.number + 1);
        assert_eq!(utc.seconds_left, 8 * 3600);
        assert_eq!(east.seconds_left, 86_400);
        let west = Day::at(t, -17 * 60);
        assert_eq!(west.number, utc.number - 1);
    }

    #[test]
    fn the_journal_keeps_only_this_decisions_grants() {
        Journal::record(grant("before"));
        let journal = Journal::begin();
        Journal::record(grant("a"));
        let other = std::thread::spawn(|| {
            Journal::record(grant("elsewhere"));
        });
        let _ = other.join();
        Journal::record(grant("b"));
        let keys: Vec<_> = journal.finish().into_iter().map(|g| g.key).collect();
        assert_eq!(keys, ["a", "b"]);
        Journal::record(grant("after"));
        assert!(Journal::begin().finish().is_empty());
    }

    fn grant(key: &str) -> Granted {
        Granted {
            day: Day::at(0, 0),
            key: key.into(),
            amount: 1,
            request_id: None,
        }
    }
}
