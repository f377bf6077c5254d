//! `sotto send` and `sotto timer`: one message or one timer change, handed to the manager
//! and followed until the relay has it.
//!
//! Owns where a message's text comes from (the argument, or standard input for `-`). Must
//! not talk to the relay itself: the manager does.

use std::io::Read as _;
use std::path::Path;

use anyhow::{Context, Result, bail};
use sotto::client::manager::Command;

use super::session::{RelayChoice, timer_command, until_sent, wait_online};

/// The text of `sotto send HANDLE TEXT`: TEXT itself, or for `-` all of standard input with
/// its newlines, less the one line break that ends it (as `echo` or a file's last line has).
pub fn text_argument(text: String) -> Result<String> {
    if text != "-" {
        return Ok(text);
    }
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut bytes)
        .context("cannot read the message from standard input")?;
    let Ok(mut text) = String::from_utf8(bytes) else {
        bail!("the message on standard input is not UTF-8 text; convert it first (e.g. iconv)");
    };
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    if text.trim().is_empty() {
        bail!(
            "standard input held no message; pipe the text in, e.g. `echo hi | sotto send bob -`"
        );
    }
    Ok(text)
}

pub async fn send(
    dir: &Path,
    relay: RelayChoice,
    handle: String,
    secret: bool,
    timer: Option<Option<u32>>,
    text: String,
) -> Result<()> {
    if text.trim().is_empty() {
        bail!("a message cannot be empty");
    }
    let mut m = relay.join_or_spawn(dir)?;
    wait_online(&mut m).await?;
    if let Some(timer) = timer {
        let (id, cmd) = timer_command(&handle, secret, timer);
        until_sent(&mut m, &id, cmd).await?;
    }
    let id = uuid::Uuid::new_v4().to_string();
    let cmd = Command::Send {
        id: id.clone(),
        to: handle,
        secret,
        text,
        reply_to: None,
    };
    until_sent(&mut m, &id, cmd).await?;
    m.shutdown();
    Ok(())
}

pub async fn set_timer(
    dir: &Path,
    relay: RelayChoice,
    handle: String,
    secret: bool,
    timer: Option<u32>,
) -> Result<()> {
    let mut m = relay.join_or_spawn(dir)?;
    wait_online(&mut m).await?;
    let (id, cmd) = timer_command(&handle, secret, timer);
    until_sent(&mut m, &id, cmd).await?;
    m.shutdown();
    match timer {
        Some(t) => println!(
            "messages with {handle} now disappear after {}",
            sotto::timer::short(t)
        ),
        None => println!("disappearing messages with {handle} are off"),
    }
    Ok(())
}
