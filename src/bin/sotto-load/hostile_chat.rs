//! The two legitimate users of `--mode hostile`: alice and bob, each a real session manager
//! with its own store on 127.0.0.1, chatting normal and secret at a fixed rate while an
//! attack runs. Owns their profiles and what they sent and received; knows nothing of the
//! attacks or the relay's process.
//!
//! Latency runs from the send call to the recipient's `Event::Message` (stored, and for
//! secret mail decrypted). Each arrival is counted by message id, so a duplicate is seen even
//! if the store would fold it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sotto::client::manager::{self, Command, Event, ManagerHandle};
use sotto::client::store::Store;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::pace::Pace;
use crate::relayed::wait_online;

/// The users, and whom each writes to.
const USERS: [(&str, &str); 2] = [("alice", "bob"), ("bob", "alice")];
/// How long a phase's last messages may take to arrive once its sends have ended, before the
/// phase is reported with what arrived (a relay that lost mail shows as delivered < sent).
const DELIVERY_PATIENCE: Duration = Duration::from_secs(60);

/// What the users' managers reported, by message id.
#[derive(Default)]
struct Seen {
    /// When each message was sent.
    sent_at: HashMap<String, Instant>,
    /// How often each message arrived, and its first arrival's latency in µs.
    arrived: HashMap<String, (u32, u64)>,
}

/// One phase of the chat.
pub struct PhaseChat {
    pub sent: usize,
    pub delivered: usize,
    /// Messages of the phase that arrived more than once.
    pub duplicated: usize,
    /// Latency of each delivered message, µs, sorted.
    pub latencies_us: Vec<u64>,
    /// Sends the managers reported failed, and warnings they raised, during the phase.
    pub failed: u64,
    pub warnings: u64,
}

pub struct Chat {
    handles: Vec<ManagerHandle>,
    seen: Arc<Mutex<Seen>>,
    arrival: Arc<Notify>,
    failed: Arc<AtomicU64>,
    warnings: Arc<AtomicU64>,
    text: String,
}

impl Chat {
    /// Registers alice and bob at `url` with profiles under `dir`, starts their managers and
    /// waits until both are online.
    pub async fn start(dir: &Path, url: &str, text_bytes: usize) -> Result<Chat> {
        let mut chat = Chat {
            handles: Vec::new(),
            seen: Arc::default(),
            arrival: Arc::default(),
            failed: Arc::default(),
            warnings: Arc::default(),
            text: "x".repeat(text_bytes),
        };
        for (user, _) in USERS {
            let profile = dir.join(user);
            let store = Store::open(&profile)?;
            sotto::client::account::init(
                &store,
                user,
                url,
                std::time::SystemTime::now(),
                &mut rand::rng(),
            )
            .await
            .with_context(|| format!("registering {user}"))?;
            drop(store);
            let mut m = manager::spawn(&profile, None)?;
            wait_online(&mut m).await?;
            // Every event is read from here on: a manager whose event channel is full waits
            // for its UI, and would stall the chat.
            let (_, closed) = mpsc::channel(1);
            let events = std::mem::replace(&mut m.events, closed);
            chat.watch(events);
            chat.handles.push(m);
        }
        Ok(chat)
    }

    fn watch(&self, mut events: mpsc::Receiver<Event>) {
        let (seen, arrival) = (self.seen.clone(), self.arrival.clone());
        let (failed, warnings) = (self.failed.clone(), self.warnings.clone());
        tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                match e {
                    Event::Message(m) if !m.outgoing => {
                        let now = Instant::now();
                        let mut seen = seen.lock().unwrap();
                        let lat = seen
                            .sent_at
                            .get(&m.id)
                            .map_or(0, |at| (now - *at).as_micros() as u64);
                        seen.arrived.entry(m.id).or_insert((0, lat)).0 += 1;
                        drop(seen);
                        arrival.notify_one();
                    }
                    Event::MessageFailed { .. } => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    Event::Warning(w) => {
                        warnings.fetch_add(1, Ordering::Relaxed);
                        // What the user would read; it names no message text.
                        eprintln!("a legitimate client warned: {w}");
                    }
                    _ => {}
                }
            }
        });
    }

    fn send(&self, user: usize, secret: bool) -> (String, Command) {
        let id = uuid::Uuid::new_v4().to_string();
        self.seen
            .lock()
            .unwrap()
            .sent_at
            .insert(id.clone(), Instant::now());
        let cmd = Command::Send {
            id: id.clone(),
            to: USERS[user].1.into(),
            secret,
            text: self.text.clone(),
            reply_to: None,
        };
        (id, cmd)
    }

    /// Waits until every one of `ids` has arrived, or `DELIVERY_PATIENCE` has passed; returns
    /// how many arrived.
    async fn until_delivered(&self, ids: &[String]) -> usize {
        let deadline = tokio::time::Instant::now() + DELIVERY_PATIENCE;
        loop {
            let n = {
                let seen = self.seen.lock().unwrap();
                ids.iter()
                    .filter(|id| seen.arrived.contains_key(*id))
                    .count()
            };
            if n == ids.len() || tokio::time::Instant::now() >= deadline {
                return n;
            }
            // `notify_one` keeps a wake-up for an arrival between the count and this wait.
            let _ = tokio::time::timeout_at(deadline, self.arrival.notified()).await;
        }
    }

    /// Each user sends the other a normal and a secret message, one after another, so that
    /// the secret sessions exist (set up once per contact, not per message) before any phase.
    pub async fn warm_up(&self) -> Result<()> {
        for (user, secret) in [(0, false), (0, true), (1, false), (1, true)] {
            let (id, cmd) = self.send(user, secret);
            self.handles[user]
                .commands
                .send(cmd)
                .await
                .context("a client stopped")?;
            if self.until_delivered(std::slice::from_ref(&id)).await != 1 {
                bail!("a first message between the legitimate users did not arrive");
            }
        }
        Ok(())
    }

    /// Sends at `rate` messages per second in total, the users taking turns and each
    /// alternating normal and secret, until `stop`; then waits for the phase's messages.
    pub async fn phase(&self, stop: &CancellationToken, rate: f64) -> Result<PhaseChat> {
        let (failed, warnings) = (
            self.failed.load(Ordering::Relaxed),
            self.warnings.load(Ordering::Relaxed),
        );
        let pace = Pace::new(tokio::time::Instant::now(), USERS.len(), rate);
        let mut ids = Vec::new();
        for n in 0.. {
            let (user, k) = (n % USERS.len(), n / USERS.len());
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = pace.wait(user, k) => {}
            }
            let (id, cmd) = self.send(user, k % 2 == 1);
            self.handles[user]
                .commands
                .send(cmd)
                .await
                .context("a client stopped")?;
            ids.push(id);
        }
        let delivered = self.until_delivered(&ids).await;
        let seen = self.seen.lock().unwrap();
        let arrivals: Vec<(u32, u64)> = ids
            .iter()
            .filter_map(|id| seen.arrived.get(id).copied())
            .collect();
        let mut latencies_us: Vec<u64> = arrivals.iter().map(|(_, lat)| *lat).collect();
        latencies_us.sort_unstable();
        Ok(PhaseChat {
            sent: ids.len(),
            delivered,
            duplicated: arrivals.iter().filter(|(n, _)| *n > 1).count(),
            latencies_us,
            failed: self.failed.load(Ordering::Relaxed) - failed,
            warnings: self.warnings.load(Ordering::Relaxed) - warnings,
        })
    }

    /// Messages of the whole run that arrived more than once (a late duplicate of an earlier
    /// phase's message shows here).
    pub fn duplicated(&self) -> usize {
        let seen = self.seen.lock().unwrap();
        seen.arrived.values().filter(|(n, _)| *n > 1).count()
    }

    /// Stops both managers (a manager stops once its command channel closes, so no other
    /// sender of it may be kept); everything they stored is committed.
    pub async fn stop(self) -> Result<()> {
        let handles = self.handles;
        tokio::task::spawn_blocking(move || handles.into_iter().for_each(ManagerHandle::shutdown))
            .await?;
        Ok(())
    }
}
