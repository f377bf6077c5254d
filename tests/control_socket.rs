//! Headless commands on a profile another sotto already runs (the chat screen, say): `send`,
//! `send --attach`, `save`, `timer` and `recv` join that session through the profile's control socket instead of
//! failing on its lock, and nobody else can use the socket.

mod common;

use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};

use common::Client;
use common::cli::{Follow, fails, json_lines, ok, scene};
use sotto::client::attachment::AttachmentState;
use sotto::client::control::SOCKET;
use sotto::client::manager::Event;

#[test]
fn send_and_recv_work_while_the_chat_screen_holds_the_profile() {
    let (rt, s) = scene();
    // alice's running manager stands for her chat screen: it holds her profile's lock.
    let (mut alice, mut bob) = rt.block_on(s.online());

    ok(&s.alice, &["send", "bob", "from a script"]);
    ok(
        &s.alice,
        &["send", "--secret", "bob", "a secret from a script"],
    );
    // The screen shows what the script sent, as if typed there...
    for text in ["from a script", "a secret from a script"] {
        rt.block_on(
            alice.expect(|e| matches!(e, Event::Message(m) if m.outgoing && m.text == text)),
        );
    }
    // ...and bob gets both, in their threads.
    let first = rt.block_on(bob.receive());
    let second = rt.block_on(bob.receive());
    assert_eq!(
        [
            (first.text.as_str(), first.secret),
            (second.text.as_str(), second.secret)
        ],
        [("from a script", false), ("a secret from a script", true)]
    );

    // What arrives while the screen runs is printed by `recv` on the same profile.
    rt.block_on(bob.send("alice", false, "for your script"));
    rt.block_on(alice.expect(|e| matches!(e, Event::Message(m) if !m.outgoing)));
    let printed = json_lines(&ok(&s.alice, &["recv"]));
    assert_eq!(printed.len(), 1, "{printed:?}");
    assert_eq!(printed[0]["text"], "for your script");
    assert_eq!(printed[0]["from"], "bob");
    // Printed once: it is marked read in the running session.
    assert_eq!(
        json_lines(&ok(&s.alice, &["recv"])),
        Vec::<serde_json::Value>::new()
    );

    // `recv --follow` streams through the socket as well.
    let follow = Follow::start(&s.alice);
    rt.block_on(bob.send("alice", true, "followed"));
    let line: serde_json::Value = serde_json::from_str(&follow.line().unwrap()).unwrap();
    assert_eq!(
        (line["text"].as_str(), line["thread"].as_str()),
        (Some("followed"), Some("secret"))
    );
    let (status, _) = follow.stop(libc::SIGTERM);
    assert!(status.success());

    // A timer change through the socket reaches the peer like one made on the screen.
    ok(&s.alice, &["timer", "bob", "30s"]);
    rt.block_on(bob.expect(|e| {
        matches!(
            e,
            Event::TimerSet {
                timer: Some(30),
                secret: false,
                ..
            }
        )
    }));
    alice.stop();
    bob.stop();
}

#[test]
fn files_are_sent_and_saved_while_the_chat_screens_hold_both_profiles() {
    let (rt, s) = scene();
    let (mut alice, mut bob) = rt.block_on(s.online());
    let outside = s.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let original = outside.join("notes.txt");
    let content = b"FILE-OVER-THE-SOCKET-2c41 and the rest of the notes".repeat(100);
    std::fs::write(&original, &content).unwrap();

    ok(
        &s.alice,
        &[
            "send",
            "--attach",
            original.to_str().unwrap(),
            "bob",
            "my notes",
        ],
    );
    // alice's screen shows the file the script sent; bob's takes it in at once (it is small).
    let sent = rt.block_on(
        alice.expect(|e| matches!(e, Event::Message(m) if m.outgoing && m.attachment.is_some())),
    );
    let Event::Message(sent) = sent else {
        unreachable!()
    };
    assert_eq!(sent.text, "my notes");
    let got = rt.block_on(bob.receive());
    assert_eq!(got.id, sent.id);
    rt.block_on(bob.expect(|e| {
        matches!(e, Event::Attachment { id, attachment }
            if *id == sent.id && attachment.state == AttachmentState::Ready)
    }));

    // bob saves it from a script while his screen runs: the running session writes it.
    let dest = outside.join("saved.txt");
    let printed = ok(&s.bob, &["save", "alice", &sent.id, dest.to_str().unwrap()]);
    assert_eq!(printed.trim(), dest.display().to_string());
    assert_eq!(std::fs::read(&dest).unwrap(), content);
    alice.stop();
    bob.stop();
}

#[test]
fn the_socket_is_private_and_goes_with_the_session() {
    let (rt, s) = scene();
    let socket = s.alice.join(SOCKET);
    // A file left by a process that died does not stop the next session from listening.
    std::fs::write(&socket, b"stale").unwrap();
    let alice = rt.block_on(Client::start(&s.alice, &s.relay.url));
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket(), "{:?}", meta.file_type());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    alice.stop();
    assert!(!socket.exists(), "the socket outlived its session");
    // With nobody running, `send` starts a session of its own again.
    ok(&s.alice, &["send", "bob", "on my own"]);
}

#[test]
fn a_profile_held_by_a_process_that_does_not_answer_gives_a_clear_error() {
    let (_rt, s) = scene();
    // Holding the lock without a socket: a sotto that is stuck, or an older one.
    let _held = sotto::dir_lock::DirLock::acquire(&s.alice).unwrap();
    let err = fails(&s.alice, &["send", "bob", "hello"]);
    assert!(err.contains("in use by another sotto process"), "{err}");
    assert!(err.contains("try again"), "{err}");
}
