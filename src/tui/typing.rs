//! Typing indicators in the chat screen: when to tell the open thread's peer that the user
//! is typing (at most once per `SAY_EVERY_MS` while they type, stopped when the composer is
//! emptied or sent, the thread changes, or after `IDLE_MS` without an edit), and which
//! peers show as typing now.
//!
//! Pure: times come in as Unix ms from the terminal loop, commands go out. How long a peer
//! shows as typing is the manager's (`client::manager::typing`): it says when they stop.
//! Must not draw.

use std::collections::HashSet;

use super::app::ThreadKey;
use crate::client::manager::Command;

/// While the user types, the peer is told again at most this often (their client shows it
/// for 6 s after each word).
pub const SAY_EVERY_MS: u64 = 3000;
/// After this long without an edit the user is taken to have stopped typing.
pub const IDLE_MS: u64 = 5000;

#[derive(Debug, Clone, Default)]
pub struct Typing {
    /// Threads whose peer is typing now.
    peers: HashSet<ThreadKey>,
    /// The thread told that the user is typing, if any.
    ours: Option<Ours>,
}

#[derive(Debug, Clone)]
struct Ours {
    thread: ThreadKey,
    /// When the peer was last told (Unix ms).
    said_at: u64,
    /// When the user last changed the composer's text.
    edited_at: u64,
}

fn say(thread: &ThreadKey, active: bool) -> Command {
    Command::Typing {
        to: thread.handle.clone(),
        secret: thread.secret,
        active,
    }
}

impl Typing {
    /// The manager says `thread`'s peer is typing, or stopped.
    pub fn peer(&mut self, thread: ThreadKey, active: bool) {
        match active {
            true => self.peers.insert(thread),
            false => self.peers.remove(&thread),
        };
    }

    /// Whether `thread`'s peer is typing now.
    pub fn shows(&self, thread: &ThreadKey) -> bool {
        self.peers.contains(thread)
    }

    /// The user changed the composer's text at `now` in `thread`; `writing`: it now holds
    /// a message (not nothing, not a /command).
    pub fn edited(&mut self, thread: Option<&ThreadKey>, writing: bool, now: u64) -> Vec<Command> {
        let Some(thread) = thread.filter(|_| writing) else {
            return self.stop();
        };
        let mut cmds = Vec::new();
        if self.ours.as_ref().is_some_and(|o| o.thread != *thread) {
            cmds.extend(self.stop());
        }
        match &mut self.ours {
            Some(o) if now.saturating_sub(o.said_at) < SAY_EVERY_MS => o.edited_at = now,
            _ => {
                cmds.push(say(thread, true));
                self.ours = Some(Ours {
                    thread: thread.clone(),
                    said_at: now,
                    edited_at: now,
                });
            }
        }
        cmds
    }

    /// The user stopped typing (sent, emptied the composer, left the thread): tell the peer
    /// if they were told otherwise.
    pub fn stop(&mut self) -> Vec<Command> {
        self.ours
            .take()
            .map(|o| vec![say(&o.thread, false)])
            .unwrap_or_default()
    }

    /// When the user counts as idle if they edit nothing before (Unix ms).
    pub fn idle_at(&self) -> Option<u64> {
        self.ours.as_ref().map(|o| o.edited_at + IDLE_MS)
    }

    /// Time passed: at `now`, an idle user has stopped typing.
    pub fn tick(&mut self, now: u64) -> Vec<Command> {
        match self.idle_at() {
            Some(at) if now >= at => self.stop(),
            _ => Vec::new(),
        }
    }
}

/// Whether the composer's `text` is a message being written (a /command is not; `//`
/// starts a message that begins with `/`).
pub fn writing(text: &str) -> bool {
    !text.trim().is_empty() && (!text.starts_with('/') || text.starts_with("//"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bob(secret: bool) -> ThreadKey {
        ThreadKey {
            handle: "bob".into(),
            secret,
        }
    }

    fn said(cmds: &[Command]) -> Vec<(bool, bool)> {
        cmds.iter()
            .map(|c| match c {
                Command::Typing { secret, active, .. } => (*secret, *active),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn typing_is_said_once_per_interval_and_stops_when_idle() {
        let mut t = Typing::default();
        let b = bob(false);
        assert_eq!(said(&t.edited(Some(&b), true, 1_000)), [(false, true)]);
        assert!(t.edited(Some(&b), true, 2_000).is_empty());
        assert!(t.edited(Some(&b), true, 3_999).is_empty());
        assert_eq!(said(&t.edited(Some(&b), true, 4_000)), [(false, true)]);
        assert_eq!(t.idle_at(), Some(4_000 + IDLE_MS));
        assert!(t.tick(8_999).is_empty());
        assert_eq!(said(&t.tick(9_000)), [(false, false)]);
        assert_eq!(t.idle_at(), None);
        assert!(t.tick(20_000).is_empty());
    }

    #[test]
    fn emptying_sending_or_a_command_stops_it_and_a_new_thread_takes_over() {
        let mut t = Typing::default();
        assert_eq!(said(&t.edited(Some(&bob(false)), true, 0)), [(false, true)]);
        assert_eq!(
            said(&t.edited(Some(&bob(false)), false, 10)),
            [(false, false)]
        );
        assert!(t.edited(Some(&bob(false)), false, 20).is_empty());
        t.edited(Some(&bob(false)), true, 30);
        assert_eq!(
            said(&t.edited(Some(&bob(true)), true, 40)),
            [(false, false), (true, true)]
        );
        assert_eq!(said(&t.stop()), [(true, false)]);
        assert!(t.stop().is_empty());
        assert!(writing("hi") && writing("//x") && !writing("/timer 30s") && !writing("  "));
    }
}
