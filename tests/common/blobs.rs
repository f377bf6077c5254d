//! An in-memory stand-in for the relay's blob store, for the client's attachment tests:
//! blobs are files in a directory of their own (so the raw-byte searches see them), one
//! `BlobTransport` shared by every client of a test, which can be told to act as if the link
//! went down after a number of chunks.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sotto::client::attachment::{BlobStatus, BlobTransport, NewBlob};
use sotto::client::conn::LinkError;

pub const CHUNK: u32 = 64 * 1024;

#[derive(Default)]
struct Blob {
    size: u64,
    recipients: u32,
    fetched: u32,
}

pub struct MemBlobs {
    pub dir: PathBuf,
    blobs: Mutex<HashMap<String, Blob>>,
    /// Puts left before the link "goes down" (None: never).
    puts_left: Mutex<Option<u32>>,
}

fn refused(message: &str) -> LinkError {
    LinkError::Refused {
        code: sotto::wire::ErrorCode::NotFound,
        message: message.into(),
    }
}

impl MemBlobs {
    pub fn new(dir: &Path) -> MemBlobs {
        std::fs::create_dir_all(dir).unwrap();
        MemBlobs {
            dir: dir.to_path_buf(),
            blobs: Mutex::default(),
            puts_left: Mutex::default(),
        }
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    fn bytes(&self, id: &str) -> Vec<u8> {
        std::fs::read(self.path(id)).unwrap()
    }

    /// After `n` more puts, every put fails as if the link were down.
    pub fn fail_puts_after(&self, n: Option<u32>) {
        *self.puts_left.lock().unwrap() = n;
    }

    fn stored(&self, id: &str) -> u64 {
        std::fs::metadata(self.path(id)).map_or(0, |m| m.len())
    }
}

#[async_trait::async_trait]
impl BlobTransport for MemBlobs {
    async fn create(
        &self,
        _secret: bool,
        size: u64,
        _expires_at: Option<u64>,
        recipients: u32,
    ) -> Result<NewBlob, LinkError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        std::fs::write(self.path(&id), b"").unwrap();
        self.blobs.lock().unwrap().insert(
            id.clone(),
            Blob {
                size,
                recipients,
                fetched: 0,
            },
        );
        Ok(NewBlob {
            blob_id: id,
            chunk_size: CHUNK,
        })
    }

    async fn put(
        &self,
        _secret: bool,
        blob_id: &str,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<(), LinkError> {
        {
            let mut left = self.puts_left.lock().unwrap();
            match *left {
                Some(0) => return Err(LinkError::Offline),
                Some(n) => *left = Some(n - 1),
                None => {}
            }
        }
        let size = match self.blobs.lock().unwrap().get(blob_id) {
            Some(b) => b.size,
            None => return Err(refused("no such blob")),
        };
        if offset != self.stored(blob_id) || offset + data.len() as u64 > size {
            return Err(refused("put at the wrong offset"));
        }
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.path(blob_id))
            .unwrap();
        f.write_all(&data).unwrap();
        Ok(())
    }

    async fn status(&self, _secret: bool, blob_id: &str) -> Result<BlobStatus, LinkError> {
        let size = match self.blobs.lock().unwrap().get(blob_id) {
            Some(b) => b.size,
            None => return Err(refused("no such blob")),
        };
        Ok(BlobStatus {
            size,
            stored: self.stored(blob_id),
        })
    }

    async fn get(
        &self,
        _secret: bool,
        blob_id: &str,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, LinkError> {
        if !self.blobs.lock().unwrap().contains_key(blob_id) {
            return Err(refused("no such blob"));
        }
        let b = self.bytes(blob_id);
        let start = (offset as usize).min(b.len());
        let end = (start + len.min(CHUNK) as usize).min(b.len());
        Ok(b[start..end].to_vec())
    }

    async fn fetched(&self, _secret: bool, blob_id: &str) -> Result<(), LinkError> {
        let mut blobs = self.blobs.lock().unwrap();
        let gone = match blobs.get_mut(blob_id) {
            Some(b) => {
                b.fetched += 1;
                b.fetched >= b.recipients
            }
            None => return Err(refused("no such blob")),
        };
        if gone {
            blobs.remove(blob_id);
            let _ = std::fs::remove_file(self.path(blob_id));
        }
        Ok(())
    }
}
