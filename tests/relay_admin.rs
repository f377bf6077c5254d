//! What the relay's operator can rely on: one relay per data directory, and reset codes that
//! stop working after their time.

mod common;

use std::time::SystemTime;

use common::{TestRelay, register};
use sotto::client::account;
use sotto::client::store::Store;
use sotto::relay::store::RelayStore;
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
    let store = RelayStore::open(&relay_dir).unwrap();

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
