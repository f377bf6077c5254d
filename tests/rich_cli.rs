//! `sotto reply`, `react`, `edit` and `delete` through the built binary, and what `recv` and
//! `history` print for them: each change as its own `kind` with the `target` it is about.

mod common;

use common::cli::{fails, ok, scene};
use sotto::client::export::{Direction, ExportedMessage};
use sotto::client::store::MessageKind;

fn parsed(out: &str) -> Vec<ExportedMessage> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// `args` with `flag` after the command name.
fn with<'a>(flag: Option<&'a str>, args: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![args[0]];
    v.extend(flag);
    v.extend(&args[1..]);
    v
}

/// The one line `recv` prints.
fn one(out: &str) -> ExportedMessage {
    let mut lines = parsed(out);
    assert_eq!(lines.len(), 1, "{out}");
    lines.remove(0)
}

#[test]
fn each_change_is_sent_and_recv_reports_it_as_its_own_kind() {
    let (_rt, s) = scene();
    for (secret, flag) in [(false, None), (true, Some("--secret"))] {
        ok(&s.alice, &with(flag, &["send", "bob", "question?"]));
        let q = one(&ok(&s.bob, &["recv"]));
        assert_eq!(q.kind, MessageKind::Text);
        let qid = q.id.as_str();
        let with = |args: &[&'static str]| -> Vec<String> {
            with(flag, args)
                .into_iter()
                .map(|a| {
                    if a == "ID" {
                        qid.to_string()
                    } else {
                        a.to_string()
                    }
                })
                .collect()
        };
        let ok = |dir: &std::path::Path, args: &[String]| {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            ok(dir, &args)
        };

        ok(&s.bob, &with(&["reply", "alice", "ID", "an answer"]));
        let r = one(&ok(&s.alice, &["recv".to_string()]));
        assert_eq!(
            (r.kind, r.target.as_deref(), r.text.as_str()),
            (MessageKind::Reply, Some(qid), "an answer")
        );

        ok(&s.bob, &with(&["react", "alice", "ID", "👍"]));
        let e = one(&ok(&s.alice, &["recv".to_string()]));
        assert_eq!(
            (e.kind, e.target.as_deref(), e.emoji.as_deref()),
            (MessageKind::Reaction, Some(qid), Some("👍"))
        );
        assert_eq!((e.direction, e.from.as_str()), (Direction::In, "bob"));

        ok(&s.alice, &with(&["edit", "bob", "ID", "question, edited"]));
        let e = one(&ok(&s.bob, &["recv".to_string()]));
        assert_eq!(
            (e.kind, e.target.as_deref(), e.text.as_str()),
            (MessageKind::Edit, Some(qid), "question, edited")
        );

        // History shows the message as it now is: edited, with bob's reaction.
        let mine = parsed(&ok(&s.alice, &with(&["history", "bob"])))
            .into_iter()
            .find(|m| m.id == qid)
            .unwrap();
        assert!(mine.edited);
        assert_eq!(mine.text, "question, edited");
        assert_eq!(mine.reactions.len(), 1);
        assert_eq!(
            (
                mine.reactions[0].emoji.as_str(),
                mine.reactions[0].count,
                mine.reactions[0].mine
            ),
            ("👍", 1, false)
        );

        ok(&s.bob, &with(&["react", "--remove", "alice", "ID"]));
        let e = one(&ok(&s.alice, &["recv".to_string()]));
        assert_eq!((e.kind, e.emoji), (MessageKind::Reaction, None));

        ok(&s.alice, &with(&["delete", "--for-everyone", "bob", "ID"]));
        let e = one(&ok(&s.bob, &["recv".to_string()]));
        assert_eq!(
            (e.kind, e.target.as_deref()),
            (MessageKind::Delete, Some(qid))
        );
        let theirs = parsed(&ok(&s.bob, &with(&["history", "alice"])))
            .into_iter()
            .find(|m| m.id == qid)
            .unwrap();
        assert!(theirs.deleted && theirs.text.is_empty(), "{theirs:?}");
        assert_eq!(
            secret,
            theirs.thread == sotto::client::export::Thread::Secret
        );
    }
}

#[test]
fn what_cannot_be_done_fails_with_a_sentence_and_delete_for_me_deletes_here_only() {
    let (_rt, s) = scene();
    ok(&s.alice, &["send", "bob", "hers"]);
    let id = one(&ok(&s.bob, &["recv"])).id;
    let err = fails(&s.bob, &["edit", "alice", &id, "forged"]);
    assert!(err.contains("only your own messages"), "{err}");
    let err = fails(&s.bob, &["delete", "--for-everyone", "alice", &id]);
    assert!(err.contains("only your own messages"), "{err}");
    let err = fails(&s.bob, &["react", "alice", "no-such-id", "👍"]);
    assert!(
        err.contains("no message no-such-id in this thread"),
        "{err}"
    );
    // The secret thread does not hold it.
    let err = fails(&s.bob, &["reply", "--secret", "alice", &id, "x"]);
    assert!(err.contains("in this thread"), "{err}");
    let err = fails(&s.bob, &["react", "alice", &id, "two words"]);
    assert!(err.contains("one emoji"), "{err}");
    let out = common::cli::sotto(&s.bob, &["react", "alice", &id]);
    assert!(!out.status.success(), "an emoji or --remove is required");

    ok(&s.bob, &["delete", "alice", &id]);
    assert_eq!(ok(&s.bob, &["history", "alice"]), "");
    assert_eq!(parsed(&ok(&s.alice, &["history", "bob"])).len(), 1);
}

#[test]
fn each_command_explains_itself() {
    let (_rt, s) = scene();
    for (cmd, words) in [
        ("reply", "quoting MSG_ID"),
        ("react", "--remove"),
        ("edit", "within 24 hours"),
        ("delete", "--for-everyone"),
    ] {
        let help = ok(&s.alice, &[cmd, "--help"]);
        assert!(help.contains(words), "{cmd}: {help}");
        assert!(help.contains("--secret"), "{cmd}: {help}");
        assert!(help.contains("sotto history HANDLE"), "{cmd}: {help}");
    }
}
