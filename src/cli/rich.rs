//! `sotto reply`, `react`, `edit` and `delete`: one change to a message of a thread, handed
//! to the manager and followed until the relay has it (or, deleting here only, until it is
//! done).
//!
//! Owns nothing but turning the arguments into a `Command`; the rules (whose message, which
//! thread, how old) are the manager's. Must not print on success, as `send` does not.

use std::path::Path;

use anyhow::{Result, anyhow, bail};
use sotto::client::manager::{Command, Event};

use super::session::{CONNECT_TIMEOUT, RelayChoice, until_sent, wait_online};

/// The message a command is about.
pub struct Target {
    handle: String,
    secret: bool,
    id: String,
}

impl Target {
    pub fn new(handle: String, secret: bool, id: String) -> Target {
        Target { handle, secret, id }
    }
}

/// Starts the manager, waits for the relay, hands over the command `make` builds from a new
/// id and waits until the relay has it.
async fn online_change(
    dir: &Path,
    relay: RelayChoice,
    make: impl FnOnce(String) -> Command,
) -> Result<()> {
    let mut m = relay.spawn(dir)?;
    wait_online(&mut m).await?;
    let id = uuid::Uuid::new_v4().to_string();
    until_sent(&mut m, &id, make(id.clone())).await?;
    m.shutdown();
    Ok(())
}

pub async fn reply(dir: &Path, relay: RelayChoice, t: Target, text: String) -> Result<()> {
    online_change(dir, relay, |id| Command::Send {
        id,
        to: t.handle,
        secret: t.secret,
        text,
        reply_to: Some(t.id),
    })
    .await
}

pub async fn react(dir: &Path, relay: RelayChoice, t: Target, emoji: Option<String>) -> Result<()> {
    online_change(dir, relay, |id| Command::React {
        id,
        contact: t.handle,
        secret: t.secret,
        target: t.id,
        emoji,
    })
    .await
}

pub async fn edit(dir: &Path, relay: RelayChoice, t: Target, text: String) -> Result<()> {
    online_change(dir, relay, |id| Command::Edit {
        id,
        contact: t.handle,
        secret: t.secret,
        target: t.id,
        text,
    })
    .await
}

pub async fn delete(dir: &Path, relay: RelayChoice, t: Target, for_everyone: bool) -> Result<()> {
    let command = |id| Command::Delete {
        id,
        contact: t.handle,
        secret: t.secret,
        target: t.id,
        for_everyone,
    };
    if for_everyone {
        return online_change(dir, relay, command).await;
    }
    // Here only: no relay needed.
    let mut m = relay.spawn(dir)?;
    let id = uuid::Uuid::new_v4().to_string();
    m.commands
        .send(command(id.clone()))
        .await
        .map_err(|_| anyhow!("the client stopped unexpectedly"))?;
    let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, m.events.recv()).await {
            Err(_) => bail!("the message was not deleted in time; try again"),
            Ok(None) => bail!("the client stopped unexpectedly"),
            Ok(Some(Event::MessageRemoved(_))) => break,
            Ok(Some(Event::MessageFailed { id: i, error })) if i == id => bail!("{error}"),
            Ok(Some(_)) => {}
        }
    }
    m.shutdown();
    Ok(())
}
