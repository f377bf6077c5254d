//! Files on the chat screen: `/attach`, the offer to attach a pasted path, download on Enter,
//! `o` open and `s` save on a selected file message, the transfer rates shown under a file
//! in progress, and which pictures to ask the manager for.
//!
//! Owns the `Files` part of the app's state. Pure like the rest of `App`: turns keys and
//! events into state and `Command`s, reads no clock (rates use `App::now_ms`) and no file;
//! `resolve` is the one place that looks at the file system, and the terminal loop calls it
//! before the app sees an action. Starting the system's opener is the terminal loop's.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::app::{Action, App};
use super::composer::Edit;
use super::file_view::size;
use super::paths::{self, PathCompletion};
use super::pictures::Pictures;
use crate::client::attachment::{Attachment, AttachmentState};
use crate::client::manager::Command;
use crate::client::store::Message;

/// How much a new rate sample counts against the running one: smooth enough that the time
/// left does not jump with every chunk, quick enough to follow a change of link.
const SMOOTHING: f64 = 0.3;

/// What the file keys and the file-system look-ups lead to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileAction {
    /// A paste that is exactly the path of an existing file: offer to attach it.
    Offer { path: PathBuf, size: u64 },
    /// y (true) or any other key, to that offer.
    Answer(bool),
    /// Tab after `/attach `: the path as completed from its directory.
    Completed(PathCompletion),
    /// `o` on a selected file message.
    Open,
    /// `s` on a selected file message: ask where to save it.
    Save,
    /// Esc while the composer asks where to save.
    CancelSave,
    /// The system's opener could not open a file: why.
    OpenerFailed(String),
}

/// A transfer's rate, from successive progress reports.
#[derive(Debug, Clone)]
struct Rate {
    done: u64,
    at_ms: u64,
    per_sec: Option<f64>,
}

/// The file part of the app's state.
#[derive(Debug, Clone)]
pub struct Files {
    /// Draw pictures inline (`images` in the config); off, a one-line placeholder.
    pub images: bool,
    /// A pasted file waiting for y/n: its path and size, and the pasted text to insert on n.
    pub offer: Option<(PathBuf, u64, String)>,
    /// The message whose file the composer is asking a destination for.
    pub saving: Option<String>,
    /// Where a saved file goes unless the user types another place (`~/Downloads/` when it
    /// exists, else the current directory), set by the terminal loop.
    pub save_dir: String,
    /// Tags of `OpenAttachment`s sent from here, whose answer the opener gets.
    opening: HashSet<u64>,
    /// A decrypted copy for the terminal loop to hand to the system's opener.
    pub wants_open: Option<PathBuf>,
    rates: HashMap<String, Rate>,
    pub pictures: Pictures,
}

impl Default for Files {
    fn default() -> Self {
        Files {
            images: true,
            offer: None,
            saving: None,
            save_dir: "./".into(),
            opening: HashSet::new(),
            wants_open: None,
            rates: HashMap::new(),
            pictures: Pictures::default(),
        }
    }
}

impl Files {
    /// Message `id` is gone (expired, deleted): its picture, rate and any save it waited
    /// for go with it.
    pub fn forget(&mut self, id: &str) {
        self.pictures.forget(id);
        self.rates.remove(id);
        if self.saving.as_deref() == Some(id) {
            self.saving = None;
        }
    }

    /// Bytes per second of message `id`'s transfer, once two reports have come.
    pub fn rate(&self, id: &str) -> Option<f64> {
        self.rates.get(id).and_then(|r| r.per_sec)
    }

    fn sample(&mut self, id: &str, state: &AttachmentState, now_ms: u64) {
        let done = match state {
            AttachmentState::Uploading { done } | AttachmentState::Downloading { done } => *done,
            _ => {
                self.rates.remove(id);
                return;
            }
        };
        match self.rates.get_mut(id) {
            Some(r) if done >= r.done && now_ms > r.at_ms => {
                let now = (done - r.done) as f64 * 1000.0 / (now_ms - r.at_ms) as f64;
                r.per_sec = Some(match r.per_sec {
                    Some(before) => before + SMOOTHING * (now - before),
                    None => now,
                });
                r.done = done;
                r.at_ms = now_ms;
            }
            // Several reports in one instant: the next one measures from the first.
            Some(r) if done >= r.done => {}
            // Started again (a retry): a new measurement.
            _ => {
                self.rates.insert(
                    id.to_string(),
                    Rate {
                        done,
                        at_ms: now_ms,
                        per_sec: None,
                    },
                );
            }
        }
    }
}

/// The file system's part of an action, looked up by the terminal loop before the app gets
/// it: a paste that names an existing file becomes an offer to attach it, Tab after
/// `/attach ` completes from the directory.
pub fn resolve(app: &App, action: Action) -> Action {
    match action {
        Action::Edit(Edit::Paste(text)) if app.open.is_some() => {
            match paths::existing_file(&text) {
                Some((path, size)) => Action::Files(FileAction::Offer { path, size }),
                None => Action::Edit(Edit::Paste(text)),
            }
        }
        Action::Complete => match attach_path_typed(app) {
            Some(typed) => {
                Action::Files(FileAction::Completed(paths::complete(&typed, paths::list)))
            }
            None => Action::Complete,
        },
        other => other,
    }
}

const ATTACH: &str = "/attach ";

/// The path typed so far after `/attach `, when the cursor is in it.
fn attach_path_typed(app: &App) -> Option<String> {
    let text = app.composer.text();
    let typed = text[..app.composer.cursor()].strip_prefix(ATTACH)?;
    match paths::words(typed).as_slice() {
        [] => Some(String::new()),
        [one] if !typed.ends_with(char::is_whitespace) => Some(one.clone()),
        _ => None,
    }
}

/// What a key means while a paste offer waits for y/n or the composer asks where to save.
pub fn key_action(app: &App, k: &KeyEvent) -> Option<Action> {
    let plain = !k
        .modifiers
        .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT);
    if app.files.offer.is_some() {
        let yes = plain && matches!(k.code, KeyCode::Char('y' | 'Y') | KeyCode::Enter);
        return Some(Action::Files(FileAction::Answer(yes)));
    }
    if app.files.saving.is_some() && k.code == KeyCode::Esc {
        return Some(Action::Files(FileAction::CancelSave));
    }
    None
}

impl App {
    pub(super) fn files_action(&mut self, a: FileAction) -> Vec<Command> {
        match a {
            FileAction::Offer { path, size } => {
                let name = file_name(&path);
                self.info(format!(
                    "attach {name} ({})? y attaches, any other key pastes the path",
                    super::file_view::size(size)
                ));
                let pasted = path.display().to_string();
                self.files.offer = Some((path, size, pasted));
            }
            FileAction::Answer(yes) => {
                let Some((path, _, pasted)) = self.files.offer.take() else {
                    return Vec::new();
                };
                self.status = None;
                if yes {
                    return self.attach(path, None);
                }
                let (secret, width) = (self.secret(), self.composer_width());
                self.composer.apply(Edit::Paste(pasted), secret, width);
            }
            FileAction::Completed(done) => {
                let rest = self.composer.text()[self.composer.cursor()..].to_string();
                let space = if done.done && !rest.starts_with(' ') {
                    " "
                } else {
                    ""
                };
                let line = format!("{ATTACH}{}{space}", paths::escape(&done.path));
                let cursor = line.len();
                self.composer.set(format!("{line}{rest}"), cursor);
                if !done.choices.is_empty() {
                    self.info(done.choices.join("  "));
                }
            }
            FileAction::Open => return self.open_selected(),
            FileAction::Save => self.ask_save(),
            FileAction::OpenerFailed(why) => self.error(why),
            FileAction::CancelSave => {
                self.files.saving = None;
                self.composer.set(String::new(), 0);
                self.info("not saved");
            }
        }
        Vec::new()
    }

    /// `/attach PATH [CAPTION]` (or a pasted path, accepted): send the file to the open
    /// thread.
    pub(super) fn attach(&mut self, path: PathBuf, caption: Option<String>) -> Vec<Command> {
        let Some(open) = self.open.clone() else {
            self.error("open a conversation first, then /attach a file to it");
            return Vec::new();
        };
        let id = uuid::Uuid::new_v4().to_string();
        self.sent_to.insert(id.clone(), open.handle.clone());
        self.info(format!("sending {}…", file_name(&path)));
        vec![Command::Attach {
            id,
            to: open.handle,
            secret: open.secret,
            path,
            caption,
        }]
    }

    /// `/attach`'s words, as typed.
    pub(super) fn attach_typed(&mut self, path: String, caption: Option<String>) -> Vec<Command> {
        self.attach(paths::expand(&path), caption)
    }

    fn selected_file(&mut self) -> Option<(Message, Attachment)> {
        let m = self
            .thread
            .messages
            .iter()
            .find(|m| Some(m.id.as_str()) == self.rich.selected.as_deref())?
            .clone();
        match m.attachment.clone() {
            Some(a) if !m.deleted => Some((m, a)),
            _ => {
                self.error("this message has no file");
                None
            }
        }
    }

    /// Whether the selected file can be opened or saved; says why not.
    fn ready_file(&mut self) -> Option<(Message, Attachment)> {
        let (m, a) = self.selected_file()?;
        match a.state {
            AttachmentState::Ready => Some((m, a)),
            AttachmentState::Remote => {
                self.error("the file is not downloaded yet: Enter downloads it");
                None
            }
            AttachmentState::Failed { .. } => {
                self.error("the file did not come through: Enter tries again");
                None
            }
            _ => {
                self.error("the file is still on its way; wait for it to finish");
                None
            }
        }
    }

    fn open_selected(&mut self) -> Vec<Command> {
        let Some((m, a)) = self.ready_file() else {
            return Vec::new();
        };
        let tag = self.tag();
        self.files.opening.insert(tag);
        self.info(format!("opening {}…", a.name));
        vec![Command::OpenAttachment { tag, id: m.id }]
    }

    fn ask_save(&mut self) {
        let Some((m, a)) = self.ready_file() else {
            return;
        };
        let dest = format!("{}{}", self.files.save_dir, paths::escape(&a.name));
        let end = dest.len();
        self.leave();
        self.composer.set(dest, end);
        self.files.saving = Some(m.id);
        self.info("save to: Enter saves there, Esc cancels");
    }

    /// Enter in the composer while it asks where to save.
    pub(super) fn save_to(&mut self, id: String) -> Vec<Command> {
        let typed = self.composer.take(false);
        let dest = match paths::words(&typed).as_slice() {
            [one] => one.clone(),
            _ => typed.trim().to_string(),
        };
        if dest.is_empty() {
            self.error("type where to save the file, or Esc");
            self.files.saving = Some(id);
            return Vec::new();
        }
        self.status = None;
        let tag = self.tag();
        vec![Command::SaveAttachment {
            tag,
            id,
            dest: paths::expand(&dest),
        }]
    }

    /// Enter on a selected message with a file: download it if it is still at the relay or
    /// failed (send ours again); None for any other message, which Enter answers.
    pub(super) fn enter_on_file(&mut self, m: &Message) -> Option<Vec<Command>> {
        let a = m.attachment.as_ref().filter(|_| !m.deleted)?;
        let failed = matches!(a.state, AttachmentState::Failed { .. });
        if !failed && a.state != AttachmentState::Remote {
            return None;
        }
        let tag = self.tag();
        self.leave();
        if m.outgoing {
            self.info("sending it again…");
            return Some(vec![Command::Retry {
                tag,
                id: m.id.clone(),
            }]);
        }
        self.info(format!("downloading {} ({})…", a.name, size(a.size)));
        Some(vec![Command::Download {
            tag,
            id: m.id.clone(),
        }])
    }

    /// `Event::Attachment`: the file of a loaded message moved on.
    pub(super) fn on_attachment(&mut self, id: String, attachment: Attachment) -> Vec<Command> {
        self.files.sample(&id, &attachment.state, self.now_ms);
        if let Some(m) = self.thread.messages.iter_mut().find(|m| m.id == id) {
            m.attachment = Some(attachment);
        }
        self.want_pictures()
    }

    pub(super) fn on_opened(&mut self, tag: u64, path: PathBuf) {
        if self.files.opening.remove(&tag) {
            self.files.wants_open = Some(path);
        }
    }

    pub(super) fn on_saved(&mut self, path: PathBuf) {
        self.info(format!("saved to {}", path.display()));
    }

    pub(super) fn on_preview(
        &mut self,
        id: String,
        width: u32,
        height: u32,
        image: Option<std::sync::Arc<image::RgbaImage>>,
    ) {
        if let Err(e) = self.files.pictures.arrived(id, width, height, image) {
            self.error(e);
        }
    }

    /// The pictures of loaded Ready images not yet asked for at the present width (their
    /// size only when pictures are off). The terminal loop calls it before each frame, so a
    /// resize asks again; events that bring images call it too.
    pub fn want_pictures(&mut self) -> Vec<Command> {
        let cells = if self.files.images {
            Pictures::cells(self.view().0)
        } else {
            (0, 0)
        };
        let end = self.thread.messages.len();
        // Only the newest screenfuls can be on screen: a bound keeps this cheap.
        let start = end.saturating_sub(200);
        let mut cmds = Vec::new();
        for m in &self.thread.messages[start..end] {
            let shown = m
                .attachment
                .as_ref()
                .filter(|a| !m.deleted && a.is_image() && a.state == AttachmentState::Ready);
            if shown.is_some()
                && let Some(cmd) = self.files.pictures.want(&m.id, cells)
            {
                cmds.push(cmd);
            }
        }
        cmds
    }
}

fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}
