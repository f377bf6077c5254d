//! `--mode normal|secret`: the real relay (in this process) with real clients, each a session
//! manager with its own store, N senders to N receivers.
//!
//! Each pair exchanges a first message before the measured run: setting up a session (for
//! secret, fetching the receiver's prekey bundle and PQXDH on both sides) happens once per
//! contact, not per message, so it is timed on its own (`first_contact_us`). With several
//! relays a sender and its receiver are on different ones (`relays`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sotto::client::manager::{self, Command, ConnState, Event, ManagerHandle};
use sotto::client::store::{MessageState, Store};

use crate::pace::{self, Pace};
use crate::relays::Relays;
use crate::{Args, Outcome};

/// Reads `m`'s events until one matches `wanted`; fails with `what` after 30 s.
async fn wait_for(
    m: &mut ManagerHandle,
    what: &str,
    wanted: impl Fn(&Event) -> bool,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout_at(deadline, m.events.recv()).await {
            Ok(Some(e)) if wanted(&e) => return Ok(()),
            Ok(Some(_)) => {}
            _ => bail!("{what}"),
        }
    }
}

pub(crate) async fn wait_online(m: &mut ManagerHandle) -> Result<()> {
    wait_for(m, "a client did not come online", |e| {
        matches!(e, Event::Connection(ConnState::Online))
    })
    .await
}

/// Every pair's first message, all at once: sent, stored by the receiver, and confirmed
/// back to the sender (so no receipt of it falls into the measured run). Returns each one's
/// latency, from the send call to the receiver's stored message.
async fn first_contact(
    senders: &mut [ManagerHandle],
    receivers: &mut [ManagerHandle],
    secret: bool,
) -> Result<Vec<u64>> {
    let pairs = senders
        .iter_mut()
        .zip(receivers.iter_mut())
        .enumerate()
        .map(|(i, (s, r))| async move {
            let id = format!("first-{i}");
            let at = Instant::now();
            let cmd = Command::Send {
                id: id.clone(),
                to: format!("r{i}"),
                secret,
                text: "hello".into(),
                reply_to: None,
            };
            s.commands.send(cmd).await.context("a client stopped")?;
            wait_for(r, "a first message did not arrive", |e| {
                matches!(e, Event::Message(m) if m.id == id)
            })
            .await?;
            let lat = at.elapsed().as_micros() as u64;
            wait_for(s, "a first message was not confirmed", |e| {
                matches!(e, Event::MessageState { id: x, state: MessageState::Delivered } if *x == id)
            })
            .await?;
            anyhow::Ok(lat)
        });
    futures::future::try_join_all(pairs).await
}

/// Every sender turns on disappearing messages in its thread, all at once; returns once
/// every receiver has the timer too, so what it receives next disappears.
async fn set_timers(
    senders: &mut [ManagerHandle],
    receivers: &mut [ManagerHandle],
    secret: bool,
    secs: u32,
) -> Result<()> {
    let pairs = senders
        .iter_mut()
        .zip(receivers.iter_mut())
        .enumerate()
        .map(|(i, (s, r))| async move {
            let cmd = Command::SetTimer {
                id: format!("timer-{i}"),
                contact: format!("r{i}"),
                secret,
                timer: Some(secs),
            };
            s.commands.send(cmd).await.context("a client stopped")?;
            wait_for(
                r,
                "a timer change did not arrive",
                |e| matches!(e, Event::TimerSet { timer: Some(t), .. } if *t == secs),
            )
            .await
        });
    futures::future::try_join_all(pairs).await?;
    Ok(())
}

/// The real relay with real clients: N senders, each sending M messages to its receiver.
pub async fn run(secret: bool, args: &Args) -> Result<Outcome> {
    let tmp = tempfile::tempdir()?;
    let relays = Relays::start(tmp.path(), args).await?;
    let n = args.clients;
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for i in 0..n {
        for (role, list) in [("s", &mut senders), ("r", &mut receivers)] {
            let url = match role {
                "s" => relays.sender(i).url(),
                _ => relays.receiver(i).url(),
            };
            let dir = tmp.path().join(format!("{role}{i}"));
            let store = Store::open(&dir)?;
            sotto::client::account::init(
                &store,
                &format!("{role}{i}"),
                url,
                std::time::SystemTime::now(),
                &mut rand::rng(),
            )
            .await
            .context("registering a load client")?;
            drop(store);
            let mut m = manager::spawn(&dir, None)?;
            wait_online(&mut m).await?;
            list.push(m);
        }
    }
    let first_contact_us = first_contact(&mut senders, &mut receivers, secret).await?;
    if let Some(secs) = args.timer {
        set_timers(&mut senders, &mut receivers, secret, secs).await?;
    }
    let sent_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let m = args.messages;
    let text = "x".repeat(args.size);
    let meter = relays.meter().await?;
    let start = Instant::now();
    let cpu_at_start = crate::cpu::used();
    let pace = args
        .rate
        .map(|r| Pace::new(tokio::time::Instant::now(), n, r));
    let mut tasks = Vec::new();
    for mut rx in receivers {
        let sent_at = sent_at.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(m);
            while lat.len() < m {
                match rx.events.recv().await {
                    Some(Event::Message(msg)) if !msg.outgoing => {
                        let at = sent_at.lock().unwrap().get(&msg.id).copied();
                        if let Some(at) = at {
                            lat.push(at.elapsed().as_micros() as u64);
                        }
                    }
                    Some(_) => {}
                    None => break,
                }
            }
            (lat, Instant::now(), rx)
        }));
    }
    let mut feeders = Vec::new();
    for (i, mut tx) in senders.into_iter().enumerate() {
        // A sender's events (its messages' states) are not measured, but they must be read:
        // a manager whose event channel is full waits for its UI, and sends nothing more.
        let (_, closed) = tokio::sync::mpsc::channel(1);
        let mut events = std::mem::replace(&mut tx.events, closed);
        tokio::spawn(async move { while events.recv().await.is_some() {} });
        let (sent_at, text) = (sent_at.clone(), text.clone());
        feeders.push(tokio::spawn(async move {
            for k in 0..m {
                pace::wait(pace.as_ref(), i, k).await;
                let id = format!("{i}-{k}-{}", uuid::Uuid::new_v4());
                sent_at.lock().unwrap().insert(id.clone(), Instant::now());
                let cmd = Command::Send {
                    id,
                    to: format!("r{i}"),
                    secret,
                    reply_to: None,
                    text: text.clone(),
                };
                if tx.commands.send(cmd).await.is_err() {
                    break;
                }
            }
            tx
        }));
    }
    let mut lat = Vec::new();
    let mut end = start;
    let mut keep = Vec::new();
    for t in tasks {
        let (l, at, rx) = t.await?;
        lat.extend(l);
        end = end.max(at);
        keep.push(rx);
    }
    let elapsed = end - start;
    let cpu = crate::cpu::used().saturating_sub(cpu_at_start);
    let relay_cpu = relays.cpu_since(&meter)?;
    let relay_peak_rss_kb = relays.peak_rss_kb()?;
    for f in feeders {
        keep.push(f.await?);
    }
    tokio::task::spawn_blocking(move || keep.into_iter().for_each(ManagerHandle::shutdown)).await?;
    let pg = relays.stop(meter).await?;
    Ok(Outcome {
        elapsed,
        latencies_us: lat,
        first_contact_us,
        cpu,
        relay_cpu,
        relay_peak_rss_kb,
        pg,
    })
}
