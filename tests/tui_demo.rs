//! `sotto demo` in a real pseudo-terminal (tmux): type to the bot, switch to secret mode,
//! quit, and find the terminal restored and every demo file (its log too) gone; paste a text
//! of several lines (bracketed paste) and write a message in `$EDITOR`. tmux is a test
//! dependency (README setup, .ci/run). And the demo's bot, driven in-process.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sotto");
const PATIENCE: Duration = Duration::from_secs(30);

struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux is needed for this test: apt-get install -y tmux")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "demo"]).stdout)
            .into_owned()
    }

    /// A tmux format about the pane, e.g. `#{mouse_any_flag}`.
    fn pane(&self, format: &str) -> String {
        let out = self.run(&["display-message", "-p", "-t", "demo", format]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "demo"];
        args.extend_from_slice(keys);
        assert!(self.run(&args).status.success());
    }

    /// Waits until the screen shows `what`; the screen is the only thing to synchronise on.
    fn wait_for(&self, what: &str) -> String {
        self.wait_until(what, |screen| screen.contains(what))
    }

    /// Waits until `ok` holds for the whole screen. A frame can reach the terminal in several
    /// writes, so a test checks one condition over everything it needs, not one part of it.
    fn wait_until(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if ok(&screen) {
                return screen;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "{what} never appeared; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

fn status_line(screen: &str) -> &str {
    screen
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
}

fn wait_for_file(path: &Path) -> String {
    let start = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(path)
            && s.ends_with("done\n")
        {
            return s;
        }
        assert!(start.elapsed() < PATIENCE, "the demo did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `sotto demo` in a 100x30 tmux session named after the test, with `env` (NAME=VALUE)
/// set; after the demo exits, its exit code and the terminal's modes go to `report`.
fn start_demo(test: &str, env: &[String], report: &Path) -> Tmux {
    let tmux = Tmux {
        socket: format!("sotto-test-{}-{test}", std::process::id()),
    };
    let script = format!(
        "'{BIN}' demo; echo \"exit=$?\" > '{r}'; stty -a >> '{r}'; echo done >> '{r}'; sleep 60",
        r = report.display()
    );
    let mut args = vec!["new-session", "-d", "-s", "demo", "-x", "100", "-y", "30"];
    args.extend(["-e", "TERM=xterm-256color"]);
    for e in env {
        args.extend(["-e", e.as_str()]);
    }
    args.extend(["sh", "-c", &script]);
    let started = tmux.run(&args);
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    tmux.wait_until("the demo, online, with the bot's thread open", |screen| {
        screen.contains("echo · normal") && screen.contains("● online")
    });
    tmux
}

/// Quits with Ctrl-C and checks the demo exited 0 and left the terminal as it found it.
fn quit_and_check_terminal(tmux: &Tmux, report: &Path) {
    tmux.keys(&["C-c"]);
    let after = wait_for_file(report);
    assert!(after.starts_with("exit=0"), "{after}");
    // Raw mode is off again: canonical input and echo are back.
    assert!(
        after.contains(" icanon") && !after.contains("-icanon"),
        "{after}"
    );
    assert!(
        after.contains(" echo ") && !after.contains("-echo "),
        "{after}"
    );
    // The alternate screen is gone: the chat is no longer on the terminal.
    let screen = tmux.screen();
    assert!(!screen.contains("contacts"), "{screen}");
    // And the mouse is the terminal's again.
    assert_eq!(tmux.pane("#{mouse_any_flag}"), "0");
}

#[test]
fn demo_chats_with_the_bot_in_both_modes_and_restores_the_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("after-exit.txt");
    // The demo's own temporary directory is made here, so the test can see it come and go.
    let tmpdir = tmp.path().join("tmp");
    std::fs::create_dir(&tmpdir).unwrap();
    let tmux = start_demo("chat", &[format!("TMPDIR={}", tmpdir.display())], &report);
    // The mouse is captured for wheel scrolling, and the terminal's title names the profile.
    assert_eq!(tmux.pane("#{mouse_any_flag}"), "1");
    assert!(
        tmux.pane("#{pane_title}")
            .contains(&format!("sotto · {}", sotto::demo::YOU)),
        "{}",
        tmux.pane("#{pane_title}")
    );
    tmux.keys(&["hello bot", "Enter"]);
    tmux.wait_for("echo: hello bot");
    // The log is in the demo's private directory, with the profiles.
    let demo_dirs: Vec<_> = std::fs::read_dir(&tmpdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(demo_dirs.len(), 1, "{demo_dirs:?}");
    let name = demo_dirs[0].file_name().unwrap().to_string_lossy();
    assert!(name.starts_with("sotto-demo-"), "{name}");
    assert!(demo_dirs[0].join(sotto::demo::LOG_FILE).is_file());

    tmux.keys(&["C-s"]);
    tmux.wait_until(
        "the secret thread, named so in title and status line",
        |screen| screen.contains("SECRET · echo") && status_line(screen).contains("SECRET"),
    );
    tmux.keys(&["psst", "Enter"]);
    // The bot's answer comes back secret, with the lock on its line.
    tmux.wait_until("the bot's secret answer", |screen| {
        screen
            .lines()
            .any(|l| l.contains("🔒 echo: echo (secret): psst"))
    });

    // Back to normal: the earlier exchange is still there and the status says so.
    tmux.keys(&["C-s"]);
    tmux.wait_until("the normal thread with its messages", |screen| {
        screen.contains("echo · normal")
            && screen.contains("echo: hello bot")
            && status_line(screen).contains("normal")
            && !status_line(screen).contains("SECRET")
    });

    quit_and_check_terminal(&tmux, &report);
    // Every file the demo wrote went with it, its log included.
    let left: Vec<_> = std::fs::read_dir(&tmpdir).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

/// The rows of the screen from the one holding `first` on, cut to the thread pane.
fn rows_from(screen: &str, first: &str) -> Vec<String> {
    screen
        .lines()
        .skip_while(|l| !l.contains(first))
        .map(|l| l.to_string())
        .collect()
}

#[test]
fn a_bracketed_paste_is_one_message_with_its_lines_and_indentation() {
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("after-exit.txt");
    let tmux = start_demo("paste", &[], &report);
    let pasted = tmp.path().join("paste.txt");
    std::fs::write(&pasted, "if ready:\n    go()\nelse:\n    wait()").unwrap();
    assert!(
        tmux.run(&["load-buffer", &pasted.display().to_string()])
            .status
            .success()
    );
    // -p: as a bracketed paste, which the TUI asked the terminal for.
    assert!(
        tmux.run(&["paste-buffer", "-p", "-t", "demo"])
            .status
            .success()
    );
    // Still in the composer, unsent, its lines and indentation kept.
    tmux.wait_until("the paste in the composer", |screen| {
        let rows = rows_from(screen, "│if ready:");
        rows.len() > 3 && rows[1].contains("│    go()") && rows[3].contains("│    wait()")
    });
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_until("one message and one answer, each of four lines", |screen| {
        let mine = rows_from(screen, "you: if ready:");
        let echo = rows_from(screen, "echo: echo: if ready:");
        mine.len() > 3
            && mine[1].contains("    go()")
            && mine[2].contains("else:")
            && mine[3].contains("    wait()")
            && echo.len() > 3
            && echo[3].contains("    wait()")
    });
    // Not one message a line: no line of it went out on its own.
    for line in ["go()", "else:", "wait()"] {
        assert!(
            !screen.contains(&format!("you: {line}"))
                && !screen.contains(&format!("you:     {line}")),
            "{screen}"
        );
    }
    quit_and_check_terminal(&tmux, &report);
}

#[test]
fn ctrl_x_writes_the_message_in_the_editor_and_enter_sends_it() {
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("after-exit.txt");
    // The editor fails the first time it runs, then writes a message after what it was given.
    let editor = tmp.path().join("editor.sh");
    let tried = tmp.path().join("tried");
    std::fs::write(
        &editor,
        format!(
            "#!/bin/sh\nif [ ! -e '{t}' ]; then touch '{t}'; exit 3; fi\nprintf ' from the editor\\n  and its second line\\n' >> \"$1\"\n",
            t = tried.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let tmux = start_demo(
        "editor",
        &[format!("EDITOR={}", editor.display()), "VISUAL=".into()],
        &report,
    );
    tmux.keys(&["C-x"]);
    // A failing editor is a status line, and the chat screen is back.
    tmux.wait_until("the editor's failure on the status line", |screen| {
        status_line(screen).contains("exited with status 3") && screen.contains("echo · normal")
    });
    tmux.keys(&["hello"]);
    tmux.keys(&["C-x"]);
    tmux.wait_until("the editor's text in the composer, not sent", |screen| {
        let rows = rows_from(screen, "│hello from the editor");
        rows.len() > 1 && rows[1].contains("│  and its second line")
    });
    tmux.keys(&["Enter"]);
    tmux.wait_until("the message and the bot's answer", |screen| {
        let mine = rows_from(screen, "you: hello from the editor");
        let echo = rows_from(screen, "echo: echo: hello from the editor");
        mine.len() > 1
            && mine[1].contains("  and its second line")
            && echo.len() > 1
            && echo[1].contains("  and its second line")
    });
    quit_and_check_terminal(&tmux, &report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bot_answers_a_text_but_not_a_timer_change() {
    use sotto::client::manager::Command;
    use sotto::client::store::MessageKind;

    let demo = sotto::demo::Demo::start().await.unwrap();
    let mut you = common::Client::start(&demo.you, &demo.relay_url).await;
    for secret in [false, true] {
        you.handle
            .commands
            .send(Command::SetTimer {
                id: uuid::Uuid::new_v4().to_string(),
                contact: sotto::demo::BOT.into(),
                secret,
                timer: Some(30),
            })
            .await
            .unwrap();
        you.send(sotto::demo::BOT, secret, "hi").await;
        // The bot takes its messages in order: an answer to the timer change would come first.
        let answer = you.receive().await;
        assert_eq!(
            (answer.kind, answer.secret, answer.text.as_str()),
            (
                MessageKind::Text,
                secret,
                if secret {
                    "echo (secret): hi"
                } else {
                    "echo: hi"
                }
            )
        );
    }
    you.stop();
    demo.stop().await;
}
