//! A headless command's side of the control socket: a `ManagerHandle` whose commands and
//! events travel to and from the manager that already runs on the profile.
//!
//! Owns the connection and its thread. Must not interpret events: the command using the
//! handle does, exactly as with a manager of its own.

use std::io::ErrorKind;
use std::os::unix::net::UnixStream as StdStream;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use super::{ControlError, Report, Request, SOCKET};
use crate::client::manager::{Command, Event, ManagerHandle, Warning};

/// How long a command waits for a manager that holds the lock but has not opened its socket
/// yet (it is starting).
const STARTING: Duration = Duration::from_secs(3);

/// Joins the manager running on the profile in `dir`.
pub fn connect(dir: &Path) -> Result<ManagerHandle, ControlError> {
    let path = dir.join(SOCKET);
    let started = Instant::now();
    let mut wait = Duration::from_millis(10);
    let stream = loop {
        match StdStream::connect(&path) {
            Ok(s) => break s,
            Err(e)
                if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused)
                    && started.elapsed() < STARTING =>
            {
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_millis(200));
            }
            Err(cause) => {
                return Err(ControlError::NoAnswer {
                    dir: dir.display().to_string(),
                    socket: path.display().to_string(),
                    cause,
                });
            }
        }
    };
    stream.set_nonblocking(true).map_err(ControlError::Start)?;
    let (cmd_tx, cmd_rx) = mpsc::channel(256);
    let (evt_tx, evt_rx) = mpsc::channel(1024);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ControlError::Start)?;
    let thread = std::thread::Builder::new()
        .name("sotto-control".into())
        .spawn(move || rt.block_on(relay_both_ways(stream, cmd_rx, evt_tx)))
        .map_err(ControlError::Start)?;
    Ok(ManagerHandle::joined(cmd_tx, evt_rx, thread))
}

/// Carries commands out and events in until the command side closes (everything asked was
/// written) or the running manager goes away (the events end, as a stopped manager's do).
async fn relay_both_ways(
    stream: StdStream,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
) {
    let Ok(stream) = UnixStream::from_std(stream) else {
        return;
    };
    let (read, mut write) = stream.into_split();
    let refusals = events.clone();
    let outgoing = async move {
        while let Some(cmd) = commands.recv().await {
            let Some(request) = Request::from_command(cmd) else {
                let text = "another sotto (the chat screen?) holds this profile and does not take this command through its socket; close it and try again";
                let _ = refusals.send(Event::Warning(Warning::general(text))).await;
                continue;
            };
            let mut line = match serde_json::to_vec(&request) {
                Ok(l) => l,
                Err(_) => continue,
            };
            line.push(b'\n');
            if write.write_all(&line).await.is_err() {
                return;
            }
        }
        let _ = write.shutdown().await;
    };
    let incoming = async move {
        let mut lines = BufReader::new(read).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let Ok(report) = serde_json::from_str::<Report>(&line) else {
                tracing::warn!("an unreadable report from the running sotto");
                continue;
            };
            if events.send(report.into_event()).await.is_err() {
                return;
            }
        }
        // The running manager went away: the events end here, as a stopped manager's do.
    };
    tokio::select! {
        () = outgoing => {}
        () = incoming => {}
    }
}
