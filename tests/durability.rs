//! Nothing lost, nothing twice: a relay killed between accepting and delivering, a
//! recipient that stored a message but never got its ack to the relay, one that signs in
//! again right after acking, and one that several senders flood at once. Each test runs with
//! the relay's state on SQLite and on PostgreSQL (`on_each_backend!`).

mod common;

use common::backend::Backend;
use common::{Client, Scene, TestRelay};
use sotto::client::manager::Event;

on_each_backend!(
    relay_killed_after_accepting_delivers_exactly_once_after_restart,
    recipient_that_stored_but_never_acked_shows_the_message_once,
    messages_typed_while_the_relay_is_down_go_out_when_it_is_back,
    a_client_tops_up_its_one_time_prekeys_when_few_are_left,
    a_client_signing_in_again_is_sent_only_the_envelopes_it_had_not_acked,
    a_flooded_recipient_gets_every_envelope_of_concurrent_senders_once_and_in_order,
    a_recipient_sent_more_than_its_mailbox_holds_in_one_commit_gets_it_all_unasked,
);

/// The relay is a `sotto relay` process here (on PostgreSQL given `--database`), killed with
/// SIGKILL: nothing of it runs on to finish a write, as an aborted task's blocking threads
/// could.
async fn relay_killed_after_accepting_delivers_exactly_once_after_restart(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let (rd, ad, bd) = (
        tmp.path().join("relay"),
        tmp.path().join("a"),
        tmp.path().join("b"),
    );
    let args = backend.relay_args();
    let mut relay = common::cli::start_relay_with(&rd, "127.0.0.1:0", &args);
    common::register(&ad, "alice", &relay.url).await;
    common::register(&bd, "bob", &relay.url).await;
    let mut alice = Client::start(&ad, &relay.url).await;
    alice.send("bob", true, "survives a crash").await;
    alice.send("bob", false, "so does this").await;
    alice.stop();
    // Accepted (`ok` came back), not delivered (bob is offline): now the relay dies hard.
    relay.child.kill().unwrap();
    relay.child.wait().unwrap();

    let addr = relay.url.trim_start_matches("wss://").to_string();
    let mut relay = common::cli::start_relay_with(&rd, &addr, &args);
    let mut bob = Client::start(&bd, &relay.url).await;
    let mut got = bob.drain().await;
    got.sort();
    assert_eq!(got, vec!["so does this", "survives a crash"]);
    bob.barrier().await;
    bob.stop();
    assert_eq!(backend.queued_for(&rd, &bd).await, 0);

    // A second run finds nothing new and the store holds each message once.
    let mut bob = Client::start(&bd, &relay.url).await;
    assert_eq!(bob.drain().await, Vec::<String>::new());
    bob.stop();
    let secret: Vec<_> = common::history(&bd, "alice", true)
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(secret, vec!["survives a crash"]);
    let normal: Vec<_> = common::history(&bd, "alice", false)
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(normal, vec!["so does this"]);
    relay.child.kill().unwrap();
    relay.child.wait().unwrap();
}

async fn recipient_that_stored_but_never_acked_shows_the_message_once(backend: Backend) {
    let Scene {
        relay_dir: rd,
        alice: ad,
        bob: bd,
        relay,
        tmp,
    } = backend.scene().await;
    let snapshot = tmp.path().join("relay-before-ack");
    let mut alice = Client::start(&ad, &relay.url).await;
    alice.send("bob", true, "first secret").await;
    alice.send("bob", false, "a normal one").await;
    alice.send("bob", true, "second secret").await;
    alice.stop();
    relay.stop().await;
    // The relay's state with the three envelopes queued: what it still holds if bob's acks
    // never arrive because bob crashed right after committing.
    let snapshot = backend.snapshot(&rd, &snapshot);

    let relay = TestRelay::start_with(&rd, backend.relay_config()).await;
    let mut bob = Client::start(&bd, &relay.url).await;
    let mut first = bob.drain().await;
    first.sort();
    assert_eq!(first, vec!["a normal one", "first secret", "second secret"]);
    bob.barrier().await;
    bob.stop();
    relay.stop().await;

    backend.restore(&snapshot, &rd);
    assert_eq!(
        backend.queued_for(&rd, &bd).await,
        3,
        "the snapshot must hold the unacked envelopes"
    );
    let relay = TestRelay::start_with(&rd, backend.relay_config()).await;
    let mut bob = Client::start(&bd, &relay.url).await;
    // Redelivered, recognised, acknowledged, and not shown again.
    assert_eq!(bob.drain().await, Vec::<String>::new());
    bob.barrier().await;
    bob.stop();
    assert_eq!(backend.queued_for(&rd, &bd).await, 0);
    let acks = relay
        .frames
        .lock()
        .unwrap()
        .iter()
        .filter(|f| common::contains(f, br#""type":"ack""#))
        .count();
    assert_eq!(
        acks, 3,
        "bob should have acknowledged each redelivered envelope"
    );
    let mut secret: Vec<_> = common::history(&bd, "alice", true)
        .into_iter()
        .map(|m| m.text)
        .collect();
    secret.sort();
    assert_eq!(secret, vec!["first secret", "second secret"]);
    assert_eq!(common::history(&bd, "alice", false).len(), 1);
    relay.stop().await;
}

async fn messages_typed_while_the_relay_is_down_go_out_when_it_is_back(backend: Backend) {
    use sotto::client::manager::{Command, ConnState};

    use sotto::client::store::MessageState;
    let Scene {
        relay_dir: rd,
        alice: ad,
        bob: bd,
        relay,
        tmp: _tmp,
    } = backend.scene().await;
    let addr = relay.addr();
    let mut alice = Client::start(&ad, &relay.url).await;
    alice.send("bob", true, "before the outage").await;
    relay.stop().await;
    alice
        .expect(|e| matches!(e, Event::Connection(ConnState::Offline { .. })))
        .await;

    let mut waiting = std::collections::HashSet::new();
    for (text, secret) in [("typed while offline", true), ("this one too", false)] {
        let id = uuid::Uuid::new_v4().to_string();
        waiting.insert(id.clone());
        alice
            .handle
            .commands
            .send(Command::Send {
                id,
                to: "bob".into(),
                secret,
                text: text.into(),
                reply_to: None,
            })
            .await
            .unwrap();
        match alice
            .expect(|e| matches!(e, Event::Message(_) | Event::MessageFailed { .. }))
            .await
        {
            Event::Message(m) => assert_eq!(m.state, MessageState::Sending),
            other => panic!("the message should wait, not fail: {other:?}"),
        }
    }

    // Either link may come back first (the anonymous one alone suffices for a secret message
    // on an existing session), so the two confirmations may come in any order.
    let relay = TestRelay::start_at(&rd, &addr, backend.relay_config()).await;
    while !waiting.is_empty() {
        if let Event::MessageState { id, state } = alice
            .expect(|e| matches!(e, Event::MessageState { .. }))
            .await
        {
            assert_eq!(state, MessageState::Sent);
            assert!(waiting.remove(&id), "unexpected or repeated confirmation");
        }
    }
    let mut bob = Client::start(&bd, &relay.url).await;
    let mut got = bob.drain().await;
    got.sort();
    assert_eq!(
        got,
        vec!["before the outage", "this one too", "typed while offline"]
    );
    alice.stop();
    bob.stop();
    relay.stop().await;
}

async fn a_client_tops_up_its_one_time_prekeys_when_few_are_left(backend: Backend) {
    use common::Raw;
    use sotto::wire::{ClientFrame, RelayFrame};
    let Scene {
        relay_dir: rd,
        alice: ad,
        bob: bd,
        relay,
        tmp: _tmp,
    } = Scene::with(backend.config(sotto::relay::RelayConfig {
        // This drain is the scene, not the attack: the bundle rates are off.
        rate: sotto::relay::RateLimits {
            bundles_per_target_per_minute: 0,
            bundles_per_requester_per_minute: 0,
            ..Default::default()
        },
        ..Default::default()
    }))
    .await;
    let bob_id = common::account_id(&bd);
    assert_eq!(backend.prekeys_left(&rd, &bd).await, (100, 100));
    // Someone drains bob's one-time keys while bob is offline.
    let mut raw = Raw::auth(&relay.url, &ad).await;
    for req in 0..85 {
        raw.send(&ClientFrame::FetchBundle {
            req,
            account_id: bob_id.clone(),
        })
        .await;
        let f = raw.expect(|f| matches!(f, RelayFrame::Bundle { .. })).await;
        let RelayFrame::Bundle { bundle, .. } = f else {
            unreachable!()
        };
        assert!(
            bundle.prekey.is_some(),
            "each bundle carries a fresh one-time key"
        );
    }
    assert_eq!(backend.prekeys_left(&rd, &bd).await, (15, 15));
    // On connecting, bob hears the count and uploads a batch before the backlog is done.
    let mut bob = Client::start(&bd, &relay.url).await;
    bob.expect(|e| matches!(e, Event::Drained)).await;
    assert_eq!(backend.prekeys_left(&rd, &bd).await, (115, 115));
    bob.stop();
    relay.stop().await;
}

/// Sends a normal message with `body` to `to` on a raw connection; returns once it is queued.
async fn send_raw(raw: &mut common::Raw, req: u64, to: &str, body: &str) {
    use sotto::wire::{ClientFrame, RelayFrame};
    raw.send(&ClientFrame::Send {
        req,
        to: to.into(),
        body: body.as_bytes().to_vec().into(),
        expires_at: None,
        online_only: false,
    })
    .await;
    let answer = raw
        .expect(|f| matches!(f, RelayFrame::Ok { req: r } | RelayFrame::Error { req: Some(r), .. } if *r == req))
        .await;
    assert!(
        matches!(answer, RelayFrame::Ok { .. }),
        "send refused: {answer:?}"
    );
}

/// The next envelope pushed to a raw connection: its id and its (normal) body as text.
async fn next_deliver(raw: &mut common::Raw) -> (u64, String) {
    use sotto::wire::{Payload, RelayFrame};
    match raw
        .expect(|f| matches!(f, RelayFrame::Deliver { .. }))
        .await
    {
        RelayFrame::Deliver {
            id,
            payload: Payload::Normal { body, .. },
            ..
        } => (id, String::from_utf8(body.0).unwrap()),
        other => panic!("expected a normal envelope, got {other:?}"),
    }
}

async fn a_client_signing_in_again_is_sent_only_the_envelopes_it_had_not_acked(backend: Backend) {
    use common::Raw;
    use sotto::relay::RelayConfig;
    use sotto::wire::ClientFrame;
    const K: usize = 20;
    // A window of one: each ack makes the relay push the next envelope, so an arrival proves
    // the relay has taken in every ack before it. A request would prove it too, but its own
    // flush would commit the deletes and leave the sign-in flush untested.
    let Scene {
        relay_dir: rd,
        alice: ad,
        bob: bd,
        relay,
        tmp: _tmp,
    } = Scene::with(backend.config(RelayConfig {
        delivery_window: 1,
        ..RelayConfig::default()
    }))
    .await;
    let bob_id = common::account_id(&bd);
    // Bob speaks the protocol by hand: his client's duplicate check would hide a redelivery.
    let mut bob = Raw::auth(&relay.url, &bd).await;
    let mut alice = Raw::auth(&relay.url, &ad).await;
    for i in 0..K {
        send_raw(&mut alice, i as u64, &bob_id, &format!("acked {i}")).await;
    }
    send_raw(&mut alice, K as u64, &bob_id, "not acked").await;

    // A queue writer that is behind (a slow sync under load): the relay takes in bob's acks,
    // but cannot delete anything yet.
    let lock = backend.hold_writer(&rd);
    let mut acked = Vec::new();
    for i in 0..K {
        let (id, body) = next_deliver(&mut bob).await;
        assert_eq!(body, format!("acked {i}"));
        bob.send(&ClientFrame::Ack { id }).await;
        acked.push(id);
    }
    let (unacked, body) = next_deliver(&mut bob).await;
    assert_eq!(body, "not acked");
    assert_eq!(
        backend.queued_for(&rd, &bd).await,
        K as u64 + 1,
        "the deletes must still be pending when bob signs in again"
    );

    drop(bob);
    let mut bob = Raw::auth(&relay.url, &bd).await;
    // The writer may go on now; the new connection's first push must wait for it.
    drop(lock);
    // The relay pushes oldest first, so an acked envelope sent again would come before this.
    let (id, body) = next_deliver(&mut bob).await;
    assert!(
        !acked.contains(&id),
        "envelope {id} was acked before signing in again, yet sent again"
    );
    assert_eq!(
        (id, body.as_str()),
        (unacked, "not acked"),
        "the unacked envelope comes again"
    );
    bob.send(&ClientFrame::Ack { id }).await;
    send_raw(&mut alice, K as u64 + 1, &bob_id, "after signing in again").await;
    let (id, body) = next_deliver(&mut bob).await;
    assert!(!acked.contains(&id), "envelope {id} was sent again");
    assert_eq!(body, "after signing in again");
    bob.send(&ClientFrame::Ack { id }).await;
    // The answer to a request comes after the relay has deleted what was acked before it.
    nothing_more_pushed(&mut bob, 1).await;
    assert_eq!(backend.queued_for(&rd, &bd).await, 0);
    drop(bob);
    drop(alice);
    relay.stop().await;
}

/// Sends a lookup on `raw` (request `req`) and checks that its answer comes before any
/// further `deliver`.
async fn nothing_more_pushed(raw: &mut common::Raw, req: u64) {
    use sotto::wire::{ClientFrame, RelayFrame};
    raw.send(&ClientFrame::Lookup {
        req,
        handle: Some("alice".into()),
        account_id: None,
    })
    .await;
    match raw
        .expect(|f| matches!(f, RelayFrame::Deliver { .. } | RelayFrame::Account { .. }))
        .await
    {
        RelayFrame::Account { .. } => {}
        other => panic!("nothing more was to be delivered, yet the relay pushed {other:?}"),
    }
}

/// The body of envelope `seq` of sender `sender`: both numbers, padded to `len` bytes.
fn numbered(sender: usize, seq: u64, len: usize) -> Vec<u8> {
    let mut body = format!("{sender} {seq} ").into_bytes();
    body.resize(len.max(body.len()), b'.');
    body
}

/// The sender and sequence number a `numbered` body carries.
fn numbers(body: &[u8]) -> (usize, u64) {
    let text = std::str::from_utf8(body).unwrap();
    let mut words = text.split(' ');
    let sender = words.next().unwrap().parse().unwrap();
    let seq = words.next().unwrap().parse().unwrap();
    (sender, seq)
}

/// Sends envelopes `seqs` of `sender` to `to`, `len` bytes each, without waiting for their
/// answers; the request number is the sequence number.
async fn send_numbered(
    raw: &mut common::Raw,
    sender: usize,
    seqs: std::ops::Range<u64>,
    to: &str,
    len: usize,
) {
    use sotto::wire::ClientFrame;
    for seq in seqs {
        raw.send(&ClientFrame::Send {
            req: seq,
            to: to.into(),
            body: numbered(sender, seq, len).into(),
            expires_at: None,
            online_only: false,
        })
        .await;
    }
}

/// Waits for the `ok`s of envelopes `seqs`: a connection answers in the order it was sent.
async fn expect_oks(raw: &mut common::Raw, seqs: std::ops::Range<u64>) {
    use sotto::wire::RelayFrame;
    for req in seqs {
        let answer = raw
            .expect(|f| {
                matches!(
                    f,
                    RelayFrame::Ok { .. } | RelayFrame::Error { req: Some(_), .. }
                )
            })
            .await;
        assert!(
            matches!(answer, RelayFrame::Ok { req: r } if r == req),
            "envelope {req} should be accepted, got {answer:?}"
        );
    }
}

/// Returns once the relay has read everything sent on `raw` before, so every envelope among
/// it is in the queue writer's hands: a frame that does not parse is answered at once, and a
/// connection reads its frames in order.
async fn relay_has_read_all(raw: &mut common::Raw) {
    use sotto::wire::{ErrorCode, RelayFrame};
    raw.send_text("not a frame".into()).await;
    raw.expect(|f| {
        matches!(
            f,
            RelayFrame::Error {
                req: None,
                code: ErrorCode::Malformed,
                ..
            }
        )
    })
    .await;
}

/// Returns once the relay has received a frame containing `needle`. The relay's frame tap
/// sees a frame as the connection reads it, before it acts on it; this polls the tap
/// (yielding, never sleeping), since nothing a client receives tells it a frame was read.
async fn until_read(relay: &TestRelay, needle: &[u8]) {
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    let mut seen = 0;
    loop {
        {
            let frames = relay.frames.lock().unwrap();
            if frames[seen..].iter().any(|f| common::contains(f, needle)) {
                return;
            }
            seen = frames.len();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the relay did not read the frame in time"
        );
        tokio::task::yield_now().await;
    }
}

/// What a recipient speaking the protocol by hand has been pushed, checked as it comes.
struct Pushed {
    /// The next sequence number due from each sender.
    next: Vec<u64>,
    last_id: u64,
}

impl Pushed {
    /// Takes `n` more envelopes, acking each as it comes. Each must come after every envelope
    /// before it in the queue (higher id) and be the next of its sender (the relay queues a
    /// sender's envelopes in the order they came on its connection): an envelope pushed
    /// twice, out of order or after a gap fails at once.
    async fn take(&mut self, raw: &mut common::Raw, n: usize) {
        use sotto::wire::{ClientFrame, ErrorCode, Payload, RelayFrame};
        let mut got = 0;
        while got < n {
            let frame = raw.recv().await.expect("the relay closed the connection");
            let (id, body) = match frame {
                RelayFrame::Deliver {
                    id,
                    payload: Payload::Normal { body, .. },
                    ..
                } => (id, body.0),
                // The answer to a lookup of a handle nobody has, used as a barrier.
                RelayFrame::Error {
                    code: ErrorCode::NotFound,
                    ..
                } => continue,
                RelayFrame::Deliver { .. } | RelayFrame::Error { .. } => {
                    panic!("unexpected frame: {frame:?}")
                }
                _ => continue,
            };
            let (sender, seq) = numbers(&body);
            assert!(
                id > self.last_id,
                "envelope {id} (sender {sender}'s #{seq}) was pushed after envelope {}: \
                 twice, or out of queue order",
                self.last_id
            );
            let due = self.next[sender];
            assert!(
                seq == due,
                "sender {sender}'s #{seq} was pushed when #{due} was due: {}",
                if seq < due { "twice" } else { "some skipped" }
            );
            (self.last_id, self.next[sender]) = (id, seq + 1);
            got += 1;
            raw.send(&ClientFrame::Ack { id }).await;
        }
    }
}

async fn a_flooded_recipient_gets_every_envelope_of_concurrent_senders_once_and_in_order(
    backend: Backend,
) {
    use common::{PATIENCE, Raw};
    use sotto::relay::RelayConfig;
    use sotto::wire::{ClientFrame, MAX_PAYLOAD_BYTES, RelayFrame};
    // Room for more envelopes of the largest size than the mailbox holds (none: 64 KiB), so that
    // a mailbox that lost track of its overflow shows as a gap instead of being hidden by a
    // full window; far fewer than the senders queue, so bob's connection is often behind.
    const WINDOW: usize = 8;
    // Envelopes per sender: sent as bob signs in, by the end of the flood, in all.
    const AT_SIGN_IN: u64 = 2;
    const FLOOD: u64 = 100;
    const TOTAL: u64 = 150;
    // The first envelopes of the flood: the largest the relay accepts, each over the
    // mailbox's 64 KiB.
    const LARGE: u64 = 8;
    // After the flood each sender sends the rest this many at a time, while bob acks.
    const BURST: u64 = 10;
    let Scene {
        relay_dir: rd,
        alice: ad,
        bob: bd,
        relay,
        tmp,
    } = Scene::with(backend.config(RelayConfig {
        delivery_window: WINDOW,
        ..RelayConfig::default()
    }))
    .await;
    let (cd, dd) = (tmp.path().join("c"), tmp.path().join("d"));
    common::register(&cd, "carol", &relay.url).await;
    common::register(&dd, "dave", &relay.url).await;
    let bob_id = common::account_id(&bd);
    let mut senders = Vec::new();
    for dir in [&ad, &cd, &dd] {
        let mut raw = Raw::auth(&relay.url, dir).await;
        // Its sign-in is over: it no longer waits for the queue's writer.
        raw.expect(|f| matches!(f, RelayFrame::Drained)).await;
        senders.push(raw);
    }
    // While `hold_writer` holds the lock, envelopes pile up in the writer's hands, uncommitted.

    // Bob signs in while the writer holds envelopes for him: they are committed once he is
    // online and before his first read of the queue, so they reach his connection twice,
    // handed over by the writer and read by that first push; each must be pushed once. Bob
    // speaks the protocol by hand: his client's duplicate check would hide a second push.
    let lock = backend.hold_writer(&rd);
    for (sender, raw) in senders.iter_mut().enumerate() {
        send_numbered(raw, sender, 0..AT_SIGN_IN, &bob_id, 1).await;
        relay_has_read_all(raw).await;
    }
    let mut bob = Raw::auth(&relay.url, &bd).await;
    drop(lock);
    let mut pushed = Pushed {
        next: vec![0; senders.len()],
        last_id: 0,
    };
    for raw in &mut senders {
        expect_oks(raw, 0..AT_SIGN_IN).await;
    }
    pushed
        .take(&mut bob, AT_SIGN_IN as usize * senders.len())
        .await;

    // The flood, while bob's connection has pushed everything and is busy: the mailbox
    // overflows with fewer envelopes held than the window has room for, and what follows
    // comes through a full window. Alice's largest envelopes come first.
    let lock = backend.hold_writer(&rd);
    let large = AT_SIGN_IN..AT_SIGN_IN + LARGE;
    send_numbered(&mut senders[0], 0, large, &bob_id, MAX_PAYLOAD_BYTES).await;
    relay_has_read_all(&mut senders[0]).await;
    let (read_tx, mut read_rx) = tokio::sync::mpsc::channel(senders.len());
    let mut tasks = Vec::new();
    for (sender, mut raw) in senders.into_iter().enumerate() {
        let (to, read) = (bob_id.clone(), read_tx.clone());
        let first = if sender == 0 {
            AT_SIGN_IN + LARGE
        } else {
            AT_SIGN_IN
        };
        tasks.push(tokio::spawn(async move {
            send_numbered(&mut raw, sender, first..FLOOD, &to, 1).await;
            relay_has_read_all(&mut raw).await;
            read.send(()).await.unwrap();
            expect_oks(&mut raw, AT_SIGN_IN..FLOOD).await;
            // Then the rest, with bob taking and acking as they come.
            for start in (FLOOD..TOTAL).step_by(BURST as usize) {
                let burst = start..(start + BURST).min(TOTAL);
                send_numbered(&mut raw, sender, burst.clone(), &to, 1).await;
                expect_oks(&mut raw, burst).await;
            }
            raw
        }));
    }
    for _ in 0..tasks.len() {
        tokio::time::timeout(PATIENCE, read_rx.recv())
            .await
            .expect("a sender's envelopes did not reach the relay in time")
            .expect("a sender failed");
    }
    // A request makes bob's connection wait for the writer to commit everything handed over
    // before it, the whole flood, which the writer hands to bob's mailbox meanwhile. Once the
    // relay has read the request, the writer may go on.
    bob.send(&ClientFrame::Lookup {
        req: 1,
        handle: Some("flood-barrier".into()),
        account_id: None,
    })
    .await;
    until_read(&relay, b"flood-barrier").await;
    drop(lock);
    let rest = (TOTAL - AT_SIGN_IN) as usize * tasks.len();
    pushed.take(&mut bob, rest).await;
    assert_eq!(pushed.next, vec![TOTAL; tasks.len()]);
    for task in tasks {
        drop(tokio::time::timeout(PATIENCE, task).await.unwrap().unwrap());
    }

    // Nothing more comes: the answer to a request follows every push the relay decided on
    // before it, and it has taken in every ack by then.
    nothing_more_pushed(&mut bob, 2).await;
    assert_eq!(backend.queued_for(&rd, &bd).await, 0);
    drop(bob);
    relay.stop().await;
}

async fn a_recipient_sent_more_than_its_mailbox_holds_in_one_commit_gets_it_all_unasked(
    backend: Backend,
) {
    use common::Raw;
    use sotto::relay::RelayConfig;
    use sotto::wire::{ClientFrame, Payload, RelayFrame};
    // More than the 64 a mailbox holds, with room for all of them in the window: bob's
    // connection must read the overflow from the queue, and the writer hands the batch over
    // before its commit, so that read may come before the commit and find nothing yet.
    const SENT: u64 = 150;
    let Scene {
        relay_dir: rd,
        alice: ad,
        bob: bd,
        relay,
        tmp: _tmp,
    } = Scene::with(backend.config(RelayConfig {
        delivery_window: 2 * SENT as usize,
        ..RelayConfig::default()
    }))
    .await;
    let bob_id = common::account_id(&bd);
    let mut bob = Raw::auth(&relay.url, &bd).await;
    bob.expect(|f| matches!(f, RelayFrame::Drained)).await;
    let mut alice = Raw::auth(&relay.url, &ad).await;
    alice.expect(|f| matches!(f, RelayFrame::Drained)).await;
    let lock = backend.hold_writer(&rd);
    send_numbered(&mut alice, 0, 0..SENT, &bob_id, 1).await;
    relay_has_read_all(&mut alice).await;
    drop(lock);
    expect_oks(&mut alice, 0..SENT).await;
    // Bob acks nothing until all of it is there: an ack would make his connection read the
    // queue again and hide a connection that stopped short.
    let mut ids = Vec::new();
    for seq in 0..SENT {
        match bob
            .expect(|f| matches!(f, RelayFrame::Deliver { .. }))
            .await
        {
            RelayFrame::Deliver {
                id,
                payload: Payload::Normal { body, .. },
                ..
            } => {
                assert_eq!(numbers(&body.0), (0, seq), "pushed out of order or twice");
                ids.push(id);
            }
            other => panic!("expected a normal envelope, got {other:?}"),
        }
    }
    for id in ids {
        bob.send(&ClientFrame::Ack { id }).await;
    }
    nothing_more_pushed(&mut bob, 1).await;
    assert_eq!(backend.queued_for(&rd, &bd).await, 0);
    drop(bob);
    relay.stop().await;
}
