//! Who may read what sotto keeps on disk: only the user running it.
//!
//! Owns the modes of sotto's directories (a profile, a relay's data directory: 0700) and of
//! the files sotto keeps in them (databases with their WAL and SHM, logs, locks, keys and
//! certificates: 0600), and the process umask the binary starts with. Creates directories
//! private, and tightens an existing directory or sotto file that others could read,
//! saying what it changed in one log line.
//!
//! Must not touch anything but a sotto directory itself and the sotto files named in it: not
//! other files a user keeps there, not parent directories that already exist, not what a
//! symlink inside points to. Only ever removes group and other permissions; never adds
//! one, never deletes anything.

use std::fs::OpenOptions;
use std::io;
use std::path::Path;

/// The mode of a directory sotto keeps data in.
pub const DIR_MODE: u32 = 0o700;
/// The mode of a file sotto keeps data in.
pub const FILE_MODE: u32 = 0o600;

/// The files sotto keeps in a profile directory.
pub const PROFILE_FILES: &[&str] = &[
    "sotto.db",
    "sotto.db-wal",
    "sotto.db-shm",
    "sotto.db-journal",
    "sotto.log",
    "lock",
    crate::client::control::SOCKET,
];

/// The files a relay keeps in its data directory: its database (with the sealed-sender keys),
/// its self-signed TLS certificate and key, and its counters (`stats.json`).
pub const RELAY_FILES: &[&str] = &[
    "relay.db",
    "relay.db-wal",
    "relay.db-shm",
    "relay.db-journal",
    crate::tls::CERT_FILE,
    crate::tls::KEY_FILE,
    crate::dir_lock::LOCK_FILE,
    crate::relay::stats::FILE,
];

/// The OS's error is part of each message and deliberately not the error's `source()`: an
/// error either says its cause or returns it, never both, or `{:#}` and
/// `manager::describe`, which print the chain, would say it twice ("Permission denied (os
/// error 13): Permission denied (os error 13)"). The other errors that carry an OS error
/// (`StoreError::Dir`, `LockError::Io`, `ConfigError::Read`, `TlsError::Write`) do the same.
#[derive(Debug, thiserror::Error)]
pub enum PrivateError {
    #[error("cannot create the directory {path}: {cause}")]
    Create { path: String, cause: io::Error },
    #[error(
        "cannot make {path} private to you ({cause}); it must belong to you and be on a file system with Unix permissions"
    )]
    Tighten { path: String, cause: io::Error },
}

/// Makes every file and directory this process creates from now on private to its user
/// (umask 077). The binary calls it first thing; library users, which do not go through
/// the binary, get private directories and files from the functions below all the same.
pub fn restrict_umask() {
    #[cfg(unix)]
    // SAFETY: umask(2) only replaces the process's file mode creation mask; it cannot fail
    // and touches no memory of ours.
    unsafe {
        libc::umask(0o077);
    }
}

/// Options that create a file 0600 (on Unix); the caller says how to open it.
pub fn file_options() -> OpenOptions {
    #[allow(unused_mut)]
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(FILE_MODE);
    }
    options
}

/// Creates `dir` and its missing parents 0700 (an existing one is left as it is).
pub fn create_dir(dir: &Path) -> Result<(), PrivateError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(DIR_MODE);
    }
    builder.create(dir).map_err(|cause| PrivateError::Create {
        path: dir.display().to_string(),
        cause,
    })
}

/// Makes `dir` ready to hold sotto's data: creates it 0700 if it is missing; if it exists,
/// takes group and other permissions away from it and from each of `files` in it, and logs
/// one line saying what was tightened.
pub fn secure_dir(dir: &Path, files: &[&str]) -> Result<(), PrivateError> {
    create_dir(dir)?;
    let tightened = tighten(dir, files)?;
    if !tightened.is_empty() {
        tracing::info!(
            "others could read sotto's data in {}; made private to this user: {}",
            dir.display(),
            tightened.join(", ")
        );
    }
    Ok(())
}

/// Takes group and other permissions away from `dir` and from those of `files` in it that
/// are regular files; returns what it changed, as "name 0755 -> 0700".
#[cfg(unix)]
fn tighten(dir: &Path, files: &[&str]) -> Result<Vec<String>, PrivateError> {
    let mut changed = Vec::new();
    // The directory the user named, followed if it is a symlink: that is where the data is.
    let meta = std::fs::metadata(dir).map_err(|cause| PrivateError::Tighten {
        path: dir.display().to_string(),
        cause,
    })?;
    if let Some(c) = restrict(dir, &meta, "the directory")? {
        changed.push(c);
    }
    for name in files {
        let path = dir.join(name);
        // A symlink is not followed: what it points to is not sotto's to change.
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_file() => {
                if let Some(c) = restrict(&path, &meta, name)? {
                    changed.push(c);
                }
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(cause) => {
                return Err(PrivateError::Tighten {
                    path: path.display().to_string(),
                    cause,
                });
            }
        }
    }
    Ok(changed)
}

#[cfg(not(unix))]
fn tighten(_dir: &Path, _files: &[&str]) -> Result<Vec<String>, PrivateError> {
    Ok(Vec::new())
}

/// Takes group and other permissions away from `path` if it has any.
#[cfg(unix)]
fn restrict(
    path: &Path,
    meta: &std::fs::Metadata,
    name: &str,
) -> Result<Option<String>, PrivateError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(None);
    }
    let private = mode & !0o077;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(private)).map_err(|cause| {
        PrivateError::Tighten {
            path: path.display().to_string(),
            cause,
        }
    })?;
    Ok(Some(format!("{name} {mode:04o} -> {private:04o}")))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    fn chmod(p: &Path, m: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    }

    #[test]
    fn new_directories_and_files_are_private_whatever_the_umask() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("x").join("profile");
        secure_dir(&dir, PROFILE_FILES).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&tmp.path().join("x")), 0o700);
        let f = dir.join("sotto.log");
        file_options().create(true).append(true).open(&f).unwrap();
        assert_eq!(mode(&f), 0o600);
    }

    #[test]
    fn loose_modes_are_tightened_and_nothing_else_is_touched() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("profile");
        std::fs::create_dir(&dir).unwrap();
        chmod(&dir, 0o755);
        for (name, m) in [("sotto.db", 0o644), ("lock", 0o666), ("notes.txt", 0o644)] {
            std::fs::write(dir.join(name), b"").unwrap();
            chmod(&dir.join(name), m);
        }
        // A symlink among sotto's names: its target is not sotto's.
        let outside = tmp.path().join("outside");
        std::fs::write(&outside, b"").unwrap();
        chmod(&outside, 0o644);
        std::os::unix::fs::symlink(&outside, dir.join("sotto.log")).unwrap();
        // A read-only database stays read-only: nothing is ever added.
        std::fs::write(dir.join("sotto.db-wal"), b"").unwrap();
        chmod(&dir.join("sotto.db-wal"), 0o444);

        let parent = mode(tmp.path());
        let changed = tighten(&dir, PROFILE_FILES).unwrap();
        assert_eq!(
            changed,
            [
                "the directory 0755 -> 0700",
                "sotto.db 0644 -> 0600",
                "sotto.db-wal 0444 -> 0400",
                "lock 0666 -> 0600",
            ]
        );
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("sotto.db")), 0o600);
        assert_eq!(mode(&dir.join("lock")), 0o600);
        assert_eq!(mode(&dir.join("sotto.db-wal")), 0o400);
        assert_eq!(mode(&dir.join("notes.txt")), 0o644, "not a sotto file");
        assert_eq!(mode(&outside), 0o644, "a symlink's target");
        assert_eq!(mode(tmp.path()), parent, "the parent");
        // A second pass has nothing left to do.
        assert!(tighten(&dir, PROFILE_FILES).unwrap().is_empty());
    }
}
