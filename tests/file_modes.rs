//! A profile and a relay's data are private to their user: directories 0700, every file in
//! them (databases, WAL and SHM, log, lock) 0600, through the binary and through the
//! library alike, while running, after a sweep has truncated the WAL, and after opening a
//! profile that an older version or a user left readable by others.
#![cfg(unix)]

mod common;

use std::os::unix::fs::{FileTypeExt as _, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::{Scene, TestRelay};
use sotto::client::manager::{Command as ClientCommand, Event};
use sotto::client::store::{MessageState, Store};

const BIN: &str = env!("CARGO_BIN_EXE_sotto");

/// The usual umask, whatever the one these tests were started with: the library must make
/// its files private by itself, not by luck. (The binary sets its own.)
fn loose_umask() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: umask(2) only replaces the process's file mode creation mask.
    ONCE.call_once(|| unsafe {
        libc::umask(0o022);
    });
}

/// `p`'s permission bits, in octal as `ls` and `chmod` spell them.
fn mode(p: &Path) -> String {
    format!(
        "{:04o}",
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    )
}

fn chmod(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

/// Asserts `dir` is 0700 and every file in it 0600 (a running session's control socket
/// included), and so for a relay's blob directory in it; returns the entries' names.
fn assert_private(dir: &Path) -> Vec<String> {
    assert_eq!(mode(dir), "0700", "{}", dir.display());
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let kind = std::fs::symlink_metadata(&path).unwrap().file_type();
        if kind.is_dir() && name == sotto::relay::blobs::DIR {
            assert_private(&path);
            names.push(name);
            continue;
        }
        assert!(
            kind.is_file() || (kind.is_socket() && name == sotto::client::control::SOCKET),
            "{} is not a file",
            path.display()
        );
        assert_eq!(mode(&path), "0600", "{}", path.display());
        names.push(name);
    }
    names.sort();
    names
}

fn sotto(profile: &Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .env("SOTTO_LOG", "info")
        .arg("--data-dir")
        .arg(profile)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sotto {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotto_init_makes_a_private_profile_and_the_library_does_too() {
    loose_umask();
    let tmp = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(&tmp.path().join("relay")).await;
    // Through the binary, into a directory nested two levels down.
    let a = tmp.path().join("profiles").join("a");
    sotto(&a, &["init", "--handle", "alice", "--relay", &relay.url]);
    assert_eq!(assert_private(&a), ["lock", "sotto.db", "sotto.log"]);
    assert_eq!(mode(&tmp.path().join("profiles")), "0700");
    // Through the library, which does not go through the binary's umask.
    let b = tmp.path().join("b");
    common::register(&b, "bob", &relay.url).await;
    assert_eq!(assert_private(&b), ["sotto.db"]);
    assert_private(&relay.dir);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_clients_send_and_receive_the_wal_and_shm_are_private_too() {
    loose_umask();
    let scene = Scene::new().await;
    let (mut alice, mut bob) = scene.online().await;
    alice.send("bob", true, "secret").await;
    bob.receive().await;
    bob.send("alice", false, "normal").await;
    alice.receive().await;
    for dir in [&scene.alice, &scene.bob] {
        let names = assert_private(dir);
        assert!(
            names.contains(&"sotto.db-wal".to_string()) && names.contains(&"sotto.db-shm".into()),
            "{names:?}"
        );
    }
    let names = assert_private(&scene.relay_dir);
    assert!(names.contains(&"relay.db-wal".to_string()), "{names:?}");
    alice.stop();
    bob.stop();
    scene.relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_sweep_truncates_the_wal_every_file_is_still_private() {
    loose_umask();
    let scene = Scene::new().await;
    let (mut alice, mut bob) = scene.online().await;
    let timer = uuid::Uuid::new_v4().to_string();
    alice
        .handle
        .commands
        .send(ClientCommand::SetTimer {
            id: timer.clone(),
            contact: "bob".into(),
            secret: true,
            timer: Some(5),
        })
        .await
        .unwrap();
    alice
        .expect(
            |e| matches!(e, Event::MessageState { id, state: MessageState::Sent } if *id == timer),
        )
        .await;
    let id = alice.send("bob", true, "going").await;
    bob.expect(|e| matches!(e, Event::Message(m) if m.id == id))
        .await;
    bob.handle
        .commands
        .send(ClientCommand::MarkShown {
            ids: vec![id.clone()],
        })
        .await
        .unwrap();
    for c in [&mut alice, &mut bob] {
        c.expect(|e| matches!(e, Event::Expired(gone) if gone.iter().any(|g| g.id == id)))
            .await;
    }
    for dir in [&scene.alice, &scene.bob] {
        let names = assert_private(dir);
        assert!(names.contains(&"sotto.db-wal".to_string()), "{names:?}");
    }
    assert_private(&scene.relay_dir);
    alice.stop();
    bob.stop();
    scene.relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_and_a_relay_dir_left_readable_are_tightened_when_opened() {
    loose_umask();
    let tmp = tempfile::tempdir().unwrap();
    let relay_dir = tmp.path().join("relay");
    let relay = TestRelay::start(&relay_dir).await;
    let a = tmp.path().join("a");
    sotto(&a, &["init", "--handle", "alice", "--relay", &relay.url]);
    relay.stop().await;

    // As an older sotto left them, and a file of the user's that is none of sotto's.
    chmod(&a, 0o755);
    for f in ["sotto.db", "sotto.log", "lock"] {
        chmod(&a.join(f), 0o644);
    }
    std::fs::write(a.join("notes.txt"), "mine").unwrap();
    chmod(&a.join("notes.txt"), 0o644);
    sotto(&a, &["info"]);
    assert_eq!(mode(&a), "0700");
    for f in ["sotto.db", "sotto.log", "lock"] {
        assert_eq!(mode(&a.join(f)), "0600", "{f}");
    }
    assert_eq!(mode(&a.join("notes.txt")), "0644", "not sotto's file");
    let log = std::fs::read_to_string(a.join("sotto.log")).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("made private to this user"))
        .unwrap_or_else(|| panic!("no line about it in the log:\n{log}"));
    assert!(
        line.contains("the directory 0755 -> 0700")
            && line.contains("sotto.db 0644 -> 0600")
            && line.contains("lock 0644 -> 0600"),
        "{line}"
    );

    // The library tightens too: a profile and a relay's data directory.
    chmod(&a, 0o750);
    chmod(&a.join("sotto.db"), 0o640);
    Store::open(&a).unwrap();
    assert_eq!(
        (mode(&a), mode(&a.join("sotto.db"))),
        ("0700".into(), "0600".into())
    );
    chmod(&relay_dir, 0o755);
    chmod(&relay_dir.join("relay.db"), 0o644);
    sotto::relay::store::RelayStore::open(&relay_dir).unwrap();
    assert_private(&relay_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_keeps_its_temporary_files_private() {
    loose_umask();
    let demo = sotto::demo::Demo::start().await.unwrap();
    let root = demo.you.parent().unwrap().to_path_buf();
    assert_eq!(mode(&root), "0700");
    for dir in std::fs::read_dir(&root).unwrap() {
        assert_private(&dir.unwrap().path());
    }
    demo.stop().await;
}
