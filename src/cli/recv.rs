//! `sotto recv`: messages not read yet, then those that arrive, as JSON lines in the shape
//! of `sotto::client::export`.
//!
//! Owns the promise scripts rely on: a message is printed only after the manager has stored
//! it, and once; it is marked read only after its line was written, so one that could not be
//! printed (interrupted, or the reader went away) is printed by the next `recv`. Must not
//! print anything but those lines on stdout (warnings go to stderr).

use std::collections::HashSet;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use sotto::client::export::ExportedMessage;
use sotto::client::manager::{Change, Command, Event, ManagerHandle};
use sotto::client::store::{Message, Store};
use tokio::time::Instant;

use super::session::{CONNECT_TIMEOUT, RelayChoice, wait_online};
use super::signal::Interrupt;

/// How long `recv` listens once the relay's queue is drained.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Until {
    /// This long (zero: print what was queued and stop).
    Elapsed(Duration),
    /// Until SIGINT or SIGTERM.
    Interrupted,
}

impl Until {
    pub fn from_args(wait: f64, follow: bool) -> Result<Until> {
        if follow {
            return Ok(Until::Interrupted);
        }
        if !(0.0..=86_400.0).contains(&wait) {
            bail!("--wait takes a number of seconds from 0 to 86400 (or use --follow)");
        }
        Ok(Until::Elapsed(Duration::from_secs_f64(wait)))
    }
}

/// `only`: a group's handle, to print that group's messages alone.
pub async fn recv(
    dir: &Path,
    relay: RelayChoice,
    until: Until,
    only: Option<String>,
) -> Result<()> {
    // Listening before anything else: a signal that comes early still ends the run cleanly.
    let mut interrupt = Interrupt::listen()?;
    let me = Store::open(dir)?.registration()?.handle;
    let mut m = relay.join_or_spawn(dir)?;
    let mut printer = Printer {
        me,
        printed: HashSet::new(),
        only,
    };
    let finished = receive(&mut m, &mut interrupt, &mut printer, until).await;
    // What was printed is marked read before the manager stops: it finishes the commands
    // already queued.
    m.shutdown();
    finished
}

/// What `recv` waits for next.
enum Next {
    Event(Box<Event>),
    Interrupted,
    TimedOut,
}

/// The manager's next event, unless a signal or `deadline` comes first. Only this wait is
/// cut short by a signal, never the hand-over of what was printed.
async fn next(
    m: &mut ManagerHandle,
    interrupt: &mut Interrupt,
    deadline: Option<Instant>,
) -> Result<Next> {
    let timeout = async {
        match deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        () = interrupt.wait() => Ok(Next::Interrupted),
        e = m.events.recv() => match e {
            Some(e) => Ok(Next::Event(Box::new(e))),
            None => bail!("the client stopped unexpectedly; see the log in the profile directory"),
        },
        () = timeout => Ok(Next::TimedOut),
    }
}

/// Everything after the manager has started: up, drained, the backlog, then new arrivals.
async fn receive(
    m: &mut ManagerHandle,
    interrupt: &mut Interrupt,
    printer: &mut Printer,
    until: Until,
) -> Result<()> {
    tokio::select! {
        r = wait_online(m) => r?,
        () = interrupt.wait() => return Ok(()),
    }
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    // Reactions, edits and deletions in the queue: printed after the messages they are about.
    let mut changes = Vec::new();
    loop {
        match next(m, interrupt, Some(deadline)).await? {
            Next::Interrupted => return Ok(()),
            Next::TimedOut => {
                bail!("the relay did not finish delivering the queue in time; try again")
            }
            Next::Event(e) => match *e {
                Event::Drained => break,
                Event::Warning(w) => eprintln!("warning: {w}"),
                Event::MessageChanged { message, change } if !change.outgoing => {
                    changes.push(Line::change(&message, &change, &printer.me))
                }
                _ => {}
            },
        }
    }
    m.commands
        .send(Command::FetchUnshown { tag: 1 })
        .await
        .context("the client stopped unexpectedly")?;
    // Messages reported before the backlog are in it; from here on, each arrival is new.
    let mut fetched = false;
    let mut deadline = None;
    loop {
        let event = match next(m, interrupt, deadline).await? {
            Next::Interrupted | Next::TimedOut => return Ok(()),
            Next::Event(e) => *e,
        };
        let fresh = match event {
            Event::Unshown { messages, .. } => {
                fetched = true;
                if let Until::Elapsed(wait) = until {
                    deadline = Some(Instant::now() + wait);
                }
                let me = &printer.me;
                let mut lines: Vec<Line> = messages.iter().map(|m| Line::message(m, me)).collect();
                lines.append(&mut changes);
                lines
            }
            Event::Message(msg) if fetched && !msg.outgoing => {
                vec![Line::message(&msg, &printer.me)]
            }
            Event::MessageChanged { message, change } if !change.outgoing => {
                let line = Line::change(&message, &change, &printer.me);
                if !fetched {
                    changes.push(line);
                    continue;
                }
                vec![line]
            }
            Event::Warning(w) => {
                eprintln!("warning: {w}");
                continue;
            }
            _ => continue,
        };
        let (ids, open) = printer.print(fresh)?;
        if !ids.is_empty() {
            m.commands
                .send(Command::MarkShown { ids })
                .await
                .context("the client stopped unexpectedly")?;
        }
        if !open {
            // Nobody reads our output any more; what was not printed stays unread.
            return Ok(());
        }
    }
}

/// One line to print: a message (marked read once printed) or a change of one.
struct Line {
    contact: String,
    exported: ExportedMessage,
    /// A stored message that is marked read once printed.
    message: bool,
}

impl Line {
    fn message(m: &Message, me: &str) -> Line {
        Line {
            contact: m.contact.clone(),
            exported: ExportedMessage::new(m, me),
            message: true,
        }
    }

    fn change(m: &Message, change: &Change, me: &str) -> Line {
        Line {
            contact: m.contact.clone(),
            exported: ExportedMessage::change(m, change, me),
            message: false,
        }
    }
}

/// Writes messages as JSON lines, each once.
struct Printer {
    me: String,
    /// (contact, id): ids are unique per contact only.
    printed: HashSet<(String, String)>,
    /// Print only the messages of this thread's handle (a group's); the rest stay unread.
    only: Option<String>,
}

impl Printer {
    /// Prints those of `messages` not printed yet; returns the ids it printed, and false if
    /// stdout was closed on it.
    fn print(&mut self, lines: Vec<Line>) -> Result<(Vec<String>, bool)> {
        let mut out = std::io::stdout().lock();
        let mut ids = Vec::new();
        for msg in lines {
            if self.only.as_ref().is_some_and(|o| *o != msg.contact) {
                continue;
            }
            let key = (msg.contact, msg.exported.id.clone());
            if self.printed.contains(&key) {
                continue;
            }
            let line = msg.exported.to_line();
            match writeln!(out, "{line}").and_then(|()| out.flush()) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok((ids, false)),
                Err(e) => return Err(e).context("cannot write to standard output"),
            }
            if msg.message {
                ids.push(key.1.clone());
            }
            self.printed.insert(key);
        }
        Ok((ids, true))
    }
}
