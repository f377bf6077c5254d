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
pub mod manager;
pub mod search;
pub mod signal_store;
pub mod store;
pub mod sweeper;
pub mod trust;
