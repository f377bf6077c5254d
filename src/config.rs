//! The config file (TOML) and where a profile lives.
//!
//! Owns the defaults and the lookup order: command-line flag, then config file, then default.
//! Must not open databases or connections.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The relay a new profile registers at unless told otherwise.
pub const DEFAULT_RELAY: &str = "wss://127.0.0.1:7878";
/// Where `sotto relay` listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {cause}")]
    Read {
        path: String,
        // Shown in the message, so not a `source` too (see `private::PrivateError`).
        cause: std::io::Error,
    },
    #[error("the config file {path} is not valid: {message}")]
    Parse { path: String, message: String },
    #[error("no data directory found for this user; pass --data-dir DIR")]
    NoDataDir,
}

/// Every key of the config file; `config.example.toml` documents each with its default.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Relay URL used by `init` and by a profile whose recorded relay is overridden.
    pub relay: Option<String>,
    /// Allow a plain `ws://` relay that is not on this machine (as `--insecure-transport`).
    pub insecure_transport: Option<bool>,
    /// `tracing` filter for the log file, e.g. "info" or "sotto=debug".
    pub log: Option<String>,
    /// Ring the terminal bell when a message arrives in a conversation that is not open.
    pub bell: Option<bool>,
    /// strftime format of message times in the chat screen (default "%H:%M").
    pub time_format: Option<String>,
    /// Capture the mouse for wheel scrolling; false keeps the terminal's own selection.
    pub mouse: Option<bool>,
    /// Which arriving messages notify: "all" (secret ones without their text),
    /// "secret-hidden" (normal ones only) or "off".
    pub notify: Option<String>,
    /// Where notifications go: "auto" (the desktop's notification service when there is one
    /// and the screen is not over SSH, else the terminal), "desktop" or "terminal".
    pub notify_via: Option<String>,
    /// Below this terminal width (columns) the contact list hides by itself.
    pub contacts_min_width: Option<u16>,
    /// Tell peers which of their messages you displayed, and see which of yours they did
    /// (default true; off, neither).
    pub read_receipts: Option<bool>,
    /// Tell the peer while you type, and see when they do (default true; off, neither).
    pub typing: Option<bool>,
    /// Largest file sent, in MiB (default 100; the relay has its own limit).
    pub max_attachment: Option<u64>,
    /// Arriving files up to this many MiB are downloaded at once (default 5; 0: none).
    pub auto_download: Option<u64>,
    /// Draw received pictures in the chat screen (default true); false shows a one-line
    /// `[image: name 640×480]` instead.
    pub images: Option<bool>,
    /// The program that opens a file on `o` (default `xdg-open`, `open` on macOS), with any
    /// arguments of its own; the file's path comes last.
    pub opener: Option<String>,
    /// Key bindings of the TUI.
    #[serde(default)]
    pub keys: crate::tui::keys::KeyConfig,
    /// Settings of `sotto relay`.
    #[serde(default)]
    pub relay_server: RelayServer,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RelayServer {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    /// Where the relay's state lives: "sqlite" (relay.db in data_dir) or a postgres:// URL,
    /// as `--database`.
    pub database: Option<String>,
    pub max_connections: Option<usize>,
    pub max_connections_per_address: Option<usize>,
    pub max_signing_in: Option<usize>,
    pub max_anonymous: Option<usize>,
    pub max_unauthenticated_per_address: Option<usize>,
    pub handshake_timeout_secs: Option<u64>,
    pub auth_timeout_secs: Option<u64>,
    pub ping_interval_secs: Option<u64>,
    pub idle_timeout_secs: Option<u64>,
    pub frame_timeout_secs: Option<u64>,
    pub write_timeout_secs: Option<u64>,
    /// PEM certificate chain (end entity first) and its private key, e.g. from a CA; without
    /// them the relay creates a self-signed certificate in its data directory.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Serve plain `ws://` (behind a TLS-terminating proxy), as `--insecure-transport`.
    pub insecure_transport: Option<bool>,
    /// How many days a code from `sotto relay admin reset-handle` stays good (default 7).
    pub claim_code_days: Option<u32>,
    /// Queue quotas (`relay::QueueLimits`), in MiB and envelopes.
    pub queue_mib_per_recipient: Option<u64>,
    pub queue_envelopes_per_recipient: Option<u64>,
    pub queue_mib_per_sender: Option<u64>,
    pub queue_envelopes_per_sender: Option<u64>,
    pub sealed_queue_mib_per_recipient: Option<u64>,
    pub sealed_queue_envelopes_per_recipient: Option<u64>,
    /// One-time prekeys of each kind the directory holds per account.
    pub max_one_time_prekeys: Option<u32>,
    /// Recipients of one group message (fan-out) at most.
    pub max_group_recipients: Option<usize>,
    /// Rate limits (`relay::RateLimits`); 0 turns one off.
    pub registrations_per_ip_per_hour: Option<u32>,
    pub prekey_uploads_per_hour: Option<u32>,
    pub bundles_per_target_per_minute: Option<u32>,
    pub bundles_per_requester_per_minute: Option<u32>,
    pub lookups_per_minute: Option<u32>,
    pub unknown_acks_per_minute: Option<u32>,
    pub blob_creates_per_minute: Option<u32>,
    /// The blob store (`relay::BlobLimits`): largest file and per-owner quota in MiB, files
    /// per owner, days a file is kept at most.
    pub max_blob_mib: Option<u64>,
    pub blob_quota_mib: Option<u64>,
    pub blobs_per_owner: Option<u64>,
    pub blob_retention_days: Option<u64>,
}

const MIB: u64 = 1024 * 1024;

/// How long a reset's claim code stays good unless the config says otherwise.
pub const DEFAULT_CLAIM_CODE_DAYS: u32 = 7;

impl Config {
    /// What the session manager tells peers and takes from them.
    pub fn manager_settings(&self) -> crate::client::manager::Settings {
        let d = crate::client::manager::Settings::default();
        crate::client::manager::Settings {
            read_receipts: self.read_receipts.unwrap_or(d.read_receipts),
            typing: self.typing.unwrap_or(d.typing),
            max_attachment: self
                .max_attachment
                .map_or(d.max_attachment, |m| m.saturating_mul(MIB)),
            auto_download: self
                .auto_download
                .map_or(d.auto_download, |m| m.saturating_mul(MIB)),
        }
    }

    /// Reads `path`; a missing file at the default location is an empty config, a missing
    /// file the user named is an error.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => match dirs::config_dir() {
                Some(d) => (d.join("sotto").join("config.toml"), false),
                None => return Ok(Config::default()),
            },
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Config::default());
            }
            Err(cause) => {
                return Err(ConfigError::Read {
                    path: path.display().to_string(),
                    cause,
                });
            }
        };
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }
}

/// The directory of a profile: `--data-dir` wins, else `--profile NAME` (default "default")
/// under the platform data directory.
pub fn profile_dir(data_dir: Option<&Path>, profile: Option<&str>) -> Result<PathBuf, ConfigError> {
    if let Some(d) = data_dir {
        return Ok(d.to_path_buf());
    }
    let base = dirs::data_dir().ok_or(ConfigError::NoDataDir)?;
    Ok(base.join("sotto").join(profile.unwrap_or("default")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_and_unknown_keys_are_refused() {
        let example = include_str!("../config.example.toml");
        let c: Config = toml::from_str(example).unwrap();
        assert_eq!(c.relay.as_deref(), Some(DEFAULT_RELAY));
        let keys = crate::tui::keys::KeyMap::from_config(&c.keys).unwrap();
        assert_eq!(keys, crate::tui::keys::KeyMap::default());
        assert_eq!(c.bell, Some(true));
        assert_eq!(
            c.time_format.as_deref(),
            Some(crate::tui::clock::DEFAULT_TIME_FORMAT)
        );
        assert_eq!(c.mouse, Some(true));
        assert_eq!(c.notify.as_deref(), Some("all"));
        assert_eq!(
            c.contacts_min_width,
            Some(crate::tui::layout::DEFAULT_CONTACTS_MIN_WIDTH)
        );
        assert_eq!(c.insecure_transport, Some(false));
        assert_eq!(
            c.manager_settings(),
            crate::client::manager::Settings::default()
        );
        assert_eq!((c.read_receipts, c.typing), (Some(true), Some(true)));
        assert_eq!((c.images, c.opener.as_deref()), (Some(true), None));
        assert_eq!(c.relay_server.insecure_transport, Some(false));
        // The example shows the defaults.
        let d = crate::relay::RelayConfig::default();
        let r = &c.relay_server;
        assert_eq!(r.max_connections, Some(d.max_connections));
        assert_eq!(
            r.max_connections_per_address,
            Some(d.max_connections_per_address)
        );
        assert_eq!(r.max_signing_in, Some(d.max_signing_in));
        assert_eq!(r.max_anonymous, Some(d.max_anonymous));
        assert_eq!(
            r.max_unauthenticated_per_address,
            Some(d.max_unauthenticated_per_address)
        );
        let secs = |s: Option<u64>| s.map(std::time::Duration::from_secs);
        assert_eq!(secs(r.handshake_timeout_secs), Some(d.handshake_timeout));
        assert_eq!(secs(r.auth_timeout_secs), Some(d.auth_timeout));
        assert_eq!(secs(r.ping_interval_secs), Some(d.ping_interval));
        assert_eq!(secs(r.idle_timeout_secs), Some(d.idle_timeout));
        assert_eq!(secs(r.frame_timeout_secs), Some(d.frame_timeout));
        assert_eq!(secs(r.write_timeout_secs), Some(d.write_timeout));
        assert_eq!(
            r.blob_creates_per_minute,
            Some(d.rate.blob_creates_per_minute)
        );
        let mib = |m: Option<u64>| m.map(|m| m * 1024 * 1024);
        assert_eq!(mib(r.max_blob_mib), Some(d.blobs.max_blob));
        assert_eq!(mib(r.blob_quota_mib), Some(d.blobs.owner_bytes));
        assert_eq!(r.blobs_per_owner, Some(d.blobs.owner_blobs));
        let days = |n: Option<u64>| n.map(|n| std::time::Duration::from_secs(n * 24 * 3600));
        assert_eq!(days(r.blob_retention_days), Some(d.blobs.retention));
        assert!(toml::from_str::<Config>("relya = \"x\"").is_err());
    }
}
