//! The terminal user interface: the loop that draws the app, turns key presses into actions
//! and carries commands and events between the app and the session manager.
//!
//! Owns the terminal (raw mode, alternate screen, bracketed paste; restored on quit, on error,
//! on panic, and while `$EDITOR` has it). Talks to the manager only through `Command`/`Event`;
//! never touches SQLite, sockets or keys. Redraws only when something happened: no busy loop.

pub mod app;
pub mod clock;
pub mod commands;
pub mod complete;
pub mod composer;
pub mod editor;
pub mod file_view;
pub mod files;
pub mod group_commands;
pub mod groups;
pub mod keys;
pub mod layout;
pub mod marks;
pub mod notice;
pub mod notifier;
pub mod notify;
pub mod opener;
pub mod paths;
pub mod pictures;
pub mod render;
pub mod rich;
pub mod rich_view;
pub mod scroll;
pub mod search;
pub mod search_view;
pub mod thread_view;
pub mod typing;
pub mod verify;
pub mod wrap;

use std::io::Write as _;
use std::path::PathBuf;

use crossterm::event::{
    DisableBracketedPaste, DisableMouseCapture, EnableBracketedPaste, EnableMouseCapture,
    Event as TermEvent, EventStream, MouseEventKind,
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
    /// Which arriving messages notify (`notify` in the config).
    pub notify: notify::Mode,
    /// Where notifications go (`notify_via` in the config).
    pub notify_via: notifier::Via,
    /// The profile's private (0700) directory: where a draft for `$EDITOR` is written.
    pub private_dir: Option<PathBuf>,
    /// Draw pictures inline (`images`); off, a one-line placeholder.
    pub images: bool,
    /// The program that opens a file (`opener`); None: the system's.
    pub opener: Option<String>,
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
            notify: notify::Mode::default(),
            notify_via: notifier::Via::default(),
            private_dir: None,
            images: true,
            opener: None,
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
/// bracketed paste and, if asked, mouse capture; a panic hook undoes them before ratatui's
/// own hook restores the rest, so no exit path leaves them on.
fn setup_extras(opts: &Options) -> std::io::Result<()> {
    let mouse = opts.mouse;
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        undo_extras(mouse);
        previous(info);
    }));
    let mut out = std::io::stdout();
    out.write_all(b"\x1b[22;0t")?;
    input_modes_on(mouse)?;
    out.flush()
}

fn input_modes_on(mouse: bool) -> std::io::Result<()> {
    crossterm::execute!(std::io::stdout(), EnableBracketedPaste)?;
    if mouse {
        crossterm::execute!(std::io::stdout(), EnableMouseCapture)?;
    }
    Ok(())
}

fn input_modes_off(mouse: bool) {
    let _ = crossterm::execute!(std::io::stdout(), DisableBracketedPaste);
    if mouse {
        let _ = crossterm::execute!(std::io::stdout(), DisableMouseCapture);
    }
}

fn undo_extras(mouse: bool) {
    input_modes_off(mouse);
    let mut out = std::io::stdout();
    let _ = out.write_all(b"\x1b[23;0t");
    let _ = out.flush();
}

fn restore_extras(opts: &Options) {
    undo_extras(opts.mouse);
}

/// Gives the terminal back for an editor: no bracketed paste or mouse capture, no raw mode,
/// main screen.
fn suspend(mouse: bool) {
    input_modes_off(mouse);
    ratatui::restore();
}

/// Takes the terminal again after `suspend`, and has the next draw repaint all of it.
fn resume(terminal: &mut ratatui::DefaultTerminal, mouse: bool) -> std::io::Result<()> {
    crossterm::terminal::enable_raw_mode()?;
    crossterm::execute!(std::io::stdout(), crossterm::terminal::EnterAlternateScreen)?;
    input_modes_on(mouse)?;
    terminal.clear()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Sleeps until Unix ms `at`; forever if there is no `at`.
async fn sleep_until_ms(at: Option<u64>) {
    match at {
        Some(at) => {
            tokio::time::sleep(std::time::Duration::from_millis(
                at.saturating_sub(now_ms()),
            ))
            .await
        }
        None => std::future::pending().await,
    }
}

/// Whether this is a terminal known to answer the graphics query (kitty, WezTerm, iTerm2,
/// Ghostty, foot), outside tmux. Elsewhere the query is not sent: a terminal that does not
/// answer leaves the query's reader waiting on the keyboard, taking the user's keys.
fn answers_graphics_query() -> bool {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    if !var("TMUX").is_empty() {
        return false;
    }
    let term = var("TERM");
    let program = var("TERM_PROGRAM");
    !var("KITTY_WINDOW_ID").is_empty()
        || !var("WEZTERM_EXECUTABLE").is_empty()
        || ["kitty", "ghostty", "foot", "wezterm"]
            .iter()
            .any(|t| term.contains(t))
        || ["iTerm.app", "WezTerm", "ghostty"].contains(&program.as_str())
}

/// Hands commands to the manager without ever blocking the UI.
fn send_all(manager: &ManagerHandle, app: &mut App, cmds: Vec<Command>) -> Result<(), TuiError> {
    for cmd in cmds {
        match manager.commands.try_send(cmd) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                app.on_event(crate::client::manager::Event::Warning(
                    crate::client::manager::Warning::general(
                        "busy: that was not done; try again in a moment",
                    ),
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
    app.notify = opts.notify;
    if let Some(g) = &opts.greeting {
        app.status = Some(app::Status::info(g.clone()));
    }
    let mut notifier =
        notifier::Notifier::new(opts.notify_via, &notifier::Surroundings::from_env());
    app.files.images = opts.images;
    app.files.save_dir = paths::default_save_dir();
    if opts.images && answers_graphics_query() {
        // Asked once, before the first frame and before anything reads the terminal's input.
        match ratatui_image::picker::Picker::from_query_stdio() {
            Ok(picker) => app.files.pictures = pictures::Pictures::new(picker),
            Err(e) => tracing::info!("no terminal graphics, pictures in half-blocks: {e}"),
        }
    }
    let opener = opts
        .opener
        .clone()
        .unwrap_or_else(|| opener::default_opener().to_string());
    let (opener_failed, mut opener_failures) = tokio::sync::mpsc::unbounded_channel();
    let mut shown_title = String::new();
    let start = app.start(opts.open.as_deref());
    send_all(manager, &mut app, start)?;
    let mut input = EventStream::new();
    loop {
        if std::mem::take(&mut app.wants_editor) {
            // The stream's reader thread would take the editor's keys: stop it meanwhile.
            drop(input);
            // Dropping it leaves crossterm's reader a wake-up that would make the next read
            // (ratatui's cursor query once the editor is done) give up at once: spend it here.
            let _ = crossterm::event::poll(std::time::Duration::ZERO);
            let done = compose_in_editor(terminal, manager, &mut app, opts, hangup).await;
            input = EventStream::new();
            match done? {
                Some(edited) => app.update(Action::Edited(edited)),
                None => return Ok(()),
            };
        }
        app.now_ms = now_ms();
        let size = terminal.size()?;
        app.screen = (size.width, size.height);
        // A resize may want the pictures at another size.
        let wanted = app.want_pictures();
        send_all(manager, &mut app, wanted)?;
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
        if let Some(seq) = app.notification.take().and_then(|n| notifier.deliver(n)) {
            let out = terminal.backend_mut();
            out.write_all(seq.as_bytes())?;
            out.flush()?;
        }
        let cmds = tokio::select! {
            // The terminal went away or we were asked to stop: leave as cleanly as on /quit.
            _ = hangup.recv() => return Ok(()),
            // Countdowns on screen move once a second; with none, nothing ticks.
            _ = tokio::time::sleep(std::time::Duration::from_millis(1000 - now_ms() % 1000)),
                if app.counting_down() => Vec::new(),
            // The desktop refused a notification: the terminal shows it instead.
            seq = notifier.refused() => {
                let out = terminal.backend_mut();
                out.write_all(seq.as_bytes())?;
                out.flush()?;
                Vec::new()
            }
            // The user stopped typing without sending: the peer is told.
            _ = sleep_until_ms(app.typing.idle_at()) => {
                app.now_ms = now_ms();
                app.typing.tick(app.now_ms)
            }
            ev = input.next() => match ev {
                Some(Ok(TermEvent::Key(k))) => match opts.keys.action(&app, k) {
                    Some(a) => {
                        app.now_ms = now_ms();
                        let a = files::resolve(&app, a);
                        app.update(a)
                    }
                    None => continue,
                },
                Some(Ok(TermEvent::Paste(s))) => {
                    app.now_ms = now_ms();
                    let a = files::resolve(&app, Action::Edit(composer::Edit::Paste(s)));
                    app.update(a)
                }
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
                app.now_ms = now_ms();
                let mut cmds = app.on_event(ev);
                // Take whatever else is already waiting before drawing once.
                while let Ok(ev) = manager.events.try_recv() {
                    cmds.extend(app.on_event(ev));
                }
                cmds
            }
            Some(failure) = opener_failures.recv() => {
                app.update(Action::Files(files::FileAction::OpenerFailed(failure)))
            }
        };
        send_all(manager, &mut app, cmds)?;
        if let Some(path) = app.files.wants_open.take() {
            opener::open(&opener, path, opener_failed.clone());
        }
        if app.quit {
            return Ok(());
        }
    }
}

/// Hands the terminal to `$EDITOR` on a draft of the composer's text and takes it back.
/// Manager events keep being applied meanwhile (nothing is drawn). Returns the editor's
/// text or an error sentence for the status line; None if a hangup came meanwhile.
async fn compose_in_editor(
    terminal: &mut ratatui::DefaultTerminal,
    manager: &mut ManagerHandle,
    app: &mut App,
    opts: &Options,
    hangup: &mut Hangup,
) -> Result<Option<Result<String, String>>, TuiError> {
    let draft = match editor::Draft::create(opts.private_dir.as_deref(), app.composer.text()) {
        Ok(draft) => draft,
        Err(e) => return Ok(Some(Err(e.to_string()))),
    };
    let name = editor::from_env();
    suspend(opts.mouse);
    let mut command = tokio::process::Command::from(draft.command(&name));
    command.kill_on_drop(true);
    let exited = match command.spawn() {
        Err(source) => Err(editor::EditorError::Start {
            editor: name.clone(),
            source,
        }),
        Ok(mut child) => loop {
            let cmds = tokio::select! {
                status = child.wait() => break status.map_err(|source| editor::EditorError::Start {
                    editor: name.clone(),
                    source,
                }),
                _ = hangup.recv() => return Ok(None),
                ev = manager.events.recv() => match ev {
                    Some(ev) => app.on_event(ev),
                    None => return Err(TuiError::ManagerStopped),
                },
            };
            send_all(manager, app, cmds)?;
        },
    };
    resume(terminal, opts.mouse)?;
    let edited = exited.and_then(|status| draft.finish(&name, status));
    Ok(Some(edited.map_err(|e| e.to_string())))
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
