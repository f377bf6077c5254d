//! `--mode hostile`: the attacks of issue 18 against a real relay process while two
//! legitimate users chat, one phase per attack after a quiet one. Owns the run: the relay's
//! settings, the phases' timing, the sampling of the relay's memory and disk, and the JSON
//! lines; the users are `hostile_chat`, the attacks `hostile_attacks`.
//!
//! Prints a first line with the relay's settings, one line per phase, and a last line with
//! the run's duplicates. Progress goes to stderr. The CPU time of a phase (from its start to
//! its last message's arrival) is reported for the relay and for this process (attacker and
//! users), which share the machine: an attack that costs the users latency shows there
//! whether the relay or the attacker's own flood took the processor.

use std::time::Duration;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;

use crate::hostile_attacks::{Attack, PHASES, Target};
use crate::hostile_chat::Chat;
use crate::hostile_tally::Tally;
use crate::relay_child::RelayChild;
use crate::{Transport, percentile};

/// The relay's settings: the defaults, except where an attack would not reach its cap
/// within a phase of a few seconds. Each is (key, value, why).
const SETTINGS: [(&str, u64, &str); 6] = [
    (
        "max_anonymous",
        64,
        "default 4096: 256 attacking addresses; 64 is reached from 4 (16 not signed in each)",
    ),
    (
        "handshake_timeout_secs",
        1,
        "default 5: sockets that never handshake are closed within a phase",
    ),
    (
        "frame_timeout_secs",
        1,
        "default 30: unfinished frames are dropped within a phase",
    ),
    (
        "write_timeout_secs",
        WRITE_TIMEOUT_SECS,
        "default 10: a connection that never reads is dropped within a phase",
    ),
    (
        "queue_mib_per_sender",
        QUEUE_MIB,
        "default 128: the normal-mail flood reaches quota_exceeded within a phase",
    ),
    (
        "sealed_queue_mib_per_recipient",
        QUEUE_MIB,
        "default 128: the sealed flood reaches quota_exceeded within a phase",
    ),
];
const WRITE_TIMEOUT_SECS: u64 = 1;
const QUEUE_MIB: u64 = 8;
/// How long the never-reading attacker reads nothing: past the relay's write deadline.
pub const STALL_HOLD: Duration = Duration::from_millis(WRITE_TIMEOUT_SECS * 1000 + 500);
/// How often the relay's memory and disk are read during a phase.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// The settings as the config file's `[relay_server]` body.
fn settings_toml() -> String {
    SETTINGS
        .iter()
        .map(|(k, v, why)| format!("# {why}\n{k} = {v}\n"))
        .collect()
}

/// The highest memory and disk use seen while sampling.
#[derive(Default)]
struct Peaks {
    rss_kb: u64,
    disk_bytes: u64,
}

impl Peaks {
    fn sample(&mut self, relay: &RelayChild) -> Result<()> {
        self.rss_kb = self.rss_kb.max(relay.memory()?.rss_kb);
        self.disk_bytes = self.disk_bytes.max(relay.disk_bytes());
        Ok(())
    }
}

pub async fn run(phase_secs: f64, rate: f64, size: usize, transport: Transport) -> Result<()> {
    let relay = RelayChild::start(&settings_toml(), transport).await?;
    let settings: serde_json::Map<String, serde_json::Value> = SETTINGS
        .iter()
        .map(|(k, v, _)| (k.to_string(), (*v).into()))
        .collect();
    println!(
        "{}",
        serde_json::json!({
            "mode": "hostile",
            "transport": transport.name(),
            "phase_secs": phase_secs,
            "legit_rate": rate,
            "size": size,
            "relay_settings": settings,
            "attack_envelope_bytes": crate::hostile_attacks::ENVELOPE_BYTES,
        })
    );
    let tmp = tempfile::tempdir().context("cannot create a temporary directory")?;
    let chat = Chat::start(tmp.path(), relay.endpoint.url(), size).await?;
    let target = Target::prepare(&relay.endpoint, relay.addr).await?;
    chat.warm_up().await?;
    eprintln!("relay at {}, users online", relay.endpoint.url());

    let mut quiet_p99 = None;
    for (net, attack) in PHASES.into_iter().enumerate() {
        let stop = CancellationToken::new();
        let sampled = CancellationToken::new();
        let tally = Tally::default();
        let mut peaks = Peaks::default();
        let (relay_cpu, tool_cpu) = (relay.cpu()?, crate::cpu::used());
        let timer = async {
            tokio::time::sleep(Duration::from_secs_f64(phase_secs)).await;
            stop.cancel();
        };
        let sampler = async {
            while !sampled.is_cancelled() {
                peaks.sample(&relay)?;
                tokio::select! {
                    _ = sampled.cancelled() => {}
                    _ = tokio::time::sleep(SAMPLE_EVERY) => {}
                }
            }
            anyhow::Ok(())
        };
        let work = async {
            let (_, _, chat) = tokio::join!(
                timer,
                attack.run(&target, net as u8, &stop, &tally),
                chat.phase(&stop, rate)
            );
            sampled.cancel();
            chat
        };
        let (chat_result, sampled_result) = tokio::join!(work, sampler);
        let legit = chat_result?;
        sampled_result?;
        let relay_cpu = relay.cpu()?.saturating_sub(relay_cpu);
        let tool_cpu = crate::cpu::used().saturating_sub(tool_cpu);
        let now = relay.memory()?;
        let disk = relay.disk_bytes();
        peaks.rss_kb = peaks.rss_kb.max(now.rss_kb);
        peaks.disk_bytes = peaks.disk_bytes.max(disk);
        let p99 = percentile(&legit.latencies_us, 0.99);
        if attack == Attack::Quiet {
            quiet_p99 = Some(p99);
        }
        let ratio = quiet_p99
            .filter(|q| *q > 0)
            .map(|q| (p99 as f64 / q as f64 * 100.0).round() / 100.0);
        let mut line = serde_json::json!({
            "mode": "hostile",
            "phase": attack.name(),
            "legit_sent": legit.sent,
            "legit_delivered": legit.delivered,
            "legit_duplicated": legit.duplicated,
            "legit_failed": legit.failed,
            "legit_warnings": legit.warnings,
            "p50_us": percentile(&legit.latencies_us, 0.50),
            "p99_us": p99,
            "p99_ratio_to_quiet": ratio,
            "relay_rss_kb": now.rss_kb,
            "relay_peak_rss_kb": peaks.rss_kb,
            "relay_hwm_kb": now.peak_kb,
            "relay_disk_bytes": disk,
            "relay_peak_disk_bytes": peaks.disk_bytes,
            "relay_cpu_ms": relay_cpu.as_millis() as u64,
            "tool_cpu_ms": tool_cpu.as_millis() as u64,
        });
        if let (Some(l), serde_json::Value::Object(t)) = (line.as_object_mut(), tally.json()) {
            l.extend(t);
        }
        println!("{line}");
        eprintln!("phase {} done", attack.name());
    }
    println!(
        "{}",
        serde_json::json!({
            "mode": "hostile",
            "summary": true,
            "legit_duplicated": chat.duplicated(),
        })
    );
    chat.stop().await?;
    relay.stop().await
}
