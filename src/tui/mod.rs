//! The terminal user interface: the loop that draws the app, turns key presses into actions
//! and carries commands and events between the app and the session manager.
//!
//! Owns the terminal (raw mode, alternate screen, restored on quit, on error and, through
//! ratatui's panic hook, on panic). Talks to the manager only through `Command`/`Event`;
//! never touches SQLite, sockets or keys. Redraws only when something happened: no busy loop.

pub mod app;
pub mod clock;
pub mod commands;
pub mod keys;
pub mod layout;
pub mod notice;
pub mod render;
pub mod scroll;
pub mod thread_view;
pub mod verify;

use std::io::Write as _;

use crossterm::event::{
    DisableMouseCapture, EnableMouseCapture, Event as TermEvent, EventStream, MouseEventKind,
};
use futures::StreamExt as _;
use tokio::sync::mpsc::error::TrySendError;

use crate::client::manager::{Command, ManagerHandle};
use app::{Action, App};
use keys::KeyMap;

#[derive(Debug, thiserror::Error)]
pub enum TuiError {
    #[error("terminal error")]
    Io(#[from] std::io::Error),
    #[error("the session manager stopped; see the log file in the profile directory")]
    ManagerStopped,
}

/// How the TUI should behave, from the config file and the command line.
#[derive(Debug, Clone)]
pub struct Options {
    pub keys: KeyMap,
    /// Ring the terminal bell when a message arrives in a thread that is not open.
    pub bell: bool,
    /// A contact to add (if needed) and open at start.
    pub open: Option<String>,
    /// A first line for the status bar.
    pub greeting: Option<String>,
    /// Capture the mouse for wheel scrolling (off: the terminal's own selection works).
    pub mouse: bool,
    /// How message times are written.
    pub clock: clock::Clock,
    /// Below this width the contact list hides by itself.
    pub contacts_min_width: u16,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            keys: KeyMap::default(),
            bell: true,
            open: None,
            greeting: None,
            mouse: true,
            clock: clock::Clock::default(),
            contacts_min_width: layout::DEFAULT_CONTACTS_MIN_WIDTH,
        }
    }
}

/// Runs the TUI until the user quits (or `hangup` fires), then restores the terminal and stops
/// the manager.
pub async fn run(
    mut manager: ManagerHandle,
    me: String,
    opts: Options,
    hangup: &mut Hangup,
) -> Result<(), TuiError> {
    let mut terminal = ratatui::try_init()?;
    let result = match setup_extras(&opts) {
        Ok(()) => event_loop(&mut terminal, &mut manager, me, &opts, hangup).await,
        Err(e) => Err(e.into()),
    };
    restore_extras(&opts);
    ratatui::restore();
    tokio::task::block_in_place(|| manager.shutdown());
    result
}

/// Saves the terminal's title (xterm's title stack; ignored where unsupported) and turns on
/// mouse capture if asked; a panic hook undoes both before ratatui's own hook restores the
/// rest, so no exit path leaves the mouse captured.
fn setup_extras(opts: &Options) -> std::io::Result<()> {
    let mouse = opts.mouse;
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        undo_extras(mouse);
        previous(info);
    }));
    let mut out = std::io::stdout();
    out.write_all(b"\x1b[22;0t")?;
    if mouse {
        crossterm::execute!(out, EnableMouseCapture)?;
    }
    out.flush()
}

fn undo_extras(mouse: bool) {
    let mut out = std::io::stdout();
    if mouse {
        let _ = crossterm::execute!(out, DisableMouseCapture);
    }
    let _ = out.write_all(b"\x1b[23;0t");
    let _ = out.flush();
}

fn restore_extras(opts: &Options) {
    undo_extras(opts.mouse);
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Hands commands to the manager without ever blocking the UI.
fn send_all(manager: &ManagerHandle, app: &mut App, cmds: Vec<Command>) -> Result<(), TuiError> {
    for cmd in cmds {
        match manager.commands.try_send(cmd) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                app.on_event(crate::client::manager::Event::Warning(
                    "busy: that was not done; try again in a moment".into(),
                ));
            }
            Err(TrySendError::Closed(_)) => return Err(TuiError::ManagerStopped),
        }
    }
    Ok(())
}

async fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    manager: &mut ManagerHandle,
    me: String,
    opts: &Options,
    hangup: &mut Hangup,
) -> Result<(), TuiError> {
    let mut app = App::new(me);
    app.bell = opts.bell;
    app.clock = opts.clock.clone();
    app.contacts_min_width = opts.contacts_min_width;
    if let Some(g) = &opts.greeting {
        app.status = Some(app::Status::info(g.clone()));
    }
    let mut shown_title = String::new();
    let start = app.start(opts.open.as_deref());
    send_all(manager, &mut app, start)?;
    let mut input = EventStream::new();
    loop {
        app.now_ms = now_ms();
        let size = terminal.size()?;
        app.screen = (size.width, size.height);
        app.overlay_scroll_max = render::help_scroll_max(&opts.keys, size.into());
        terminal.draw(|f| render::draw(f, &app, &opts.keys))?;
        let want = app.title();
        if want != shown_title {
            crossterm::execute!(terminal.backend_mut(), crossterm::terminal::SetTitle(&want))?;
            shown_title = want;
        }
        if std::mem::take(&mut app.ring) {
            let out = terminal.backend_mut();
            out.write_all(b"\x07")?;
            out.flush()?;
        }
        let cmds = tokio::select! {
            // The terminal went away or we were asked to stop: leave as cleanly as on /quit.
            _ = hangup.recv() => return Ok(()),
            // Countdowns on screen move once a second; with none, nothing ticks.
            _ = tokio::time::sleep(std::time::Duration::from_millis(1000 - now_ms() % 1000)),
                if app.counting_down() => Vec::new(),
            ev = input.next() => match ev {
                Some(Ok(TermEvent::Key(k))) => match opts.keys.action(&app, k) {
                    Some(a) => app.update(a),
                    None => continue,
                },
                Some(Ok(TermEvent::Paste(s))) => app.update(Action::Paste(s)),
                Some(Ok(TermEvent::Mouse(m))) => match m.kind {
                    MouseEventKind::ScrollUp => app.update(Action::WheelUp),
                    MouseEventKind::ScrollDown => app.update(Action::WheelDown),
                    _ => continue,
                },
                // A resize only needs the redraw at the top of the loop.
                Some(Ok(_)) => Vec::new(),
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(()),
            },
            ev = manager.events.recv() => {
                let Some(ev) = ev else { return Err(TuiError::ManagerStopped) };
                let mut cmds = app.on_event(ev);
                // Take whatever else is already waiting before drawing once.
                while let Ok(ev) = manager.events.try_recv() {
                    cmds.extend(app.on_event(ev));
                }
                cmds
            }
        };
        send_all(manager, &mut app, cmds)?;
        if app.quit {
            return Ok(());
        }
    }
}

/// SIGHUP (the terminal closed) and SIGTERM, so the TUI can restore the terminal and let the
/// demo remove its files instead of dying mid-write. Create it first thing: a signal that
/// comes before it exists still kills the process the default way.
pub struct Hangup {
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Hangup {
    pub fn new() -> std::io::Result<Hangup> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Hangup {
                hup: signal(SignalKind::hangup())?,
                term: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Hangup {})
    }

    pub async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.hup.recv() => {}
            _ = self.term.recv() => {}
        }
        #[cfg(not(unix))]
        std::future::pending::<()>().await
    }
}
