//! The TUI's state and how it changes: user actions and manager events in, state changes and
//! `Command`s for the manager out.
//!
//! Pure: no terminal, no clock, no I/O. Knows the manager only through `Command` and `Event`;
//! never touches SQLite, sockets or keys. Holds only the loaded pages of the open thread, not
//! the whole history.

use crate::client::manager::{Command, ConnState, ContactChange, Event};
use crate::client::store::{ContactSummary, Message, MessageState};

use super::clock::Clock;
use super::commands::{self, Slash};
use super::complete;
use super::composer::{self, Composer, Edit};
use super::layout::{self, DEFAULT_CONTACTS_MIN_WIDTH};
pub use super::notice::{About, Expiry, Status};
use super::notify;
use super::scroll::{Lines, Pos};
use super::thread_view;

/// Messages fetched per page of history.
pub const PAGE: usize = 100;
/// How many lines a turn of the mouse wheel scrolls.
pub const WHEEL_LINES: usize = 3;

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
    /// Search results (`App::search`).
    Search,
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
    /// How many lines of the message at the bottom of the view are scrolled out below it.
    pub cut: usize,
    /// The first message that was unread when the thread opened: the "new messages" line
    /// goes above it.
    pub new_from: Option<i64>,
    /// How many messages were unread when the thread opened.
    pub unread: usize,
    /// The view lands on the first unread once enough of the thread is loaded.
    pub landing: bool,
    /// A search result (its `seq`) to scroll to once older pages bring it in.
    pub seek: Option<i64>,
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
    /// The mouse wheel: a few lines towards older or newer messages.
    WheelUp,
    WheelDown,
    /// The oldest loaded message (older pages load as when paging up).
    Top,
    /// Back to the newest message.
    Bottom,
    /// Show or hide the contact list.
    ToggleContacts,
    Help,
    CloseOverlay,
    Quit,
    /// In the verify overlay: the numbers match.
    MarkVerified,
    /// In the verify overlay: take the verified mark away.
    Unmark,
    /// In the verify overlay: accept the contact's new key.
    AcceptChange,
    /// Selection mode and what it leads to (see `rich`).
    Rich(super::rich::RichAction),
    /// Search the open thread (Ctrl-F).
    Search,
    /// Files: attaching, opening, saving (see `files`).
    Files(super::files::FileAction),
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
    /// Tags of our `/group new` commands not yet answered: their group opens once made.
    pub(super) groups_created: Vec<u64>,
    /// A contact to add and open once the relay is reachable (a directory lookup needs it).
    open_when_online: Option<String>,
    /// What the verify overlay shows, once the manager has computed it.
    pub safety: Option<crate::client::trust::SafetyNumber>,
    /// How times and dates are written (zone and format).
    pub clock: Clock,
    /// The terminal's size (columns, rows), set by the terminal loop: scrolling by a screen
    /// needs the thread's height.
    pub screen: (u16, u16),
    /// Below this terminal width the contact list hides by itself.
    pub contacts_min_width: u16,
    /// The user's choice to show or hide the contact list; None: by the width.
    pub show_contacts: Option<bool>,
    /// Notices about contacts whose thread is not open, shown when it opens.
    pub held: Vec<Status>,
    /// How far the help overlay is scrolled, and how far it can be (set by the terminal loop
    /// from the screen size).
    pub overlay_scroll: usize,
    pub overlay_scroll_max: usize,
    /// Messages sent and not yet settled, with their contact: a failure is about that thread.
    pub(super) sent_to: std::collections::HashMap<String, String>,
    /// The terminal loop is to run the editor on the composer's text (then `Edited`).
    pub wants_editor: bool,
    /// Which arriving messages notify, and the notification due at the next draw.
    pub notify: notify::Mode,
    pub notification: Option<notify::Notification>,
    /// Help was opened by `?` on an empty composer: typing on writes a message starting
    /// with `?` instead of losing the character.
    question: bool,
    /// Who is typing, and whether the open thread's peer is told the user is.
    pub typing: super::typing::Typing,
    /// Selection mode, and what the composer answers or edits.
    pub rich: super::rich::Rich,
    /// The search overlay's words and results.
    pub search: super::search::Search,
    /// Attaching, opening and saving files; transfer rates; pictures.
    pub files: super::files::Files,
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
            groups_created: Vec::new(),
            open_when_online: None,
            safety: None,
            clock: Clock::default(),
            screen: (80, 24),
            contacts_min_width: DEFAULT_CONTACTS_MIN_WIDTH,
            show_contacts: None,
            held: Vec::new(),
            overlay_scroll: 0,
            overlay_scroll_max: 0,
            sent_to: std::collections::HashMap::new(),
            wants_editor: false,
            notify: notify::Mode::default(),
            notification: None,
            question: false,
            typing: Default::default(),
            rich: Default::default(),
            search: super::search::Search::default(),
            files: Default::default(),
        }
    }

    /// The commands to send at start: the contact list. `open` (a handle) is added and
    /// opened as soon as the relay is reachable.
    pub fn start(&mut self, open: Option<&str>) -> Vec<Command> {
        self.open_when_online = open.map(str::to_string);
        vec![Command::ListContacts]
    }

    pub(super) fn tag(&mut self) -> u64 {
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

    pub(super) fn error(&mut self, text: impl Into<String>) {
        self.notify(Status::error(text));
    }

    pub(super) fn info(&mut self, text: impl Into<String>) {
        self.notify(Status::info(text));
    }

    /// An error from the manager about `about`: raised while the relay is out of reach, it is
    /// about that, and goes when the connection is back.
    fn manager_error(&mut self, text: String, about: Option<About>) {
        let expires = if self.conn == ConnState::Online {
            Expiry::Dismissed
        } else {
            Expiry::Online
        };
        self.notify(Status::error(text).about(about).expires(expires));
    }

    /// Opens a thread and asks for its newest page.
    pub(super) fn open_thread(&mut self, key: ThreadKey) -> Vec<Command> {
        let unread = self
            .summary(&key.handle)
            .map_or(0, |c| c.unread[key.secret as usize] as usize);
        self.rich = Default::default();
        self.files.pictures.clear();
        self.files.saving = None;
        self.files.offer = None;
        self.thread = Thread {
            loading: true,
            unread,
            landing: unread > 0,
            ..Thread::default()
        };
        let cmd = Command::LoadPage {
            contact: key.handle.clone(),
            secret: key.secret,
            before: None,
            limit: PAGE,
        };
        let mut cmds = self.typing.stop();
        cmds.push(cmd);
        self.open = Some(key.clone());
        self.notices_follow_open();
        if let Some(i) = self.rows().iter().position(|r| r.key == key) {
            self.selected = i;
        }
        cmds
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
            let (secret, width) = (self.secret(), self.composer_width());
            self.composer.apply(Edit::Insert('?'), secret, width);
            if c != '?' {
                self.composer.apply(Edit::Insert(c), secret, width);
            }
            return Vec::new();
        }
        if self.overlay == Some(Overlay::Search) {
            return self.search_action(action);
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

    fn open_overlay(&mut self, overlay: Overlay) {
        self.overlay = Some(overlay);
        self.overlay_scroll = 0;
    }

    /// What an overlay (help, verify) does with the common keys.
    fn overlay_action(&mut self, action: Action) -> Vec<Command> {
        match action {
            Action::Quit => self.quit = true,
            Action::CloseOverlay | Action::Help | Action::Submit | Action::FocusComposer => {
                self.overlay = None;
                self.question = false;
            }
            Action::Up | Action::WheelUp => {
                self.overlay_scroll = self.overlay_scroll.saturating_sub(1)
            }
            Action::Down | Action::WheelDown => {
                self.overlay_scroll = (self.overlay_scroll + 1).min(self.overlay_scroll_max)
            }
            Action::PageUp => self.overlay_scroll = self.overlay_scroll.saturating_sub(10),
            Action::PageDown => {
                self.overlay_scroll = (self.overlay_scroll + 10).min(self.overlay_scroll_max)
            }
            Action::Top => self.overlay_scroll = 0,
            Action::Bottom => self.overlay_scroll = self.overlay_scroll_max,
            _ => {}
        }
        Vec::new()
    }

    fn act(&mut self, action: Action) -> Vec<Command> {
        match action {
            Action::Edit(edit) => {
                // A paste lands in the composer even from the contact list.
                self.focus = Focus::Composer;
                let before = self.composer.text().to_string();
                self.composer
                    .apply(edit, self.secret(), self.composer_width());
                // Moving the cursor is not typing.
                if self.composer.text() != before {
                    let writing = super::typing::writing(self.composer.text());
                    return self.typing.edited(self.open.as_ref(), writing, self.now_ms);
                }
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
            Action::PageUp => return self.scroll_up(self.view().1.saturating_sub(1).max(1)),
            Action::PageDown => self.scroll_down(self.view().1.saturating_sub(1).max(1)),
            Action::WheelUp => return self.scroll_up(WHEEL_LINES),
            Action::WheelDown => self.scroll_down(WHEEL_LINES),
            Action::Top => {
                let view = self.view().1;
                let pos = self.lines().top(view);
                self.set_pos(pos);
                return self.load_older();
            }
            Action::Bottom => self.set_pos(Pos::default()),
            Action::ToggleContacts => {
                let shown = layout::contacts_shown(self, self.screen.0);
                self.show_contacts = Some(!shown);
                if shown {
                    self.focus = Focus::Composer;
                }
            }
            Action::Help => self.open_overlay(Overlay::Help),
            Action::Search => return self.search_open_thread(),
            Action::CloseOverlay | Action::MarkVerified | Action::Unmark | Action::AcceptChange => {
            }
            Action::Quit => self.quit = true,
            Action::Rich(a) => return self.rich_action(a),
            Action::Files(a) => return self.files_action(a),
        }
        Vec::new()
    }

    /// The thread's text area, (width, height) in cells, at the present terminal size.
    pub(super) fn view(&self) -> (usize, usize) {
        let (w, h) = layout::thread_inner(self, self.screen.0, self.screen.1);
        (w as usize, h as usize)
    }

    /// The columns the composer wraps at, at the present terminal size.
    pub(super) fn composer_width(&self) -> usize {
        layout::composer_width(self.screen.0)
    }

    /// The loaded messages' heights at the present width, for scrolling.
    pub(super) fn lines(&self) -> Lines<impl Fn(usize) -> usize + '_> {
        let width = self.view().0;
        Lines {
            len: self.thread.messages.len(),
            height: move |i| thread_view::height(self, i, width),
        }
    }

    fn pos(&self) -> Pos {
        Pos {
            below: self.thread.scroll,
            cut: self.thread.cut,
        }
    }

    pub(super) fn set_pos(&mut self, p: Pos) {
        self.thread.scroll = p.below;
        self.thread.cut = p.cut;
    }

    fn scroll_up(&mut self, n: usize) -> Vec<Command> {
        let view = self.view().1;
        let pos = self.lines().up(self.pos(), n, view);
        self.set_pos(pos);
        // Fetch the next older page before the view reaches the top of what is loaded.
        let len = self.thread.messages.len();
        if len - self.thread.scroll.min(len) < PAGE / 2 {
            self.load_older()
        } else {
            Vec::new()
        }
    }

    fn scroll_down(&mut self, n: usize) {
        let pos = self.lines().down(self.pos(), n);
        self.set_pos(pos);
    }

    /// Asks for the page before the oldest loaded message, unless it is all loaded or a
    /// request is out.
    pub(super) fn load_older(&mut self) -> Vec<Command> {
        match (&self.open, self.thread.messages.first()) {
            (Some(open), Some(first)) if !self.thread.complete && !self.thread.loading => {
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

    /// Once the unread messages of a thread just opened are loaded, marks the first with the
    /// "new messages" line and shows it at the top of the view (or the bottom, if they fit).
    fn land(&mut self) -> Vec<Command> {
        if !self.thread.landing {
            return Vec::new();
        }
        let msgs = &self.thread.messages;
        let incoming = msgs.iter().filter(|m| !m.outgoing).count();
        if incoming < self.thread.unread && !self.thread.complete {
            return self.load_older();
        }
        self.thread.landing = false;
        // The unread are the newest incoming messages.
        let first = msgs
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, m)| !m.outgoing)
            .take(self.thread.unread)
            .last()
            .map(|(i, m)| (i, m.seq));
        if let Some((i, seq)) = first {
            self.thread.new_from = Some(seq);
            let view = self.view().1;
            let pos = self.lines().from_top(i, 0, view);
            self.set_pos(pos);
        }
        Vec::new()
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
        if let Some(id) = self.files.saving.take() {
            return self.save_to(id);
        }
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
        self.set_pos(Pos::default());
        self.status = None;
        let id = uuid::Uuid::new_v4().to_string();
        self.sent_to.insert(id.clone(), open.handle.clone());
        let mut cmds = self.typing.stop();
        cmds.push(self.compose(id, open, text));
        cmds
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
                Some(open) => {
                    let id = uuid::Uuid::new_v4().to_string();
                    self.sent_to.insert(id.clone(), open.handle.clone());
                    vec![Command::SetTimer {
                        id,
                        contact: open.handle,
                        secret: open.secret,
                        timer,
                    }]
                }
                None => {
                    self.error("open a conversation first, then set its timer");
                    Vec::new()
                }
            },
            Slash::Verify => match self.open.clone() {
                Some(open) => {
                    self.open_overlay(Overlay::Verify);
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
            Slash::Block(handle) => {
                let Some(handle) = handle.or_else(|| self.open.clone().map(|o| o.handle)) else {
                    self.error("usage: /block HANDLE, or open the contact's conversation first");
                    return Vec::new();
                };
                let tag = self.tag();
                vec![Command::Block {
                    tag,
                    handle,
                    blocked: true,
                }]
            }
            Slash::Unblock(handle) => {
                let tag = self.tag();
                vec![Command::Block {
                    tag,
                    handle,
                    blocked: false,
                }]
            }
            Slash::Remove(handle) => {
                let tag = self.tag();
                vec![Command::RemoveContact { tag, handle }]
            }
            Slash::Retry => {
                let failed = self
                    .thread
                    .messages
                    .iter()
                    .rev()
                    .find(|m| m.outgoing && m.state == MessageState::Failed);
                match failed {
                    Some(m) => {
                        let id = m.id.clone();
                        let tag = self.tag();
                        self.info("sending it again…");
                        vec![Command::Retry { tag, id }]
                    }
                    None => {
                        self.error("no message failed in this conversation");
                        Vec::new()
                    }
                }
            }
            Slash::Search(words) => self.open_search(None, words),
            Slash::Group(g) => self.group_slash(g),
            Slash::Attach { path, caption } => self.attach_typed(path, caption),
            Slash::Help => {
                self.open_overlay(Overlay::Help);
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
                if online {
                    self.expire(|s| s.expires == Expiry::Online);
                }
                if let Some(handle) = self.open_when_online.take_if(|_| online) {
                    let tag = self.tag();
                    self.pending_add = Some(tag);
                    return vec![Command::AddContact { tag, handle }];
                }
            }
            Event::Message(m) => return self.on_message(m),
            Event::MessageState { id, state } => {
                if state != MessageState::Sending {
                    self.sent_to.remove(&id);
                }
                self.set_state(&id, state);
            }
            Event::MessageFailed { id, error } => {
                self.set_state(&id, MessageState::Failed);
                let about = self.sent_to.remove(&id).map(About::contact);
                self.manager_error(format!("not sent: {error}"), about);
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
                            group: false,
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
                let thread = if secret { "secret" } else { "normal" };
                let text = match timer {
                    Some(t) => format!(
                        "messages in {contact}'s {thread} thread now disappear after {}",
                        crate::timer::short(t)
                    ),
                    None => format!("disappearing messages are off in {contact}'s {thread} thread"),
                };
                self.notify(Status::info(text).about(Some(About::thread(contact, secret))));
            }
            Event::Failed { error, tag } if self.search_failed(tag, &error) => {}
            Event::Failed { error, tag } => {
                if self.pending_add == Some(tag) {
                    self.pending_add = None;
                }
                self.manager_error(error, None);
            }
            Event::Warning(w) => {
                let about = w.contact.map(|handle| About {
                    handle,
                    secret: w.secret,
                });
                if w.text.contains("safety number changed") {
                    self.notify(
                        Status::error(w.text)
                            .about(about)
                            .expires(Expiry::KeyAccepted),
                    );
                } else {
                    self.manager_error(w.text, about);
                }
            }
            Event::ContactChanged { handle, change, .. } => {
                self.info(match change {
                    ContactChange::Blocked => format!(
                        "{handle} is blocked: nothing they send reaches you (/unblock {handle} to undo)"
                    ),
                    ContactChange::Unblocked => format!("{handle} can reach you again"),
                    ContactChange::Removed { messages } => {
                        format!("{handle} is removed, with {messages} messages")
                    }
                });
                if change != ContactChange::Unblocked
                    && self.open.as_ref().is_some_and(|o| o.handle == handle)
                {
                    self.open = None;
                    self.thread = Thread::default();
                }
            }
            Event::Expiring(started) => {
                for (id, at) in started {
                    if let Some(m) = self.thread.messages.iter_mut().find(|m| m.id == id) {
                        m.expires_at = Some(at);
                    }
                }
            }
            Event::MessageChanged { message, .. } => self.on_changed(message),
            Event::MessageRemoved(gone) => self.remove_messages(&[gone]),
            Event::Expired(gone) => self.remove_messages(&gone),
            Event::SafetyNumber(n) => {
                if let Some(c) = self.summary_mut(&n.handle) {
                    c.verified = n.verified;
                    c.key_changed = n.key_changed;
                }
                if !n.key_changed {
                    self.expire(|s| {
                        s.expires == Expiry::KeyAccepted
                            && s.about.as_ref().is_some_and(|a| a.handle == n.handle)
                    });
                }
                self.safety = Some(n);
            }
            Event::Typing {
                contact,
                secret,
                active,
            } => self.typing.peer(
                ThreadKey {
                    handle: contact,
                    secret,
                },
                active,
            ),
            Event::SearchResults { tag, results } => self.on_search_results(tag, results),
            Event::GroupMembers { group, members, .. } => self.on_group_members(group, members),
            Event::GroupChanged { tag, group, change } => {
                return self.on_group_changed(tag, group, change);
            }
            Event::Attachment { id, attachment } => return self.on_attachment(id, attachment),
            Event::AttachmentOpened { tag, path, .. } => self.on_opened(tag, path),
            Event::AttachmentSaved { path, .. } => self.on_saved(path),
            Event::Preview {
                id,
                width,
                height,
                image,
            } => self.on_preview(id, width, height, image),
            Event::Drained | Event::Unshown { .. } => {}
        }
        Vec::new()
    }

    /// Takes messages the sweeper or a deletion took away off the open thread.
    fn remove_messages(&mut self, gone: &[crate::client::store::Expired]) {
        for g in gone {
            self.files.forget(&g.id);
        }
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
            self.thread.cut = 0;
        }
        self.quotes_gone(gone);
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
            if self.pos() != Pos::default() {
                self.thread.scroll += 1;
            }
            self.thread.messages.push(m);
            let mut cmds = self.want_pictures();
            cmds.extend(seen.map(|id| Command::MarkShown { ids: vec![id] }));
            return cmds;
        }
        if m.outgoing {
            return Vec::new();
        }
        self.ring = self.bell;
        self.notification = notify::for_message(self.notify, &m);
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
        let mut cmds = self.land();
        cmds.extend(self.seek());
        cmds.extend(self.want_pictures());
        if !unseen.is_empty() {
            cmds.push(Command::MarkShown { ids: unseen });
        }
        cmds
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

    /// The terminal's title: the profile's handle, and the unread count when there is any.
    pub fn title(&self) -> String {
        let unread: u32 = self.rows().iter().map(|r| r.unread).sum();
        if unread > 0 {
            format!("({unread}) sotto · {}", self.me)
        } else {
            format!("sotto · {}", self.me)
        }
    }

    /// Whether the open thread is secret: what the status line must never leave in doubt.
    pub fn secret(&self) -> bool {
        self.open.as_ref().is_some_and(|o| o.secret)
    }
}
