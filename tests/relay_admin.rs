//! What the relay's operator can rely on: one relay per data directory, and reset codes that
//! stop working after their time.

mod common;

use std::time::SystemTime;

use common::{TestRelay, register};
use sotto::client::account;
use sotto::client::store::Store;
use sotto::relay::store::{Directory as _, RelayStore};
use sotto::relay::{self, RelayConfig, RelayError};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_relay_on_the_same_data_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("relay");
    let first = TestRelay::start(&dir).await;
    // The first relay is serving: a profile registers through it.
    register(&tmp.path().join("a"), "alice", &first.url).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    // Told to stop before it starts: a relay that took the directory would return Ok at once.
    let stop = CancellationToken::new();
    stop.cancel();
    let second = relay::run(listener, &dir, RelayConfig::default(), stop).await;
    let Err(e @ RelayError::InUse(_)) = second else {
        panic!("a second relay started on the same directory: {second:?}");
    };
    assert!(e.to_string().contains("another relay is running"), "{e}");
    // Once the first has stopped, the directory is free again.
    first.stop().await;
    let again = TestRelay::start(&dir).await;
    again.stop().await;
}

/// Registers `handle` anew at `url` in `dir` with a reset's claim code.
async fn claim(dir: &std::path::Path, handle: &str, url: &str, code: &str) -> Result<(), String> {
    let store = Store::open(dir).unwrap();
    account::init_claiming(
        &store,
        handle,
        url,
        Some(code.to_string()),
        false,
        SystemTime::now(),
        &mut rand::rng(),
    )
    .await
    .map(|_| ())
    .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_code_past_its_time_claims_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let relay_dir = tmp.path().join("relay");
    let relay = TestRelay::start(&relay_dir).await;
    register(&tmp.path().join("bob-old"), "bob", &relay.url).await;
    let now = sotto::client::clock::Clock::system().now_ms();
    let mut store = RelayStore::open(&relay_dir).unwrap();

    store
        .arm_reset("bob", b"late-code", now - 1)
        .unwrap()
        .unwrap();
    let err = claim(&tmp.path().join("bob-late"), "bob", &relay.url, "late-code")
        .await
        .unwrap_err();
    assert!(err.contains("claim code is not valid"), "{err}");

    // The same handle, armed again with time left: the claim goes through, once.
    store
        .arm_reset("bob", b"good-code", now + 60_000)
        .unwrap()
        .unwrap();
    claim(&tmp.path().join("bob-new"), "bob", &relay.url, "good-code")
        .await
        .unwrap();
    let err = claim(
        &tmp.path().join("bob-again"),
        "bob",
        &relay.url,
        "good-code",
    )
    .await
    .unwrap_err();
    assert!(err.contains("claim code is not valid"), "{err}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_stats_show_the_counters_and_who_fills_the_queue_but_no_sealed_sender() {
    let tmp = tempfile::tempdir().unwrap();
    let relay_dir = tmp.path().join("relay");
    let relay = TestRelay::start(&relay_dir).await;
    let (ad, bd) = (tmp.path().join("a"), tmp.path().join("b"));
    register(&ad, "alice", &relay.url).await;
    register(&bd, "bob", &relay.url).await;
    // bob is away: alice's normal and secret messages wait in the queue.
    let mut alice = common::Client::start(&ad, &relay.url).await;
    alice.send("bob", false, "normal one").await;
    alice.send("bob", true, "secret one").await;
    alice.stop();
    // A stopping relay writes its counters.
    relay.stop().await;

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sotto"))
        .args(["relay", "admin", "stats", "--data-dir"])
        .arg(&relay_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let queue = &report["queue"];
    assert_eq!(queue["envelopes"], 2, "{report}");
    assert_eq!(queue["sealed"], 1, "{report}");
    // The normal message names its sender; the sealed one counts only for its recipient.
    assert_eq!(queue["top_senders"][0][0], "alice", "{report}");
    assert_eq!(queue["top_senders"][0][1], 1, "{report}");
    assert_eq!(queue["top_recipients"][0][0], "bob", "{report}");
    assert_eq!(queue["top_recipients"][0][1], 2, "{report}");
    assert!(
        report["counters"]["accepted"].as_u64().unwrap() >= 3,
        "{report}"
    );
    assert!(report["counters"]["rejections"]["full"].is_number());
}
