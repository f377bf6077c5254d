//! The session manager: one task that owns the store, the Signal sessions and the relay
//! links, takes `Command`s and reports `Event`s.
//!
//! Runs on a thread of its own with a single-threaded runtime, because libsignal's store
//! futures are not `Send` and SQLite calls block. The TUI and the headless commands are its
//! users and know only `Command` and `Event`. Must not render anything or print to a terminal.
//! The outgoing path lives in `send`, the arriving path in `receive`; this file holds the
//! loop, the commands and the contact directory.

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use libsignal_protocol::{IdentityKeyPair, PublicKey, SenderCertificate, SignalProtocolError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::account::{self, PREKEY_BATCH, PREKEY_LOW};
use super::attachment::BlobTransport;
use super::attachment::transfer::Step;
use super::clock::Clock;
use super::conn::{Hello, Link, LinkError, LinkEvent};
use super::content::{self, Content};
use super::control;
use super::crypto;
use super::store::{
    Contact, ContactSummary, Expired, Message, MessageKind, MessageState, Registration, Store,
    StoreError,
};
use super::sweeper::{self, Deadlines};
use super::trust;

mod attach;
mod contacts;
mod group_send;
mod groups;
mod reads;
mod receipts;
mod receive;
mod rich;
mod search;
mod send;
mod typing;

pub use contacts::ContactChange;
pub use groups::{GroupError, MAX_MEMBERS};
pub use rich::{CHANGE_WINDOW_MS, Change, RichError, excerpt};
pub use search::SEARCH_LIMIT;

use crate::wire::{ClientFrame, ErrorCode, RelayFrame};
use receipts::Receipts;
use receive::Delivery;
use send::{Draft, Sent};

/// A sender certificate is renewed when it has less than this left.
const CERT_MARGIN_MS: u64 = 60 * 60 * 1000;

/// What the user (through the TUI or a headless command) asks of the manager.
#[derive(Debug)]
pub enum Command {
    /// Send `text` to `to` (a handle) in its normal or secret thread. `id` is the new message's
    /// id (a UUID the caller picks, so it can follow the message's events). `reply_to` names
    /// the message of the same thread it answers.
    Send {
        id: String,
        to: String,
        secret: bool,
        text: String,
        reply_to: Option<String>,
    },
    /// Send the file at `path` to `to` in its normal or secret thread, with an optional
    /// caption. `id` names the message, followed like a text (`Event::Attachment` reports the
    /// upload; `MessageFailed` if the file cannot be read or is over `max_attachment`).
    Attach {
        id: String,
        to: String,
        secret: bool,
        path: std::path::PathBuf,
        caption: Option<String>,
    },
    /// Fetch the file of message `id` now (one over `auto_download`, or one that failed).
    Download { tag: u64, id: String },
    /// Decrypt the file of message `id` to a private temporary copy (0600, removed when the
    /// session ends or the message expires) and report it (`Event::AttachmentOpened`).
    OpenAttachment { tag: u64, id: String },
    /// Write a plaintext copy of the file of message `id` to `dest` (a file, or a directory
    /// to keep its name in) and report where (`Event::AttachmentSaved`).
    SaveAttachment {
        tag: u64,
        id: String,
        dest: std::path::PathBuf,
    },
    /// Decode the picture of message `id` (a Ready image) scaled to fit `max_w` × `max_h`
    /// pixels, off the screen's thread, and report it (`Event::Preview`); with both 0, only
    /// its size is read (the placeholder of `images = false`). Nothing is reported when it
    /// cannot be shown: the screen keeps the file line.
    Preview { id: String, max_w: u32, max_h: u32 },
    /// React to `target` with `emoji` (None, or the emoji we already gave: take ours away).
    /// `id` names the reaction, which is followed like a message (`MessageState` once the
    /// relay has it, or `MessageFailed`).
    React {
        id: String,
        contact: String,
        secret: bool,
        target: String,
        emoji: Option<String>,
    },
    /// Replace the text of our own message `target` (within 24 hours of sending it).
    Edit {
        id: String,
        contact: String,
        secret: bool,
        target: String,
        text: String,
    },
    /// Delete `target`: here only, or (our own, within 24 hours) for everyone. A deletion
    /// here only reports `MessageRemoved` and sends nothing.
    Delete {
        id: String,
        contact: String,
        secret: bool,
        target: String,
        for_everyone: bool,
    },
    /// Look `handle` up in the directory and add it as a contact.
    AddContact { tag: u64, handle: String },
    /// Report the received messages not yet shown to the user.
    FetchUnshown { tag: u64 },
    /// The user has now seen these messages.
    MarkShown { ids: Vec<String> },
    /// Report the safety number with `handle` (`Event::SafetyNumber`).
    Verify { handle: String },
    /// Mark `handle` verified or not, then report the safety number again.
    SetVerified { handle: String, verified: bool },
    /// Accept `handle`'s changed key, then report the safety number again.
    AcceptChange { handle: String },
    /// Report every contact with unread counts and timers (`Event::Contacts`).
    ListContacts,
    /// Report up to `limit` messages of a thread older than `before` (`Event::Page`).
    LoadPage {
        contact: String,
        secret: bool,
        before: Option<i64>,
        limit: usize,
    },
    /// Set a thread's disappearing timer (seconds; None: off) and tell the peer. `id` names
    /// the timer-change line, so the caller can follow it like a message.
    SetTimer {
        id: String,
        contact: String,
        secret: bool,
        timer: Option<u32>,
    },
    /// Block (or unblock) a contact (`Event::ContactChanged`, or `Failed`).
    Block {
        tag: u64,
        handle: String,
        blocked: bool,
    },
    /// Forget a contact with both threads (`Event::ContactChanged`, or `Failed`).
    RemoveContact { tag: u64, handle: String },
    /// Send a failed message of ours again (its states follow; `Failed` if it cannot go).
    Retry { tag: u64, id: String },
    /// Search the texts of every thread, or of one (a handle and whether it is the secret
    /// thread), for the words of `query` (`Event::SearchResults`, or `Failed`).
    Search {
        tag: u64,
        query: String,
        thread: Option<(String, bool)>,
    },
    /// The user is typing in `to`'s normal or secret thread (`active`), or stopped. Sent
    /// online only, never queued or retried; nothing when `Settings::typing` is off.
    Typing {
        to: String,
        secret: bool,
        active: bool,
    },
    /// Create or change a group, or list its members (`Event::GroupChanged`,
    /// `Event::GroupMembers`, or `Failed`). A group's threads are addressed like a contact's,
    /// by its handle: `#` and its name.
    Group { tag: u64, action: GroupAction },
}

/// What `Command::Group` asks. `group` is the group's handle (`#name`); members are named by
/// their handles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupAction {
    Create { name: String, members: Vec<String> },
    Add { group: String, handle: String },
    Remove { group: String, handle: String },
    Leave { group: String },
    Rename { group: String, name: String },
    Members { group: String },
}

/// One member of a group as `Event::GroupMembers` lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GroupMember {
    pub handle: String,
    pub admin: bool,
}

/// What the user chose to tell peers, and to hear from them (`read_receipts`, `typing` in
/// the config file). Off means neither sent nor taken from peers, as Signal does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub read_receipts: bool,
    pub typing: bool,
    /// Largest file sent, in bytes (`max_attachment`).
    pub max_attachment: u64,
    /// Files up to this size are fetched as soon as they arrive (`auto_download`).
    pub auto_download: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            read_receipts: true,
            typing: true,
            max_attachment: crate::client::attachment::DEFAULT_MAX_ATTACHMENT,
            auto_download: crate::client::attachment::DEFAULT_AUTO_DOWNLOAD,
        }
    }
}

/// The state of the relay connection, as the user should see it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ConnState {
    Connecting,
    Online,
    Offline { reason: String, retry_in: Duration },
}

/// Something the user should know that no command asked for, and whose thread it belongs
/// to: a screen shows it there, never by guessing from the text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Warning {
    pub text: String,
    /// The contact (or group, by its handle) it is about; None: about no one in particular.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    /// Which of the contact's threads it belongs to (`true`: the secret one); None: to the
    /// contact as a whole, or to no one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<bool>,
}

impl Warning {
    /// About no one in particular (the relay, the profile's storage).
    pub fn general(text: impl Into<String>) -> Warning {
        Warning {
            text: text.into(),
            contact: None,
            secret: None,
        }
    }

    /// About `contact` as a whole (their key, their mailbox).
    pub fn about(text: impl Into<String>, contact: &str) -> Warning {
        Warning {
            contact: Some(contact.to_string()),
            ..Warning::general(text)
        }
    }

    /// About one of `contact`'s threads.
    pub fn in_thread(text: impl Into<String>, contact: &str, secret: bool) -> Warning {
        Warning {
            secret: Some(secret),
            ..Warning::about(text, contact)
        }
    }

    /// A key offered for `handle` that they never endorsed was refused (`event` says how):
    /// what an attack by the relay, or by someone between us and it, looks like.
    pub(crate) fn refused_key(handle: &str, event: trust::KeyEvent) -> Warning {
        Warning::about(
            format!(
                "{handle}: {} (possible attack; `sotto verify {handle}` shows the key history)",
                event.describe()
            ),
            handle,
        )
    }
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// What the manager reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Connection(ConnState),
    /// A message was stored: one the user sent, or one that arrived.
    Message(Message),
    MessageState {
        id: String,
        state: MessageState,
    },
    /// A message could not be sent and will not be retried.
    MessageFailed {
        id: String,
        error: String,
    },
    ContactAdded {
        tag: u64,
        contact: Contact,
    },
    Contacts(Vec<ContactSummary>),
    /// Messages of a thread older than `before`, oldest first; fewer than asked means the
    /// start of the thread was reached.
    Page {
        contact: String,
        secret: bool,
        before: Option<i64>,
        messages: Vec<Message>,
        complete: bool,
    },
    /// A thread's timer changed, by us or by the peer.
    TimerSet {
        contact: String,
        secret: bool,
        timer: Option<u32>,
    },
    /// The countdowns of these shown messages started: (id, expires_at in Unix ms).
    Expiring(Vec<(String, u64)>),
    /// The sweeper deleted these messages.
    Expired(Vec<Expired>),
    SafetyNumber(trust::SafetyNumber),
    Unshown {
        tag: u64,
        messages: Vec<Message>,
    },
    /// Everything the relay had queued when we connected has been received.
    Drained,
    /// A command failed; `tag` names it.
    Failed {
        tag: u64,
        error: String,
    },
    /// A contact was blocked, unblocked or removed, as `tag` asked.
    ContactChanged {
        tag: u64,
        handle: String,
        change: ContactChange,
    },
    /// Something the user should know that belongs to no command.
    Warning(Warning),
    /// `contact` is typing in their normal or secret thread with us (`active`), or stopped
    /// (they said so, their last word is `typing::SHOWN_FOR` old, or their message came).
    Typing {
        contact: String,
        secret: bool,
        active: bool,
    },
    /// A stored message changed: a reaction, an edit or a deletion for everyone, ours or the
    /// peer's (`change` says which).
    MessageChanged {
        message: Message,
        change: Box<Change>,
    },
    /// A message was deleted on this device only (delete for me).
    MessageRemoved(Expired),
    /// The file of message `id` moved on (progress, finished, failed).
    Attachment {
        id: String,
        attachment: crate::client::attachment::Attachment,
    },
    /// `Command::OpenAttachment`'s private copy, ready for the system's opener.
    AttachmentOpened {
        tag: u64,
        id: String,
        path: std::path::PathBuf,
    },
    /// `Command::SaveAttachment` wrote the file here.
    AttachmentSaved {
        tag: u64,
        id: String,
        path: std::path::PathBuf,
    },
    /// `Command::Preview`'s picture: its size in pixels, and the scaled picture (None when
    /// only the size was asked).
    Preview {
        id: String,
        width: u32,
        height: u32,
        image: Option<std::sync::Arc<image::RgbaImage>>,
    },
    /// The texts `Command::Search` found, newest first (at most `SEARCH_LIMIT`).
    SearchResults {
        tag: u64,
        results: Vec<super::store::SearchHit>,
    },
    /// `GroupAction::Members`' answer: the group's members, ourselves included.
    GroupMembers {
        tag: u64,
        group: String,
        members: Vec<GroupMember>,
    },
    /// A group was created or changed (`change` says how, as a sentence); `tag` when our
    /// own command did it. `group` is its handle now (a rename gives the new one).
    GroupChanged {
        tag: Option<u64>,
        group: String,
        change: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Account(#[from] account::AccountError),
    #[error(transparent)]
    Signal(#[from] SignalProtocolError),
    #[error(
        "no account named {0:?} at the relay; check the spelling, or ask them for their handle"
    )]
    UnknownHandle(String),
    #[error("the relay's trust root in this profile is unreadable; the profile is damaged")]
    BadTrustRoot,
    #[error("a message cannot be empty")]
    EmptyText,
    #[error("the message is {0} bytes long; the limit is {max} bytes, so split it", max = content::MAX_TEXT_BYTES)]
    TooLong(usize),
    #[error(
        "{handle}'s safety number has changed; secret messages to them are blocked until you check the new one: `sotto verify {handle}`, then `sotto verify {handle} --accept-change` (or /verify in the chat screen)"
    )]
    IdentityChanged { handle: String },
    #[error(
        "the relay offered {handle}'s session keys under a different identity key than the one you hold for them; nothing was sent. This is what a man in the middle or a dishonest relay looks like: compare safety numbers with {handle} (`sotto verify {handle}`), and use a relay you trust over wss://"
    )]
    BundleRefused { handle: String },
    #[error(
        "the relay refused the message saying {handle}'s key changed, but it showed no change {handle}'s old key signed; the new key was refused and nothing was sent. `sotto verify {handle}` shows the key history"
    )]
    KeyRefused { handle: String },
    #[error("the manager has stopped")]
    Stopped,
    #[error("a message with this id exists already")]
    DuplicateId,
    #[error("{0:?} is not among your contacts; add them with /add {0}")]
    NotAContact(String),
    #[error("{0:?} is your own handle; a contact is someone else")]
    OwnHandle(String),
    #[error("you blocked {0}; unblock them first (/unblock {0}, or `sotto block --undo {0}`)")]
    Blocked(String),
    #[error("only a message of yours that failed can be sent again")]
    NotRetryable,
    #[error(transparent)]
    Rich(#[from] rich::RichError),
    #[error(transparent)]
    Timer(#[from] crate::timer::TimerError),
    #[error(transparent)]
    Trust(#[from] trust::TrustError),
    #[error(transparent)]
    Query(#[from] super::search::QueryError),
    #[error(transparent)]
    Attach(#[from] super::attachment::files::AttachError),
    #[error(transparent)]
    Group(#[from] groups::GroupError),
}

/// The caller's side of a running manager.
pub struct ManagerHandle {
    pub commands: mpsc::Sender<Command>,
    pub events: mpsc::Receiver<Event>,
    cancel: CancellationToken,
    thread: Option<JoinHandle<()>>,
}

impl ManagerHandle {
    /// A handle whose work happens on `thread`, which ends once `commands` is closed and
    /// everything queued on it was handed on (the control socket's client).
    pub(crate) fn joined(
        commands: mpsc::Sender<Command>,
        events: mpsc::Receiver<Event>,
        thread: JoinHandle<()>,
    ) -> ManagerHandle {
        ManagerHandle {
            commands,
            events,
            cancel: CancellationToken::new(),
            thread: Some(thread),
        }
    }

    /// Stops the manager and waits for its thread; everything it stored is committed.
    pub fn shutdown(mut self) {
        self.stop();
    }

    /// Closes the command channel: the manager finishes the commands already queued, then
    /// stops its links and its thread ends.
    fn stop(&mut self) {
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.commands, closed));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.cancel.cancel();
    }
}

impl Drop for ManagerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts the manager of the registered profile in `dir` on a thread of its own.
/// `relay_url` overrides the relay recorded at init.
pub fn spawn(dir: &Path, relay_url: Option<String>) -> Result<ManagerHandle, ClientError> {
    spawn_with(dir, relay_url, false)
}

/// As `spawn`; `insecure_transport` allows a plain `ws://` relay that is not on this machine.
/// Both links check the relay's TLS certificate against the profile's pin.
pub fn spawn_with(
    dir: &Path,
    relay_url: Option<String>,
    insecure_transport: bool,
) -> Result<ManagerHandle, ClientError> {
    spawn_configured(dir, relay_url, insecure_transport, Settings::default())
}

/// As `spawn_with`, with the user's `settings` for read receipts and typing.
pub fn spawn_configured(
    dir: &Path,
    relay_url: Option<String>,
    insecure_transport: bool,
    settings: Settings,
) -> Result<ManagerHandle, ClientError> {
    spawn_with_blobs(dir, relay_url, insecure_transport, settings, None)
}

/// As `spawn_configured`, with the blob store files travel through (`None`: the relay's,
/// over the session's links).
pub fn spawn_with_blobs(
    dir: &Path,
    relay_url: Option<String>,
    insecure_transport: bool,
    settings: Settings,
    blobs: Option<Arc<dyn BlobTransport>>,
) -> Result<ManagerHandle, ClientError> {
    let lock = super::store::lock_profile(dir)?;
    let dir = dir.to_path_buf();
    let store = Store::open(&dir)?;
    let mut reg = store.registration()?;
    let endpoint = account::endpoint(&store, relay_url.as_deref(), insecure_transport)?;
    if let Some(url) = relay_url {
        reg.relay_url = url;
    }
    let (identity, registration_id) = account::identity(&store)?;
    let trust_root =
        PublicKey::deserialize(&reg.trust_root).map_err(|_| ClientError::BadTrustRoot)?;
    let (cmd_tx, cmd_rx) = mpsc::channel(256);
    let cmd_tx_weak = cmd_tx.downgrade();
    let (evt_tx, evt_rx) = mpsc::channel(1024);
    let cancel = CancellationToken::new();
    let token = cancel.clone();
    let thread = std::thread::Builder::new()
        .name("sotto-manager".into())
        .spawn(move || {
            // Held for as long as this thread drives the profile.
            let _lock = lock;
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = evt_tx.try_send(Event::Warning(Warning::general(format!(
                        "cannot start: {e}"
                    ))));
                    return;
                }
            };
            rt.block_on(async move {
                // Room in the WAL for the commits to come (see `db::reserve_wal`), made on a
                // connection of its own so that the first screen's reads do not wait for it.
                let room_dir = dir.clone();
                tokio::task::spawn_blocking(move || {
                    if let Err(e) = Store::open(&room_dir).and_then(|s| s.reserve_wal()) {
                        tracing::warn!(error = %describe(&e), "no room made in the WAL");
                    }
                });
                let (link_tx, link_rx) = mpsc::channel(256);
                let hello = Hello::Account {
                    account_id: reg.account_id.clone(),
                    identity,
                    trust_root: reg.trust_root.clone(),
                };
                let link = Arc::new(Link::spawn(endpoint.clone(), hello, link_tx, token.clone()));
                // The anonymous link's own state changes are not the user's concern: a sealed
                // send that finds it down fails with `Offline` and is retried.
                let (anon_tx, anon_rx) = mpsc::channel(16);
                let anon = Arc::new(Link::spawn(
                    endpoint,
                    Hello::Anonymous {
                        trust_root: reg.trust_root.clone(),
                    },
                    anon_tx,
                    token.clone(),
                ));
                let clock = Clock::system();
                let deadlines = Deadlines::default();
                let (expired_tx, expired_rx) = mpsc::channel(16);
                let sweeper_dir = dir.clone();
                let (sweep_clock, sweep_deadlines, sweep_cancel) =
                    (clock, deadlines.clone(), token.clone());
                tokio::spawn(async move {
                    let r = sweeper::run(
                        &sweeper_dir,
                        sweep_clock,
                        sweep_deadlines,
                        expired_tx,
                        sweep_cancel,
                    )
                    .await;
                    if let Err(e) = r {
                        tracing::error!(error = %describe(&e), "the sweeper stopped");
                    }
                });
                let (sent_tx, sent_rx) = mpsc::unbounded_channel();
                let (transfer_tx, transfer_rx) = mpsc::unbounded_channel();
                let (later_tx, later_rx) = mpsc::unbounded_channel();
                let blobs = blobs.unwrap_or_else(|| {
                    Arc::new(super::attachment::LinkBlobs::new(
                        link.clone(),
                        anon.clone(),
                    )) as Arc<dyn BlobTransport>
                });
                let tap = control::Tap::new();
                // A weak sender: the socket must not keep the manager running once its own
                // user has closed the command channel.
                let control = tokio::spawn(control::serve(
                    dir.clone(),
                    cmd_tx_weak,
                    tap.clone(),
                    token.clone(),
                ));
                let mut m = Manager {
                    store,
                    identity,
                    registration_id,
                    reg,
                    certs: crypto::CheckedCerts::new(trust_root),
                    link,
                    anon,
                    cert: None,
                    events: evt_tx,
                    tap: tap.clone(),
                    awaiting_sealed_link: Vec::new(),
                    receipts: Receipts::default(),
                    reads: Receipts::default(),
                    typing: typing::Peers::default(),
                    settings,
                    clock,
                    deadlines,
                    in_flight: HashSet::new(),
                    sent: sent_tx,
                    retry_at: None,
                    retry_backoff: RETRY_START,
                    last_top_up: None,
                    actions: HashSet::new(),
                    wipe_wal: std::cell::Cell::new(false),
                    dir: dir.clone(),
                    blobs,
                    transfers: Default::default(),
                    transfer_tx,
                    later: later_tx,
                    opened: None,
                };
                m.orphan_files();
                m.resume_transfers();
                let channels = Channels {
                    commands: cmd_rx,
                    link: link_rx,
                    anon: anon_rx,
                    expired: expired_rx,
                    sent: sent_rx,
                    transfers: transfer_rx,
                    later: later_rx,
                };
                m.run(channels).await;
                token.cancel();
                // The socket file goes with the session.
                let _ = control.await;
            });
        })
        .map_err(|_| ClientError::Stopped)?;
    Ok(ManagerHandle {
        commands: cmd_tx,
        events: evt_rx,
        cancel,
        thread: Some(thread),
    })
}

/// An error and its causes, "outer: inner: innermost", for an event the user will read.
pub fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

struct Manager {
    store: Store,
    identity: IdentityKeyPair,
    registration_id: u32,
    reg: Registration,
    /// The relay's pinned trust root, and sender certificates already checked against it.
    certs: crypto::CheckedCerts,
    link: Arc<Link>,
    anon: Arc<Link>,
    cert: Option<SenderCertificate>,
    events: mpsc::Sender<Event>,
    /// The same events for headless commands joining through the control socket.
    tap: control::Tap,
    /// Secret changes made before the sealed link was up (see `command`).
    awaiting_sealed_link: Vec<Command>,
    /// Delivery receipts owed, and when they go out.
    receipts: Receipts,
    /// Read receipts owed, paced as delivery receipts are.
    reads: Receipts,
    /// Peers typing now, and when that stops showing.
    typing: typing::Peers,
    settings: Settings,
    clock: Clock,
    /// Where new expiry times go, for the sweeper.
    deadlines: Deadlines,
    /// Our messages whose requests the relay has not answered yet.
    in_flight: HashSet<String>,
    /// Where the relay's answers to our messages' requests come back to.
    sent: mpsc::UnboundedSender<Sent>,
    /// When messages the relay refused for a quota or a rate are sent again, and how long
    /// the next wait is (doubling while refusals go on).
    retry_at: Option<tokio::time::Instant>,
    retry_backoff: Duration,
    /// The last upload of one-time prekeys: at most one a minute.
    last_top_up: Option<tokio::time::Instant>,
    /// Our reactions, edits and deletions whose requests the relay has not answered yet.
    actions: HashSet<String>,
    /// A text was overwritten inside the open burst: the WAL is truncated after its commit.
    wipe_wal: std::cell::Cell<bool>,
    /// The profile directory (its `attachments/` holds the encrypted files).
    dir: std::path::PathBuf,
    /// The relay's blob store, for files.
    blobs: Arc<dyn BlobTransport>,
    /// Transfers running now, by their message's `seq`; cancelled if the message goes.
    transfers: std::cell::RefCell<HashMap<i64, CancellationToken>>,
    /// Where transfer tasks report.
    transfer_tx: super::attachment::transfer::Reports,
    /// Events of work done off the loop (an opened or saved copy).
    later: mpsc::UnboundedSender<Event>,
    /// This session's private directory of opened copies, removed when it ends.
    opened: Option<tempfile::TempDir>,
}

/// What the manager's loop listens to.
struct Channels {
    commands: mpsc::Receiver<Command>,
    link: mpsc::Receiver<LinkEvent>,
    anon: mpsc::Receiver<LinkEvent>,
    expired: mpsc::Receiver<Vec<Expired>>,
    sent: mpsc::UnboundedReceiver<Sent>,
    transfers: mpsc::UnboundedReceiver<(i64, Step)>,
    later: mpsc::UnboundedReceiver<Event>,
}

/// The first wait before messages refused for a quota or a rate are sent again, and the
/// longest.
const RETRY_START: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(300);
/// Uploads of one-time prekeys at most this often, and unused ones kept at most (each kind).
const TOP_UP_EVERY: Duration = Duration::from_secs(60);
const KEEP_ONE_TIME: u32 = 2 * PREKEY_BATCH;

/// How long a stopping manager waits for the relay to take the receipts it still owed.
const EXIT_WAIT: Duration = Duration::from_secs(2);

/// Sleeps until `at`; forever if there is no `at`.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Takes `first` and the items queued right behind it in `rx`, for as long as `pick` takes
/// them and up to `MAX_BURST`; returns those it took and the one it refused, if any.
fn gather<T, I>(
    first: T,
    rx: &mut mpsc::Receiver<T>,
    pick: impl Fn(T) -> ControlFlow<T, I>,
) -> (Vec<I>, Option<T>) {
    let mut taken = Vec::new();
    let mut next = Some(first);
    while let Some(item) = next.take() {
        match pick(item) {
            ControlFlow::Continue(i) => taken.push(i),
            ControlFlow::Break(refused) => return (taken, Some(refused)),
        }
        if taken.len() < MAX_BURST {
            next = rx.try_recv().ok();
        }
    }
    (taken, None)
}

/// At most this many arriving envelopes, or messages to send, handled under one commit; the
/// relay's delivery window (64) bounds a burst of arrivals in practice.
const MAX_BURST: usize = 256;

impl Manager {
    async fn run(&mut self, channels: Channels) {
        let Channels {
            mut commands,
            mut link,
            mut anon,
            mut expired,
            mut sent,
            mut transfers,
            mut later,
        } = channels;
        self.emit(Event::Connection(ConnState::Connecting)).await;
        loop {
            let receipts_due = self.receipts.due();
            let reads_due = self.reads.due();
            let typing_due = self.typing.due();
            let retry_due = self.retry_at;
            tokio::select! {
                biased;
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.commands(cmd, &mut commands).await,
                    None => break,
                },
                ev = link.recv() => match ev {
                    Some(ev) => self.link_events(ev, &mut link).await,
                    None => break,
                },
                // The manager holds a sender, so this channel never closes.
                Some(done) = sent.recv() => {
                    let mut answers = vec![done];
                    while answers.len() < MAX_BURST
                        && let Ok(more) = sent.try_recv()
                    {
                        answers.push(more);
                    }
                    self.on_sent(answers).await
                }
                Some(gone) = expired.recv() => self.emit(Event::Expired(gone)).await,
                // The manager holds senders of both, so neither closes.
                Some((seq, step)) = transfers.recv() => self.on_transfer(seq, step).await,
                Some(ev) = later.recv() => self.emit(ev).await,
                () = sleep_until(receipts_due) => {
                    let due = self.receipts.take_due(tokio::time::Instant::now());
                    for reply in self.send_receipts(due, Content::receipt).await {
                        tokio::spawn(send::receipt_answered(reply));
                    }
                }
                () = sleep_until(reads_due) => {
                    let due = self.reads.take_due(tokio::time::Instant::now());
                    for reply in self.send_receipts(due, Content::read).await {
                        tokio::spawn(send::receipt_answered(reply));
                    }
                }
                () = sleep_until(typing_due) => self.typing_expired().await,
                () = sleep_until(retry_due) => {
                    self.retry_at = None;
                    self.flush_unsent().await;
                }
                ev = anon.recv() => match ev {
                    // Sealed sends that found the anonymous link down go out now.
                    Some(LinkEvent::Online) => {
                        self.resume_transfers();
                        self.flush_unsent().await;
                        for cmd in std::mem::take(&mut self.awaiting_sealed_link) {
                            self.command(cmd).await;
                        }
                    }
                    Some(_) => {}
                    None => break,
                },
            }
        }
        // Receipts owed go out before the manager stops, or the peers would never see those
        // messages delivered: the relay will not deliver them again once they are acked.
        // A relay that does not answer must not hold the user's quit up for long.
        let owed = self.receipts.take_all();
        let mut replies = self.send_receipts(owed, Content::receipt).await;
        let read = self.reads.take_all();
        replies.extend(self.send_receipts(read, Content::read).await);
        let answered = async {
            for reply in replies {
                send::receipt_answered(reply).await;
            }
        };
        if tokio::time::timeout(EXIT_WAIT, answered).await.is_err() {
            tracing::info!("leaving without the relay's answer to some delivery receipts");
        }
    }

    async fn emit(&self, e: Event) {
        // Whatever deleted messages, their files go before anyone hears of it.
        if matches!(
            e,
            Event::Expired(_)
                | Event::MessageRemoved(_)
                | Event::ContactChanged { .. }
                | Event::MessageChanged { .. }
        ) {
            self.files_gone();
        }
        self.tap.event(&e);
        let _ = self.events.send(e).await;
    }

    async fn command(&mut self, cmd: Command) {
        // A secret change (reaction, edit, deletion for everyone) is sent once, never queued:
        // one made while the relay is reachable but the sealed link is still coming up (just
        // after start) waits for that link instead of failing.
        let sealed_change = matches!(
            &cmd,
            Command::React { secret: true, .. }
                | Command::Edit { secret: true, .. }
                | Command::Delete {
                    secret: true,
                    for_everyone: true,
                    ..
                }
        );
        if sealed_change && !self.anon.is_online() && self.link.is_online() {
            self.awaiting_sealed_link.push(cmd);
            return;
        }
        if self.refused_for_group(&cmd).await {
            return;
        }
        match cmd {
            Command::Attach {
                id,
                to,
                secret,
                path,
                caption,
            } => self.attach(id, to, secret, path, caption).await,
            Command::Download { tag, id } => self.download(tag, id).await,
            Command::OpenAttachment { tag, id } => self.open(tag, id).await,
            Command::Preview { id, max_w, max_h } => self.preview(id, max_w, max_h),
            Command::SaveAttachment { tag, id, dest } => self.save(tag, id, dest).await,
            Command::Send {
                id,
                to,
                secret,
                text,
                reply_to,
            } => {
                self.send_all(vec![Draft {
                    id,
                    to,
                    secret,
                    text,
                    reply_to,
                }])
                .await
            }
            Command::React {
                id,
                contact,
                secret,
                target,
                emoji,
            } => self.react(id, contact, secret, target, emoji).await,
            Command::Edit {
                id,
                contact,
                secret,
                target,
                text,
            } => self.edit(id, contact, secret, target, text).await,
            Command::Delete {
                id,
                contact,
                secret,
                target,
                for_everyone,
            } => self.delete(id, contact, secret, target, for_everyone).await,
            Command::AddContact { tag, handle } => match self.contact_by_handle(&handle).await {
                Ok(contact) => self.emit(Event::ContactAdded { tag, contact }).await,
                Err(e) => {
                    self.emit(Event::Failed {
                        tag,
                        error: describe(&e),
                    })
                    .await
                }
            },
            Command::FetchUnshown { tag } => match self.store.unshown() {
                Ok(messages) => self.emit(Event::Unshown { tag, messages }).await,
                Err(e) => {
                    self.emit(Event::Failed {
                        tag,
                        error: describe(&e),
                    })
                    .await
                }
            },
            Command::ListContacts => match self.store.summaries() {
                Ok(list) => self.emit(Event::Contacts(list)).await,
                Err(e) => {
                    self.emit(Event::Warning(Warning::general(describe(&e))))
                        .await
                }
            },
            Command::LoadPage {
                contact,
                secret,
                before,
                limit,
            } => match self.page(&contact, secret, before, limit) {
                Ok(messages) => {
                    let complete = messages.len() < limit;
                    self.emit(Event::Page {
                        contact,
                        secret,
                        before,
                        messages,
                        complete,
                    })
                    .await
                }
                Err(e) => {
                    self.emit(Event::Warning(Warning::in_thread(
                        describe(&e),
                        &contact,
                        secret,
                    )))
                    .await
                }
            },
            Command::SetTimer {
                id,
                contact,
                secret,
                timer,
            } => self.change_timer(id, contact, secret, timer).await,
            Command::Verify { handle } => self.report_safety_number(&handle, Ok(())).await,
            Command::SetVerified { handle, verified } => {
                let done = trust::set_verified(&self.store, &handle, verified);
                self.report_safety_number(&handle, done).await
            }
            Command::AcceptChange { handle } => {
                let done = trust::accept_change(&self.store, &handle, now_ms()).map(|_| ());
                let accepted = done.is_ok();
                self.report_safety_number(&handle, done).await;
                if accepted && let Ok(c) = self.known(&handle) {
                    self.resend_held(&c.account_id).await;
                }
            }
            Command::Block {
                tag,
                handle,
                blocked,
            } => self.block(tag, handle, blocked).await,
            Command::RemoveContact { tag, handle } => self.remove(tag, handle).await,
            Command::Retry { tag, id } => self.retry(tag, id).await,
            Command::Search { tag, query, thread } => self.search(tag, query, thread).await,
            Command::MarkShown { ids } => match self.store.mark_shown(&ids, self.clock.now_ms()) {
                Ok(shown) => {
                    self.owe_reads(shown.read);
                    if !shown.started.is_empty() {
                        for (_, at) in &shown.started {
                            self.deadlines.add(*at);
                        }
                        self.emit(Event::Expiring(shown.started)).await
                    }
                }
                Err(e) => {
                    self.emit(Event::Warning(Warning::general(describe(&e))))
                        .await
                }
            },
            Command::Typing { to, secret, active } => self.send_typing(&to, secret, active).await,
            Command::Group { tag, action } => self.group_command(tag, action).await,
        }
    }

    /// After `done`, reports the safety number with `handle` (or what went wrong).
    async fn report_safety_number(&self, handle: &str, done: Result<(), trust::TrustError>) {
        match done.and_then(|()| trust::safety_number(&self.store, handle)) {
            Ok(n) => self.emit(Event::SafetyNumber(n)).await,
            Err(e) => {
                self.emit(Event::Warning(Warning::about(describe(&e), handle)))
                    .await
            }
        }
    }

    fn known(&self, handle: &str) -> Result<Contact, ClientError> {
        self.store
            .contact_by_handle(handle)?
            .ok_or_else(|| ClientError::NotAContact(handle.to_string()))
    }

    fn page(
        &self,
        handle: &str,
        secret: bool,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Message>, ClientError> {
        let c = self.known(handle)?;
        Ok(self.store.page(&c.account_id, secret, before, limit)?)
    }

    /// Sets a thread's timer, records the change as a line in the thread and sends it to
    /// the peer like a message (kept and retried if the relay is out of reach).
    async fn change_timer(&mut self, id: String, handle: String, secret: bool, timer: Option<u32>) {
        let result = async {
            if let Some(t) = timer {
                crate::timer::check(t)?;
            }
            let contact = self.contact_by_handle(&handle).await?;
            self.store.set_timer(&contact.account_id, secret, timer)?;
            self.originate(
                id.clone(),
                &contact,
                secret,
                MessageKind::Timer,
                String::new(),
                timer,
                None,
            )
        }
        .await;
        match result {
            Ok(line) => {
                self.emit(Event::TimerSet {
                    contact: line.contact.clone(),
                    secret,
                    timer,
                })
                .await;
                self.emit(Event::Message(line.clone())).await;
                self.transmit_all(std::slice::from_ref(&line)).await;
            }
            Err(e) => {
                self.emit(Event::MessageFailed {
                    id,
                    error: describe(&e),
                })
                .await
            }
        }
    }

    /// Stores a message of ours (state `sending`). A text takes the thread's timer and starts
    /// counting down now.
    #[allow(clippy::too_many_arguments)]
    fn originate(
        &mut self,
        id: String,
        contact: &Contact,
        secret: bool,
        kind: MessageKind,
        text: String,
        timer: Option<u32>,
        reply: Option<super::store::Quote>,
    ) -> Result<Message, ClientError> {
        if contact.blocked {
            return Err(ClientError::Blocked(contact.handle.clone()));
        }
        let now = self.clock.now_ms();
        let expires_at = match kind {
            MessageKind::Text => timer.map(|t| now + u64::from(t) * 1000),
            _ => None,
        };
        let mut m = Message {
            seq: 0,
            id,
            contact: contact.handle.clone(),
            secret,
            outgoing: true,
            text,
            sent_at: now,
            state: MessageState::Sending,
            kind,
            timer,
            expires_at,
            reply,
            reactions: Vec::new(),
            edited: false,
            deleted: false,
            attachment: None,
            author: None,
        };
        // The caller picked a fresh UUID; a repeat is a caller bug, reported as such.
        m.seq = self
            .store
            .insert_message(&contact.account_id, &m, now)?
            .ok_or(ClientError::DuplicateId)?;
        if let Some(at) = expires_at {
            self.deadlines.add(at);
        }
        Ok(m)
    }

    /// Handles `first` and, if it is a delivery, the deliveries queued right behind it, as
    /// one burst under one commit.
    async fn link_events(&mut self, first: LinkEvent, link: &mut mpsc::Receiver<LinkEvent>) {
        let (burst, rest) = gather(first, link, |ev| match ev {
            LinkEvent::Frame(RelayFrame::Deliver {
                id,
                payload,
                received_at,
                online_only,
            }) => ControlFlow::Continue(Delivery {
                id,
                received_at,
                payload,
                online_only,
            }),
            other => ControlFlow::Break(other),
        });
        if !burst.is_empty() {
            self.deliver_all(burst).await;
        }
        if let Some(ev) = rest {
            self.link_event(ev).await;
        }
    }

    /// Handles `first` and, if it is a send, the sends queued right behind it, as one burst
    /// under one commit.
    async fn commands(&mut self, first: Command, commands: &mut mpsc::Receiver<Command>) {
        let (drafts, rest) = gather(first, commands, |cmd| match cmd {
            Command::Send {
                id,
                to,
                secret,
                text,
                reply_to,
            } => ControlFlow::Continue(Draft {
                id,
                to,
                secret,
                text,
                reply_to,
            }),
            other => ControlFlow::Break(other),
        });
        if !drafts.is_empty() {
            self.send_all(drafts).await;
        }
        if let Some(cmd) = rest {
            self.command(cmd).await;
        }
    }

    async fn link_event(&mut self, ev: LinkEvent) {
        match ev {
            LinkEvent::Online => {
                self.emit(Event::Connection(ConnState::Online)).await;
                self.resume_transfers();
                self.flush_unsent().await;
            }
            LinkEvent::Offline { reason, retry_in } => {
                self.emit(Event::Connection(ConnState::Offline { reason, retry_in }))
                    .await;
            }
            LinkEvent::Frame(RelayFrame::Deliver {
                id,
                payload,
                received_at,
                online_only,
            }) => {
                self.deliver_all(vec![Delivery {
                    id,
                    received_at,
                    payload,
                    online_only,
                }])
                .await
            }
            LinkEvent::Frame(RelayFrame::Drained) => self.emit(Event::Drained).await,
            LinkEvent::Frame(RelayFrame::PreKeyCount { ec, kyber }) => {
                if (ec < PREKEY_LOW || kyber < PREKEY_LOW)
                    && let Err(e) = self.top_up().await
                {
                    tracing::warn!(error = %e, "prekey top-up failed");
                }
            }
            LinkEvent::Frame(other) => tracing::debug!(?other, "unsolicited frame"),
        }
    }

    async fn top_up(&mut self) -> Result<(), ClientError> {
        let now = tokio::time::Instant::now();
        if self
            .last_top_up
            .is_some_and(|at| now.duration_since(at) < TOP_UP_EVERY)
        {
            // The next count the relay sends after a minute tops up.
            return Ok(());
        }
        self.last_top_up = Some(now);
        let (prekeys, kyber) = account::mint_one_time(
            &self.store,
            PREKEY_BATCH,
            SystemTime::now(),
            &mut rand::rng(),
        )
        .await?;
        self.link
            .request(|req| ClientFrame::UploadPreKeys {
                req,
                prekeys,
                kyber,
            })
            .await?;
        tracing::info!("uploaded a batch of one-time prekeys");
        match account::prune_one_time(&self.store, KEEP_ONE_TIME) {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "pruned old unused one-time prekeys"),
            Err(e) => tracing::warn!(error = %e, "cannot prune one-time prekeys"),
        }
        Ok(())
    }

    /// The contact with `handle`, from the store or else from the directory.
    async fn contact_by_handle(&mut self, handle: &str) -> Result<Contact, ClientError> {
        if handle == self.reg.handle {
            return Err(ClientError::OwnHandle(handle.to_string()));
        }
        if let Some(c) = self.store.contact_by_handle(handle)? {
            return Ok(c);
        }
        if !crate::wire::valid_handle(handle) {
            return Err(ClientError::UnknownHandle(handle.to_string()));
        }
        let h = handle.to_string();
        self.lookup(move |req| ClientFrame::Lookup {
            req,
            handle: Some(h),
            account_id: None,
        })
        .await
        .map_err(|e| match e {
            ClientError::Link(LinkError::Refused {
                code: ErrorCode::NotFound,
                ..
            }) => ClientError::UnknownHandle(handle.to_string()),
            e => e,
        })
    }

    async fn contact_by_id(&mut self, account_id: &str) -> Result<Contact, ClientError> {
        if let Some(c) = self.store.contact_by_id(account_id)? {
            return Ok(c);
        }
        let id = account_id.to_string();
        self.lookup(move |req| ClientFrame::Lookup {
            req,
            handle: None,
            account_id: Some(id),
        })
        .await
    }

    /// Asks the directory about an account and takes what it says into the contact's record.
    /// A key other than the one the contact holds is taken only as a change the client has
    /// checked itself (`identity::path`): endorsed by the old key, or an operator's reset,
    /// and then loudly. Anything else is a substitution: refused, logged, and the contact
    /// keeps its key.
    async fn lookup(
        &mut self,
        make: impl FnOnce(u64) -> ClientFrame,
    ) -> Result<Contact, ClientError> {
        let RelayFrame::Account {
            account_id,
            handle,
            identity_key,
            access_token,
            key_changes,
            ..
        } = self.link.request(make).await?
        else {
            return Err(LinkError::Protocol("unexpected answer to a lookup".into()).into());
        };
        let key = crate::identity::canonical(&identity_key.0).ok_or_else(|| {
            LinkError::Protocol("the directory answered with an invalid identity key".into())
        })?;
        let known = self.store.contact_by_id(&account_id)?;
        let c = Contact {
            account_id,
            handle,
            identity_key: key,
            access_token: access_token.0,
            verified: known.as_ref().is_some_and(|k| k.verified),
            key_changed: known.as_ref().is_some_and(|k| k.key_changed),
            blocked: known.as_ref().is_some_and(|k| k.blocked),
        };
        // The record keeps its own key whatever `c` says (see `upsert_contact`).
        self.store.upsert_contact(&c, now_ms())?;
        let Some(known) = known.filter(|k| k.identity_key != c.identity_key) else {
            return Ok(self.store.contact_by_id(&c.account_id)?.unwrap_or(c));
        };
        match crate::identity::path(&known.identity_key, &c.identity_key, &key_changes) {
            Some(how) => {
                let how = match how {
                    crate::identity::Replaced::Endorsed => trust::KeyEvent::Rekeyed,
                    crate::identity::Replaced::Reset => trust::KeyEvent::Reset,
                };
                self.key_changed(&c.account_id, &c.identity_key, how)
                    .await?;
            }
            None => {
                self.refused_key(&known, trust::KeyEvent::RefusedDirectory, &c.identity_key)
                    .await
            }
        }
        Ok(self.store.contact_by_id(&c.account_id)?.unwrap_or(known))
    }

    /// Records a key offered for `contact` that is not theirs, and tells the user: this is
    /// what an attack by the relay, or by someone between us and it, looks like.
    async fn refused_key(&mut self, contact: &Contact, event: trust::KeyEvent, key: &[u8]) {
        tracing::warn!(event = ?event, "refused an identity key a contact never endorsed");
        if let Err(e) = trust::record(&self.store, &contact.account_id, event, Some(key), now_ms())
        {
            tracing::error!(error = %describe(&e), "cannot record a refused key");
        }
        self.emit(Event::Warning(Warning::refused_key(&contact.handle, event)))
            .await;
    }

    /// A contact's identity key is now `new_key`: record it (blocking secret sends until the
    /// user accepts it) and show the "safety number changed" lines.
    async fn key_changed(
        &mut self,
        contact_id: &str,
        new_key: &[u8],
        how: trust::KeyEvent,
    ) -> Result<(), ClientError> {
        let lines = trust::key_changed(&self.store, contact_id, new_key, how, now_ms())?;
        self.member_rekeyed(contact_id)?;
        if let Some(first) = lines.first() {
            tracing::warn!("a contact's identity key changed");
            self.emit(Event::Warning(Warning::about(
                format!(
                    "{}'s safety number changed: check it with /verify before sending secret messages",
                    first.contact
                ),
                &first.contact,
            )))
            .await;
        }
        for line in lines {
            self.emit(Event::Message(line)).await;
        }
        Ok(())
    }
}
