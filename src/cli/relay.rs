//! `sotto relay`: serving a relay from the command line, and the operator's `admin`
//! commands that work on its database on this machine.
//!
//! Owns turning the config file's `[relay_server]` and the flags into a `RelayConfig` and a
//! TLS choice. Must not touch a profile.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use sotto::config::{self, Config};
use sotto::relay::store::{self, Database, Directory};
use sotto::relay::{self, RelayConfig};
use tokio_util::sync::CancellationToken;

fn relay_dir(config: &Config, data_dir: Option<PathBuf>) -> Result<PathBuf> {
    match data_dir.or(config.relay_server.data_dir.clone()) {
        Some(d) => Ok(d),
        None => Ok(dirs::data_dir()
            .ok_or_else(|| anyhow!("no data directory found for this user; pass --data-dir DIR"))?
            .join("sotto")
            .join("relay")),
    }
}

/// Where the relay's state lives, from `--database` or the config's `database`: SQLite
/// unless a PostgreSQL URL is given.
pub fn database(config: &Config, flag: Option<String>) -> Result<Database> {
    match flag.or(config.relay_server.database.clone()) {
        None => Ok(Database::Sqlite),
        Some(s) => Database::named(&s).ok_or_else(|| {
            anyhow!(
                "the relay's database must be `sqlite` or a PostgreSQL URL such as \
                 postgres://USER@HOST:5432/DATABASE (check --database or [relay_server] database)"
            )
        }),
    }
}

/// The directory of the relay's state in `dir` and `db`, for the operator's commands; for
/// SQLite, `dir` must already hold a relay database.
fn open_directory(dir: &Path, db: &Database) -> Result<Box<dyn Directory>> {
    if matches!(db, Database::Sqlite) && !dir.join("relay.db").exists() {
        bail!(
            "no relay database in {}; pass the relay's --data-dir (and its --database if it \
             runs on PostgreSQL)",
            dir.display()
        );
    }
    Ok(store::open(db, dir, RelayConfig::default().queue)?.directory)
}

/// `sotto relay admin stats`: the running relay's counters, the queue and the blob store, as
/// one JSON object.
pub fn stats(
    config: &Config,
    data_dir: Option<PathBuf>,
    database: Option<String>,
    top: usize,
) -> Result<()> {
    let dir = relay_dir(config, data_dir)?;
    let mut store = open_directory(&dir, &self::database(config, database)?)?;
    let counters = match std::fs::read(dir.join(relay::stats::FILE)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is damaged", relay::stats::FILE))?,
        // Written by a running relay every few seconds; none has run here yet.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::Value::Null,
        Err(e) => return Err(e).context("cannot read the relay's counters"),
    };
    let queue = store.queue_summary(top)?;
    let blobs = store.blob_summary()?;
    let report = serde_json::json!({ "counters": counters, "queue": queue, "blobs": blobs });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// `sotto relay admin reset-handle`: arms a one-time claim code for HANDLE.
pub fn reset_handle(
    config: &Config,
    data_dir: Option<PathBuf>,
    database: Option<String>,
    handle: &str,
) -> Result<()> {
    let dir = relay_dir(config, data_dir)?;
    let mut store = open_directory(&dir, &self::database(config, database)?)?;
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
pub enum RelayTls {
    Plain,
    Files { cert: PathBuf, key: PathBuf },
    SelfSigned,
}

/// How to serve: the flag and the config file's `[relay_server]` together.
pub fn tls(
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
    if let Some(n) = server.max_group_recipients {
        c.max_group_recipients = n;
    }
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
    set(
        &mut r.blob_creates_per_minute,
        server.blob_creates_per_minute,
    );
    let b = &mut c.blobs;
    let set = |into: &mut u64, v: Option<u64>, unit: u64| {
        if let Some(v) = v {
            *into = v.saturating_mul(unit);
        }
    };
    set(&mut b.max_blob, server.max_blob_mib, MIB);
    set(&mut b.owner_bytes, server.blob_quota_mib, MIB);
    set(&mut b.owner_blobs, server.blobs_per_owner, 1);
    if let Some(days) = server.blob_retention_days {
        b.retention = Duration::from_secs(days.saturating_mul(24 * 60 * 60));
    }
}

/// Serves until SIGINT or SIGTERM, after printing the one `listening on …` line.
pub async fn serve(
    config: &Config,
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    database: Database,
    tls: RelayTls,
) -> Result<()> {
    let server = &config.relay_server;
    let listen = listen
        .or(server.listen.clone())
        .unwrap_or_else(|| config::DEFAULT_LISTEN.to_string());
    let data_dir = relay_dir(config, data_dir)?;
    let mut relay_config = RelayConfig {
        database,
        ..RelayConfig::default()
    };
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
    let mut interrupt = super::signal::Interrupt::listen()?;
    tokio::spawn(async move {
        interrupt.wait().await;
        signal.cancel();
    });
    // Open the store before announcing, so "listening" means ready.
    let (dir, db) = (data_dir.clone(), relay_config.database.clone());
    tokio::task::spawn_blocking(move || relay::trust_root(&dir, &db)).await??;
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
