//! The relay of the `relay`, `normal` and `secret` runs: `sotto::relay::run` in this process
//! on a loopback port, its data in a directory the caller owns, serving `wss://` with a
//! self-signed certificate (as `sotto relay` does) or, with `--transport ws`, plain `ws://`.

use std::path::PathBuf;

use anyhow::Result;
use sotto::relay::RelayConfig;
use sotto::tls::{Endpoint, Pin, RelayCert};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::Transport;

pub struct LocalRelay {
    pub url: String,
    /// The relay's URL with its certificate pinned, for protocol-level clients.
    pub endpoint: Endpoint,
    stop: CancellationToken,
    task: JoinHandle<Result<(), sotto::relay::RelayError>>,
}

impl LocalRelay {
    /// Starts a relay with default settings (but no per-address caps) on `127.0.0.1:0`, keeping its data in `dir`.
    pub async fn start(dir: PathBuf, transport: Transport) -> Result<LocalRelay> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        // Every client comes from 127.0.0.1: lift the per-address caps, keep the others.
        let mut config = RelayConfig::default();
        config.max_connections_per_address = config.max_connections;
        config.max_unauthenticated_per_address = config.max_connections;
        // Every load client registers from this one address.
        config.rate.registrations_per_ip_per_hour = 0;
        let (url, pin) = match transport {
            Transport::Ws => (format!("ws://{addr}"), None),
            Transport::Wss => {
                let cert = RelayCert::load_or_create(&dir, &addr.to_string())?;
                config.tls = Some(cert.server_config()?);
                (
                    format!("wss://{addr}"),
                    Some(Pin::Certificate(cert.fingerprint)),
                )
            }
        };
        let endpoint = Endpoint::new(&url, pin, false)?;
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task =
            tokio::spawn(async move { sotto::relay::run(listener, &dir, config, token).await });
        Ok(LocalRelay {
            url,
            endpoint,
            stop,
            task,
        })
    }

    /// Stops the relay and waits until it has closed its database.
    pub async fn stop(self) -> Result<()> {
        self.stop.cancel();
        self.task.await??;
        Ok(())
    }
}
