//! Groups from the command line against the in-process relay: create, send to both threads
//! with `--group`, receive and list them on each member, members and admin rights, and the
//! errors a user can cause.

mod common;

use common::cli::{fails, json_lines, ok, scene};

/// The texts (not membership lines) among `recv`'s or `history`'s lines, with their group,
/// writer and thread.
fn texts(out: &str) -> Vec<(String, String, String, String)> {
    json_lines(out)
        .into_iter()
        .filter(|v| v["kind"] == "text")
        .map(|v| {
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            (s("group"), s("from"), s("thread"), s("text"))
        })
        .collect()
}

#[test]
fn a_group_made_and_used_from_the_command_line() {
    let (rt, s) = scene();
    let carol = tempfile::tempdir().unwrap();
    rt.block_on(common::register(carol.path(), "carol", &s.relay.url));

    let made = ok(&s.alice, &["group", "create", "friends", "bob", "carol"]);
    assert!(made.starts_with("#friends: "), "{made}");
    ok(&s.alice, &["send", "--group", "friends", "cake at 5"]);
    ok(
        &s.alice,
        &["send", "--secret", "--group", "friends", "the code is 4711"],
    );

    for member in [s.bob.as_path(), carol.path()] {
        let got = texts(&ok(member, &["recv", "--group", "friends"]));
        assert_eq!(
            got,
            vec![
                (
                    "#friends".into(),
                    "alice".into(),
                    "normal".into(),
                    "cake at 5".into()
                ),
                (
                    "#friends".into(),
                    "alice".into(),
                    "secret".into(),
                    "the code is 4711".into()
                ),
            ]
        );
        let secret = texts(&ok(member, &["history", "--group", "friends", "--secret"]));
        assert_eq!(secret.len(), 1, "{secret:?}");
        assert!(ok(member, &["group", "list"]).contains("#friends"));
    }

    let members = ok(&s.bob, &["group", "members", "friends"]);
    assert_eq!(
        members.trim_end(),
        "alice\tadmin\nbob\tmember\ncarol\tmember"
    );

    // bob is no admin: his change is refused at home, with a sentence.
    let err = fails(&s.bob, &["group", "remove", "friends", "carol"]);
    assert!(err.contains("admin"), "{err}");
    // Sending with --group takes the text alone.
    let err = fails(&s.alice, &["send", "--group", "friends", "bob", "hi"]);
    assert!(err.contains("give only the message"), "{err}");
    let err = fails(&s.alice, &["send", "--group", "nosuch", "hi"]);
    assert!(err.contains("#nosuch"), "{err}");
}
