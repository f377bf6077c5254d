//! Counters an operator can read: connections by state and refusals by reason.
//!
//! Owns the atomic counters and their JSON snapshot (written to `<data dir>/stats.json` by
//! the relay). Must not decide anything: the accept loop, the per-address accounting and the
//! connections only report here. Counts only; never an address, account or frame.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// The file in the relay's data directory the counters are written to.
pub const FILE: &str = "stats.json";

/// Where a connection is in its life; each open connection is in exactly one state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// Accepted; TLS and WebSocket handshake under way.
    Handshaking,
    /// Handshake done, challenge sent; neither signed in nor anonymous yet.
    SigningIn,
    /// Declared itself anonymous (sends sealed envelopes).
    Anonymous,
    /// Signed in to an account.
    SignedIn,
}

impl ConnState {
    const ALL: [ConnState; 4] = [
        ConnState::Handshaking,
        ConnState::SigningIn,
        ConnState::Anonymous,
        ConnState::SignedIn,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ConnState::Handshaking => "handshaking",
            ConnState::SigningIn => "signing_in",
            ConnState::Anonymous => "anonymous",
            ConnState::SignedIn => "signed_in",
        }
    }
}

/// Why the relay refused or ended a connection. To add one: a variant, its name, and its
/// place in `ALL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// At `max_connections`.
    Full,
    /// At `max_connections_per_address` for the client's address.
    PerAddress,
    /// At `max_signing_in` (connections in handshake or not signed in yet).
    SigningInQuota,
    /// At `max_anonymous`.
    AnonymousQuota,
    /// At `max_unauthenticated_per_address` for the client's address.
    UnauthenticatedPerAddress,
    /// TLS and WebSocket handshake not done within `handshake_timeout`.
    HandshakeTimeout,
    /// Neither signed in nor anonymous within `auth_timeout`.
    AuthTimeout,
    /// Nothing heard (not even a pong) within `idle_timeout`.
    IdleTimeout,
    /// A frame started and not finished within `frame_timeout`.
    FrameTimeout,
    /// A write made no progress within `write_timeout`: the peer does not read.
    WriteTimeout,
    /// A newer connection signed in to the same account.
    Kicked,
    /// A frame beyond the WebSocket layer's hard limit.
    TooLarge,
    /// Too many requests in a row refused for a rate or a quota: the client does not back off.
    RefusedInARow,
}

impl Reason {
    pub const ALL: [Reason; 13] = [
        Reason::Full,
        Reason::PerAddress,
        Reason::SigningInQuota,
        Reason::AnonymousQuota,
        Reason::UnauthenticatedPerAddress,
        Reason::HandshakeTimeout,
        Reason::AuthTimeout,
        Reason::IdleTimeout,
        Reason::FrameTimeout,
        Reason::WriteTimeout,
        Reason::Kicked,
        Reason::TooLarge,
        Reason::RefusedInARow,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Reason::Full => "full",
            Reason::PerAddress => "per_address",
            Reason::SigningInQuota => "signing_in_quota",
            Reason::AnonymousQuota => "anonymous_quota",
            Reason::UnauthenticatedPerAddress => "unauthenticated_per_address",
            Reason::HandshakeTimeout => "handshake_timeout",
            Reason::AuthTimeout => "auth_timeout",
            Reason::IdleTimeout => "idle_timeout",
            Reason::FrameTimeout => "frame_timeout",
            Reason::WriteTimeout => "write_timeout",
            Reason::Kicked => "kicked",
            Reason::TooLarge => "too_large",
            Reason::RefusedInARow => "refused_in_a_row",
        }
    }

    fn index(self) -> usize {
        Reason::ALL
            .iter()
            .position(|r| *r == self)
            .unwrap_or_default()
    }
}

/// The relay's counters; shared by the accept loop and every connection.
#[derive(Debug, Default)]
pub struct Stats {
    /// Open connections by `ConnState`, in `ConnState::ALL` order.
    open: [AtomicI64; 4],
    /// Connections accepted since start.
    accepted: AtomicU64,
    /// Failed accepts (typically out of file descriptors).
    accept_errors: AtomicU64,
    /// Refused or ended connections by `Reason`, in `Reason::ALL` order.
    rejections: [AtomicU64; Reason::ALL.len()],
}

impl Stats {
    pub fn record_rejection(&self, reason: Reason) {
        self.rejections[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn rejections(&self, reason: Reason) -> u64 {
        self.rejections[reason.index()].load(Ordering::Relaxed)
    }

    pub fn record_accept(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_accept_error(&self) {
        self.accept_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection entered `state` (leaving `from`, if it was in one).
    pub fn moved(&self, from: Option<ConnState>, to: Option<ConnState>) {
        let slot =
            |s: ConnState| &self.open[ConnState::ALL.iter().position(|x| *x == s).unwrap_or(0)];
        if let Some(s) = from {
            slot(s).fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(s) = to {
            slot(s).fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every counter, as `{"connections": {state: n}, "accepted": n, "accept_errors": n,
    /// "rejections": {reason: n}}`.
    pub fn snapshot(&self) -> serde_json::Value {
        let connections: serde_json::Map<String, serde_json::Value> = ConnState::ALL
            .iter()
            .zip(&self.open)
            .map(|(s, n)| {
                (
                    s.name().to_string(),
                    n.load(Ordering::Relaxed).max(0).into(),
                )
            })
            .collect();
        let rejections: serde_json::Map<String, serde_json::Value> = Reason::ALL
            .iter()
            .zip(&self.rejections)
            .map(|(r, n)| (r.name().to_string(), n.load(Ordering::Relaxed).into()))
            .collect();
        serde_json::json!({
            "connections": connections,
            "accepted": self.accepted.load(Ordering::Relaxed),
            "accept_errors": self.accept_errors.load(Ordering::Relaxed),
            "rejections": rejections,
        })
    }

    /// Writes the snapshot to `path`, private to the user (0600).
    pub fn write(&self, path: &std::path::Path) -> std::io::Result<()> {
        use std::io::Write;
        let mut text =
            serde_json::to_vec_pretty(&self.snapshot()).map_err(std::io::Error::other)?;
        text.push(b'\n');
        let mut file = crate::private::file_options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        file.write_all(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names_every_state_and_reason() {
        let stats = Stats::default();
        stats.moved(None, Some(ConnState::Handshaking));
        stats.moved(Some(ConnState::Handshaking), Some(ConnState::SignedIn));
        stats.record_rejection(Reason::Kicked);
        stats.record_rejection(Reason::Kicked);
        let s = stats.snapshot();
        assert_eq!(s["connections"]["handshaking"], 0);
        assert_eq!(s["connections"]["signed_in"], 1);
        assert_eq!(s["rejections"]["kicked"], 2);
        assert_eq!(s["rejections"]["full"], 0);
        assert_eq!(
            s["rejections"].as_object().unwrap().len(),
            Reason::ALL.len()
        );
    }
}
