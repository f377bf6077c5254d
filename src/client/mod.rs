//! The client: its store, its libsignal adapters, its relay connection and the session
//! manager that owns them all. The TUI and the headless commands use only `manager`'s
//! `Command`/`Event` (and read-only store queries for the offline listing commands).

pub mod account;
pub mod attachment;
pub mod clock;
pub mod conn;
pub mod content;
pub mod control;
pub mod crypto;
pub mod export;
pub mod group_crypto;
pub mod manager;
pub mod search;
pub mod signal_store;
pub mod store;
pub mod sweeper;
pub mod trust;

/// Whether `handle` names a group's threads (`#name`) rather than a contact: person handles
/// are `[a-z0-9_.-]` only, so the `#` never collides with one.
pub fn group_handle(handle: &str) -> bool {
    handle.starts_with('#')
}

/// Whether `name` can name a group: what a handle may hold, one character shorter, so that
/// its handle (`#name`) is as long as a person's at most.
pub fn valid_group_name(name: &str) -> bool {
    name.len() < 32 && crate::wire::valid_handle(name)
}
