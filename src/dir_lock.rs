//! One process per data directory: an exclusive claim on a profile's or a relay's directory.
//!
//! Two clients on one profile would push each other off the relay and race over the same
//! sessions; two relays on one data directory would each hand out envelope ids and answer
//! `ok` for a queue the other also writes. The claim is an OS file lock on a `lock` file, so
//! it ends when its holder drops it or dies. Owns only that file; must not create anything
//! else or decide who may read the directory (`private` does).

use std::path::Path;

/// The name of the lock file in a claimed directory.
pub const LOCK_FILE: &str = "lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{0} is in use by another sotto process")]
    InUse(String),
    #[error("cannot lock {path}: {cause}")]
    Io {
        path: String,
        // Shown in the message, so not a `source` too: a printer of the chain would say it
        // twice.
        cause: std::io::Error,
    },
}

/// Held while the directory is claimed; dropping it releases the claim.
#[derive(Debug)]
pub struct DirLock(#[allow(dead_code)] std::fs::File);

impl DirLock {
    /// Claims `dir` (which must exist) for this process, or says who holds it.
    pub fn acquire(dir: &Path) -> Result<DirLock, LockError> {
        let io = |cause| LockError::Io {
            path: dir.display().to_string(),
            cause,
        };
        let file = crate::private::file_options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => Ok(DirLock(file)),
            Err(std::fs::TryLockError::WouldBlock) => {
                Err(LockError::InUse(dir.display().to_string()))
            }
            Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
        }
    }
}
