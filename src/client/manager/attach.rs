//! The manager's side of files: attaching one (checked, stored, then encrypted and uploaded
//! by a transfer task before its message is sent), downloading, opening and saving, the
//! transfers' reports, their resumption, and the removal of the files of messages that went.
//!
//! Part of the manager (it works on `Manager`'s state). The transfers themselves run in
//! `attachment::transfer` tasks and never block this loop; the file formats are
//! `attachment::files`' and `attachment::crypto`'s.

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use super::{ClientError, Event, Manager, describe};
use crate::client::attachment::files::{self, AttachError};
use crate::client::attachment::transfer::{self, Step};
use crate::client::attachment::{Attachment, AttachmentState, FileRef, crypto};
use crate::client::content::{self, Body, Content};
use crate::client::store::{Message, MessageKind, MessageState, StoredFile};

impl Manager {
    /// Stores the message of a new file (its upload pending) and starts the upload; the
    /// message leaves once the relay holds the whole file.
    pub(super) async fn attach(
        &mut self,
        id: String,
        to: String,
        secret: bool,
        path: PathBuf,
        caption: Option<String>,
    ) {
        match self
            .store_attachment(id.clone(), &to, secret, &path, caption)
            .await
        {
            Ok(m) => {
                let seq = m.seq;
                self.emit(Event::Message(m)).await;
                self.start_upload(seq, Some(path));
            }
            Err(e) => self.fail(id, &e).await,
        }
    }

    async fn store_attachment(
        &mut self,
        id: String,
        to: &str,
        secret: bool,
        path: &std::path::Path,
        caption: Option<String>,
    ) -> Result<Message, ClientError> {
        let size = files::check_source(path, self.settings.max_attachment)?;
        let caption = caption.unwrap_or_default();
        if caption.len() > content::MAX_TEXT_BYTES {
            return Err(ClientError::TooLong(caption.len()));
        }
        let contact = self.contact_by_handle(to).await?;
        let timer = self.store.thread_timer(&contact.account_id, secret)?;
        let name = files::safe_name(&path.file_name().unwrap_or_default().to_string_lossy());
        let attachment = Attachment {
            mime: files::mime_for(&name).to_string(),
            name,
            size,
            state: AttachmentState::Uploading { done: 0 },
        };
        // The message and its file's row are kept together or not at all.
        let work = self.store.begin_burst()?;
        let stored = self
            .originate(
                id,
                &contact,
                secret,
                MessageKind::Text,
                caption,
                timer,
                None,
            )
            .and_then(|m| {
                self.store.insert_attachment(
                    m.seq,
                    &attachment,
                    None,
                    None,
                    None,
                    crypto::blob_size(size),
                )?;
                Ok(m)
            });
        let mut m = match stored {
            Ok(m) => {
                self.store.end_burst(work)?;
                m
            }
            Err(e) => {
                self.store.abandon_burst(work)?;
                return Err(e);
            }
        };
        m.attachment = Some(attachment);
        Ok(m)
    }

    /// Starts (or resumes) the upload of our file `seq`; `source` is the plaintext if it
    /// is not encrypted into the profile yet.
    fn start_upload(&mut self, seq: i64, source: Option<PathBuf>) {
        let file = match self.store.attachment_by_seq(seq) {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(e) => return tracing::error!(error = %e, "cannot read an attachment's row"),
        };
        let cancel = self.track(seq);
        let job = transfer::Upload {
            seq,
            profile: self.dir.clone(),
            source,
            secret: file.secret,
            expires_at: file.blob_expires_at(),
            blob_id: file.blob_id,
            chunk: file.chunk,
            blob_size: file.blob_size,
            cancel,
        };
        tokio::spawn(transfer::upload(
            self.blobs.clone(),
            job,
            self.transfer_tx.clone(),
        ));
    }

    /// Starts (or resumes) the download of a peer's file.
    fn start_download(&mut self, file: &StoredFile) {
        let (Some(blob_id), Some(digest)) = (file.blob_id.clone(), file.digest.clone()) else {
            return;
        };
        let cancel = self.track(file.seq);
        let job = transfer::Download {
            seq: file.seq,
            profile: self.dir.clone(),
            secret: file.secret,
            blob_id,
            blob_size: file.blob_size,
            digest,
            cancel,
        };
        tokio::spawn(transfer::download(
            self.blobs.clone(),
            job,
            self.transfer_tx.clone(),
        ));
    }

    /// Records a transfer of `seq` as running; its token stops it if the message goes.
    fn track(&self, seq: i64) -> CancellationToken {
        let token = CancellationToken::new();
        if let Some(old) = self.transfers.borrow_mut().insert(seq, token.clone()) {
            old.cancel();
        }
        token
    }

    /// Resumes every transfer the store says was under way and is not running now: after
    /// a restart, or once the link is back.
    pub(super) fn resume_transfers(&mut self) {
        let pending = match self.store.pending_transfers() {
            Ok(p) => p,
            Err(e) => return tracing::error!(error = %e, "cannot read pending transfers"),
        };
        for f in pending {
            if self.transfers.borrow().contains_key(&f.seq) {
                continue;
            }
            if f.outgoing {
                if f.key.is_none() {
                    // The plaintext's path was never kept: the encryption cannot resume.
                    self.later_failed(
                        f.seq,
                        "the upload stopped before the file was encrypted; attach it again".into(),
                    );
                    continue;
                }
                self.start_upload(f.seq, None);
            } else {
                self.start_download(&f);
            }
        }
    }

    /// Fails file `seq` through the transfer channel, so the event goes out from the loop.
    fn later_failed(&self, seq: i64, error: String) {
        let _ = self.transfer_tx.send((seq, Step::Failed(error)));
    }

    /// A transfer task's report.
    pub(super) async fn on_transfer(&mut self, seq: i64, step: Step) {
        let file = match self.store.attachment_by_seq(seq) {
            Ok(Some(f)) => f,
            Ok(None) => {
                // The message went while its file was moving: nothing of it may stay.
                if let Some(t) = self.transfers.borrow_mut().remove(&seq) {
                    t.cancel();
                }
                files::remove(&self.dir, seq);
                return;
            }
            Err(e) => return tracing::error!(error = %e, "cannot read an attachment's row"),
        };
        let stored = match step {
            Step::Sealed(s) => {
                self.store
                    .set_attachment_sealed(seq, &s.key, &s.digest, s.blob_size)
            }
            Step::Created(b) => self
                .store
                .set_attachment_blob(seq, &b.blob_id, b.chunk_size),
            Step::Progress(done) => {
                let state = if file.outgoing {
                    AttachmentState::Uploading { done }
                } else {
                    AttachmentState::Downloading { done }
                };
                return self.file_state(&file, state).await;
            }
            Step::Interrupted => {
                self.transfers.borrow_mut().remove(&seq);
                return;
            }
            Step::Failed(error) => {
                self.transfers.borrow_mut().remove(&seq);
                tracing::warn!("a file transfer failed");
                self.file_state(
                    &file,
                    AttachmentState::Failed {
                        error: error.clone(),
                    },
                )
                .await;
                if file.outgoing {
                    if let Err(e) = self.store.set_state(&file.id, MessageState::Failed) {
                        tracing::error!(error = %e, "cannot record failure");
                    }
                    self.emit(Event::MessageFailed { id: file.id, error }).await;
                }
                return;
            }
            Step::Done => {
                self.transfers.borrow_mut().remove(&seq);
                self.file_state(&file, AttachmentState::Ready).await;
                if file.outgoing {
                    // The whole file is at the relay: now its message may go.
                    match self.store.outgoing(&file.id) {
                        Ok(Some(m)) => self.transmit_all(std::slice::from_ref(&m)).await,
                        Ok(None) => {}
                        Err(e) => tracing::error!(error = %e, "cannot read a message to send"),
                    }
                } else if let Some(blob_id) = file.blob_id {
                    let blobs = self.blobs.clone();
                    tokio::spawn(async move {
                        if let Err(e) = blobs.fetched(file.secret, &blob_id).await {
                            tracing::info!(error = %e, "the relay was not told a file was fetched");
                        }
                    });
                }
                return;
            }
        };
        if let Err(e) = stored {
            tracing::error!(error = %e, "cannot record a transfer's step");
        }
    }

    /// Records where file `file` is and tells the screen.
    async fn file_state(&self, file: &StoredFile, state: AttachmentState) {
        match self.store.set_attachment_state(file.seq, &state) {
            Ok(Some(attachment)) => {
                self.emit(Event::Attachment {
                    id: file.id.clone(),
                    attachment,
                })
                .await
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "cannot record a file's state"),
        }
    }

    /// The announcing content of our message `m`, once its file is at the relay; None while
    /// the upload is still going (the message waits for it).
    pub(super) fn attachment_content(&self, m: &Message) -> Option<Content> {
        let file = self.store.attachment_by_seq(m.seq).ok().flatten()?;
        if file.attachment.state != AttachmentState::Ready {
            return None;
        }
        Some(Content::of(Body::Attachment {
            id: m.id.clone(),
            file: FileRef {
                blob_id: file.blob_id?,
                key: crate::wire::B64(file.key?),
                digest: crate::wire::B64(file.digest?),
                size: file.size,
                blob_size: file.blob_size,
                name: file.attachment.name,
                mime: file.attachment.mime,
            },
            caption: (!m.text.is_empty()).then(|| m.text.clone()),
            sent_at: m.sent_at,
            timer: m.timer,
        }))
    }

    /// The row of an announced file, checked: a name that cannot escape a directory, sizes
    /// that agree with each other and the key's length. Small files download at once.
    pub(super) fn announced(&self, file: &FileRef) -> Result<Attachment, String> {
        if file.key.0.len() != crypto::KEY_LEN
            || file.digest.0.len() != 32
            || crypto::plain_size(file.blob_size) != Some(file.size)
        {
            return Err("sent a file whose description is damaged; it was dropped".into());
        }
        Ok(Attachment {
            name: files::safe_name(&file.name),
            mime: file
                .mime
                .chars()
                .filter(|c| !c.is_control())
                .take(100)
                .collect(),
            size: file.size,
            state: if file.size <= self.settings.auto_download {
                AttachmentState::Downloading { done: 0 }
            } else {
                AttachmentState::Remote
            },
        })
    }

    /// A peer's file just stored: fetched at once if small enough.
    pub(super) fn arrived(&mut self, seq: i64) {
        if let Ok(Some(f)) = self.store.attachment_by_seq(seq)
            && matches!(f.attachment.state, AttachmentState::Downloading { .. })
        {
            self.start_download(&f);
        }
    }

    /// `Command::Download`: a peer's file fetched now, or our failed upload tried again.
    pub(super) async fn download(&mut self, tag: u64, id: String) {
        let result = self.file(&id).and_then(|f| {
            if self.transfers.borrow().contains_key(&f.seq) {
                return Ok(());
            }
            match (&f.attachment.state, f.outgoing) {
                (AttachmentState::Ready, _) => Ok(()),
                (_, true) if f.key.is_none() => Err(ClientError::Attach(AttachError::Gone)),
                (_, true) => {
                    self.store
                        .set_attachment_state(f.seq, &AttachmentState::Uploading { done: 0 })?;
                    self.store.resend(&[&f.id])?;
                    self.start_upload(f.seq, None);
                    Ok(())
                }
                (_, false) => {
                    self.store.set_attachment_state(
                        f.seq,
                        &AttachmentState::Downloading {
                            done: files::part_len(&self.dir, f.seq),
                        },
                    )?;
                    self.start_download(&f);
                    Ok(())
                }
            }
        });
        match result {
            Ok(()) => {
                if let Ok(f) = self.file(&id) {
                    self.emit(Event::Attachment {
                        id,
                        attachment: f.attachment,
                    })
                    .await
                }
            }
            Err(e) => self.fail_command(tag, &e).await,
        }
    }

    fn file(&self, id: &str) -> Result<StoredFile, ClientError> {
        self.store
            .attachment_by_id(id)?
            .ok_or_else(|| ClientError::Attach(AttachError::NoFile(id.to_string())))
    }

    /// The key of a file that is here and checked.
    fn ready(&self, id: &str) -> Result<(StoredFile, Vec<u8>), ClientError> {
        let f = self.file(id)?;
        match (&f.attachment.state, &f.key) {
            (AttachmentState::Ready, Some(key)) => {
                let key = key.clone();
                Ok((f, key))
            }
            _ => Err(ClientError::Attach(AttachError::NotReady)),
        }
    }

    /// `Command::OpenAttachment`: a private plaintext copy, removed when the session ends
    /// or the message goes. Decrypted off the loop; the event follows when it is written.
    pub(super) async fn open(&mut self, tag: u64, id: String) {
        let result = self.ready(&id).and_then(|(f, key)| {
            let dir = self.open_dir()?.join(f.seq.to_string());
            crate::private::create_dir(&dir).map_err(|e| {
                ClientError::Attach(AttachError::Write {
                    path: dir.display().to_string(),
                    cause: std::io::Error::other(e.to_string()),
                })
            })?;
            let dest = dir.join(&f.attachment.name);
            Ok((f, key, dest))
        });
        let (f, key, dest) = match result {
            Ok(r) => r,
            Err(e) => return self.fail_command(tag, &e).await,
        };
        // A copy this session already opened is opened again as it is.
        self.write_copy(
            tag,
            f,
            key,
            true,
            move |_| dest,
            move |path| Event::AttachmentOpened { tag, id, path },
        );
    }

    /// `Command::Preview`: the picture of a Ready file decoded and scaled off the loop, read
    /// through the decrypting reader so no plaintext file is written. A file that is not a
    /// picture, or not here yet, gets no answer: the screen keeps its file line.
    pub(super) fn preview(&mut self, id: String, max_w: u32, max_h: u32) {
        let Ok((f, key)) = self.ready(&id) else {
            return;
        };
        let profile = self.dir.clone();
        let later = self.later.clone();
        tokio::task::spawn_blocking(move || {
            let decoded = files::reader(&profile, f.seq, &key)
                .map_err(|e| e.to_string())
                .and_then(|r| {
                    crate::client::attachment::preview::preview(r, max_w, max_h)
                        .map_err(|e| e.to_string())
                });
            match decoded {
                Ok((width, height, image)) => {
                    let _ = later.send(Event::Preview {
                        id,
                        width,
                        height,
                        image: image.map(std::sync::Arc::new),
                    });
                }
                // The reason names the format or the size, never the picture's contents.
                Err(e) => tracing::info!(error = %e, "no preview"),
            }
        });
    }

    /// The session's private directory of opened copies (0700, removed when it ends).
    fn open_dir(&mut self) -> Result<PathBuf, ClientError> {
        if self.opened.is_none() {
            let dir = tempfile::Builder::new()
                .prefix("sotto-open-")
                .tempdir()
                .map_err(|cause| {
                    ClientError::Attach(AttachError::Write {
                        path: std::env::temp_dir().display().to_string(),
                        cause,
                    })
                })?;
            self.opened = Some(dir);
        }
        Ok(self
            .opened
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .unwrap_or_default())
    }

    /// `Command::SaveAttachment`: a plaintext copy at `dest`, never over an existing file.
    pub(super) async fn save(&mut self, tag: u64, id: String, dest: PathBuf) {
        let (f, key) = match self.ready(&id) {
            Ok(r) => r,
            Err(e) => return self.fail_command(tag, &e).await,
        };
        self.write_copy(
            tag,
            f,
            key,
            false,
            move |name| files::save_target(&dest, name),
            move |path| Event::AttachmentSaved { tag, id, path },
        );
    }

    /// Decrypts file `f` to the path `target` gives for its name, off the loop, then reports
    /// `done(path)`, or `Failed` with `tag`. A file already at that path is refused, or, with
    /// `keep_existing`, taken as the copy.
    fn write_copy(
        &self,
        tag: u64,
        f: StoredFile,
        key: Vec<u8>,
        keep_existing: bool,
        target: impl FnOnce(&str) -> PathBuf + Send + 'static,
        done: impl FnOnce(PathBuf) -> Event + Send + 'static,
    ) {
        let profile = self.dir.clone();
        let later = self.later.clone();
        tokio::spawn(async move {
            let written = tokio::task::spawn_blocking(move || {
                let path = target(&f.attachment.name);
                if keep_existing && path.exists() {
                    return Ok(path);
                }
                files::decrypt_to(&profile, f.seq, &key, &path).map(|()| path)
            })
            .await;
            let _ = later.send(match written {
                Ok(Ok(path)) => done(path),
                Ok(Err(e)) => Event::Failed {
                    tag,
                    error: describe(&e),
                },
                Err(e) => Event::Failed {
                    tag,
                    error: format!("the copy could not be written: {e}"),
                },
            });
        });
    }

    /// Unlinks the files (encrypted, partial, opened copy) of every message that went, by
    /// whatever path (sweeper, deletion, a contact's removal), and stops their transfers.
    pub(super) fn files_gone(&self) {
        let gone = match self.store.gone_files() {
            Ok(g) if g.is_empty() => return,
            Ok(g) => g,
            Err(e) => return tracing::error!(error = %e, "cannot read the files to remove"),
        };
        for &seq in &gone {
            if let Some(t) = self.transfers.borrow_mut().remove(&seq) {
                t.cancel();
            }
            files::remove(&self.dir, seq);
            if let Some(open) = &self.opened {
                let copy = open.path().join(seq.to_string());
                if copy.exists()
                    && let Err(e) = std::fs::remove_dir_all(&copy)
                {
                    tracing::warn!(error = %e, "cannot remove an opened copy");
                }
            }
        }
        if let Err(e) = self.store.forget_gone_files(&gone) {
            tracing::error!(error = %e, "cannot forget removed files");
        }
    }

    /// At start: files in the profile that no row names any more (a crash between a
    /// deletion and its unlink) go.
    pub(super) fn orphan_files(&mut self) {
        self.files_gone();
        let Ok(entries) = std::fs::read_dir(self.dir.join(files::DIR)) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let Ok(seq) = name.split('.').next().unwrap_or_default().parse::<i64>() else {
                continue;
            };
            if let Ok(None) = self.store.attachment_by_seq(seq) {
                files::remove(&self.dir, seq);
            }
        }
    }
}
