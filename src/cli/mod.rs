//! The `sotto` binary's commands: what each subcommand does with the profile, the relay and
//! the terminal. Part of the binary, not the library, so its errors are `anyhow`'s.
//!
//! Owns the order of the steps (config, runtime, logs, profile, command) and the output of
//! each command. Must not hold chat logic (the library's manager does) or draw the chat
//! screen (`sotto::tui` does).

mod args;
mod attach;
mod chat;
mod group;
mod init;
mod profile;
mod recv;
mod relay;
mod rich;
mod search;
mod send;
mod session;
mod signal;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use sotto::config::{self, Config};

pub use args::Cli;
use args::{AdminCmd, Cmd, GroupCmd, RelayCmd};
use session::RelayChoice;
use sotto::client::manager::GroupAction;

/// Runs the command `cli` names; the exit code is for commands whose answer is a status.
pub fn run(cli: Cli) -> Result<ExitCode> {
    let config = Config::load(cli.config.as_deref())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let command = match cli.command {
        Some(Cmd::Relay {
            admin: Some(RelayCmd::Admin(AdminCmd::ResetHandle { handle })),
            data_dir,
            database,
            ..
        }) => return relay::reset_handle(&config, data_dir, database, &handle).map(done),
        Some(Cmd::Relay {
            admin: Some(RelayCmd::Admin(AdminCmd::Stats { top })),
            data_dir,
            database,
            ..
        }) => return relay::stats(&config, data_dir, database, top).map(done),
        Some(Cmd::Relay {
            listen,
            data_dir,
            database,
            tls_cert,
            tls_key,
            ..
        }) => {
            sotto::logs::init(None, config.log.as_deref());
            let tls = relay::tls(&config, cli.insecure_transport, tls_cert, tls_key)?;
            let database = relay::database(&config, database)?;
            return rt
                .block_on(relay::serve(&config, listen, data_dir, database, tls))
                .map(done);
        }
        Some(Cmd::Demo) => return rt.block_on(chat::demo(&config)).map(done),
        Some(c) => c,
        None => {
            let dir = config::profile_dir(cli.data_dir.as_deref(), cli.profile.as_deref())?;
            sotto::logs::init(Some(&dir.join("sotto.log")), config.log.as_deref());
            let relay = RelayChoice::new(&config, cli.relay, cli.insecure_transport);
            return rt.block_on(chat::chat(&config, &dir, relay)).map(done);
        }
    };
    let dir = config::profile_dir(cli.data_dir.as_deref(), cli.profile.as_deref())?;
    if let Cmd::Init {
        handle,
        init_relay,
        claim,
    } = command
    {
        let url = init_relay
            .or(cli.relay)
            .or(config.relay.clone())
            .unwrap_or_else(|| config::DEFAULT_RELAY.to_string());
        let insecure = RelayChoice::new(&config, None, cli.insecure_transport).insecure;
        let request = init::Request {
            handle,
            url,
            claim,
            insecure,
        };
        return init::run(&rt, &config, &dir, request).map(done);
    }
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the profile directory {}", dir.display()))?;
    sotto::logs::init(Some(&dir.join("sotto.log")), config.log.as_deref());
    let relay_override = cli.relay.clone();
    let relay = RelayChoice::new(&config, cli.relay, cli.insecure_transport);
    match command {
        Cmd::Relay { .. } | Cmd::Demo | Cmd::Init { .. } => unreachable!("handled above"),
        Cmd::Send {
            group: Some(_),
            text: Some(_),
            ..
        } => bail!("with --group, give only the message: `sotto send --group NAME TEXT`"),
        Cmd::Send {
            secret,
            timer,
            attach,
            group,
            handle,
            text,
        } => {
            // With --group the one positional given is the text (or the caption).
            let (handle, text) = match group {
                Some(name) => (group::group_handle(&name)?, text.or(Some(handle))),
                None => (handle, text),
            };
            let text = text.map(send::text_argument).transpose()?;
            let timer = timer.map(|t| t.0);
            match (attach, text) {
                (Some(path), caption) => rt
                    .block_on(attach::send_file(
                        &dir, relay, handle, secret, timer, path, caption,
                    ))
                    .map(done),
                (None, text) => rt
                    .block_on(send::send(
                        &dir,
                        relay,
                        handle,
                        secret,
                        timer,
                        text.unwrap_or_default(),
                    ))
                    .map(done),
            }
        }
        Cmd::Save {
            handle,
            msg_id,
            dest,
        } => rt
            .block_on(attach::save(
                &dir,
                relay,
                &handle,
                &msg_id,
                dest.unwrap_or_else(|| PathBuf::from(".")),
            ))
            .map(done),
        Cmd::Timer {
            handle,
            duration,
            secret,
        } => rt
            .block_on(send::set_timer(&dir, relay, handle, secret, duration.0))
            .map(done),
        Cmd::Reply {
            secret,
            handle,
            msg_id,
            text,
        } => {
            let text = send::text_argument(text)?;
            let target = rich::Target::new(handle, secret, msg_id);
            rt.block_on(rich::reply(&dir, relay, target, text))
                .map(done)
        }
        Cmd::React {
            secret,
            remove: _,
            handle,
            msg_id,
            emoji,
        } => {
            let target = rich::Target::new(handle, secret, msg_id);
            rt.block_on(rich::react(&dir, relay, target, emoji))
                .map(done)
        }
        Cmd::Edit {
            secret,
            handle,
            msg_id,
            text,
        } => {
            let text = send::text_argument(text)?;
            let target = rich::Target::new(handle, secret, msg_id);
            rt.block_on(rich::edit(&dir, relay, target, text)).map(done)
        }
        Cmd::Delete {
            secret,
            for_everyone,
            handle,
            msg_id,
        } => {
            let target = rich::Target::new(handle, secret, msg_id);
            rt.block_on(rich::delete(&dir, relay, target, for_everyone))
                .map(done)
        }
        Cmd::Recv {
            wait,
            follow,
            group: only,
        } => {
            let until = recv::Until::from_args(wait, follow)?;
            let only = only.map(|g| group::group_handle(&g)).transpose()?;
            rt.block_on(recv::recv(&dir, relay, until, only)).map(done)
        }
        Cmd::Group(GroupCmd::List) => group::list(&dir).map(done),
        Cmd::Group(cmd) => {
            let action = match cmd {
                GroupCmd::Create { name, handles } => GroupAction::Create {
                    name: group::group_handle(&name)?[1..].to_string(),
                    members: handles,
                },
                GroupCmd::Add { name, handle } => GroupAction::Add {
                    group: group::group_handle(&name)?,
                    handle,
                },
                GroupCmd::Remove { name, handle } => GroupAction::Remove {
                    group: group::group_handle(&name)?,
                    handle,
                },
                GroupCmd::Leave { name } => GroupAction::Leave {
                    group: group::group_handle(&name)?,
                },
                GroupCmd::Rename { name, new_name } => GroupAction::Rename {
                    group: group::group_handle(&name)?,
                    name: group::group_handle(&new_name)?[1..].to_string(),
                },
                GroupCmd::Members { name } => GroupAction::Members {
                    group: group::group_handle(&name)?,
                },
                GroupCmd::List => unreachable!("handled above"),
            };
            rt.block_on(group::run(&dir, relay, action)).map(done)
        }
        Cmd::Contacts { json } => profile::contacts(&dir, json).map(done),
        Cmd::History {
            handle,
            group: name,
            secret,
            limit,
        } => {
            let handle = match name {
                Some(name) => group::group_handle(&name)?,
                None => handle.unwrap_or_default(),
            };
            profile::history(&dir, &handle, secret, limit).map(done)
        }
        Cmd::Search {
            words,
            json,
            contact,
            secret,
            limit,
        } => search::run(
            &dir,
            search::Request {
                words,
                json,
                thread: contact.map(|h| (h, secret)),
                limit,
            },
        )
        .map(done),
        Cmd::Block { handle, undo } => profile::block(&dir, &handle, !undo).map(done),
        Cmd::Remove { handle } => profile::remove(&dir, &handle).map(done),
        Cmd::Rekey => {
            let insecure = relay.insecure;
            rt.block_on(profile::rekey(&dir, relay_override.as_deref(), insecure))
                .map(done)
        }
        Cmd::Verify {
            handle,
            mark,
            unmark,
            accept_change,
            scannable,
            compare,
            check,
        } => {
            let action = match (mark, unmark, accept_change, scannable, compare, check) {
                (true, ..) => verify::Action::Mark(true),
                (_, true, ..) => verify::Action::Mark(false),
                (_, _, true, ..) => verify::Action::AcceptChange,
                (_, _, _, true, ..) => verify::Action::Scannable,
                (_, _, _, _, Some(path), _) => verify::Action::Compare(path),
                (.., true) => verify::Action::Check,
                _ => verify::Action::Show,
            };
            verify::run(&dir, &handle, action)
        }
        Cmd::Info => profile::info(&dir).map(done),
        Cmd::PinCert { fingerprint } => profile::pin_cert(&dir, &fingerprint).map(done),
    }
}

/// The exit code of a command that either did its work or failed with an error.
fn done(_: ()) -> ExitCode {
    ExitCode::SUCCESS
}
