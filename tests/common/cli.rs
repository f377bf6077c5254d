//! Driving the built `sotto` binary as a script would: a relay process, commands run against
//! a profile directory, and their output.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_sotto");

pub struct RelayProcess {
    pub child: Child,
    pub url: String,
    /// The certificate fingerprint the relay printed beside its URL.
    pub fingerprint: String,
}

/// Starts `sotto relay` on a free port and reads the one line it promises on stdout.
pub fn start_relay(dir: &Path) -> RelayProcess {
    start_relay_at(dir, "127.0.0.1:0")
}

/// As `start_relay`, listening on `addr` (e.g. the one a killed relay had).
pub fn start_relay_at(dir: &Path, addr: &str) -> RelayProcess {
    start_relay_with::<&str>(dir, addr, &[])
}

/// As `start_relay_at`, with more arguments (`Backend::relay_args`, say).
pub fn start_relay_with<S: AsRef<std::ffi::OsStr>>(
    dir: &Path,
    addr: &str,
    args: &[S],
) -> RelayProcess {
    let mut child = Command::new(BIN)
        .args(["relay", "--listen", addr, "--data-dir"])
        .arg(dir)
        .args(args)
        .env("SOTTO_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let (url, fingerprint) = super::listening(&line);
    assert!(
        url.starts_with("wss://127.0.0.1:") && !url.ends_with(":0"),
        "{line}"
    );
    let fingerprint = fingerprint.unwrap_or_else(|| panic!("no fingerprint in {line:?}"));
    RelayProcess {
        child,
        url,
        fingerprint,
    }
}

pub fn sotto(profile: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--data-dir")
        .arg(profile)
        .args(args)
        .output()
        .unwrap()
}

pub fn ok(profile: &Path, args: &[&str]) -> String {
    let out = sotto(profile, args);
    assert!(
        out.status.success(),
        "sotto {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail; returns its stderr.
pub fn fails(profile: &Path, args: &[&str]) -> String {
    let out = sotto(profile, args);
    assert!(!out.status.success(), "sotto {args:?} should have failed");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("error: "), "{err}");
    err
}

pub fn json_lines(s: &str) -> Vec<serde_json::Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Runs `sotto` with `input` on its standard input.
pub fn sotto_with_stdin(profile: &Path, args: &[&str], input: &[u8]) -> Output {
    use std::io::Write as _;
    let mut child = Command::new(BIN)
        .arg("--data-dir")
        .arg(profile)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// A relay and two registered profiles (`alice`, `bob`) in-process, served by a runtime of
/// its own while the test thread runs the binary. Keep the runtime as long as the scene.
pub fn scene() -> (tokio::runtime::Runtime, super::Scene) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let scene = rt.block_on(super::Scene::new());
    (rt, scene)
}

/// A running `sotto recv --follow`, its lines read as they come.
pub struct Follow {
    pub child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Follow {
    pub fn start(profile: &Path) -> Follow {
        let mut child = Command::new(BIN)
            .arg("--data-dir")
            .arg(profile)
            .args(["recv", "--follow"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Follow { child, lines }
    }

    /// The next line, failing the test after `PATIENCE`; None once stdout is closed.
    pub fn line(&self) -> Option<String> {
        match self.lines.recv_timeout(super::PATIENCE) {
            Ok(l) => Some(l),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                panic!("recv --follow printed nothing within {:?}", super::PATIENCE)
            }
        }
    }

    /// Sends `signal` and returns the exit status and whatever was printed after the lines
    /// already read.
    pub fn stop(mut self, signal: i32) -> (std::process::ExitStatus, Vec<String>) {
        let pid = i32::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on our own child's pid only sends it a signal.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
        let status = self.child.wait().unwrap();
        let mut rest = Vec::new();
        while let Some(l) = self.line() {
            rest.push(l);
        }
        (status, rest)
    }
}
