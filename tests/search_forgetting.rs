//! The search index forgets as the messages do: a text found by search that expires, is
//! deleted or is edited can no longer be found, and its words are in no byte of the profile's
//! files (database, WAL, free pages), the index's own tables included. The same raw-byte
//! search as the disappearing-message tests (tests/disappearing.rs).

mod common;

use std::path::Path;

use common::{Scene, any_file_contains, expired, search, set_timer};
use sotto::client::manager::{Command, Event};
use sotto::client::search::Query;
use sotto::client::store::{Contact, Message, MessageKind, MessageState, Store};

/// Ordinary words for the texts around the marker; none starts like a marker ("qz"), so the
/// index stores the marker whole (FTS5 stores a term after its neighbour's shared prefix).
const WORDS: &[&str] = &[
    "the", "a", "meeting", "lunch", "tomorrow", "is", "at", "noon", "see", "you", "there", "bring",
    "the", "slides", "train", "late", "again", "sorry", "coffee", "later", "call", "me", "when",
    "free", "weekend", "plans", "hiking", "rain", "maybe", "cinema", "book", "finished", "chapter",
    "seven", "deadline", "friday", "review", "draft", "thanks", "ok",
];

fn bob() -> Contact {
    Contact {
        account_id: "bob-id".into(),
        handle: "bob".into(),
        identity_key: vec![5; 33],
        access_token: vec![0; 16],
        verified: false,
        key_changed: false,
        blocked: false,
    }
}

fn text_message(i: u64, text: String, expires_at: Option<u64>) -> Message {
    Message {
        seq: 0,
        id: format!("m{i}"),
        contact: "bob".into(),
        secret: i.is_multiple_of(2),
        outgoing: false,
        text,
        sent_at: 1_700_000_000_000 + i,
        state: MessageState::Received,
        kind: MessageKind::Text,
        timer: expires_at.map(|_| 60),
        expires_at,
        reply: None,
        reactions: Vec::new(),
        edited: false,
        deleted: false,
        attachment: None,
        author: None,
    }
}

/// A text of eight words picked by a fixed sequence, so every run builds the same index.
fn filler(i: u64) -> String {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..8)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            WORDS[(x % WORDS.len() as u64) as usize]
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether the index's own pages (its `_data` shadow table) hold `marker`.
fn index_holds(store: &Store, marker: &str) -> bool {
    let mut st = store
        .conn()
        .prepare("SELECT block FROM messages_fts_data")
        .unwrap();
    let blocks: Vec<Vec<u8>> = st
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    blocks
        .iter()
        .any(|b| common::contains(b, marker.as_bytes()))
}

fn found(store: &Store, word: &str) -> Vec<String> {
    store
        .search(&Query::parse(word).unwrap(), None, 100)
        .unwrap()
        .into_iter()
        .map(|h| h.message.id)
        .collect()
}

/// How the marker's text goes.
#[derive(Debug, Clone, Copy)]
enum Gone {
    /// Its timer runs out and the sweeper's deletion takes it.
    Expiry,
    /// Its timer runs out with those of a thousand others, taken in one sweep (the index
    /// forgets them all in one merge: `store::search::BULK_DELETE`).
    BulkExpiry,
    /// The row is deleted (as a contact's removal, or a deletion of one message, does).
    Deletion,
    /// Its text is replaced (as an edit does).
    Edit,
}

/// Builds a store of a few thousand texts, the marker among them (stored as a running client
/// stores each message: one commit each, so the index merges segments over it), checks the
/// marker is found and is on disk, makes it go `how`, and returns the files that still hold
/// it: with the store open (its WAL live), then closed.
fn forgotten(how: Gone, marker: &str, secure_delete: bool) -> (bool, Vec<String>, Vec<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = Store::open(dir).unwrap();
    store.reserve_wal().unwrap();
    store.upsert_contact(&bob(), 0).unwrap();
    if !secure_delete {
        store
            .conn()
            .execute(
                "INSERT INTO messages_fts(messages_fts, rank) VALUES ('secure-delete', 0)",
                [],
            )
            .unwrap();
    }
    let tx = store.conn().unchecked_transaction().unwrap();
    for i in 0..3_000 {
        store
            .insert_message("bob-id", &text_message(i, filler(i), None), 0)
            .unwrap();
    }
    tx.commit().unwrap();
    let due = 1_800_000_000_000;
    for i in 3_000..3_200 {
        let m = if i == 3_100 {
            text_message(i, format!("see you at {marker} tomorrow"), Some(due))
        } else {
            text_message(i, filler(i), None)
        };
        store.insert_message("bob-id", &m, 0).unwrap();
    }
    if let Gone::BulkExpiry = how {
        store
            .conn()
            .execute(
                "UPDATE messages SET expires_at = ?1 WHERE seq % 3 = 0",
                [due as i64],
            )
            .unwrap();
    }
    for i in 3_200..3_210 {
        let m = text_message(i, filler(i), None);
        store.insert_message("bob-id", &m, 0).unwrap();
    }
    assert_eq!(found(&store, marker), ["m3100"]);
    assert!(index_holds(&store, marker), "the index holds the word");
    assert!(
        !any_file_contains(dir, marker.as_bytes()).is_empty(),
        "the marker is on disk before it goes"
    );

    match how {
        Gone::Expiry => {
            let gone = store.delete_expired(due).unwrap();
            assert_eq!(gone.len(), 1);
        }
        Gone::BulkExpiry => {
            let gone = store.delete_expired(due).unwrap();
            assert!(
                gone.len() > sotto::client::store::BULK_DELETE,
                "{}",
                gone.len()
            );
            assert_eq!(
                found(&store, "thanks").len(),
                100,
                "the others are still found"
            );
        }
        Gone::Deletion => {
            store
                .conn()
                .execute("DELETE FROM messages WHERE id = 'm3100'", [])
                .unwrap();
            store.truncate_wal().unwrap();
        }
        Gone::Edit => {
            store
                .conn()
                .execute(
                    "UPDATE messages SET text = 'see you thursday' WHERE id = 'm3100'",
                    [],
                )
                .unwrap();
            store.truncate_wal().unwrap();
            assert_eq!(found(&store, "thursday"), ["m3100"]);
        }
    }
    assert_eq!(found(&store, marker), Vec::<String>::new(), "{how:?}");
    assert_eq!(found(&store, &marker[..6]), Vec::<String>::new(), "{how:?}");
    let in_index = index_holds(&store, marker);
    let running = any_file_contains(dir, marker.as_bytes());
    drop(store);
    (in_index, running, any_file_contains(dir, marker.as_bytes()))
}

fn assert_forgotten(how: Gone, marker: &str) {
    let (in_index, running, stopped) = forgotten(how, marker, true);
    assert!(!in_index, "{how:?}: the index still holds it");
    assert_eq!(running, Vec::<String>::new(), "{how:?}: on disk while open");
    assert_eq!(
        stopped,
        Vec::<String>::new(),
        "{how:?}: on disk after closing"
    );
}

#[test]
fn an_expired_text_leaves_no_trace_in_the_index_or_the_files() {
    assert_forgotten(Gone::Expiry, "qzexpiry5e1f0a");
}

#[test]
fn texts_expiring_by_the_thousand_leave_no_trace_in_the_index_or_the_files() {
    assert_forgotten(Gone::BulkExpiry, "qzbulk61c0de");
}

#[test]
fn a_deleted_text_leaves_no_trace_in_the_index_or_the_files() {
    assert_forgotten(Gone::Deletion, "qzdeleted77c2b9");
}

#[test]
fn an_edited_text_leaves_no_trace_of_its_old_words() {
    assert_forgotten(Gone::Edit, "qzedited0d94e3");
}

#[test]
fn without_fts5_secure_delete_the_same_deletion_leaves_the_word_in_the_index() {
    // The control for the three tests above: the byte search does see what the index keeps
    // when it only marks a deletion, the way FTS5 does by default.
    let marker = "qzcontrol3a6f18";
    let (in_index, running, stopped) = forgotten(Gone::Deletion, marker, false);
    assert!(in_index, "the index kept the word under a delete marker");
    assert_eq!(running, ["sotto.db"]);
    assert_eq!(stopped, ["sotto.db"]);
}

/// Whether any file of the profile in `dir` holds `marker`.
fn on_disk(dir: &Path, marker: &str) -> Vec<String> {
    any_file_contains(dir, marker.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bob_finds_a_disappearing_message_until_it_expires_and_then_no_file_holds_it() {
    let marker = "qzendtoend4b7c1d";
    let scene = Scene::new().await;
    let (mut alice, mut bob) = scene.online().await;
    set_timer(&mut alice, true, Some(5)).await;
    let id = alice
        .send("bob", true, &format!("the code is {marker}"))
        .await;
    let m = loop {
        let m = bob.receive().await;
        if m.kind == MessageKind::Text {
            break m;
        }
    };
    assert_eq!(m.id, id);
    for thread in [None, Some(("alice", true))] {
        let hits = search(&mut bob, "CODE qzendtoend", thread).await.unwrap();
        assert_eq!(hits.len(), 1, "{thread:?}");
        assert_eq!(
            (
                hits[0].message.id.as_str(),
                hits[0].message.contact.as_str()
            ),
            (id.as_str(), "alice")
        );
        assert_eq!(hits[0].snippet, format!("the code is {marker}"));
    }
    // The other thread of the same contact does not have it.
    assert!(
        search(&mut bob, marker, Some(("alice", false)))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        !on_disk(&scene.bob, marker).is_empty(),
        "stored before it expires"
    );

    bob.handle
        .commands
        .send(Command::MarkShown {
            ids: vec![id.clone()],
        })
        .await
        .unwrap();
    expired(&mut bob, &id).await;
    assert!(search(&mut bob, marker, None).await.unwrap().is_empty());
    expired(&mut alice, &id).await;
    alice.barrier().await;
    bob.barrier().await;
    for dir in [&scene.alice, &scene.bob] {
        assert_eq!(on_disk(dir, marker), Vec::<String>::new(), "while running");
    }
    alice.stop();
    bob.stop();
    for dir in [&scene.alice, &scene.bob] {
        assert_eq!(on_disk(dir, marker), Vec::<String>::new(), "after stopping");
    }
    scene.relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_of_punctuation_or_of_a_stranger_is_refused_with_a_reason() {
    let scene = Scene::new().await;
    let (alice, mut bob) = scene.online().await;
    let e = search(&mut bob, "?! …", None).await.unwrap_err();
    assert_eq!(e, "type at least one letter or digit to search for");
    let e = search(&mut bob, "hello", Some(("mallory", false)))
        .await
        .unwrap_err();
    assert!(e.contains("\"mallory\" is not among your contacts"), "{e}");
    alice.stop();
    bob.stop();
    scene.relay.stop().await;
}

/// Waits until the relay has the change `id` that `cmd` makes.
async fn change(c: &mut common::Client, id: &str, cmd: Command) {
    c.handle.commands.send(cmd).await.unwrap();
    c.expect(|e| matches!(e, Event::MessageState { id: i, .. } if i == id))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_and_a_deletion_for_everyone_leave_the_old_words_in_no_search_and_no_file() {
    let (edited, deleted) = ("qzeditmark5e1f", "qzdelmark9a2b");
    let scene = Scene::new().await;
    let (mut alice, mut bob) = scene.online().await;
    for (marker, how) in [(edited, "edit"), (deleted, "delete")] {
        let target = alice.send("bob", true, &format!("meet at {marker}")).await;
        assert_eq!(bob.receive().await.id, target);
        for c in [&mut alice, &mut bob] {
            assert_eq!(search(c, marker, None).await.unwrap().len(), 1, "{how}");
        }
        let id = uuid::Uuid::new_v4().to_string();
        let cmd = match how {
            "edit" => Command::Edit {
                id: id.clone(),
                contact: "bob".into(),
                secret: true,
                target,
                text: "meet at the station".into(),
            },
            _ => Command::Delete {
                id: id.clone(),
                contact: "bob".into(),
                secret: true,
                target,
                for_everyone: true,
            },
        };
        change(&mut alice, &id, cmd).await;
        bob.expect(|e| matches!(e, Event::MessageChanged { .. }))
            .await;
        for c in [&mut alice, &mut bob] {
            assert!(search(c, marker, None).await.unwrap().is_empty(), "{how}");
        }
    }
    // The edited text is found by its new words.
    assert_eq!(search(&mut bob, "station", None).await.unwrap().len(), 1);
    alice.barrier().await;
    bob.barrier().await;
    for marker in [edited, deleted] {
        for dir in [&scene.alice, &scene.bob] {
            assert_eq!(on_disk(dir, marker), Vec::<String>::new(), "while running");
        }
    }
    alice.stop();
    bob.stop();
    for marker in [edited, deleted] {
        for dir in [&scene.alice, &scene.bob] {
            assert_eq!(on_disk(dir, marker), Vec::<String>::new(), "after stopping");
        }
    }
    scene.relay.stop().await;
}
