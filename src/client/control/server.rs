//! The manager's side of the control socket: listens in the profile directory while the
//! manager runs, turns each caller's requests into commands and passes events back.
//!
//! Owns the listening socket file (made 0600, removed when the manager stops) and the
//! check that a caller runs as the profile's owner. Must not act on a request itself: the
//! manager does, through its command channel.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{Report, Request, SOCKET};
use crate::client::manager::{Command, ConnState, Event, Warning};

/// How many events a slow caller may fall behind before it is told it missed some.
const BACKLOG: usize = 1024;

/// The longest request line taken; a send's text is at most 64 KiB, escaped JSON at most 6
/// bytes a byte.
const MAX_LINE: usize = 512 * 1024;

/// What the manager shares with the socket's callers: its events as they happen, and the
/// connection state (and whether the relay's queue was drained since) for a caller that
/// comes in later.
#[derive(Clone)]
pub(crate) struct Tap {
    events: broadcast::Sender<Event>,
    status: watch::Sender<(ConnState, bool)>,
}

impl Tap {
    pub(crate) fn new() -> Tap {
        Tap {
            events: broadcast::channel(BACKLOG).0,
            status: watch::Sender::new((ConnState::Connecting, false)),
        }
    }

    /// Passes `e` on to the callers connected now, if any.
    pub(crate) fn event(&self, e: &Event) {
        match e {
            Event::Connection(state) => {
                self.status.send_replace((state.clone(), false));
            }
            Event::Drained => {
                self.status.send_modify(|s| s.1 = true);
            }
            _ => {}
        }
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(e.clone());
        }
    }
}

/// Listens on the profile's control socket until `cancel`, then removes it. The manager
/// holds the profile's lock, so a socket file already there is a dead process's.
pub(crate) async fn serve(
    dir: PathBuf,
    commands: mpsc::WeakSender<Command>,
    tap: Tap,
    cancel: CancellationToken,
) {
    let path = dir.join(SOCKET);
    let listener = match listen(&path) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "no control socket; headless commands cannot join this session");
            return;
        }
    };
    let owner = match std::fs::metadata(&dir) {
        Ok(m) => m.uid(),
        Err(e) => {
            tracing::warn!(error = %e, "no control socket: the profile directory is unreadable");
            let _ = std::fs::remove_file(&path);
            return;
        }
    };
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let uid = stream.peer_cred().map(|c| c.uid());
                    if uid.as_ref().ok() != Some(&owner) {
                        tracing::warn!(?uid, "refused a control connection from another user");
                        continue;
                    }
                    let (commands, tap, cancel) = (commands.clone(), tap.clone(), cancel.clone());
                    tokio::spawn(async move {
                        if let Err(e) = caller(stream, commands, tap, cancel).await {
                            tracing::info!(error = %e, "a control connection ended");
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "control socket accept failed"),
            },
        }
    }
    let _ = std::fs::remove_file(&path);
}

fn listen(path: &Path) -> std::io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    // The directory is 0700 already; the socket's own mode says the same to anyone who
    // copies the directory's permissions wrong.
    std::fs::set_permissions(
        path,
        std::fs::Permissions::from_mode(crate::private::FILE_MODE),
    )?;
    Ok(listener)
}

/// One caller: its requests go to the manager in order; events go back as they happen.
async fn caller(
    stream: UnixStream,
    commands: mpsc::WeakSender<Command>,
    tap: Tap,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut events = tap.events.subscribe();
    // Subscribed first: a change between the two is reported twice, never missed.
    let (state, drained) = tap.status.borrow().clone();
    send(&mut write, &Report::Connection { state }).await?;
    if drained {
        send(&mut write, &Report::Drained).await?;
    }
    let (warn_tx, mut warnings) = mpsc::channel::<String>(4);
    // Reading and writing run side by side as whole loops, so neither is ever cut off in
    // the middle of a line.
    let reading = async move {
        let mut lines = BufReader::new(read);
        let mut line = String::new();
        loop {
            if read_line(&mut lines, &mut line).await? == 0 {
                return Ok(());
            }
            let request = match serde_json::from_str::<Request>(&line) {
                Ok(r) => r,
                Err(e) => {
                    let text = format!(
                        "the running sotto did not understand a request ({e}); are both the same version?"
                    );
                    let _ = warn_tx.send(text).await;
                    continue;
                }
            };
            // The manager stopping ends the caller's session as it ends the screen's.
            let Some(commands) = commands.upgrade() else {
                return Ok(());
            };
            if commands.send(request.into_command()).await.is_err() {
                return Ok(());
            }
        }
    };
    let writing = async move {
        loop {
            let report = tokio::select! {
                Some(text) = warnings.recv() => Report::Warning(Warning::general(text)),
                e = events.recv() => match e {
                    Ok(e) => match Report::from_event(e) {
                        Some(r) => r,
                        None => continue,
                    },
                    Err(broadcast::error::RecvError::Lagged(n)) => Report::Warning(Warning::general(
                        format!(
                            "missed {n} updates from the running sotto; what was not printed stays unread"
                        ),
                    )),
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                },
            };
            send(&mut write, &report).await?;
        }
    };
    tokio::select! {
        () = cancel.cancelled() => Ok(()),
        r = reading => r,
        r = writing => r,
    }
}

/// Reads one line into `line` (cleared first), refusing one longer than `MAX_LINE`.
async fn read_line(
    lines: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
    line: &mut String,
) -> std::io::Result<usize> {
    use tokio::io::AsyncReadExt as _;
    line.clear();
    let n = lines.take(MAX_LINE as u64).read_line(line).await?;
    if n == MAX_LINE && !line.ends_with('\n') {
        return Err(std::io::Error::other("request line too long"));
    }
    Ok(n)
}

async fn send(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    report: &Report,
) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(report).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    write.write_all(&bytes).await
}
