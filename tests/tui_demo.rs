//! `sotto demo` in a real pseudo-terminal (tmux): type to the bot, switch to secret mode,
//! quit, and find the terminal restored and every demo file (its log too) gone. tmux is a
//! test dependency (README setup, .ci/run). And the demo's bot, driven in-process.

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

#[test]
fn demo_chats_with_the_bot_in_both_modes_and_restores_the_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("after-exit.txt");
    // The demo's own temporary directory is made here, so the test can see it come and go.
    let tmpdir = tmp.path().join("tmp");
    std::fs::create_dir(&tmpdir).unwrap();
    let tmpdir_env = format!("TMPDIR={}", tmpdir.display());
    let tmux = Tmux {
        socket: format!("sotto-test-{}", std::process::id()),
    };
    // After the demo exits, record its exit code and the terminal's modes.
    let script = format!(
        "'{BIN}' demo; echo \"exit=$?\" > '{r}'; stty -a >> '{r}'; echo done >> '{r}'; sleep 60",
        r = report.display()
    );
    let started = tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "demo",
        "-x",
        "100",
        "-y",
        "30",
        "-e",
        "TERM=xterm-256color",
        "-e",
        &tmpdir_env,
        "sh",
        "-c",
        &script,
    ]);
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );

    let screen = tmux.wait_for("echo · normal");
    assert!(screen.contains("● online") || tmux.wait_for("● online").contains("normal"));
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

    tmux.keys(&["C-c"]);
    let after = wait_for_file(&report);
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
    // Every file the demo wrote went with it, its log included.
    let left: Vec<_> = std::fs::read_dir(&tmpdir).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
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
