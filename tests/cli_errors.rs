//! What the command line says when it is asked for help or when something goes wrong: every
//! argument described, each cause said once, and a failed `init` that leaves nothing behind.
//! Through the built binary, against an in-process relay where one is needed.

mod common;

use std::path::Path;
use std::process::Command;

use common::cli::{BIN, fails, ok, scene};

/// The short help (`-h`): one line per entry, name then description.
fn help(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).arg("-h").output().unwrap();
    assert!(out.status.success(), "{args:?} -h failed");
    String::from_utf8(out.stdout).unwrap()
}

/// The entries of the help's "Commands:", "Arguments:" and "Options:" sections that have no
/// description.
fn undescribed(help: &str) -> Vec<String> {
    let mut in_list = false;
    let mut bare = Vec::new();
    for line in help.lines() {
        if ["Commands:", "Arguments:", "Options:"].contains(&line) {
            in_list = true;
            continue;
        }
        if line.is_empty() || !line.starts_with(' ') {
            in_list = false;
            continue;
        }
        // An entry is "  NAME  description": the description is what follows two spaces.
        if in_list
            && line
                .trim()
                .split("  ")
                .filter(|p| !p.trim().is_empty())
                .count()
                < 2
        {
            bare.push(line.trim().to_string());
        }
    }
    bare
}

#[test]
fn every_help_describes_every_argument_and_says_sotto_alone_opens_the_chat() {
    let commands: &[&[&str]] = &[
        &[],
        &["demo"],
        &["relay"],
        &["relay", "admin"],
        &["relay", "admin", "reset-handle"],
        &["relay", "admin", "stats"],
        &["init"],
        &["send"],
        &["save"],
        &["timer"],
        &["recv"],
        &["contacts"],
        &["history"],
        &["info"],
        &["pin-cert"],
        &["rekey"],
        &["verify"],
    ];
    for args in commands {
        let text = help(args);
        assert_eq!(
            undescribed(&text),
            Vec::<String>::new(),
            "sotto {args:?} -h:\n{text}"
        );
    }
    for flag in ["-h", "--help"] {
        let out = Command::new(BIN).arg(flag).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.contains("`sotto` without a command opens the chat screen"),
            "{text}"
        );
    }
    let verify = help(&["verify"]);
    assert!(
        verify.contains("Exit status: 0") && verify.contains("--check"),
        "{verify}"
    );
    assert!(help(&["send"]).contains("`-` reads it from standard input"));
}

#[test]
fn an_error_says_its_cause_once() {
    let tmp = tempfile::tempdir().unwrap();
    // A directory where the config file should be.
    let out = Command::new(BIN)
        .args(["--config"])
        .arg(tmp.path())
        .arg("info")
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success());
    assert_eq!(err.matches("os error").count(), 1, "{err}");
    assert!(
        err.starts_with("error: cannot read the config file"),
        "{err}"
    );

    // A directory where the profile's lock file should be: the store's error wraps the
    // lock's, which carries the OS's.
    let profile = tmp.path().join("p");
    std::fs::create_dir_all(profile.join("lock")).unwrap();
    let err = fails(&profile, &["pin-cert", "00"]);
    assert_eq!(err.matches("os error").count(), 1, "{err}");
    assert!(err.contains("cannot use the profile directory"), "{err}");
    let err = fails(
        &profile,
        &["init", "--handle", "zed", "--relay", "ws://127.0.0.1:1"],
    );
    assert_eq!(err.matches("os error").count(), 1, "{err}");
}

/// Every path under `dir`, relative to it, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut all = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            all.push(path.strip_prefix(dir).unwrap().display().to_string());
            if path.is_dir() {
                todo.push(path);
            }
        }
    }
    all.sort();
    all
}

#[test]
fn a_failed_init_leaves_the_profile_directory_as_it_was_and_a_retry_works() {
    let (_rt, s) = scene();
    let root = s.path("profiles");
    std::fs::create_dir(&root).unwrap();
    let unreachable = "ws://127.0.0.1:1";

    // Directories init would create are gone again, parents included.
    let deep = root.join("x").join("y");
    let err = fails(&deep, &["init", "--handle", "zed", "--relay", unreachable]);
    assert!(err.contains("cannot reach the relay"), "{err}");
    assert_eq!(listing(&root), Vec::<String>::new());

    // A directory that existed keeps what it held, and only that.
    let mine = root.join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("notes.txt"), "keep me").unwrap();
    fails(&mine, &["init", "--handle", "zed", "--relay", unreachable]);
    assert_eq!(listing(&root), vec!["mine", "mine/notes.txt"]);
    // The handle is taken (by bob in the scene): refused by the relay, nothing kept.
    let err = fails(&mine, &["init", "--handle", "bob", "--relay", &s.relay.url]);
    assert!(err.contains("already registered"), "{err}");
    assert_eq!(listing(&root), vec!["mine", "mine/notes.txt"]);

    // The retry registers, in the same directory.
    let out = ok(&mine, &["init", "--handle", "zed", "--relay", &s.relay.url]);
    assert!(out.contains("registered zed"), "{out}");
    assert!(ok(&mine, &["info"]).contains("handle:      zed"));
    assert_eq!(
        std::fs::read_to_string(mine.join("notes.txt")).unwrap(),
        "keep me"
    );

    // A registered profile is never undone by a failed init on it.
    let before = listing(&root);
    let err = fails(
        &mine,
        &["init", "--handle", "zed2", "--relay", &s.relay.url],
    );
    assert!(err.contains("already registered as \"zed\""), "{err}");
    assert_eq!(listing(&root), before);
    assert!(ok(&mine, &["info"]).contains("handle:      zed"));
}

#[test]
fn a_log_file_that_cannot_be_opened_puts_one_warning_on_the_terminal_and_no_log() {
    let (_rt, s) = scene();
    // The log's place is taken by a directory.
    let log = s.bob.join("sotto.log");
    std::fs::remove_file(&log).ok();
    std::fs::create_dir(&log).unwrap();
    ok(&s.alice, &["send", "bob", "hi"]);
    let out = common::cli::sotto(&s.bob, &["recv"]);
    assert!(out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    // Connecting and receiving log at info: none of it may reach the terminal.
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("warning: cannot open the log file") && err.contains("nothing is logged"),
        "{err}"
    );
    assert_eq!(
        common::cli::json_lines(&String::from_utf8(out.stdout).unwrap()).len(),
        1
    );
}
