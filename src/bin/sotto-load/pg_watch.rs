//! What PostgreSQL did during a measured run: the transactions its database committed
//! (`pg_stat_database.xact_commit`, read-only ones included), the WAL it wrote and synced
//! (`pg_stat_wal`, the whole cluster's: use a cluster of the run's own), and the words the
//! relays' commits sent each other, heard by a `LISTEN` of its own on the relays' channel.
//!
//! Owns its two connections and nothing else: it must not touch the relays' tables.

use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, NoTls};
use sotto::relay::store::MAIL_CHANNEL;

/// How long the relays' database sessions may take to end after the relays have stopped.
const SESSIONS_END: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);

/// The database's work between `PgWatch::start` and `PgWatch::finish`.
#[derive(Clone, Copy, Debug, Default)]
pub struct PgCounts {
    pub commits: u64,
    pub wal_syncs: u64,
    pub wal_bytes: u64,
    pub notifications: u64,
}

pub struct PgWatch {
    client: Client,
    at_start: PgCounts,
    /// The listener's count, sent when it hears `marker`.
    heard: mpsc::Receiver<Result<u64>>,
    marker: String,
    /// The listener's session, which stays while the relays' end.
    listener_pid: i32,
}

fn connect(url: &str) -> Result<Client> {
    let config: postgres::Config = url
        .parse()
        .context("--database is not a PostgreSQL connection string")?;
    config
        .connect(NoTls)
        .context("cannot connect to the run's PostgreSQL database")
}

/// The cumulative counters now (notifications are counted by the listener, not here).
fn read(client: &mut Client) -> Result<PgCounts> {
    let db = client.query_one(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
        &[],
    )?;
    let wal = client.query_one("SELECT wal_sync, wal_bytes::bigint FROM pg_stat_wal", &[])?;
    let count = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(PgCounts {
        commits: count(db.get(0)),
        wal_syncs: count(wal.get(0)),
        wal_bytes: count(wal.get(1)),
        notifications: 0,
    })
}

impl PgWatch {
    /// Starts watching the database `url` names. Blocks: not on an async worker thread.
    pub fn start(url: &str) -> Result<PgWatch> {
        let mut client = connect(url)?;
        let mut listener = connect(url)?;
        listener.batch_execute(&format!("LISTEN {MAIL_CHANNEL}"))?;
        let listener_pid: i32 = listener.query_one("SELECT pg_backend_pid()", &[])?.get(0);
        // Not a word a relay would act on: it names no relay instance.
        let marker = format!("sotto-load end {}", uuid::Uuid::new_v4());
        let (tx, heard) = mpsc::channel();
        let end = marker.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            let mut words = listener.notifications();
            let mut it = words.blocking_iter();
            let counted = loop {
                match it.next() {
                    Ok(Some(w)) if w.payload() == end => break Ok(n),
                    Ok(Some(_)) => n += 1,
                    Ok(None) => break Err(anyhow::anyhow!("the listening connection closed")),
                    Err(e) => break Err(e.into()),
                }
            };
            let _ = tx.send(counted);
        });
        let at_start = read(&mut client)?;
        Ok(PgWatch {
            client,
            at_start,
            heard,
            marker,
            listener_pid,
        })
    }

    /// What the database did since `start`; call once the relays have stopped. Waits until
    /// their sessions have ended (a session hands over its statistics as it ends) and the
    /// listener has heard every word sent before its own end marker. Blocks.
    pub fn finish(mut self) -> Result<PgCounts> {
        let deadline = std::time::Instant::now() + SESSIONS_END;
        loop {
            let others: i64 = self
                .client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE datname = current_database() \
                     AND pid NOT IN (pg_backend_pid(), $1)",
                    &[&self.listener_pid],
                )?
                .get(0);
            if others == 0 {
                break;
            }
            if std::time::Instant::now() >= deadline {
                bail!("the relays' database sessions did not end within {SESSIONS_END:?}");
            }
            std::thread::sleep(POLL);
        }
        let now = read(&mut self.client)?;
        self.client
            .execute("SELECT pg_notify($1, $2)", &[&MAIL_CHANNEL, &self.marker])?;
        let notifications = self
            .heard
            .recv()
            .context("the listener ended without a count")??;
        let delta = |now: u64, then: u64| now.saturating_sub(then);
        Ok(PgCounts {
            commits: delta(now.commits, self.at_start.commits),
            wal_syncs: delta(now.wal_syncs, self.at_start.wal_syncs),
            wal_bytes: delta(now.wal_bytes, self.at_start.wal_bytes),
            notifications,
        })
    }
}
