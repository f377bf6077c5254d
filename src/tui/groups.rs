//! What the chat screen does with groups: `/group` commands turned into
//! `Command::Group`, and the manager's answers (members listed, a change noted, a new
//! group opened).
//!
//! Owns the screen's group requests in flight. Must not touch the store or decide who may
//! change a group: the manager and the members' clients do.

use super::app::{App, ThreadKey};
use super::group_commands::GroupSlash;
use crate::client::manager::{Command, GroupAction, GroupMember};

impl App {
    /// A `/group` command: `new` is about no thread, the others about the open group.
    pub(super) fn group_slash(&mut self, slash: GroupSlash) -> Vec<Command> {
        let open_group = self
            .open
            .as_ref()
            .map(|o| o.handle.clone())
            .filter(|h| crate::client::group_handle(h));
        let action = match (slash, open_group) {
            (GroupSlash::New { name, members }, _) => {
                let tag = self.tag();
                self.groups_created.push(tag);
                self.info(format!("creating #{name}…"));
                return vec![Command::Group {
                    tag,
                    action: GroupAction::Create { name, members },
                }];
            }
            (_, None) => {
                self.error("open a group's conversation first (groups are the #names)");
                return Vec::new();
            }
            (GroupSlash::Add(handle), Some(group)) => GroupAction::Add { group, handle },
            (GroupSlash::Remove(handle), Some(group)) => GroupAction::Remove { group, handle },
            (GroupSlash::Leave, Some(group)) => GroupAction::Leave { group },
            (GroupSlash::Rename(name), Some(group)) => GroupAction::Rename { group, name },
            (GroupSlash::Members, Some(group)) => GroupAction::Members { group },
        };
        let tag = self.tag();
        vec![Command::Group { tag, action }]
    }

    /// The members of a group, on the status line.
    pub(super) fn on_group_members(&mut self, group: String, members: Vec<GroupMember>) {
        let names: Vec<String> = members
            .iter()
            .map(|m| match m.admin {
                true => format!("{} (admin)", m.handle),
                false => m.handle.clone(),
            })
            .collect();
        self.info(format!("{group}: {}", names.join(", ")));
    }

    /// A group was made or changed: say so, refresh the list, and open a group we just made.
    pub(super) fn on_group_changed(
        &mut self,
        tag: Option<u64>,
        group: String,
        change: String,
    ) -> Vec<Command> {
        self.info(format!("{group}: {change}"));
        let mut cmds = vec![Command::ListContacts];
        let ours = tag.is_some_and(|t| {
            let found = self.groups_created.contains(&t);
            self.groups_created.retain(|c| *c != t);
            found
        });
        if ours {
            cmds.extend(self.open_thread(ThreadKey {
                handle: group,
                secret: false,
            }));
        }
        cmds
    }
}
