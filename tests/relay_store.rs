//! Every relay store backend against the same conformance suite (`common/store_suite.rs`):
//! the directory's accounts, bundles, key changes, resets, caps and blob rows, the queue's
//! all-or-none units, sealed-sender checks, quotas, ids, batches and reads, and the blobs'
//! bytes (files on SQLite and in memory, rows on PostgreSQL). A backend
//! joins with one `store_suite!` line and a factory giving each test a fresh state.

#[macro_use]
#[path = "common/store_suite.rs"]
mod store_suite;
#[allow(dead_code)]
#[path = "common/pg.rs"]
mod pg;

use sotto::relay::store::{Database, MemoryStore};
use store_suite::Fixture;

fn memory() -> Option<Fixture> {
    Some(Fixture::new(Database::Memory(MemoryStore::new())))
}

fn sqlite() -> Option<Fixture> {
    Some(Fixture::new(Database::Sqlite))
}

/// A fresh database on the server `SOTTO_TEST_POSTGRES_URL` names; None (said why) without one.
fn postgres() -> Option<Fixture> {
    let db = pg::TestDb::create("the PostgreSQL store suite")?;
    Some(Fixture::keeping(Database::Postgres(db.url.clone()), db))
}

store_suite!(memory, super::memory);
store_suite!(sqlite, super::sqlite);
store_suite!(postgres, super::postgres);
