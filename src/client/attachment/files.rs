//! The profile's encrypted files (`attachments/<seq>`, 0600 in a 0700 directory) and the
//! plaintext the user asks for: a file to attach checked and encrypted, a download checked,
//! a decrypting reader for previews, an opened or saved copy.
//!
//! Blocking file I/O throughout: the manager calls these from `spawn_blocking`. Owns the
//! file names and modes; the keys and digests come from the store's rows, which must not be
//! touched here (except `plaintext_reader`, which reads one row to find its key).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::crypto::{self, CryptoError, Opener, Sealed};

/// The directory of a profile that holds the encrypted files.
pub const DIR: &str = "attachments";

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("{0}: no such file; check the path")]
    NotFound(String),
    #[error("{0} is not a regular file (a directory or a device?); attach a file")]
    NotAFile(String),
    #[error(
        "{path} is {size} bytes; the largest file sotto sends is {max} bytes (max_attachment in the config)"
    )]
    TooLarge { path: String, size: u64, max: u64 },
    #[error("{path} is empty; there is nothing to send")]
    Empty { path: String },
    #[error("cannot read {path}: {cause}")]
    Read { path: String, cause: std::io::Error },
    #[error("cannot write {path}: {cause}")]
    Write { path: String, cause: std::io::Error },
    #[error(
        "{0} exists already; nothing was overwritten: name another file, or move that one away first"
    )]
    Exists(String),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(
        "the file is not here yet; download it first (Enter on it in the chat screen; `sotto save` downloads it)"
    )]
    NotReady,
    #[error(
        "this upload cannot resume: sotto stopped before the file was encrypted; attach it again"
    )]
    Gone,
    #[error("message {0:?} carries no file")]
    NoFile(String),
    #[error(transparent)]
    Store(#[from] crate::client::store::StoreError),
}

fn read_err(path: &Path) -> impl FnOnce(std::io::Error) -> AttachError + '_ {
    move |cause| AttachError::Read {
        path: path.display().to_string(),
        cause,
    }
}

fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> AttachError + '_ {
    move |cause| AttachError::Write {
        path: path.display().to_string(),
        cause,
    }
}

/// The encrypted file of message `seq`, once whole and checked.
pub fn path(profile: &Path, seq: i64) -> PathBuf {
    profile.join(DIR).join(seq.to_string())
}

/// Where a download of message `seq` grows; resumed from its length.
pub fn part_path(profile: &Path, seq: i64) -> PathBuf {
    profile.join(DIR).join(format!("{seq}.part"))
}

/// Where our file is encrypted before it takes its name.
fn sealing_path(profile: &Path, seq: i64) -> PathBuf {
    profile.join(DIR).join(format!("{seq}.sealing"))
}

/// Creates the profile's attachments directory (0700) if missing.
pub fn ensure_dir(profile: &Path) -> Result<(), AttachError> {
    let dir = profile.join(DIR);
    crate::private::create_dir(&dir).map_err(|e| AttachError::Write {
        path: dir.display().to_string(),
        cause: std::io::Error::other(e.to_string()),
    })
}

/// Unlinks every file of message `seq` in the profile (whole, partial, being encrypted).
pub fn remove(profile: &Path, seq: i64) {
    for p in [
        path(profile, seq),
        part_path(profile, seq),
        sealing_path(profile, seq),
    ] {
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(error = %e, "cannot remove an attachment's file"),
        }
    }
}

/// Checks that `path` is a regular file of 1 to `max` bytes; returns its size.
pub fn check_source(path: &Path, max: u64) -> Result<u64, AttachError> {
    let shown = path.display().to_string();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(AttachError::NotFound(shown));
        }
        Err(cause) => return Err(AttachError::Read { path: shown, cause }),
    };
    if !meta.is_file() {
        return Err(AttachError::NotAFile(shown));
    }
    let size = meta.len();
    if size > max {
        return Err(AttachError::TooLarge {
            path: shown,
            size,
            max,
        });
    }
    if size == 0 {
        return Err(AttachError::Empty { path: shown });
    }
    Ok(size)
}

/// Encrypts `src` into the profile as message `seq`'s file under a fresh key.
pub fn seal_into(src: &Path, profile: &Path, seq: i64) -> Result<Sealed, AttachError> {
    ensure_dir(profile)?;
    let plain = File::open(src).map_err(read_err(src))?;
    let tmp = sealing_path(profile, seq);
    let out = crate::private::file_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(write_err(&tmp))?;
    let mut out = BufWriter::with_capacity(crypto::SEGMENT * 2, out);
    let sealed = crypto::seal(BufReader::with_capacity(crypto::SEGMENT, plain), &mut out)?;
    let out = out.into_inner().map_err(|e| AttachError::Write {
        path: tmp.display().to_string(),
        cause: e.into_error(),
    })?;
    out.sync_all().map_err(write_err(&tmp))?;
    let dest = path(profile, seq);
    std::fs::rename(&tmp, &dest).map_err(write_err(&dest))?;
    Ok(sealed)
}

/// Length of the partial download of `seq` (0 if none).
pub fn part_len(profile: &Path, seq: i64) -> u64 {
    std::fs::metadata(part_path(profile, seq)).map_or(0, |m| m.len())
}

/// Appends `data` at `offset` of the partial download of `seq` (cutting off anything past
/// `offset` first: a chunk the last session wrote but did not finish).
pub fn append_part(profile: &Path, seq: i64, offset: u64, data: &[u8]) -> Result<(), AttachError> {
    use std::io::{Seek, SeekFrom};
    ensure_dir(profile)?;
    let p = part_path(profile, seq);
    let mut f = crate::private::file_options()
        .write(true)
        // Only the first chunk creates it: a chunk written after the message went must not
        // bring the file back.
        .create(offset == 0)
        .truncate(false)
        .open(&p)
        .map_err(write_err(&p))?;
    f.set_len(offset).map_err(write_err(&p))?;
    f.seek(SeekFrom::Start(offset)).map_err(write_err(&p))?;
    f.write_all(data).map_err(write_err(&p))?;
    Ok(())
}

/// The whole download of `seq` is here: checked against `digest`, then renamed into place.
/// A mismatch removes it, so the next try starts over.
pub fn finish_part(profile: &Path, seq: i64, digest: &[u8]) -> Result<(), AttachError> {
    let p = part_path(profile, seq);
    let mut f = File::open(&p).map_err(read_err(&p))?;
    if let Err(e) = crypto::check_digest(&mut BufReader::new(&mut f), digest) {
        drop(f);
        let _ = std::fs::remove_file(&p);
        return Err(e.into());
    }
    f.sync_all().map_err(write_err(&p))?;
    std::fs::rename(&p, path(profile, seq)).map_err(write_err(&p))?;
    Ok(())
}

/// `len` bytes of our encrypted file `seq` from `offset`, for an upload.
pub fn read_chunk(
    profile: &Path,
    seq: i64,
    offset: u64,
    len: usize,
) -> Result<Vec<u8>, AttachError> {
    use std::io::{Seek, SeekFrom};
    let p = path(profile, seq);
    let mut f = File::open(&p).map_err(read_err(&p))?;
    f.seek(SeekFrom::Start(offset)).map_err(read_err(&p))?;
    let mut buf = Vec::with_capacity(len);
    f.take(len as u64)
        .read_to_end(&mut buf)
        .map_err(read_err(&p))?;
    Ok(buf)
}

/// A reader of the plaintext of the whole, checked file `seq` (each segment authenticated
/// as it is read).
pub fn reader(
    profile: &Path,
    seq: i64,
    key: &[u8],
) -> Result<Opener<BufReader<File>>, AttachError> {
    let p = path(profile, seq);
    let f = match File::open(&p) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(AttachError::NotReady),
        Err(e) => return Err(read_err(&p)(e)),
    };
    let len = f.metadata().map_err(read_err(&p))?.len();
    Ok(Opener::new(
        key,
        BufReader::with_capacity(crypto::SEGMENT + 16, f),
        len,
    )?)
}

/// A decrypting reader over the file of message `id` in the profile at `profile`, for a
/// preview that must not leave a plaintext file behind. Only a file that is here and checked
/// (`AttachmentState::Ready`) can be read.
pub fn plaintext_reader(profile: &Path, id: &str) -> Result<impl Read + use<>, AttachError> {
    let store = crate::client::store::Store::open(profile)?;
    let file = store
        .attachment_by_id(id)?
        .ok_or_else(|| AttachError::NoFile(id.to_string()))?;
    match (&file.attachment.state, &file.key) {
        (super::AttachmentState::Ready, Some(key)) => reader(profile, file.seq, key),
        _ => Err(AttachError::NotReady),
    }
}

/// Decrypts file `seq` to a new file at `dest` (0600), which must not exist; removes what
/// it wrote if decryption fails.
pub fn decrypt_to(profile: &Path, seq: i64, key: &[u8], dest: &Path) -> Result<(), AttachError> {
    let mut plain = reader(profile, seq, key)?;
    let out = match crate::private::file_options()
        .write(true)
        .create_new(true)
        .open(dest)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(AttachError::Exists(dest.display().to_string()));
        }
        Err(e) => return Err(write_err(dest)(e)),
    };
    let mut out = BufWriter::with_capacity(crypto::SEGMENT, out);
    let copied = std::io::copy(&mut plain, &mut out)
        .and_then(|_| out.flush())
        .and_then(|()| out.get_ref().sync_all());
    if let Err(e) = copied {
        drop(out);
        let _ = std::fs::remove_file(dest);
        if e.get_ref().is_some_and(|inner| inner.is::<CryptoError>())
            && let Some(inner) = e.into_inner()
            && let Ok(c) = inner.downcast::<CryptoError>()
        {
            return Err(AttachError::Crypto(*c));
        }
        return Err(AttachError::Write {
            path: dest.display().to_string(),
            cause: std::io::Error::other("the copy could not be finished"),
        });
    }
    Ok(())
}

/// Where a save to `dest` writes: into it, under the file's `name`, if it is a directory.
pub fn save_target(dest: &Path, name: &str) -> PathBuf {
    if dest.is_dir() {
        dest.join(name)
    } else {
        dest.to_path_buf()
    }
}

/// A peer's file name made safe to write under: no directory, no control characters, not
/// hidden, not empty.
pub fn safe_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let clean: String = last.chars().filter(|c| !c.is_control()).take(200).collect();
    let clean = clean.trim().trim_start_matches('.').to_string();
    if clean.is_empty() {
        "file".to_string()
    } else {
        clean
    }
}

/// The media type of a file, from its name's extension.
pub fn mime_for(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "bmp" => "image/bmp",
        "svg" => "image/svg+xml",
        "pdf" => "application/pdf",
        "txt" | "log" | "md" => "text/plain",
        "html" | "htm" => "text/html",
        "json" => "application/json",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "tar" => "application/x-tar",
        "mp3" => "audio/mpeg",
        "ogg" | "opus" => "audio/ogg",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_cannot_name_a_file_outside_the_directory_or_hide_it() {
        assert_eq!(safe_name("../../.bashrc"), "bashrc");
        assert_eq!(safe_name("a\\b\\c.png"), "c.png");
        assert_eq!(safe_name("/etc/passwd"), "passwd");
        assert_eq!(safe_name(".."), "file");
        assert_eq!(safe_name("x\u{1b}[2Jy.txt"), "x[2Jy.txt");
        assert_eq!(safe_name(""), "file");
    }
}
