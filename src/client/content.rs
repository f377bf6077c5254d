//! The payload inside a message: a versioned, serde-encoded `Content`, and the padding that
//! hides its length inside encryption.
//!
//! Owns the payload format shared by normal and secret messages. Must not encrypt: that is
//! `crypto`'s job. Unknown future kinds decode as `Body::Unknown` instead of failing.

use serde::{Deserialize, Serialize};

/// Version of the `Content` format written by this build.
pub const CONTENT_VERSION: u32 = 1;

/// Longest message text, in bytes of UTF-8. Far above any chat message, and far enough below
/// the relay's payload limit that padding, encryption and the sealed envelope always fit.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;

/// Plaintexts are padded to a multiple of this before encryption.
const PAD_BLOCK: usize = 160;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Content {
    pub v: u32,
    #[serde(flatten)]
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Body {
    Text {
        /// UUID chosen by the sender; the recipient drops an id it already holds.
        id: String,
        text: String,
        /// Unix milliseconds at the sender.
        sent_at: u64,
        /// Disappearing timer in force when sent, in seconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timer: Option<u32>,
        /// The message of the same thread this one answers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<Quote>,
    },
    /// The sender changed the thread's disappearing timer (seconds; None: off).
    TimerChange {
        id: String,
        timer: Option<u32>,
        sent_at: u64,
    },
    /// The sender's messages `ids` are stored on the recipient's device.
    Receipt { ids: Vec<String> },
    /// The user has displayed the sender's messages `ids` (a read receipt). Sent in the same
    /// thread as those messages; only the ids of that thread's messages of ours count.
    Read { ids: Vec<String> },
    /// The sender is typing in this thread (`active`), or stopped. Travels online only (the
    /// relay never queues it); not a message: no row, no receipt, no notification.
    Typing { active: bool },
    /// The sender's reaction to the message `target` of the same thread: one emoji per person
    /// per message; None takes theirs away.
    Reaction {
        id: String,
        target: String,
        emoji: Option<String>,
        sent_at: u64,
    },
    /// The sender's own text message `target` now reads `text` (no history is kept).
    Edit {
        id: String,
        target: String,
        text: String,
        sent_at: u64,
    },
    /// The sender deleted their own message `target` for everyone.
    Delete {
        id: String,
        target: String,
        sent_at: u64,
    },
    /// A file: its ciphertext waits at the relay's blob store, and `file` says how to fetch,
    /// check and open it. `caption` is shown under it.
    Attachment {
        id: String,
        file: crate::client::attachment::FileRef,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caption: Option<String>,
        sent_at: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timer: Option<u32>,
    },
    /// A group's whole state after a change, sent 1:1 secret by an admin (or by a member
    /// leaving) to every member, old and new. `id` names the change's line in the threads.
    GroupUpdate {
        id: String,
        /// The group id (32 hex digits).
        group: String,
        name: String,
        epoch: u64,
        /// Account ids of the admins.
        admins: Vec<String>,
        members: Vec<GroupMemberRef>,
        /// The distribution id (16 bytes) the members' sender keys are under now.
        distribution_id: crate::wire::B64,
        /// What happened, for the line in the threads ("added carol").
        change: String,
        sent_at: u64,
    },
    /// The sender's sender-key distribution message for `group`, sent 1:1 secret.
    SenderKey {
        group: String,
        skdm: crate::wire::B64,
    },
    /// A message of a group's thread: normal (readable by the relay, like a normal 1:1
    /// message) or sealed under the sender's sender key.
    InGroup { group: String, body: Box<Body> },
    /// A kind this build does not know; a newer peer sent it.
    #[serde(other)]
    Unknown,
}

/// A member as a `GroupUpdate` names them: a receiver who does not know them looks the
/// handle up in the directory and checks it names this account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMemberRef {
    pub account_id: String,
    pub handle: String,
}

/// What a reply quotes: the original's id and a short excerpt of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    pub id: String,
    pub excerpt: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("message payload is not valid: {0}")]
    Malformed(String),
    #[error("message padding is not valid")]
    BadPadding,
}

impl Content {
    pub fn text(id: String, text: String, sent_at: u64, timer: Option<u32>) -> Self {
        Content {
            v: CONTENT_VERSION,
            body: Body::Text {
                id,
                text,
                sent_at,
                timer,
                reply_to: None,
            },
        }
    }

    /// Any body, in this build's version.
    pub fn of(body: Body) -> Self {
        Content {
            v: CONTENT_VERSION,
            body,
        }
    }

    pub fn timer_change(id: String, timer: Option<u32>, sent_at: u64) -> Self {
        Content {
            v: CONTENT_VERSION,
            body: Body::TimerChange { id, timer, sent_at },
        }
    }

    pub fn receipt(ids: Vec<String>) -> Self {
        Content {
            v: CONTENT_VERSION,
            body: Body::Receipt { ids },
        }
    }

    pub fn read(ids: Vec<String>) -> Self {
        Content {
            v: CONTENT_VERSION,
            body: Body::Read { ids },
        }
    }

    pub fn typing(active: bool) -> Self {
        Content {
            v: CONTENT_VERSION,
            body: Body::Typing { active },
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, ContentError> {
        serde_json::from_slice(bytes).map_err(|e| ContentError::Malformed(e.to_string()))
    }
}

/// Appends 0x80 then zeros up to the next multiple of the block size.
pub fn pad(mut bytes: Vec<u8>) -> Vec<u8> {
    bytes.push(0x80);
    let len = bytes.len().div_ceil(PAD_BLOCK) * PAD_BLOCK;
    bytes.resize(len, 0);
    bytes
}

pub fn unpad(bytes: &[u8]) -> Result<&[u8], ContentError> {
    let end = bytes
        .iter()
        .rposition(|&b| b != 0)
        .ok_or(ContentError::BadPadding)?;
    if bytes[end] != 0x80 {
        return Err(ContentError::BadPadding);
    }
    Ok(&bytes[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_hides_length_and_round_trips() {
        for n in [0usize, 1, 158, 159, 160, 161, 1000] {
            let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8 + 1).collect();
            let padded = pad(data.clone());
            assert_eq!(padded.len() % PAD_BLOCK, 0, "n={n}");
            assert!(padded.len() > n);
            assert_eq!(unpad(&padded).unwrap(), &data[..]);
        }
        assert_eq!(pad(vec![1; 10]).len(), pad(vec![1; 100]).len());
        assert!(unpad(&[0, 0, 0]).is_err());
        assert!(unpad(&[1, 2, 0]).is_err());
    }

    #[test]
    fn unknown_kinds_from_newer_peers_decode() {
        let c = Content::decode(br#"{"v":2,"kind":"sticker","pack":"x"}"#).unwrap();
        assert_eq!(c.body, Body::Unknown);
        let t = Content::text("id".into(), "hi".into(), 5, Some(30));
        assert_eq!(Content::decode(&t.encode()).unwrap(), t);
    }

    #[test]
    fn a_text_without_a_quote_is_encoded_as_before_and_a_reply_carries_one() {
        let t = Content::text("id".into(), "hi".into(), 5, None);
        assert!(!String::from_utf8(t.encode()).unwrap().contains("reply_to"));
        let r = Content::of(Body::Text {
            id: "b".into(),
            text: "yes".into(),
            sent_at: 6,
            timer: None,
            reply_to: Some(Quote {
                id: "id".into(),
                excerpt: "hi".into(),
            }),
        });
        assert_eq!(Content::decode(&r.encode()).unwrap(), r);
        let gone = Content::of(Body::Reaction {
            id: "c".into(),
            target: "id".into(),
            emoji: None,
            sent_at: 7,
        });
        assert_eq!(Content::decode(&gone.encode()).unwrap(), gone);
    }
}
