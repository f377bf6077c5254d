//! The relays of a `relay`, `normal` or `secret` run: `--relays N` of them on the one
//! `--database`, in this process or (`--relay-process`) as `sotto relay` children, all
//! serving one TLS certificate, as relays behind one load balancer do: a client pinned to one
//! accepts them all.
//!
//! Owns which relay each client uses (sender i on relay i % N, its receiver on relay
//! (i + 1) % N, so that with N > 1 every message is committed by one relay and pushed by
//! another) and what the relays cost during the measured run: each child's CPU time, and on
//! PostgreSQL the database's commits and notifications (`pg_watch`). Must not measure the
//! clients.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use sotto::relay::RelayConfig;
use sotto::relay::store::Database;
use sotto::tls::{CERT_FILE, Endpoint, KEY_FILE, RelayCert};

use crate::local_relay::LocalRelay;
use crate::pg_watch::{PgCounts, PgWatch};
use crate::relay_child::RelayChild;
use crate::{Args, Transport};

/// The certificate every relay of a run serves, as `sotto relay --tls-cert --tls-key` takes it.
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

enum Relay {
    Local(LocalRelay),
    Child(RelayChild),
}

impl Relay {
    fn endpoint(&self) -> &Endpoint {
        match self {
            Relay::Local(r) => &r.endpoint,
            Relay::Child(r) => &r.endpoint,
        }
    }
}

pub struct Relays {
    relays: Vec<Relay>,
    database: Database,
}

/// The start of a measured run, as the relays saw it.
pub struct Meter {
    cpu_at_start: Vec<Duration>,
    pg: Option<PgWatch>,
}

/// The `[relay_server]` settings of a relay process: every load client comes from 127.0.0.1,
/// so the per-address caps are lifted to the overall one and registrations are not rate
/// limited; everything else is the default (`LocalRelay` sets the same in its config).
fn child_settings() -> String {
    let max = RelayConfig::default().max_connections;
    format!(
        "max_connections_per_address = {max}\nmax_unauthenticated_per_address = {max}\n\
         registrations_per_ip_per_hour = 0\n"
    )
}

impl Relays {
    /// Starts the run's relays one after another, keeping what they write under `dir`: the
    /// first brings a fresh PostgreSQL database's schema up and makes the relays' shared keys,
    /// the next ones find them there.
    pub async fn start(dir: &Path, args: &Args) -> Result<Relays> {
        let cert = match args.transport {
            Transport::Ws => None,
            Transport::Wss => {
                let tls = dir.join("tls");
                RelayCert::load_or_create(&tls, "127.0.0.1:0")?;
                Some(CertFiles {
                    cert: tls.join(CERT_FILE),
                    key: tls.join(KEY_FILE),
                })
            }
        };
        let mut relays = Vec::with_capacity(args.relays);
        for i in 0..args.relays {
            let relay = if args.relay_process {
                let mut flags: Vec<OsString> = Vec::new();
                if let Database::Postgres(url) = &args.database {
                    flags.extend(["--database".into(), url.into()]);
                }
                if let Some(c) = &cert {
                    flags.extend([
                        "--tls-cert".into(),
                        c.cert.clone().into(),
                        "--tls-key".into(),
                        c.key.clone().into(),
                    ]);
                }
                let settings = child_settings();
                Relay::Child(RelayChild::start_with(&settings, args.transport, &flags).await?)
            } else {
                let data = dir.join(format!("relay{i}"));
                let local = LocalRelay::start(data, args.database.clone(), cert.as_ref());
                Relay::Local(local.await?)
            };
            relays.push(relay);
        }
        Ok(Relays {
            relays,
            database: args.database.clone(),
        })
    }

    /// The relay sender `i` uses.
    pub fn sender(&self, i: usize) -> &Endpoint {
        self.relays[i % self.relays.len()].endpoint()
    }

    /// The relay receiver `i` uses: the one after its sender's, so that with several relays
    /// its messages are committed by one and pushed by another.
    pub fn receiver(&self, i: usize) -> &Endpoint {
        self.relays[(i + 1) % self.relays.len()].endpoint()
    }

    /// Each relay process's CPU time so far; empty for relays in this process.
    fn cpu(&self) -> Result<Vec<Duration>> {
        self.relays
            .iter()
            .filter_map(|r| match r {
                Relay::Child(c) => Some(c.cpu()),
                Relay::Local(_) => None,
            })
            .collect()
    }

    /// Marks the start of the measured run.
    pub async fn meter(&self) -> Result<Meter> {
        let pg = match &self.database {
            Database::Postgres(url) => {
                let url = url.clone();
                Some(tokio::task::spawn_blocking(move || PgWatch::start(&url)).await??)
            }
            _ => None,
        };
        Ok(Meter {
            cpu_at_start: self.cpu()?,
            pg,
        })
    }

    /// The relay processes' CPU time since `meter`, read at the end of the measured run.
    pub fn cpu_since(&self, meter: &Meter) -> Result<Vec<Duration>> {
        Ok(self
            .cpu()?
            .into_iter()
            .zip(&meter.cpu_at_start)
            .map(|(now, then)| now.saturating_sub(*then))
            .collect())
    }

    /// The highest resident memory of any relay process so far, in KiB; None for relays in
    /// this process (their memory is this process's).
    pub fn peak_rss_kb(&self) -> Result<Option<u64>> {
        let mut peak = None;
        for r in &self.relays {
            if let Relay::Child(c) = r {
                peak = peak.max(Some(c.memory()?.peak_kb));
            }
        }
        Ok(peak)
    }

    /// Stops the relays, then counts what the database did since `meter`: stopped relays
    /// have handed PostgreSQL their last statistics and sent their last notification.
    pub async fn stop(self, meter: Meter) -> Result<Option<PgCounts>> {
        for relay in self.relays {
            match relay {
                Relay::Local(r) => r.stop().await?,
                Relay::Child(r) => r.stop().await?,
            }
        }
        Ok(match meter.pg {
            Some(watch) => Some(tokio::task::spawn_blocking(move || watch.finish()).await??),
            None => None,
        })
    }
}
