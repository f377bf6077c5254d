//! `sotto init`: create a profile's keys and register its handle, or leave nothing behind.
//!
//! Owns undoing a failed init: the directories and the sotto files it created are removed,
//! so the profile directory is as it was and a retry starts clean. Must not remove anything
//! that was there before it ran (a registered profile, a profile in use, the user's files).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sotto::client::account;
use sotto::client::store::{Store, lock_profile};
use sotto::config::Config;

use super::profile::{fingerprint, tls_line};

/// What `sotto init` was asked for.
pub struct Request {
    pub handle: String,
    pub url: String,
    pub claim: Option<String>,
    pub insecure: bool,
}

pub fn run(rt: &tokio::runtime::Runtime, config: &Config, dir: &Path, req: Request) -> Result<()> {
    let before = Before::look(dir);
    let result = register(rt, config, dir, req);
    if result.is_err() {
        before.restore(dir);
    }
    result
}

/// The attempt itself; everything it opens is closed when it returns, before any undoing.
fn register(rt: &tokio::runtime::Runtime, config: &Config, dir: &Path, req: Request) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the profile directory {}", dir.display()))?;
    sotto::logs::init(Some(&dir.join("sotto.log")), config.log.as_deref());
    let _lock = lock_profile(dir)?;
    let store = Store::open(dir)?;
    let reg = rt.block_on(account::init_claiming(
        &store,
        &req.handle,
        &req.url,
        req.claim,
        req.insecure,
        std::time::SystemTime::now(),
        &mut rand::rng(),
    ))?;
    println!("registered {} at {}", reg.handle, reg.relay_url);
    println!("relay trust root: {}", fingerprint(&reg.trust_root));
    println!("relay TLS certificate: {}", tls_line(&store)?);
    if let Some(sotto::tls::Pin::Certificate(_)) = account::tls_pin(&store)? {
        println!(
            "  (no certificate authority vouches for it: compare it with the fingerprint the relay printed when it started)"
        );
    }
    Ok(())
}

/// The profile directory as it was before `init` touched it.
struct Before {
    /// The outermost directory on the way to the profile that did not exist (maybe the
    /// profile directory itself); None if the profile directory existed.
    created_from: Option<PathBuf>,
    /// The sotto files the profile directory already held.
    files: Vec<&'static str>,
}

impl Before {
    fn look(dir: &Path) -> Before {
        let mut created_from = None;
        let mut at = Some(dir);
        while let Some(d) = at.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
            created_from = Some(d.to_path_buf());
            at = d.parent();
        }
        let files = sotto::private::PROFILE_FILES
            .iter()
            .copied()
            .filter(|f| dir.join(f).exists())
            .collect();
        Before {
            created_from,
            files,
        }
    }

    /// Removes the sotto files that were not there before, then the directories init made
    /// (only if they are empty now: whatever else appeared in them stays).
    fn restore(&self, dir: &Path) {
        for f in sotto::private::PROFILE_FILES {
            if !self.files.contains(f) {
                remove(&dir.join(f), |p| std::fs::remove_file(p));
            }
        }
        let Some(top) = &self.created_from else {
            return;
        };
        let mut at = Some(dir);
        while let Some(d) = at {
            remove(d, |p| std::fs::remove_dir(p));
            if d == top {
                break;
            }
            at = d.parent();
        }
    }
}

/// Removes `path`; one that is gone already is what was wanted, and anything else is only
/// logged: the error the user needs to see is the one that made init fail.
fn remove(path: &Path, how: fn(&Path) -> std::io::Result<()>) {
    match how(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(error = %e, "cannot undo part of a failed init"),
    }
}
