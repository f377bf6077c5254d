//! The profile's control socket: how a headless command (`send`, `send --attach`, `save`,
//! `timer`, `recv`) reaches the
//! manager that already runs on the profile (the chat screen, or another headless command)
//! instead of failing on the profile's lock.
//!
//! Owns the socket's place (`control.sock` in the profile directory, 0600, in a 0700
//! directory, and only its owner may talk to it), the requests it accepts and the reports it
//! passes on, as JSON lines. A request becomes the manager's own `Command`; an `Event` the
//! caller can use becomes a report. Must not touch the store or the relay: whatever a
//! request does, the manager does, exactly as for its own user. Nothing that shows a key or
//! a safety number crosses it.

use serde::{Deserialize, Serialize};

use super::manager::{Command, ConnState, Event, Warning};
use super::store::{Message, MessageState};

mod client;
mod server;

pub use client::connect;
pub(crate) use server::{Tap, serve};

/// The socket's file name in the profile directory.
pub const SOCKET: &str = "control.sock";

/// Tags of commands that came through the socket carry this bit, so that the manager's own
/// user (whose tags are small counters) never takes their answers for its own.
const REMOTE_TAG: u64 = 1 << 63;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "{dir} is in use by another sotto process that does not answer on {socket} ({cause}); wait for it to finish, or close it, and try again"
    )]
    NoAnswer {
        dir: String,
        socket: String,
        cause: std::io::Error,
    },
    #[error("cannot start the link to the running sotto: {0}")]
    Start(std::io::Error),
}

/// What a headless command may ask of a running manager: what `send`, `timer`, `recv` and the
/// file commands need, and nothing that changes trust or contacts. Paths are the caller's,
/// made absolute by it (the manager's working directory is not the caller's); the caller owns
/// the profile, so the manager reads and writes only what that user could.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    Send {
        id: String,
        to: String,
        secret: bool,
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<String>,
    },
    SetTimer {
        id: String,
        contact: String,
        secret: bool,
        timer: Option<u32>,
    },
    FetchUnshown {
        tag: u64,
    },
    MarkShown {
        ids: Vec<String>,
    },
    Attach {
        id: String,
        to: String,
        secret: bool,
        path: std::path::PathBuf,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caption: Option<String>,
    },
    Download {
        tag: u64,
        id: String,
    },
    SaveAttachment {
        tag: u64,
        id: String,
        dest: std::path::PathBuf,
    },
}

impl Request {
    /// The request for `cmd`, or None for a command the socket does not take.
    pub fn from_command(cmd: Command) -> Option<Request> {
        Some(match cmd {
            Command::Send {
                id,
                to,
                secret,
                text,
                reply_to,
            } => Request::Send {
                id,
                to,
                secret,
                text,
                reply_to,
            },
            Command::SetTimer {
                id,
                contact,
                secret,
                timer,
            } => Request::SetTimer {
                id,
                contact,
                secret,
                timer,
            },
            Command::FetchUnshown { tag } => Request::FetchUnshown { tag },
            Command::MarkShown { ids } => Request::MarkShown { ids },
            Command::Attach {
                id,
                to,
                secret,
                path,
                caption,
            } => Request::Attach {
                id,
                to,
                secret,
                path,
                caption,
            },
            Command::Download { tag, id } => Request::Download { tag, id },
            Command::SaveAttachment { tag, id, dest } => Request::SaveAttachment { tag, id, dest },
            _ => return None,
        })
    }

    /// The manager's command for this request, with its tag marked as remote.
    fn into_command(self) -> Command {
        match self {
            Request::Send {
                id,
                to,
                secret,
                text,
                reply_to,
            } => Command::Send {
                id,
                to,
                secret,
                text,
                reply_to,
            },
            Request::SetTimer {
                id,
                contact,
                secret,
                timer,
            } => Command::SetTimer {
                id,
                contact,
                secret,
                timer,
            },
            Request::FetchUnshown { tag } => Command::FetchUnshown {
                tag: tag | REMOTE_TAG,
            },
            Request::MarkShown { ids } => Command::MarkShown { ids },
            Request::Attach {
                id,
                to,
                secret,
                path,
                caption,
            } => Command::Attach {
                id,
                to,
                secret,
                path,
                caption,
            },
            Request::Download { tag, id } => Command::Download {
                tag: tag | REMOTE_TAG,
                id,
            },
            Request::SaveAttachment { tag, id, dest } => Command::SaveAttachment {
                tag: tag | REMOTE_TAG,
                id,
                dest,
            },
        }
    }
}

/// What the socket passes on of the manager's events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "report", rename_all = "snake_case")]
pub enum Report {
    Connection {
        state: ConnState,
    },
    Drained,
    Message {
        message: Box<Message>,
    },
    MessageState {
        id: String,
        state: MessageState,
    },
    MessageFailed {
        id: String,
        error: String,
    },
    Unshown {
        tag: u64,
        messages: Vec<Message>,
    },
    Failed {
        tag: u64,
        error: String,
    },
    /// Its contact and thread cross with it, so that a screen on the caller's side would
    /// place it as the running one does.
    Warning(Warning),
    Attachment {
        id: String,
        attachment: crate::client::attachment::Attachment,
    },
    AttachmentSaved {
        tag: u64,
        id: String,
        path: std::path::PathBuf,
    },
}

impl Report {
    /// The report for `e`, or None for an event that stays with the manager's own user.
    fn from_event(e: Event) -> Option<Report> {
        let untag = |tag: u64| tag & !REMOTE_TAG;
        Some(match e {
            Event::Connection(state) => Report::Connection { state },
            Event::Drained => Report::Drained,
            Event::Message(message) => Report::Message {
                message: Box::new(message),
            },
            Event::MessageState { id, state } => Report::MessageState { id, state },
            Event::MessageFailed { id, error } => Report::MessageFailed { id, error },
            Event::Unshown { tag, messages } if tag & REMOTE_TAG != 0 => Report::Unshown {
                tag: untag(tag),
                messages,
            },
            Event::Failed { tag, error } if tag & REMOTE_TAG != 0 => Report::Failed {
                tag: untag(tag),
                error,
            },
            Event::Warning(w) => Report::Warning(w),
            Event::Attachment { id, attachment } => Report::Attachment { id, attachment },
            Event::AttachmentSaved { tag, id, path } if tag & REMOTE_TAG != 0 => {
                Report::AttachmentSaved {
                    tag: untag(tag),
                    id,
                    path,
                }
            }
            _ => return None,
        })
    }

    fn into_event(self) -> Event {
        match self {
            Report::Connection { state } => Event::Connection(state),
            Report::Drained => Event::Drained,
            Report::Message { message } => Event::Message(*message),
            Report::MessageState { id, state } => Event::MessageState { id, state },
            Report::MessageFailed { id, error } => Event::MessageFailed { id, error },
            Report::Unshown { tag, messages } => Event::Unshown { tag, messages },
            Report::Failed { tag, error } => Event::Failed { tag, error },
            Report::Warning(w) => Event::Warning(w),
            Report::Attachment { id, attachment } => Event::Attachment { id, attachment },
            Report::AttachmentSaved { tag, id, path } => Event::AttachmentSaved { tag, id, path },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_commands_answer_goes_back_to_it_and_not_to_the_screen() {
        let cmd = Request::FetchUnshown { tag: 1 }.into_command();
        let Command::FetchUnshown { tag } = cmd else {
            panic!("{cmd:?}")
        };
        assert_ne!(tag, 1, "the screen could take the answer for its own tag 1");
        let answer = Event::Unshown {
            tag,
            messages: vec![],
        };
        assert_eq!(
            Report::from_event(answer),
            Some(Report::Unshown {
                tag: 1,
                messages: vec![]
            })
        );
        // The screen's own answers do not cross the socket.
        let own = Event::Unshown {
            tag: 1,
            messages: vec![],
        };
        assert_eq!(Report::from_event(own), None);
    }

    #[test]
    fn a_warning_crosses_the_socket_with_its_contact_and_thread() {
        let warning = Warning::in_thread("a message from bob was unreadable", "bob", true);
        let report = Report::from_event(Event::Warning(warning.clone())).unwrap();
        let line = serde_json::to_string(&report).unwrap();
        let back: Report = serde_json::from_str(&line).unwrap();
        assert_eq!(back.into_event(), Event::Warning(warning));
        // One about no one says so, and a report from an older sotto (text only) still reads.
        let old: Report =
            serde_json::from_str(r#"{"report":"warning","text":"missed 3 updates"}"#).unwrap();
        assert_eq!(
            old.into_event(),
            Event::Warning(Warning::general("missed 3 updates"))
        );
    }

    #[test]
    fn commands_that_change_trust_or_contacts_do_not_cross_the_socket() {
        let accept = Command::AcceptChange {
            handle: "bob".into(),
        };
        assert_eq!(Request::from_command(accept), None);
        let block = Command::Block {
            tag: 1,
            handle: "bob".into(),
            blocked: true,
        };
        assert_eq!(Request::from_command(block), None);
    }
}
