//! A headless command's session with the profile's manager: starting it, waiting until the
//! relay is reachable, and following a message until the relay has it.
//!
//! Owns the timeouts a script waits for. Must not print: the commands say what happened.

use std::path::Path;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use sotto::client::control;
use sotto::client::manager::{self, ClientError, Command, ConnState, Event, ManagerHandle};
use sotto::client::store::StoreError;
use sotto::config::Config;

/// How long a headless command waits for the relay before giving up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `send` waits for the relay to accept a message.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Which relay the client commands talk to, and whether plain ws:// off this machine is
/// allowed.
pub struct RelayChoice {
    pub url: Option<String>,
    pub insecure: bool,
    /// Read receipts and typing, as the config file says.
    pub settings: manager::Settings,
}

impl RelayChoice {
    pub fn new(config: &Config, url: Option<String>, insecure_flag: bool) -> RelayChoice {
        RelayChoice {
            url,
            insecure: insecure_flag || config.insecure_transport.unwrap_or(false),
            settings: config.manager_settings(),
        }
    }

    pub fn spawn(self, dir: &Path) -> Result<ManagerHandle> {
        Ok(manager::spawn_configured(
            dir,
            self.url,
            self.insecure,
            self.settings,
        )?)
    }

    /// As `spawn`, but a profile another sotto runs on (the chat screen, say) is joined
    /// through its control socket instead of refused; that session's relay is used then.
    pub fn join_or_spawn(self, dir: &Path) -> Result<ManagerHandle> {
        match manager::spawn_configured(dir, self.url, self.insecure, self.settings) {
            Err(ClientError::Store(StoreError::InUse(_))) => Ok(control::connect(dir)?),
            started => Ok(started?),
        }
    }
}

/// Waits until the manager reports the relay connection up, or fails with the last reason.
pub async fn wait_online(m: &mut ManagerHandle) -> Result<()> {
    let mut last = String::from("no answer");
    let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, m.events.recv()).await {
            Err(_) => {
                bail!("cannot reach the relay ({last}); is it running, and is the URL right?")
            }
            Ok(None) => {
                bail!("the client stopped unexpectedly; see the log in the profile directory")
            }
            Ok(Some(Event::Connection(ConnState::Online))) => return Ok(()),
            Ok(Some(Event::Connection(ConnState::Offline { reason, .. }))) => last = reason,
            Ok(Some(_)) => {}
        }
    }
}

/// Hands `cmd` (which creates the message `id`) to the manager and waits until the relay has
/// accepted that message.
pub async fn until_sent(m: &mut ManagerHandle, id: &str, cmd: Command) -> Result<()> {
    m.commands
        .send(cmd)
        .await
        .map_err(|_| anyhow!("the client stopped unexpectedly"))?;
    let deadline = tokio::time::Instant::now() + SEND_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, m.events.recv()).await {
            Err(_) => bail!(
                "the relay did not accept the message in time; it is kept and sent on the next run"
            ),
            Ok(None) => bail!("the client stopped unexpectedly"),
            Ok(Some(Event::MessageState { id: i, .. })) if i == id => return Ok(()),
            Ok(Some(Event::MessageFailed { id: i, error })) if i == id => bail!("{error}"),
            Ok(Some(_)) => {}
        }
    }
}

pub fn timer_command(handle: &str, secret: bool, timer: Option<u32>) -> (String, Command) {
    let id = uuid::Uuid::new_v4().to_string();
    let cmd = Command::SetTimer {
        id: id.clone(),
        contact: handle.to_string(),
        secret,
        timer,
    };
    (id, cmd)
}
