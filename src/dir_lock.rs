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
        // A holder that just let go may still hold the claim for a moment: a child this
        // process is starting (an opener, an editor) shares the lock until its `exec` closes
        // the inherited descriptor. So a refusal is final only after a short grace.
        let give_up = std::time::Instant::now() + GRACE;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(DirLock(file)),
                Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < give_up => {
                    std::thread::sleep(RETRY);
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(LockError::InUse(dir.display().to_string()));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
            }
        }
    }
}

/// How long a claim held by someone else is waited for before it counts as in use.
const GRACE: std::time::Duration = std::time::Duration::from_millis(300);
/// How often the claim is tried again within the grace.
const RETRY: std::time::Duration = std::time::Duration::from_millis(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_is_refused_while_held_and_granted_once_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let held = DirLock::acquire(dir.path()).unwrap();
        assert!(matches!(
            DirLock::acquire(dir.path()),
            Err(LockError::InUse(_))
        ));
        drop(held);
        DirLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn a_claim_let_go_while_another_waits_goes_to_the_waiter() {
        let dir = tempfile::tempdir().unwrap();
        let held = DirLock::acquire(dir.path()).unwrap();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let path = dir.path().to_path_buf();
        let waiter = std::thread::spawn(move || {
            started_tx.send(()).unwrap();
            DirLock::acquire(&path).map(|_| ())
        });
        started_rx.recv().unwrap();
        drop(held);
        assert!(waiter.join().unwrap().is_ok(), "refused a claim let go");
    }
}
