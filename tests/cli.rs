//! The built `sotto` binary end to end: a relay process and two profiles, driven only through
//! the command line, as a script or a bot would.

mod common;

use std::process::Command;

use common::cli::{BIN, fails, json_lines, ok, sotto, start_relay};

#[test]
fn headless_commands_chat_through_a_relay_process_that_survives_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let (rd, a, b) = (
        tmp.path().join("relay"),
        tmp.path().join("a"),
        tmp.path().join("b"),
    );
    let mut relay = start_relay(&rd);

    let out = ok(&a, &["init", "--handle", "alice", "--relay", &relay.url]);
    assert!(
        out.contains("registered alice at wss://127.0.0.1:"),
        "{out}"
    );
    assert!(out.contains("relay trust root: "), "{out}");
    // The relay's self-signed certificate is pinned at init, and the same one is served after
    // a restart (it lives in the relay's data directory).
    let pinned = format!(
        "relay TLS certificate: pinned, SHA-256 {}",
        relay.fingerprint
    );
    assert!(out.contains(&pinned), "{out}");
    ok(&b, &["init", "--handle", "bob", "--relay", &relay.url]);
    assert!(
        fails(&a, &["init", "--handle", "alice2", "--relay", &relay.url])
            .contains("already registered")
    );
    let taken = tmp.path().join("c");
    assert!(
        fails(&taken, &["init", "--handle", "bob", "--relay", &relay.url])
            .contains("already registered")
    );

    ok(&a, &["send", "bob", "hello in the clear"]);
    ok(&a, &["send", "--secret", "bob", "hello in secret"]);
    assert!(fails(&a, &["send", "nobody", "x"]).contains("no account named \"nobody\""));
    assert!(fails(&a, &["send", "bob", "  "]).contains("cannot be empty"));

    let got = json_lines(&ok(&b, &["recv"]));
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(
        (&got[0]["from"], &got[0]["to"]),
        (&"alice".into(), &"bob".into())
    );
    assert_eq!(got[0]["thread"], "normal");
    assert_eq!(got[0]["text"], "hello in the clear");
    assert_eq!(got[1]["thread"], "secret");
    assert_eq!(got[1]["text"], "hello in secret");
    assert!(
        got[1]["id"].as_str().unwrap().len() == 36 && got[1]["sent_at"]["ms"].as_u64().unwrap() > 0
    );
    assert_eq!(ok(&b, &["recv"]), "", "a message is printed by recv once");

    // bob answers in secret; alice reads it.
    ok(&b, &["send", "--secret", "alice", "secret answer"]);
    let got = json_lines(&ok(&a, &["recv", "--wait", "0.2"]));
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0]["from"].as_str(), got[0]["text"].as_str()),
        (Some("bob"), Some("secret answer"))
    );

    // Accepted by the relay, then the relay process is killed before bob collects it.
    ok(&a, &["send", "--secret", "bob", "outlives the relay"]);
    relay.child.kill().unwrap();
    relay.child.wait().unwrap();
    let first_fingerprint = relay.fingerprint.clone();
    let mut relay = start_relay(&rd);
    assert_eq!(relay.fingerprint, first_fingerprint);
    let got = json_lines(&ok(&b, &["--relay", &relay.url, "recv"]));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["text"], "outlives the relay");
    assert_eq!(ok(&b, &["--relay", &relay.url, "recv"]), "");

    assert_eq!(
        ok(&b, &["contacts"])
            .lines()
            .next()
            .unwrap()
            .split('\t')
            .next(),
        Some("alice")
    );
    let history = json_lines(&ok(&b, &["history", "alice", "--secret"]));
    let texts: Vec<_> = history
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        vec!["hello in secret", "secret answer", "outlives the relay"]
    );
    assert_eq!(history[1]["direction"], "out");
    assert_eq!(
        (&history[1]["from"], &history[1]["to"]),
        (&"bob".into(), &"alice".into())
    );
    assert!(fails(&b, &["history", "carol"]).contains("not among your contacts"));
    let info = ok(&b, &["info"]);
    assert!(info.contains("handle:      bob"), "{info}");
    assert!(
        info.contains(&format!("relay TLS:   pinned, SHA-256 {first_fingerprint}")),
        "{info}"
    );

    // SIGTERM stops the relay cleanly.
    let status = Command::new("kill")
        .args(["-TERM", &relay.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        relay.child.wait().unwrap().success(),
        "the relay should exit 0 on SIGTERM"
    );
}

#[test]
fn clear_errors_for_an_unreachable_relay_and_a_missing_profile() {
    let tmp = tempfile::tempdir().unwrap();
    let err = fails(
        &tmp.path().join("x"),
        &["init", "--handle", "zed", "--relay", "ws://127.0.0.1:1"],
    );
    assert!(
        err.contains("cannot reach the relay at ws://127.0.0.1:1"),
        "{err}"
    );
    // Plain ws:// off this machine is refused before anything is sent (192.0.2.1 is TEST-NET).
    let err = fails(
        &tmp.path().join("w"),
        &["init", "--handle", "zed", "--relay", "ws://192.0.2.1:7878"],
    );
    assert!(
        err.contains("refusing plain ws:// to 192.0.2.1") && err.contains("--insecure-transport"),
        "{err}"
    );
    let err = fails(&tmp.path().join("y"), &["send", "bob", "hi"]);
    assert!(
        err.contains("not registered yet") && err.contains("sotto init"),
        "{err}"
    );
}

#[test]
fn timers_from_the_command_line_reach_the_contact() {
    let tmp = tempfile::tempdir().unwrap();
    let (rd, a, b) = (
        tmp.path().join("relay"),
        tmp.path().join("a"),
        tmp.path().join("b"),
    );
    let relay = start_relay(&rd);
    ok(&a, &["init", "--handle", "alice", "--relay", &relay.url]);
    ok(&b, &["init", "--handle", "bob", "--relay", &relay.url]);

    for bad in ["4s", "25h", "abc"] {
        let err = fails(&a, &["timer", "bob", bad]);
        assert!(
            err.contains("5s to 24h") || err.contains("not a timer"),
            "{err}"
        );
    }
    let out = ok(&a, &["timer", "--secret", "bob", "30s"]);
    assert!(out.contains("now disappear after 30s"), "{out}");
    ok(
        &a,
        &["send", "--secret", "--timer", "5s", "bob", "short-lived"],
    );

    let got = json_lines(&ok(&b, &["recv"]));
    let kinds: Vec<_> = got
        .iter()
        .map(|m| (m["kind"].as_str().unwrap(), m["timer"].as_u64()))
        .collect();
    // Two timer changes (30 s, then 5 s from --timer) and the message under the last one.
    assert_eq!(
        kinds,
        vec![("timer", Some(30)), ("timer", Some(5)), ("text", Some(5))]
    );
    assert_eq!(got[2]["text"], "short-lived");
    assert_eq!(got[2]["thread"], "secret");
    let history = json_lines(&ok(&a, &["history", "bob", "--secret"]));
    let mine = history.iter().find(|m| m["text"] == "short-lived").unwrap();
    assert_eq!(mine["timer"], 5);
    assert!(mine["expires_at"]["ms"].as_u64().unwrap() > mine["sent_at"]["ms"].as_u64().unwrap());
    let mut relay = relay;
    relay.child.kill().unwrap();
    relay.child.wait().unwrap();
}

#[test]
fn safety_numbers_key_rotation_and_operator_reset_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |n: &str| tmp.path().join(n);
    let (rd, a, b) = (p("relay"), p("a"), p("b"));
    let mut relay = start_relay(&rd);
    ok(&a, &["init", "--handle", "alice", "--relay", &relay.url]);
    ok(&b, &["init", "--handle", "bob", "--relay", &relay.url]);
    ok(&a, &["send", "--secret", "bob", "hello"]);
    ok(&b, &["recv"]);

    // Both sides print the same number; the scannable forms match across.
    let digits = |out: &str| -> String {
        out.lines()
            .skip(1)
            .take(3)
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let (na, nb) = (ok(&a, &["verify", "bob"]), ok(&b, &["verify", "alice"]));
    assert_eq!(digits(&na), digits(&nb));
    assert_eq!(digits(&na).split(' ').count(), 12, "{na}");
    assert!(na.contains("not verified"), "{na}");
    std::fs::write(p("bob.scan"), ok(&b, &["verify", "alice", "--scannable"])).unwrap();
    let file = p("bob.scan").display().to_string();
    assert!(ok(&a, &["verify", "bob", "--compare", &file]).starts_with("match"));
    std::fs::write(p("junk.scan"), "0a0b0c").unwrap();
    let junk = p("junk.scan").display().to_string();
    assert!(
        !sotto(&a, &["verify", "bob", "--compare", &junk])
            .status
            .success()
    );
    ok(&a, &["verify", "bob", "--mark"]);
    assert!(ok(&a, &["verify", "bob"]).contains("marked verified"));

    // bob rotates his key: alice's next secret send fails, says why and how to fix it.
    assert!(ok(&b, &["rekey"]).contains("safety number changed"));
    let err = fails(&a, &["send", "--secret", "bob", "still you?"]);
    assert!(
        err.contains("safety number has changed")
            && err.contains("sotto verify bob --accept-change"),
        "{err}"
    );
    let shown = ok(&a, &["verify", "bob"]);
    assert!(
        shown.contains("CHANGED") && !shown.contains("marked verified"),
        "{shown}"
    );
    ok(&a, &["send", "bob", "normal messages are not blocked"]);
    ok(&a, &["verify", "bob", "--accept-change"]);
    ok(&a, &["send", "--secret", "bob", "accepted"]);
    let got = json_lines(&ok(&b, &["recv"]));
    let texts: Vec<_> = got.iter().filter_map(|m| m["text"].as_str()).collect();
    assert!(texts.contains(&"accepted"), "{got:?}");

    // bob loses his device: the operator resets the handle on the relay's machine.
    let out = Command::new(BIN)
        .args(["relay", "admin", "reset-handle", "bob", "--data-dir"])
        .arg(&rd)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = String::from_utf8(out.stdout).unwrap();
    let code = out
        .lines()
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(code.len(), 20, "{out}");
    let b2 = p("b2");
    let wrong = fails(
        &b2,
        &[
            "init",
            "--handle",
            "bob",
            "--relay",
            &relay.url,
            "--claim",
            "not-the-code",
        ],
    );
    assert!(wrong.contains("claim code is not valid"), "{wrong}");
    ok(
        &b2,
        &[
            "init", "--handle", "bob", "--relay", &relay.url, "--claim", &code,
        ],
    );
    // The code works once.
    let again = fails(
        &p("b3"),
        &[
            "init", "--handle", "bob", "--relay", &relay.url, "--claim", &code,
        ],
    );
    assert!(again.contains("claim code is not valid"), "{again}");
    // alice meets the new key as a change of the same contact.
    let err = fails(&a, &["send", "--secret", "bob", "new phone?"]);
    assert!(err.contains("safety number has changed"), "{err}");
    assert_eq!(ok(&a, &["contacts"]).lines().count(), 1);
    relay.child.kill().unwrap();
    relay.child.wait().unwrap();
}
