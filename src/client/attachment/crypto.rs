//! A file's encryption: a fresh random key per file, XChaCha20-Poly1305 in the STREAM
//! construction (RustCrypto's `chacha20poly1305` and `aead::stream`) over 64 KiB segments,
//! and the SHA-256 digest of the whole ciphertext.
//!
//! Owns the ciphertext's layout and nothing else: it reads from a reader and writes to a
//! writer, one segment at a time, so a file of any size never sits whole in memory. Must not
//! know where files live, nor touch the store or the network. No cryptography is written
//! here: the AEAD, the STREAM nonces and the hash are the crates'.
//!
//! Layout: a version byte, the 19-byte random nonce prefix, then the plaintext in segments
//! of `SEGMENT` bytes, each sealed with its 16-byte tag; the last segment is shorter than
//! `SEGMENT` (possibly empty) and sealed with STREAM's last-segment flag, so a ciphertext
//! cut at a segment boundary, segments swapped, or a byte changed fails to open.

use std::io::{Read, Seek, SeekFrom, Write};

use chacha20poly1305::aead::stream::{NewStream, StreamBE32, StreamPrimitive};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Plaintext bytes per segment.
pub const SEGMENT: usize = 64 * 1024;
/// The AEAD's tag on each segment.
const TAG: usize = 16;
const VERSION: u8 = 1;
/// XChaCha20's 24-byte nonce less STREAM's 5 bytes of counter and flag.
const NONCE_PREFIX: usize = 19;
const HEADER: usize = 1 + NONCE_PREFIX;
pub const KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("cannot read or write the file: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "the file does not match the digest its sender announced: it was altered or damaged at the relay or on the way, and nothing of it was opened; ask the sender to send it again"
    )]
    DigestMismatch,
    #[error(
        "the file is cut short: its end is missing, so nothing after its last whole part can be trusted; download it again, or ask the sender to send it again"
    )]
    Truncated,
    #[error(
        "a part of the file failed its authenticity check (altered, reordered or damaged); it was refused; ask the sender to send it again"
    )]
    Altered,
    #[error(
        "the file is in a format this sotto does not know (a newer sotto sent it?); update sotto"
    )]
    UnknownFormat,
    #[error("the file's key is not a valid key (the announcing message is damaged)")]
    BadKey,
}

/// What encrypting a file produced: the facts the announcing message carries.
pub struct Sealed {
    pub key: [u8; KEY_LEN],
    /// SHA-256 of the whole ciphertext.
    pub digest: [u8; 32],
    /// Plaintext bytes read.
    pub size: u64,
    /// Ciphertext bytes written.
    pub blob_size: u64,
}

/// The ciphertext size of a plaintext of `size` bytes.
pub fn blob_size(size: u64) -> u64 {
    HEADER as u64 + size + TAG as u64 * (size / SEGMENT as u64 + 1)
}

/// The plaintext size of a well-formed ciphertext of `blob_size` bytes.
pub fn plain_size(blob_size: u64) -> Option<u64> {
    let (segments, last) = layout(blob_size)?;
    Some((segments - 1) * SEGMENT as u64 + last - TAG as u64)
}

/// (number of segments, ciphertext length of the last one), or None if no ciphertext is
/// that long.
fn layout(blob_size: u64) -> Option<(u64, u64)> {
    let body = blob_size.checked_sub(HEADER as u64)?;
    let whole = (SEGMENT + TAG) as u64;
    let last = body % whole;
    (last >= TAG as u64).then_some((body / whole + 1, last))
}

fn stream(key: &[u8], prefix: &[u8]) -> Result<StreamBE32<XChaCha20Poly1305>, CryptoError> {
    let aead = XChaCha20Poly1305::new_from_slice(key).map_err(|_| CryptoError::BadKey)?;
    Ok(StreamBE32::from_aead(aead, prefix.into()))
}

/// Reads until `buf` is full or the reader ends; returns how much it read.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Encrypts everything `plain` holds to `out` under a fresh random key.
pub fn seal(mut plain: impl Read, mut out: impl Write) -> Result<Sealed, CryptoError> {
    let mut key = [0u8; KEY_LEN];
    let mut prefix = [0u8; NONCE_PREFIX];
    rand::rng().fill_bytes(&mut key);
    rand::rng().fill_bytes(&mut prefix);
    let stream = stream(&key, &prefix)?;
    let mut hash = Sha256::new();
    let mut header = [0u8; HEADER];
    header[0] = VERSION;
    header[1..].copy_from_slice(&prefix);
    out.write_all(&header)?;
    hash.update(header);
    let mut buf = Vec::with_capacity(SEGMENT + TAG);
    let (mut size, mut position) = (0u64, 0u32);
    loop {
        buf.resize(SEGMENT, 0);
        let n = fill(&mut plain, &mut buf)?;
        buf.truncate(n);
        let last = n < SEGMENT;
        stream
            .encrypt_in_place(position, last, b"", &mut buf)
            .map_err(|_| CryptoError::Altered)?;
        out.write_all(&buf)?;
        hash.update(&buf);
        size += n as u64;
        if last {
            break;
        }
        position = position.checked_add(1).ok_or(CryptoError::UnknownFormat)?;
    }
    out.flush()?;
    Ok(Sealed {
        key,
        digest: hash.finalize().into(),
        size,
        blob_size: blob_size(size),
    })
}

/// SHA-256 of everything `r` holds.
pub fn digest(mut r: impl Read) -> Result<[u8; 32], CryptoError> {
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; SEGMENT];
    loop {
        let n = fill(&mut r, &mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    Ok(hash.finalize().into())
}

/// Whether `r`'s digest is `expected`; the reader is back at its start afterwards.
pub fn check_digest<R: Read + Seek>(r: &mut R, expected: &[u8]) -> Result<(), CryptoError> {
    r.seek(SeekFrom::Start(0))?;
    let got = digest(&mut *r)?;
    r.seek(SeekFrom::Start(0))?;
    if got.as_slice() == expected {
        Ok(())
    } else {
        Err(CryptoError::DigestMismatch)
    }
}

/// Checks the ciphertext in `r` against `digest`, and only then decrypts it to `out`;
/// returns the plaintext size.
pub fn open_checked<R: Read + Seek>(
    key: &[u8],
    digest: &[u8],
    r: &mut R,
    out: impl Write,
) -> Result<u64, CryptoError> {
    check_digest(r, digest)?;
    let len = r.seek(SeekFrom::End(0))?;
    r.seek(SeekFrom::Start(0))?;
    open(key, r, len, out)
}

/// Decrypts the `len` ciphertext bytes of `r` to `out` (each segment checked; the digest is
/// the caller's); returns the plaintext size.
pub fn open(key: &[u8], r: impl Read, len: u64, mut out: impl Write) -> Result<u64, CryptoError> {
    let mut opener = Opener::new(key, r, len)?;
    let mut size = 0;
    while let Some(seg) = opener.next_segment()? {
        out.write_all(seg)?;
        size += seg.len() as u64;
    }
    out.flush()?;
    Ok(size)
}

/// Decrypts a ciphertext one segment at a time; as a `Read`, yields the plaintext (an error
/// of kind `InvalidData` carries the `CryptoError`).
pub struct Opener<R> {
    inner: R,
    stream: StreamBE32<XChaCha20Poly1305>,
    segments: u64,
    last_len: u64,
    position: u64,
    buf: Vec<u8>,
    /// Bytes of `buf` already read out through `Read`.
    taken: usize,
}

impl<R: Read> Opener<R> {
    /// Over the `len` ciphertext bytes `inner` holds, with the file's `key`.
    pub fn new(key: &[u8], mut inner: R, len: u64) -> Result<Self, CryptoError> {
        let (segments, last_len) = layout(len).ok_or(CryptoError::Truncated)?;
        let mut header = [0u8; HEADER];
        if fill(&mut inner, &mut header)? < HEADER {
            return Err(CryptoError::Truncated);
        }
        if header[0] != VERSION {
            return Err(CryptoError::UnknownFormat);
        }
        Ok(Opener {
            stream: stream(key, &header[1..])?,
            inner,
            segments,
            last_len,
            position: 0,
            buf: Vec::with_capacity(SEGMENT + TAG),
            taken: 0,
        })
    }

    /// The next segment's plaintext, checked; None after the last.
    pub fn next_segment(&mut self) -> Result<Option<&[u8]>, CryptoError> {
        if self.position == self.segments {
            return Ok(None);
        }
        let last = self.position + 1 == self.segments;
        let want = if last {
            self.last_len as usize
        } else {
            SEGMENT + TAG
        };
        self.buf.resize(want, 0);
        if fill(&mut self.inner, &mut self.buf)? < want {
            return Err(CryptoError::Truncated);
        }
        let position = u32::try_from(self.position).map_err(|_| CryptoError::UnknownFormat)?;
        let sealed = last.then(|| self.buf.clone());
        if self
            .stream
            .decrypt_in_place(position, last, b"", &mut self.buf)
            .is_err()
        {
            // A segment that opens as a middle one where the last was due: the ciphertext
            // was cut at a segment boundary.
            if let Some(mut again) = sealed
                && self
                    .stream
                    .decrypt_in_place(position, false, b"", &mut again)
                    .is_ok()
            {
                return Err(CryptoError::Truncated);
            }
            return Err(CryptoError::Altered);
        }
        self.position += 1;
        self.taken = 0;
        Ok(Some(&self.buf))
    }
}

impl<R: Read> Read for Opener<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.taken == self.buf.len() {
            match self.next_segment() {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(0),
                Err(CryptoError::Io(e)) => return Err(e),
                Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            }
        }
        let n = out.len().min(self.buf.len() - self.taken);
        out[..n].copy_from_slice(&self.buf[self.taken..self.taken + n]);
        self.taken += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn plaintext(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    fn sealed(len: usize) -> (Sealed, Vec<u8>) {
        let mut ct = Vec::new();
        let s = seal(Cursor::new(plaintext(len)), &mut ct).unwrap();
        (s, ct)
    }

    #[test]
    fn round_trips_every_size_around_a_segment_boundary() {
        for len in [
            0,
            1,
            SEGMENT - 1,
            SEGMENT,
            SEGMENT + 1,
            3 * SEGMENT,
            3 * SEGMENT + 5,
        ] {
            let (s, ct) = sealed(len);
            assert_eq!(s.size, len as u64);
            assert_eq!(s.blob_size, ct.len() as u64, "len {len}");
            assert_eq!(plain_size(s.blob_size), Some(len as u64));
            assert_eq!(s.digest, digest(Cursor::new(&ct)).unwrap());
            let mut out = Vec::new();
            open_checked(&s.key, &s.digest, &mut Cursor::new(&ct), &mut out).unwrap();
            assert_eq!(out, plaintext(len), "len {len}");
            let mut read = Vec::new();
            Opener::new(&s.key, Cursor::new(&ct), ct.len() as u64)
                .unwrap()
                .read_to_end(&mut read)
                .unwrap();
            assert_eq!(read, plaintext(len));
        }
    }

    #[test]
    fn each_file_gets_its_own_key_and_the_ciphertext_hides_the_plaintext() {
        let (a, ct_a) = sealed(1000);
        let (b, ct_b) = sealed(1000);
        assert_ne!(a.key, b.key);
        assert_ne!(ct_a, ct_b);
        let marker = &plaintext(1000)[100..132];
        assert!(!ct_a.windows(marker.len()).any(|w| w == marker));
    }

    /// Opens `ct` with the digest of `ct` itself, so only the segments' own checks can refuse.
    fn open_as_is(key: &[u8], ct: &[u8]) -> Result<u64, CryptoError> {
        let d = digest(Cursor::new(ct)).unwrap();
        open_checked(key, &d, &mut Cursor::new(ct), std::io::sink())
    }

    #[test]
    fn a_ciphertext_cut_at_a_segment_boundary_is_refused_as_cut_short() {
        let (s, ct) = sealed(3 * SEGMENT + 100);
        let cut = &ct[..HEADER + 2 * (SEGMENT + TAG)];
        assert!(matches!(
            open_as_is(&s.key, cut),
            Err(CryptoError::Truncated)
        ));
    }

    #[test]
    fn a_ciphertext_cut_inside_a_segment_is_refused() {
        let (s, ct) = sealed(3 * SEGMENT + 100);
        for cut in [5, HEADER + 10, ct.len() - 1, ct.len() - 200] {
            let r = open_as_is(&s.key, &ct[..cut]);
            assert!(
                matches!(r, Err(CryptoError::Truncated | CryptoError::Altered)),
                "cut at {cut}: {r:?}"
            );
        }
    }

    #[test]
    fn swapped_segments_are_refused() {
        let (s, mut ct) = sealed(3 * SEGMENT + 100);
        let seg = SEGMENT + TAG;
        let (a, b) = (HEADER, HEADER + seg);
        let first: Vec<u8> = ct[a..a + seg].to_vec();
        ct.copy_within(b..b + seg, a);
        ct[b..b + seg].copy_from_slice(&first);
        assert!(matches!(open_as_is(&s.key, &ct), Err(CryptoError::Altered)));
    }

    #[test]
    fn one_changed_byte_anywhere_is_refused() {
        let (s, ct) = sealed(2 * SEGMENT + 10);
        for at in [0, 3, HEADER + 1, HEADER + SEGMENT + 3, ct.len() - 1] {
            let mut bad = ct.clone();
            bad[at] ^= 0x40;
            assert!(open_as_is(&s.key, &bad).is_err(), "byte {at}");
            // With the announced digest, nothing is decrypted at all.
            let r = open_checked(&s.key, &s.digest, &mut Cursor::new(&bad), std::io::sink());
            assert!(matches!(r, Err(CryptoError::DigestMismatch)), "byte {at}");
        }
    }

    #[test]
    fn a_digest_mismatch_writes_nothing() {
        let (s, ct) = sealed(1000);
        let mut out = Vec::new();
        let r = open_checked(&s.key, &[0u8; 32], &mut Cursor::new(&ct), &mut out);
        assert!(matches!(r, Err(CryptoError::DigestMismatch)));
        assert!(out.is_empty());
    }

    #[test]
    fn another_key_is_refused() {
        let (_, ct) = sealed(1000);
        assert!(matches!(
            open_as_is(&[9u8; KEY_LEN], &ct),
            Err(CryptoError::Altered)
        ));
        assert!(matches!(
            open_as_is(&[9u8; 5], &ct),
            Err(CryptoError::BadKey)
        ));
    }
}
