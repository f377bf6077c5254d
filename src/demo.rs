//! `sotto demo`: a relay, a profile for the user and a bot called `echo`, all in this process
//! and in a temporary directory, so one command shows what sotto does.
//!
//! Owns the demo's lifetime: it starts the pieces and removes every file they wrote when it
//! stops. The bot is a real second client (its own store, sessions and WebSocket) that
//! answers each message in the mode it arrived in. Must not reach past loopback.

use std::path::{Path, PathBuf};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::client::account;
use crate::client::manager::{self, ClientError, Command, Event, ManagerHandle};
use crate::client::store::Store;
use crate::relay::{self, RelayConfig};
use crate::tls::RelayCert;

/// The bot's handle.
pub const BOT: &str = "echo";
/// The user's handle in the demo.
pub const YOU: &str = "you";

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot set the demo up")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Account(#[from] account::AccountError),
    #[error(transparent)]
    Store(#[from] crate::client::store::StoreError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

pub struct Demo {
    /// The user's profile directory.
    pub you: PathBuf,
    pub relay_url: String,
    cancel: CancellationToken,
    relay: JoinHandle<()>,
    bot: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Demo {
    /// Starts the relay on a free loopback port, registers the user and the bot, and sets the
    /// bot answering.
    pub async fn start() -> Result<Demo, DemoError> {
        let mut dir = tempfile::Builder::new();
        dir.prefix("sotto-demo-");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            dir.permissions(std::fs::Permissions::from_mode(crate::private::DIR_MODE));
        }
        let dir = dir.tempdir()?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let relay_url = format!("wss://{addr}");
        let cancel = CancellationToken::new();
        let relay_dir = dir.path().join("relay");
        // The relay serves TLS with a certificate of its own, which both profiles pin.
        let cert = RelayCert::load_or_create(&relay_dir, &addr.to_string())?;
        let config = RelayConfig {
            tls: Some(cert.server_config()?),
            ..RelayConfig::default()
        };
        let token = cancel.clone();
        let relay = tokio::spawn(async move {
            if let Err(e) = relay::run(listener, &relay_dir, config, token).await {
                tracing::error!(error = %e, "demo relay stopped");
            }
        });
        let you = dir.path().join(YOU);
        let bot_dir = dir.path().join(BOT);
        register(&you, YOU, &relay_url).await?;
        register(&bot_dir, BOT, &relay_url).await?;
        let bot = manager::spawn(&bot_dir, None)?;
        let bot = tokio::spawn(echo(bot, cancel.clone()));
        Ok(Demo {
            you,
            relay_url,
            cancel,
            relay,
            bot,
            _dir: dir,
        })
    }

    /// Stops the bot and the relay; the temporary directory goes with `self`.
    pub async fn stop(self) {
        self.cancel.cancel();
        let _ = self.bot.await;
        let _ = self.relay.await;
    }
}

async fn register(dir: &Path, handle: &str, url: &str) -> Result<(), DemoError> {
    let store = Store::open(dir)?;
    account::init(
        &store,
        handle,
        url,
        std::time::SystemTime::now(),
        &mut rand::rng(),
    )
    .await?;
    Ok(())
}

/// The bot: answers every message, in the thread it came in.
async fn echo(mut bot: ManagerHandle, cancel: CancellationToken) {
    loop {
        let ev = tokio::select! {
            _ = cancel.cancelled() => break,
            ev = bot.events.recv() => ev,
        };
        match ev {
            Some(Event::Message(m)) if !m.outgoing => {
                let reply = if m.secret {
                    format!("echo (secret): {}", m.text)
                } else {
                    format!("echo: {}", m.text)
                };
                let cmds = [
                    Command::MarkShown { ids: vec![m.id] },
                    Command::Send {
                        id: uuid::Uuid::new_v4().to_string(),
                        to: m.contact,
                        secret: m.secret,
                        text: reply,
                    },
                ];
                for c in cmds {
                    if bot.commands.send(c).await.is_err() {
                        return;
                    }
                }
            }
            Some(_) => {}
            None => break,
        }
    }
    tokio::task::block_in_place(|| bot.shutdown());
}
