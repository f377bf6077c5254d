//! `--mode relay`: the real relay in this process with protocol-level clients
//! (`wire_client`): no client store and no crypto, N senders to N receivers.
//!
//! Isolates what the relay itself adds over the raw forwarder (authenticated connections,
//! the group-committed queue, the push window, acks), which `normal` cannot: there every
//! message also costs two client stores. The body carries the send time; each receiver acks
//! every envelope as a client does. With several relays a sender and its receiver are on
//! different ones (`relays`).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use sotto::tls::Endpoint;
use sotto::wire::{ClientFrame, Payload, RelayFrame};

use crate::pace::{self, Pace};
use crate::relays::Relays;
use crate::wire_client::{self, Account};
use crate::{Args, Outcome};

/// Registers `handle` and returns its account.
async fn account(relay: &Endpoint, handle: String) -> Result<Account> {
    wire_client::register(relay, handle)
        .await
        .context("registering a load client")
}

pub async fn run(args: &Args) -> Result<Outcome> {
    let tmp = tempfile::tempdir()?;
    let relays = Relays::start(tmp.path(), args).await?;
    let (n, m) = (args.clients, args.messages);
    let base = Instant::now();
    let mut receivers = Vec::with_capacity(n);
    let mut recipients = Vec::with_capacity(n);
    for i in 0..n {
        let url = relays.receiver(i);
        let acc = account(url, format!("r{i}")).await?;
        recipients.push(acc.account_id.clone());
        let ws = wire_client::sign_in(url, &acc).await?;
        receivers.push(tokio::spawn(receive(ws, m, base)));
    }
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let url = relays.sender(i);
        let acc = account(url, format!("s{i}")).await?;
        conns.push(wire_client::sign_in(url, &acc).await?);
    }
    let meter = relays.meter().await?;
    let pace = args
        .rate
        .map(|r| Pace::new(tokio::time::Instant::now(), n, r));
    let start = base.elapsed();
    let cpu_at_start = crate::cpu::used();
    let mut senders = Vec::with_capacity(n);
    for (i, (ws, to)) in conns.into_iter().zip(recipients).enumerate() {
        senders.push(tokio::spawn(send(ws, i, to, m, args.size, pace, base)));
    }
    let mut lat = Vec::with_capacity(n * m);
    let mut end = start;
    for r in receivers {
        let (l, t) = r.await??;
        lat.extend(l);
        end = end.max(t);
    }
    let cpu = crate::cpu::used().saturating_sub(cpu_at_start);
    let relay_cpu = relays.cpu_since(&meter)?;
    let relay_peak_rss_kb = relays.peak_rss_kb()?;
    for s in senders {
        s.await??;
    }
    let pg = relays.stop(meter).await?;
    Ok(Outcome {
        elapsed: end - start,
        latencies_us: lat,
        first_contact_us: Vec::new(),
        cpu,
        relay_cpu,
        relay_peak_rss_kb,
        pg,
    })
}

/// Sends `m` envelopes to `to` (reading the relay's `ok`s alongside) and waits for all `ok`s.
async fn send(
    ws: wire_client::Ws,
    i: usize,
    to: String,
    m: usize,
    size: usize,
    pace: Option<Pace>,
    base: Instant,
) -> Result<()> {
    let (mut sink, mut stream) = ws.split();
    let oks = tokio::spawn(async move {
        let mut oks = 0;
        while oks < m {
            match wire_client::read_frame(&mut stream).await? {
                RelayFrame::Ok { .. } => oks += 1,
                RelayFrame::Error { code, message, .. } => {
                    bail!("the relay refused an envelope: {code:?}: {message}")
                }
                _ => {}
            }
        }
        Ok(stream)
    });
    for k in 0..m {
        pace::wait(pace.as_ref(), i, k).await;
        let mut body = Vec::with_capacity(size.max(8));
        body.extend_from_slice(&(base.elapsed().as_micros() as u64).to_be_bytes());
        body.resize(size.max(8), b'x');
        let frame = ClientFrame::Send {
            req: k as u64,
            to: to.clone(),
            body: body.into(),
            expires_at: None,
            online_only: false,
        };
        sink.send(wire_client::message(&frame))
            .await
            .context("cannot send to the relay")?;
    }
    // The connection stays open until every envelope is committed: closing earlier could
    // look like a client that gave up.
    let _stream = oks.await??;
    Ok(())
}

/// Receives `m` envelopes, acking each, and returns their latencies and when the last came.
async fn receive(ws: wire_client::Ws, m: usize, base: Instant) -> Result<(Vec<u64>, Duration)> {
    let (mut sink, mut stream) = ws.split();
    let mut lat = Vec::with_capacity(m);
    while lat.len() < m {
        let RelayFrame::Deliver { id, payload, .. } = wire_client::read_frame(&mut stream).await?
        else {
            continue;
        };
        let Payload::Normal { body, .. } = payload else {
            bail!("a sealed envelope reached a receiver that was sent none");
        };
        let sent = u64::from_be_bytes(body.0[..8].try_into().context("a body under 8 bytes")?);
        lat.push((base.elapsed().as_micros() as u64).saturating_sub(sent));
        sink.send(wire_client::message(&ClientFrame::Ack { id }))
            .await
            .context("cannot ack to the relay")?;
    }
    Ok((lat, base.elapsed()))
}
