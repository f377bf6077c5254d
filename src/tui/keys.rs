//! Keys to actions: the default bindings, the ones the config file may change, and how a
//! binding is spelled (`ctrl-s`, `alt-enter`, `f1`, `tab`).
//!
//! Pure: takes a crossterm key event and the app's focus, returns an `Action`. Knows nothing
//! of what an action does.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use serde::Deserialize;

use super::app::{Action, App, Focus};
use super::composer::Edit;

/// A key with its modifiers, as written in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    pub code: KeyCode,
    pub mods: KeyModifiers,
}

impl Binding {
    /// Parses `ctrl-s`, `alt-x`, `f1`, `tab`, `esc`, `enter`, or a single character.
    pub fn parse(s: &str) -> Result<Binding, String> {
        let lower = s.trim().to_ascii_lowercase();
        let mut mods = KeyModifiers::NONE;
        let mut rest = lower.as_str();
        loop {
            if let Some(r) = rest.strip_prefix("ctrl-") {
                mods |= KeyModifiers::CONTROL;
                rest = r;
            } else if let Some(r) = rest.strip_prefix("alt-") {
                mods |= KeyModifiers::ALT;
                rest = r;
            } else {
                break;
            }
        }
        let code = match rest {
            "tab" => KeyCode::Tab,
            "esc" => KeyCode::Esc,
            "enter" => KeyCode::Enter,
            f if f.starts_with('f') && f.len() > 1 => match f[1..].parse::<u8>() {
                Ok(n @ 1..=12) => KeyCode::F(n),
                _ => return Err(format!("{s:?} is not a key")),
            },
            c if c.chars().count() == 1 => KeyCode::Char(c.chars().next().unwrap_or(' ')),
            _ => {
                return Err(format!(
                    "{s:?} is not a key: write e.g. ctrl-s, alt-x, f1, tab"
                ));
            }
        };
        Ok(Binding { code, mods })
    }

    fn matches(&self, k: &KeyEvent) -> bool {
        let code = match k.code {
            KeyCode::Char(c) => KeyCode::Char(c.to_ascii_lowercase()),
            c => c,
        };
        code == self.code && k.modifiers.difference(KeyModifiers::SHIFT) == self.mods
    }

    pub fn label(&self) -> String {
        let mut s = String::new();
        if self.mods.contains(KeyModifiers::CONTROL) {
            s.push_str("Ctrl-");
        }
        if self.mods.contains(KeyModifiers::ALT) {
            s.push_str("Alt-");
        }
        match self.code {
            KeyCode::Char(c) => s.push(c.to_ascii_uppercase()),
            KeyCode::F(n) => s.push_str(&format!("F{n}")),
            KeyCode::Tab => s.push_str("Tab"),
            KeyCode::Esc => s.push_str("Esc"),
            KeyCode::Enter => s.push_str("Enter"),
            _ => s.push('?'),
        }
        s
    }
}

/// The `[keys]` section of the config file; every key optional.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    pub toggle_secret: Option<String>,
    pub quit: Option<String>,
    pub help: Option<String>,
    pub focus: Option<String>,
    pub contacts: Option<String>,
    pub search: Option<String>,
}

/// The bindings that can be changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMap {
    pub toggle_secret: Binding,
    pub quit: Binding,
    pub help: Binding,
    pub focus: Binding,
    pub contacts: Binding,
    pub search: Binding,
}

impl Default for KeyMap {
    fn default() -> Self {
        let b = |code, mods| Binding { code, mods };
        KeyMap {
            toggle_secret: b(KeyCode::Char('s'), KeyModifiers::CONTROL),
            quit: b(KeyCode::Char('c'), KeyModifiers::CONTROL),
            help: b(KeyCode::F(1), KeyModifiers::NONE),
            focus: b(KeyCode::Tab, KeyModifiers::NONE),
            contacts: b(KeyCode::F(2), KeyModifiers::NONE),
            search: b(KeyCode::Char('f'), KeyModifiers::CONTROL),
        }
    }
}

impl KeyMap {
    pub fn from_config(c: &KeyConfig) -> Result<KeyMap, String> {
        let mut map = KeyMap::default();
        let fields = [
            (&c.toggle_secret, &mut map.toggle_secret),
            (&c.quit, &mut map.quit),
            (&c.help, &mut map.help),
            (&c.focus, &mut map.focus),
            (&c.contacts, &mut map.contacts),
            (&c.search, &mut map.search),
        ];
        for (spec, slot) in fields {
            if let Some(s) = spec {
                *slot = Binding::parse(s).map_err(|e| format!("[keys]: {e}"))?;
            }
        }
        Ok(map)
    }

    /// The action a key press means in the app's present state, if any.
    pub fn action(&self, app: &App, k: KeyEvent) -> Option<Action> {
        if k.kind == KeyEventKind::Release {
            return None;
        }
        if self.quit.matches(&k) {
            return Some(Action::Quit);
        }
        if app.overlay == Some(super::app::Overlay::Search) {
            return search_action(k);
        }
        if app.overlay == Some(super::app::Overlay::Verify) {
            match k.code {
                KeyCode::Char('m') => return Some(Action::MarkVerified),
                KeyCode::Char('u') => return Some(Action::Unmark),
                KeyCode::Char('a') => return Some(Action::AcceptChange),
                _ => {}
            }
        }
        let plain = !k
            .modifiers
            .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT);
        if app.holds_question()
            && plain
            && let KeyCode::Char(c) = k.code
        {
            // Help opened by a `?` that may have begun a message: typing on writes it.
            return Some(Action::Edit(Edit::Insert(c)));
        }
        if app.overlay.is_some() {
            return match k.code {
                KeyCode::Up | KeyCode::Char('k') => Some(Action::Up),
                KeyCode::Down | KeyCode::Char('j') => Some(Action::Down),
                KeyCode::PageUp => Some(Action::PageUp),
                KeyCode::PageDown => Some(Action::PageDown),
                KeyCode::Home => Some(Action::Top),
                KeyCode::End => Some(Action::Bottom),
                KeyCode::Esc | KeyCode::Enter | KeyCode::Char('q' | '?') => {
                    Some(Action::CloseOverlay)
                }
                _ => None,
            };
        }
        if self.toggle_secret.matches(&k) {
            return Some(Action::ToggleSecret);
        }
        if self.help.matches(&k) {
            return Some(Action::Help);
        }
        if self.search.matches(&k) {
            return Some(Action::Search);
        }
        if app.focus == Focus::Composer
            && k.code == KeyCode::Tab
            && k.modifiers.is_empty()
            && app.composer.text().starts_with('/')
        {
            return Some(Action::Complete);
        }
        if self.focus.matches(&k) {
            return Some(Action::ToggleFocus);
        }
        if self.contacts.matches(&k) {
            return Some(Action::ToggleContacts);
        }
        // Home and End scroll the thread; while a message is being typed they move in it,
        // and Ctrl-Home/Ctrl-End scroll.
        let scroll_keys = app.composer.text().is_empty()
            || app.focus == Focus::Contacts
            || k.modifiers.contains(KeyModifiers::CONTROL);
        match k.code {
            KeyCode::PageUp => return Some(Action::PageUp),
            KeyCode::PageDown => return Some(Action::PageDown),
            KeyCode::Home if scroll_keys => return Some(Action::Top),
            KeyCode::End if scroll_keys => return Some(Action::Bottom),
            _ => {}
        }
        match app.focus {
            Focus::Contacts => match k.code {
                KeyCode::Up | KeyCode::Char('k') => Some(Action::Up),
                KeyCode::Down | KeyCode::Char('j') => Some(Action::Down),
                KeyCode::Enter => Some(Action::Open),
                KeyCode::Esc => Some(Action::FocusComposer),
                KeyCode::Char('?') => Some(Action::Help),
                _ => None,
            },
            Focus::Composer => composer_action(app, k),
        }
    }
}

/// What a key means in the search overlay: its line of words takes what is typed.
fn search_action(k: KeyEvent) -> Option<Action> {
    let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
    let edit = |e| Some(Action::Edit(e));
    match k.code {
        KeyCode::Up => Some(Action::Up),
        KeyCode::Down => Some(Action::Down),
        KeyCode::PageUp => Some(Action::PageUp),
        KeyCode::PageDown => Some(Action::PageDown),
        KeyCode::Home => Some(Action::Top),
        KeyCode::End => Some(Action::Bottom),
        KeyCode::Enter => Some(Action::Submit),
        KeyCode::Esc => Some(Action::CloseOverlay),
        KeyCode::Backspace if ctrl || k.modifiers.contains(KeyModifiers::ALT) => {
            edit(Edit::DeleteWordBack)
        }
        KeyCode::Backspace => edit(Edit::Backspace),
        KeyCode::Char('u' | 'w') if ctrl => edit(Edit::KillToStart),
        KeyCode::Char(c) if !ctrl && !k.modifiers.contains(KeyModifiers::ALT) => {
            edit(Edit::Insert(c))
        }
        _ => None,
    }
}

/// What a key means in the composer: readline's keys, as shells and most chat clients have.
fn composer_action(app: &App, k: KeyEvent) -> Option<Action> {
    if let Some(a) = super::files::key_action(app, &k) {
        return Some(a);
    }
    if let Some(a) = super::rich::key_action(app, &k) {
        return Some(a);
    }
    let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
    let alt = k.modifiers.contains(KeyModifiers::ALT);
    let empty = app.composer.is_empty();
    let edit = |e| Some(Action::Edit(e));
    match k.code {
        KeyCode::Enter if alt || k.modifiers.contains(KeyModifiers::SHIFT) => edit(Edit::Newline),
        KeyCode::Enter => Some(Action::Submit),
        KeyCode::Char(c) if ctrl => match c.to_ascii_lowercase() {
            'a' => edit(Edit::LineStart),
            'e' => edit(Edit::LineEnd),
            'w' => edit(Edit::DeleteWordBack),
            'u' => edit(Edit::KillToStart),
            'k' => edit(Edit::KillToEnd),
            'y' => edit(Edit::Yank),
            'x' => Some(Action::Editor),
            // What was sent this session (↑ on an empty composer selects a message).
            'p' => edit(Edit::Up),
            'n' => edit(Edit::Down),
            _ => None,
        },
        KeyCode::Char(c) if alt => match c.to_ascii_lowercase() {
            'b' => edit(Edit::WordBack),
            'f' => edit(Edit::WordForward),
            _ => None,
        },
        // `?` on an empty composer is help; inside a message it is a question mark.
        KeyCode::Char('?') if empty => Some(Action::HelpOrQuestion),
        KeyCode::Char(c) => edit(Edit::Insert(c)),
        KeyCode::Backspace if alt || ctrl => edit(Edit::DeleteWordBack),
        KeyCode::Backspace => edit(Edit::Backspace),
        KeyCode::Delete => edit(Edit::Delete),
        KeyCode::Left if alt || ctrl => edit(Edit::WordBack),
        KeyCode::Right if alt || ctrl => edit(Edit::WordForward),
        KeyCode::Left => edit(Edit::Left),
        KeyCode::Right => edit(Edit::Right),
        KeyCode::Up => edit(Edit::Up),
        KeyCode::Down => edit(Edit::Down),
        // On an empty composer Home and End are left to the conversation.
        KeyCode::Home if !empty => edit(Edit::LineStart),
        KeyCode::End if !empty => edit(Edit::LineEnd),
        KeyCode::Esc if !empty => edit(Edit::Clear),
        KeyCode::Esc => Some(Action::FocusComposer),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_parse_and_refuse_nonsense() {
        let b = Binding::parse("ctrl-s").unwrap();
        assert_eq!(
            (b.code, b.mods),
            (KeyCode::Char('s'), KeyModifiers::CONTROL)
        );
        assert_eq!(Binding::parse("F2").unwrap().code, KeyCode::F(2));
        assert_eq!(Binding::parse("alt-x").unwrap().label(), "Alt-X");
        assert!(Binding::parse("ctrl-").is_err());
        assert!(Binding::parse("f13").is_err());
        assert!(Binding::parse("hyper-q").is_err());
    }

    #[test]
    fn config_rebinds() {
        let map = KeyMap::from_config(&KeyConfig {
            toggle_secret: Some("ctrl-x".into()),
            ..KeyConfig::default()
        })
        .unwrap();
        let app = App::new("me");
        let key = KeyEvent::new(KeyCode::Char('x'), KeyModifiers::CONTROL);
        assert_eq!(map.action(&app, key), Some(Action::ToggleSecret));
        let old = KeyEvent::new(KeyCode::Char('s'), KeyModifiers::CONTROL);
        assert_eq!(map.action(&app, old), None);
    }
}
