//! The relay with its state in PostgreSQL, beyond what the end-to-end suites check on each
//! backend (chat.rs, durability.rs, disappearing.rs through `on_each_backend!`): a bad
//! database URL is refused saying what to check, and two relays' queue writers on one
//! database (as two `sotto relay` processes) neither deadlock, nor let a reader's cursor skip
//! an envelope, nor pass a quota together. Each test gets a database of its own on the server
//! `SOTTO_TEST_POSTGRES_URL` names, and is skipped, saying so, without one.

mod common;

use std::time::Instant;

use common::PATIENCE;
use common::pg::TestDb;
use sotto::relay::QueueLimits;
use sotto::relay::certs::Authority;
use sotto::relay::quota::Quota;
use sotto::relay::store::{self, Database, NewEnvelope, Origin, Outcome, Stored, Stores};
use sotto::wire::{B64, KeyUpload, SignedKey};

/// Runs `sotto relay` on a fresh data directory with `--database value`; it must fail at
/// start. Returns what it said.
fn relay_refuses(value: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::cli::BIN)
        .args(["relay", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path())
        .args(["--database", value])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "sotto relay --database {value} started"
    );
    assert!(out.stdout.is_empty(), "it announced itself listening");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn a_bad_database_url_or_an_unreachable_server_says_what_to_check() {
    let err = relay_refuses("mysql://sotto@localhost/sotto");
    assert!(
        err.contains("must be `sqlite` or a PostgreSQL URL such as postgres://"),
        "{err}"
    );
    // No server has a socket in a directory that does not exist. The password must not be
    // repeated in the message (it may end up in a log or a bug report).
    let err = relay_refuses("postgres://sotto:hunter2@%2Fnonexistent-sotto-dir:5432/relay");
    assert!(err.contains("cannot connect to PostgreSQL"), "{err}");
    assert!(
        err.contains("host /nonexistent-sotto-dir, port 5432, user sotto, database relay"),
        "{err}"
    );
    assert!(err.contains("check that the server is running"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    let err = relay_refuses("postgres://sotto:hunter2@localhost:notaport/relay");
    assert!(
        err.contains("is not a PostgreSQL connection string"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}

/// The stores of one relay on `db`: each call is another relay's connections.
fn relay_stores(db: &Database, limits: QueueLimits) -> Stores {
    let dir = tempfile::tempdir().unwrap();
    store::open(db, dir.path(), limits).unwrap()
}

/// Registers `names` (account id and handle alike), identity key `[n; 33]` for the n-th.
fn register_all(db: &Database, names: &[&str]) {
    let mut d = relay_stores(db, QueueLimits::default()).directory;
    for (n, name) in names.iter().enumerate() {
        let key = |k: u8| SignedKey {
            id: 1,
            public: B64(vec![k; 33]),
            signature: B64(vec![k; 64]),
        };
        let keys = KeyUpload {
            identity_key: B64(vec![n as u8 + 1; 33]),
            registration_id: 1,
            signed_prekey: key(1),
            kyber_last_resort: key(2),
            one_time_prekeys: Vec::new(),
            one_time_kyber: Vec::new(),
        };
        d.register(name, name, &keys, b"token", 0).unwrap();
    }
}

fn from_to(from: &str, to: &str, text: String) -> NewEnvelope {
    NewEnvelope {
        recipient: to.into(),
        origin: Origin::Account {
            id: from.into(),
            handle: from.into(),
        },
        payload: text.into_bytes(),
        received_at: 1,
        expires_at: None,
    }
}

#[test]
fn two_relays_queueing_together_never_deadlock_nor_let_a_cursor_skip_an_envelope() {
    let Some(pg) = TestDb::create(
        "two_relays_queueing_together_never_deadlock_nor_let_a_cursor_skip_an_envelope",
    ) else {
        return;
    };
    let db = pg.relay_config().database;
    register_all(&db, &["alice", "dave", "bob", "carol"]);
    const BATCHES: usize = 150;
    // Relay A fans out to bob then carol, relay B to carol then bob, each also deleting what
    // it queued two batches before: without locks taken in one order, each would wait for
    // the other's recipient (a deadlock PostgreSQL breaks by failing one), and without ids
    // taken under the recipient's lock, one could commit a lower id after the other's
    // higher one, which a reader already past it would never read.
    let writer = |sender: &'static str, order: [&'static str; 2]| {
        let db = db.clone();
        std::thread::spawn(move || {
            let mut q = relay_stores(&db, QueueLimits::default()).queue;
            let mut ids = Vec::new();
            let carol = order.iter().position(|to| *to == "carol").unwrap();
            for i in 0..BATCHES {
                let unit: Vec<_> = order
                    .iter()
                    .map(|to| from_to(sender, to, format!("{sender} {i}")))
                    .collect();
                let remove: Vec<(String, u64)> = match ids.len().checked_sub(4) {
                    Some(at) => vec![("carol".to_string(), ids[at + carol])],
                    None => Vec::new(),
                };
                let outcomes = q.stage(&[unit], &remove).unwrap();
                q.commit().unwrap();
                match &outcomes[0] {
                    Outcome::Queued(got) => ids.extend(got),
                    refused => panic!("refused: {refused:?}"),
                }
            }
            ids
        })
    };
    let a = writer("alice", ["bob", "carol"]);
    let b = writer("dave", ["carol", "bob"]);
    // A reader as the push cursor reads: only what is above the last id it saw.
    let mut reader = relay_stores(&db, QueueLimits::default()).directory;
    let (mut cursor, mut seen) = (0, Vec::new());
    let deadline = Instant::now() + PATIENCE;
    loop {
        // Once both writers are done (or failed), a read that finds nothing new is the end.
        let done = a.is_finished() && b.is_finished();
        let page = reader.pending("bob", cursor, 64).unwrap();
        for q in &page {
            cursor = q.id;
            seen.push(q.id);
        }
        if seen.len() >= 2 * BATCHES || (done && page.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "the writers never finished");
        std::thread::yield_now();
    }
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    // Bob's copies are the first of each of A's units and the second of each of B's.
    let mut bobs: Vec<u64> = a
        .iter()
        .step_by(2)
        .chain(b.iter().skip(1).step_by(2))
        .copied()
        .collect();
    bobs.sort_unstable();
    assert_eq!(seen, bobs, "the cursor skipped an envelope");
    assert_eq!(reader.queued_for("bob").unwrap(), 2 * BATCHES as u64);
}

#[test]
fn a_quota_holds_for_senders_spread_over_two_relays() {
    let Some(pg) = TestDb::create("a_quota_holds_for_senders_spread_over_two_relays") else {
        return;
    };
    let db = pg.relay_config().database;
    register_all(&db, &["alice", "dave", "bob"]);
    let limits = QueueLimits {
        recipient_envelopes: 50,
        ..QueueLimits::default()
    };
    // Two senders flood bob through two relays at once, 40 envelopes each.
    let flood = |sender: &'static str| {
        let db = db.clone();
        std::thread::spawn(move || {
            let mut q = relay_stores(&db, limits).queue;
            (0..40)
                .map(|i| {
                    let e = from_to(sender, "bob", format!("{sender} {i}"));
                    let outcome = q.stage(&[vec![e]], &[]).unwrap().remove(0);
                    q.commit().unwrap();
                    outcome
                })
                .collect::<Vec<_>>()
        })
    };
    let (a, b) = (flood("alice"), flood("dave"));
    let outcomes: Vec<Outcome> = a
        .join()
        .unwrap()
        .into_iter()
        .chain(b.join().unwrap())
        .collect();
    let queued = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Queued(_)))
        .count();
    let full = outcomes
        .iter()
        .filter(
            |o| matches!(o, Outcome::Refused(r) if r[0].1 == Stored::OverQuota(Quota::Recipient)),
        )
        .count();
    assert_eq!((queued, full), (50, 30));
    let mut d = relay_stores(&db, limits).directory;
    assert_eq!(d.queued_for("bob").unwrap(), 50);
}

#[test]
fn a_relay_connects_again_after_postgres_closed_its_connections() {
    let Some(pg) = TestDb::create("a_relay_connects_again_after_postgres_closed_its_connections")
    else {
        return;
    };
    let db = pg.relay_config().database;
    register_all(&db, &["alice", "bob"]);
    let Stores {
        mut directory,
        mut queue,
        ..
    } = relay_stores(&db, QueueLimits::default());
    // As a server restart does: every connection but the one doing it is ended.
    let mut admin = postgres::Client::connect(&pg.url, postgres::NoTls).unwrap();
    let ended = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .unwrap();
    assert_eq!(
        ended.len(),
        2,
        "the directory's and the queue's connections"
    );
    // The call that meets the closed connection fails; the next one has connected again.
    let first = directory.account_by_handle("bob");
    assert!(first.is_err(), "{first:?}");
    assert!(directory.account_by_handle("bob").unwrap().is_some());
    let e = from_to("alice", "bob", "after the restart".into());
    assert!(queue.stage(&[vec![e.clone()]], &[]).is_err());
    queue.rollback();
    let outcomes = queue.stage(&[vec![e]], &[]).unwrap();
    queue.commit().unwrap();
    assert!(matches!(outcomes[0], Outcome::Queued(_)), "{outcomes:?}");
    assert_eq!(directory.queued_for("bob").unwrap(), 1);
}

#[test]
fn relays_starting_together_on_an_empty_database_serve_one_trust_root() {
    let Some(pg) =
        TestDb::create("relays_starting_together_on_an_empty_database_serve_one_trust_root")
    else {
        return;
    };
    let db = pg.relay_config().database;
    // Eight relays' first starts, let go at once: each finds no keys and makes its own.
    let n = 8;
    let gate = std::sync::Barrier::new(n);
    let roots: Vec<Vec<u8>> = std::thread::scope(|s| {
        let starts: Vec<_> = (0..n)
            .map(|_| {
                let mut d = relay_stores(&db, QueueLimits::default()).directory;
                let gate = &gate;
                s.spawn(move || {
                    gate.wait();
                    let authority = Authority::load_or_create(&mut *d).unwrap();
                    authority.trust_root().serialize().to_vec()
                })
            })
            .collect();
        starts.into_iter().map(|t| t.join().unwrap()).collect()
    });
    // Every one serves the trust root that was kept: a client registered through any of
    // them accepts the sender certificates of all.
    let kept = relay_stores(&db, QueueLimits::default())
        .directory
        .meta("trust_root_public")
        .unwrap()
        .unwrap();
    for root in &roots {
        assert_eq!(root, &kept);
    }
}

#[test]
fn a_relay_that_listens_anew_looks_up_the_sign_ins_it_may_have_missed() {
    let Some(pg) =
        TestDb::create("a_relay_that_listens_anew_looks_up_the_sign_ins_it_may_have_missed")
    else {
        return;
    };
    let db = pg.relay_config().database;
    register_all(&db, &["carol", "dave"]);
    let mut d = relay_stores(&db, QueueLimits::default()).directory;
    // carol's connection here signed in first; then she signed in again elsewhere, while
    // this relay was not listening. dave's connection here is his latest.
    let here = d.sign_in("carol").unwrap().unwrap();
    let elsewhere = d.sign_in("carol").unwrap().unwrap();
    let dave = d.sign_in("dave").unwrap().unwrap();
    assert!(here < elsewhere);
    let (tx, rx) = std::sync::mpsc::channel();
    let bus = relay_stores(&db, QueueLimits::default()).bus;
    let seats = vec![("carol".to_string(), here), ("dave".to_string(), dave)];
    let _listening = bus.listen(
        Box::new(move |heard| tx.send(heard).unwrap()),
        Box::new(move || seats.clone()),
    );
    let next = || rx.recv_timeout(PATIENCE).expect("nothing heard in time");
    assert_eq!(next(), store::Heard::Missed);
    // The later sign-in is heard as if its word had arrived; dave's connection stays.
    assert_eq!(
        next(),
        store::Heard::SignedIn {
            account: "carol".into(),
            seq: elsewhere
        }
    );
    // From now on sign-ins are heard as they happen (the first word after the look-up).
    let again = d.sign_in("dave").unwrap().unwrap();
    assert_eq!(
        next(),
        store::Heard::SignedIn {
            account: "dave".into(),
            seq: again
        }
    );
}
