//! The blob store over the relay links: `BlobTransport` as requests on the account's link
//! (normal files) or on the anonymous link (secret files, tied to no account).
//!
//! Owns turning each call into one request frame and its answer back into a result. Must not
//! hold transfer state, retry, or touch the store or a file: the manager's transfers do that.

use std::sync::Arc;

use super::{BlobStatus, BlobTransport, NewBlob};
use crate::client::conn::{Link, LinkError};
use crate::wire::{ClientFrame, RelayFrame};

/// The manager's two links, seen as the relay's blob store.
pub struct LinkBlobs {
    link: Arc<Link>,
    anon: Arc<Link>,
}

impl LinkBlobs {
    /// `link` is the account's link, `anon` the anonymous one (used when `secret`).
    pub fn new(link: Arc<Link>, anon: Arc<Link>) -> LinkBlobs {
        LinkBlobs { link, anon }
    }

    fn over(&self, secret: bool) -> &Link {
        if secret { &self.anon } else { &self.link }
    }
}

/// An answer that is not the one the request calls for.
fn unexpected(what: &str, got: &RelayFrame) -> LinkError {
    // The frame's Debug hides byte fields, so naming it leaks nothing.
    LinkError::Protocol(format!("expected {what}, got {got:?}"))
}

#[async_trait::async_trait]
impl BlobTransport for LinkBlobs {
    async fn create(
        &self,
        secret: bool,
        size: u64,
        expires_at: Option<u64>,
        recipients: u32,
    ) -> Result<NewBlob, LinkError> {
        let answer = self
            .over(secret)
            .request(|req| ClientFrame::BlobCreate {
                req,
                size,
                expires_at,
                recipients,
            })
            .await?;
        match answer {
            RelayFrame::BlobCreated {
                blob_id,
                chunk_size,
                ..
            } if crate::wire::valid_blob_id(&blob_id) && chunk_size > 0 => Ok(NewBlob {
                blob_id,
                chunk_size: chunk_size.min(crate::wire::MAX_BLOB_CHUNK),
            }),
            other => Err(unexpected("a new blob", &other)),
        }
    }

    async fn put(
        &self,
        secret: bool,
        blob_id: &str,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<(), LinkError> {
        let blob_id = blob_id.to_string();
        let answer = self
            .over(secret)
            .request(|req| ClientFrame::BlobPut {
                req,
                blob_id,
                offset,
                data: data.into(),
            })
            .await?;
        match answer {
            RelayFrame::Ok { .. } => Ok(()),
            other => Err(unexpected("ok", &other)),
        }
    }

    async fn status(&self, secret: bool, blob_id: &str) -> Result<BlobStatus, LinkError> {
        let blob_id = blob_id.to_string();
        let answer = self
            .over(secret)
            .request(|req| ClientFrame::BlobStatus { req, blob_id })
            .await?;
        match answer {
            RelayFrame::BlobStatus { size, stored, .. } if stored <= size => {
                Ok(BlobStatus { size, stored })
            }
            other => Err(unexpected("a blob's status", &other)),
        }
    }

    async fn get(
        &self,
        secret: bool,
        blob_id: &str,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, LinkError> {
        let blob_id = blob_id.to_string();
        let len = len.min(crate::wire::MAX_BLOB_CHUNK);
        let answer = self
            .over(secret)
            .request(|req| ClientFrame::BlobGet {
                req,
                blob_id,
                offset,
                len,
            })
            .await?;
        match answer {
            RelayFrame::BlobData {
                offset: at, data, ..
            } if at == offset && data.0.len() <= len as usize => Ok(data.0),
            other => Err(unexpected("a blob's bytes", &other)),
        }
    }

    async fn fetched(&self, secret: bool, blob_id: &str) -> Result<(), LinkError> {
        let blob_id = blob_id.to_string();
        let answer = self
            .over(secret)
            .request(|req| ClientFrame::BlobFetched { req, blob_id })
            .await?;
        match answer {
            RelayFrame::Ok { .. } => Ok(()),
            other => Err(unexpected("ok", &other)),
        }
    }
}
