//! The signals that end a long-running command cleanly: Ctrl-C (SIGINT) and SIGTERM.
//!
//! Owns only listening for them; what stopping means is the caller's.

use anyhow::{Context, Result};

/// Listens for SIGINT and SIGTERM from the moment it is made, so a signal that comes before
/// the caller first waits is not lost (and does not kill the process the default way).
pub struct Interrupt {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Interrupt {
    /// Must be called inside the tokio runtime.
    pub fn listen() -> Result<Interrupt> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let int = signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C")?;
            let term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
            Ok(Interrupt { int, term })
        }
        #[cfg(not(unix))]
        Ok(Interrupt {})
    }

    /// Returns once either signal has come.
    pub async fn wait(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
