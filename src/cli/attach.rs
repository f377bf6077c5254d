//! `sotto send --attach` and `sotto save`: a file handed to the manager and followed until
//! its message is at the relay, and a message's file written out as plaintext.
//!
//! Owns how long a script waits for a transfer (as long as it moves). Must not read or
//! write the files itself: the manager does.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use sotto::client::attachment::AttachmentState;
use sotto::client::manager::{Command, Event, ManagerHandle};
use sotto::client::store::Store;

use super::session::{RelayChoice, timer_command, until_sent, wait_online};

/// A transfer that reports nothing for this long has stalled.
const STALL: Duration = Duration::from_secs(60);

/// The next event, or an error once nothing came for `STALL`.
async fn next(m: &mut ManagerHandle, waiting_for: &str) -> Result<Event> {
    match tokio::time::timeout(STALL, m.events.recv()).await {
        Err(_) => bail!(
            "{waiting_for} made no progress for {} seconds; it resumes on the next run",
            STALL.as_secs()
        ),
        Ok(None) => bail!("the client stopped unexpectedly"),
        Ok(Some(e)) => Ok(e),
    }
}

pub async fn send_file(
    dir: &Path,
    relay: RelayChoice,
    handle: String,
    secret: bool,
    timer: Option<Option<u32>>,
    path: PathBuf,
    caption: Option<String>,
) -> Result<()> {
    // A running chat screen's manager takes the file through the control socket; its
    // working directory is not ours, so it gets the whole path.
    let path =
        std::path::absolute(&path).map_err(|e| anyhow!("cannot find {}: {e}", path.display()))?;
    let mut m = relay.join_or_spawn(dir)?;
    wait_online(&mut m).await?;
    if let Some(timer) = timer {
        let (id, cmd) = timer_command(&handle, secret, timer);
        until_sent(&mut m, &id, cmd).await?;
    }
    let id = uuid::Uuid::new_v4().to_string();
    m.commands
        .send(Command::Attach {
            id: id.clone(),
            to: handle,
            secret,
            path,
            caption: caption.filter(|c| !c.trim().is_empty()),
        })
        .await
        .map_err(|_| anyhow!("the client stopped unexpectedly"))?;
    loop {
        match next(&mut m, "the upload").await? {
            Event::MessageState { id: i, .. } if i == id => break,
            Event::MessageFailed { id: i, error } if i == id => bail!("{error}"),
            _ => {}
        }
    }
    m.shutdown();
    Ok(())
}

pub async fn save(
    dir: &Path,
    relay: RelayChoice,
    handle: &str,
    msg_id: &str,
    dest: PathBuf,
) -> Result<()> {
    let file = Store::open(dir)?
        .attachment_by_id(msg_id)?
        .filter(|f| f.contact == handle);
    let Some(file) = file else {
        bail!(
            "no message {msg_id:?} with a file in your threads with {handle}; `sotto history {handle}` (add --secret for the secret thread) lists the ids, with `attachment` for those carrying one"
        );
    };
    let dest = std::path::absolute(&dest)
        .map_err(|e| anyhow!("cannot write to {}: {e}", dest.display()))?;
    let mut m = relay.join_or_spawn(dir)?;
    if file.attachment.state != AttachmentState::Ready {
        wait_online(&mut m).await?;
        m.commands
            .send(Command::Download {
                tag: 1,
                id: msg_id.to_string(),
            })
            .await
            .map_err(|_| anyhow!("the client stopped unexpectedly"))?;
        loop {
            match next(&mut m, "the download").await? {
                Event::Attachment { id, attachment } if id == msg_id => match attachment.state {
                    AttachmentState::Ready => break,
                    AttachmentState::Failed { error } => bail!("{error}"),
                    _ => {}
                },
                Event::Failed { tag: 1, error } => bail!("{error}"),
                _ => {}
            }
        }
    }
    m.commands
        .send(Command::SaveAttachment {
            tag: 2,
            id: msg_id.to_string(),
            dest,
        })
        .await
        .map_err(|_| anyhow!("the client stopped unexpectedly"))?;
    loop {
        match next(&mut m, "writing the file").await? {
            Event::AttachmentSaved { tag: 2, path, .. } => {
                m.shutdown();
                println!("{}", path.display());
                return Ok(());
            }
            Event::Failed { tag: 2, error } => bail!("{error}"),
            _ => {}
        }
    }
}
