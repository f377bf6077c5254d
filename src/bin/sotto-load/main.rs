//! sotto-load: throughput and latency of sotto against the floors it runs on, on loopback.
//!
//! `--mode raw` is a bare tokio-tungstenite forwarder (no persistence, no crypto: the
//! transport floor); `normal` and `secret` are the real relay with real clients (each a
//! session manager with its own store), N senders to N receivers, each message stored and
//! acknowledged by its receiver. Latency runs from the sender's send call to the receiver's
//! stored (and, for secret, decrypted) message; each pair's first message (the session's
//! set-up) goes before the measured run and is reported on its own, as `first_contact_*`.
//! With `--rate` the senders follow a fixed schedule (`pace`), and latency still runs from
//! the actual send call. Everything starts in this process; the RSS reported is this
//! process's peak, relay and clients together. `cpu_us_per_msg` is the CPU time the whole
//! process used during the measured run per message delivered, and `cores_busy` that time
//! over the run's wall time: near the machine's core count, a mode is held up by the
//! processor; well below it, by waiting. Prints JSON lines.
//!
//! `relay`, `normal` and `secret` take the relays' `--database` (SQLite by default, or a
//! PostgreSQL URL) and `--relays N` on it (`relays`): sender i uses relay i % N and its
//! receiver relay (i + 1) % N, so with N > 1 every message crosses from relay to relay. With
//! `--relay-process` the relays are `sotto relay` child processes: `cpu_us_per_msg` and
//! `cores_busy` then add their CPU time to this process's, and each relay's is reported on
//! its own. On PostgreSQL the run also reports the database's commits, WAL syncs and the
//! relays' notifications (`pg_watch`).
//!
//! `--mode idle` measures the relay's memory per idle signed-in connection instead, with the
//! relay in a child process (`idle`).
//!
//! `--mode hostile` runs the attacks of issue 18 against the relay in a child process while
//! two legitimate users chat at `--rate` (default 10 messages a second), one phase of
//! `--phase-secs` per attack after a quiet one, and reports per phase the users' delivery and
//! latency, the relay's memory and disk, and the error frames the attacker got (`hostile`).
//!
//! Every mode but `raw` talks to the relay over `wss://` (TLS 1.3 with the relay's
//! self-signed certificate, pinned), as real clients do; `--transport ws` runs the same over
//! plain `ws://`, so the two runs give what TLS costs. `raw` is always plain: it is the floor.

mod cpu;
mod crypto_floor;
mod fd_limit;
mod hostile;
mod hostile_attacks;
mod hostile_chat;
mod hostile_tally;
mod idle;
mod local_relay;
mod pace;
mod pg_watch;
mod raw;
mod relay_child;
mod relay_only;
mod relayed;
mod relays;
mod wire_client;

use std::collections::HashMap;
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{Parser, ValueEnum};
use sotto::relay::store::Database;

#[derive(Parser)]
#[command(about = "Measure sotto's throughput and latency on loopback")]
struct Args {
    #[arg(long, value_enum, default_value = "secret")]
    mode: Mode,
    /// Sender/receiver pairs; with `--mode idle`, idle connections.
    #[arg(long, default_value_t = 10, value_parser = at_least_one)]
    clients: usize,
    /// Messages per sender.
    #[arg(long, default_value_t = 100, value_parser = at_least_one)]
    messages: usize,
    /// Bytes of text per message.
    #[arg(long, default_value_t = 1024, value_parser = text_size)]
    size: usize,
    /// Offered load: messages per second across all senders, sent on a fixed schedule
    /// whether or not earlier sends have completed. Without it each sender sends as fast as
    /// it can.
    #[arg(long, value_name = "MSGS_PER_SEC", value_parser = positive_rate)]
    rate: Option<f64>,
    /// Turn on disappearing messages in every pair's thread before the measured run, with
    /// this timer (`30s`, `5m`, ... as in the TUI's `/timer`): the relay then deletes each
    /// envelope in the batch after its ack and truncates its WAL. Normal and secret only.
    #[arg(long, value_parser = timer)]
    timer: Option<u32>,
    /// Output JSON lines (the only format; accepted for scripts that pass it).
    #[arg(long)]
    json: bool,
    /// Run raw, normal and secret with the same parameters, then the crypto floor, and print
    /// the throughput ratios.
    #[arg(long)]
    compare: bool,
    /// How clients reach the relay (every mode but raw, which is always plain ws).
    #[arg(long, value_enum, default_value = "wss")]
    transport: Transport,
    /// With `--mode hostile`: seconds each phase (the quiet one and each attack) lasts.
    #[arg(long, default_value_t = 10.0, value_parser = positive_secs)]
    phase_secs: f64,
    /// Where the relays keep their state (relay, normal and secret): `sqlite`, a file in
    /// each relay's data directory, or a PostgreSQL URL (postgres://USER@HOST:PORT/DATABASE,
    /// a database of the run's own) that every relay of the run shares.
    #[arg(long, default_value = "sqlite", value_parser = database)]
    database: Database,
    /// How many relays, all on `--database`: sender i uses relay i % N, its receiver relay
    /// (i + 1) % N. More than one needs PostgreSQL.
    #[arg(long, default_value_t = 1, value_parser = at_least_one)]
    relays: usize,
    /// Run each relay as a `sotto relay` child process, so that its CPU time is reported
    /// apart from the clients'.
    #[arg(long)]
    relay_process: bool,
}

/// The legitimate users' rate in `--mode hostile` without `--rate`: a lively chat, far
/// below what the relay carries, so that what changes under attack is the attack's doing.
const HOSTILE_RATE: f64 = 10.0;

/// The relay's transport: TLS (as `sotto relay` serves by default) or plain WebSocket.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Transport {
    Ws,
    Wss,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Mode {
    Raw,
    Normal,
    Secret,
    /// The real relay with protocol-level clients (no client store, no crypto): the relay's
    /// own cost over `raw`.
    Relay,
    /// The relay's memory per idle signed-in connection (the relay runs as a child process).
    Idle,
    /// Issue 18's attacks against the relay (a child process) while two users chat.
    Hostile,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Raw => "raw",
            Mode::Normal => "normal",
            Mode::Secret => "secret",
            Mode::Relay => "relay",
            Mode::Idle => "idle",
            Mode::Hostile => "hostile",
        }
    }
}

fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn text_size(s: &str) -> Result<usize, String> {
    let max = sotto::client::content::MAX_TEXT_BYTES;
    match s.parse::<usize>() {
        Ok(n) if n > max => Err(format!("a message text is at most {max} bytes")),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn timer(s: &str) -> Result<u32, String> {
    match sotto::timer::parse(s) {
        Ok(Some(secs)) => Ok(secs),
        Ok(None) => Err("leave out --timer for messages that do not disappear".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn database(s: &str) -> Result<Database, String> {
    Database::named(s).ok_or_else(|| {
        "must be `sqlite` or a PostgreSQL URL such as postgres://USER@HOST:5432/DATABASE".into()
    })
}

fn positive_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        Ok(_) => Err("must be a positive number of seconds".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        Ok(_) => Err("must be a positive number of messages per second".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// What a run measured.
struct Outcome {
    /// From the start of the measured run to its last message's arrival.
    elapsed: std::time::Duration,
    latencies_us: Vec<u64>,
    /// Each pair's first message, sent before the measured run (normal and secret only).
    first_contact_us: Vec<u64>,
    /// CPU time this process (clients, and relays in this process) used during the
    /// measured run.
    cpu: std::time::Duration,
    /// CPU time of each relay process during the measured run (none in this process).
    relay_cpu: Vec<std::time::Duration>,
    /// The largest relay process's peak RSS in KiB (none in this process).
    relay_peak_rss_kb: Option<u64>,
    /// What PostgreSQL did from the start of the measured run until the relays stopped.
    pg: Option<pg_watch::PgCounts>,
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn report(mode: &str, args: &Args, mut out: Outcome) -> f64 {
    out.latencies_us.sort_unstable();
    out.first_contact_us.sort_unstable();
    let first =
        |p| (!out.first_contact_us.is_empty()).then(|| percentile(&out.first_contact_us, p));
    let n = out.latencies_us.len();
    let wall = out.elapsed.as_secs_f64();
    let relay_cpu: Vec<f64> = out.relay_cpu.iter().map(|d| d.as_secs_f64()).collect();
    let cpu = out.cpu.as_secs_f64() + relay_cpu.iter().sum::<f64>();
    let per_wall = |x: f64| if wall > 0.0 { x / wall } else { 0.0 };
    let per_msg = |secs: f64| (secs * 1e6 / n.max(1) as f64).round();
    let msgs_per_sec = per_wall(n as f64);
    let relayed = mode != "raw";
    let pg = out.pg.map(|pg| {
        serde_json::json!({
            "commits": pg.commits,
            "commits_per_sec": per_wall(pg.commits as f64).round(),
            "commits_per_msg": (pg.commits as f64 / n.max(1) as f64 * 100.0).round() / 100.0,
            "wal_syncs_per_sec": per_wall(pg.wal_syncs as f64).round(),
            "wal_bytes_per_msg": (pg.wal_bytes as f64 / n.max(1) as f64).round(),
            "notifications": pg.notifications,
            "notifications_per_sec": per_wall(pg.notifications as f64).round(),
        })
    });
    println!(
        "{}",
        serde_json::json!({
            "mode": mode,
            "transport": if mode == "raw" { "ws" } else { args.transport.name() },
            "clients": args.clients,
            "messages": args.messages,
            "size": args.size,
            "offered_rate": args.rate,
            "timer_secs": args.timer,
            "backend": relayed.then(|| args.database.backend()),
            "relays": relayed.then_some(args.relays),
            "relay_process": relayed && args.relay_process,
            "msgs_per_sec": (msgs_per_sec * 10.0).round() / 10.0,
            "p50_us": percentile(&out.latencies_us, 0.50),
            "p99_us": percentile(&out.latencies_us, 0.99),
            "first_contact_p50_us": first(0.50),
            "first_contact_max_us": first(1.0),
            // With the relays in this process, its peak is theirs and the clients' together.
            "relay_peak_rss_kb": out.relay_peak_rss_kb.unwrap_or_else(peak_rss_kb),
            "client_peak_rss_kb": out.relay_peak_rss_kb.map(|_| peak_rss_kb()),
            "cpu_us_per_msg": per_msg(cpu),
            "cores_busy": (per_wall(cpu) * 100.0).round() / 100.0,
            "client_cpu_us_per_msg": (!relay_cpu.is_empty()).then(|| per_msg(out.cpu.as_secs_f64())),
            "relay_cpu_us_per_msg": relay_cpu.iter().map(|&c| per_msg(c)).collect::<Vec<_>>(),
            "pg": pg,
        })
    );
    msgs_per_sec
}

#[tokio::main]
async fn main() -> ExitCode {
    match measure(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line with the causes, as `sotto` reports errors, not a Debug dump.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Refuses a combination of flags that cannot run, saying which flag to change.
fn check(args: &Args) -> Result<()> {
    let relay_flags =
        args.relays > 1 || args.relay_process || !matches!(args.database, Database::Sqlite);
    if relay_flags && matches!(args.mode, Mode::Raw | Mode::Idle | Mode::Hostile) && !args.compare {
        bail!(
            "--database, --relays and --relay-process set up the relays of --mode relay, normal \
             and secret; leave them out with --mode {}",
            args.mode.name()
        );
    }
    if args.relays > 1 && !matches!(args.database, Database::Postgres(_)) {
        bail!(
            "--relays {} needs a database the relays share: each relay on SQLite has a file of \
             its own, so no message could cross between them; pass --database \
             postgres://USER@HOST:5432/DATABASE",
            args.relays
        );
    }
    Ok(())
}

async fn measure(args: Args) -> Result<()> {
    check(&args)?;
    if args.mode == Mode::Idle {
        if args.compare {
            bail!("--compare runs raw, normal and secret; leave out --mode idle");
        }
        if args.rate.is_some() {
            bail!("--rate paces messages, and --mode idle sends none; leave out --rate");
        }
        return idle::run(args.clients, args.transport).await;
    }
    if args.mode == Mode::Hostile {
        if args.compare {
            bail!("--compare runs raw, normal and secret; leave out --mode hostile");
        }
        if args.timer.is_some() {
            bail!("--timer sets a thread's timer, which only --mode normal and secret have");
        }
        let rate = args.rate.unwrap_or(HOSTILE_RATE);
        return hostile::run(args.phase_secs, rate, args.size, args.transport).await;
    }
    if args.timer.is_some() && (args.compare || !matches!(args.mode, Mode::Normal | Mode::Secret)) {
        bail!("--timer sets a thread's timer, which only --mode normal and secret have");
    }
    if !args.compare {
        let out = run(args.mode, &args).await?;
        report(args.mode.name(), &args, out);
        return Ok(());
    }
    let mut rates = HashMap::new();
    for mode in [Mode::Raw, Mode::Normal, Mode::Secret] {
        let out = run(mode, &args).await?;
        rates.insert(mode.name(), report(mode.name(), &args, out));
    }
    let floor = crypto_floor::crypto_floor(&args).await?;
    println!(
        "{}",
        serde_json::json!({
            "mode": "crypto_floor",
            "msgs_per_sec": floor.all_cores.round(),
            "threads": floor.threads,
            "one_thread_msgs_per_sec": floor.one_thread.round(),
        })
    );
    println!(
        "{}",
        serde_json::json!({
            "normal_vs_raw": rates["normal"] / rates["raw"],
            "secret_vs_floor": rates["secret"] / floor.all_cores,
        })
    );
    Ok(())
}

async fn run(mode: Mode, args: &Args) -> Result<Outcome> {
    match mode {
        Mode::Raw => raw::run(args).await,
        Mode::Normal => relayed::run(false, args).await,
        Mode::Secret => relayed::run(true, args).await,
        Mode::Relay => relay_only::run(args).await,
        Mode::Idle => bail!("--mode idle measures memory, not messages"),
        Mode::Hostile => bail!("--mode hostile reports per phase, not one run"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(flags: &[&str]) -> Result<()> {
        let args = Args::try_parse_from([&["sotto-load"], flags].concat())?;
        check(&args)
    }

    #[test]
    fn several_relays_need_postgresql() {
        let e = checked(&["--mode", "relay", "--relays", "2"]).unwrap_err();
        assert!(
            e.to_string()
                .contains("--relays 2 needs a database the relays share")
        );
        assert!(e.to_string().contains("--database postgres://"));
        let e = checked(&["--relays", "2", "--database", "sqlite"]).unwrap_err();
        assert!(e.to_string().contains("pass --database postgres://"));
        checked(&["--relays", "2", "--database", "postgres://u@h:5432/d"]).unwrap();
        checked(&["--relays", "1", "--database", "sqlite", "--relay-process"]).unwrap();
    }

    #[test]
    fn a_database_that_is_neither_sqlite_nor_postgresql_is_refused() {
        let e = checked(&["--database", "mysql://u@h/d"]).unwrap_err();
        assert!(
            e.to_string()
                .contains("must be `sqlite` or a PostgreSQL URL")
        );
    }

    #[test]
    fn relay_flags_are_refused_where_no_relay_of_the_run_uses_them() {
        for mode in ["raw", "idle", "hostile"] {
            let e = checked(&["--mode", mode, "--relay-process"]).unwrap_err();
            assert!(
                e.to_string().contains("leave them out with --mode"),
                "{mode}"
            );
        }
        let zero = checked(&["--relays", "0"]).unwrap_err();
        assert!(zero.to_string().contains("must be at least 1"));
    }
}
