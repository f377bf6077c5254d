//! The command line: every flag, argument and subcommand of `sotto`, with the help text
//! `--help` shows for each.
//!
//! Owns only parsing (clap); must not open a profile, a relay or a connection.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sotto",
    version,
    about = "Terminal chat with per-contact Signal-Protocol secret conversations",
    long_about = "Terminal chat with per-contact Signal-Protocol secret conversations.\n\n\
                  `sotto` without a command opens the chat screen for the profile (create one \
                  first with `sotto init`, or try everything with `sotto demo`). The commands \
                  below work without the chat screen, for scripts and bots.",
    after_help = "`sotto` without a command opens the chat screen. `sotto help COMMAND` or \
                  `sotto COMMAND --help` describes a command."
)]
pub struct Cli {
    /// Profile directory (one profile per directory).
    #[arg(long, value_name = "DIR", conflicts_with = "profile")]
    pub data_dir: Option<PathBuf>,
    /// Profile name: a directory under the platform data dir (default "default").
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// Relay URL, overriding the config file and the relay recorded at init.
    #[arg(long, value_name = "URL")]
    pub relay: Option<String>,
    /// Config file (default ~/.config/sotto/config.toml).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Allow plain ws:// to a relay that is not on this machine; with `relay`, serve plain
    /// ws:// (behind a TLS-terminating proxy).
    #[arg(long, global = true)]
    pub insecure_transport: bool,
    /// Without a command, sotto opens the chat screen for the profile.
    #[command(subcommand)]
    pub command: Option<Cmd>,
}

#[derive(Subcommand)]
pub enum RelayCmd {
    /// Operator commands; they open the relay's database directly and exist nowhere on the
    /// network.
    #[command(subcommand)]
    Admin(AdminCmd),
}

#[derive(Subcommand)]
pub enum AdminCmd {
    /// Let the owner of HANDLE, who lost their device, register new keys for it: prints a
    /// one-time code for `sotto init --handle HANDLE --claim CODE`.
    ResetHandle {
        /// The handle whose owner lost their device.
        handle: String,
    },
    /// Print the relay's counters (connections by state, refusals by reason, as of the
    /// running relay's last write of stats.json), what its queue holds and how many files
    /// (blobs) it keeps, as JSON.
    Stats {
        /// How many accounts to list by queued bytes.
        #[arg(long, value_name = "N", default_value_t = 10)]
        top: usize,
    },
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Try sotto: a relay, your profile and a bot to talk to, all temporary, in one command.
    Demo,
    /// Run a relay (or, with `admin`, operate on its database on this machine).
    ///
    /// Its limits are keys of the config file's [relay_server] (config.example.toml lists
    /// each with its default): connection caps and deadlines, queue quotas, rate limits, and
    /// the blob store that carries attachments: max_blob_mib (largest file, 128),
    /// blob_quota_mib and blobs_per_owner (what one account or anonymous address holds at
    /// once, 1024 MiB and 1000 files), blob_retention_days (30), blob_creates_per_minute (60);
    /// max_group_recipients (recipients of one group message, 100).
    Relay {
        /// Address to listen on (default 127.0.0.1:7878); port 0 picks a free port.
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// Where the relay keeps its database (default: a `sotto/relay` directory under the
        /// platform data dir).
        #[arg(long, value_name = "DIR", global = true)]
        data_dir: Option<PathBuf>,
        /// Where the relay keeps its accounts and queue: `sqlite` (the default: relay.db in
        /// the data directory) or a PostgreSQL URL, postgres://USER@HOST:PORT/DATABASE, which
        /// any number of relays may share (each with its own data directory). No TLS to the
        /// database: use a local server, a Unix socket (HOST %2F-encoded) or a tunnel.
        #[arg(long, value_name = "URL", global = true)]
        database: Option<String>,
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
    /// Create this profile's keys and register a handle at the relay. If it fails, the
    /// profile directory is left as it was.
    Init {
        /// The name others reach you by: 1 to 32 of a-z, 0-9, '_', '.', '-'.
        #[arg(long)]
        handle: String,
        /// The relay to register at (default: the config file's `relay`, else
        /// wss://127.0.0.1:7878); its TLS certificate is pinned now.
        #[arg(long = "relay", value_name = "URL")]
        init_relay: Option<String>,
        /// Take over a handle the relay's operator reset for you (lost device), with the code
        /// they gave you.
        #[arg(long, value_name = "CODE")]
        claim: Option<String>,
    },
    /// Send one message, or a file; exits once the relay has accepted it. Works while the
    /// chat screen runs on the profile (a text goes through that session; a file needs the
    /// profile to itself).
    #[command(
        after_help = "With --attach, the file is encrypted on this machine under a key \
                      of its own, uploaded to the relay as ciphertext, and then announced by \
                      a message carrying its key (sealed in the secret thread); TEXT, if \
                      given, is its caption. The command waits until the upload and the \
                      message are done. Files up to max_attachment MiB (config; default 100)."
    )]
    Send {
        /// Send in the secret (end-to-end encrypted, sealed-sender) thread.
        #[arg(long)]
        secret: bool,
        /// First set the thread's disappearing timer: 30s, 5m, 1h, 1d (5s to 24h) or off.
        #[arg(long, value_name = "DURATION", value_parser = parse_timer)]
        timer: Option<TimerArg>,
        /// Send this file (TEXT, if any, is its caption).
        #[arg(long, value_name = "PATH")]
        attach: Option<PathBuf>,
        /// Send to this group's thread instead (its name, with or without `#`); then give
        /// only the text.
        #[arg(long, value_name = "NAME")]
        group: Option<String>,
        /// The contact's handle (looked up at the relay if not yet a contact), or a group's
        /// (`#NAME`).
        handle: String,
        /// The message; `-` reads it from standard input (all of it, newlines kept).
        /// Optional with --attach.
        #[arg(required_unless_present_any = ["attach", "group"])]
        text: Option<String>,
    },
    /// Write out the file of a message as plaintext (downloading it first if it is still at
    /// the relay), and print where it went.
    #[command(
        after_help = "MSG_ID is the `id` that `sotto history HANDLE` or `sotto recv` prints for \
                      a message whose `attachment` is not null. DEST is a file to create, or a \
                      directory to put the file in under its own name (default: the current \
                      directory). An existing file is never overwritten. The copy is yours: \
                      sotto does not delete it when the message disappears."
    )]
    Save {
        /// The contact's handle.
        handle: String,
        /// The id of the message carrying the file.
        msg_id: String,
        /// Where to write it (a new file, or a directory).
        dest: Option<PathBuf>,
    },
    /// Answer a message: send TEXT quoting MSG_ID; exits once the relay has accepted it.
    #[command(
        after_help = "MSG_ID is the `id` that `sotto history HANDLE` or `sotto recv` prints; \
                      it must be in the same thread (use --secret for the secret one)."
    )]
    Reply {
        /// Both messages are in the secret thread.
        #[arg(long)]
        secret: bool,
        /// The contact's handle.
        handle: String,
        /// The id of the message answered.
        msg_id: String,
        /// The answer; `-` reads it from standard input.
        text: String,
    },
    /// React to a message with an emoji (one per person per message: it replaces yours);
    /// the same emoji again, or --remove, takes yours away.
    #[command(
        after_help = "MSG_ID is the `id` that `sotto history HANDLE` or `sotto recv` prints."
    )]
    React {
        /// The message is in the secret thread.
        #[arg(long)]
        secret: bool,
        /// Take your reaction away instead.
        #[arg(long, conflicts_with = "emoji")]
        remove: bool,
        /// The contact's handle.
        handle: String,
        /// The id of the message.
        msg_id: String,
        /// One emoji, e.g. 👍.
        #[arg(required_unless_present = "remove")]
        emoji: Option<String>,
    },
    /// Replace the text of one of your own messages, within 24 hours of sending it; the
    /// contact sees the new text marked (edited). No earlier text is kept.
    #[command(after_help = "MSG_ID is the `id` that `sotto history HANDLE` prints.")]
    Edit {
        /// The message is in the secret thread.
        #[arg(long)]
        secret: bool,
        /// The contact's handle.
        handle: String,
        /// The id of your message.
        msg_id: String,
        /// The new text; `-` reads it from standard input.
        text: String,
    },
    /// Delete a message from this profile (securely, as disappearing messages are); with
    /// --for-everyone (your own, within 24 hours) the contact's copy too, which then shows
    /// "message deleted".
    #[command(after_help = "MSG_ID is the `id` that `sotto history HANDLE` prints.")]
    Delete {
        /// The message is in the secret thread.
        #[arg(long)]
        secret: bool,
        /// Delete it for the contact too (your own messages, within 24 hours).
        #[arg(long)]
        for_everyone: bool,
        /// The contact's handle.
        handle: String,
        /// The id of the message.
        msg_id: String,
    },
    /// Set a thread's disappearing timer (5s to 24h, or off) and tell the contact.
    Timer {
        /// The contact's handle.
        handle: String,
        /// 30s, 5m, 1h, 1d or off.
        #[arg(value_parser = parse_timer)]
        duration: TimerArg,
        /// The secret thread instead of the normal one.
        #[arg(long)]
        secret: bool,
    },
    /// Print messages not read yet as JSON lines (the README lists the fields), then (with
    /// --wait or --follow) those that arrive. Each message is printed once, and only after
    /// it is stored. Works while the chat screen runs on the profile.
    Recv {
        /// Keep listening this many seconds after the queue is drained.
        #[arg(
            long,
            value_name = "SECONDS",
            default_value_t = 0.0,
            conflicts_with = "follow"
        )]
        wait: f64,
        /// Keep printing messages as they arrive until interrupted (Ctrl-C or SIGTERM, which
        /// exit 0).
        #[arg(long)]
        follow: bool,
        /// Only this group's messages (its name, with or without `#`); the others stay
        /// unread for a later `recv`.
        #[arg(long, value_name = "NAME")]
        group: Option<String>,
    },
    /// Groups: create one, change its members or name (admins), leave it, or list.
    #[command(
        subcommand,
        after_help = "A group has a normal and a secret thread, like a contact; its handle \
                      is #NAME (`sotto send --group NAME TEXT`, `sotto history --group NAME`). \
                      Membership lives on the members' devices: changes go from an admin to \
                      every member, end-to-end encrypted; the relay never learns a group's \
                      name or members."
    )]
    Group(GroupCmd),
    /// List contacts with their verified state.
    Contacts {
        /// One JSON object per contact: handle, account_id, verified, key_changed, blocked.
        #[arg(long)]
        json: bool,
    },
    /// Print a thread's messages as JSON lines (the same fields as `recv`), oldest first.
    History {
        /// The contact's handle, or a group's (`#NAME`).
        #[arg(required_unless_present = "group")]
        handle: Option<String>,
        /// A group's thread instead (its name, with or without `#`).
        #[arg(long, value_name = "NAME", conflicts_with = "handle")]
        group: Option<String>,
        /// The secret thread instead of the normal one.
        #[arg(long)]
        secret: bool,
        /// At most this many of the newest messages.
        #[arg(long, value_name = "N", default_value_t = 100)]
        limit: usize,
    },
    /// Search the texts of every thread (or of one) for words, newest first. Each word
    /// matches words that start with it, in any case, accents ignored; all must occur.
    #[command(
        after_help = "Text output is one line per message: time (RFC 3339, UTC), contact, \
                      thread, direction (in/out), message id, and the words around the match, \
                      tab-separated."
    )]
    Search {
        /// The words to look for.
        #[arg(required = true, value_name = "WORDS")]
        words: Vec<String>,
        /// Print each message as a JSON line (the same fields as `recv` and `history`).
        #[arg(long)]
        json: bool,
        /// Search only this contact's normal thread (with --secret, their secret thread).
        #[arg(long, value_name = "HANDLE")]
        contact: Option<String>,
        /// With --contact: the secret thread instead of the normal one.
        #[arg(long, requires = "contact")]
        secret: bool,
        /// At most this many of the newest matches.
        #[arg(long, value_name = "N", default_value_t = 100)]
        limit: usize,
    },
    /// Show this profile: handle, account id, relay and the relay's trust-root fingerprint.
    Info,
    /// Trust the relay's new TLS certificate after its operator replaced it: give the SHA-256
    /// fingerprint the relay prints, as you got it from the operator.
    PinCert {
        /// 64 hex digits, colons optional.
        fingerprint: String,
    },
    /// Replace this profile's identity key (signed by the current one); contacts will see
    /// that your safety number changed.
    Rekey,
    /// Block a contact: what they send is dropped unread and unanswered (no delivery
    /// receipt), nothing can be sent to them, and the chat screen hides them.
    Block {
        /// The contact's handle.
        handle: String,
        /// Unblock instead.
        #[arg(long)]
        undo: bool,
    },
    /// Delete a contact with both threads (securely, as disappearing messages are); if they
    /// write again they come back as a new contact (block them to keep them out).
    Remove {
        /// The contact's handle.
        handle: String,
    },
    /// Show the safety number with a contact (compare it with theirs), or record a verdict.
    #[command(
        after_help = "Exit status: 0 on success; 1 on an error, on --compare without \
                            a match, and on --check when the contact is not verified."
    )]
    Verify {
        /// The contact's handle.
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
        /// For scripts: exit 0 if the contact is marked verified, 1 if not (with one line on
        /// stderr saying why); prints nothing on success.
        #[arg(long, group = "action")]
        check: bool,
    },
}

/// A timer as given on the command line: seconds, or None for `off`. A newtype, because clap
/// would read a bare `Option` as "the argument may be missing".
#[derive(Debug, Clone, Copy)]
pub struct TimerArg(pub Option<u32>);

fn parse_timer(s: &str) -> Result<TimerArg, String> {
    sotto::timer::parse(s)
        .map(TimerArg)
        .map_err(|e| e.to_string())
}

#[derive(Subcommand)]
pub enum GroupCmd {
    /// Start a group with these contacts; you are its first admin.
    Create {
        /// Its name: 1 to 31 characters of a-z, 0-9, '_', '.', '-' (the handle is #NAME).
        name: String,
        /// The members' handles.
        #[arg(required = true)]
        handles: Vec<String>,
    },
    /// Add a member (admins only).
    Add { name: String, handle: String },
    /// Remove a member (admins only); the group's keys change, so they read nothing after.
    Remove { name: String, handle: String },
    /// Leave the group; the others' keys change.
    Leave { name: String },
    /// Rename the group (admins only).
    Rename { name: String, new_name: String },
    /// List a group's members and admins.
    Members { name: String },
    /// List your groups with their unread counts.
    List,
}
