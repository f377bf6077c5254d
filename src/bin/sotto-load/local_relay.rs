//! A relay of the `relay`, `normal` and `secret` runs in this process: `sotto::relay::run` on
//! a loopback port, its data in a directory the caller owns, its state in the run's
//! `--database`, serving `wss://` with the run's certificate (as `sotto relay --tls-cert`
//! does) or, with `--transport ws`, plain `ws://`.

use std::path::PathBuf;

use anyhow::Result;
use sotto::relay::RelayConfig;
use sotto::relay::store::Database;
use sotto::tls::{Endpoint, Pin, RelayCert};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::relays::CertFiles;

pub struct LocalRelay {
    /// The relay's URL with its certificate pinned.
    pub endpoint: Endpoint,
    stop: CancellationToken,
    task: JoinHandle<Result<(), sotto::relay::RelayError>>,
}

impl LocalRelay {
    /// Starts a relay with default settings (but no per-address caps, see
    /// `relays::CHILD_SETTINGS`) on `127.0.0.1:0`, keeping its data in `dir` and its state in
    /// `database`; over TLS with `cert`, plain without.
    pub async fn start(
        dir: PathBuf,
        database: Database,
        cert: Option<&CertFiles>,
    ) -> Result<LocalRelay> {
        // Opened once before serving, as `sotto relay` does, so that a database it cannot
        // reach is reported as such, not as a client that cannot connect.
        let (d, db) = (dir.clone(), database.clone());
        tokio::task::spawn_blocking(move || sotto::relay::trust_root(&d, &db)).await??;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        // Every client comes from 127.0.0.1: lift the per-address caps, keep the others.
        let mut config = RelayConfig {
            database,
            ..RelayConfig::default()
        };
        config.max_connections_per_address = config.max_connections;
        config.max_unauthenticated_per_address = config.max_connections;
        // Every load client registers from this one address.
        config.rate.registrations_per_ip_per_hour = 0;
        let (url, pin) = match cert {
            None => (format!("ws://{addr}"), None),
            Some(files) => {
                let cert = RelayCert::load(&files.cert, &files.key)?;
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
