//! The relay as a child process for `--mode idle`, `--mode hostile` and `--relay-process`:
//! `sotto relay` from the binary next to this one, on a free loopback port with a temporary
//! data directory and the `[relay_server]` settings its caller gives, its memory read from
//! `/proc` and its disk use from its data directory. The relay runs in its own process so
//! that its RSS and CPU time are its own, not the clients'.
//!
//! The child is always ended: `stop` asks with SIGTERM and waits, and dropping a `RelayChild`
//! that was not stopped (an error path) does the same, then SIGKILLs a relay that lingers.

use std::fs::File;
use std::io::{BufRead as _, BufReader, Read as _, Seek as _, SeekFrom};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use sotto::tls::{Endpoint, Pin};
use tempfile::TempDir;

use crate::Transport;

/// How long the relay may take to open its store and start listening.
const STARTUP: Duration = Duration::from_secs(30);
/// How long a relay asked to stop may take before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);

/// The relay's memory as the kernel reports it, in KiB.
#[derive(Clone, Copy)]
pub struct Memory {
    /// Resident now (`VmRSS`).
    pub rss_kb: u64,
    /// Highest resident so far (`VmHWM`).
    pub peak_kb: u64,
}

pub struct RelayChild {
    child: Child,
    /// The URL the relay announced, with the certificate it printed pinned.
    pub endpoint: Endpoint,
    /// The address it listens on, for connections made by hand.
    pub addr: std::net::SocketAddr,
    /// Config, data and log of the relay; removed when this is dropped, after the child ends.
    dir: TempDir,
}

impl RelayChild {
    /// Starts `sotto relay` with `settings` (the body of the config file's `[relay_server]`
    /// table) and waits until it accepts connections.
    pub async fn start(settings: &str, transport: Transport) -> Result<RelayChild> {
        RelayChild::start_with(settings, transport, &[]).await
    }

    /// As `start`, with `args` after `sotto relay`'s own (`--database`, `--tls-cert`, ...).
    pub async fn start_with(
        settings: &str,
        transport: Transport,
        args: &[std::ffi::OsString],
    ) -> Result<RelayChild> {
        let exe = std::env::current_exe().context("cannot locate this executable")?;
        let sotto = exe.with_file_name("sotto");
        if !sotto.is_file() {
            bail!(
                "cannot find the sotto binary at {}; build it next to sotto-load \
                 (cargo build --release --bin sotto)",
                sotto.display()
            );
        }
        let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
        let config = dir.path().join("relay.toml");
        // The limits are config-file settings only; an explicit file also keeps the user's own
        // config from changing the run.
        std::fs::write(&config, format!("[relay_server]\n{settings}"))
            .context("cannot write the relay's config file")?;
        let log = File::create(log_path(&dir)).context("cannot create the relay's log file")?;
        let mut child = Command::new(&sotto)
            .arg("--config")
            .arg(&config)
            .arg("relay")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_path(&dir))
            .args(match transport {
                Transport::Ws => &["--insecure-transport"][..],
                Transport::Wss => &[],
            })
            .args(args)
            .env("SOTTO_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", sotto.display()))?;
        let stdout = child.stdout.take();
        // From here on the guard ends the child on every path out.
        let mut relay = RelayChild {
            child,
            endpoint: Endpoint::new("ws://127.0.0.1:0", None, false)?,
            addr: ([127, 0, 0, 1], 0).into(),
            dir,
        };
        let stdout = stdout.ok_or_else(|| anyhow!("the relay's stdout was not captured"))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            // Keep reading to the end so the relay never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match tokio::time::timeout(STARTUP, rx).await {
            Ok(Ok(Some(Ok(line)))) => line,
            Ok(_) => bail!("the relay ended before it listened{}", relay.why_gone()),
            Err(_) => bail!(
                "the relay did not start listening within {STARTUP:?}{}",
                relay.log_tail()
            ),
        };
        let (endpoint, addr) = announced(&line)
            .ok_or_else(|| anyhow!("unexpected first line from the relay: {line:?}"))?;
        relay.endpoint = endpoint;
        relay.addr = addr
            .parse()
            .with_context(|| format!("the relay announced an address that is not one: {addr}"))?;
        relay.wait_accepting(&addr).await?;
        Ok(relay)
    }

    /// Polls until a TCP connection to the relay succeeds.
    async fn wait_accepting(&mut self, addr: &str) -> Result<()> {
        let deadline = tokio::time::Instant::now() + STARTUP;
        loop {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(_) => return Ok(()),
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    bail!(
                        "the relay does not accept connections on {addr}: {e}{}",
                        self.log_tail()
                    )
                }
                Err(_) => {}
            }
            if self.child.try_wait()?.is_some() {
                bail!("the relay ended while starting{}", self.why_gone());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The relay's resident memory now and at its peak.
    pub fn memory(&self) -> Result<Memory> {
        let path = format!("/proc/{}/status", self.child.id());
        let status = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {path}: is the relay still running?"))?;
        let field = |name: &str| -> Result<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| anyhow!("no {name} in {path}"))
        };
        Ok(Memory {
            rss_kb: field("VmRSS:")?,
            peak_kb: field("VmHWM:")?,
        })
    }

    /// CPU time the relay has used so far, user and system.
    pub fn cpu(&self) -> Result<Duration> {
        let path = format!("/proc/{}/stat", self.child.id());
        let stat = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {path}: is the relay still running?"))?;
        // The fields after the command name, which is in parentheses and may hold spaces:
        // utime and stime are the 14th and 15th of the line, 12th and 13th after it.
        let ticks: u64 = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().skip(11).take(2))
            .into_iter()
            .flatten()
            .map(|t| t.parse::<u64>().unwrap_or(0))
            .sum();
        // SAFETY: sysconf reads a constant of the system.
        let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Ok(Duration::from_millis(ticks * 1000 / per_sec))
    }

    /// Bytes the relay's data directory holds on disk: `relay.db`, its WAL and everything else.
    pub fn disk_bytes(&self) -> u64 {
        dir_bytes(&data_path(&self.dir))
    }

    /// Asks the relay to stop (SIGTERM), waits for it, and fails if it had to be killed or
    /// exited with an error.
    pub async fn stop(mut self) -> Result<()> {
        if self.child.try_wait()?.is_none() {
            self.signal(libc::SIGTERM);
            let deadline = tokio::time::Instant::now() + STOP_GRACE;
            while self.child.try_wait()?.is_none() {
                if tokio::time::Instant::now() >= deadline {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    bail!("the relay did not stop within {STOP_GRACE:?} of SIGTERM; killed it");
                }
                tokio::time::sleep(POLL).await;
            }
        }
        let status = self.child.wait()?;
        if !status.success() {
            bail!("the relay exited with {status}{}", self.log_tail());
        }
        Ok(())
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) with plain values. The pid is our unreaped child (callers check
        // try_wait first), so it cannot have been recycled for another process.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, sig);
        }
    }

    /// Why the child is gone: its exit status and the end of its log.
    fn why_gone(&mut self) -> String {
        let status = match self.child.try_wait() {
            Ok(Some(s)) => format!(" (it exited with {s})"),
            _ => String::new(),
        };
        format!("{status}{}", self.log_tail())
    }

    /// The last lines of the relay's log, for error messages.
    fn log_tail(&self) -> String {
        let mut bytes = Vec::new();
        if let Ok(mut f) = File::open(log_path(&self.dir)) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = f.seek(SeekFrom::Start(len.saturating_sub(2000)));
            let _ = f.read_to_end(&mut bytes);
        }
        // The cut may fall inside a character.
        let text = String::from_utf8_lossy(&bytes);
        let text = text.trim();
        if text.is_empty() {
            String::new()
        } else {
            format!("; the relay's log ends with:\n{text}")
        }
    }
}

impl Drop for RelayChild {
    /// Ends a child still running (an error path; after `stop` it has been reaped and
    /// `try_wait` answers from the recorded status): SIGTERM, a grace period, then SIGKILL.
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        self.signal(libc::SIGTERM);
        let deadline = std::time::Instant::now() + STOP_GRACE;
        while std::time::Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(POLL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn data_path(dir: &TempDir) -> PathBuf {
    dir.path().join("data")
}

/// Allocated bytes of every file under `path` (what the files take on disk, so a sparse or
/// preallocated WAL counts as what it holds); a file removed while walking counts as nothing.
fn dir_bytes(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

fn log_path(dir: &TempDir) -> PathBuf {
    dir.path().join("relay.log")
}

/// The endpoint and `host:port` in the relay's first line: `listening on wss://ADDR (TLS
/// certificate SHA-256 FP)`, or `listening on ws://ADDR (plain: no TLS)`.
fn announced(line: &str) -> Option<(Endpoint, String)> {
    let rest = line.strip_prefix("listening on ")?;
    let (url, note) = rest.split_once(' ')?;
    let addr = url.split_once("://")?.1.to_string();
    let pin = match note
        .strip_prefix("(TLS certificate SHA-256 ")
        .and_then(|n| n.strip_suffix(')'))
    {
        Some(fp) => Some(Pin::Certificate(sotto::tls::parse_fingerprint(fp)?)),
        None => None,
    };
    Some((Endpoint::new(url, pin, false).ok()?, addr))
}
