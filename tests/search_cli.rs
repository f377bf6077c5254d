//! `sotto search` as a script uses it: through the built binary, over profiles that sent and
//! received messages via an in-process relay; text lines or the JSON shape of `history`.

mod common;

use common::cli::{fails, ok, scene};
use sotto::client::export::{Direction, ExportedMessage, Thread};

fn parsed(out: &str) -> Vec<ExportedMessage> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn search_finds_sent_and_received_texts_newest_first_in_every_thread_or_one() {
    let (_rt, s) = scene();
    ok(&s.alice, &["send", "bob", "Meeting at noon?"]);
    ok(
        &s.alice,
        &["send", "--secret", "bob", "the meeting is secret"],
    );
    ok(&s.alice, &["send", "bob", "lunch instead"]);
    ok(&s.bob, &["recv"]);
    ok(&s.bob, &["send", "alice", "meet me\nat the\tstation"]);

    // bob: two received from alice (one per thread), one he sent.
    let all = parsed(&ok(&s.bob, &["search", "--json", "MEET"]));
    let texts: Vec<&str> = all.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "meet me\nat the\tstation",
            "the meeting is secret",
            "Meeting at noon?"
        ]
    );
    assert_eq!(
        (all[0].direction, all[0].from.as_str(), all[0].to.as_str()),
        (Direction::Out, "bob", "alice")
    );
    assert_eq!(
        (all[1].thread, all[1].direction),
        (Thread::Secret, Direction::In)
    );
    // The same shape `history` prints, field for field.
    let history = parsed(&ok(&s.bob, &["history", "alice", "--secret"]));
    assert_eq!(history, [all[1].clone()]);

    let secret = parsed(&ok(
        &s.bob,
        &["search", "--json", "meet", "--contact", "alice", "--secret"],
    ));
    assert_eq!(secret, [all[1].clone()]);
    let normal = parsed(&ok(
        &s.bob,
        &["search", "--json", "--contact", "alice", "meet", "noon"],
    ));
    assert_eq!(normal, [all[2].clone()]);
    assert_eq!(ok(&s.bob, &["search", "meeting", "lunch"]), "");
    assert_eq!(
        ok(&s.bob, &["search", "--limit", "1", "meet"])
            .lines()
            .count(),
        1
    );

    // Text: one line per result, tab-separated, newlines and tabs of the text made spaces.
    let text = ok(&s.bob, &["search", "station"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    let fields: Vec<&str> = lines[0].split('\t').collect();
    assert_eq!(fields.len(), 6, "{fields:?}");
    assert_eq!(fields[0], all[0].sent_at.rfc3339);
    assert_eq!(
        &fields[1..5],
        ["alice", "normal", "out", all[0].id.as_str()]
    );
    assert_eq!(fields[5], "meet me at the station");
}

#[test]
fn search_mistakes_are_explained() {
    let (_rt, s) = scene();
    let err = fails(&s.bob, &["search", "?!", "--"]);
    assert!(err.contains("type at least one letter or digit"), "{err}");
    let err = fails(&s.bob, &["search", "hello", "--contact", "mallory"]);
    assert!(
        err.contains("\"mallory\" is not among your contacts"),
        "{err}"
    );
    // FTS5 syntax is only text.
    for q in ["\"", "NEAR(a b)", "a OR", "col:x", "*", "-x", "(x"] {
        let out = common::cli::sotto(&s.bob, &["search", "--", q]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || err.contains("type at least one letter or digit"),
            "{q}: {err}"
        );
    }
    let err =
        String::from_utf8(common::cli::sotto(&s.bob, &["search", "--secret", "x"]).stderr).unwrap();
    assert!(err.contains("--contact"), "{err}");
}
