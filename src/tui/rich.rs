//! Selection mode and what it leads to: replying to, reacting to, editing and deleting a
//! message of the open thread, and keeping the loaded thread in step with such changes.
//!
//! Owns the `Rich` part of the app's state. Pure like the rest of `App`: turns keys into
//! `Command`s and events into state, draws nothing. Must not touch the composer's history
//! or scrolling beyond keeping the selected message in view.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use unicode_width::UnicodeWidthStr;

use super::app::{Action, App, Focus, ThreadKey};
use super::files::FileAction;
use crate::client::manager::{CHANGE_WINDOW_MS, Command};
use crate::client::store::{Expired, Message, MessageState};

/// The reactions the picker offers on 1 to 6.
pub const USUAL: [&str; 6] = ["👍", "❤️", "😂", "😮", "😢", "🙏"];

/// The keys of selection mode, as the help lists them.
pub const HELP: [(&str, &str); 7] = [
    (
        "↑ ↓ / k j",
        "move between messages; Esc leaves the selection",
    ),
    (
        "Enter, r",
        "reply to it (r on your own failed message sends it again); Enter on a file not downloaded (or failed) fetches it",
    ),
    (
        "o, s",
        "open its file with the system's opener, or save a copy (asks where)",
    ),
    ("g", "go to the message a reply quotes"),
    (
        "e",
        "react: 1-6 picks a usual emoji, or type one and Enter; the same again removes yours",
    ),
    ("E", "edit your message (within 24 hours); Enter saves"),
    (
        "D, d",
        "delete for everyone (yours, within 24 hours), or for you only; y confirms",
    ),
];

/// Selection mode and what the composer is doing to a message.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rich {
    /// The selected message's id; None: not selecting.
    pub selected: Option<String>,
    /// The message the composer answers: (id, excerpt).
    pub replying: Option<(String, String)>,
    /// The message of ours the composer edits.
    pub editing: Option<String>,
    /// The reaction picker is open on the selected message, with what is typed into it.
    pub picker: Option<String>,
    /// A deletion of the selected message waits for y: for everyone (true) or for me.
    pub confirm: Option<bool>,
}

/// What a key does in selection mode, in the picker or at a confirmation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RichAction {
    /// Select the newest message.
    Select,
    /// Select the message `n` older (negative) or newer (positive).
    Move(i32),
    /// Leave selection mode.
    Leave,
    /// Stop replying or editing.
    CancelCompose,
    /// Reply to the selected message (or send our failed one again).
    Reply,
    /// Select the message a reply quotes.
    Jump,
    /// Open the reaction picker.
    React,
    PickerChar(char),
    PickerBack,
    PickerDone,
    PickerCancel,
    /// Edit our selected message in the composer.
    Edit,
    /// Ask to delete the selected message: for everyone (true) or for me.
    AskDelete(bool),
    /// The answer to that question.
    Confirm(bool),
    /// A key that means nothing here.
    Ignore,
}

/// The action of `k` in selection mode, the picker or a confirmation; None: the composer's.
pub fn key_action(app: &App, k: &KeyEvent) -> Option<Action> {
    use RichAction as R;
    let r = &app.rich;
    let plain = !k
        .modifiers
        .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT);
    let act = |a| Some(Action::Rich(a));
    if r.confirm.is_some() {
        return act(R::Confirm(k.code == KeyCode::Char('y') && plain));
    }
    if r.picker.is_some() {
        return match k.code {
            KeyCode::Char(c) if plain => act(R::PickerChar(c)),
            KeyCode::Backspace => act(R::PickerBack),
            KeyCode::Enter => act(R::PickerDone),
            KeyCode::Esc => act(R::PickerCancel),
            _ => act(R::Ignore),
        };
    }
    if r.selected.is_some() {
        if !plain {
            return None;
        }
        match k.code {
            KeyCode::Char('o') => return Some(Action::Files(FileAction::Open)),
            KeyCode::Char('s') => return Some(Action::Files(FileAction::Save)),
            _ => {}
        }
        return act(match k.code {
            KeyCode::Up | KeyCode::Char('k') => R::Move(-1),
            KeyCode::Down | KeyCode::Char('j') => R::Move(1),
            KeyCode::Esc => R::Leave,
            KeyCode::Enter | KeyCode::Char('r') => R::Reply,
            KeyCode::Char('g') => R::Jump,
            KeyCode::Char('e') => R::React,
            KeyCode::Char('E') => R::Edit,
            KeyCode::Char('D') => R::AskDelete(true),
            KeyCode::Char('d') => R::AskDelete(false),
            _ => R::Ignore,
        });
    }
    let empty = app.composer.is_empty();
    match k.code {
        KeyCode::Up if empty && k.modifiers.is_empty() && app.open.is_some() => act(R::Select),
        KeyCode::Esc if empty && (r.replying.is_some() || r.editing.is_some()) => {
            act(R::CancelCompose)
        }
        _ => None,
    }
}

/// What the composer's title adds while replying or editing, in at most `width` columns.
pub fn composer_doing(app: &App, width: usize) -> Option<String> {
    if app.files.saving.is_some() {
        return Some("· save to (Esc cancels)".to_string());
    }
    if app.rich.editing.is_some() {
        return Some("· editing (Esc cancels)".to_string());
    }
    let (_, excerpt) = app.rich.replying.as_ref()?;
    let mut short = String::new();
    for c in excerpt.chars() {
        if short.width() + 14 >= width {
            short.push('…');
            break;
        }
        short.push(c);
    }
    Some(format!("· replying to “{short}”"))
}

impl App {
    /// The id of the selected message, in selection mode.
    pub fn selected_message(&self) -> Option<&str> {
        self.rich.selected.as_deref()
    }

    /// The command that sends what the composer holds: a message (answering the message
    /// being replied to, if any) or the new text of the message being edited.
    pub(super) fn compose(&mut self, id: String, open: ThreadKey, text: String) -> Command {
        let replying = self.rich.replying.take();
        if let Some(target) = self.rich.editing.take() {
            return Command::Edit {
                id,
                contact: open.handle,
                secret: open.secret,
                target,
                text,
            };
        }
        Command::Send {
            id,
            to: open.handle,
            secret: open.secret,
            text,
            reply_to: replying.map(|r| r.0),
        }
    }

    fn selected_index(&self) -> Option<usize> {
        let id = self.rich.selected.as_deref()?;
        self.thread.messages.iter().position(|m| m.id == id)
    }

    fn selected_msg(&self) -> Option<&Message> {
        self.selected_index().map(|i| &self.thread.messages[i])
    }

    /// Selects message `i` and scrolls it to the bottom of the view.
    fn select(&mut self, i: usize) {
        let n = self.thread.messages.len();
        self.rich.selected = Some(self.thread.messages[i].id.clone());
        self.thread.scroll = n - 1 - i;
        self.thread.cut = 0;
    }

    pub(super) fn leave(&mut self) {
        self.rich.selected = None;
        self.rich.picker = None;
        self.rich.confirm = None;
        self.thread.scroll = 0;
        self.thread.cut = 0;
    }

    pub(super) fn rich_action(&mut self, a: RichAction) -> Vec<Command> {
        use RichAction as R;
        let Some(open) = self.open.clone() else {
            return Vec::new();
        };
        match a {
            R::Select => {
                if let Some(i) = self.thread.messages.len().checked_sub(1) {
                    self.focus = Focus::Composer;
                    self.select(i);
                    self.info("selected: Enter reply · e react · E edit · D/d delete · g go to quoted · Esc leave");
                }
            }
            R::Move(by) => {
                if let Some(i) = self.selected_index() {
                    let last = self.thread.messages.len() - 1;
                    let to = (i as i64 + i64::from(by)).clamp(0, last as i64) as usize;
                    self.select(to);
                }
            }
            R::Leave => {
                self.leave();
                self.status = None;
            }
            R::CancelCompose => {
                self.rich.replying = None;
                if self.rich.editing.take().is_some() {
                    self.composer.set(String::new(), 0);
                }
                self.info("cancelled");
            }
            R::Reply => return self.reply_selected(),
            R::Jump => {
                let Some(q) = self.selected_msg().and_then(|m| m.reply.clone()) else {
                    self.error("this message is no reply");
                    return Vec::new();
                };
                match self.thread.messages.iter().position(|m| m.id == q.id) {
                    Some(i) if !q.gone => self.select(i),
                    _ if q.gone => self.error("original message gone"),
                    _ => self.error("the original is further back: PageUp loads older messages"),
                }
            }
            R::React => match self.selected_msg() {
                Some(m) if m.deleted || !m.kind.is_text() => {
                    self.error("only a text message can have reactions")
                }
                Some(_) => {
                    self.rich.picker = Some(String::new());
                    self.show_picker();
                }
                None => {}
            },
            R::PickerChar(c) => {
                let typed = self.rich.picker.get_or_insert_default();
                if typed.is_empty()
                    && let Some(d) = c.to_digit(10)
                    && (1..=USUAL.len() as u32).contains(&d)
                {
                    let emoji = USUAL[d as usize - 1].to_string();
                    return self.react(open, emoji);
                }
                typed.push(c);
                self.show_picker();
            }
            R::PickerBack => {
                if let Some(t) = &mut self.rich.picker {
                    t.pop();
                }
                self.show_picker();
            }
            R::PickerDone => {
                let typed = self.rich.picker.clone().unwrap_or_default();
                if typed.is_empty() {
                    self.show_picker();
                } else {
                    return self.react(open, typed);
                }
            }
            R::PickerCancel => {
                self.rich.picker = None;
                self.status = None;
            }
            R::Edit => {
                let Some(m) = self.selected_msg().cloned() else {
                    return Vec::new();
                };
                if let Err(e) = self.may_change(&m) {
                    self.error(format!("{e} be edited"));
                    return Vec::new();
                }
                self.leave();
                let end = m.text.len();
                self.composer.set(m.text, end);
                self.rich.editing = Some(m.id);
                self.rich.replying = None;
                self.info("editing: Enter saves the new text, Esc twice cancels");
            }
            R::AskDelete(for_everyone) => {
                let Some(m) = self.selected_msg().cloned() else {
                    return Vec::new();
                };
                if for_everyone && let Err(e) = self.may_change(&m) {
                    self.error(format!("{e} be deleted for everyone; d deletes it for you"));
                    return Vec::new();
                }
                self.rich.confirm = Some(for_everyone);
                self.info(if for_everyone {
                    "delete this message for everyone? y deletes, any other key keeps it"
                } else {
                    "delete this message here (the contact keeps theirs)? y deletes, any other key keeps it"
                });
            }
            R::Confirm(yes) => {
                let for_everyone = self.rich.confirm.take().unwrap_or(false);
                let target = self.selected_msg().map(|m| m.id.clone());
                self.status = None;
                if let (true, Some(target)) = (yes, target) {
                    self.leave();
                    let id = uuid::Uuid::new_v4().to_string();
                    return vec![Command::Delete {
                        id,
                        contact: open.handle,
                        secret: open.secret,
                        target,
                        for_everyone,
                    }];
                }
            }
            R::Ignore => {}
        }
        Vec::new()
    }

    /// Whether we may still change `m` for everyone; the error begins a sentence "… can".
    fn may_change(&self, m: &Message) -> Result<(), &'static str> {
        if !m.outgoing || !m.kind.is_text() || m.deleted {
            return Err("only your own text messages can");
        }
        if self.now_ms.saturating_sub(m.sent_at) > CHANGE_WINDOW_MS {
            return Err("only messages of the last 24 hours can");
        }
        Ok(())
    }

    fn show_picker(&mut self) {
        let typed = self.rich.picker.clone().unwrap_or_default();
        let usual: Vec<String> = USUAL
            .iter()
            .enumerate()
            .map(|(i, e)| format!("{} {e}", i + 1))
            .collect();
        self.info(format!(
            "react: {} · or type one: {typed}▏ Enter · Esc cancels",
            usual.join("  ")
        ));
    }

    fn react(&mut self, open: ThreadKey, emoji: String) -> Vec<Command> {
        self.rich.picker = None;
        self.status = None;
        let Some(target) = self.selected_msg().map(|m| m.id.clone()) else {
            return Vec::new();
        };
        vec![Command::React {
            id: uuid::Uuid::new_v4().to_string(),
            contact: open.handle,
            secret: open.secret,
            target,
            emoji: Some(emoji),
        }]
    }

    /// Enter or r on the selected message: answer it, or send our failed one again.
    fn reply_selected(&mut self) -> Vec<Command> {
        let Some(m) = self.selected_msg().cloned() else {
            return Vec::new();
        };
        if let Some(cmds) = self.enter_on_file(&m) {
            return cmds;
        }
        if m.outgoing && m.state == MessageState::Failed {
            self.leave();
            let tag = self.tag();
            self.info("sending it again…");
            return vec![Command::Retry { tag, id: m.id }];
        }
        if m.deleted || !m.kind.is_text() {
            self.error("only a text message can be answered");
            return Vec::new();
        }
        self.leave();
        self.rich.editing = None;
        self.rich.replying = Some((m.id, crate::client::manager::excerpt(&m.text)));
        self.info("replying: Enter sends the answer, Esc on an empty composer stops replying");
        Vec::new()
    }

    /// A loaded message changed (a reaction, an edit, a deletion).
    pub(super) fn on_changed(&mut self, message: Message) {
        if !self.is_open_thread(&message.contact, message.secret) {
            return;
        }
        if let Some(m) = self.thread.messages.iter_mut().find(|m| m.id == message.id) {
            // The loaded copy keeps its place (`seq`) and countdown.
            let (seq, expires_at) = (m.seq, m.expires_at);
            *m = Message {
                seq,
                expires_at: expires_at.or(message.expires_at),
                ..message.clone()
            };
        }
        if message.deleted {
            self.files.forget(&message.id);
            self.quotes_gone(&[Expired {
                id: message.id,
                contact: message.contact,
                secret: message.secret,
            }]);
        }
    }

    /// Quotes of messages that are gone say so.
    pub(super) fn quotes_gone(&mut self, gone: &[Expired]) {
        for m in &mut self.thread.messages {
            if let Some(q) = &mut m.reply
                && gone
                    .iter()
                    .any(|g| g.id == q.id && g.contact == m.contact && g.secret == m.secret)
            {
                q.gone = true;
                q.excerpt.clear();
            }
        }
    }

    fn is_open_thread(&self, handle: &str, secret: bool) -> bool {
        self.open
            .as_ref()
            .is_some_and(|o| o.handle == handle && o.secret == secret)
    }
}
