//! A file as a client sends and receives it, driven through its manager's commands and
//! events: attach one to a message, wait for its state, wait for a message carrying one,
//! save it. Shared by the tests of files over one relay and over several.

use std::path::{Path, PathBuf};

use sotto::client::attachment::AttachmentState;
use sotto::client::manager::{Command, Event};
use sotto::client::store::Message;

use super::Client;

/// Attaches the file at `path` to a new message to `to`; returns the message's id.
pub async fn attach(
    c: &mut Client,
    to: &str,
    secret: bool,
    path: &Path,
    caption: Option<&str>,
) -> String {
    let id = uuid::Uuid::new_v4().to_string();
    c.handle
        .commands
        .send(Command::Attach {
            id: id.clone(),
            to: to.into(),
            secret,
            path: path.to_path_buf(),
            caption: caption.map(str::to_string),
        })
        .await
        .unwrap();
    id
}

/// Waits until file `id` is in `state` (compared without progress counts).
pub async fn file_state(
    c: &mut Client,
    id: &str,
    want: fn(&AttachmentState) -> bool,
) -> AttachmentState {
    match c
        .expect(|e| matches!(e, Event::Attachment { id: i, attachment } if i == id && want(&attachment.state)))
        .await
    {
        Event::Attachment { attachment, .. } => attachment.state,
        _ => unreachable!(),
    }
}

/// The file is whole at this client (uploaded, or downloaded and checked).
pub fn ready(s: &AttachmentState) -> bool {
    *s == AttachmentState::Ready
}

/// Waits for the arriving message that carries a file.
pub async fn receive_file(c: &mut Client) -> Message {
    match c
        .expect(|e| matches!(e, Event::Message(m) if !m.outgoing && m.attachment.is_some()))
        .await
    {
        Event::Message(m) => m,
        _ => unreachable!(),
    }
}

/// Saves file `id` to `dest`: where it was saved, or the sentence the user is shown.
pub async fn save(c: &mut Client, id: &str, dest: &Path) -> Result<PathBuf, String> {
    let tag = rand::random::<u64>();
    c.handle
        .commands
        .send(Command::SaveAttachment {
            tag,
            id: id.into(),
            dest: dest.to_path_buf(),
        })
        .await
        .unwrap();
    match c
        .expect(|e| matches!(e, Event::AttachmentSaved { tag: t, .. } | Event::Failed { tag: t, .. } if *t == tag))
        .await
    {
        Event::AttachmentSaved { path, .. } => Ok(path),
        Event::Failed { error, .. } => Err(error),
        _ => unreachable!(),
    }
}
