//! `sotto group create|add|remove|leave|rename|members|list`: a group's membership from a
//! script, through the profile's manager (or the running chat screen's session).
//!
//! Owns the words printed for each change. Must not change a group itself: the manager
//! decides and tells the members.

use std::path::Path;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use sotto::client::manager::{Command, Event, GroupAction, ManagerHandle};
use sotto::client::store::Store;

use super::session::{RelayChoice, wait_online};

/// How long a group change may take: it sends one message per member.
const GROUP_TIMEOUT: Duration = Duration::from_secs(60);

/// The handle of the group a user named, with or without its `#`.
pub fn group_handle(name: &str) -> Result<String> {
    let name = name.trim_start_matches('#');
    if !sotto::client::valid_group_name(name) {
        bail!("{name:?} cannot name a group: 1 to 31 characters of a-z, 0-9, '_', '.', '-'");
    }
    Ok(format!("#{name}"))
}

/// Runs one group action and prints what became of it.
pub async fn run(dir: &Path, relay: RelayChoice, action: GroupAction) -> Result<()> {
    let mut m = relay.join_or_spawn(dir)?;
    if !matches!(action, GroupAction::Members { .. }) {
        wait_online(&mut m).await?;
    }
    let tag = rand::random::<u64>();
    m.commands
        .send(Command::Group { tag, action })
        .await
        .map_err(|_| anyhow!("the client stopped unexpectedly"))?;
    let printed = answer(&mut m, tag).await;
    m.shutdown();
    println!("{}", printed?);
    Ok(())
}

/// The line to print for the manager's answer to command `tag`.
async fn answer(m: &mut ManagerHandle, tag: u64) -> Result<String> {
    let deadline = tokio::time::Instant::now() + GROUP_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, m.events.recv()).await {
            Err(_) => bail!("the group change was not done in time; try again when online"),
            Ok(None) => bail!("the client stopped unexpectedly"),
            Ok(Some(Event::GroupChanged {
                tag: Some(t),
                group,
                change,
            })) if t == tag => return Ok(format!("{group}: {change}")),
            Ok(Some(Event::GroupMembers {
                tag: t, members, ..
            })) if t == tag => {
                return Ok(members
                    .iter()
                    .map(|m| match m.admin {
                        true => format!("{}\tadmin", m.handle),
                        false => format!("{}\tmember", m.handle),
                    })
                    .collect::<Vec<_>>()
                    .join("\n"));
            }
            Ok(Some(Event::Failed { tag: t, error })) if t == tag => bail!("{error}"),
            Ok(Some(_)) => {}
        }
    }
}

/// `sotto group list`: the groups this profile is in, one handle per line with unread counts.
pub fn list(dir: &Path) -> Result<()> {
    let store = Store::open(dir)?;
    store.registration()?;
    let groups: Vec<_> = store.summaries()?.into_iter().filter(|c| c.group).collect();
    if groups.is_empty() {
        println!("no groups yet; start one with `sotto group create NAME HANDLE…`");
    }
    for g in groups {
        println!(
            "{}\t{} unread\t{} unread secret",
            g.handle, g.unread[0], g.unread[1]
        );
    }
    Ok(())
}
