//! The blob store's bytes on SQLite (and in memory): one file per blob under
//! `<data dir>/blobs/`, named by the blob's id, private to the relay's user (0600 in a 0700
//! directory); `store::BlobBytes` on files.
//!
//! Owns those files: creating, writing a chunk durably, reading, removing, and matching them
//! to the database's rows when the relay starts. Must not touch the database or decide who
//! may do what: `relay::blobs` calls in with ids it has validated and rows it has checked.
//! Every method is blocking; callers run it off the async threads.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use super::store::{self, BlobBytes};
use crate::wire::valid_blob_id;

/// The directory under a relay's data directory that holds the blobs.
pub const DIR: &str = "blobs";

#[derive(Debug, thiserror::Error)]
pub enum BlobFileError {
    /// The OS's error is part of the message, as in `private::PrivateError`.
    #[error("cannot {what} the blob file {path}: {cause}")]
    Io {
        what: &'static str,
        path: String,
        cause: io::Error,
    },
    #[error("{0:?} is not a blob id")]
    BadId(String),
    #[error(transparent)]
    Private(#[from] crate::private::PrivateError),
}

type Result<T> = std::result::Result<T, BlobFileError>;

/// The blob directory of one relay.
#[derive(Debug, Clone)]
pub struct BlobFiles {
    dir: PathBuf,
}

impl BlobFiles {
    /// Opens (creating, 0700) the blob directory under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<BlobFiles> {
        let dir = data_dir.join(DIR);
        crate::private::secure_dir(&dir, &[])?;
        Ok(BlobFiles { dir })
    }

    /// The file of blob `id`. Only a valid id names a file, so no id can reach outside the
    /// directory.
    fn path(&self, id: &str) -> Result<PathBuf> {
        if !valid_blob_id(id) {
            return Err(BlobFileError::BadId(id.to_string()));
        }
        Ok(self.dir.join(id))
    }

    fn io(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> BlobFileError {
        let path = path.display().to_string();
        move |cause| BlobFileError::Io { what, path, cause }
    }
}

impl BlobBytes for BlobFiles {
    /// Creates blob `id`'s empty file (0600); fails if it exists.
    fn create(&self, id: &str) -> store::Result<()> {
        let path = self.path(id)?;
        crate::private::file_options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(Self::io("create", &path))?;
        Ok(())
    }

    /// Writes `data` at `offset` and syncs it: when this returns, the bytes survive a crash.
    fn write_at(&self, id: &str, offset: u64, data: &[u8]) -> store::Result<()> {
        let path = self.path(id)?;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(Self::io("open", &path))?;
        file.write_all_at(data, offset)
            .and_then(|()| file.sync_data())
            .map_err(Self::io("write", &path))?;
        Ok(())
    }

    /// Up to `len` bytes from `offset` (fewer only at the end of the file).
    fn read_at(&self, id: &str, offset: u64, len: usize) -> store::Result<Vec<u8>> {
        let path = self.path(id)?;
        let file = std::fs::File::open(&path).map_err(Self::io("open", &path))?;
        let mut buf = vec![0u8; len];
        let mut got = 0;
        while got < len {
            match file.read_at(&mut buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Self::io("read", &path)(e).into()),
            }
        }
        buf.truncate(got);
        Ok(buf)
    }

    /// Removes blob `id`'s file; one already gone is not an error.
    fn remove(&self, id: &str) -> store::Result<()> {
        let path = self.path(id)?;
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(Self::io("remove", &path)(e).into())
            }
            _ => Ok(()),
        }
    }

    /// Matches the files to the database's rows (`id` → stored length) after a start: a file
    /// without a row is removed (deleted, or created by a crash before its row), a file longer
    /// than its row says is cut back to it (bytes written but not recorded when the relay
    /// died). Returns the ids of rows whose file is missing, for the caller to drop.
    fn reconcile(&self, rows: &HashMap<String, u64>) -> store::Result<Vec<String>> {
        let entries = std::fs::read_dir(&self.dir).map_err(Self::io("list", &self.dir))?;
        let mut seen = std::collections::HashSet::new();
        for entry in entries {
            let entry = entry.map_err(Self::io("list", &self.dir))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            match rows.get(&name) {
                Some(&stored) if path.is_file() => {
                    let file = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(Self::io("open", &path))?;
                    let len = file.metadata().map_err(Self::io("read", &path))?.len();
                    if len > stored {
                        file.set_len(stored)
                            .and_then(|()| file.sync_all())
                            .map_err(Self::io("truncate", &path))?;
                        tracing::info!(
                            kept = stored,
                            cut = len - stored,
                            "a blob's unrecorded tail was cut"
                        );
                    }
                    seen.insert(name);
                }
                _ if path.is_file() => {
                    std::fs::remove_file(&path).map_err(Self::io("remove", &path))?;
                }
                // Not ours (a directory someone put there): left alone.
                _ => {}
            }
        }
        Ok(rows
            .keys()
            .filter(|id| !seen.contains(*id))
            .cloned()
            .collect())
    }
}
