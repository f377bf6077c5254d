//! Files end to end (issue 21): alice attaches, bob receives, both threads, over the
//! in-process relay and its blob store; where a test needs to cut a link at a chosen chunk,
//! over a shared stand-in (`common::blobs::MemBlobs`, whose blobs are files in the scene). What a user sees (states, copies,
//! error sentences) and what must never happen (the plaintext in a profile or at the blob
//! store, a file left after its message disappeared, an altered file opened).

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::blobs::MemBlobs;
use common::files::{attach, file_state, ready, receive_file, save};
use common::*;
use sotto::client::attachment::{AttachmentState, plaintext_reader};
use sotto::client::manager::{Command, Event, Settings};
use sotto::client::store::Message;

/// A file of `len` bytes with `marker` in it, twice (one straddling a 64 KiB segment).
fn marked_file(dir: &Path, name: &str, marker: &str, len: usize) -> PathBuf {
    let mut data: Vec<u8> = (0..len).map(|i| b'a' + (i % 23) as u8).collect();
    let m = marker.as_bytes();
    data[10..10 + m.len()].copy_from_slice(m);
    let at = (64 * 1024 - 5).min(len - m.len());
    data[at..at + m.len()].copy_from_slice(m);
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

struct Files {
    scene: Scene,
    /// The stand-in blob store, or None: the relay's own.
    mem: Option<Arc<MemBlobs>>,
    /// Where the originals and the saved copies live: outside both profiles.
    outside: PathBuf,
}

impl Files {
    /// Over the relay's blob store.
    async fn new() -> Files {
        Self::with(false).await
    }

    /// Over `MemBlobs`.
    async fn mem() -> Files {
        Self::with(true).await
    }

    async fn with(mem: bool) -> Files {
        let scene = Scene::new().await;
        let mem = mem.then(|| Arc::new(MemBlobs::new(&scene.path("blobs"))));
        let outside = scene.path("outside");
        std::fs::create_dir_all(&outside).unwrap();
        Files {
            scene,
            mem,
            outside,
        }
    }

    async fn client(&self, dir: &Path, settings: Settings) -> Client {
        let url = &self.scene.relay.url;
        match &self.mem {
            Some(mem) => Client::start_with_blobs(dir, url, settings, mem.clone()).await,
            None => Client::start_with(dir, url, settings).await,
        }
    }

    async fn both(&self, bob: Settings) -> (Client, Client) {
        let alice = self.client(&self.scene.alice, Settings::default()).await;
        let bob = self.client(&self.scene.bob, bob).await;
        (alice, bob)
    }

    fn blob_dir(&self) -> PathBuf {
        match &self.mem {
            Some(mem) => mem.dir.clone(),
            None => self.scene.relay_dir.join("blobs"),
        }
    }

    /// The ids of the blobs the store holds.
    fn blob_ids(&self) -> Vec<String> {
        match std::fs::read_dir(self.blob_dir()) {
            Ok(d) => d
                .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
                .filter(|n| !n.contains('.'))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    fn blob_bytes(&self, id: &str) -> Vec<u8> {
        std::fs::read(self.blob_dir().join(id)).unwrap()
    }

    /// Flips one byte of blob `id`, as a dishonest relay or a damaged disk would.
    fn alter(&self, id: &str, at: usize) {
        let mut b = self.blob_bytes(id);
        b[at] ^= 0x01;
        std::fs::write(self.blob_dir().join(id), b).unwrap();
    }

    /// Files holding `marker` in either profile, the relay's data or the blob store.
    fn marker_files(&self, marker: &str) -> Vec<String> {
        let mut hits = Vec::new();
        for dir in [
            &self.scene.alice,
            &self.scene.bob,
            &self.scene.relay_dir,
            &self.blob_dir(),
        ] {
            for f in any_file_contains(dir, marker.as_bytes()) {
                hits.push(format!("{}/{f}", dir.display()));
            }
        }
        hits
    }
}

/// Asks for a file that waits at the relay (or failed) to be fetched now, as Enter does.
async fn ask_download(c: &mut Client, id: &str) {
    c.handle
        .commands
        .send(Command::Download {
            tag: rand::random(),
            id: id.into(),
        })
        .await
        .unwrap();
}

async fn open(c: &mut Client, id: &str) -> Result<PathBuf, String> {
    let tag = rand::random::<u64>();
    c.handle
        .commands
        .send(Command::OpenAttachment { tag, id: id.into() })
        .await
        .unwrap();
    match c
        .expect(|e| matches!(e, Event::AttachmentOpened { tag: t, .. } | Event::Failed { tag: t, .. } if *t == tag))
        .await
    {
        Event::AttachmentOpened { path, .. } => Ok(path),
        Event::Failed { error, .. } => Err(error),
        _ => unreachable!(),
    }
}

/// Waits (bounded by `PATIENCE`) until `cond` holds: for what happens in a task no event
/// reports, such as the blob store hearing a file was fetched.
async fn until(cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + PATIENCE;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "condition not met in {PATIENCE:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

fn sha(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).to_vec()
}

/// The encrypted files in a profile's attachments directory.
fn at_rest(profile: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(profile.join("attachments")) {
        Ok(d) => d.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

async fn round_trip(secret: bool, marker: &str) {
    let f = Files::new().await;
    let (mut alice, mut bob) = f.both(Settings::default()).await;
    let original = marked_file(&f.outside, "report.pdf", marker, 200_000);
    let id = attach(&mut alice, "bob", secret, &original, Some("the report")).await;
    file_state(&mut alice, &id, ready).await;
    let m = receive_file(&mut bob).await;
    assert_eq!(
        (m.id.as_str(), m.text.as_str(), m.secret),
        (id.as_str(), "the report", secret)
    );
    let a = m.attachment.clone().unwrap();
    assert_eq!(
        (a.name.as_str(), a.mime.as_str(), a.size),
        ("report.pdf", "application/pdf", 200_000)
    );
    file_state(&mut bob, &id, ready).await;

    // One ciphertext: alice's at rest is what the relay held and what bob checked.
    let (alice_files, bob_files) = (at_rest(&f.scene.alice), at_rest(&f.scene.bob));
    assert_eq!((alice_files.len(), bob_files.len()), (1, 1));
    assert_eq!(
        sha(&std::fs::read(&alice_files[0]).unwrap()),
        sha(&std::fs::read(&bob_files[0]).unwrap())
    );
    // Bob tells the relay once he holds it; he is its only recipient, so the blob goes.
    until(|| f.blob_ids().is_empty()).await;

    let want = std::fs::read(&original).unwrap();
    let saved = save(&mut bob, &id, &f.outside.join("saved.pdf"))
        .await
        .unwrap();
    assert_eq!(std::fs::read(&saved).unwrap(), want);
    let opened = open(&mut bob, &id).await.unwrap();
    assert_eq!(std::fs::read(&opened).unwrap(), want);
    assert_eq!(opened.file_name().unwrap(), "report.pdf");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&opened).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mode = std::fs::metadata(&bob_files[0])
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }
    let mut preview = Vec::new();
    std::io::Read::read_to_end(
        &mut plaintext_reader(&f.scene.bob, &id).unwrap(),
        &mut preview,
    )
    .unwrap();
    assert_eq!(preview, want);

    // A save never overwrites: the same destination again is refused with a sentence.
    let again = save(&mut bob, &id, &saved).await.unwrap_err();
    assert!(again.contains("exists already"), "{again}");
    // Into a directory, the file keeps its name.
    let into = f.outside.join("inbox");
    std::fs::create_dir(&into).unwrap();
    assert_eq!(
        save(&mut bob, &id, &into).await.unwrap(),
        into.join("report.pdf")
    );

    alice.barrier().await;
    bob.barrier().await;
    assert_eq!(
        f.marker_files(marker),
        Vec::<String>::new(),
        "plaintext at rest"
    );
    assert!(!f.scene.relay.received_any(marker.as_bytes()));
    bob.stop();
    assert!(!opened.exists(), "the opened copy outlived the session");
    alice.stop();
    assert_eq!(
        f.marker_files(marker),
        Vec::<String>::new(),
        "plaintext at rest after stop"
    );
    f.scene.relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_goes_to_bob_in_the_normal_thread_encrypted_everywhere_but_his_copies() {
    round_trip(false, "ATTACH-NORMAL-MARKER-71c2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_goes_to_bob_in_the_secret_thread_encrypted_everywhere_but_his_copies() {
    round_trip(true, "ATTACH-SECRET-MARKER-90d4").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disappearing_file_leaves_no_file_no_copy_and_no_blob_behind() {
    let marker = "ATTACH-EXPIRY-MARKER-5e3a";
    let f = Files::new().await;
    let (mut alice, mut bob) = f.both(Settings::default()).await;
    set_timer(&mut alice, true, Some(5)).await;
    let original = marked_file(&f.outside, "photo.png", marker, 100_000);
    let id = attach(&mut alice, "bob", true, &original, None).await;
    file_state(&mut alice, &id, ready).await;
    receive_file(&mut bob).await;
    file_state(&mut bob, &id, ready).await;
    let opened = open(&mut bob, &id).await.unwrap();
    assert!(opened.exists());
    bob.handle
        .commands
        .send(Command::MarkShown {
            ids: vec![id.clone()],
        })
        .await
        .unwrap();
    expired(&mut alice, &id).await;
    expired(&mut bob, &id).await;
    // The relay's part: the blob went once fetched (its expiry is the relay's own test).
    until(|| f.blob_ids().is_empty()).await;
    assert!(!opened.exists(), "the opened copy outlived its message");
    assert_eq!(at_rest(&f.scene.alice), Vec::<PathBuf>::new());
    assert_eq!(at_rest(&f.scene.bob), Vec::<PathBuf>::new());
    alice.barrier().await;
    bob.barrier().await;
    assert_eq!(f.marker_files(marker), Vec::<String>::new());
    alice.stop();
    bob.stop();
    assert_eq!(f.marker_files(marker), Vec::<String>::new());
    f.scene.relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_altered_blob_is_refused_with_a_sentence_and_nothing_is_shown() {
    let f = Files::new().await;
    let manual = Settings {
        auto_download: 0,
        ..Settings::default()
    };
    let (mut alice, mut bob) = f.both(manual).await;
    let original = marked_file(&f.outside, "notes.txt", "ALTERED-c0ffee", 150_000);
    let id = attach(&mut alice, "bob", true, &original, None).await;
    file_state(&mut alice, &id, ready).await;
    let m = receive_file(&mut bob).await;
    assert_eq!(m.attachment.unwrap().state, AttachmentState::Remote);
    let blob = f.blob_ids().pop().unwrap();
    f.alter(&blob, 70_000);
    ask_download(&mut bob, &id).await;
    let failed = file_state(&mut bob, &id, |s| {
        matches!(s, AttachmentState::Failed { .. })
    })
    .await;
    let AttachmentState::Failed { error } = failed else {
        unreachable!()
    };
    assert!(error.contains("does not match the digest"), "{error}");
    assert!(error.contains("send it again"), "{error}");
    assert_eq!(
        at_rest(&f.scene.bob),
        Vec::<PathBuf>::new(),
        "an altered file was kept"
    );
    let refused = open(&mut bob, &id).await.unwrap_err();
    assert!(refused.contains("not here yet"), "{refused}");
    assert!(plaintext_reader(&f.scene.bob, &id).is_err());
    alice.stop();
    bob.stop();
    f.scene.relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_over_the_limit_or_missing_is_refused_with_a_sentence() {
    let f = Files::new().await;
    let small = Settings {
        max_attachment: 1000,
        ..Settings::default()
    };
    let mut alice = f.client(&f.scene.alice, small).await;
    let big = marked_file(&f.outside, "big.bin", "BIG", 1001);
    for (path, words) in [
        (
            big,
            "the largest file sotto sends is 1000 bytes (max_attachment",
        ),
        (f.outside.join("missing.txt"), "no such file"),
        (f.outside.clone(), "not a regular file"),
    ] {
        let id = attach(&mut alice, "bob", false, &path, None).await;
        let want = id.clone();
        match alice
            .expect(|e| matches!(e, Event::MessageFailed { id, .. } | Event::Message(Message { id, .. }) if *id == want))
            .await
        {
            Event::MessageFailed { error, .. } => assert!(error.contains(words), "{error}"),
            other => panic!("stored: {other:?}"),
        }
    }
    assert!(f.blob_ids().is_empty());
    assert!(alice.history("bob", false).is_empty());
    alice.stop();
    f.scene.relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_over_auto_download_waits_at_the_relay_until_asked_for() {
    let f = Files::new().await;
    let manual = Settings {
        auto_download: 10_000,
        ..Settings::default()
    };
    let (mut alice, mut bob) = f.both(manual).await;
    let original = marked_file(&f.outside, "big.bin", "LARGE-77", 300_000);
    let id = attach(&mut alice, "bob", false, &original, None).await;
    file_state(&mut alice, &id, ready).await;
    let m = receive_file(&mut bob).await;
    assert_eq!(m.attachment.unwrap().state, AttachmentState::Remote);
    bob.barrier().await;
    let stored = bob.history("alice", false).pop().unwrap();
    assert_eq!(stored.attachment.unwrap().state, AttachmentState::Remote);
    assert_eq!(at_rest(&f.scene.bob), Vec::<PathBuf>::new());
    assert_eq!(f.blob_ids().len(), 1);
    ask_download(&mut bob, &id).await;
    file_state(
        &mut bob,
        &id,
        |s| matches!(s, AttachmentState::Downloading { done } if *done > 0),
    )
    .await;
    file_state(&mut bob, &id, ready).await;
    let saved = save(&mut bob, &id, &f.outside.join("got.bin"))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(saved).unwrap(),
        std::fs::read(original).unwrap()
    );
    alice.stop();
    bob.stop();
    f.scene.relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_cut_off_resumes_after_a_restart_and_the_file_arrives_whole() {
    let f = Files::mem().await;
    let mem = f.mem.clone().unwrap();
    let (mut alice, mut bob) = f.both(Settings::default()).await;
    let original = marked_file(&f.outside, "long.bin", "RESUME-31", 400_000);
    // Two chunks go up, then the link "drops".
    mem.fail_puts_after(Some(2));
    let id = attach(&mut alice, "bob", true, &original, None).await;
    file_state(
        &mut alice,
        &id,
        |s| matches!(s, AttachmentState::Uploading { done } if *done > 0),
    )
    .await;
    alice.barrier().await;
    let blob = loop {
        if let Some(b) = f.blob_ids().pop() {
            break b;
        }
        alice.barrier().await;
    };
    alice.stop();
    let stored = history(&f.scene.alice, "bob", true).pop().unwrap();
    assert!(
        matches!(
            stored.attachment.unwrap().state,
            AttachmentState::Uploading { .. }
        ),
        "the row says where it was"
    );
    assert_eq!(f.blob_bytes(&blob).len(), 2 * common::blobs::CHUNK as usize);
    mem.fail_puts_after(None);
    // The upload resumes as the manager starts (its events may go by before it is online):
    // the message leaves only once the whole file is at the store.
    let alice = f.client(&f.scene.alice, Settings::default()).await;
    receive_file(&mut bob).await;
    let sent = alice.history("bob", true).pop().unwrap();
    assert_eq!(sent.attachment.unwrap().state, AttachmentState::Ready);
    file_state(&mut bob, &id, ready).await;
    let saved = save(&mut bob, &id, &f.outside.join("whole.bin"))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(saved).unwrap(),
        std::fs::read(original).unwrap()
    );
    alice.stop();
    bob.stop();
    f.scene.relay.stop().await;
}

#[test]
fn headless_send_attach_and_save_refuse_what_cannot_work_with_a_sentence() {
    let (_rt, scene) = common::cli::scene();
    let missing = scene.path("nothing-here.png");
    let err = common::cli::fails(
        &scene.alice,
        &[
            "send",
            "--attach",
            missing.to_str().unwrap(),
            "bob",
            "caption",
        ],
    );
    assert!(err.contains("no such file; check the path"), "{err}");
    let err = common::cli::fails(
        &scene.alice,
        &["send", "--attach", scene.path("").to_str().unwrap(), "bob"],
    );
    assert!(err.contains("not a regular file"), "{err}");
    let err = common::cli::fails(&scene.bob, &["save", "alice", "no-such-id"]);
    assert!(
        err.contains("no message \"no-such-id\" with a file"),
        "{err}"
    );
    assert!(err.contains("sotto history alice"), "{err}");
    // Neither left a message behind.
    assert!(history(&scene.alice, "bob", false).is_empty());
}

/// Sends a small file from alice to bob in the normal thread and waits until both hold it.
async fn delivered_file(f: &Files, alice: &mut Client, bob: &mut Client, name: &str) -> String {
    let original = marked_file(&f.outside, name, "DELETE-MARKER-4b1f", 70_000);
    let id = attach(alice, "bob", false, &original, None).await;
    file_state(alice, &id, ready).await;
    receive_file(bob).await;
    file_state(bob, &id, ready).await;
    id
}

async fn delete(c: &mut Client, contact: &str, target: &str, for_everyone: bool) {
    c.handle
        .commands
        .send(Command::Delete {
            id: uuid::Uuid::new_v4().to_string(),
            contact: contact.into(),
            secret: false,
            target: target.into(),
            for_everyone,
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_way_a_message_goes_takes_its_file_and_its_opened_copy() {
    let f = Files::new().await;
    let (mut alice, mut bob) = f.both(Settings::default()).await;
    let a = delivered_file(&f, &mut alice, &mut bob, "a.txt").await;
    let b = delivered_file(&f, &mut alice, &mut bob, "b.txt").await;
    assert_eq!(at_rest(&f.scene.bob).len(), 2);

    // Delete for me: the file and the copy opened from it.
    let opened = open(&mut bob, &a).await.unwrap();
    delete(&mut bob, "alice", &a, false).await;
    bob.expect(|e| matches!(e, Event::MessageRemoved(x) if x.id == a))
        .await;
    assert!(!opened.exists());
    assert_eq!(at_rest(&f.scene.bob).len(), 1);

    // Delete for everyone: the sender's file and the recipient's.
    delete(&mut alice, "bob", &b, true).await;
    alice
        .expect(|e| matches!(e, Event::MessageChanged { message, .. } if message.id == b))
        .await;
    bob.expect(|e| matches!(e, Event::MessageChanged { message, .. } if message.id == b))
        .await;
    assert_eq!(at_rest(&f.scene.alice).len(), 1, "only a.txt's is left");
    assert_eq!(at_rest(&f.scene.bob), Vec::<PathBuf>::new());

    // Removing the contact: every file of both threads.
    delivered_file(&f, &mut alice, &mut bob, "c.txt").await;
    bob.handle
        .commands
        .send(Command::RemoveContact {
            tag: 9,
            handle: "alice".into(),
        })
        .await
        .unwrap();
    bob.expect(|e| matches!(e, Event::ContactChanged { tag: 9, .. }))
        .await;
    assert_eq!(at_rest(&f.scene.bob), Vec::<PathBuf>::new());
    alice.stop();
    bob.stop();
    f.scene.relay.stop().await;
}

/// alice and bob on a relay process of their own, which a test kills with SIGKILL and
/// starts again on the same address and data.
struct Killable {
    tmp: tempfile::TempDir,
    relay: common::cli::RelayProcess,
    alice_dir: PathBuf,
    bob_dir: PathBuf,
    alice: Client,
    bob: Client,
}

impl Killable {
    async fn new() -> Killable {
        let tmp = tempfile::tempdir().unwrap();
        let relay = common::cli::start_relay(&tmp.path().join("relay"));
        let (alice_dir, bob_dir) = (tmp.path().join("a"), tmp.path().join("b"));
        register(&alice_dir, "alice", &relay.url).await;
        register(&bob_dir, "bob", &relay.url).await;
        let alice = Client::start(&alice_dir, &relay.url).await;
        let bob = Client::start(&bob_dir, &relay.url).await;
        Killable {
            tmp,
            relay,
            alice_dir,
            bob_dir,
            alice,
            bob,
        }
    }

    fn kill_relay(&mut self) {
        self.relay.child.kill().unwrap();
        self.relay.child.wait().unwrap();
    }

    /// The clients come back to it by themselves.
    fn restart_relay(&mut self) {
        let addr = self.relay.url.trim_start_matches("wss://").to_string();
        self.relay = common::cli::start_relay_at(&self.tmp.path().join("relay"), &addr);
    }

    fn stop(self) {
        let Killable {
            alice,
            bob,
            mut relay,
            ..
        } = self;
        alice.stop();
        bob.stop();
        relay.child.kill().unwrap();
        relay.child.wait().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_cut_by_a_relay_killed_with_sigkill_resumes_when_it_is_back() {
    let mut k = Killable::new().await;
    let alice = &mut k.alice;
    let original = marked_file(k.tmp.path(), "big.iso", "KILLED-RELAY-2a7c", 48 << 20);
    let id = attach(alice, "bob", false, &original, None).await;
    file_state(
        alice,
        &id,
        |s| matches!(s, AttachmentState::Uploading { done } if *done > 0),
    )
    .await;
    k.kill_relay();
    let cut = history(&k.alice_dir, "bob", false).pop().unwrap();
    assert!(
        matches!(
            cut.attachment.unwrap().state,
            AttachmentState::Uploading { .. }
        ),
        "the upload finished before the relay was killed; use a larger file"
    );
    k.restart_relay();
    let bob = &mut k.bob;
    // Both clients come back by themselves; alice's upload goes on from what the relay kept.
    let m = receive_file(bob).await;
    assert_eq!(m.id, id);
    // Over `auto_download`: fetched when asked.
    ask_download(bob, &id).await;
    let end = file_state(bob, &id, |s| {
        matches!(s, AttachmentState::Ready | AttachmentState::Failed { .. })
    })
    .await;
    assert_eq!(end, AttachmentState::Ready);
    let saved = save(bob, &id, &k.tmp.path().join("back.iso"))
        .await
        .unwrap();
    assert!(std::fs::read(saved).unwrap() == std::fs::read(&original).unwrap());
    k.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_cut_by_a_relay_killed_with_sigkill_resumes_from_what_arrived() {
    let mut k = Killable::new().await;
    let (alice, bob) = (&mut k.alice, &mut k.bob);
    let original = marked_file(k.tmp.path(), "film.mkv", "KILLED-DOWNLOAD-91fe", 64 << 20);
    let id = attach(alice, "bob", true, &original, None).await;
    file_state(alice, &id, ready).await;
    assert_eq!(receive_file(bob).await.id, id);
    ask_download(bob, &id).await;
    // Well into the file, so that starting over would show as progress going back.
    const CUT: u64 = 8 << 20;
    file_state(
        bob,
        &id,
        |s| matches!(s, AttachmentState::Downloading { done } if *done >= CUT),
    )
    .await;
    k.kill_relay();
    let cut = history(&k.bob_dir, "alice", true).pop().unwrap();
    assert!(
        matches!(
            cut.attachment.unwrap().state,
            AttachmentState::Downloading { .. }
        ),
        "the download finished before the relay was killed; use a larger file"
    );
    k.restart_relay();
    let bob = &mut k.bob;
    // bob's client comes back by itself and goes on from the bytes it already has.
    loop {
        let state = file_state(bob, &id, |_| true).await;
        match state {
            AttachmentState::Downloading { done } => {
                assert!(done >= CUT, "the download started over: {done} bytes")
            }
            AttachmentState::Ready => break,
            other => panic!("the resumed download ended {other:?}"),
        }
    }
    let saved = save(bob, &id, &k.tmp.path().join("back.mkv"))
        .await
        .unwrap();
    assert!(sha(&std::fs::read(saved).unwrap()) == sha(&std::fs::read(&original).unwrap()));
    k.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_received_picture_is_previewed_scaled_from_its_encrypted_file_without_a_plaintext_copy() {
    let f = Files::new().await;
    let (mut alice, mut bob) = f.both(Settings::default()).await;
    let picture =
        image::RgbaImage::from_fn(400, 200, |x, _| image::Rgba([(x % 256) as u8, 0, 0, 255]));
    let original = f.outside.join("sunset.png");
    picture.save(&original).unwrap();
    let id = attach(&mut alice, "bob", true, &original, None).await;
    file_state(&mut alice, &id, ready).await;
    let m = receive_file(&mut bob).await;
    assert!(m.attachment.as_ref().unwrap().is_image());
    file_state(&mut bob, &id, ready).await;

    for (max_w, max_h, want) in [(100, 100, Some((100, 50))), (0, 0, None)] {
        bob.handle
            .commands
            .send(Command::Preview {
                id: id.clone(),
                max_w,
                max_h,
            })
            .await
            .unwrap();
        match bob
            .expect(|e| matches!(e, Event::Preview { id: i, .. } if *i == id))
            .await
        {
            Event::Preview {
                width,
                height,
                image,
                ..
            } => {
                assert_eq!((width, height), (400, 200), "the picture's own size");
                assert_eq!(
                    image.map(|i| i.dimensions()),
                    want,
                    "scaled to fit, or the size alone"
                );
            }
            _ => unreachable!(),
        }
    }
    // Only the encrypted file is in bob's profile: no decoded copy was written for it.
    assert_eq!(at_rest(&f.scene.bob).len(), 1);
    let mut dirs = vec![f.scene.bob.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            assert!(
                !p.to_string_lossy().contains("sunset"),
                "a copy: {}",
                p.display()
            );
            if p.is_dir() {
                dirs.push(p);
            }
        }
    }
}
