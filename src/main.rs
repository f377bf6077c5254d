//! The `sotto` binary: command-line parsing and the headless commands. Errors become one
//! `error: …` line on stderr and a non-zero exit; logs go to a file, never to the terminal.

use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand};
use sotto::client::account;
use sotto::client::manager::{self, Command, ConnState, Event, ManagerHandle};
use sotto::client::store::{Message, MessageKind, Store};
use sotto::client::trust;
use sotto::config::{self, Config};
use sotto::relay::{self, RelayConfig};
use tokio_util::sync::CancellationToken;

/// How long a headless command waits for the relay before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `send` waits for the relay to accept a message.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Parser)]
#[command(
    name = "sotto",
    version,
    about = "Terminal chat with per-contact Signal-Protocol secret conversations"
)]
struct Cli {
    /// Profile directory (one profile per directory).
    #[arg(long, value_name = "DIR", conflicts_with = "profile")]
    data_dir: Option<PathBuf>,
    /// Profile name: a directory under the platform data dir (default "default").
    #[arg(long, value_name = "NAME")]
    profile: Option<String>,
    /// Relay URL, overriding the config file and the relay recorded at init.
    #[arg(long, value_name = "URL")]
    relay: Option<String>,
    /// Config file (default ~/.config/sotto/config.toml).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Allow plain ws:// to a relay that is not on this machine; with `relay`, serve plain
    /// ws:// (behind a TLS-terminating proxy).
    #[arg(long, global = true)]
    insecure_transport: bool,
    /// Without a command, sotto opens the chat screen for the profile.
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum RelayCmd {
    /// Operator commands; they open the relay's database directly and exist nowhere on the
    /// network.
    #[command(subcommand)]
    Admin(AdminCmd),
}

#[derive(Subcommand)]
enum AdminCmd {
    /// Let the owner of HANDLE, who lost their device, register new keys for it: prints a
    /// one-time code for `sotto init --handle HANDLE --claim CODE`.
    ResetHandle { handle: String },
    /// Print the relay's counters (connections by state, refusals by reason, as of the
    /// running relay's last write of stats.json) and what its queue holds, as JSON.
    Stats {
        /// How many accounts to list by queued bytes.
        #[arg(long, default_value_t = 10)]
        top: usize,
    },
}

#[derive(Subcommand)]
enum Cmd {
    /// Try sotto: a relay, your profile and a bot to talk to, all temporary, in one command.
    Demo,
    /// Run a relay (or, with `admin`, operate on its database on this machine).
    Relay {
        /// Address to listen on; port 0 picks a free port.
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// Where the relay keeps its database.
        #[arg(long, value_name = "DIR", global = true)]
        data_dir: Option<PathBuf>,
        /// PEM certificate chain to serve (e.g. from a CA); without it the relay creates a
        /// self-signed certificate in its data directory.
        #[arg(long, value_name = "FILE", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key of --tls-cert.
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        #[command(subcommand)]
        admin: Option<RelayCmd>,
    },
    /// Create this profile's keys and register a handle at the relay.
    Init {
        #[arg(long)]
        handle: String,
        #[arg(long = "relay", value_name = "URL")]
        init_relay: Option<String>,
        /// Take over a handle the relay's operator reset for you (lost device), with the code
        /// they gave you.
        #[arg(long, value_name = "CODE")]
        claim: Option<String>,
    },
    /// Send one message; exits once the relay has accepted it.
    Send {
        /// Send in the secret (end-to-end encrypted, sealed-sender) thread.
        #[arg(long)]
        secret: bool,
        /// First set the thread's disappearing timer: 30s, 5m, 1h, 1d (5s to 24h) or off.
        #[arg(long, value_name = "DURATION", value_parser = parse_timer)]
        timer: Option<TimerArg>,
        handle: String,
        text: String,
    },
    /// Set a thread's disappearing timer (5s to 24h, or off) and tell the contact.
    Timer {
        handle: String,
        /// 30s, 5m, 1h, 1d or off.
        #[arg(value_parser = parse_timer)]
        duration: TimerArg,
        /// The secret thread instead of the normal one.
        #[arg(long)]
        secret: bool,
    },
    /// Receive queued messages (and those arriving within --wait), one JSON object per line.
    Recv {
        /// Keep listening this many seconds after the queue is drained.
        #[arg(long, value_name = "SECONDS", default_value_t = 0.0)]
        wait: f64,
    },
    /// List contacts.
    Contacts,
    /// Print a thread's messages, one JSON object per line, oldest first.
    History {
        handle: String,
        /// The secret thread instead of the normal one.
        #[arg(long)]
        secret: bool,
        /// At most this many of the newest messages.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show this profile: handle, account id, relay and the relay's trust-root fingerprint.
    Info,
    /// Trust the relay's new TLS certificate after its operator replaced it: give the SHA-256
    /// fingerprint the relay prints, as you got it from the operator.
    PinCert { fingerprint: String },
    /// Replace this profile's identity key (signed by the current one); contacts will see
    /// that your safety number changed.
    Rekey,
    /// Show the safety number with a contact (compare it with theirs), or record a verdict.
    Verify {
        handle: String,
        /// Mark the contact verified: you compared the numbers and they match.
        #[arg(long, group = "action")]
        mark: bool,
        /// Remove the verified mark.
        #[arg(long, group = "action")]
        unmark: bool,
        /// Accept the contact's new identity key after a change, unblocking secret messages.
        #[arg(long, group = "action")]
        accept_change: bool,
        /// Print the scannable form as hex, for the other side's --compare.
        #[arg(long, group = "action")]
        scannable: bool,
        /// Compare with the other side's --scannable output, from a file or - for stdin.
        #[arg(long, group = "action", value_name = "FILE")]
        compare: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    // Before anything is created: profiles, databases, logs and keys are the user's alone.
    sotto::private::restrict_umask();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let command = match cli.command {
        Some(Cmd::Relay {
            admin: Some(RelayCmd::Admin(AdminCmd::ResetHandle { handle })),
            data_dir,
            ..
        }) => return reset_handle(&config, data_dir, &handle),
        Some(Cmd::Relay {
            admin: Some(RelayCmd::Admin(AdminCmd::Stats { top })),
            data_dir,
            ..
        }) => return relay_stats(&config, data_dir, top),
        Some(Cmd::Relay {
            listen,
            data_dir,
            tls_cert,
            tls_key,
            ..
        }) => {
            sotto::logs::init(None, config.log.as_deref());
            let tls = relay_tls(&config, cli.insecure_transport, tls_cert, tls_key)?;
            return rt.block_on(run_relay(&config, listen, data_dir, tls));
        }
        Some(Cmd::Demo) => {
            sotto::logs::init(
                Some(&std::env::temp_dir().join("sotto-demo.log")),
                config.log.as_deref(),
            );
            return rt.block_on(demo(&config));
        }
        Some(c) => c,
        None => {
            let dir = config::profile_dir(cli.data_dir.as_deref(), cli.profile.as_deref())?;
            sotto::logs::init(Some(&dir.join("sotto.log")), config.log.as_deref());
            let relay = RelayChoice::new(&config, cli.relay, cli.insecure_transport);
            return rt.block_on(chat(&config, &dir, relay));
        }
    };
    let dir = config::profile_dir(cli.data_dir.as_deref(), cli.profile.as_deref())?;
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the profile directory {}", dir.display()))?;
    sotto::logs::init(Some(&dir.join("sotto.log")), config.log.as_deref());
    let relay_override = cli.relay.clone();
    let relay = RelayChoice::new(&config, cli.relay.clone(), cli.insecure_transport);
    match command {
        Cmd::Relay { .. } | Cmd::Demo => unreachable!("handled above"),
        Cmd::Init {
            handle,
            init_relay,
            claim,
        } => {
            let url = init_relay
                .or(relay_override)
                .or(config.relay.clone())
                .unwrap_or_else(|| config::DEFAULT_RELAY.to_string());
            let _lock = sotto::client::store::lock_profile(&dir)?;
            let store = Store::open(&dir)?;
            let reg = rt.block_on(account::init_claiming(
                &store,
                &handle,
                &url,
                claim,
                relay.insecure,
                std::time::SystemTime::now(),
                &mut rand::rng(),
            ))?;
            println!("registered {} at {}", reg.handle, reg.relay_url);
            println!("relay trust root: {}", fingerprint(&reg.trust_root));
            println!("relay TLS certificate: {}", tls_line(&store)?);
            if let Some(sotto::tls::Pin::Certificate(_)) = account::tls_pin(&store)? {
                println!(
                    "  (no certificate authority vouches for it: compare it with the fingerprint the relay printed when it started)"
                );
            }
            Ok(())
        }
        Cmd::Send {
            secret,
            timer,
            handle,
            text,
        } => rt.block_on(send(&dir, relay, handle, secret, timer.map(|t| t.0), text)),
        Cmd::Timer {
            handle,
            duration,
            secret,
        } => rt.block_on(set_timer(&dir, relay, handle, secret, duration.0)),
        Cmd::Recv { wait } => {
            if !(0.0..=86_400.0).contains(&wait) {
                bail!("--wait takes a number of seconds from 0 to 86400");
            }
            rt.block_on(recv(&dir, relay, Duration::from_secs_f64(wait)))
        }
        Cmd::Contacts => {
            let store = Store::open(&dir)?;
            store.registration()?;
            for c in store.contacts()? {
                println!("{}\t{}", c.handle, c.account_id);
            }
            Ok(())
        }
        Cmd::History {
            handle,
            secret,
            limit,
        } => {
            let store = Store::open(&dir)?;
            store.registration()?;
            let contact = store.contact_by_handle(&handle)?.ok_or_else(|| {
                anyhow!("{handle:?} is not among your contacts (see `sotto contacts`)")
            })?;
            let mut out = std::io::stdout().lock();
            for m in store.history(&contact.account_id, secret, limit)? {
                writeln!(out, "{}", history_json(&m))?;
            }
            Ok(())
        }
        Cmd::Rekey => {
            let _lock = sotto::client::store::lock_profile(&dir)?;
            let store = Store::open(&dir)?;
            let endpoint = account::endpoint(&store, relay_override.as_deref(), relay.insecure)?;
            rt.block_on(account::rekey_at(
                &store,
                &endpoint,
                std::time::SystemTime::now(),
                &mut rand::rng(),
            ))?;
            println!(
                "your identity key is replaced; your contacts will see that your safety number changed"
            );
            Ok(())
        }
        Cmd::Verify {
            handle,
            mark,
            unmark,
            accept_change,
            scannable,
            compare,
        } => {
            let store = Store::open(&dir)?;
            store.registration()?;
            if mark || unmark {
                trust::set_verified(&store, &handle, mark)?;
                println!(
                    "{handle} is {}",
                    if mark {
                        "marked verified"
                    } else {
                        "no longer marked verified"
                    }
                );
                return Ok(());
            }
            if accept_change {
                let now = sotto::client::clock::Clock::system().now_ms();
                if trust::accept_change(&store, &handle, now)? {
                    println!(
                        "accepted {handle}'s new safety number; secret messages can go to them again"
                    );
                } else {
                    println!("{handle}'s safety number has not changed; nothing to accept");
                }
                return Ok(());
            }
            if let Some(path) = compare {
                let theirs = if path.as_os_str() == "-" {
                    std::io::read_to_string(std::io::stdin())?
                } else {
                    std::fs::read_to_string(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?
                };
                if trust::compare(&store, &handle, &theirs)? {
                    println!("match: you and {handle} see each other's real keys");
                    return Ok(());
                }
                bail!(
                    "no match: this is not {handle}'s safety number with you; do not mark them verified"
                );
            }
            let number = trust::safety_number(&store, &handle)?;
            if scannable {
                println!("{}", trust::hex(&number.scannable));
                return Ok(());
            }
            print_safety_number(&number);
            print_key_log(&trust::key_log(&store, &handle)?);
            Ok(())
        }
        Cmd::Info => {
            let store = Store::open(&dir)?;
            let reg = store.registration()?;
            println!("handle:      {}", reg.handle);
            println!("account id:  {}", reg.account_id);
            println!("relay:       {}", reg.relay_url);
            println!("trust root:  {}", fingerprint(&reg.trust_root));
            println!("relay TLS:   {}", tls_line(&store)?);
            println!("profile dir: {}", dir.display());
            Ok(())
        }
        Cmd::PinCert { fingerprint } => {
            let _lock = sotto::client::store::lock_profile(&dir)?;
            let store = Store::open(&dir)?;
            store.registration()?;
            let fp = sotto::tls::parse_fingerprint(&fingerprint).ok_or_else(|| {
                anyhow!("{fingerprint:?} is not a SHA-256 fingerprint; give the 64 hex digits (colons optional) the relay prints")
            })?;
            account::set_tls_pin(&store, fp)?;
            println!("relay TLS certificate: {}", tls_line(&store)?);
            Ok(())
        }
    }
}

fn tui_options(config: &Config) -> Result<sotto::tui::Options> {
    Ok(sotto::tui::Options {
        keys: sotto::tui::keys::KeyMap::from_config(&config.keys).map_err(|e| anyhow!(e))?,
        bell: config.bell.unwrap_or(true),
        open: None,
        greeting: None,
        mouse: config.mouse.unwrap_or(true),
        clock: sotto::tui::clock::Clock::new(
            sotto::tui::clock::Zone::Local,
            config
                .time_format
                .as_deref()
                .unwrap_or(sotto::tui::clock::DEFAULT_TIME_FORMAT),
        )?,
        contacts_min_width: config
            .contacts_min_width
            .unwrap_or(sotto::tui::layout::DEFAULT_CONTACTS_MIN_WIDTH),
        private_dir: None,
    })
}

/// Which relay the client commands talk to, and whether plain ws:// off this machine is
/// allowed.
struct RelayChoice {
    url: Option<String>,
    insecure: bool,
}

impl RelayChoice {
    fn new(config: &Config, url: Option<String>, insecure_flag: bool) -> RelayChoice {
        RelayChoice {
            url,
            insecure: insecure_flag || config.insecure_transport.unwrap_or(false),
        }
    }

    fn spawn(self, dir: &Path) -> Result<ManagerHandle> {
        Ok(manager::spawn_with(dir, self.url, self.insecure)?)
    }
}

/// How the profile trusts its relay's TLS certificate, for `init` and `info`.
fn tls_line(store: &Store) -> Result<String> {
    Ok(match account::tls_pin(store)? {
        Some(pin) => pin.describe(),
        None => "none (plain ws://)".to_string(),
    })
}

/// The chat screen on a registered profile.
async fn chat(config: &Config, dir: &Path, relay: RelayChoice) -> Result<()> {
    let mut hangup = sotto::tui::Hangup::new()?;
    let me = Store::open(dir)?
        .registration()
        .map_err(|e| anyhow!("{e}; or try `sotto demo`"))?
        .handle;
    let mut opts = tui_options(config)?;
    opts.private_dir = Some(dir.to_path_buf());
    let manager = relay.spawn(dir)?;
    sotto::tui::run(manager, me, opts, &mut hangup).await?;
    Ok(())
}

async fn demo(config: &Config) -> Result<()> {
    let mut hangup = sotto::tui::Hangup::new()?;
    let mut opts = tui_options(config)?;
    let demo = sotto::demo::Demo::start().await?;
    opts.open = Some(sotto::demo::BOT.to_string());
    opts.private_dir = Some(demo.you.clone());
    opts.greeting = Some(format!(
        "say hi to {}; {} switches to a secret thread; ? for help",
        sotto::demo::BOT,
        opts.keys.toggle_secret.label()
    ));
    let manager = manager::spawn(&demo.you, None)?;
    let result = sotto::tui::run(manager, sotto::demo::YOU.to_string(), opts, &mut hangup).await;
    demo.stop().await;
    result?;
    Ok(())
}

/// A timer as given on the command line: seconds, or None for `off`. A newtype, because clap
/// would read a bare `Option` as "the argument may be missing".
#[derive(Debug, Clone, Copy)]
struct TimerArg(Option<u32>);

fn parse_timer(s: &str) -> Result<TimerArg, String> {
    sotto::timer::parse(s)
        .map(TimerArg)
        .map_err(|e| e.to_string())
}

fn print_safety_number(n: &trust::SafetyNumber) {
    println!("safety number with {}:", n.handle);
    let groups: Vec<&str> = n.display.split(' ').collect();
    for row in groups.chunks(4) {
        println!("    {}", row.join(" "));
    }
    println!();
    print!("{}", trust::qr(&n.scannable));
    println!();
    if n.key_changed {
        println!(
            "{0}'s key CHANGED and is not accepted: secret messages to {0} are blocked.",
            n.handle
        );
        println!(
            "Compare the number with {0}, then run: sotto verify {0} --accept-change",
            n.handle
        );
    } else if n.verified {
        println!("{} is marked verified", n.handle);
    } else {
        println!(
            "not verified: compare the number with {0} in person or on a call, then: sotto verify {0} --mark",
            n.handle
        );
    }
}

/// The contact's key-change log under the safety number: refusals are what an attack leaves.
fn print_key_log(log: &[trust::KeyLogEntry]) {
    if log.is_empty() {
        return;
    }
    println!();
    println!("key history, oldest first:");
    for e in log {
        let mark = if e.event.is_refusal() { "!" } else { " " };
        println!("  {mark} {}", e.event.describe());
    }
    if log.iter().any(|e| e.event.is_refusal()) {
        println!(
            "  ! marks a key sotto refused: the relay, or someone between you and it, offered a key this contact never endorsed. Nothing was sent to it or shown from it."
        );
    }
}

/// A public key shown in groups of four hex digits, for comparing by eye.
fn fingerprint(key: &[u8]) -> String {
    trust::grouped(&trust::hex(key), 4)
}

fn relay_dir(config: &Config, data_dir: Option<PathBuf>) -> Result<PathBuf> {
    match data_dir.or(config.relay_server.data_dir.clone()) {
        Some(d) => Ok(d),
        None => Ok(dirs::data_dir()
            .ok_or_else(|| anyhow!("no data directory found for this user; pass --data-dir DIR"))?
            .join("sotto")
            .join("relay")),
    }
}

/// `sotto relay admin stats`: the running relay's counters and the queue, as one JSON object.
fn relay_stats(config: &Config, data_dir: Option<PathBuf>, top: usize) -> Result<()> {
    let dir = existing_relay_dir(config, data_dir)?;
    let counters = match std::fs::read(dir.join(relay::stats::FILE)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is damaged", relay::stats::FILE))?,
        // Written by a running relay every few seconds; none has run here yet.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::Value::Null,
        Err(e) => return Err(e).context("cannot read the relay's counters"),
    };
    let queue = relay::store::RelayStore::open(&dir)?.queue_summary(top)?;
    let report = serde_json::json!({ "counters": counters, "queue": queue });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// The relay data directory an operator command works on, which must hold a relay database.
fn existing_relay_dir(config: &Config, data_dir: Option<PathBuf>) -> Result<PathBuf> {
    let dir = relay_dir(config, data_dir)?;
    if !dir.join("relay.db").exists() {
        bail!(
            "no relay database in {}; pass the relay's --data-dir",
            dir.display()
        );
    }
    Ok(dir)
}

/// `sotto relay admin reset-handle`: arms a one-time claim code for HANDLE.
fn reset_handle(config: &Config, data_dir: Option<PathBuf>, handle: &str) -> Result<()> {
    let dir = existing_relay_dir(config, data_dir)?;
    let store = relay::store::RelayStore::open(&dir)?;
    // 20 characters from an alphabet without look-alikes: easy to read out, ~98 bits.
    let alphabet = b"abcdefghjkmnpqrstuvwxyz23456789";
    let code: String = (0..20)
        .map(|_| char::from(alphabet[rand::random_range(0..alphabet.len())]))
        .collect();
    let days = config
        .relay_server
        .claim_code_days
        .unwrap_or(config::DEFAULT_CLAIM_CODE_DAYS);
    if !(1..=365).contains(&days) {
        bail!("claim_code_days in the config must be from 1 to 365 (it is {days})");
    }
    let now = sotto::client::clock::Clock::system().now_ms();
    let expires_at = now + u64::from(days) * 24 * 60 * 60 * 1000;
    if store
        .arm_reset(handle, code.as_bytes(), expires_at)?
        .is_none()
    {
        bail!("no account with the handle {handle:?} at this relay");
    }
    println!("reset code for {handle} (good for {days} days): {code}");
    println!(
        "give it to them privately; they run: sotto init --handle {handle} --relay URL --claim {code}"
    );
    println!("their contacts will see that {handle}'s safety number changed.");
    Ok(())
}

/// How `sotto relay` serves: `Plain` ws://, a certificate from files, or its own.
enum RelayTls {
    Plain,
    Files { cert: PathBuf, key: PathBuf },
    SelfSigned,
}

fn relay_tls(
    config: &Config,
    insecure_flag: bool,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> Result<RelayTls> {
    let server = &config.relay_server;
    let insecure = insecure_flag || server.insecure_transport.unwrap_or(false);
    let files = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        _ => match (server.tls_cert.clone(), server.tls_key.clone()) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => bail!("the config's [relay_server] needs both tls_cert and tls_key, or neither"),
        },
    };
    Ok(match (insecure, files) {
        (true, Some(_)) => bail!(
            "--insecure-transport serves plain ws://, so a TLS certificate makes no sense with it; drop one of the two"
        ),
        (true, None) => RelayTls::Plain,
        (false, Some((cert, key))) => RelayTls::Files { cert, key },
        (false, None) => RelayTls::SelfSigned,
    })
}

/// The quotas and rate limits of `[relay_server]` over the relay's defaults.
fn apply_limits(server: &config::RelayServer, c: &mut RelayConfig) {
    const MIB: u64 = 1024 * 1024;
    let set = |into: &mut u64, v: Option<u64>, unit: u64| {
        if let Some(v) = v {
            *into = v.saturating_mul(unit);
        }
    };
    let q = &mut c.queue;
    set(&mut q.recipient_bytes, server.queue_mib_per_recipient, MIB);
    set(
        &mut q.recipient_envelopes,
        server.queue_envelopes_per_recipient,
        1,
    );
    set(&mut q.sender_bytes, server.queue_mib_per_sender, MIB);
    set(
        &mut q.sender_envelopes,
        server.queue_envelopes_per_sender,
        1,
    );
    set(
        &mut q.sealed_bytes,
        server.sealed_queue_mib_per_recipient,
        MIB,
    );
    set(
        &mut q.sealed_envelopes,
        server.sealed_queue_envelopes_per_recipient,
        1,
    );
    let set = |into: &mut u32, v: Option<u32>| {
        if let Some(v) = v {
            *into = v;
        }
    };
    set(&mut c.max_one_time_prekeys, server.max_one_time_prekeys);
    let r = &mut c.rate;
    set(
        &mut r.registrations_per_ip_per_hour,
        server.registrations_per_ip_per_hour,
    );
    set(
        &mut r.prekey_uploads_per_hour,
        server.prekey_uploads_per_hour,
    );
    set(
        &mut r.bundles_per_target_per_minute,
        server.bundles_per_target_per_minute,
    );
    set(
        &mut r.bundles_per_requester_per_minute,
        server.bundles_per_requester_per_minute,
    );
    set(&mut r.lookups_per_minute, server.lookups_per_minute);
    set(
        &mut r.unknown_acks_per_minute,
        server.unknown_acks_per_minute,
    );
}

async fn run_relay(
    config: &Config,
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    tls: RelayTls,
) -> Result<()> {
    let server = &config.relay_server;
    let listen = listen
        .or(server.listen.clone())
        .unwrap_or_else(|| config::DEFAULT_LISTEN.to_string());
    let data_dir = relay_dir(config, data_dir)?;
    let mut relay_config = RelayConfig::default();
    let caps = [
        (server.max_connections, &mut relay_config.max_connections),
        (
            server.max_connections_per_address,
            &mut relay_config.max_connections_per_address,
        ),
        (server.max_signing_in, &mut relay_config.max_signing_in),
        (server.max_anonymous, &mut relay_config.max_anonymous),
        (
            server.max_unauthenticated_per_address,
            &mut relay_config.max_unauthenticated_per_address,
        ),
    ];
    for (set, field) in caps {
        if let Some(n) = set {
            *field = n;
        }
    }
    let timeouts = [
        (
            server.handshake_timeout_secs,
            &mut relay_config.handshake_timeout,
        ),
        (server.auth_timeout_secs, &mut relay_config.auth_timeout),
        (server.ping_interval_secs, &mut relay_config.ping_interval),
        (server.idle_timeout_secs, &mut relay_config.idle_timeout),
        (server.frame_timeout_secs, &mut relay_config.frame_timeout),
        (server.write_timeout_secs, &mut relay_config.write_timeout),
    ];
    for (set, field) in timeouts {
        if let Some(s) = set {
            *field = Duration::from_secs(s);
        }
    }
    apply_limits(server, &mut relay_config);
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        signal.cancel();
    });
    // Open the store before announcing, so "listening" means ready.
    relay::trust_root(&data_dir)?;
    let addr = listener.local_addr()?;
    let cert = match tls {
        RelayTls::Plain => None,
        RelayTls::Files { cert, key } => Some(sotto::tls::RelayCert::load(&cert, &key)?),
        RelayTls::SelfSigned => Some(sotto::tls::RelayCert::load_or_create(&data_dir, &listen)?),
    };
    match cert {
        Some(cert) => {
            relay_config.tls = Some(cert.server_config()?);
            println!(
                "listening on wss://{addr} (TLS certificate SHA-256 {})",
                sotto::tls::show(&cert.fingerprint)
            );
        }
        None => println!("listening on ws://{addr} (plain: no TLS)"),
    }
    std::io::stdout().flush()?;
    relay::run(listener, &data_dir, relay_config, shutdown).await?;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Waits until the manager reports the relay connection up, or fails with the last reason.
async fn wait_online(m: &mut ManagerHandle) -> Result<()> {
    let mut last = String::from("no answer");
    let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, m.events.recv()).await {
            Err(_) => {
                bail!("cannot reach the relay ({last}); is it running, and is the URL right?")
            }
            Ok(None) => {
                bail!("the client stopped unexpectedly; see the log in the profile directory")
            }
            Ok(Some(Event::Connection(ConnState::Online))) => return Ok(()),
            Ok(Some(Event::Connection(ConnState::Offline { reason, .. }))) => last = reason,
            Ok(Some(_)) => {}
        }
    }
}

/// Hands `cmd` (which creates the message `id`) to the manager and waits until the relay has
/// accepted that message.
async fn until_sent(m: &mut ManagerHandle, id: &str, cmd: Command) -> Result<()> {
    m.commands
        .send(cmd)
        .await
        .map_err(|_| anyhow!("the client stopped unexpectedly"))?;
    let deadline = tokio::time::Instant::now() + SEND_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, m.events.recv()).await {
            Err(_) => bail!(
                "the relay did not accept the message in time; it is kept and sent on the next run"
            ),
            Ok(None) => bail!("the client stopped unexpectedly"),
            Ok(Some(Event::MessageState { id: i, .. })) if i == id => return Ok(()),
            Ok(Some(Event::MessageFailed { id: i, error })) if i == id => bail!("{error}"),
            Ok(Some(_)) => {}
        }
    }
}

fn timer_command(handle: &str, secret: bool, timer: Option<u32>) -> (String, Command) {
    let id = uuid::Uuid::new_v4().to_string();
    let cmd = Command::SetTimer {
        id: id.clone(),
        contact: handle.to_string(),
        secret,
        timer,
    };
    (id, cmd)
}

async fn send(
    dir: &Path,
    relay: RelayChoice,
    handle: String,
    secret: bool,
    timer: Option<Option<u32>>,
    text: String,
) -> Result<()> {
    if text.trim().is_empty() {
        bail!("a message cannot be empty");
    }
    let mut m = relay.spawn(dir)?;
    wait_online(&mut m).await?;
    if let Some(timer) = timer {
        let (id, cmd) = timer_command(&handle, secret, timer);
        until_sent(&mut m, &id, cmd).await?;
    }
    let id = uuid::Uuid::new_v4().to_string();
    let cmd = Command::Send {
        id: id.clone(),
        to: handle,
        secret,
        text,
    };
    until_sent(&mut m, &id, cmd).await?;
    m.shutdown();
    Ok(())
}

async fn set_timer(
    dir: &Path,
    relay: RelayChoice,
    handle: String,
    secret: bool,
    timer: Option<u32>,
) -> Result<()> {
    let mut m = relay.spawn(dir)?;
    wait_online(&mut m).await?;
    let (id, cmd) = timer_command(&handle, secret, timer);
    until_sent(&mut m, &id, cmd).await?;
    m.shutdown();
    match timer {
        Some(t) => println!(
            "messages with {handle} now disappear after {}",
            sotto::timer::short(t)
        ),
        None => println!("disappearing messages with {handle} are off"),
    }
    Ok(())
}

fn recv_json(m: &Message) -> String {
    let mut j = match m.kind {
        MessageKind::Text => serde_json::json!({
            "id": m.id,
            "from": m.contact,
            "secret": m.secret,
            "text": m.text,
            "sent_at": m.sent_at,
        }),
        MessageKind::KeyChange => serde_json::json!({
            "id": m.id,
            "kind": "key_change",
            "from": m.contact,
            "secret": m.secret,
            "text": m.text,
            "sent_at": m.sent_at,
        }),
        MessageKind::Timer => serde_json::json!({
            "id": m.id,
            "kind": "timer",
            "from": m.contact,
            "secret": m.secret,
            "timer": m.timer,
            "sent_at": m.sent_at,
        }),
    };
    if let (MessageKind::Text, Some(t)) = (m.kind, m.timer) {
        j["timer"] = t.into();
    }
    j.to_string()
}

fn history_json(m: &Message) -> String {
    serde_json::json!({
        "id": m.id,
        "contact": m.contact,
        "outgoing": m.outgoing,
        "secret": m.secret,
        "text": m.text,
        "sent_at": m.sent_at,
        "state": m.state,
        "kind": m.kind,
        "timer": m.timer,
        "expires_at": m.expires_at,
    })
    .to_string()
}

async fn recv(dir: &Path, relay: RelayChoice, wait: Duration) -> Result<()> {
    let mut m = relay.spawn(dir)?;
    wait_online(&mut m).await?;
    // First everything the relay had queued, then whatever comes within `wait`.
    let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, m.events.recv()).await {
            Err(_) => bail!("the relay did not finish delivering the queue in time"),
            Ok(None) => bail!("the client stopped unexpectedly"),
            Ok(Some(Event::Drained)) => break,
            Ok(Some(Event::Warning(w))) => eprintln!("warning: {w}"),
            Ok(Some(_)) => {}
        }
    }
    let _ = m.commands.send(Command::FetchUnshown { tag: 1 }).await;
    let mut printed = HashSet::new();
    let mut out = std::io::stdout().lock();
    let deadline = tokio::time::Instant::now() + wait;
    let mut fetched = false;
    loop {
        let event = if fetched {
            match tokio::time::timeout_at(deadline, m.events.recv()).await {
                Err(_) => break,
                Ok(e) => e,
            }
        } else {
            m.events.recv().await
        };
        let fresh: Vec<Message> = match event {
            None => bail!("the client stopped unexpectedly"),
            Some(Event::Unshown { messages, .. }) => {
                fetched = true;
                messages
            }
            Some(Event::Message(msg)) if fetched && !msg.outgoing => vec![msg],
            Some(Event::Warning(w)) => {
                eprintln!("warning: {w}");
                continue;
            }
            Some(_) => continue,
        };
        let mut ids = Vec::new();
        for msg in fresh {
            if printed.insert((msg.contact.clone(), msg.id.clone())) {
                writeln!(out, "{}", recv_json(&msg))?;
                ids.push(msg.id);
            }
        }
        out.flush()?;
        if !ids.is_empty() {
            let _ = m.commands.send(Command::MarkShown { ids }).await;
        }
    }
    m.shutdown();
    Ok(())
}
