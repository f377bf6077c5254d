//! The TUI's state and how it changes: user actions and manager events in, state changes and
//! `Command`s for the manager out.
//!
//! Pure: no terminal, no clock, no I/O. Knows the manager only through `Command` and `Event`;
//! never touches SQLite, sockets or keys. Holds only the loaded pages of the open thread, not
//! the whole history.

use crate::client::manager::{Command, ConnState, Event};
use crate::client::store::{ContactSummary, Message, MessageState};

use super::commands::{self, Slash};
use super::complete;
use super::composer::{self, Composer, Edit};

/// Messages fetched per page of history.
pub const PAGE: usize = 100;
/// How many messages PageUp/PageDown move.
const SCROLL_STEP: usize = 10;

/// A thread: a contact and one of its two modes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ThreadKey {
    pub handle: String,
    pub secret: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    Composer,
    Contacts,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlay {
    Help,
    Verify,
}

/// A line for the status bar; `error` ones are marked with `!`, not by colour alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub text: String,
    pub error: bool,
}

/// The loaded part of the open thread.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Thread {
    /// Oldest first.
    pub messages: Vec<Message>,
    /// The start of the thread is loaded.
    pub complete: bool,
    /// A page request is out.
    pub loading: bool,
    /// How many of the newest messages are scrolled out below the view.
    pub scroll: usize,
}

/// What a key press means, independent of which key it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// An edit of the composer's text.
    Edit(Edit),
    /// Tab on a `/command` line: complete the command or handle.
    Complete,
    /// Compose in `$EDITOR`, starting from the composer's text.
    Editor,
    /// The editor exited: its text, or what went wrong.
    Edited(Result<String, String>),
    /// `?` on an empty composer: help, holding the `?` in case the user meant to type it.
    HelpOrQuestion,
    Submit,
    ToggleSecret,
    ToggleFocus,
    FocusComposer,
    Up,
    Down,
    Open,
    PageUp,
    PageDown,
    Help,
    CloseOverlay,
    Quit,
    /// In the verify overlay: the numbers match.
    MarkVerified,
    /// In the verify overlay: take the verified mark away.
    Unmark,
    /// In the verify overlay: accept the contact's new key.
    AcceptChange,
}

/// One row of the contact list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub key: ThreadKey,
    pub unread: u32,
}

#[derive(Debug, Clone)]
pub struct App {
    pub me: String,
    pub contacts: Vec<ContactSummary>,
    pub selected: usize,
    pub open: Option<ThreadKey>,
    pub thread: Thread,
    pub composer: Composer,
    pub focus: Focus,
    pub conn: ConnState,
    pub status: Option<Status>,
    pub overlay: Option<Overlay>,
    pub quit: bool,
    /// Ring the terminal bell for messages to other threads.
    pub bell: bool,
    /// A bell is due at the next draw.
    pub ring: bool,
    /// Unix ms as of the last tick, for countdowns: set by the terminal loop, so the app
    /// itself reads no clock.
    pub now_ms: u64,
    next_tag: u64,
    /// Tag of the last /add, to open the contact it adds.
    pending_add: Option<u64>,
    /// A contact to add and open once the relay is reachable (a directory lookup needs it).
    open_when_online: Option<String>,
    /// What the verify overlay shows, once the manager has computed it.
    pub safety: Option<crate::client::trust::SafetyNumber>,
    /// The terminal loop is to run the editor on the composer's text (then `Edited`).
    pub wants_editor: bool,
    /// Help was opened by `?` on an empty composer: typing on writes a message starting
    /// with `?` instead of losing the character.
    question: bool,
}

impl App {
    pub fn new(me: impl Into<String>) -> App {
        App {
            me: me.into(),
            contacts: Vec::new(),
            selected: 0,
            open: None,
            thread: Thread::default(),
            composer: Composer::default(),
            focus: Focus::Composer,
            conn: ConnState::Connecting,
            status: None,
            overlay: None,
            quit: false,
            bell: true,
            ring: false,
            now_ms: 0,
            next_tag: 1,
            pending_add: None,
            open_when_online: None,
            safety: None,
            wants_editor: false,
            question: false,
        }
    }

    /// The commands to send at start: the contact list. `open` (a handle) is added and
    /// opened as soon as the relay is reachable.
    pub fn start(&mut self, open: Option<&str>) -> Vec<Command> {
        self.open_when_online = open.map(str::to_string);
        vec![Command::ListContacts]
    }

    fn tag(&mut self) -> u64 {
        self.next_tag += 1;
        self.next_tag
    }

    /// The contact list's rows: every contact's normal thread, and its secret thread when it
    /// has messages or is open.
    pub fn rows(&self) -> Vec<Row> {
        let mut rows = Vec::with_capacity(self.contacts.len() * 2);
        for c in &self.contacts {
            rows.push(Row {
                key: ThreadKey {
                    handle: c.handle.clone(),
                    secret: false,
                },
                unread: c.unread[0],
            });
            let key = ThreadKey {
                handle: c.handle.clone(),
                secret: true,
            };
            if c.has_secret || self.open.as_ref() == Some(&key) {
                rows.push(Row {
                    key,
                    unread: c.unread[1],
                });
            }
        }
        rows
    }

    /// The timer of the open thread, in seconds.
    pub fn open_timer(&self) -> Option<u32> {
        let open = self.open.as_ref()?;
        self.summary(&open.handle)?.timers[open.secret as usize]
    }

    fn summary(&self, handle: &str) -> Option<&ContactSummary> {
        self.contacts.iter().find(|c| c.handle == handle)
    }

    fn summary_mut(&mut self, handle: &str) -> Option<&mut ContactSummary> {
        self.contacts.iter_mut().find(|c| c.handle == handle)
    }

    fn error(&mut self, text: impl Into<String>) {
        self.status = Some(Status {
            text: text.into(),
            error: true,
        });
    }

    fn info(&mut self, text: impl Into<String>) {
        self.status = Some(Status {
            text: text.into(),
            error: false,
        });
    }

    /// Opens a thread and asks for its newest page.
    fn open_thread(&mut self, key: ThreadKey) -> Vec<Command> {
        self.thread = Thread {
            loading: true,
            ..Thread::default()
        };
        let cmd = Command::LoadPage {
            contact: key.handle.clone(),
            secret: key.secret,
            before: None,
            limit: PAGE,
        };
        self.open = Some(key.clone());
        if let Some(i) = self.rows().iter().position(|r| r.key == key) {
            self.selected = i;
        }
        vec![cmd]
    }

    /// Whether help holds a `?` typed on an empty composer, which typing on keeps.
    pub fn holds_question(&self) -> bool {
        self.question && self.overlay == Some(Overlay::Help)
    }

    /// Applies a user action.
    pub fn update(&mut self, action: Action) -> Vec<Command> {
        if self.holds_question()
            && let Action::Edit(Edit::Insert(c)) = action
        {
            // `??` writes one `?`; `?` and anything else writes both.
            self.overlay = None;
            self.question = false;
            let secret = self.secret();
            self.composer.apply(Edit::Insert('?'), secret);
            if c != '?' {
                self.composer.apply(Edit::Insert(c), secret);
            }
            return Vec::new();
        }
        if self.overlay.is_some() {
            let verifying = self.overlay == Some(Overlay::Verify);
            let handle = self.safety.as_ref().map(|n| n.handle.clone());
            return match (action, handle) {
                (Action::MarkVerified, Some(handle)) if verifying => {
                    vec![Command::SetVerified {
                        handle,
                        verified: true,
                    }]
                }
                (Action::Unmark, Some(handle)) if verifying => {
                    vec![Command::SetVerified {
                        handle,
                        verified: false,
                    }]
                }
                (Action::AcceptChange, Some(handle)) if verifying => {
                    vec![Command::AcceptChange { handle }]
                }
                (action, _) => self.overlay_action(action),
            };
        }
        self.act(action)
    }

    /// What an overlay (help, verify) does with the common keys.
    fn overlay_action(&mut self, action: Action) -> Vec<Command> {
        match action {
            Action::Quit => self.quit = true,
            Action::CloseOverlay | Action::Help | Action::Submit | Action::FocusComposer => {
                self.overlay = None;
                self.question = false;
            }
            _ => {}
        }
        Vec::new()
    }

    fn act(&mut self, action: Action) -> Vec<Command> {
        match action {
            Action::Edit(edit) => {
                // A paste lands in the composer even from the contact list.
                self.focus = Focus::Composer;
                self.composer.apply(edit, self.secret());
            }
            Action::Complete => self.complete(),
            Action::Editor => self.wants_editor = true,
            Action::Edited(Ok(text)) => {
                let text = composer::clean(&text);
                let end = text.len();
                self.composer.set(text, end);
                self.info("from the editor: Enter sends it, Esc clears it");
            }
            Action::Edited(Err(e)) => self.error(e),
            Action::HelpOrQuestion => {
                self.overlay = Some(Overlay::Help);
                self.question = true;
            }
            Action::Submit => return self.submit(),
            Action::ToggleSecret => return self.toggle_secret(),
            Action::ToggleFocus => {
                self.focus = match self.focus {
                    Focus::Composer => Focus::Contacts,
                    Focus::Contacts => Focus::Composer,
                }
            }
            Action::FocusComposer => {
                self.focus = Focus::Composer;
                self.status = None;
            }
            Action::Up => self.selected = self.selected.saturating_sub(1),
            Action::Down => {
                self.selected = (self.selected + 1).min(self.rows().len().saturating_sub(1))
            }
            Action::Open => {
                if let Some(row) = self.rows().get(self.selected) {
                    let key = row.key.clone();
                    self.focus = Focus::Composer;
                    return self.open_thread(key);
                }
            }
            Action::PageUp => return self.scroll_up(),
            Action::PageDown => self.thread.scroll = self.thread.scroll.saturating_sub(SCROLL_STEP),
            Action::Help => self.overlay = Some(Overlay::Help),
            Action::CloseOverlay | Action::MarkVerified | Action::Unmark | Action::AcceptChange => {
            }
            Action::Quit => self.quit = true,
        }
        Vec::new()
    }

    fn scroll_up(&mut self) -> Vec<Command> {
        let len = self.thread.messages.len();
        self.thread.scroll = (self.thread.scroll + SCROLL_STEP).min(len.saturating_sub(1));
        // Fetch the next older page before the view reaches the top of what is loaded.
        let left_above = len - self.thread.scroll.min(len);
        match (&self.open, self.thread.messages.first()) {
            (Some(open), Some(first))
                if left_above < PAGE / 2 && !self.thread.complete && !self.thread.loading =>
            {
                self.thread.loading = true;
                vec![Command::LoadPage {
                    contact: open.handle.clone(),
                    secret: open.secret,
                    before: Some(first.seq),
                    limit: PAGE,
                }]
            }
            _ => Vec::new(),
        }
    }

    fn toggle_secret(&mut self) -> Vec<Command> {
        match self.open.clone() {
            Some(open) => {
                let key = ThreadKey {
                    handle: open.handle,
                    secret: !open.secret,
                };
                self.info(if key.secret {
                    "secret thread: end-to-end encrypted, sealed sender, this device only"
                } else {
                    "normal thread: the relay can read these messages"
                });
                self.open_thread(key)
            }
            None => {
                self.error("open a contact first: Tab, then Enter; or /add HANDLE");
                Vec::new()
            }
        }
    }

    fn complete(&mut self) {
        let handles: Vec<&str> = self.contacts.iter().map(|c| c.handle.as_str()).collect();
        let done = complete::complete(self.composer.text(), self.composer.cursor(), &handles);
        self.composer.set(done.text, done.cursor);
        if !done.choices.is_empty() {
            self.info(done.choices.join("  "));
        }
    }

    fn submit(&mut self) -> Vec<Command> {
        let line = self.composer.text();
        if line.trim().is_empty() {
            return Vec::new();
        }
        // `//text` is the message `/text`, not a command.
        if line.starts_with('/') && !line.starts_with("//") {
            return match commands::parse(line) {
                Ok(slash) => {
                    self.composer.take(false);
                    self.slash(slash)
                }
                // The line stays in the composer so the user can fix it.
                Err(e) => {
                    self.error(e);
                    Vec::new()
                }
            };
        }
        let Some(open) = self.open.clone() else {
            self.error("no conversation is open: Tab to the contacts and Enter, or /add HANDLE");
            return Vec::new();
        };
        let mut text = self.composer.take(open.secret);
        if text.starts_with("//") {
            text.remove(0);
        }
        self.thread.scroll = 0;
        self.status = None;
        vec![Command::Send {
            id: uuid::Uuid::new_v4().to_string(),
            to: open.handle,
            secret: open.secret,
            text,
        }]
    }

    fn slash(&mut self, slash: Slash) -> Vec<Command> {
        match slash {
            Slash::Add(handle) => {
                let tag = self.tag();
                self.pending_add = Some(tag);
                self.info(format!("looking up {handle}…"));
                vec![Command::AddContact { tag, handle }]
            }
            Slash::Secret => self.toggle_secret(),
            Slash::Timer(timer) => match self.open.clone() {
                Some(open) => vec![Command::SetTimer {
                    id: uuid::Uuid::new_v4().to_string(),
                    contact: open.handle,
                    secret: open.secret,
                    timer,
                }],
                None => {
                    self.error("open a conversation first, then set its timer");
                    Vec::new()
                }
            },
            Slash::Verify => match self.open.clone() {
                Some(open) => {
                    self.overlay = Some(Overlay::Verify);
                    self.safety = None;
                    vec![Command::Verify {
                        handle: open.handle,
                    }]
                }
                None => {
                    self.error("open a conversation first, then /verify its contact");
                    Vec::new()
                }
            },
            Slash::Help => {
                self.overlay = Some(Overlay::Help);
                Vec::new()
            }
            Slash::Edit => {
                self.wants_editor = true;
                Vec::new()
            }
            Slash::Quit => {
                self.quit = true;
                Vec::new()
            }
        }
    }

    /// Applies an event from the manager.
    pub fn on_event(&mut self, event: Event) -> Vec<Command> {
        match event {
            Event::Connection(state) => {
                let online = state == ConnState::Online;
                self.conn = state;
                if let Some(handle) = self.open_when_online.take_if(|_| online) {
                    let tag = self.tag();
                    self.pending_add = Some(tag);
                    return vec![Command::AddContact { tag, handle }];
                }
            }
            Event::Message(m) => return self.on_message(m),
            Event::MessageState { id, state } => self.set_state(&id, state),
            Event::MessageFailed { id, error } => {
                self.set_state(&id, MessageState::Failed);
                self.error(format!("not sent: {error}"));
            }
            Event::ContactAdded { tag, contact } => {
                let mut cmds = vec![Command::ListContacts];
                if self.pending_add == Some(tag) {
                    self.pending_add = None;
                    self.info(format!("{} is in your contacts", contact.handle));
                    if self.summary(&contact.handle).is_none() {
                        self.contacts.push(ContactSummary {
                            handle: contact.handle.clone(),
                            unread: [0, 0],
                            has_secret: false,
                            timers: [None, None],
                            verified: contact.verified,
                            key_changed: contact.key_changed,
                        });
                    }
                    cmds.extend(self.open_thread(ThreadKey {
                        handle: contact.handle,
                        secret: false,
                    }));
                }
                return cmds;
            }
            Event::Contacts(list) => {
                self.contacts = list;
                let open = self.open.clone();
                if let Some(i) = open.and_then(|o| self.rows().iter().position(|r| r.key == o)) {
                    self.selected = i;
                }
                self.selected = self.selected.min(self.rows().len().saturating_sub(1));
            }
            Event::Page {
                contact,
                secret,
                before,
                mut messages,
                complete,
            } => return self.on_page(contact, secret, before, &mut messages, complete),
            Event::TimerSet {
                contact,
                secret,
                timer,
            } => {
                if let Some(c) = self.summary_mut(&contact) {
                    c.timers[secret as usize] = timer;
                }
                self.info(match timer {
                    Some(t) => format!(
                        "messages here now disappear after {}",
                        crate::timer::short(t)
                    ),
                    None => "disappearing messages are off here".to_string(),
                });
            }
            Event::Failed { error, tag } => {
                if self.pending_add == Some(tag) {
                    self.pending_add = None;
                }
                self.error(error);
            }
            Event::Warning(w) => self.error(w),
            Event::Expiring(started) => {
                for (id, at) in started {
                    if let Some(m) = self.thread.messages.iter_mut().find(|m| m.id == id) {
                        m.expires_at = Some(at);
                    }
                }
            }
            Event::Expired(gone) => {
                let open = self.open.clone();
                let before = self.thread.messages.len();
                self.thread.messages.retain(|m| {
                    !gone.iter().any(|g| {
                        g.id == m.id
                            && open
                                .as_ref()
                                .is_some_and(|o| o.handle == g.contact && o.secret == g.secret)
                    })
                });
                if self.thread.messages.len() != before {
                    self.thread.scroll = self.thread.scroll.min(self.thread.messages.len());
                }
            }
            Event::SafetyNumber(n) => {
                if let Some(c) = self.summary_mut(&n.handle) {
                    c.verified = n.verified;
                    c.key_changed = n.key_changed;
                }
                self.safety = Some(n);
            }
            Event::Drained | Event::Unshown { .. } => {}
        }
        Vec::new()
    }

    fn is_open(&self, handle: &str, secret: bool) -> bool {
        self.open
            .as_ref()
            .is_some_and(|o| o.handle == handle && o.secret == secret)
    }

    fn on_message(&mut self, m: Message) -> Vec<Command> {
        if m.kind == crate::client::store::MessageKind::KeyChange {
            // The contact's verified mark and block changed: fetch the list again.
            if let Some(c) = self.summary_mut(&m.contact) {
                c.verified = false;
                c.key_changed = true;
            }
        }
        if self.is_open(&m.contact, m.secret) {
            let seen = (!m.outgoing).then(|| m.id.clone());
            // Keep the view where it is if the user has scrolled up.
            if self.thread.scroll > 0 {
                self.thread.scroll += 1;
            }
            self.thread.messages.push(m);
            return seen
                .map(|id| vec![Command::MarkShown { ids: vec![id] }])
                .unwrap_or_default();
        }
        if m.outgoing {
            return Vec::new();
        }
        self.ring = self.bell;
        match self.summary_mut(&m.contact) {
            Some(c) => {
                c.unread[m.secret as usize] += 1;
                c.has_secret |= m.secret;
                Vec::new()
            }
            // Someone new wrote: the manager has added them; fetch the list again.
            None => vec![Command::ListContacts],
        }
    }

    fn on_page(
        &mut self,
        contact: String,
        secret: bool,
        before: Option<i64>,
        messages: &mut Vec<Message>,
        complete: bool,
    ) -> Vec<Command> {
        let expected = self.thread.messages.first().map(|m| m.seq);
        if !self.is_open(&contact, secret) || before != expected {
            // An answer for a thread or position no longer on screen.
            return Vec::new();
        }
        let unseen: Vec<String> = messages
            .iter()
            .filter(|m| !m.outgoing)
            .map(|m| m.id.clone())
            .collect();
        messages.append(&mut self.thread.messages);
        self.thread.messages = std::mem::take(messages);
        self.thread.complete = complete;
        self.thread.loading = false;
        if let Some(c) = self.summary_mut(&contact) {
            c.unread[secret as usize] = 0;
        }
        if unseen.is_empty() {
            Vec::new()
        } else {
            vec![Command::MarkShown { ids: unseen }]
        }
    }

    fn set_state(&mut self, id: &str, state: MessageState) {
        if let Some(m) = self
            .thread
            .messages
            .iter_mut()
            .rev()
            .find(|m| m.outgoing && m.id == id)
        {
            m.state = state;
        }
    }

    /// Whether a message with a running countdown is loaded in the open thread: only then
    /// does the screen need a tick each second.
    pub fn counting_down(&self) -> bool {
        let end = self
            .thread
            .messages
            .len()
            .saturating_sub(self.thread.scroll);
        // The newest screenful is what can be visible; a generous bound keeps this cheap.
        let start = end.saturating_sub(200);
        self.thread.messages[start..end]
            .iter()
            .any(|m| m.expires_at.is_some())
    }

    /// The open contact's trust state, for the status line.
    pub fn open_trust(&self) -> Option<(bool, bool)> {
        let open = self.open.as_ref()?;
        self.summary(&open.handle)
            .map(|c| (c.verified, c.key_changed))
    }

    /// Whether the open thread is secret: what the status line must never leave in doubt.
    pub fn secret(&self) -> bool {
        self.open.as_ref().is_some_and(|o| o.secret)
    }
}
