//! Opening a SQLite database the way every sotto database is opened, and running its
//! numbered migrations.
//!
//! Owns the connection settings (WAL, full sync, secure delete, foreign keys). Must not know
//! any schema: each store brings its own migrations.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

/// Opens `path` with the settings every sotto database uses, then brings its schema up to
/// date by running the `migrations` it has not run yet, each in its own transaction.
pub fn open(path: &Path, migrations: &[&str]) -> rusqlite::Result<Connection> {
    let mut conn = Connection::open(path)?;
    // secure_delete is per connection, not stored in the file: deleted rows are overwritten.
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a commit survives a power cut, which is what an `ok` or an ack promises.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Every statement of the stores and libsignal's adapters stays prepared (rusqlite keeps
    // only 16 by default), so hot paths do not parse SQL again.
    conn.set_prepared_statement_cache_capacity(128);
    conn.busy_timeout(Duration::from_secs(5))?;
    // Each database has more than one connection that writes (a client's manager and
    // sweeper; the relay's reader and queue writer), so every transaction takes the write
    // lock when it begins: one that began as a read could not be upgraded once another
    // connection had committed, and would fail with "database is locked" instead of
    // waiting its turn.
    conn.set_transaction_behavior(rusqlite::TransactionBehavior::Immediate);
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, m) in migrations.iter().enumerate().skip(version.max(0) as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(m)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(conn)
}

/// Copies the WAL into the database file and truncates it to zero bytes, so that rows deleted
/// under `secure_delete` survive in neither file. A reader on another connection can hold the
/// checkpoint back for a moment, so it is tried a few times before giving up with a warning.
pub fn truncate_wal(conn: &Connection) -> rusqlite::Result<()> {
    for attempt in 0..20 {
        let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
        if busy == 0 {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(5 << attempt.min(4)));
    }
    tracing::warn!("the WAL could not be truncated: another connection kept reading");
    Ok(())
}

/// Runs `f` with this connection's commits not waiting on the disk (`synchronous = NORMAL`),
/// then restores `FULL`. For writes whose loss in a power cut is harmless: a lost delete or
/// state change only repeats work that the other side drops as a duplicate. Never for a
/// write someone is told is durable.
pub fn without_sync<T>(
    conn: &Connection,
    f: impl FnOnce() -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let out = f();
    conn.pragma_update(None, "synchronous", "FULL")?;
    out
}
