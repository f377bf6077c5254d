//! The one JSON shape a message takes outside sotto: what `recv`, `recv --follow` and
//! `history` print, one object per line, for scripts and bots.
//!
//! Owns the field names and their meaning (the README's "The relay and the headless
//! commands" documents them); a change here is a change of sotto's scripting interface.
//! Must not read the store or talk to the manager: it turns a `store::Message` the caller
//! already has into its exported form.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::attachment::{Attachment, AttachmentState};
use super::manager::Change;
use super::store::{Message, MessageKind, MessageState};

/// Which of a contact's two threads a message is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Thread {
    Normal,
    Secret,
}

/// Whether this profile received the message or sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    In,
    Out,
}

/// A moment, both for people and for arithmetic: RFC 3339 in UTC (millisecond precision,
/// offset written `Z`) and the same instant in Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timestamp {
    pub rfc3339: String,
    pub ms: u64,
}

impl Timestamp {
    pub fn from_ms(ms: u64) -> Timestamp {
        let nanos = i128::from(ms) * 1_000_000;
        // Past year 9999 RFC 3339 has no form; the milliseconds still say when.
        let rfc3339 = OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_default();
        Timestamp { rfc3339, ms }
    }
}

/// One emoji under a message and how many reacted with it (at most 2: the contact and you).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedReaction {
    pub emoji: String,
    pub count: u32,
    /// Yours is among them.
    pub mine: bool,
}

/// A message as the headless commands print it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedMessage {
    /// The sender's id for the message; unique per contact.
    pub id: String,
    pub thread: Thread,
    pub direction: Direction,
    /// Handles: the contact's, or this profile's own for the side that is us. In a group's
    /// thread, `from` is the member who wrote it and `to` the group's handle.
    pub from: String,
    pub to: String,
    /// The group's handle (`#name`) for a message of a group's thread; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// `text`, `reply` (a text answering `target`), `timer` (a change of the thread's
    /// disappearing timer, whose new value is in `timer`), `key_change` (the contact's safety
    /// number changed), `unsupported` (a kind this sotto cannot show), or one of the changes
    /// `recv` reports: `reaction` (`emoji` on `target`), `edit` (`target` now reads `text`),
    /// `delete` (`target` was deleted for everyone).
    pub kind: MessageKind,
    /// Empty for a timer change, a deleted message, a reaction and a deletion.
    pub text: String,
    /// For a reply, a reaction, an edit or a deletion: the id of the message it is about
    /// (in the same thread); null otherwise.
    #[serde(default)]
    pub target: Option<String>,
    /// For a reaction: the emoji; null when the sender took their reaction away.
    #[serde(default)]
    pub emoji: Option<String>,
    /// Its author changed its text.
    #[serde(default)]
    pub edited: bool,
    /// Deleted for everyone: its text is gone.
    #[serde(default)]
    pub deleted: bool,
    /// The reactions it has, one entry per emoji.
    #[serde(default)]
    pub reactions: Vec<ExportedReaction>,
    /// For a text, the disappearing timer it was sent under; for a timer change, the new
    /// timer. Seconds; null: off.
    pub timer: Option<u32>,
    pub sent_at: Timestamp,
    /// When it will be deleted; null while it does not disappear or (received) is not read.
    pub expires_at: Option<Timestamp>,
    pub state: MessageState,
    /// The file it carries (its `text` is the caption); null for a message without one.
    #[serde(default)]
    pub attachment: Option<ExportedAttachment>,
}

/// A message's file as the headless commands print it; `sotto save HANDLE ID` writes it out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedAttachment {
    /// The file's name, without any directory.
    pub name: String,
    /// Media type, e.g. `image/png`.
    pub mime: String,
    /// Plaintext size in bytes.
    pub size: u64,
    /// `uploading`, `remote` (waiting at the relay), `downloading`, `ready` (here, checked)
    /// or `failed`.
    pub state: String,
    /// For `uploading` and `downloading`: encrypted bytes moved so far.
    #[serde(default)]
    pub done: Option<u64>,
    /// For `failed`: what went wrong and what to do.
    #[serde(default)]
    pub error: Option<String>,
}

impl ExportedAttachment {
    pub fn new(a: &Attachment) -> ExportedAttachment {
        let (state, done, error) = match &a.state {
            AttachmentState::Uploading { done } => ("uploading", Some(*done), None),
            AttachmentState::Remote => ("remote", None, None),
            AttachmentState::Downloading { done } => ("downloading", Some(*done), None),
            AttachmentState::Ready => ("ready", None, None),
            AttachmentState::Failed { error } => ("failed", None, Some(error.clone())),
        };
        ExportedAttachment {
            name: a.name.clone(),
            mime: a.mime.clone(),
            size: a.size,
            state: state.to_string(),
            done,
            error,
        }
    }
}

impl ExportedMessage {
    /// `m` as seen by the profile whose handle is `me`.
    pub fn new(m: &Message, me: &str) -> ExportedMessage {
        let group = crate::client::group_handle(&m.contact).then(|| m.contact.clone());
        let (from, to, direction) = match (m.outgoing, &group) {
            (true, _) => (me, m.contact.as_str(), Direction::Out),
            (false, Some(g)) => (
                m.author.as_deref().unwrap_or_default(),
                g.as_str(),
                Direction::In,
            ),
            (false, None) => (m.contact.as_str(), me, Direction::In),
        };
        ExportedMessage {
            id: m.id.clone(),
            thread: if m.secret {
                Thread::Secret
            } else {
                Thread::Normal
            },
            direction,
            from: from.to_string(),
            to: to.to_string(),
            group,
            kind: match (&m.reply, m.kind) {
                (Some(_), MessageKind::Text) => MessageKind::Reply,
                (_, kind) => kind,
            },
            text: m.text.clone(),
            target: m.reply.as_ref().map(|q| q.id.clone()),
            emoji: None,
            edited: m.edited,
            deleted: m.deleted,
            reactions: m
                .reactions
                .iter()
                .map(|r| ExportedReaction {
                    emoji: r.emoji.clone(),
                    count: r.count,
                    mine: r.mine,
                })
                .collect(),
            timer: m.timer,
            sent_at: Timestamp::from_ms(m.sent_at),
            expires_at: m.expires_at.map(Timestamp::from_ms),
            state: m.state,
            attachment: m.attachment.as_ref().map(ExportedAttachment::new),
        }
    }

    /// A reaction, edit or deletion (`change`) of the message `m`, as `recv` reports it.
    pub fn change(m: &Message, change: &Change, me: &str) -> ExportedMessage {
        let text = match change.kind {
            MessageKind::Edit => m.text.clone(),
            _ => String::new(),
        };
        let outgoing = change.outgoing;
        let m = Message {
            outgoing,
            state: if outgoing {
                MessageState::Sent
            } else {
                MessageState::Received
            },
            ..m.clone()
        };
        ExportedMessage {
            id: change.id.clone(),
            kind: change.kind,
            text,
            target: Some(m.id.clone()),
            emoji: change.emoji.clone(),
            edited: false,
            deleted: false,
            reactions: Vec::new(),
            timer: None,
            sent_at: Timestamp::from_ms(change.sent_at),
            expires_at: None,
            attachment: None,
            ..ExportedMessage::new(&m, me)
        }
    }

    /// One line of JSON, without the newline.
    pub fn to_line(&self) -> String {
        // A struct of strings, numbers and enums always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_rfc3339_with_milliseconds() {
        let t = Timestamp::from_ms(1_764_777_000_123);
        assert_eq!(t.rfc3339, "2025-12-03T15:50:00.123Z");
        assert_eq!(Timestamp::from_ms(0).rfc3339, "1970-01-01T00:00:00Z");
        assert_eq!(Timestamp::from_ms(u64::MAX).rfc3339, "");
    }

    #[test]
    fn sides_follow_the_direction() {
        let m = Message {
            seq: 3,
            id: "x".into(),
            contact: "bob".into(),
            secret: true,
            outgoing: true,
            text: "hi".into(),
            sent_at: 5,
            state: MessageState::Sent,
            kind: MessageKind::Text,
            timer: Some(30),
            expires_at: Some(30_005),
            reply: None,
            reactions: Vec::new(),
            edited: false,
            deleted: false,
            attachment: None,
            author: None,
        };
        let out = ExportedMessage::new(&m, "alice");
        assert_eq!((out.from.as_str(), out.to.as_str()), ("alice", "bob"));
        assert_eq!(out.direction, Direction::Out);
        let line = out.to_line();
        assert!(line.contains(r#""thread":"secret""#), "{line}");
        assert!(line.contains(r#""direction":"out""#), "{line}");
        assert!(line.contains(r#""state":"sent""#), "{line}");
        assert_eq!(serde_json::from_str::<ExportedMessage>(&line).unwrap(), out);
        let back = ExportedMessage::new(
            &Message {
                outgoing: false,
                ..m
            },
            "alice",
        );
        assert_eq!((back.from.as_str(), back.to.as_str()), ("bob", "alice"));
    }
}
