//! Where a sotto process logs, and what its log may hold.
//!
//! Owns the subscriber every `sotto` process installs and its filter. At the default level
//! (info) the log names no sealed sender, no recipient of a sealed message, no message id
//! or time, no plaintext and no key: sotto's own lines are written that way (secret or
//! per-message details go at debug), and libsignal's crates, which log the peer's account
//! id with every sealed message at info (and in its warnings and errors too), are off unless
//! the user's filter names them. Must not decide what a line says (each module does) nor open any other file.

use std::path::Path;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

/// The filter when neither `SOTTO_LOG` nor the config file gives one.
pub const DEFAULT_FILTER: &str = "info";

/// The log targets of libsignal's crates (their library names, as the `log` records they
/// write carry them: `libsignal_protocol_syft::session_cipher` and so on). At info they
/// name the peer of every sealed message, and the log outlives disappearing messages.
pub const LIBSIGNAL_TARGETS: &[&str] = &[
    "libsignal_protocol_syft",
    "libsignal_core_syft",
    "signal_crypto_syft",
    "spqr_syft",
];

/// The level libsignal's targets are held at unless the user's filter names them. Not
/// `warn`: its warnings and errors name the peer's account too (an untrusted identity, a
/// failed decryption, a first message that found no one-time prekey). Every failure it
/// reports reaches sotto as an error, which sotto logs without the peer.
pub const LIBSIGNAL_LEVEL: &str = "off";

/// The user's filter directives followed by `TARGET=off` for each of libsignal's targets
/// the user's filter does not name. A directive names a target if its own target is a
/// prefix of it (as `tracing` matches targets): `libsignal=debug` names them all, a bare
/// `debug` none.
pub fn directives(user: &str) -> String {
    let named: Vec<&str> = user
        .split(',')
        .filter_map(|d| {
            let target = d.split(['[', '=']).next().unwrap_or("").trim();
            let level_only = target.parse::<LevelFilter>().is_ok();
            (!target.is_empty() && !level_only).then_some(target)
        })
        .collect();
    let mut out = user.trim().trim_end_matches(',').to_string();
    for target in LIBSIGNAL_TARGETS {
        if named.iter().any(|n| target.starts_with(n)) {
            continue;
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(target);
        out.push('=');
        out.push_str(LIBSIGNAL_LEVEL);
    }
    out
}

/// The filter: `SOTTO_LOG` if it is set and valid, else the config file's `configured` if
/// valid, else `DEFAULT_FILTER`; with libsignal held off (see `directives`).
pub fn filter(configured: Option<&str>) -> EnvFilter {
    let user = std::env::var("SOTTO_LOG")
        .ok()
        .filter(|s| EnvFilter::try_new(s).is_ok())
        .or_else(|| {
            configured
                .filter(|s| EnvFilter::try_new(s).is_ok())
                .map(String::from)
        })
        .unwrap_or_else(|| DEFAULT_FILTER.to_string());
    EnvFilter::try_new(directives(&user))
        .unwrap_or_else(|_| EnvFilter::new(directives(DEFAULT_FILTER)))
}

/// Installs the process's subscriber (once; later calls do nothing): to `file`, appended
/// and private to the user (0600); to stderr without a file (the relay); nowhere if the file
/// cannot be opened.
/// Records of the `log` crate (libsignal's) go through the same filter.
pub fn init(file: Option<&Path>, configured: Option<&str>) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(configured))
        .with_ansi(false);
    let Some(path) = file else {
        let _ = builder.with_writer(std::io::stderr).try_init();
        return;
    };
    match crate::private::file_options()
        .create(true)
        .append(true)
        .open(path)
    {
        Ok(f) => {
            private_file(&f);
            let _ = builder.with_writer(std::sync::Mutex::new(f)).try_init();
        }
        // Never the terminal instead: the chat screen draws there. One line before it does
        // (still on the terminal after the chat screen is gone), then nothing is logged.
        Err(e) => eprintln!(
            "warning: cannot open the log file {}: {e}; nothing is logged this time",
            path.display()
        ),
    }
}

/// A log file made before sotto made its files private keeps its old mode: take group and
/// other permissions away (the file is open, so it is this file whatever its path is).
fn private_file(f: &std::fs::File) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = f.metadata() {
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                let _ = f.set_permissions(std::fs::Permissions::from_mode(mode & 0o7700));
            }
        }
    }
    #[cfg(not(unix))]
    let _ = f;
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELD: &str = "libsignal_protocol_syft=off,libsignal_core_syft=off,\
                        signal_crypto_syft=off,spqr_syft=off";

    #[test]
    fn libsignal_is_off_whatever_the_default_level() {
        assert_eq!(directives("info"), format!("info,{HELD}"));
        assert_eq!(directives("debug"), format!("debug,{HELD}"));
        assert_eq!(directives("sotto=trace"), format!("sotto=trace,{HELD}"));
        assert_eq!(directives(""), HELD);
        assert_eq!(directives("info, "), format!("info,{HELD}"));
        for d in [directives("trace"), directives("info")] {
            assert!(EnvFilter::try_new(&d).is_ok(), "{d}");
        }
    }

    #[test]
    fn a_filter_that_names_a_libsignal_target_keeps_its_own_level_for_it() {
        assert_eq!(
            directives("info,libsignal_protocol_syft=debug"),
            "info,libsignal_protocol_syft=debug,libsignal_core_syft=off,\
             signal_crypto_syft=off,spqr_syft=off"
        );
        // A bare target, a span filter, and a prefix that covers them all.
        assert!(directives("libsignal_protocol_syft").starts_with("libsignal_protocol_syft,"));
        assert!(!directives("libsignal_protocol_syft[x]=info").contains("protocol_syft=off"));
        assert_eq!(
            directives("libsignal=debug,spqr=info"),
            "libsignal=debug,spqr=info,signal_crypto_syft=off"
        );
    }
}
