//! `--mode raw`: the transport floor, a bare tokio-tungstenite forwarder in this process with
//! no persistence and no crypto, and N senders to N receivers through it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use futures_util::{SinkExt, StreamExt};
use sotto::wire::WS_BUFFER_BYTES;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use crate::pace::{self, Pace};
use crate::{Args, Outcome};

/// The buffers sotto's relay and client use: a floor that zero-fills tungstenite's default
/// 128 KiB read buffer on every read would flatter the ratio against it.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(WS_BUFFER_BYTES)
        .write_buffer_size(WS_BUFFER_BYTES)
}

/// The transport floor: a forwarder that routes binary frames `[to: u32][body]` between
/// WebSocket connections, which name themselves with a first text frame.
pub async fn run(args: &Args) -> Result<Outcome> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("ws://{}", listener.local_addr()?);
    let routes: Arc<Mutex<HashMap<u32, mpsc::Sender<Vec<u8>>>>> = Arc::default();
    let stop = CancellationToken::new();
    let (r, s) = (routes.clone(), stop.clone());
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                _ = s.cancelled() => return,
                a = listener.accept() => match a { Ok((st, _)) => st, Err(_) => continue },
            };
            // As the relay does: without it, small frames wait on Nagle and delayed ACKs
            // (tens of ms), which is no floor for a relay that does not wait.
            let _ = stream.set_nodelay(true);
            let routes = r.clone();
            tokio::spawn(async move {
                let Ok(mut ws) =
                    tokio_tungstenite::accept_async_with_config(stream, Some(ws_config())).await
                else {
                    return;
                };
                let Some(Ok(Message::Text(name))) = ws.next().await else {
                    return;
                };
                let me: u32 = name.as_str().parse().unwrap_or(u32::MAX);
                let (tx, mut rx) = mpsc::channel::<Vec<u8>>(256);
                routes.lock().unwrap().insert(me, tx);
                loop {
                    tokio::select! {
                        out = rx.recv() => match out {
                            Some(b) => if ws.send(Message::binary(b)).await.is_err() { return },
                            None => return,
                        },
                        inc = ws.next() => match inc {
                            Some(Ok(Message::Binary(b))) if b.len() >= 4 => {
                                let to = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                                let target = routes.lock().unwrap().get(&to).cloned();
                                if let Some(t) = target {
                                    let _ = t.send(b.to_vec()).await;
                                }
                            }
                            Some(Ok(_)) => {}
                            _ => return,
                        },
                    }
                }
            });
        }
    });
    let (n, m) = (args.clients, args.messages);
    let base = Instant::now();
    let mut receivers = Vec::new();
    // Clients connect with TCP_NODELAY (`true` below), as sotto's client does.
    for i in 0..n {
        let (mut ws, _) =
            tokio_tungstenite::connect_async_with_config(&url, Some(ws_config()), true).await?;
        ws.send(Message::text((n + i).to_string())).await?;
        receivers.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(m);
            while lat.len() < m {
                let Some(Ok(Message::Binary(b))) = ws.next().await else {
                    break;
                };
                let sent = u64::from_be_bytes(b[4..12].try_into().unwrap_or([0; 8]));
                lat.push((base.elapsed().as_micros() as u64).saturating_sub(sent));
            }
            (lat, base.elapsed())
        }));
    }
    // Every sender connects before any sends, so that a paced schedule starts with all of
    // them ready and an unpaced run starts them together.
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let (mut ws, _) =
            tokio_tungstenite::connect_async_with_config(&url, Some(ws_config()), true).await?;
        ws.send(Message::text(i.to_string())).await?;
        conns.push(ws);
    }
    let pace = args
        .rate
        .map(|r| Pace::new(tokio::time::Instant::now(), n, r));
    // The measured window opens as the first sender starts: every receiver is registered by
    // now (they connected first). Read before the senders are spawned, or a loaded machine
    // can deliver everything before `start` is read and the window comes out negative.
    let start = base.elapsed();
    // Sampled with `start`, so that the CPU time and the wall time cover the same span.
    let cpu_at_start = crate::cpu::used();
    let mut senders = Vec::new();
    for (i, mut ws) in conns.into_iter().enumerate() {
        let size = args.size;
        senders.push(tokio::spawn(async move {
            for k in 0..m {
                pace::wait(pace.as_ref(), i, k).await;
                let mut b = Vec::with_capacity(12 + size);
                b.extend_from_slice(&((n + i) as u32).to_be_bytes());
                b.extend_from_slice(&(base.elapsed().as_micros() as u64).to_be_bytes());
                b.resize(12 + size, b'x');
                if ws.send(Message::binary(b)).await.is_err() {
                    break;
                }
            }
            // Keep the connection open until the receivers are done.
            ws
        }));
    }
    let mut lat = Vec::new();
    let mut end = Duration::ZERO;
    for r in receivers {
        let (l, t) = r.await?;
        lat.extend(l);
        end = end.max(t);
    }
    let cpu = crate::cpu::used().saturating_sub(cpu_at_start);
    for s in senders {
        drop(s.await?);
    }
    stop.cancel();
    Ok(Outcome {
        elapsed: end - start,
        latencies_us: lat,
        first_contact_us: Vec::new(),
        cpu,
        relay_cpu: Vec::new(),
        relay_peak_rss_kb: None,
        pg: None,
    })
}
