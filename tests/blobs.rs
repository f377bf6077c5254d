//! The relay's blob store over the real relay, through the client's transport (`LinkBlobs`)
//! on both links: a multi-chunk file goes up and comes down byte for byte; an upload and a
//! download interrupted by a relay killed with SIGKILL resume from what the relay made
//! durable; wrong offsets, oversized files, owners over quota and bad ids are refused with
//! their codes and create no file outside `blobs/`; blobs go when fetched by every recipient,
//! at their expiry, after the retention and when abandoned; an anonymous upload is tied to an
//! address, never to the account.

mod common;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use common::{PATIENCE, Scene};
use sotto::client::account;
use sotto::client::attachment::{BlobStatus, BlobTransport, LinkBlobs};
use sotto::client::conn::{Hello, Link, LinkError, LinkEvent};
use sotto::client::store::Store;
use sotto::relay::store::{Directory as _, RelayStore};
use sotto::relay::{BlobLimits, RateLimits, RelayConfig};
use sotto::wire::{ErrorCode, MAX_BLOB_CHUNK};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const CHUNK: usize = MAX_BLOB_CHUNK as usize;

/// A profile's two links to a relay, as the manager holds them, and their events.
struct Links {
    blobs: LinkBlobs,
    events: [mpsc::Receiver<LinkEvent>; 2],
    _cancel: tokio_util::sync::DropGuard,
}

impl Links {
    /// Both links of the profile in `dir` to the relay at `url`, once both are online.
    async fn open(dir: &Path, url: &str) -> Links {
        let store = Store::open(dir).unwrap();
        let reg = store.registration().unwrap();
        let (identity, _) = account::identity(&store).unwrap();
        let endpoint = account::endpoint(&store, Some(url), false).unwrap();
        let cancel = CancellationToken::new();
        let (tx, rx) = mpsc::channel(64);
        let hello = Hello::Account {
            account_id: reg.account_id,
            identity,
            trust_root: reg.trust_root.clone(),
        };
        let link = Link::spawn(endpoint.clone(), hello, tx, cancel.clone());
        let (anon_tx, anon_rx) = mpsc::channel(64);
        let anon = Link::spawn(
            endpoint,
            Hello::Anonymous {
                trust_root: reg.trust_root,
            },
            anon_tx,
            cancel.clone(),
        );
        let mut links = Links {
            blobs: LinkBlobs::new(Arc::new(link), Arc::new(anon)),
            events: [rx, anon_rx],
            _cancel: cancel.drop_guard(),
        };
        links.online().await;
        links
    }

    /// Waits until both links are online.
    async fn online(&mut self) {
        self.until(|e| matches!(e, LinkEvent::Online)).await;
    }

    /// Waits until both links have noticed the relay went away and are back online.
    async fn reconnected(&mut self) {
        self.until(|e| matches!(e, LinkEvent::Offline { .. })).await;
        self.until(|e| matches!(e, LinkEvent::Online)).await;
    }

    async fn until(&mut self, want: impl Fn(&LinkEvent) -> bool) {
        for events in &mut self.events {
            loop {
                match tokio::time::timeout(PATIENCE, events.recv()).await {
                    Ok(Some(e)) if want(&e) => break,
                    Ok(Some(_)) => continue,
                    other => panic!("a link did not get there: {other:?}"),
                }
            }
        }
    }
}

/// Bytes that differ at every position of a chunk, so a chunk stored at the wrong offset or
/// twice cannot go unnoticed.
fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[i % 4] ^ seed)
        .collect()
}

async fn upload(t: &LinkBlobs, secret: bool, id: &str, data: &[u8], from: u64) {
    let mut at = from as usize;
    while at < data.len() {
        let end = (at + CHUNK).min(data.len());
        t.put(secret, id, at as u64, data[at..end].to_vec())
            .await
            .unwrap();
        at = end;
    }
}

async fn download(t: &LinkBlobs, secret: bool, id: &str, size: u64, into: &mut Vec<u8>) {
    while (into.len() as u64) < size {
        let got = t
            .get(secret, id, into.len() as u64, MAX_BLOB_CHUNK)
            .await
            .unwrap();
        assert!(!got.is_empty(), "no bytes at {} of {size}", into.len());
        into.extend_from_slice(&got);
    }
}

fn code(r: Result<impl std::fmt::Debug, LinkError>) -> (ErrorCode, String) {
    match r {
        Err(LinkError::Refused { code, message }) => (code, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn blob_file(relay_dir: &Path, id: &str) -> PathBuf {
    relay_dir.join("blobs").join(id)
}

fn row(relay_dir: &Path, id: &str) -> Option<sotto::relay::store::BlobRow> {
    RelayStore::open(relay_dir).unwrap().blob(id).unwrap()
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_chunk_file_goes_up_and_down_over_both_links_and_goes_when_fetched() {
    let scene = Scene::new().await;
    let alice = Links::open(&scene.alice, &scene.relay.url).await;
    let bob = Links::open(&scene.bob, &scene.relay.url).await;
    let alice_id = common::account_id(&scene.alice);
    for (secret, seed) in [(false, 1u8), (true, 2u8)] {
        let data = content(2 * CHUNK + 12_345, seed);
        let size = data.len() as u64;
        let new = alice.blobs.create(secret, size, None, 1).await.unwrap();
        assert_eq!(new.chunk_size, MAX_BLOB_CHUNK);
        upload(&alice.blobs, secret, &new.blob_id, &data, 0).await;
        let status = bob.blobs.status(secret, &new.blob_id).await.unwrap();
        assert_eq!(status, BlobStatus { size, stored: size });
        // The relay stores exactly the bytes, in its blob directory.
        let file = blob_file(&scene.relay_dir, &new.blob_id);
        assert_eq!(std::fs::read(&file).unwrap(), data);
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&scene.relay_dir.join("blobs")), 0o700);
        // Who owns it: the account for a normal file; an address, and no account, for a
        // secret one.
        let owner = row(&scene.relay_dir, &new.blob_id).unwrap().owner;
        if secret {
            assert!(owner.parse::<IpAddr>().is_ok(), "{owner}");
            assert_ne!(owner, alice_id);
        } else {
            assert_eq!(owner, alice_id);
        }

        let mut got = Vec::new();
        download(&bob.blobs, secret, &new.blob_id, size, &mut got).await;
        assert!(
            got == data,
            "the downloaded bytes differ (secret: {secret})"
        );
        // A read at the end is empty, not an error.
        let end = bob.blobs.get(secret, &new.blob_id, size, 10).await.unwrap();
        assert!(end.is_empty());

        // The one recipient has it: file and row are gone, and so is the blob for anyone.
        bob.blobs.fetched(secret, &new.blob_id).await.unwrap();
        assert!(!file.exists(), "{}", file.display());
        assert_eq!(row(&scene.relay_dir, &new.blob_id), None);
        let (c, _) = code(bob.blobs.status(secret, &new.blob_id).await);
        assert_eq!(c, ErrorCode::NotFound);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_recipients_a_file_stays_until_both_fetched_and_a_retry_counts_once() {
    let scene = Scene::new().await;
    let alice = Links::open(&scene.alice, &scene.relay.url).await;
    let bob = Links::open(&scene.bob, &scene.relay.url).await;
    let data = content(1000, 3);
    let new = alice.blobs.create(true, 1000, None, 2).await.unwrap();
    // Not complete yet: neither readable nor fetchable.
    let (c, m) = code(bob.blobs.get(true, &new.blob_id, 0, 10).await);
    assert_eq!(c, ErrorCode::Forbidden, "{m}");
    assert!(m.contains("not fully uploaded"), "{m}");
    let (c, _) = code(bob.blobs.fetched(true, &new.blob_id).await);
    assert_eq!(c, ErrorCode::Forbidden);
    upload(&alice.blobs, true, &new.blob_id, &data, 0).await;
    bob.blobs.fetched(true, &new.blob_id).await.unwrap();
    // The same connection saying it again (a retry after a lost answer) is not a second
    // recipient.
    bob.blobs.fetched(true, &new.blob_id).await.unwrap();
    assert!(blob_file(&scene.relay_dir, &new.blob_id).exists());
    assert_eq!(
        row(&scene.relay_dir, &new.blob_id).unwrap().recipients_left,
        1
    );
    alice.blobs.fetched(true, &new.blob_id).await.unwrap();
    assert!(!blob_file(&scene.relay_dir, &new.blob_id).exists());
    assert_eq!(row(&scene.relay_dir, &new.blob_id), None);
}

/// A `sotto relay` process on `dir` listening on `addr`; returns it and its URL.
fn relay_process(dir: &Path, addr: &str) -> (Child, String) {
    let relay = common::cli::start_relay_at(dir, addr);
    (relay.child, relay.url)
}

/// Kills the relay process with SIGKILL and starts another on the same data directory and
/// address.
fn kill_and_restart(child: &mut Child, dir: &Path, url: &str) -> Child {
    child.kill().unwrap();
    child.wait().unwrap();
    let addr = url.split_once("://").unwrap().1;
    let (child, again) = relay_process(dir, addr);
    assert_eq!(again, url);
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_and_a_download_cut_by_a_killed_relay_resume_with_the_right_bytes() {
    let scene = Scene::new().await;
    let dir = scene.relay_dir.clone();
    scene.relay.stop().await;
    // The same data directory (accounts, certificate) served by a process we can kill -9.
    let (mut relay, url) = relay_process(&dir, "127.0.0.1:0");
    let mut alice = Links::open(&scene.alice, &url).await;
    let mut bob = Links::open(&scene.bob, &url).await;
    for (secret, seed) in [(false, 4u8), (true, 5u8)] {
        let data = content(3 * CHUNK + 999, seed);
        let size = data.len() as u64;
        let new = alice.blobs.create(secret, size, None, 1).await.unwrap();
        let id = new.blob_id;
        upload(&alice.blobs, secret, &id, &data[..2 * CHUNK], 0).await;
        relay.kill().unwrap();
        relay.wait().unwrap();
        // What a kill between a chunk's write and its record leaves: bytes past `stored`.
        let file = blob_file(&dir, &id);
        let mut tail = std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap();
        std::io::Write::write_all(&mut tail, &content(5000, 0xEE)).unwrap();
        drop(tail);
        let addr = url.split_once("://").unwrap().1.to_string();
        let (restarted, again) = relay_process(&dir, &addr);
        assert_eq!(again, url);
        relay = restarted;
        alice.reconnected().await;
        bob.reconnected().await;

        // The relay answers with what it had made durable, and cut the rest.
        let status = alice.blobs.status(secret, &id).await.unwrap();
        assert_eq!(
            status,
            BlobStatus {
                size,
                stored: 2 * CHUNK as u64
            }
        );
        assert_eq!(std::fs::metadata(&file).unwrap().len(), 2 * CHUNK as u64);
        upload(&alice.blobs, secret, &id, &data, status.stored).await;

        // A download cut by another kill goes on from the bytes already here.
        let mut got = Vec::new();
        download(&bob.blobs, secret, &id, CHUNK as u64 + 10, &mut got).await;
        relay = kill_and_restart(&mut relay, &dir, &url);
        alice.reconnected().await;
        bob.reconnected().await;
        download(&bob.blobs, secret, &id, size, &mut got).await;
        assert!(
            got == data,
            "the resumed download differs (secret: {secret})"
        );
        bob.blobs.fetched(secret, &id).await.unwrap();
        assert!(!file.exists());
    }
    relay.kill().unwrap();
    relay.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_are_refused_with_their_codes_and_no_file_lands_outside_blobs() {
    let config = RelayConfig {
        blobs: BlobLimits {
            max_blob: 1024 * 1024,
            owner_bytes: 2 * 1024 * 1024,
            owner_blobs: 3,
            ..BlobLimits::default()
        },
        ..RelayConfig::default()
    };
    let scene = Scene::with(config).await;
    let alice = Links::open(&scene.alice, &scene.relay.url).await;
    let bob = Links::open(&scene.bob, &scene.relay.url).await;
    let top_before = list(scene.tmp.path());

    // Over the relay's largest file.
    let (c, m) = code(alice.blobs.create(false, 1024 * 1024 + 1, None, 1).await);
    assert_eq!(c, ErrorCode::TooLarge, "{m}");
    assert!(m.contains("1.0 MiB"), "{m}");

    // A put anywhere but at the stored length names the offset to use.
    let a = alice
        .blobs
        .create(false, 1024 * 1024, None, 1)
        .await
        .unwrap();
    let (c, m) = code(alice.blobs.put(false, &a.blob_id, 10, vec![1; 10]).await);
    assert_eq!(c, ErrorCode::Malformed, "{m}");
    assert!(m.contains("offset 0"), "{m}");
    alice
        .blobs
        .put(false, &a.blob_id, 0, vec![1; 10])
        .await
        .unwrap();
    let (c, m) = code(alice.blobs.put(false, &a.blob_id, 0, vec![1; 10]).await);
    assert_eq!(c, ErrorCode::Malformed);
    assert!(m.contains("offset 10"), "{m}");
    // Someone else's blob cannot be written to.
    let (c, _) = code(bob.blobs.put(false, &a.blob_id, 10, vec![2; 10]).await);
    assert_eq!(c, ErrorCode::NotFound);
    assert_eq!(
        alice.blobs.status(false, &a.blob_id).await.unwrap().stored,
        10
    );

    // The owner's byte quota: a second 1 MiB fits, a third does not.
    alice
        .blobs
        .create(false, 1024 * 1024, None, 1)
        .await
        .unwrap();
    let (c, m) = code(alice.blobs.create(false, 1, None, 1).await);
    assert_eq!(c, ErrorCode::QuotaExceeded, "{m}");
    // The anonymous link is another owner (its address), with its own quota; its count
    // quota: three blobs, not four.
    for _ in 0..3 {
        alice.blobs.create(true, 10, None, 1).await.unwrap();
    }
    let (c, m) = code(alice.blobs.create(true, 10, None, 1).await);
    assert_eq!(c, ErrorCode::QuotaExceeded, "{m}");
    assert!(m.contains("3 files"), "{m}");

    // Unknown and malformed ids.
    let unknown = sotto::wire::new_blob_id();
    let (c, _) = code(bob.blobs.status(false, &unknown).await);
    assert_eq!(c, ErrorCode::NotFound);
    let (c, _) = code(bob.blobs.get(true, &unknown, 0, 10).await);
    assert_eq!(c, ErrorCode::NotFound);
    for bad in ["../x", "../../x", "/tmp/x", "x", ""] {
        let (c, m) = code(alice.blobs.put(false, bad, 0, vec![3; 10]).await);
        assert_eq!(c, ErrorCode::Malformed, "{bad}: {m}");
        let (c, _) = code(bob.blobs.get(true, bad, 0, 10).await);
        assert_eq!(c, ErrorCode::Malformed, "{bad}");
        let (c, _) = code(bob.blobs.fetched(false, bad).await);
        assert_eq!(c, ErrorCode::Malformed, "{bad}");
    }
    assert!(!scene.relay_dir.join("x").exists());
    assert_eq!(list(scene.tmp.path()), top_before);
    // The blob directory holds only the blobs created above, each named by its id.
    let names = list(&scene.relay_dir.join("blobs"));
    assert_eq!(names.len(), 5, "{names:?}");
    assert!(
        names.iter().all(|n| sotto::wire::valid_blob_id(n)),
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_started_beyond_the_rate_of_one_owner_are_refused() {
    let config = RelayConfig {
        rate: RateLimits {
            blob_creates_per_minute: 2,
            ..RateLimits::default()
        },
        ..RelayConfig::default()
    };
    let scene = Scene::with(config).await;
    let alice = Links::open(&scene.alice, &scene.relay.url).await;
    let bob = Links::open(&scene.bob, &scene.relay.url).await;
    for _ in 0..2 {
        alice.blobs.create(false, 10, None, 1).await.unwrap();
    }
    let (c, m) = code(alice.blobs.create(false, 10, None, 1).await);
    assert_eq!(c, ErrorCode::RateLimited, "{m}");
    // Another account has its own rate.
    bob.blobs.create(false, 10, None, 1).await.unwrap();
    assert_eq!(list(&scene.relay_dir.join("blobs")).len(), 3);
}

fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_deletes_blobs_at_expiry_after_retention_and_when_abandoned() {
    let scene = Scene::new().await;
    let alice = Links::open(&scene.alice, &scene.relay.url).await;
    let dir = &scene.relay_dir;
    let limits = BlobLimits::default();
    let now = now_ms();
    let expires_at = now + 60_000;
    let expiring = alice
        .blobs
        .create(true, 10, Some(expires_at), 2)
        .await
        .unwrap();
    upload(&alice.blobs, true, &expiring.blob_id, &[7; 10], 0).await;
    let kept = alice.blobs.create(false, 10, None, 2).await.unwrap();
    upload(&alice.blobs, false, &kept.blob_id, &[8; 10], 0).await;
    let abandoned = alice.blobs.create(false, 10, None, 2).await.unwrap();
    alice
        .blobs
        .put(false, &abandoned.blob_id, 0, vec![9; 4])
        .await
        .unwrap();
    let exists = |id: &str| blob_file(dir, id).exists() && row(dir, id).is_some();
    // The operator sees them: three blobs, 24 bytes on disk, one upload unfinished.
    let stats = Command::new(common::cli::BIN)
        .args(["relay", "admin", "stats", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(stats.status.success(), "{stats:?}");
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(
        stats["blobs"],
        serde_json::json!({ "blobs": 3, "bytes": 24, "incomplete": 1 })
    );

    // One sweep as the relay's periodic work runs it, at chosen times.
    let sweep = |at: u64| sotto::relay::blobs::sweep_dir(dir, &limits, at).unwrap();
    assert_eq!(sweep(expires_at - 1), 0);
    assert!(exists(&expiring.blob_id));
    assert_eq!(sweep(expires_at), 1);
    assert!(!exists(&expiring.blob_id) && !blob_file(dir, &expiring.blob_id).exists());
    let (c, _) = code(alice.blobs.status(true, &expiring.blob_id).await);
    assert_eq!(c, ErrorCode::NotFound);

    let day = 24 * 60 * 60 * 1000;
    assert_eq!(sweep(now + day - 60_000), 0);
    assert_eq!(sweep(now + day + 60_000), 1, "the abandoned upload");
    assert!(!exists(&abandoned.blob_id));
    assert!(!blob_file(dir, &abandoned.blob_id).exists());
    assert!(exists(&kept.blob_id));
    assert_eq!(sweep(now + 30 * day + 60_000), 1, "past the retention");
    assert!(!blob_file(dir, &kept.blob_id).exists());
    assert_eq!(list(&dir.join("blobs")), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_relay_sweeps_an_expired_blob_by_itself() {
    let config = RelayConfig {
        blobs: BlobLimits {
            sweep_interval: Duration::from_millis(50),
            ..BlobLimits::default()
        },
        ..RelayConfig::default()
    };
    let scene = Scene::with(config).await;
    let alice = Links::open(&scene.alice, &scene.relay.url).await;
    // Its message has already expired: the next sweep takes it.
    let new = alice
        .blobs
        .create(true, 10, Some(now_ms() - 1), 1)
        .await
        .unwrap();
    let file = blob_file(&scene.relay_dir, &new.blob_id);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while file.exists() || row(&scene.relay_dir, &new.blob_id).is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the relay never swept the expired blob"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (c, _) = code(alice.blobs.status(true, &new.blob_id).await);
    assert_eq!(c, ErrorCode::NotFound);
}
