//! Several relays on one PostgreSQL, as an operator runs them behind a TCP load balancer:
//! each with its own data directory, all serving the same TLS certificate files. alice on
//! relay A and bob on relay B chat in both modes, each message arriving once and in order,
//! receipts and typing indicators too; a file alice sends through A is saved by bob through
//! B, and a relay starting while an upload through another is half done leaves it to finish;
//! a newer sign-in on one relay ends the older connection on the other;
//! and relay A, a `sotto relay` process, killed with SIGKILL in the middle of alice's stream
//! while the load balancer (a test forwarder) sends her to B: every message alice was told
//! the relay stored reaches bob exactly once, in order. Each test gets a database of its own
//! on the server `SOTTO_TEST_POSTGRES_URL` names, and is skipped, saying so, without one.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::files::{attach, file_state, ready, receive_file, save};
use common::pg::TestDb;
use common::{Client, Raw, TestRelay};
use sotto::client::manager::{Command, Event};
use sotto::client::store::MessageState;
use sotto::tls::{CERT_FILE, KEY_FILE};
use sotto::wire::{B64, ClientFrame, ErrorCode, MAX_BLOB_CHUNK, RelayFrame};

/// Gives relay data directory `to` the TLS certificate files of `from`, as an operator gives
/// every relay behind one address the same certificate: a client pins one fingerprint.
fn share_certificate(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in [CERT_FILE, KEY_FILE] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

/// bob's side of his thread with alice, as he sees it: (outgoing, text), oldest first.
fn bobs_thread(bob: &Path, secret: bool) -> Vec<(bool, String)> {
    common::history(bob, "alice", secret)
        .into_iter()
        .map(|m| (m.outgoing, m.text))
        .collect()
}

/// Relays A and B on one fresh PostgreSQL database, each with its own data directory and
/// both serving the same certificate files (B gets A's).
struct TwoRelays {
    pg: TestDb,
    tmp: tempfile::TempDir,
    a: TestRelay,
    b: TestRelay,
}

impl TwoRelays {
    /// None, having said why, when no PostgreSQL is configured.
    async fn start(test: &str) -> Option<TwoRelays> {
        let pg = TestDb::create(test)?;
        let tmp = tempfile::tempdir().unwrap();
        let (dir_a, dir_b) = (tmp.path().join("relay-a"), tmp.path().join("relay-b"));
        let a = TestRelay::start_with(&dir_a, pg.relay_config()).await;
        share_certificate(&dir_a, &dir_b);
        let b = TestRelay::start_with(&dir_b, pg.relay_config()).await;
        assert_eq!(a.fingerprint, b.fingerprint);
        Some(TwoRelays { pg, tmp, a, b })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// alice registered through A and online there, bob through B: the accounts are in the
    /// one database.
    async fn alice_on_a_bob_on_b(&self) -> (Client, Client) {
        let (alice_dir, bob_dir) = (self.path("alice"), self.path("bob"));
        common::register(&alice_dir, "alice", &self.a.url).await;
        common::register(&bob_dir, "bob", &self.b.url).await;
        let alice = Client::start(&alice_dir, &self.a.url).await;
        let bob = Client::start(&bob_dir, &self.b.url).await;
        (alice, bob)
    }

    async fn stop(self) {
        self.a.stop().await;
        self.b.stop().await;
    }
}

/// Waits until bob has received `n` messages from alice; returns their texts in arrival order.
async fn receive_n(bob: &mut Client, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < n {
        got.push(bob.receive().await.text);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alice_on_one_relay_and_bob_on_another_chat_in_both_modes_once_and_in_order() {
    let Some(two) = TwoRelays::start(
        "alice_on_one_relay_and_bob_on_another_chat_in_both_modes_once_and_in_order",
    )
    .await
    else {
        return;
    };
    let (mut alice, mut bob) = two.alice_on_a_bob_on_b().await;
    let bob_dir = two.path("bob");

    for secret in [false, true] {
        let sent: Vec<String> = (0..15)
            .map(|i| format!("{} {i}", if secret { "secret" } else { "normal" }))
            .collect();
        for text in &sent {
            alice.send("bob", secret, text).await;
        }
        // Committed on A, pushed by B, which holds bob's connection.
        assert_eq!(receive_n(&mut bob, sent.len()).await, sent);
        let got_them = bob.send("alice", secret, "got them").await;
        let m = alice.receive().await;
        assert_eq!((m.secret, m.text.as_str()), (secret, "got them"));
        // alice's receipt, committed on A, reaches bob on B too.
        bob.expect(|e| {
            matches!(e, Event::MessageState { id, state: MessageState::Delivered } if *id == got_them)
        })
        .await;
        // So does her typing indicator, which no relay queues.
        alice
            .handle
            .commands
            .send(Command::Typing {
                to: "bob".into(),
                secret,
                active: true,
            })
            .await
            .unwrap();
        bob.expect(|e| {
            matches!(e, Event::Typing { contact, secret: s, active: true }
                if contact == "alice" && *s == secret)
        })
        .await;
    }
    alice.barrier().await;
    bob.barrier().await;
    for secret in [false, true] {
        let thread = bobs_thread(&bob_dir, secret);
        let word = if secret { "secret" } else { "normal" };
        let mut want: Vec<(bool, String)> =
            (0..15).map(|i| (false, format!("{word} {i}"))).collect();
        want.push((true, "got them".into()));
        // Once each, in order: nothing pushed twice by the two relays.
        assert_eq!(thread, want);
    }
    // Nothing is left queued: every delivery was acked to the relay that made it.
    let bob_id = common::account_id(&bob_dir);
    let db = two.pg.relay_config().database;
    let left =
        common::relay_directory(&two.a.dir, &db, move |d| d.queued_for(&bob_id).unwrap()).await;
    assert_eq!(left, 0);
    alice.stop();
    bob.stop();
    two.stop().await;
}

/// Bytes that differ from chunk to chunk, so a chunk served from the wrong offset shows.
fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 1000) as u8).collect()
}

/// Nothing of a blob is in a relay's data directory: on PostgreSQL its bytes are in the
/// database the relays share.
fn no_blob_files(relay_dir: &Path) -> bool {
    std::fs::read_dir(relay_dir.join(sotto::relay::blobs::DIR))
        .map_or(true, |mut d| d.next().is_none())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_alice_sends_through_one_relay_is_saved_by_bob_through_another() {
    let Some(two) =
        TwoRelays::start("a_file_alice_sends_through_one_relay_is_saved_by_bob_through_another")
            .await
    else {
        return;
    };
    let (mut alice, mut bob) = two.alice_on_a_bob_on_b().await;

    // Several chunks of the wire, the last one short.
    let want = content(3 * MAX_BLOB_CHUNK as usize + 1000);
    let original = two.path("report.bin");
    std::fs::write(&original, &want).unwrap();
    let id = attach(&mut alice, "bob", false, &original, Some("the report")).await;
    // Uploaded through A.
    file_state(&mut alice, &id, ready).await;
    let m = receive_file(&mut bob).await;
    assert_eq!(
        (m.id.as_str(), m.text.as_str()),
        (id.as_str(), "the report")
    );
    // Downloaded through B.
    file_state(&mut bob, &id, ready).await;
    let saved = save(&mut bob, &id, &two.path("saved.bin")).await.unwrap();
    assert_eq!(std::fs::read(&saved).unwrap(), want);
    assert!(no_blob_files(&two.a.dir) && no_blob_files(&two.b.dir));
    alice.stop();
    bob.stop();
    two.stop().await;
}

/// Puts `data` at `offset` of blob `id` on `conn` and waits for the relay's answer.
async fn put(conn: &mut Raw, id: &str, offset: u64, data: &[u8]) -> RelayFrame {
    conn.send(&ClientFrame::BlobPut {
        req: 2,
        blob_id: id.into(),
        offset,
        data: B64(data.to_vec()),
    })
    .await;
    conn.expect(|f| {
        matches!(
            f,
            RelayFrame::Ok { req: 2 } | RelayFrame::Error { req: Some(2), .. }
        )
    })
    .await
}

/// The whole of complete blob `id`, `size` bytes, read through `conn`.
async fn get_all(conn: &mut Raw, id: &str, size: u64) -> Vec<u8> {
    let mut got = Vec::new();
    while (got.len() as u64) < size {
        conn.send(&ClientFrame::BlobGet {
            req: 3,
            blob_id: id.into(),
            offset: got.len() as u64,
            len: MAX_BLOB_CHUNK,
        })
        .await;
        match conn
            .expect(|f| {
                matches!(
                    f,
                    RelayFrame::BlobData { req: 3, .. } | RelayFrame::Error { req: Some(3), .. }
                )
            })
            .await
        {
            RelayFrame::BlobData { data, .. } if !data.0.is_empty() => {
                got.extend_from_slice(&data.0)
            }
            other => panic!("no bytes at {} of {size}: {other:?}", got.len()),
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_starting_mid_upload_through_another_leaves_it_to_finish_and_serves_it() {
    let Some(pg) = TestDb::create(
        "a_relay_starting_mid_upload_through_another_leaves_it_to_finish_and_serves_it",
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (tmp.path().join("relay-a"), tmp.path().join("relay-b"));
    let a = TestRelay::start_with(&dir_a, pg.relay_config()).await;
    let want = content(MAX_BLOB_CHUNK as usize + 5000);
    let half = MAX_BLOB_CHUNK as usize;
    let mut uploader = Raw::anonymous(&a.url).await;
    uploader
        .send(&ClientFrame::BlobCreate {
            req: 1,
            size: want.len() as u64,
            expires_at: None,
            recipients: 1,
        })
        .await;
    let RelayFrame::BlobCreated { blob_id: id, .. } = uploader
        .expect(|f| {
            matches!(
                f,
                RelayFrame::BlobCreated { req: 1, .. } | RelayFrame::Error { .. }
            )
        })
        .await
    else {
        panic!("the relay did not create the blob");
    };
    assert_eq!(
        put(&mut uploader, &id, 0, &want[..half]).await,
        RelayFrame::Ok { req: 2 }
    );
    // B starts with the upload half done through A, whose data directory it does not see;
    // once it answers a connection it has matched the blobs' bytes to their rows.
    share_certificate(&dir_a, &dir_b);
    let b = TestRelay::start_with(&dir_b, pg.relay_config()).await;
    let mut through_b = Raw::anonymous(&b.url).await;
    // The upload goes on through A where it stopped.
    assert_eq!(
        put(&mut uploader, &id, half as u64, &want[half..]).await,
        RelayFrame::Ok { req: 2 }
    );
    // Either relay serves the whole file.
    let mut through_a = Raw::anonymous(&a.url).await;
    assert_eq!(get_all(&mut through_a, &id, want.len() as u64).await, want);
    assert_eq!(get_all(&mut through_b, &id, want.len() as u64).await, want);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_committed_while_a_relay_could_not_listen_is_pushed_once_it_listens_again() {
    let Some(two) = TwoRelays::start(
        "mail_committed_while_a_relay_could_not_listen_is_pushed_once_it_listens_again",
    )
    .await
    else {
        return;
    };
    let (mut alice, mut bob) = two.alice_on_a_bob_on_b().await;
    alice.send("bob", false, "before").await;
    assert_eq!(bob.receive().await.text, "before");

    // Both relays lose their listening connections and cannot make new ones: A's word about
    // alice's next message reaches nobody.
    let deaf = tokio::task::block_in_place(|| two.pg.deafen_relays());
    assert_eq!(deaf, 2);
    alice.send("bob", false, "while B was deaf").await;
    // B listens again and, having missed words, has bob's connection read its queue.
    tokio::task::block_in_place(|| two.pg.let_connect());
    assert_eq!(bob.receive().await.text, "while B was deaf");
    alice.send("bob", false, "after").await;
    assert_eq!(bob.receive().await.text, "after");
    alice.stop();
    bob.stop();
    two.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_on_another_relay_ends_the_older_connection_there() {
    let Some(two) =
        TwoRelays::start("signing_in_on_another_relay_ends_the_older_connection_there").await
    else {
        return;
    };
    let (a, b) = (&two.a, &two.b);
    let (carol_dir, dave_dir) = (two.path("carol"), two.path("dave"));
    common::register(&carol_dir, "carol", &a.url).await;
    common::register(&dave_dir, "dave", &a.url).await;
    // carol's device signs in on A, then (a reconnection the load balancer sent elsewhere,
    // or a copy of her keys) on B.
    let mut older = Raw::auth(&a.url, &carol_dir).await;
    let mut newer = Raw::auth(&b.url, &carol_dir).await;
    // A ends the older connection, saying why, as it does for two connections on itself.
    let seen = older.until_closed().await;
    assert!(
        seen.iter().any(|f| matches!(
            f,
            RelayFrame::Error { code: ErrorCode::Forbidden, message, .. }
                if message.contains("another connection signed in")
        )),
        "{seen:?}"
    );
    // The newer one is carol's: dave's message, committed on A, is pushed to it by B.
    let mut dave = Client::start(&dave_dir, &a.url).await;
    dave.send("carol", false, "still there?").await;
    newer
        .expect(|f| matches!(f, RelayFrame::Deliver { .. }))
        .await;
    dave.stop();
    two.stop().await;
}

/// A TCP forwarder standing in for a load balancer: every connection it accepts goes to the
/// backend set at that moment.
struct Balancer {
    addr: String,
    backend: Arc<Mutex<String>>,
}

impl Balancer {
    async fn start(backend: &str) -> Balancer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let backend = Arc::new(Mutex::new(backend.to_string()));
        let to = backend.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let target = to.lock().unwrap().clone();
                tokio::spawn(async move {
                    // A backend that is down drops the client's connection, as a balancer
                    // with no healthy backend does.
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Balancer { addr, backend }
    }

    fn switch_to(&self, backend: &str) {
        *self.backend.lock().unwrap() = backend.to_string();
    }
}

fn host_port(url: &str) -> String {
    url.split_once("://").unwrap().1.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_mid_stream_loses_nothing_alice_was_told_was_stored() {
    let Some(pg) =
        TestDb::create("a_relay_killed_mid_stream_loses_nothing_alice_was_told_was_stored")
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (tmp.path().join("relay-a"), tmp.path().join("relay-b"));
    let (alice_dir, bob_dir) = (tmp.path().join("alice"), tmp.path().join("bob"));
    // Relay B in process (it makes the certificate files); relay A a `sotto relay` process
    // serving the same files from its own data directory.
    let b = TestRelay::start_with(&dir_b, pg.relay_config()).await;
    std::fs::create_dir_all(&dir_a).unwrap();
    let (cert, key) = (dir_b.join(CERT_FILE), dir_b.join(KEY_FILE));
    let mut a = common::cli::start_relay_with(
        &dir_a,
        "127.0.0.1:0",
        &[
            "--database",
            &pg.url,
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let balancer = Balancer::start(&host_port(&a.url)).await;
    let front = format!("wss://{}", balancer.addr);
    common::register(&alice_dir, "alice", &front).await;
    common::register(&bob_dir, "bob", &b.url).await;
    let mut alice = Client::start(&alice_dir, &front).await;
    let mut bob = Client::start(&bob_dir, &b.url).await;

    // One stream, the modes alternating: a first stretch through A, each one acknowledged;
    // the rest handed to alice's client at once, and A killed while they are on their way
    // (some acknowledged by A, some in flight, some not sent yet).
    let text = |i: usize| format!("{} {i}", if i % 2 == 1 { "secret" } else { "normal" });
    let mut ids: Vec<String> = Vec::new();
    for i in 0..6 {
        ids.push(alice.send("bob", i % 2 == 1, &text(i)).await);
    }
    for i in 6..30 {
        let id = uuid::Uuid::new_v4().to_string();
        alice
            .handle
            .commands
            .send(Command::Send {
                id: id.clone(),
                to: "bob".into(),
                secret: i % 2 == 1,
                text: text(i),
                reply_to: None,
            })
            .await
            .unwrap();
        ids.push(id);
    }
    balancer.switch_to(&host_port(&b.url));
    let pid = i32::try_from(a.child.id()).unwrap();
    // SAFETY: kill(2) on our own child's pid only sends it a signal.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    a.child.wait().unwrap();

    // alice's client reconnects through the balancer, now to B, and sends what it has not
    // been told is stored; each message ends stored (Sent, or already Delivered) or failed.
    let mut stored: Vec<usize> = (0..6).collect();
    let mut unsettled: Vec<usize> = (6..ids.len()).collect();
    while !unsettled.is_empty() {
        let event = alice
            .expect(|e| matches!(e, Event::MessageState { .. } | Event::MessageFailed { .. }))
            .await;
        // (id, whether it is settled, whether it is stored)
        let (id, settled, ok) = match event {
            Event::MessageState { id, state } => {
                let ok = state != MessageState::Sending && state != MessageState::Failed;
                (id, state != MessageState::Sending, ok)
            }
            Event::MessageFailed { id, .. } => (id, true, false),
            _ => unreachable!(),
        };
        let Some(i) = ids.iter().position(|x| *x == id) else {
            continue;
        };
        if settled && unsettled.contains(&i) {
            unsettled.retain(|&u| u != i);
            if ok {
                stored.push(i);
            }
        }
    }
    stored.sort_unstable();
    // None failed: what A did not acknowledge, alice's client sent again through B.
    assert_eq!(stored, (0..ids.len()).collect::<Vec<_>>());
    // bob gets every one, once, and in order within each thread (the two modes travel
    // as separate threads; their interleaving is not promised).
    let got = receive_n(&mut bob, ids.len()).await;
    for secret in [false, true] {
        let of_mode: Vec<String> = (0..ids.len())
            .filter(|i| (i % 2 == 1) == secret)
            .map(text)
            .collect();
        let arrived: Vec<String> = got
            .iter()
            .filter(|t| t.starts_with(if secret { "secret" } else { "normal" }))
            .cloned()
            .collect();
        assert_eq!(arrived, of_mode, "arrival order");
    }
    alice.barrier().await;
    bob.barrier().await;
    for secret in [false, true] {
        let want: Vec<(bool, String)> = (0..ids.len())
            .filter(|i| (i % 2 == 1) == secret)
            .map(|i| (false, text(i)))
            .collect();
        assert_eq!(bobs_thread(&bob_dir, secret), want, "once each, in order");
    }
    alice.stop();
    bob.stop();
    b.stop().await;
}
