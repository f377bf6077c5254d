//! `sotto demo`: a relay, a profile for the user and a bot called `echo`, all in this process
//! and in a temporary directory, so one command shows what sotto does.
//!
//! Owns the demo's lifetime: it starts the pieces and removes every file they wrote when it
//! stops, its log (`LOG_FILE` in the same directory) included. The bot is a real second
//! client (its own store, sessions and WebSocket) that answers each text in the mode it
//! arrived in, and nothing else (not a timer change). Must not reach past loopback.

use std::path::{Path, PathBuf};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::client::account;
use crate::client::manager::{self, ClientError, Command, Event, ManagerHandle};
use crate::client::store::{MessageKind, Store};
use crate::relay::{self, RelayConfig};
use crate::tls::RelayCert;

/// The bot's handle.
pub const BOT: &str = "echo";
/// The user's handle in the demo.
pub const YOU: &str = "you";
/// The demo's log, in its temporary directory (see `Demo::create_dir`).
pub const LOG_FILE: &str = "demo.log";

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
    /// Starts the demo in a directory of its own (see `start_in`).
    pub async fn start() -> Result<Demo, DemoError> {
        Self::start_in(Self::create_dir()?).await
    }

    /// The private temporary directory a demo lives in, removed with the `Demo`: the caller
    /// may open the log (`LOG_FILE`) there before the demo starts.
    pub fn create_dir() -> Result<tempfile::TempDir, DemoError> {
        let mut dir = tempfile::Builder::new();
        dir.prefix("sotto-demo-");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            dir.permissions(std::fs::Permissions::from_mode(crate::private::DIR_MODE));
        }
        Ok(dir.tempdir()?)
    }

    /// Starts the relay on a free loopback port, registers the user and the bot in `dir`, and
    /// sets the bot answering.
    pub async fn start_in(dir: tempfile::TempDir) -> Result<Demo, DemoError> {
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

/// The bot: answers every text, in the thread it came in. A timer change or a key change is
/// not something a person said, so it gets no answer.
async fn echo(mut bot: ManagerHandle, cancel: CancellationToken) {
    loop {
        let ev = tokio::select! {
            _ = cancel.cancelled() => break,
            ev = bot.events.recv() => ev,
        };
        match ev {
            Some(Event::Message(m)) if !m.outgoing && m.kind == MessageKind::Text => {
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
                        reply_to: None,
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
