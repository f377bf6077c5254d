//! The sweeper on tokio's paused clock: messages go at their deadlines and not a millisecond
//! before, an earlier deadline wakes it, and a restart deletes what expired meanwhile.

use std::path::Path;

use sotto::client::clock::Clock;
use sotto::client::store::{Contact, Expired, Message, MessageKind, MessageState, Store};
use sotto::client::sweeper::{self, Deadlines};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const T0: u64 = 1_800_000_000_000;

fn store_with_bob(dir: &Path) -> Store {
    let store = Store::open(dir).unwrap();
    store
        .upsert_contact(
            &Contact {
                account_id: "bob-id".into(),
                handle: "bob".into(),
                identity_key: vec![5; 33],
                access_token: vec![0; 16],
                verified: false,
                key_changed: false,
                blocked: false,
            },
            0,
        )
        .unwrap();
    store
}

fn put(store: &Store, id: &str, expires_at: Option<u64>) {
    let m = Message {
        seq: 0,
        id: id.into(),
        contact: "bob".into(),
        secret: true,
        outgoing: true,
        text: format!("text of {id}"),
        sent_at: T0,
        state: MessageState::Sent,
        kind: MessageKind::Text,
        timer: expires_at.map(|e| ((e - T0) / 1000) as u32),
        expires_at,
        reply: None,
        reactions: Vec::new(),
        edited: false,
        deleted: false,
        attachment: None,
        author: None,
    };
    store.insert_message("bob-id", &m, T0).unwrap();
}

fn left(store: &Store) -> Vec<String> {
    store
        .history("bob-id", true, 100)
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect()
}

struct Running {
    expired: mpsc::Receiver<Vec<Expired>>,
    deadlines: Deadlines,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn start(dir: &Path, clock: Clock) -> Running {
    let (tx, rx) = mpsc::channel(16);
    let deadlines = Deadlines::default();
    let cancel = CancellationToken::new();
    let (d, c, dir) = (deadlines.clone(), cancel.clone(), dir.to_path_buf());
    let task = tokio::spawn(async move {
        sweeper::run(&dir, clock, d, tx, c).await.unwrap();
    });
    Running {
        expired: rx,
        deadlines,
        cancel,
        task,
    }
}

impl Running {
    /// The next sweep's deletions, and the clock's reading when they were reported.
    async fn next(&mut self, clock: &Clock) -> (Vec<String>, u64) {
        let gone = self.expired.recv().await.unwrap();
        (gone.into_iter().map(|e| e.id).collect(), clock.now_ms())
    }

    async fn stop(self) {
        self.cancel.cancel();
        self.task.await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn messages_disappear_at_their_deadlines_and_not_before() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store_with_bob(tmp.path());
    put(&store, "five-seconds", Some(T0 + 5_000));
    put(&store, "thirty-seconds", Some(T0 + 30_000));
    put(&store, "one-hour", Some(T0 + 3_600_000));
    put(&store, "no-timer", None);
    let clock = Clock::starting_at(T0);
    let mut sweeper = start(tmp.path(), clock);

    // The paused clock jumps straight to the sweeper's next sleep; each deletion must come
    // exactly at its deadline, with nothing else gone.
    let (gone, at) = sweeper.next(&clock).await;
    assert_eq!((gone, at), (vec!["five-seconds".to_string()], T0 + 5_000));
    assert_eq!(left(&store), ["thirty-seconds", "one-hour", "no-timer"]);
    let (gone, at) = sweeper.next(&clock).await;
    assert_eq!(
        (gone, at),
        (vec!["thirty-seconds".to_string()], T0 + 30_000)
    );
    let (gone, at) = sweeper.next(&clock).await;
    assert_eq!((gone, at), (vec!["one-hour".to_string()], T0 + 3_600_000));
    assert_eq!(left(&store), ["no-timer"]);
    sweeper.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_earlier_deadline_wakes_the_sleeping_sweeper() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store_with_bob(tmp.path());
    put(&store, "one-hour", Some(T0 + 3_600_000));
    let clock = Clock::starting_at(T0);
    let mut sweeper = start(tmp.path(), clock);
    // Let it settle into its one-hour sleep, then bring in something due much sooner.
    tokio::time::advance(std::time::Duration::from_secs(60)).await;
    put(&store, "ten-seconds", Some(T0 + 70_000));
    sweeper.deadlines.add(T0 + 70_000);
    let (gone, at) = sweeper.next(&clock).await;
    assert_eq!((gone, at), (vec!["ten-seconds".to_string()], T0 + 70_000));
    assert_eq!(left(&store), ["one-hour"]);
    // A later deadline reported meanwhile does not disturb the one it already has.
    sweeper.deadlines.add(T0 + 7_200_000);
    let (gone, at) = sweeper.next(&clock).await;
    assert_eq!((gone, at), (vec!["one-hour".to_string()], T0 + 3_600_000));
    sweeper.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_restart_after_expiry_deletes_at_startup() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store_with_bob(tmp.path());
    put(&store, "expired-while-away", Some(T0 + 5_000));
    put(&store, "also-expired", Some(T0 + 30_000));
    put(&store, "still-due", Some(T0 + 3_600_000));
    // The client starts again ten minutes later.
    let clock = Clock::starting_at(T0 + 600_000);
    let mut sweeper = start(tmp.path(), clock);
    let (mut gone, at) = sweeper.next(&clock).await;
    gone.sort();
    assert_eq!(gone, ["also-expired", "expired-while-away"]);
    assert_eq!(at, T0 + 600_000, "deleted at startup, before any sleep");
    assert_eq!(left(&store), ["still-due"]);
    sweeper.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_hundred_messages_due_at_once_go_in_one_sweep() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store_with_bob(tmp.path());
    for i in 0..100 {
        put(&store, &format!("m{i}"), Some(T0 + 5_000));
    }
    let clock = Clock::starting_at(T0);
    let mut sweeper = start(tmp.path(), clock);
    let (gone, at) = sweeper.next(&clock).await;
    assert_eq!((gone.len(), at), (100, T0 + 5_000));
    assert!(left(&store).is_empty());
    sweeper.stop().await;
}
