//! The relay store's conformance suite: one body per behaviour of `store::Directory`,
//! `store::Queue` and `store::BlobBytes`, run against every backend through `store::open` (see
//! `tests/relay_store.rs`, which instantiates it per backend with `store_suite!`).
//!
//! Each body gets a fresh, empty state (`Fixture`) and may open the stores on it more than
//! once, as a relay that restarts does.
#![allow(dead_code)]

use sotto::relay::QueueLimits;
use sotto::relay::quota::Quota;
use sotto::relay::store::{
    self, BlobRow, BlobSummary, Created, Database, Directory, Fetched, KEY_HISTORY, NewEnvelope,
    Origin, Outcome, Queue, Queued, StoreError, Stored, Stores,
};
use sotto::wire::{B64, KeyChangeVia, KeyUpload, PreKey, SignedKey};

/// A fresh relay state on one backend, and the data directory it opens in.
pub struct Fixture {
    pub db: Database,
    pub dir: tempfile::TempDir,
    /// What keeps the state alive, dropped last (a PostgreSQL test database).
    _keep: Option<Box<dyn std::any::Any>>,
}

impl Fixture {
    pub fn new(db: Database) -> Fixture {
        Fixture {
            db,
            dir: tempfile::tempdir().unwrap(),
            _keep: None,
        }
    }

    /// A fixture on `db`, which lives as long as `keep` does.
    pub fn keeping(db: Database, keep: impl std::any::Any) -> Fixture {
        Fixture {
            _keep: Some(Box::new(keep)),
            ..Fixture::new(db)
        }
    }

    /// Opens the stores, the queue holding new envelopes to `limits`.
    pub fn open_with(&self, limits: QueueLimits) -> Stores {
        store::open(&self.db, self.dir.path(), limits).unwrap()
    }

    pub fn open(&self) -> Stores {
        self.open_with(QueueLimits::default())
    }
}

/// Instantiates every body of the suite as a `#[test]` in a module `$backend`, each on a fresh
/// `Fixture` from `$factory: fn() -> Option<Fixture>` (None: the backend is not available
/// here, and the factory has printed why).
#[macro_export]
macro_rules! store_suite {
    ($backend:ident, $factory:expr) => {
        mod $backend {
            use super::store_suite as suite;
            $crate::store_suite!(@tests $factory;
                register_and_look_up,
                a_taken_handle_or_key_is_refused_and_creates_nothing,
                bundles_never_hand_out_a_one_time_key_twice,
                a_bundle_without_one_time_keys_leaves_the_pools_alone,
                rekey_replaces_the_keys_and_is_logged,
                key_history_hands_out_the_latest_changes_oldest_first,
                a_reset_is_claimed_once_with_the_right_code_before_expiry,
                the_prekey_cap_holds_and_a_replaced_id_counts_once,
                meta_entries_are_written_together_and_the_first_writer_wins,
                a_fan_out_is_queued_for_all_recipients_or_none,
                a_sealed_sender_cannot_probe_accounts_with_tokens,
                a_sealed_envelope_to_a_replaced_key_is_stale,
                each_quota_refuses_and_removal_makes_room,
                a_missing_recipient_is_refused_before_any_quota,
                ids_increase_per_recipient_and_are_never_given_out_again,
                a_staged_batch_is_invisible_until_committed,
                a_rolled_back_batch_leaves_nothing_and_frees_its_quota,
                pending_pages_by_id_with_sender_handles,
                deletion_takes_only_the_named_envelope,
                the_summary_counts_and_ranks_the_queue,
                blob_rows_keep_quotas_counts_and_stored_lengths,
                due_blobs_are_deleted_by_expiry_retention_and_abandonment,
                blob_bytes_are_written_resumed_read_within_bounds_and_removed,
                a_blobs_bytes_go_when_its_last_recipient_fetched_it,
            );
        }
    };
    (@tests $factory:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                if let Some(f) = $factory() {
                    suite::$name(&f);
                }
            }
        )*
    };
}

fn key(n: u8, id: u32) -> SignedKey {
    SignedKey {
        id,
        public: B64(vec![n; 33]),
        signature: B64(vec![n; 64]),
    }
}

/// Keys for an account whose identity key is `[n; 33]`, with `one_time` one-time keys of
/// each kind (ids 1..).
fn keys(n: u8, one_time: u32) -> KeyUpload {
    KeyUpload {
        identity_key: B64(vec![n; 33]),
        registration_id: u32::from(n),
        signed_prekey: key(n, 1),
        kyber_last_resort: key(n.wrapping_add(100), 999),
        one_time_prekeys: (1..=one_time)
            .map(|id| PreKey {
                id,
                public: B64(vec![n; 33]),
            })
            .collect(),
        one_time_kyber: (1..=one_time).map(|id| key(n, id)).collect(),
    }
}

const TOKEN: &[u8] = b"bob's access token";

/// Registers `name` (account id and handle alike) with identity key `[n; 33]`.
fn register(d: &mut dyn Directory, name: &str, n: u8) {
    d.register(name, name, &keys(n, 0), TOKEN, 1).unwrap();
}

fn normal(from: &str, to: &str, payload: &[u8]) -> NewEnvelope {
    NewEnvelope {
        recipient: to.into(),
        origin: Origin::Account {
            id: from.into(),
            handle: from.into(),
        },
        payload: payload.to_vec(),
        received_at: 7,
        expires_at: None,
    }
}

fn sealed(to: &str, token: &[u8], recipient_key: Option<Vec<u8>>) -> NewEnvelope {
    NewEnvelope {
        recipient: to.into(),
        origin: Origin::Sealed {
            access_token: token.to_vec(),
            recipient_key,
        },
        payload: b"sealed".to_vec(),
        received_at: 7,
        expires_at: None,
    }
}

/// Stages and commits one batch.
fn write(q: &mut dyn Queue, new: Vec<Vec<NewEnvelope>>, remove: &[(String, u64)]) -> Vec<Outcome> {
    let outcomes = q.stage(&new, remove).unwrap();
    q.commit().unwrap();
    outcomes
}

/// Queues `e` alone; what became of it.
fn send(q: &mut dyn Queue, e: NewEnvelope) -> Stored {
    match write(q, vec![vec![e]], &[]).remove(0) {
        Outcome::Queued(ids) => Stored::Queued(ids[0]),
        Outcome::Refused(why) => why[0].1,
    }
}

fn queued_id(s: Stored) -> u64 {
    match s {
        Stored::Queued(id) => id,
        other => panic!("not queued: {other:?}"),
    }
}

fn ids(d: &mut dyn Directory, who: &str) -> Vec<u64> {
    d.pending(who, 0, 1000)
        .unwrap()
        .iter()
        .map(|q| q.id)
        .collect()
}

pub fn register_and_look_up(f: &Fixture) {
    let mut s = f.open();
    let d = &mut *s.directory;
    d.register("id-bob", "bob", &keys(2, 3), TOKEN, 1).unwrap();
    let bob = d.account_by_id("id-bob").unwrap().unwrap();
    assert_eq!(bob.handle, "bob");
    assert_eq!(bob.identity_key, vec![2; 33]);
    assert_eq!(bob.registration_id, 2);
    assert_eq!(bob.access_token, TOKEN);
    assert_eq!(d.account_by_handle("bob").unwrap(), Some(bob));
    assert_eq!(d.account_by_handle("id-bob").unwrap(), None);
    assert_eq!(d.account_by_id("bob").unwrap(), None);
    assert_eq!(d.prekey_count("id-bob").unwrap(), (3, 3));
    assert_eq!(d.key_changes("id-bob").unwrap(), 0);
}

pub fn a_taken_handle_or_key_is_refused_and_creates_nothing(f: &Fixture) {
    let mut s = f.open();
    let d = &mut *s.directory;
    register(d, "bob", 2);
    let same_handle = d.register("other", "bob", &keys(3, 0), TOKEN, 1);
    assert!(
        matches!(&same_handle, Err(StoreError::HandleTaken(h)) if h == "bob"),
        "{same_handle:?}"
    );
    let same_key = d.register("carol", "carol", &keys(2, 0), TOKEN, 1);
    assert!(
        matches!(same_key, Err(StoreError::KeyTaken)),
        "{same_key:?}"
    );
    assert_eq!(d.account_by_id("other").unwrap(), None);
    assert_eq!(d.account_by_handle("carol").unwrap(), None);
    assert_eq!(
        d.account_by_handle("bob").unwrap().unwrap().account_id,
        "bob"
    );
}

pub fn bundles_never_hand_out_a_one_time_key_twice(f: &Fixture) {
    let mut s = f.open();
    let d = &mut *s.directory;
    let mut upload = keys(2, 0);
    upload.one_time_prekeys = [5, 3, 4]
        .map(|id| PreKey {
            id,
            public: B64(vec![id as u8; 33]),
        })
        .to_vec();
    upload.one_time_kyber = vec![key(9, 8), key(9, 7)];
    d.register("bob", "bob", &upload, TOKEN, 1).unwrap();
    let mut ec = Vec::new();
    let mut kyber = Vec::new();
    for _ in 0..4 {
        let b = d.take_bundle("bob", true).unwrap();
        assert_eq!(b.identity_key, B64(vec![2; 33]));
        assert_eq!(b.signed_prekey, upload.signed_prekey);
        ec.push(b.prekey.map(|k| k.id));
        kyber.push(b.kyber.id);
    }
    // Lowest id first, each once; then none, and the last-resort Kyber key.
    assert_eq!(ec, [Some(3), Some(4), Some(5), None]);
    assert_eq!(kyber, [7, 8, 999, 999]);
    assert_eq!(d.prekey_count("bob").unwrap(), (0, 0));
    assert!(matches!(
        d.take_bundle("nobody", true),
        Err(StoreError::NotFound)
    ));
}

pub fn a_bundle_without_one_time_keys_leaves_the_pools_alone(f: &Fixture) {
    let mut s = f.open();
    let d = &mut *s.directory;
    d.register("bob", "bob", &keys(2, 2), TOKEN, 1).unwrap();
    let b = d.take_bundle("bob", false).unwrap();
    assert_eq!(b.prekey, None);
    assert_eq!(b.kyber.id, 999);
    assert_eq!(d.prekey_count("bob").unwrap(), (2, 2));
}

pub fn rekey_replaces_the_keys_and_is_logged(f: &Fixture) {
    let mut s = f.open();
    let d = &mut *s.directory;
    d.register("bob", "bob", &keys(2, 3), TOKEN, 1).unwrap();
    register(d, "carol", 3);
    d.rekey(
        "bob",
        &keys(4, 1),
        KeyChangeVia::Rekey,
        Some(b"endorsed"),
        50,
    )
    .unwrap();
    let bob = d.account_by_id("bob").unwrap().unwrap();
    assert_eq!(bob.identity_key, vec![4; 33]);
    assert_eq!(bob.access_token, TOKEN);
    // The old one-time keys went with the old identity.
    assert_eq!(d.prekey_count("bob").unwrap(), (1, 1));
    assert_eq!(d.key_changes("bob").unwrap(), 1);
    let history = d.key_history("bob").unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].old_key, B64(vec![2; 33]));
    assert_eq!(history[0].new_key, B64(vec![4; 33]));
    assert_eq!(history[0].via, KeyChangeVia::Rekey);
    assert_eq!(history[0].endorsement, Some(B64(b"endorsed".to_vec())));
    assert_eq!(history[0].at, 50);
    // Another account's key, or no such account: refused, nothing changes.
    let taken = d.rekey("bob", &keys(3, 0), KeyChangeVia::Rekey, None, 60);
    assert!(matches!(taken, Err(StoreError::KeyTaken)), "{taken:?}");
    let missing = d.rekey("nobody", &keys(5, 0), KeyChangeVia::Rekey, None, 60);
    assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");
    assert_eq!(d.key_changes("bob").unwrap(), 1);
    assert_eq!(
        d.account_by_id("bob").unwrap().unwrap().identity_key,
        vec![4; 33]
    );
}

pub fn key_history_hands_out_the_latest_changes_oldest_first(f: &Fixture) {
    let mut s = f.open();
    let d = &mut *s.directory;
    register(d, "bob", 0);
    let changes = KEY_HISTORY as u8 + 3;
    for n in 1..=changes {
        d.rekey("bob", &keys(n, 0), KeyChangeVia::Rekey, None, u64::from(n))
            .unwrap();
    }
    assert_eq!(d.key_changes("bob").unwrap(), u64::from(changes));
    let history = d.key_history("bob").unwrap();
    let at: Vec<u64> = history.iter().map(|c| c.at).collect();
    let latest: Vec<u64> = (4..=u64::from(changes)).collect();
    assert_eq!(at, latest);
    assert_eq!(history.last().unwrap().new_key, B64(vec![changes; 33]));
    assert!(d.key_history("nobody").unwrap().is_empty());
}

pub fn a_reset_is_claimed_once_with_the_right_code_before_expiry(f: &Fixture) {
    let mut s = f.open();
    let d = &mut *s.directory;
    d.register("id-bob", "bob", &keys(2, 2), TOKEN, 1).unwrap();
    assert_eq!(d.arm_reset("nobody", b"code", 100).unwrap(), None);
    assert_eq!(
        d.arm_reset("bob", b"right code", 100).unwrap().as_deref(),
        Some("id-bob")
    );
    let new = keys(3, 1);
    // A guess, a prefix, the wrong handle: nothing changes.
    assert_eq!(d.claim_reset("bob", b"wrong code", &new, 10).unwrap(), None);
    assert_eq!(d.claim_reset("bob", b"right", &new, 10).unwrap(), None);
    assert_eq!(
        d.claim_reset("id-bob", b"right code", &new, 10).unwrap(),
        None
    );
    // The right code, too late.
    assert_eq!(
        d.claim_reset("bob", b"right code", &new, 101).unwrap(),
        None
    );
    assert_eq!(d.key_changes("id-bob").unwrap(), 0);
    assert_eq!(
        d.account_by_id("id-bob").unwrap().unwrap().identity_key,
        vec![2; 33]
    );
    // In time: the keys are replaced, and the change is a reset without endorsement.
    assert_eq!(
        d.claim_reset("bob", b"right code", &new, 100)
            .unwrap()
            .as_deref(),
        Some("id-bob")
    );
    let bob = d.account_by_id("id-bob").unwrap().unwrap();
    assert_eq!(bob.identity_key, vec![3; 33]);
    assert_eq!(d.prekey_count("id-bob").unwrap(), (1, 1));
    let history = d.key_history("id-bob").unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].via, KeyChangeVia::Reset);
    assert_eq!(history[0].endorsement, None);
    // Used once.
    assert_eq!(
        d.claim_reset("bob", b"right code", &keys(4, 0), 50)
            .unwrap(),
        None
    );
    assert_eq!(d.key_changes("id-bob").unwrap(), 1);
}

pub fn the_prekey_cap_holds_and_a_replaced_id_counts_once(f: &Fixture) {
    let mut s = f.open();
    let d = &mut *s.directory;
    d.register("bob", "bob", &keys(2, 3), TOKEN, 1).unwrap();
    let ec = |ids: std::ops::RangeInclusive<u32>| -> Vec<PreKey> {
        ids.map(|id| PreKey {
            id,
            public: B64(vec![1; 33]),
        })
        .collect()
    };
    // Up to the cap of 5.
    assert!(d.upload_prekeys("bob", &ec(4..=5), &[], 5).unwrap());
    assert_eq!(d.prekey_count("bob").unwrap(), (5, 3));
    // One more of either kind is refused whole.
    assert!(!d.upload_prekeys("bob", &ec(6..=6), &[], 5).unwrap());
    let kyber: Vec<SignedKey> = (10..=12).map(|id| key(1, id)).collect();
    assert!(!d.upload_prekeys("bob", &ec(1..=1), &kyber, 5).unwrap());
    assert_eq!(d.prekey_count("bob").unwrap(), (5, 3));
    // Ids already held are replaced, not counted again.
    assert!(d.upload_prekeys("bob", &ec(1..=5), &kyber[..2], 5).unwrap());
    assert_eq!(d.prekey_count("bob").unwrap(), (5, 5));
}

pub fn meta_entries_are_written_together_and_the_first_writer_wins(f: &Fixture) {
    let mut s = f.open();
    let d = &mut *s.directory;
    assert_eq!(d.meta("root").unwrap(), None);
    d.add_meta(&[("root", b"r"), ("cert", b"c")]).unwrap();
    // A second relay starting on the same database keeps the keys the first one wrote.
    d.add_meta(&[("root", b"r2"), ("cert", b"c2")]).unwrap();
    assert_eq!(d.meta("root").unwrap().as_deref(), Some(&b"r"[..]));
    assert_eq!(d.meta("cert").unwrap().as_deref(), Some(&b"c"[..]));
    // Another handle on the same state sees them (the relay's restart).
    let mut again = f.open();
    assert_eq!(
        again.directory.meta("cert").unwrap().as_deref(),
        Some(&b"c"[..])
    );
}

pub fn a_fan_out_is_queued_for_all_recipients_or_none(f: &Fixture) {
    let mut s = f.open();
    for (name, n) in [("alice", 1), ("bob", 2), ("carol", 3)] {
        register(&mut *s.directory, name, n);
    }
    let q = &mut *s.queue;
    let out = write(
        q,
        vec![
            vec![
                normal("alice", "bob", b"1"),
                normal("alice", "nobody", b"1"),
            ],
            vec![normal("alice", "bob", b"2"), normal("alice", "carol", b"2")],
            // Two stale copies: the sender learns both at once.
            vec![
                sealed("bob", TOKEN, Some(vec![9; 33])),
                sealed("carol", TOKEN, Some(vec![3; 33])),
                sealed("alice", TOKEN, Some(vec![8; 33])),
            ],
        ],
        &[],
    );
    assert_eq!(
        out[0],
        Outcome::Refused(vec![("nobody".into(), Stored::NoRecipient)])
    );
    let Outcome::Queued(both) = &out[1] else {
        panic!("{:?}", out[1]);
    };
    assert_eq!(both.len(), 2);
    assert!(both[0] < both[1]);
    assert_eq!(
        out[2],
        Outcome::Refused(vec![
            ("bob".into(), Stored::StaleKey),
            ("alice".into(), Stored::StaleKey),
        ])
    );
    let d = &mut *s.directory;
    assert_eq!(ids(d, "bob"), [both[0]]);
    assert_eq!(ids(d, "carol"), [both[1]]);
    assert!(ids(d, "alice").is_empty());
    let bob = d.pending("bob", 0, 10).unwrap();
    assert_eq!(bob[0].payload, b"2");
}

pub fn a_sealed_sender_cannot_probe_accounts_with_tokens(f: &Fixture) {
    let mut s = f.open();
    register(&mut *s.directory, "bob", 2);
    let q = &mut *s.queue;
    let guessed = send(q, sealed("bob", b"a guessed token", None));
    let missing = send(q, sealed("nobody", TOKEN, None));
    assert_eq!(guessed, Stored::NoRecipient);
    assert_eq!(missing, guessed);
    // Naming the right key does not help a wrong token, nor does a stale key tell it apart.
    assert_eq!(
        send(q, sealed("bob", b"a guessed token", Some(vec![2; 33]))),
        Stored::NoRecipient
    );
    assert_eq!(
        send(q, sealed("bob", b"a guessed token", Some(vec![7; 33]))),
        Stored::NoRecipient
    );
    let d = &mut *s.directory;
    assert_eq!(d.queued_for("bob").unwrap(), 0);
    // The online-only path answers alike.
    for (to, token) in [("bob", &b"a guessed token"[..]), ("nobody", TOKEN)] {
        let origin = sealed(to, token, None).origin;
        assert_eq!(d.refusal(to, &origin).unwrap(), Some(Stored::NoRecipient));
    }
    let normal_origin = normal("alice", "nobody", b"").origin;
    assert_eq!(
        d.refusal("nobody", &normal_origin).unwrap(),
        Some(Stored::NoRecipient)
    );
    assert_eq!(d.refusal("bob", &normal_origin).unwrap(), None);
    // With the token, it is queued, and the recipient is not told a sender.
    let id = queued_id(send(&mut *s.queue, sealed("bob", TOKEN, None)));
    let got = s.directory.pending("bob", 0, 10).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, id);
    assert!(got[0].sealed);
    assert_eq!(got[0].sender, None);
    assert_eq!(got[0].sender_handle, None);
}

pub fn a_sealed_envelope_to_a_replaced_key_is_stale(f: &Fixture) {
    let mut s = f.open();
    register(&mut *s.directory, "bob", 2);
    s.directory
        .rekey("bob", &keys(3, 0), KeyChangeVia::Rekey, None, 5)
        .unwrap();
    let q = &mut *s.queue;
    assert_eq!(
        send(q, sealed("bob", TOKEN, Some(vec![2; 33]))),
        Stored::StaleKey
    );
    queued_id(send(q, sealed("bob", TOKEN, Some(vec![3; 33]))));
    let origin = sealed("bob", TOKEN, Some(vec![2; 33])).origin;
    assert_eq!(
        s.directory.refusal("bob", &origin).unwrap(),
        Some(Stored::StaleKey)
    );
    assert_eq!(s.directory.queued_for("bob").unwrap(), 1);
}

pub fn each_quota_refuses_and_removal_makes_room(f: &Fixture) {
    let limits = QueueLimits {
        recipient_bytes: 100,
        recipient_envelopes: 3,
        sender_bytes: 1000,
        sender_envelopes: 2,
        sealed_bytes: 15,
        sealed_envelopes: 10,
    };
    let mut s = f.open_with(limits);
    for (name, n) in [("alice", 1), ("bob", 2), ("carol", 3), ("dave", 4)] {
        register(&mut *s.directory, name, n);
    }
    let q = &mut *s.queue;
    // The sender's quota: alice may have two envelopes waiting, over all recipients.
    let a1 = queued_id(send(q, normal("alice", "bob", b"x")));
    queued_id(send(q, normal("alice", "carol", b"x")));
    assert_eq!(
        send(q, normal("alice", "dave", b"x")),
        Stored::OverQuota(Quota::Sender)
    );
    // The recipient's: bob may have three, from anyone.
    queued_id(send(q, normal("carol", "bob", b"x")));
    queued_id(send(q, normal("dave", "bob", b"x")));
    assert_eq!(
        send(q, normal("carol", "bob", b"x")),
        Stored::OverQuota(Quota::Recipient)
    );
    // ...and in bytes.
    assert_eq!(
        send(q, normal("carol", "dave", &[0; 101])),
        Stored::OverQuota(Quota::Recipient)
    );
    // Sealed mail for one recipient: 15 bytes (each sealed payload here is 6).
    queued_id(send(q, sealed("dave", TOKEN, None)));
    queued_id(send(q, sealed("dave", TOKEN, None)));
    assert_eq!(
        send(q, sealed("dave", TOKEN, None)),
        Stored::OverQuota(Quota::Sealed)
    );
    // Alice's first envelope delivered: she may send again, bob has room for one.
    write(q, Vec::new(), &[("bob".into(), a1)]);
    queued_id(send(q, normal("alice", "dave", b"x")));
    assert_eq!(
        send(q, normal("alice", "bob", b"x")),
        Stored::OverQuota(Quota::Sender)
    );
    queued_id(send(q, normal("carol", "bob", b"x")));
    // The totals are counted again when the queue is opened again.
    drop(s);
    let mut s = f.open_with(limits);
    assert_eq!(
        send(&mut *s.queue, normal("alice", "carol", b"x")),
        Stored::OverQuota(Quota::Sender)
    );
    assert_eq!(
        send(&mut *s.queue, sealed("dave", TOKEN, None)),
        Stored::OverQuota(Quota::Recipient)
    );
}

pub fn a_missing_recipient_is_refused_before_any_quota(f: &Fixture) {
    let limits = QueueLimits {
        sender_envelopes: 1,
        ..QueueLimits::default()
    };
    let mut s = f.open_with(limits);
    register(&mut *s.directory, "alice", 1);
    register(&mut *s.directory, "bob", 2);
    let q = &mut *s.queue;
    queued_id(send(q, normal("alice", "bob", b"x")));
    assert_eq!(
        send(q, normal("alice", "bob", b"x")),
        Stored::OverQuota(Quota::Sender)
    );
    assert_eq!(
        send(q, normal("alice", "nobody", b"x")),
        Stored::NoRecipient
    );
}

pub fn ids_increase_per_recipient_and_are_never_given_out_again(f: &Fixture) {
    let mut s = f.open();
    register(&mut *s.directory, "alice", 1);
    register(&mut *s.directory, "bob", 2);
    let q = &mut *s.queue;
    let out = write(
        q,
        vec![
            vec![normal("alice", "bob", b"1")],
            vec![normal("bob", "alice", b"1")],
            vec![normal("alice", "bob", b"2")],
        ],
        &[],
    );
    let first: Vec<u64> = out
        .iter()
        .map(|o| match o {
            Outcome::Queued(ids) => ids[0],
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(first[0] < first[2], "{first:?}");
    // A batch whose ids may have been handed over, then rolled back: its ids stay used.
    let staged = q.stage(&[vec![normal("alice", "bob", b"3")]], &[]).unwrap();
    let Outcome::Queued(lost) = &staged[0] else {
        panic!("{staged:?}");
    };
    q.rollback();
    let next = queued_id(send(q, normal("alice", "bob", b"4")));
    assert!(next > lost[0], "{next} after {lost:?}");
    // Everything delivered and deleted; a restarted relay goes on above every id used.
    let all: Vec<(String, u64)> = [("bob", first[0]), ("alice", first[1]), ("bob", first[2])]
        .into_iter()
        .chain([("bob", next)])
        .map(|(to, id)| (to.to_string(), id))
        .collect();
    write(q, Vec::new(), &all);
    assert_eq!(s.directory.queued_for("bob").unwrap(), 0);
    drop(s);
    let mut s = f.open();
    let after = queued_id(send(&mut *s.queue, normal("alice", "bob", b"5")));
    assert!(after > next, "{after} after {next}");
    assert_eq!(ids(&mut *s.directory, "bob"), [after]);
}

pub fn a_staged_batch_is_invisible_until_committed(f: &Fixture) {
    let mut s = f.open();
    register(&mut *s.directory, "alice", 1);
    register(&mut *s.directory, "bob", 2);
    let old = queued_id(send(&mut *s.queue, normal("alice", "bob", b"old")));
    let staged = s
        .queue
        .stage(
            &[vec![normal("alice", "bob", b"new")]],
            &[("bob".into(), old)],
        )
        .unwrap();
    let Outcome::Queued(new) = &staged[0] else {
        panic!("{staged:?}");
    };
    // Neither the new envelope nor the deletion shows before the commit.
    assert_eq!(ids(&mut *s.directory, "bob"), [old]);
    s.queue.commit().unwrap();
    assert_eq!(ids(&mut *s.directory, "bob"), [new[0]]);
    // Committing twice is a caller's bug, told as such.
    assert!(matches!(s.queue.commit(), Err(StoreError::NoBatch)));
}

pub fn a_rolled_back_batch_leaves_nothing_and_frees_its_quota(f: &Fixture) {
    let limits = QueueLimits {
        recipient_envelopes: 1,
        ..QueueLimits::default()
    };
    let mut s = f.open_with(limits);
    register(&mut *s.directory, "alice", 1);
    register(&mut *s.directory, "bob", 2);
    let q = &mut *s.queue;
    q.stage(&[vec![normal("alice", "bob", b"lost")]], &[])
        .unwrap();
    q.rollback();
    // Rolling back with nothing open does nothing.
    q.rollback();
    assert_eq!(s.directory.queued_for("bob").unwrap(), 0);
    let kept = queued_id(send(&mut *s.queue, normal("alice", "bob", b"kept")));
    let got = s.directory.pending("bob", 0, 10).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].id, got[0].payload.as_slice()), (kept, &b"kept"[..]));
    // And a rolled-back deletion leaves the envelope and its place in the quota.
    s.queue.stage(&[], &[("bob".into(), kept)]).unwrap();
    s.queue.rollback();
    assert_eq!(
        send(&mut *s.queue, normal("alice", "bob", b"x")),
        Stored::OverQuota(Quota::Recipient)
    );
    assert_eq!(ids(&mut *s.directory, "bob"), [kept]);
}

pub fn pending_pages_by_id_with_sender_handles(f: &Fixture) {
    let mut s = f.open();
    s.directory
        .register("id-alice", "alice", &keys(1, 0), TOKEN, 1)
        .unwrap();
    register(&mut *s.directory, "bob", 2);
    let q = &mut *s.queue;
    let mut sent = Vec::new();
    for n in 0..5u8 {
        let mut e = normal("id-alice", "bob", &[n]);
        e.origin = Origin::Account {
            id: "id-alice".into(),
            handle: "alice".into(),
        };
        e.expires_at = (n == 4).then_some(99);
        sent.push(queued_id(send(q, e)));
    }
    let sealed_id = queued_id(send(q, sealed("bob", TOKEN, None)));
    let d = &mut *s.directory;
    let page = d.pending("bob", 0, 2).unwrap();
    assert_eq!(page.iter().map(|q| q.id).collect::<Vec<_>>(), sent[..2]);
    assert_eq!(
        page[0],
        Queued {
            id: sent[0],
            sender: Some("id-alice".into()),
            sender_handle: Some("alice".into()),
            sealed: false,
            payload: vec![0],
            received_at: 7,
            expires_at: None,
        }
    );
    let rest = d.pending("bob", sent[1], 100).unwrap();
    let rest_ids: Vec<u64> = rest.iter().map(|q| q.id).collect();
    assert_eq!(rest_ids, [sent[2], sent[3], sent[4], sealed_id]);
    // Expired or not, an envelope is handed out: the caller decides.
    assert_eq!(rest[2].expires_at, Some(99));
    assert!(d.pending("bob", sealed_id, 100).unwrap().is_empty());
    assert!(d.pending("id-alice", 0, 100).unwrap().is_empty());
}

pub fn deletion_takes_only_the_named_envelope(f: &Fixture) {
    let mut s = f.open();
    register(&mut *s.directory, "alice", 1);
    register(&mut *s.directory, "bob", 2);
    let q = &mut *s.queue;
    let to_bob = queued_id(send(q, normal("alice", "bob", b"1")));
    let to_alice = queued_id(send(q, normal("bob", "alice", b"1")));
    // Someone else's id, an id never given out, the same one twice: passed over.
    write(
        q,
        Vec::new(),
        &[
            ("alice".into(), to_bob),
            ("bob".into(), to_alice + 100),
            ("bob".into(), to_bob),
            ("bob".into(), to_bob),
        ],
    );
    let d = &mut *s.directory;
    assert_eq!(d.queued_for("bob").unwrap(), 0);
    assert_eq!(d.queued_for("alice").unwrap(), 1);
    assert_eq!(ids(d, "alice"), [to_alice]);
    assert_eq!(d.queued_for("nobody").unwrap(), 0);
}

pub fn the_summary_counts_and_ranks_the_queue(f: &Fixture) {
    let mut s = f.open();
    for (name, n) in [("alice", 1), ("bob", 2), ("carol", 3)] {
        register(&mut *s.directory, name, n);
    }
    let q = &mut *s.queue;
    send(q, normal("alice", "bob", &[0; 10]));
    send(q, normal("alice", "carol", &[0; 10]));
    send(q, normal("carol", "bob", &[0; 5]));
    send(q, sealed("carol", TOKEN, None));
    let sum = s.directory.queue_summary(5).unwrap();
    assert_eq!((sum.envelopes, sum.bytes, sum.sealed), (4, 31, 1));
    assert_eq!(
        sum.top_senders,
        [("alice".to_string(), 2, 20), ("carol".to_string(), 1, 5)]
    );
    assert_eq!(
        sum.top_recipients,
        [("carol".to_string(), 2, 16), ("bob".to_string(), 2, 15)]
    );
    let top = s.directory.queue_summary(1).unwrap();
    assert_eq!(top.top_senders.len(), 1);
    assert_eq!(top.top_recipients, [("carol".to_string(), 2, 16)]);
}

fn blob(id: &str, owner: &str, size: u64, recipients: u32, created_at: u64) -> BlobRow {
    BlobRow {
        id: id.into(),
        owner: owner.into(),
        size,
        stored: 0,
        recipients_left: recipients,
        expires_at: None,
        created_at,
    }
}

pub fn blob_rows_keep_quotas_counts_and_stored_lengths(f: &Fixture) {
    let mut s = f.open();
    let d = &mut *s.directory;
    assert_eq!(
        d.create_blob(&blob("a", "bob", 60, 2, 1), 2, 100).unwrap(),
        Created::Yes
    );
    // Over the owner's bytes, then over its count; another owner is not held to bob's.
    assert_eq!(
        d.create_blob(&blob("b", "bob", 41, 1, 1), 2, 100).unwrap(),
        Created::TooManyBytes(60)
    );
    assert_eq!(
        d.create_blob(&blob("b", "bob", 40, 0, 1), 2, 100).unwrap(),
        Created::Yes
    );
    assert_eq!(
        d.create_blob(&blob("c", "bob", 1, 1, 1), 2, 100).unwrap(),
        Created::TooMany(2)
    );
    assert_eq!(
        d.create_blob(&blob("c", "carol", 1, 1, 1), 2, 100).unwrap(),
        Created::Yes
    );
    assert_eq!(d.blob("c").unwrap(), Some(blob("c", "carol", 1, 1, 1)));
    // Stored lengths move only from the length the writer saw.
    assert!(d.record_stored("a", 0, 30).unwrap());
    assert!(!d.record_stored("a", 0, 60).unwrap());
    assert!(d.record_stored("a", 30, 60).unwrap());
    assert!(!d.record_stored("gone", 0, 1).unwrap());
    assert!(d.blob("a").unwrap().unwrap().complete());
    let mut lengths = d.blob_lengths().unwrap();
    lengths.sort();
    assert_eq!(
        lengths,
        [
            ("a".to_string(), 60),
            ("b".to_string(), 0),
            ("c".to_string(), 0)
        ]
    );
    assert_eq!(
        d.blob_summary().unwrap(),
        BlobSummary {
            blobs: 3,
            bytes: 60,
            incomplete: 2,
        }
    );
    // Two recipients: the second fetch is the last. Uncounted fetches never are.
    assert_eq!(d.blob_fetched("a").unwrap(), Fetched::Counted);
    assert_eq!(d.blob("a").unwrap().unwrap().recipients_left, 1);
    assert_eq!(d.blob_fetched("a").unwrap(), Fetched::Last);
    assert_eq!(d.blob("a").unwrap(), None);
    assert_eq!(d.blob_fetched("a").unwrap(), Fetched::NotFound);
    for _ in 0..3 {
        assert_eq!(d.blob_fetched("b").unwrap(), Fetched::Counted);
    }
    d.delete_blob("b").unwrap();
    d.delete_blob("b").unwrap();
    assert_eq!(d.blob("b").unwrap(), None);
    // Bob's room is back.
    assert_eq!(
        d.create_blob(&blob("d", "bob", 100, 1, 1), 2, 100).unwrap(),
        Created::Yes
    );
}

pub fn due_blobs_are_deleted_by_expiry_retention_and_abandonment(f: &Fixture) {
    let mut s = f.open();
    let d = &mut *s.directory;
    let rows = [
        // (id, created_at, expires_at, complete)
        ("expired", 500, Some(1000), true),
        ("not-yet", 500, Some(1001), true),
        ("old", 100, None, true),
        ("abandoned", 300, None, false),
        ("uploading", 301, None, false),
    ];
    for (id, created_at, expires_at, complete) in rows {
        let row = BlobRow {
            expires_at,
            ..blob(id, "bob", 10, 1, created_at)
        };
        assert_eq!(d.create_blob(&row, 10, 1000).unwrap(), Created::Yes);
        if complete {
            assert!(d.record_stored(id, 0, 10).unwrap());
        }
    }
    let mut due = d.delete_due_blobs(1000, 100, 300).unwrap();
    due.sort();
    assert_eq!(due, ["abandoned", "expired", "old"]);
    let mut left: Vec<String> = d
        .blob_lengths()
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    left.sort();
    assert_eq!(left, ["not-yet", "uploading"]);
    assert!(d.delete_due_blobs(1000, 100, 300).unwrap().is_empty());
}

/// A blob id as the relay makes them (the file backend takes no other).
fn blob_id(n: u8) -> String {
    format!("{n:032x}")
}

/// Bytes that differ at every position, so bytes served from the wrong offset show.
fn bytes_of(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 251) as u8).collect()
}

pub fn blob_bytes_are_written_resumed_read_within_bounds_and_removed(f: &Fixture) {
    let chunk = sotto::wire::MAX_BLOB_CHUNK as usize;
    let want = bytes_of(2 * chunk + 700);
    let id = blob_id(1);
    {
        let Stores {
            mut directory,
            blobs,
            ..
        } = f.open();
        let row = blob(&id, "bob", want.len() as u64, 1, 1);
        assert_eq!(
            directory.create_blob(&row, 10, 1 << 30).unwrap(),
            Created::Yes
        );
        blobs.create(&id).unwrap();
        assert_eq!(blobs.read_at(&id, 0, 10).unwrap(), b"");
        blobs.write_at(&id, 0, &want[..1000]).unwrap();
        assert!(directory.record_stored(&id, 0, 1000).unwrap());
        // Fewer bytes than asked for only at the end of what was written.
        assert_eq!(blobs.read_at(&id, 0, 5000).unwrap(), &want[..1000]);
        assert_eq!(blobs.read_at(&id, 400, 100).unwrap(), &want[400..500]);
        // A chunk written but not recorded when the relay died.
        blobs.write_at(&id, 1000, &[0xee; 300]).unwrap();
    }
    // The relay starts again, its bytes matched to its rows, and the upload resumes at what
    // was recorded, with a chunk longer than the unrecorded one, then one longer than a
    // chunk of the wire.
    let Stores {
        mut directory,
        blobs,
        ..
    } = f.open();
    let rows = directory.blob_lengths().unwrap().into_iter().collect();
    assert_eq!(blobs.reconcile(&rows).unwrap(), Vec::<String>::new());
    assert_eq!(directory.blob(&id).unwrap().unwrap().stored, 1000);
    assert_eq!(blobs.read_at(&id, 0, 1000).unwrap(), &want[..1000]);
    blobs.write_at(&id, 1000, &want[1000..chunk]).unwrap();
    blobs.write_at(&id, chunk as u64, &want[chunk..]).unwrap();
    assert!(
        directory
            .record_stored(&id, 1000, want.len() as u64)
            .unwrap()
    );
    // Every read is the bytes at its offset: across the resumed chunk's start, across
    // chunk boundaries, and as a download reads it, a chunk of the wire at a time.
    assert_eq!(blobs.read_at(&id, 990, 20).unwrap(), &want[990..1010]);
    assert_eq!(
        blobs.read_at(&id, chunk as u64 - 5, 10).unwrap(),
        &want[chunk - 5..chunk + 5]
    );
    let mut got = Vec::new();
    while got.len() < want.len() {
        let more = blobs.read_at(&id, got.len() as u64, chunk).unwrap();
        assert!(!more.is_empty(), "no bytes at {}", got.len());
        got.extend_from_slice(&more);
    }
    assert_eq!(got, want);
    assert_eq!(blobs.read_at(&id, want.len() as u64, 10).unwrap(), b"");
    // Removed, nothing of it is served; removing again is no error.
    blobs.remove(&id).unwrap();
    assert!(blobs.read_at(&id, 0, 10).map_or(true, |b| b.is_empty()));
    blobs.remove(&id).unwrap();
}

pub fn a_blobs_bytes_go_when_its_last_recipient_fetched_it(f: &Fixture) {
    let Stores {
        mut directory,
        blobs,
        ..
    } = f.open();
    let (gone, kept) = (blob_id(2), blob_id(3));
    for id in [&gone, &kept] {
        let row = blob(id, "bob", 100, 1, 1);
        assert_eq!(
            directory.create_blob(&row, 10, 1 << 30).unwrap(),
            Created::Yes
        );
        blobs.create(id).unwrap();
        blobs.write_at(id, 0, &bytes_of(100)).unwrap();
        assert!(directory.record_stored(id, 0, 100).unwrap());
    }
    // As the relay does on the last recipient's fetch: the row, then the bytes.
    assert_eq!(directory.blob_fetched(&gone).unwrap(), Fetched::Last);
    blobs.remove(&gone).unwrap();
    assert!(blobs.read_at(&gone, 0, 100).map_or(true, |b| b.is_empty()));
    assert_eq!(blobs.read_at(&kept, 0, 100).unwrap(), bytes_of(100));
    // A start finds nothing to drop, and the other blob whole.
    let rows = directory.blob_lengths().unwrap().into_iter().collect();
    assert_eq!(blobs.reconcile(&rows).unwrap(), Vec::<String>::new());
    assert_eq!(blobs.read_at(&kept, 0, 100).unwrap(), bytes_of(100));
}
