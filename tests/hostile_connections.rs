//! A hostile client must not take the relay down: every stage of a connection has a
//! deadline and every kind of connection a cap, while two legitimate users chat on.
//!
//! The relay runs in-process over plain ws:// with small limits and deadlines of a few
//! hundred milliseconds. Attackers come from other loopback addresses (127.0.0.2, ...), so
//! the per-address caps hit them and not the legitimate users on 127.0.0.1. Every wait is for
//! a concrete event (a socket closing, a frame, a counter in `stats.json`), bounded by
//! `PATIENCE`.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Client, PATIENCE, Raw, TestRelay, register};
use futures_util::StreamExt;
use sotto::relay::RelayConfig;
use sotto::wire::{ClientFrame, ErrorCode, RelayFrame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Small limits and short deadlines, so that the tests are fast.
fn small() -> RelayConfig {
    RelayConfig {
        handshake_timeout: Duration::from_millis(500),
        auth_timeout: Duration::from_secs(5),
        ping_interval: Duration::from_millis(300),
        idle_timeout: Duration::from_secs(3),
        frame_timeout: Duration::from_millis(500),
        write_timeout: Duration::from_millis(500),
        max_connections: 40,
        max_connections_per_address: 20,
        max_signing_in: 20,
        max_anonymous: 6,
        max_unauthenticated_per_address: 3,
        stats_interval: Duration::from_millis(50),
        ..RelayConfig::default()
    }
}

struct Scene {
    _tmp: tempfile::TempDir,
    relay: TestRelay,
    alice: Client,
    bob: Client,
    /// What alice sent bob, normal and secret, in order.
    sent: Vec<(bool, String)>,
}

impl Scene {
    /// A relay with `config`, alice and bob registered, online, and having exchanged a
    /// normal and a secret message (so their secret session exists).
    async fn start(config: RelayConfig) -> Scene {
        let tmp = tempfile::tempdir().unwrap();
        let relay =
            TestRelay::start_plain_at(&tmp.path().join("relay"), "127.0.0.1:0", config).await;
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        register(&a, "alice", &relay.url).await;
        register(&b, "bob", &relay.url).await;
        let alice = Client::start(&a, &relay.url).await;
        let bob = Client::start(&b, &relay.url).await;
        let mut scene = Scene {
            _tmp: tmp,
            relay,
            alice,
            bob,
            sent: Vec::new(),
        };
        scene.chat("before").await;
        scene
    }

    fn path(&self, name: &str) -> PathBuf {
        self._tmp.path().join(name)
    }

    /// alice sends bob a normal and a secret message; bob gets both.
    async fn chat(&mut self, tag: &str) {
        for secret in [false, true] {
            let text = format!("{tag} secret={secret}");
            self.alice.send("bob", secret, &text).await;
            let got = self.bob.receive().await;
            assert_eq!(got.text, text);
            self.sent.push((secret, text));
        }
    }

    /// Every message alice sent is in bob's history exactly once, in order; then stops.
    async fn finish(mut self) {
        self.chat("after").await;
        for secret in [false, true] {
            let want: Vec<&String> = self
                .sent
                .iter()
                .filter(|(s, _)| *s == secret)
                .map(|(_, t)| t)
                .collect();
            let got: Vec<String> = self
                .bob
                .history("alice", secret)
                .into_iter()
                .filter(|m| !m.outgoing)
                .map(|m| m.text)
                .collect();
            assert_eq!(got.iter().collect::<Vec<_>>(), want, "secret={secret}");
        }
        self.alice.stop();
        self.bob.stop();
        self.relay.stop().await;
    }
}

/// The relay's address.
fn relay_addr(relay: &TestRelay) -> SocketAddr {
    relay.addr().parse().unwrap()
}

/// A TCP connection to the relay from the loopback address `from` (e.g. "127.0.0.2").
async fn tcp_from(from: &str, relay: &TestRelay) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(relay_addr(relay)).await.unwrap()
}

/// A WebSocket over `tcp`, its challenge read; Err with the frame the relay sent instead.
async fn raw_over(tcp: TcpStream, relay: &TestRelay) -> Result<Raw, Option<RelayFrame>> {
    let (ws, _) = tokio_tungstenite::client_async(&relay.url, MaybeTlsStream::Plain(tcp))
        .await
        .unwrap();
    let mut raw = Raw {
        ws,
        nonce: Vec::new(),
    };
    match raw.recv().await {
        Some(RelayFrame::Challenge { nonce, .. }) => {
            raw.nonce = nonce.0;
            Ok(raw)
        }
        other => Err(other),
    }
}

/// An anonymous connection from `from`; Err with the refusal.
async fn anonymous_from(from: &str, relay: &TestRelay) -> Result<Raw, Option<RelayFrame>> {
    let mut raw = raw_over(tcp_from(from, relay).await, relay).await?;
    raw.send(&ClientFrame::Anonymous).await;
    match raw.recv().await {
        Some(RelayFrame::AnonymousOk) => Ok(raw),
        other => Err(other),
    }
}

fn rate_limited(f: &Option<RelayFrame>) -> bool {
    matches!(f, Some(RelayFrame::Error { code: ErrorCode::RateLimited, message, .. }) if !message.is_empty())
}

/// A counter from the relay's `stats.json`, e.g. ("rejections", "idle_timeout").
fn stat(relay: &TestRelay, section: &str, key: &str) -> u64 {
    let Ok(text) = std::fs::read(relay.dir.join("stats.json")) else {
        return 0;
    };
    // A read may catch the file mid-write: count that as not there yet.
    serde_json::from_slice::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v[section][key].as_u64())
        .unwrap_or(0)
}

/// Waits until the counter reaches `at_least` (the relay rewrites the file every 50 ms).
async fn wait_stat(relay: &TestRelay, section: &str, key: &str, at_least: u64) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while stat(relay, section, key) < at_least {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{section}.{key} stayed below {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads `tcp` until the relay closes it; fails the test after `PATIENCE`.
async fn until_closed(tcp: &mut TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    tokio::time::timeout(PATIENCE, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the relay did not close the connection in time");
}

fn plain(raw: &mut Raw) -> &mut TcpStream {
    match raw.ws.get_mut() {
        MaybeTlsStream::Plain(tcp) => tcp,
        _ => unreachable!("the relay serves plain ws://"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_over_its_cap_is_refused_and_anonymous_connections_leave_room_for_users() {
    let mut scene = Scene::start(small()).await;
    let relay = &scene.relay;
    // alice's and bob's clients each hold an anonymous connection already: 2 of 6.
    let mut held = Vec::new();
    // One address gets its 3 connections that are not signed in, then is refused.
    for _ in 0..3 {
        held.push(anonymous_from("127.0.0.2", relay).await.unwrap());
    }
    let refused = anonymous_from("127.0.0.2", relay).await.err().unwrap();
    assert!(rate_limited(&refused), "got {refused:?}");
    // Another fills the anonymous quota (5 of 6, then 6 of 6), then is refused too.
    held.push(anonymous_from("127.0.0.3", relay).await.unwrap());
    let refused = anonymous_from("127.0.0.3", relay).await.err().unwrap();
    assert!(rate_limited(&refused), "got {refused:?}");
    wait_stat(relay, "rejections", "unauthenticated_per_address", 1).await;
    wait_stat(relay, "rejections", "anonymous_quota", 1).await;
    wait_stat(relay, "connections", "anonymous", 6).await;
    // A new user still registers and signs in, and the two users chat on.
    let carol = scene.path("c");
    register(&carol, "carol", &relay.url).await;
    let mut raw = Raw::auth(&relay.url, &carol).await;
    raw.send(&ClientFrame::Lookup {
        req: 1,
        handle: Some("alice".into()),
        account_id: None,
    })
    .await;
    raw.expect(|f| matches!(f, RelayFrame::Account { req: 1, .. }))
        .await;
    scene.chat("during").await;
    drop(held);
    scene.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_that_never_handshake_are_closed_and_counted_from_accept() {
    let mut scene = Scene::start(small()).await;
    let relay = &scene.relay;
    let mut silent = Vec::new();
    for _ in 0..6 {
        silent.push(tcp_from("127.0.0.4", relay).await);
    }
    // Counted against the address's cap from accept: 3 wait for their handshake, the rest
    // were refused at once.
    wait_stat(relay, "rejections", "unauthenticated_per_address", 3).await;
    scene.chat("during").await;
    for tcp in &mut silent {
        until_closed(tcp).await;
    }
    wait_stat(&scene.relay, "rejections", "handshake_timeout", 3).await;
    wait_stat(&scene.relay, "connections", "handshaking", 0).await;
    // The address has its slots back.
    let again = anonymous_from("127.0.0.4", &scene.relay).await;
    assert!(again.is_ok());
    drop(again);
    scene.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_started_and_never_finished_is_dropped_after_its_deadline() {
    let mut scene = Scene::start(small()).await;
    let mut raw = anonymous_from("127.0.0.5", &scene.relay).await.unwrap();
    // A masked text frame announcing 60 000 bytes, of which only 100 ever come.
    let mut partial = vec![0x81, 0xFE, (60_000u16 >> 8) as u8, 60_000u16 as u8];
    partial.extend_from_slice(&[1, 2, 3, 4]);
    partial.extend_from_slice(&[b'x'; 100]);
    plain(&mut raw).write_all(&partial).await.unwrap();
    scene.chat("during").await;
    until_closed(plain(&mut raw)).await;
    wait_stat(&scene.relay, "rejections", "frame_timeout", 1).await;
    assert_eq!(stat(&scene.relay, "rejections", "idle_timeout"), 0);
    scene.finish().await;
}

/// dave queues `n` envelopes of 150 KiB for carol and waits until all are committed.
async fn flood(dave: &mut Raw, to: &str, n: u64) {
    for req in 1..=n {
        dave.send(&ClientFrame::Send {
            req,
            to: to.to_string(),
            body: vec![req as u8; 150 * 1024].into(),
            expires_at: None,
            online_only: false,
        })
        .await;
    }
    let mut ok = HashSet::new();
    while ok.len() < n as usize {
        match dave.recv().await {
            Some(RelayFrame::Ok { req }) => assert!(ok.insert(req)),
            Some(RelayFrame::Error { message, .. }) => panic!("send refused: {message}"),
            Some(_) => {}
            None => panic!("dave's connection closed"),
        }
    }
}

/// Reads every envelope queued for `raw`'s account, acking each; returns their ids, each
/// of which must come once.
async fn drain(raw: &mut Raw, n: usize) -> HashSet<u64> {
    let mut ids = HashSet::new();
    while ids.len() < n {
        match raw.recv().await {
            Some(RelayFrame::Deliver { id, .. }) => {
                assert!(ids.insert(id), "envelope {id} delivered twice");
                raw.send(&ClientFrame::Ack { id }).await;
            }
            Some(_) => {}
            None => panic!("connection closed while draining"),
        }
    }
    ids
}

/// carol signs in on a socket with a small receive buffer and never reads it.
async fn stalled_carol(scene: &Scene, carol: &Path) -> Raw {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(relay_addr(&scene.relay)).await.unwrap();
    let mut raw = raw_over(tcp, &scene.relay).await.unwrap();
    raw.sign_in(carol).await;
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_does_not_read_is_dropped_by_the_write_deadline() {
    let mut scene = Scene::start(small()).await;
    let (carol, dave) = (scene.path("c"), scene.path("d"));
    register(&carol, "carol", &scene.relay.url).await;
    register(&dave, "dave", &scene.relay.url).await;
    let stalled = stalled_carol(&scene, &carol).await;
    let mut dave_raw = Raw::auth(&scene.relay.url, &dave).await;
    let n = 60;
    flood(&mut dave_raw, &common::account_id(&carol), n).await;
    scene.chat("during").await;
    wait_stat(&scene.relay, "rejections", "write_timeout", 1).await;
    // Nothing is lost: carol's next connection gets every envelope, once.
    let mut fresh = Raw::auth(&scene.relay.url, &carol).await;
    assert_eq!(drain(&mut fresh, n as usize).await.len(), n as usize);
    assert_eq!(stat(&scene.relay, "rejections", "kicked"), 0);
    drop(stalled);
    scene.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_connection_ends_an_older_one_blocked_in_a_write() {
    // A write deadline far beyond the test's patience: only the kick can end the old one.
    let config = RelayConfig {
        write_timeout: Duration::from_secs(600),
        ..small()
    };
    let mut scene = Scene::start(config).await;
    let (carol, dave) = (scene.path("c"), scene.path("d"));
    register(&carol, "carol", &scene.relay.url).await;
    register(&dave, "dave", &scene.relay.url).await;
    let mut stalled = stalled_carol(&scene, &carol).await;
    let mut dave_raw = Raw::auth(&scene.relay.url, &dave).await;
    let n = 60;
    flood(&mut dave_raw, &common::account_id(&carol), n).await;
    let mut fresh = Raw::auth(&scene.relay.url, &carol).await;
    wait_stat(&scene.relay, "rejections", "kicked", 1).await;
    assert_eq!(drain(&mut fresh, n as usize).await.len(), n as usize);
    scene.chat("during").await;
    // The old connection is gone: reading it now ends in its close.
    until_closed(plain(&mut stalled)).await;
    assert_eq!(stat(&scene.relay, "rejections", "write_timeout"), 0);
    scene.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_pinged_and_closed_when_silent() {
    let mut scene = Scene::start(small()).await;
    // A connection that reads gets pings (its WebSocket library answers them).
    let mut listening = anonymous_from("127.0.0.6", &scene.relay).await.unwrap();
    let ping = tokio::time::timeout(PATIENCE, async {
        loop {
            match listening.ws.next().await {
                Some(Ok(WsMessage::Ping(_))) => return true,
                Some(Ok(_)) => {}
                _ => return false,
            }
        }
    })
    .await
    .expect("no ping in time");
    assert!(ping, "the connection closed before a ping");
    drop(listening);
    // One that never reads never answers them, and is closed after the idle deadline.
    let mut silent = anonymous_from("127.0.0.7", &scene.relay).await.unwrap();
    scene.chat("during").await;
    until_closed(plain(&mut silent)).await;
    wait_stat(&scene.relay, "rejections", "idle_timeout", 1).await;
    // alice and bob, whose clients answer pings, were not among those closed.
    scene.chat("later").await;
    assert_eq!(stat(&scene.relay, "rejections", "idle_timeout"), 1);
    scene.finish().await;
}
