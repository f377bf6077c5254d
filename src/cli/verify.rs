//! `sotto verify`: the safety number with a contact, and the user's verdict on it.
//!
//! Owns how a safety number, its QR code and the key history are printed, and the exit
//! status of `--check`. Must not decide trust: `sotto::client::trust` does.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use sotto::client::store::Store;
use sotto::client::trust;

/// What `sotto verify HANDLE` was asked to do.
pub enum Action {
    Show,
    /// Mark verified (true) or take the mark away.
    Mark(bool),
    AcceptChange,
    Scannable,
    /// Compare with the other side's scannable form, from a file or `-` for stdin.
    Compare(PathBuf),
    /// Exit 0 only if the contact is marked verified.
    Check,
}

pub fn run(dir: &Path, handle: &str, action: Action) -> Result<ExitCode> {
    let store = Store::open(dir)?;
    store.registration()?;
    match action {
        Action::Mark(mark) => {
            trust::set_verified(&store, handle, mark)?;
            println!(
                "{handle} is {}",
                if mark {
                    "marked verified"
                } else {
                    "no longer marked verified"
                }
            );
        }
        Action::AcceptChange => {
            let now = sotto::client::clock::Clock::system().now_ms();
            if trust::accept_change(&store, handle, now)? {
                println!(
                    "accepted {handle}'s new safety number; secret messages can go to them again"
                );
            } else {
                println!("{handle}'s safety number has not changed; nothing to accept");
            }
        }
        Action::Compare(path) => {
            let theirs = if path.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())
                    .context("cannot read the scanned number from standard input")?
            } else {
                std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?
            };
            if !trust::compare(&store, handle, &theirs)? {
                bail!(
                    "no match: this is not {handle}'s safety number with you; do not mark them verified"
                );
            }
            println!("match: you and {handle} see each other's real keys");
        }
        Action::Check => {
            let Some(contact) = store.contact_by_handle(handle)? else {
                bail!("{handle:?} is not among your contacts (see `sotto contacts`)");
            };
            if contact.verified && !contact.key_changed {
                return Ok(ExitCode::SUCCESS);
            }
            if contact.key_changed {
                eprintln!("{handle}'s safety number changed and is not verified");
            } else {
                eprintln!("{handle} is not marked verified");
            }
            return Ok(ExitCode::FAILURE);
        }
        Action::Scannable => {
            let number = trust::safety_number(&store, handle)?;
            println!("{}", trust::hex(&number.scannable));
        }
        Action::Show => {
            let number = trust::safety_number(&store, handle)?;
            print_safety_number(&number);
            print_key_log(&trust::key_log(&store, handle)?);
        }
    }
    Ok(ExitCode::SUCCESS)
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
