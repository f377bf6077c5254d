//! A client's one-time prekey pool under a drain: it tops up when the relay's count runs low,
//! but at most once a minute however often a drainer makes the count fall. (That it prunes
//! the oldest unused keys, ids wrapping, is a unit test in `client::account`.)

mod common;

use std::path::Path;

use common::{Client, PATIENCE, Raw, Scene};
use sotto::client::account::{PREKEY_BATCH, PREKEY_LOW};
use sotto::client::manager::{ConnState, Event};
use sotto::client::store::Store;
use sotto::relay::store::{Directory as _, RelayStore};
use sotto::relay::{RateLimits, RelayConfig};
use sotto::wire::{ClientFrame, RelayFrame};

/// Bundles of one target come with one-time keys as fast as mallory asks, so her drain
/// reaches the pool's floor in one go.
fn drainable() -> RelayConfig {
    RelayConfig {
        rate: RateLimits {
            bundles_per_target_per_minute: 10_000,
            bundles_per_requester_per_minute: 10_000,
            ..RateLimits::default()
        },
        ..RelayConfig::default()
    }
}

/// How many one-time EC keys bob's client has minted (its mint counter, minus the first id).
fn minted(bob: &Path) -> u32 {
    let v = Store::open(bob).unwrap().get("next_prekey_id").unwrap();
    u32::from_le_bytes(v.unwrap().try_into().unwrap()) - 1
}

/// mallory fetches bob's bundle until the relay holds fewer than `PREKEY_LOW` of his EC keys.
async fn drain(mallory: &mut Raw, relay: &Path, bob_id: &str, req: &mut u64) {
    let pool = || {
        RelayStore::open(relay)
            .unwrap()
            .prekey_count(bob_id)
            .unwrap()
            .0
    };
    let mut left = pool();
    while left >= PREKEY_LOW {
        for _ in 0..=left - PREKEY_LOW {
            *req += 1;
            mallory
                .send(&ClientFrame::FetchBundle {
                    req: *req,
                    account_id: bob_id.to_string(),
                })
                .await;
            let want = *req;
            mallory
                .expect(|f| matches!(f, RelayFrame::Bundle { req, .. } if *req == want))
                .await;
        }
        // bob's top-up may have landed in between.
        left = pool();
    }
}

/// Waits until `cond` holds, polling the stores; fails the test after `PATIENCE`.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_client_tops_up_at_most_once_a_minute() {
    let scene = Scene::with(drainable()).await;
    let mallory_dir = scene.path("m");
    common::register(&mallory_dir, "mallory", &scene.relay.url).await;
    let bob_id = common::account_id(&scene.bob);
    let mut bob = Client::start(&scene.bob, &scene.relay.url).await;
    assert_eq!(minted(&scene.bob), PREKEY_BATCH, "the batch registered");
    let mut mallory = Raw::auth(&scene.relay.url, &mallory_dir).await;
    let mut req = 0;

    // The first drain: bob's client hears the count fall and uploads one batch.
    drain(&mut mallory, &scene.relay_dir, &bob_id, &mut req).await;
    until("bob's client topped up", || {
        minted(&scene.bob) == 2 * PREKEY_BATCH
    })
    .await;
    let relay_pool = || {
        RelayStore::open(&scene.relay_dir)
            .unwrap()
            .prekey_count(&bob_id)
            .unwrap()
            .0
    };
    until("the relay stored bob's new batch", || {
        relay_pool() >= PREKEY_BATCH
    })
    .await;

    // The second drain, within the minute: every fetch tells bob the count fell again.
    drain(&mut mallory, &scene.relay_dir, &bob_id, &mut req).await;
    // A sign-in as bob ends his client's connection; it signs in again, and the relay opens
    // the new connection with bob's (low) count before `drained`: once bob's client reports
    // `drained`, it has handled that count and every frame before it.
    let intruder = Raw::auth(&scene.relay.url, &scene.bob).await;
    bob.expect(|e| matches!(e, Event::Connection(ConnState::Offline { .. })))
        .await;
    bob.expect(|e| matches!(e, Event::Connection(ConnState::Online)))
        .await;
    bob.expect(|e| matches!(e, Event::Drained)).await;
    drop(intruder);

    assert_eq!(
        minted(&scene.bob),
        2 * PREKEY_BATCH,
        "no second batch within the minute"
    );
    assert!(relay_pool() < PREKEY_LOW, "the pool stays low until then");
    bob.stop();
}
