//! The relay with its state in PostgreSQL, end to end: alice and bob chat in both modes
//! through it, and a relay killed and started again on the same database delivers what was
//! queued before, once. Each test gets a database of its own on the server
//! `SOTTO_TEST_POSTGRES_URL` names, and is skipped, saying so, without one.

mod common;

use std::path::Path;

use common::pg::TestDb;
use common::{Client, Scene, TestRelay};
use sotto::client::manager::Event;
use sotto::relay::store::Database;

/// Envelopes waiting at the relay (state in `db`) for the profile in `profile`.
async fn queued_for(relay_dir: &Path, db: &Database, profile: &Path) -> u64 {
    let id = common::account_id(profile);
    common::relay_directory(relay_dir, db, move |d| d.queued_for(&id).unwrap()).await
}

/// Drains a freshly started client's backlog; returns the texts that arrived as new.
async fn drain(c: &mut Client) -> Vec<String> {
    let mut texts = Vec::new();
    loop {
        match c
            .expect(|e| matches!(e, Event::Message(_) | Event::Drained))
            .await
        {
            Event::Message(m) => texts.push(m.text),
            _ => return texts,
        }
    }
}

fn texts(dir: &Path, peer: &str, secret: bool) -> Vec<(bool, String)> {
    common::history(dir, peer, secret)
        .into_iter()
        .map(|m| (m.outgoing, m.text))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alice_and_bob_chat_in_both_modes_through_a_relay_on_postgres() {
    let Some(pg) = TestDb::create("alice_and_bob_chat_in_both_modes_through_a_relay_on_postgres")
    else {
        return;
    };
    let scene = Scene::with(pg.relay_config()).await;
    let (mut alice, mut bob) = scene.online().await;

    alice.send("bob", false, "hi bob").await;
    assert_eq!(bob.receive().await.text, "hi bob");
    bob.send("alice", false, "hi alice").await;
    assert_eq!(alice.receive().await.text, "hi alice");
    // The first secret message takes one of bob's one-time prekeys from the directory in
    // PostgreSQL; the answer rides the ratchet back.
    alice.send("bob", true, "secret one").await;
    let m = bob.receive().await;
    assert_eq!((m.secret, m.text.as_str()), (true, "secret one"));
    bob.send("alice", true, "secret two").await;
    let m = alice.receive().await;
    assert_eq!((m.secret, m.text.as_str()), (true, "secret two"));
    alice.barrier().await;
    bob.barrier().await;

    assert_eq!(
        texts(&scene.bob, "alice", false),
        [(false, "hi bob".into()), (true, "hi alice".into())]
    );
    assert_eq!(
        texts(&scene.bob, "alice", true),
        [(false, "secret one".into()), (true, "secret two".into())]
    );
    let db = pg.relay_config().database;
    let bob_id = common::account_id(&scene.bob);
    let (prekeys, bob_known) = common::relay_directory(&scene.relay_dir, &db, move |d| {
        (
            d.prekey_count(&bob_id).unwrap(),
            d.account_by_id(&bob_id).unwrap().is_some(),
        )
    })
    .await;
    // Exactly one of bob's bundles was taken, from the directory the relay keeps there.
    assert!(bob_known);
    assert_eq!(prekeys, (99, 99));
    alice.stop();
    bob.stop();
    // Nothing of the state went to a SQLite file in the relay's data directory.
    assert!(!scene.relay_dir.join("relay.db").exists());
    scene.relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_restarted_on_the_same_database_delivers_what_was_queued_before() {
    let Some(pg) =
        TestDb::create("a_relay_restarted_on_the_same_database_delivers_what_was_queued_before")
    else {
        return;
    };
    let Scene {
        relay_dir: rd,
        alice: ad,
        bob: bd,
        relay,
        tmp: _tmp,
    } = Scene::with(pg.relay_config()).await;
    let db = pg.relay_config().database;
    let mut alice = Client::start(&ad, &relay.url).await;
    alice.send("bob", true, "survives a crash").await;
    alice.send("bob", false, "so does this").await;
    alice.stop();
    // Accepted (`ok` came back), not delivered (bob is offline): now the relay dies hard.
    assert_eq!(queued_for(&rd, &db, &bd).await, 2);
    let addr = relay.addr();
    relay.kill().await;

    let relay = TestRelay::start_at(&rd, &addr, pg.relay_config()).await;
    let mut bob = Client::start(&bd, &relay.url).await;
    let mut got = drain(&mut bob).await;
    got.sort();
    assert_eq!(got, ["so does this", "survives a crash"]);
    bob.barrier().await;
    bob.stop();
    assert_eq!(queued_for(&rd, &db, &bd).await, 0);

    // A second run finds nothing new, and bob holds each message once.
    let mut bob = Client::start(&bd, &relay.url).await;
    assert_eq!(drain(&mut bob).await, Vec::<String>::new());
    bob.stop();
    assert_eq!(
        texts(&bd, "alice", true),
        [(false, "survives a crash".into())]
    );
    assert_eq!(texts(&bd, "alice", false), [(false, "so does this".into())]);
    assert!(!rd.join("relay.db").exists());
    relay.stop().await;
}

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
