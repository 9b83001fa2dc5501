#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use super::*;
use teller_contract::DailyReservation;
use teller_engine::state::Granted;

fn reservation(key: &str, amount: u64, id: Option<&str>) -> DailyReservation {
    DailyReservation {
        key: key.into(),
        amount,
        limit: 1_000,
        day_offset_minutes: 0,
        request_id: id.map(str::to_string),
    }
}

#[test]
fn the_embedded_store_grants_up_to_the_limit_and_replays_retries() {
    let dir = tempfile::tempdir().unwrap();
    let store = Embedded::open(dir.path()).unwrap();
    let day = Day::today(0);
    let r = store
        .reserve(day, &reservation("A", 600, Some("r1")))
        .unwrap();
    assert!(r.answer.granted && !r.replayed && r.answer.total == 600);
    // The same request again: the same answer, nothing added.
    let again = store
        .reserve(day, &reservation("A", 600, Some("r1")))
        .unwrap();
    assert!(again.answer.granted && again.replayed && again.answer.total == 600);
    // The same id for another amount or limit is refused, not replayed.
    let reused = store
        .reserve(day, &reservation("A", 1, Some("r1")))
        .unwrap();
    assert!(!reused.answer.granted && !reused.replayed);
    let mut other_limit = reservation("A", 600, Some("r1"));
    other_limit.limit = 5_000;
    assert!(!store.reserve(day, &other_limit).unwrap().answer.granted);
    let over = store
        .reserve(day, &reservation("A", 401, Some("r2")))
        .unwrap();
    assert!(!over.answer.granted && over.answer.total == 600);
    // A refused request is refused again, even once room is made.
    let fits = store.reserve(day, &reservation("A", 400, None)).unwrap();
    assert!(fits.answer.granted && fits.answer.total == 1_000);
    assert_eq!(store.daily_total(day, "A").unwrap(), 1_000);
    // Other keys and other days are apart.
    assert_eq!(store.daily_total(day, "C").unwrap(), 0);
    let tomorrow = Day {
        number: day.number + 1,
        ..day
    };
    assert!(
        store
            .reserve(tomorrow, &reservation("A", 1_000, None))
            .unwrap()
            .answer
            .granted
    );
    // A grant given to a retry is not taken back: the retry may have been
    // allowed while its first try failed.
    let r1 = Granted {
        day,
        key: "A".into(),
        amount: 600,
        request_id: Some("r1".into()),
    };
    store.release(&r1).unwrap();
    assert_eq!(store.daily_total(day, "A").unwrap(), 1_000);
    // One not retried is released once, however often it is asked.
    let b = store
        .reserve(day, &reservation("B", 300, Some("b1")))
        .unwrap();
    assert!(b.answer.granted);
    let b1 = Granted {
        day,
        key: "B".into(),
        amount: 300,
        request_id: Some("b1".into()),
    };
    store.release(&b1).unwrap();
    store.release(&b1).unwrap();
    assert_eq!(store.daily_total(day, "B").unwrap(), 0);
    // Released, the request is decided afresh.
    let r = store
        .reserve(day, &reservation("B", 300, Some("b1")))
        .unwrap();
    assert!(r.answer.granted && !r.replayed && r.answer.total == 300);
}

#[test]
fn the_embedded_store_keeps_totals_across_a_reopen_and_locks_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let day = Day::today(0);
    let old = Day::at(20_000 * 86_400, 0);
    {
        let store = Embedded::open(dir.path()).unwrap();
        store
            .reserve(day, &reservation("A", 700, Some("x")))
            .unwrap();
        store.reserve(old, &reservation("A", 5, Some("x"))).unwrap();
        let second = Embedded::open(dir.path()).err().unwrap();
        assert!(second.0.contains("another teller process"), "{second}");
    }
    let store = Embedded::open(dir.path()).unwrap();
    assert_eq!(store.daily_total(day, "A").unwrap(), 700);
    assert!(
        store
            .reserve(day, &reservation("A", 700, Some("x")))
            .unwrap()
            .replayed
    );
    // Days long over are dropped when the store opens.
    assert_eq!(store.daily_total(old, "A").unwrap(), 0);
    assert!(
        !store
            .reserve(old, &reservation("A", 5, Some("x")))
            .unwrap()
            .replayed
    );
}

#[test]
fn concurrent_reservations_never_pass_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let store = Embedded::open(dir.path()).unwrap();
    let day = Day::today(0);
    let granted: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let store = store.clone();
                s.spawn(move || {
                    (0..100)
                        .filter(|i| {
                            let id = format!("{t}-{i}");
                            store
                                .reserve(day, &reservation("A", 7, Some(&id)))
                                .unwrap()
                                .answer
                                .granted
                        })
                        .count() as u64
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(granted, 1_000 / 7);
    assert_eq!(store.daily_total(day, "A").unwrap(), granted * 7);
}

#[test]
fn urls_that_name_no_store_are_refused() {
    for (url, says) in [
        ("postgres://db", "not a state store"),
        ("rediss://r:6380", "TLS"),
        ("file:", "needs a directory"),
        ("redis://:secret@[::1", "redis://***@[::1"),
    ] {
        let e = open(url, Duration::from_millis(50)).err().unwrap();
        assert_eq!(e.code, ErrorCode::StateInvalid);
        assert!(e.message.contains(says), "{url}: {}", e.message);
        assert!(!e.message.contains("secret"), "{}", e.message);
    }
    assert_eq!(redact("redis://:pw@host:6379/0"), "redis://***@host:6379/0");
    assert_eq!(redact("redis://host:6379"), "redis://host:6379");
}

#[test]
fn day_keys_sort_by_day() {
    assert!(day_bytes(-1) < day_bytes(0));
    assert!(day_bytes(0) < day_bytes(1));
    assert!(day_bytes(20_000) < day_bytes(20_001));
}
