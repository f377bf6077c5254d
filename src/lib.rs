//! sotto: a terminal chat client with per-contact Signal-Protocol secret conversations, and the
//! relay it talks through. See `docs/architecture.md` for who may touch what.

pub mod client;
pub mod config;
pub mod db;
pub mod demo;
pub mod dir_lock;
pub mod floor;
pub mod identity;
pub mod logs;
pub mod private;
pub mod relay;
pub mod timer;
pub mod tls;
pub mod tui;
pub mod wire;
