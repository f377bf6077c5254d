//! Opening a SQLite database the way every sotto database is opened, and running its
//! numbered migrations.
//!
//! Owns the connection settings (WAL, full sync, secure delete, foreign keys) and the WAL's
//! room. Must not know any schema: each store brings its own migrations.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

/// Pages after which a commit checkpoints the WAL (SQLite's default is 1,000). Smaller keeps
/// the room `reserve_wal` makes, written once per open, small.
const CHECKPOINT_PAGES: i64 = 256;

/// Frames of room `reserve_wal` makes: a checkpoint's worth plus a large commit, so a WAL
/// that wraps after `CHECKPOINT_PAGES` stays inside it.
const ROOM_PAGES: i64 = 320;

/// Opens `path` with the settings every sotto database uses, then brings its schema up to
/// date by running the `migrations` it has not run yet, each in its own transaction.
pub fn open(path: &Path, migrations: &[&str]) -> rusqlite::Result<Connection> {
    // Made here, 0600, rather than by SQLite (0644 less the umask); its WAL and SHM files
    // take the database's mode. If this fails, SQLite's own open says why.
    if path != Path::new(":memory:") {
        let _ = crate::private::file_options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path);
    }
    let mut conn = Connection::open(path)?;
    // secure_delete is per connection, not stored in the file: deleted rows are overwritten.
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a commit survives a power cut, which is what an `ok` or an ack promises.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "wal_autocheckpoint", CHECKPOINT_PAGES)?;
    // Every statement of the stores and libsignal's adapters stays prepared (rusqlite keeps
    // only 16 by default), so hot paths do not parse SQL again.
    conn.set_prepared_statement_cache_capacity(128);
    conn.busy_timeout(Duration::from_secs(5))?;
    // Each database has more than one connection that writes (a client's manager, sweeper
    // and `reserve_wal`; the relay's reader and queue writer), so every transaction takes
    // the write lock when it begins: one that began as a read could not be upgraded once
    // another connection had committed, and would fail with "database is locked" instead
    // of waiting its turn.
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

/// Gives the WAL file room for `ROOM_PAGES` frames, if it has less, so that the commits that
/// follow overwrite it instead of growing it.
///
/// Why: a commit that grows a file makes its sync journal the new size too, and the file
/// system has one journal for every file on it. On the project's disk such a sync took
/// 350-400 us at the median against 145-160 us for one that overwrites, and with many
/// databases committing at once the growing ones queue behind each other. SQLite only
/// overwrites once the WAL has wrapped after its first checkpoint, and it deletes the WAL on
/// close, so without this every session's first commits grow it.
///
/// The room is one commit of zeros that leaves nothing behind (a table made, filled and
/// dropped in one transaction), then checkpointed, so the next commit starts the WAL over
/// from its beginning. For connections that will commit often: it writes about
/// `ROOM_PAGES` pages twice (WAL, then database, where they stay as free pages for later
/// rows).
pub fn reserve_wal(conn: &Connection) -> rusqlite::Result<()> {
    let wal = match conn.path() {
        Some(p) if !p.is_empty() => format!("{p}-wal"),
        _ => return Ok(()),
    };
    let page: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
    // The WAL's header is 32 bytes, each frame's 24.
    let room = 32 + ROOM_PAGES * (24 + page);
    let have = std::fs::metadata(&wal).map_or(0, |m| m.len() as i64);
    if have >= room {
        return Ok(());
    }
    let tx = conn.unchecked_transaction()?;
    tx.execute_batch(&format!(
        "CREATE TABLE sotto_wal_room(b BLOB);
         INSERT INTO sotto_wal_room VALUES (zeroblob({}));
         DROP TABLE sotto_wal_room;",
        ROOM_PAGES * page
    ))?;
    tx.commit()?;
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
    // The zeros' pages would otherwise sit in this connection's page cache.
    conn.execute_batch("PRAGMA shrink_memory")
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

#[cfg(test)]
mod tests {
    use super::*;

    fn wal_len(dir: &Path) -> u64 {
        std::fs::metadata(dir.join("t.db-wal")).map_or(0, |m| m.len())
    }

    #[test]
    fn commits_after_the_room_is_made_overwrite_the_wal_instead_of_growing_it() {
        let tmp = tempfile::tempdir().unwrap();
        let conn = open(
            &tmp.path().join("t.db"),
            &["CREATE TABLE m(id INTEGER PRIMARY KEY, body BLOB);"],
        )
        .unwrap();
        reserve_wal(&conn).unwrap();
        let room = wal_len(tmp.path());
        assert!(room as i64 >= ROOM_PAGES * 4096, "room made: {room} bytes");
        // Enough commits to wrap the WAL past a checkpoint more than once.
        for i in 0..3 * CHECKPOINT_PAGES {
            conn.execute("INSERT INTO m(id, body) VALUES (?1, zeroblob(1000))", [i])
                .unwrap();
            assert_eq!(wal_len(tmp.path()), room, "the WAL grew at commit {i}");
        }
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM m", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 3 * CHECKPOINT_PAGES);
        let left: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'sotto_wal_room'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(left, 0, "the room's table is gone");
        // A second call on a WAL that has its room writes nothing more.
        reserve_wal(&conn).unwrap();
        assert_eq!(wal_len(tmp.path()), room);
    }
}
