//! The relay of the `relay`, `normal` and `secret` runs: `sotto::relay::run` in this process
//! on a loopback port, its data in a directory the caller owns.

use std::path::PathBuf;

use anyhow::Result;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct LocalRelay {
    pub url: String,
    stop: CancellationToken,
    task: JoinHandle<Result<(), sotto::relay::RelayError>>,
}

impl LocalRelay {
    /// Starts a relay with default settings on `127.0.0.1:0`, keeping its data in `dir`.
    pub async fn start(dir: PathBuf) -> Result<LocalRelay> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("ws://{}", listener.local_addr()?);
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            sotto::relay::run(listener, &dir, Default::default(), token).await
        });
        Ok(LocalRelay { url, stop, task })
    }

    /// Stops the relay and waits until it has closed its database.
    pub async fn stop(self) -> Result<()> {
        self.stop.cancel();
        self.task.await??;
        Ok(())
    }
}
