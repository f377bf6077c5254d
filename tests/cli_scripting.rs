//! The headless commands as a script uses them: the one JSON shape of `recv`, `recv --follow`
//! and `history`, `contacts --json`, `send HANDLE -` and `verify --check`, through the built
//! binary against an in-process relay.

mod common;

use std::collections::BTreeSet;

use common::Client;
use common::cli::{Follow, fails, json_lines, ok, scene, sotto, sotto_with_stdin};
use sotto::client::export::{Direction, ExportedMessage, Thread};
use sotto::client::store::{MessageKind, MessageState};

fn parsed(line: &str) -> ExportedMessage {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// The field names of a JSON object line.
fn keys(line: &str) -> BTreeSet<String> {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v.as_object().unwrap().keys().cloned().collect()
}

#[test]
fn recv_follow_and_history_print_a_message_in_one_shape() {
    let (_rt, s) = scene();
    ok(&s.alice, &["send", "bob", "first"]);
    let from_recv = ok(&s.bob, &["recv"]);
    let from_recv = from_recv.trim_end();

    let follow = Follow::start(&s.bob);
    ok(&s.alice, &["send", "--secret", "bob", "second"]);
    let from_follow = follow.line().unwrap();
    let (status, rest) = follow.stop(libc::SIGTERM);
    assert!(status.success(), "recv --follow should exit 0 on SIGTERM");
    assert_eq!(rest, Vec::<String>::new());

    let history: Vec<String> = ok(&s.bob, &["history", "alice"])
        .lines()
        .chain(ok(&s.bob, &["history", "alice", "--secret"]).lines())
        .map(String::from)
        .collect();
    assert_eq!(history.len(), 2, "{history:?}");
    // The same message, the same fields, the same values, whichever command printed it.
    assert_eq!(parsed(from_recv), parsed(&history[0]));
    assert_eq!(parsed(&from_follow), parsed(&history[1]));
    let fields: BTreeSet<String> = [
        "id",
        "thread",
        "direction",
        "from",
        "to",
        "kind",
        "text",
        "timer",
        "sent_at",
        "expires_at",
        "state",
        "target",
        "emoji",
        "edited",
        "deleted",
        "reactions",
        "attachment",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    for line in [from_recv, &from_follow, &history[0], &history[1]] {
        assert_eq!(keys(line), fields, "{line}");
    }

    let first = parsed(from_recv);
    assert_eq!(
        (first.thread, first.direction, first.kind, first.state),
        (
            Thread::Normal,
            Direction::In,
            MessageKind::Text,
            MessageState::Received
        )
    );
    assert_eq!((first.from.as_str(), first.to.as_str()), ("alice", "bob"));
    assert_eq!(first.text, "first");
    assert_eq!(first.expires_at, None);
    // RFC 3339 in UTC, and the same instant in milliseconds.
    let t = &first.sent_at.rfc3339;
    assert!(t.ends_with('Z') && t.contains('T') && t.len() >= 20, "{t}");
    let secs = first.sent_at.ms / 1000;
    let hms = format!(
        "{:02}:{:02}:{:02}",
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60
    );
    assert!(t.contains(&hms), "{t} is not {} ms", first.sent_at.ms);
    assert_eq!(parsed(&from_follow).thread, Thread::Secret);

    // The sender's history holds the same message from the other side.
    let sent = parsed(ok(&s.alice, &["history", "bob"]).trim_end());
    assert_eq!(
        (sent.id.as_str(), sent.direction),
        (first.id.as_str(), Direction::Out)
    );
    assert_eq!((sent.from.as_str(), sent.to.as_str()), ("alice", "bob"));
    assert_eq!(sent.sent_at, first.sent_at);
}

#[test]
fn recv_follow_prints_every_message_once_and_stops_cleanly_on_ctrl_c() {
    let (rt, s) = scene();
    let mut alice = rt.block_on(Client::start(&s.alice, &s.relay.url));
    // Queued before the follower starts, then sent while it runs.
    for i in 0..3 {
        rt.block_on(alice.send("bob", i % 2 == 1, &format!("m{i}")));
    }
    let follow = Follow::start(&s.bob);
    assert_eq!(parsed(&follow.line().unwrap()).text, "m0");
    for i in 3..25 {
        rt.block_on(alice.send("bob", i % 2 == 1, &format!("m{i}")));
    }
    let mut texts = vec!["m0".to_string()];
    while texts.len() < 25 {
        texts.push(parsed(&follow.line().unwrap()).text);
    }
    let (status, rest) = follow.stop(libc::SIGINT);
    assert!(status.success(), "recv --follow should exit 0 on Ctrl-C");
    assert_eq!(rest, Vec::<String>::new(), "nothing is printed twice");
    let want: BTreeSet<String> = (0..25).map(|i| format!("m{i}")).collect();
    assert_eq!(texts.iter().cloned().collect::<BTreeSet<_>>(), want);
    assert_eq!(texts.len(), want.len());
    // What it printed was marked read before it exited; what came after is not lost.
    assert_eq!(ok(&s.bob, &["recv"]), "");
    rt.block_on(alice.send("bob", false, "after"));
    let got = json_lines(&ok(&s.bob, &["recv"]));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["text"], "after");
    alice.stop();
}

#[test]
fn send_dash_reads_the_whole_message_from_stdin() {
    let (_rt, s) = scene();
    let text = "line one\n  indented\n\n\tlast line";
    let out = sotto_with_stdin(
        &s.alice,
        &["send", "bob", "-"],
        format!("{text}\n").as_bytes(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for empty in ["", "\n", "  \n\t\n"] {
        let out = sotto_with_stdin(&s.alice, &["send", "bob", "-"], empty.as_bytes());
        assert!(!out.status.success());
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains("standard input held no message"), "{err}");
    }
    let out = sotto_with_stdin(&s.alice, &["send", "bob", "-"], b"\xff\xfe");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success() && err.contains("not UTF-8"), "{err}");
    let got = json_lines(&ok(&s.bob, &["recv"]));
    let texts: Vec<_> = got.iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(
        texts,
        vec![text],
        "one message, its newlines and indentation kept"
    );
}

#[test]
fn contacts_show_the_verified_state_and_verify_check_answers_with_its_exit_code() {
    let (_rt, s) = scene();
    // A secret message: bob's side of the session is what alice's rekey later changes.
    ok(&s.alice, &["send", "--secret", "bob", "hi"]);
    ok(&s.bob, &["recv"]);
    let alice_id = common::account_id(&s.alice);

    let json = json_lines(&ok(&s.bob, &["contacts", "--json"]));
    assert_eq!(
        json,
        vec![serde_json::json!({
            "handle": "alice",
            "account_id": alice_id,
            "verified": false,
            "key_changed": false,
            "blocked": false,
        })]
    );
    assert_eq!(
        ok(&s.bob, &["contacts"]),
        format!("alice\t{alice_id}\tnot verified\n")
    );

    let check = sotto(&s.bob, &["verify", "alice", "--check"]);
    assert_eq!(check.status.code(), Some(1));
    assert!(check.stdout.is_empty());
    assert_eq!(
        String::from_utf8(check.stderr).unwrap(),
        "alice is not marked verified\n"
    );

    ok(&s.bob, &["verify", "alice", "--mark"]);
    let check = sotto(&s.bob, &["verify", "alice", "--check"]);
    assert_eq!(check.status.code(), Some(0));
    assert!(check.stdout.is_empty() && check.stderr.is_empty());
    assert_eq!(
        json_lines(&ok(&s.bob, &["contacts", "--json"]))[0]["verified"],
        true
    );
    assert_eq!(
        ok(&s.bob, &["contacts"]),
        format!("alice\t{alice_id}\tverified\n")
    );

    // alice replaces her key: the mark is gone, and --check says so.
    ok(&s.alice, &["rekey"]);
    let err = fails(&s.bob, &["send", "--secret", "alice", "still you?"]);
    assert!(err.contains("safety number has changed"), "{err}");
    let check = sotto(&s.bob, &["verify", "alice", "--check"]);
    assert_eq!(check.status.code(), Some(1));
    let err = String::from_utf8(check.stderr).unwrap();
    assert!(
        err.contains("safety number changed") && err.lines().count() == 1,
        "{err}"
    );
    assert!(ok(&s.bob, &["contacts"]).ends_with("\tsafety number CHANGED\n"));

    let err = fails(&s.bob, &["verify", "carol", "--check"]);
    assert!(err.contains("not among your contacts"), "{err}");
    assert_eq!(
        sotto(&s.bob, &["verify", "carol", "--check"]).status.code(),
        Some(1)
    );
}

#[test]
fn block_and_remove_from_the_command_line() {
    let (_rt, s) = scene();
    ok(&s.alice, &["send", "bob", "hi"]);
    ok(&s.bob, &["recv"]);

    assert_eq!(
        ok(&s.bob, &["block", "alice"]),
        "alice is blocked: nothing they send reaches you (`sotto block --undo alice` to undo)\n"
    );
    assert_eq!(
        json_lines(&ok(&s.bob, &["contacts", "--json"]))[0]["blocked"],
        true
    );
    assert!(ok(&s.bob, &["contacts"]).ends_with("\tblocked\n"));
    ok(&s.alice, &["send", "bob", "while blocked"]);
    // recv takes it off the relay and keeps nothing of it.
    assert_eq!(ok(&s.bob, &["recv"]), "");
    let err = fails(&s.bob, &["send", "alice", "hello?"]);
    assert!(err.contains("you blocked alice"), "{err}");

    ok(&s.bob, &["block", "--undo", "alice"]);
    ok(&s.alice, &["send", "bob", "after"]);
    let got = json_lines(&ok(&s.bob, &["recv"]));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["text"], "after");
    let err = fails(&s.bob, &["block", "nobody"]);
    assert!(
        err.contains("\"nobody\" is not among your contacts"),
        "{err}"
    );

    assert_eq!(
        ok(&s.bob, &["remove", "alice"]),
        "alice is removed, with 2 messages\n"
    );
    assert_eq!(ok(&s.bob, &["contacts"]), "");
}
