//! Delivers the notifications `notify` decides on: to the desktop's notification service over
//! D-Bus where there is one for the user in front of the screen, and otherwise (or when the
//! service refuses) through the terminal, with the sequence it is known to show: OSC 777 for
//! VTE terminals, foot, urxvt and Konsole, OSC 9 for the others. The bell is `App::bell`'s.
//!
//! Owns the thread that talks to D-Bus, so the screen never waits for the bus. Must not decide
//! which messages notify or what they say (`notify` does), and never logs a notification's text.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};

use tokio::sync::mpsc as tokio_mpsc;

use super::notify::Notification;

/// Notifications waiting for the D-Bus thread; past this, a slow bus sends them to the terminal.
const DESKTOP_BACKLOG: usize = 8;

/// Where notifications go (`notify_via` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Via {
    /// The desktop's service when this session has one and is not over SSH, else the terminal.
    #[default]
    Auto,
    /// The desktop's service whenever there is a session bus (even over SSH).
    Desktop,
    /// Only the terminal.
    Terminal,
}

impl FromStr for Via {
    type Err = String;

    fn from_str(s: &str) -> Result<Via, String> {
        match s {
            "auto" => Ok(Via::Auto),
            "desktop" => Ok(Via::Desktop),
            "terminal" => Ok(Via::Terminal),
            other => Err(format!(
                "notify_via = {other:?} is not a choice: use \"auto\", \"desktop\" or \"terminal\""
            )),
        }
    }
}

/// The terminal's notification sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Osc {
    /// `OSC 9 ; text`: iTerm2, WezTerm, Windows Terminal, kitty, Ghostty (others ignore it).
    Nine,
    /// `OSC 777 ; notify ; title ; text`: VTE terminals (GNOME Terminal, Tilix…), foot,
    /// urxvt with its notify extension, Konsole.
    SevenSevenSeven,
}

/// What the environment says about where a notification can be shown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Surroundings {
    /// A session bus is there (`DBUS_SESSION_BUS_ADDRESS`, or `$XDG_RUNTIME_DIR/bus`).
    pub session_bus: bool,
    /// The screen is reached over SSH: a bus here is not the user's desktop.
    pub ssh: bool,
    pub term: String,
    pub term_program: String,
    /// `VTE_VERSION` is set.
    pub vte: bool,
    /// `KONSOLE_VERSION` is set.
    pub konsole: bool,
}

impl Surroundings {
    /// Read from this process's environment.
    pub fn from_env() -> Surroundings {
        let var = |k: &str| std::env::var(k).unwrap_or_default();
        let runtime_bus = std::env::var_os("XDG_RUNTIME_DIR")
            .map(|d| std::path::Path::new(&d).join("bus").exists())
            .unwrap_or(false);
        Surroundings {
            session_bus: !var("DBUS_SESSION_BUS_ADDRESS").is_empty() || runtime_bus,
            ssh: std::env::var_os("SSH_CONNECTION").is_some()
                || std::env::var_os("SSH_TTY").is_some(),
            term: var("TERM"),
            term_program: var("TERM_PROGRAM"),
            vte: std::env::var_os("VTE_VERSION").is_some(),
            konsole: std::env::var_os("KONSOLE_VERSION").is_some(),
        }
    }

    /// Whether notifications go to the desktop's service first.
    pub fn desktop(&self, via: Via) -> bool {
        cfg!(all(unix, not(target_os = "macos")))
            && self.session_bus
            && match via {
                Via::Auto => !self.ssh,
                Via::Desktop => true,
                Via::Terminal => false,
            }
    }

    /// The sequence this terminal shows.
    pub fn osc(&self) -> Osc {
        let seven = self.vte
            || self.konsole
            || self.term.starts_with("foot")
            || self.term.starts_with("rxvt");
        if seven {
            Osc::SevenSevenSeven
        } else {
            Osc::Nine
        }
    }
}

/// The terminal sequence that shows `n`.
pub fn terminal(osc: Osc, n: &Notification) -> String {
    match osc {
        Osc::Nine => super::notify::osc(n),
        Osc::SevenSevenSeven => format!("\x1b]777;notify;sotto;{}\x1b\\", n.text),
    }
}

/// `text` for a notification body, which servers may read as markup (`<a>`, `<img>`…): a
/// peer must not make the desktop fetch an image or show a link it did not write as text.
pub fn body_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// Sends notifications where they can be seen.
pub struct Notifier {
    desktop: Option<SyncSender<Notification>>,
    /// Set by the D-Bus thread once the service refused: the rest go to the terminal.
    desktop_refused: Arc<AtomicBool>,
    /// Kept so that `refused` waits, rather than ends, once the D-Bus thread is gone.
    _refused_tx: tokio_mpsc::UnboundedSender<Notification>,
    refused: tokio_mpsc::UnboundedReceiver<Notification>,
    osc: Osc,
}

impl Notifier {
    pub fn new(via: Via, around: &Surroundings) -> Notifier {
        let (refused_tx, refused) = tokio_mpsc::unbounded_channel();
        let desktop_refused = Arc::new(AtomicBool::new(false));
        let desktop = if around.desktop(via) {
            desktop_thread(refused_tx.clone(), desktop_refused.clone())
        } else {
            None
        };
        Notifier {
            desktop,
            desktop_refused,
            _refused_tx: refused_tx,
            refused,
            osc: around.osc(),
        }
    }

    /// Takes `n` to the desktop, or gives back the terminal sequence to write now.
    pub fn deliver(&mut self, n: Notification) -> Option<String> {
        if self.desktop_refused.load(Ordering::Acquire) {
            self.desktop = None;
        }
        let Some(desktop) = &self.desktop else {
            return Some(terminal(self.osc, &n));
        };
        match desktop.try_send(n) {
            Ok(()) => None,
            Err(TrySendError::Full(n) | TrySendError::Disconnected(n)) => {
                Some(terminal(self.osc, &n))
            }
        }
    }

    /// The next notification the desktop's service refused, as the terminal sequence to write
    /// instead. Never ends while the notifier lives (it holds a sender itself).
    pub async fn refused(&mut self) -> String {
        match self.refused.recv().await {
            Some(n) => terminal(self.osc, &n),
            None => std::future::pending().await,
        }
    }

    /// Whether notifications go to the desktop now.
    pub fn to_desktop(&self) -> bool {
        self.desktop.is_some() && !self.desktop_refused.load(Ordering::Acquire)
    }
}

/// Starts the thread that shows notifications through D-Bus. Once the service refuses one, the
/// thread says so (`gave_up`) and hands that one and any that were already on their way back
/// (`refused`); it ends with the notifier.
#[cfg(all(unix, not(target_os = "macos")))]
fn desktop_thread(
    refused: tokio_mpsc::UnboundedSender<Notification>,
    gave_up: Arc<AtomicBool>,
) -> Option<SyncSender<Notification>> {
    let (tx, rx) = mpsc::sync_channel::<Notification>(DESKTOP_BACKLOG);
    let spawned = std::thread::Builder::new()
        .name("sotto-notify".into())
        .spawn(move || {
            while let Ok(n) = rx.recv() {
                if gave_up.load(Ordering::Acquire) {
                    let _ = refused.send(n);
                    continue;
                }
                let shown = notify_rust::Notification::new()
                    .appname("sotto")
                    .summary("sotto")
                    .body(&body_text(&n.text))
                    .show();
                if let Err(e) = shown {
                    // The error names the bus or the service, never the text.
                    tracing::info!(error = %e, "the desktop's notification service refused; notifying through the terminal");
                    gave_up.store(true, Ordering::Release);
                    let _ = refused.send(n);
                }
            }
        });
    match spawned {
        Ok(_) => Some(tx),
        Err(e) => {
            tracing::warn!(error = %e, "no thread for desktop notifications");
            None
        }
    }
}

#[cfg(not(all(unix, not(target_os = "macos"))))]
fn desktop_thread(
    _refused: tokio_mpsc::UnboundedSender<Notification>,
    _gave_up: Arc<AtomicBool>,
) -> Option<SyncSender<Notification>> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(text: &str) -> Notification {
        Notification { text: text.into() }
    }

    #[test]
    fn the_desktop_is_used_only_with_a_session_bus_and_not_over_ssh_unless_asked() {
        let mut s = Surroundings {
            session_bus: true,
            ..Default::default()
        };
        assert!(s.desktop(Via::Auto));
        assert!(!s.desktop(Via::Terminal));
        s.ssh = true;
        assert!(
            !s.desktop(Via::Auto),
            "a bus over SSH is the server's, not the user's"
        );
        assert!(s.desktop(Via::Desktop));
        s.session_bus = false;
        assert!(!s.desktop(Via::Desktop));
    }

    #[test]
    fn each_terminal_gets_the_sequence_it_shows() {
        let osc = |term: &str, vte: bool| {
            Surroundings {
                term: term.into(),
                vte,
                ..Default::default()
            }
            .osc()
        };
        assert_eq!(osc("xterm-256color", true), Osc::SevenSevenSeven);
        assert_eq!(osc("foot", false), Osc::SevenSevenSeven);
        assert_eq!(osc("rxvt-unicode-256color", false), Osc::SevenSevenSeven);
        assert_eq!(osc("xterm-kitty", false), Osc::Nine);
        assert_eq!(osc("xterm-256color", false), Osc::Nine);
        assert_eq!(
            terminal(Osc::SevenSevenSeven, &n("bob: hi")),
            "\x1b]777;notify;sotto;bob: hi\x1b\\"
        );
        assert_eq!(
            terminal(Osc::Nine, &n("bob: hi")),
            "\x1b]9;sotto · bob: hi\x1b\\"
        );
    }

    #[test]
    fn markup_in_a_body_is_shown_as_text() {
        assert_eq!(
            body_text(r#"bob: <img src="http://x/t.png"> & <a href="x">y</a>"#),
            r#"bob: &lt;img src="http://x/t.png"&gt; &amp; &lt;a href="x"&gt;y&lt;/a&gt;"#
        );
    }

    #[tokio::test]
    async fn without_a_desktop_the_terminal_shows_it_at_once() {
        let mut notifier = Notifier::new(Via::Terminal, &Surroundings::default());
        assert!(!notifier.to_desktop());
        assert_eq!(
            notifier.deliver(n("bob: hi")).as_deref(),
            Some("\x1b]9;sotto · bob: hi\x1b\\")
        );
    }
}
