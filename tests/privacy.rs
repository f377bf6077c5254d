//! "Secret means secret", end to end with the built binary: after a secret conversation
//! whose messages have disappeared, nothing about it is left in any file either profile or
//! the relay keeps, and the logs (each profile's `sotto.log`, the relay's stderr) name
//! neither party's account id, handle, message ids or times, at the default log level.
//! The clients that sweep the expired messages run in this process; their log, with the
//! filter the binary uses by default, is searched too.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use sotto::client::manager::{self, Event};

const BIN: &str = env!("CARGO_BIN_EXE_sotto");

/// The longest the test waits for any one expected event before failing.
const PATIENCE: Duration = Duration::from_secs(30);

/// A `sotto` command that sees no log filter from the environment or a config file, so it
/// logs at the default level.
fn command(config: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.env_remove("SOTTO_LOG").arg("--config").arg(config);
    c
}

fn ok(config: &Path, profile: &Path, args: &[&str]) -> String {
    let out: Output = command(config)
        .arg("--data-dir")
        .arg(profile)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sotto {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json_lines(s: &str) -> Vec<serde_json::Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `sotto relay` on a free port, its stderr (where it logs) going to `log`.
fn start_relay(config: &Path, dir: &Path, log: &Path) -> (Child, String) {
    let mut child = command(config)
        .args(["relay", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, common::listening(&line).0)
}

/// Every regular file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else if path.is_file() {
            out.push(path);
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Starts a client of the profile in `dir` in this process and waits until its sweeper has
/// reported every message in `ids` gone (the sweeper first deletes what ran out while no
/// client was running, then sleeps until the next deadline).
async fn until_expired(dir: &Path, url: &str, ids: &[String]) {
    let mut m = manager::spawn(dir, Some(url.to_string())).unwrap();
    let mut left: HashSet<&String> = ids.iter().collect();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !left.is_empty() {
        match tokio::time::timeout_at(deadline, m.events.recv()).await {
            Err(_) => panic!("{left:?} did not expire within {PATIENCE:?}"),
            Ok(None) => panic!("the client stopped"),
            Ok(Some(Event::Expired(gone))) => {
                for g in gone {
                    left.remove(&g.id);
                }
            }
            Ok(Some(_)) => {}
        }
    }
    m.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_secret_conversation_leaves_nothing_in_any_file_or_log() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config.toml");
    std::fs::write(&config, "").unwrap();
    let (rd, a, b) = (
        tmp.path().join("relay"),
        tmp.path().join("a"),
        tmp.path().join("b"),
    );
    let relay_log = tmp.path().join("relay.stderr");
    let own_log = tmp.path().join("in-process.log");
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(sotto::logs::directives(
            sotto::logs::DEFAULT_FILTER,
        )))
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(
            std::fs::File::create(&own_log).unwrap(),
        ))
        .try_init()
        .unwrap();
    let (mut relay, url) = start_relay(&config, &rd, &relay_log);
    // Handles that appear nowhere else (not in a path, not in a word of a log line).
    let (ha, hb) = ("quillon", "ricasso");
    ok(&config, &a, &["init", "--handle", ha, "--relay", &url]);
    ok(&config, &b, &["init", "--handle", hb, "--relay", &url]);
    let a_id = common_account_id(&config, &a);
    let b_id = common_account_id(&config, &b);
    let trust_root: String = ok(&config, &a, &["info"])
        .lines()
        .find_map(|l| l.strip_prefix("trust root:"))
        .unwrap()
        .split_whitespace()
        .collect();

    // A secret exchange under a 5 s timer, each side reading what the other sent.
    let (text_a, text_b) = ("PRIVACY-MARKER-a41c09", "PRIVACY-MARKER-b7d2e5");
    ok(
        &config,
        &a,
        &["send", "--secret", "--timer", "5s", hb, text_a],
    );
    let got = json_lines(&ok(&config, &b, &["recv"]));
    assert!(got.iter().any(|m| m["text"] == text_a), "{got:?}");
    ok(&config, &b, &["send", "--secret", ha, text_b]);
    let got = json_lines(&ok(&config, &a, &["recv"]));
    assert!(got.iter().any(|m| m["text"] == text_b), "{got:?}");

    // What each side stored about the two texts: ids and times, and that both copies count
    // down (the sender's from sending, the reader's from reading).
    let mut ids = Vec::new();
    let mut times = Vec::new();
    let mut texts_of = |dir: &Path, peer: &str| {
        let history = json_lines(&ok(&config, dir, &["history", peer, "--secret"]));
        let texts: Vec<_> = history.iter().filter(|m| m["kind"] == "text").collect();
        assert_eq!(texts.len(), 2, "{history:?}");
        let mut mine = Vec::new();
        for m in texts {
            assert_eq!(m["timer"], 5, "{m}");
            assert!(m["expires_at"]["ms"].is_u64(), "not counting down: {m}");
            mine.push(m["id"].as_str().unwrap().to_string());
            times.push(m["sent_at"]["ms"].as_u64().unwrap().to_string());
            times.push(m["expires_at"]["ms"].as_u64().unwrap().to_string());
        }
        ids.extend(mine.clone());
        mine
    };
    let a_ids = texts_of(&a, hb);
    let b_ids = texts_of(&b, ha);

    // Both copies of both texts disappear.
    until_expired(&a, &url, &a_ids).await;
    until_expired(&b, &url, &b_ids).await;
    for (dir, peer) in [(&a, hb), (&b, ha)] {
        let history = ok(&config, dir, &["history", peer, "--secret"]);
        assert!(
            !history.contains(text_a) && !history.contains(text_b),
            "{history}"
        );
    }

    // Everything stops, so every file is in its final state.
    let status = Command::new("kill")
        .args(["-TERM", &relay.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(relay.wait().unwrap().success());

    let mut all = files(&a);
    all.extend(files(&b));
    all.extend(files(&rd));
    all.push(relay_log.clone());
    all.push(own_log.clone());
    let logs = [a.join("sotto.log"), b.join("sotto.log"), relay_log, own_log];
    for log in &logs {
        assert!(log.is_file(), "{} is missing", log.display());
    }
    // The relay logs at info, and that is where the search looks.
    assert!(
        std::fs::read_to_string(&logs[2])
            .unwrap()
            .contains("INFO sotto::relay: relay stopped")
    );

    let mut found = Vec::new();
    for path in &all {
        let bytes = std::fs::read(path).unwrap();
        for text in [text_a, text_b] {
            if contains(&bytes, text.as_bytes()) {
                found.push(format!("{}: the text {text:?}", path.display()));
            }
        }
    }
    for log in &logs {
        let bytes = std::fs::read(log).unwrap();
        let mut needles: Vec<(&str, &str)> = vec![
            ("alice's account id", a_id.as_str()),
            ("bob's account id", b_id.as_str()),
            ("alice's handle", ha),
            ("bob's handle", hb),
            ("the relay's trust root", trust_root.as_str()),
        ];
        needles.extend(ids.iter().map(|id| ("a message id", id.as_str())));
        needles.extend(times.iter().map(|t| ("a message time", t.as_str())));
        for (what, needle) in needles {
            if contains(&bytes, needle.as_bytes()) {
                found.push(format!("{}: {what} {needle}", log.display()));
            }
        }
    }
    // Nor does a line say when messages disappeared.
    if std::fs::read_to_string(&logs[3])
        .unwrap()
        .contains("sotto::client::sweeper")
    {
        found.push("in-process.log: a line of the sweeper's".into());
    }
    let shown: Vec<String> = logs
        .iter()
        .map(|l| {
            format!(
                "--- {}\n{}",
                l.display(),
                std::fs::read_to_string(l).unwrap()
            )
        })
        .collect();
    assert!(
        found.is_empty(),
        "found:\n{}\n\nthe logs:\n{}",
        found.join("\n"),
        shown.join("\n")
    );
}

#[test]
fn a_log_filter_that_names_libsignal_gets_its_lines_and_the_search_sees_them() {
    // The control for the test above: the same search finds the peer's account id in
    // sotto.log once the user asks for libsignal's info lines by name.
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config.toml");
    std::fs::write(&config, "log = \"info,libsignal_protocol_syft=info\"\n").unwrap();
    let (rd, a, b) = (
        tmp.path().join("relay"),
        tmp.path().join("a"),
        tmp.path().join("b"),
    );
    let (mut relay, url) = start_relay(&config, &rd, &tmp.path().join("relay.stderr"));
    ok(&config, &a, &["init", "--handle", "alice", "--relay", &url]);
    ok(&config, &b, &["init", "--handle", "bob", "--relay", &url]);
    ok(&config, &a, &["send", "--secret", "bob", "hello"]);
    ok(&config, &b, &["recv"]);
    let (a_id, b_id) = (
        common_account_id(&config, &a),
        common_account_id(&config, &b),
    );
    relay.kill().unwrap();
    relay.wait().unwrap();
    let alice_log = std::fs::read(a.join("sotto.log")).unwrap();
    let bob_log = std::fs::read(b.join("sotto.log")).unwrap();
    assert!(
        contains(&alice_log, b_id.as_bytes()),
        "alice's log names bob"
    );
    assert!(contains(&bob_log, a_id.as_bytes()), "bob's log names alice");
}

/// The account id `sotto info` prints for the profile in `dir`.
fn common_account_id(config: &Path, dir: &Path) -> String {
    ok(config, dir, &["info"])
        .lines()
        .find_map(|l| l.strip_prefix("account id:"))
        .unwrap()
        .trim()
        .to_string()
}
