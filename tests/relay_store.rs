//! Every relay store backend against the same conformance suite (`common/store_suite.rs`):
//! the directory's accounts, bundles, key changes, resets, caps and blob rows, and the
//! queue's all-or-none units, sealed-sender checks, quotas, ids, batches and reads. A backend
//! joins with one `store_suite!` line and a factory giving each test a fresh state.

#[macro_use]
#[path = "common/store_suite.rs"]
mod store_suite;

use sotto::relay::store::{Database, MemoryStore};
use store_suite::Fixture;

fn memory() -> Option<Fixture> {
    Some(Fixture::new(Database::Memory(MemoryStore::new())))
}

fn sqlite() -> Option<Fixture> {
    Some(Fixture::new(Database::Sqlite))
}

store_suite!(memory, super::memory);
store_suite!(sqlite, super::sqlite);
