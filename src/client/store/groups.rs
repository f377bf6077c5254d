//! Groups as the client keeps them: a group is a contacts row (kind 'group') so that its two
//! threads, timers, the sweeper and search work as for a person; this module owns the
//! `groups`, `group_members` and `sender_key_shared` tables and the group rows of `contacts`.
//!
//! Membership lives here, on the clients; the relay never sees it. Must not encrypt (the
//! sender-key records are `signal_store`'s) nor touch the network.

use std::collections::HashSet;

use rusqlite::{OptionalExtension, params};

use super::{Result, Store};

/// The migration that adds groups (appended to `MIGRATIONS`).
pub(super) const MIGRATION: &str = r#"
-- issue 23 (groups): a group is a contacts row of kind 'group' whose account_id is the group
-- id (32 hex digits, never a UUID) and whose handle is '#' + its name.
ALTER TABLE contacts ADD COLUMN kind TEXT NOT NULL DEFAULT 'person';
-- The member who wrote an incoming group message (an account id); NULL otherwise.
ALTER TABLE messages ADD COLUMN author TEXT;
CREATE TABLE groups (
    id TEXT PRIMARY KEY REFERENCES contacts(account_id),
    name TEXT NOT NULL,
    -- Names the sender keys of the group's current epoch of keys; a new one after a removal.
    distribution_id BLOB NOT NULL,
    epoch INTEGER NOT NULL,
    -- We left or were removed: nothing is sent to it or taken from it any more.
    "left" INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE group_members (
    group_id TEXT NOT NULL REFERENCES groups(id),
    account_id TEXT NOT NULL,
    admin INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (group_id, account_id)
) WITHOUT ROWID;
-- libsignal's sender-key records: ours and each member's, per distribution id.
CREATE TABLE sender_keys (
    address TEXT NOT NULL,
    distribution_id BLOB NOT NULL,
    record BLOB NOT NULL,
    PRIMARY KEY (address, distribution_id)
) WITHOUT ROWID;
-- The members our current sender key of the group was sent to.
CREATE TABLE sender_key_shared (
    group_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    PRIMARY KEY (group_id, account_id)
) WITHOUT ROWID;
"#;

/// A group's handle starts with this; person handles never do (`wire::valid_handle`).
pub const GROUP_PREFIX: char = '#';

/// One member of a group, by account id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub account_id: String,
    pub admin: bool,
}

/// A group as this client knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// 32 lowercase hex digits; also the group's `contacts.account_id`.
    pub id: String,
    /// `#` + name (made unique on this device).
    pub handle: String,
    pub name: String,
    pub distribution_id: [u8; 16],
    pub epoch: u64,
    /// We left it, or were removed.
    pub left: bool,
    /// Every member, ourselves included, in the order they were stored.
    pub members: Vec<Member>,
}

impl Group {
    pub fn member(&self, account_id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.account_id == account_id)
    }

    pub fn is_admin(&self, account_id: &str) -> bool {
        self.member(account_id).is_some_and(|m| m.admin)
    }
}

/// Whether a contacts `account_id` names a group: 32 lowercase hex digits (account ids are
/// hyphenated UUIDs).
pub fn is_group_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Store {
    /// Stores a new group (its contacts row with both threads, and its members) under a
    /// handle made from `group.name`, unique on this device; returns the handle.
    pub fn insert_group(&self, group: &Group, now: u64) -> Result<String> {
        let work = self.atomic()?;
        let handle = self.free_group_handle(&group.name)?;
        self.conn.execute(
            "INSERT INTO contacts (account_id, handle, identity_key, access_token, added_at, kind)
             VALUES (?1, ?2, x'', x'', ?3, 'group')",
            params![group.id, handle, now as i64],
        )?;
        self.conn.execute(
            "INSERT OR IGNORE INTO threads (contact, secret) VALUES (?1, 0), (?1, 1)",
            [&group.id],
        )?;
        self.conn.execute(
            r#"INSERT INTO groups (id, name, distribution_id, epoch, "left")
             VALUES (?1, ?2, ?3, ?4, ?5)"#,
            params![
                group.id,
                group.name,
                &group.distribution_id[..],
                group.epoch as i64,
                group.left
            ],
        )?;
        self.set_members(&group.id, &group.members)?;
        work.commit()?;
        Ok(handle)
    }

    /// Replaces what a group is (name, distribution id, epoch, members, left) with `group`;
    /// a new name takes a new handle. Returns the handle.
    pub fn update_group(&self, group: &Group) -> Result<String> {
        let work = self.atomic()?;
        let old = self
            .group(&group.id)?
            .ok_or(rusqlite::Error::QueryReturnedNoRows)?;
        let handle = if old.name == group.name {
            old.handle
        } else {
            let h = self.free_group_handle(&group.name)?;
            self.conn.execute(
                "UPDATE contacts SET handle = ?2 WHERE account_id = ?1",
                params![group.id, h],
            )?;
            h
        };
        self.conn.execute(
            r#"UPDATE groups SET name = ?2, distribution_id = ?3, epoch = ?4, "left" = ?5
             WHERE id = ?1"#,
            params![
                group.id,
                group.name,
                &group.distribution_id[..],
                group.epoch as i64,
                group.left
            ],
        )?;
        self.conn
            .execute("DELETE FROM group_members WHERE group_id = ?1", [&group.id])?;
        self.set_members(&group.id, &group.members)?;
        work.commit()?;
        Ok(handle)
    }

    fn set_members(&self, group_id: &str, members: &[Member]) -> Result<()> {
        let mut st = self.conn.prepare_cached(
            "INSERT OR REPLACE INTO group_members (group_id, account_id, admin) VALUES (?1, ?2, ?3)",
        )?;
        for m in members {
            st.execute(params![group_id, m.account_id, m.admin])?;
        }
        Ok(())
    }

    /// `#name`, or `#name-2`, `#name-3`… if a contact has that handle already.
    fn free_group_handle(&self, name: &str) -> Result<String> {
        let base = format!("{GROUP_PREFIX}{name}");
        let mut handle = base.clone();
        let mut n = 2;
        while self.contact_by_handle(&handle)?.is_some() {
            handle = format!("{base}-{n}");
            n += 1;
        }
        Ok(handle)
    }

    /// The group with id `id`, with its members.
    pub fn group(&self, id: &str) -> Result<Option<Group>> {
        let row = self
            .conn
            .prepare_cached(
                r#"SELECT g.id, c.handle, g.name, g.distribution_id, g.epoch, g."left"
                 FROM groups g JOIN contacts c ON c.account_id = g.id WHERE g.id = ?1"#,
            )?
            .query_row([id], |r| {
                let dist: Vec<u8> = r.get(3)?;
                Ok(Group {
                    id: r.get(0)?,
                    handle: r.get(1)?,
                    name: r.get(2)?,
                    distribution_id: dist.try_into().unwrap_or([0; 16]),
                    epoch: r.get::<_, i64>(4)? as u64,
                    left: r.get(5)?,
                    members: Vec::new(),
                })
            })
            .optional()?;
        let Some(mut group) = row else {
            return Ok(None);
        };
        // Admins first (the creator among them), then by account id.
        let mut st = self.conn.prepare_cached(
            "SELECT account_id, admin FROM group_members WHERE group_id = ?1
             ORDER BY admin DESC, account_id",
        )?;
        group.members = st
            .query_map([id], |r| {
                Ok(Member {
                    account_id: r.get(0)?,
                    admin: r.get(1)?,
                })
            })?
            .collect::<std::result::Result<_, _>>()?;
        Ok(Some(group))
    }

    /// The group whose handle is `handle` (`#name`).
    pub fn group_by_handle(&self, handle: &str) -> Result<Option<Group>> {
        let id: Option<String> = self
            .conn
            .prepare_cached("SELECT account_id FROM contacts WHERE handle = ?1 AND kind = 'group'")?
            .query_row([handle], |r| r.get(0))
            .optional()?;
        match id {
            Some(id) => self.group(&id),
            None => Ok(None),
        }
    }

    /// The groups we are still in that `account_id` is a member of.
    pub fn groups_with_member(&self, account_id: &str) -> Result<Vec<String>> {
        let mut st = self.conn.prepare_cached(
            r#"SELECT m.group_id FROM group_members m JOIN groups g ON g.id = m.group_id
             WHERE m.account_id = ?1 AND g."left" = 0"#,
        )?;
        let ids = st
            .query_map([account_id], |r| r.get(0))?
            .collect::<std::result::Result<_, _>>()?;
        Ok(ids)
    }

    /// The members our current sender key of `group_id` was sent to.
    pub fn sender_key_shared(&self, group_id: &str) -> Result<HashSet<String>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT account_id FROM sender_key_shared WHERE group_id = ?1")?;
        let ids = st
            .query_map([group_id], |r| r.get(0))?
            .collect::<std::result::Result<_, _>>()?;
        Ok(ids)
    }

    /// Records that our current sender key of `group_id` was sent to these members.
    pub fn mark_sender_key_shared(&self, group_id: &str, members: &[String]) -> Result<()> {
        let mut st = self.conn.prepare_cached(
            "INSERT OR IGNORE INTO sender_key_shared (group_id, account_id) VALUES (?1, ?2)",
        )?;
        for m in members {
            st.execute(params![group_id, m])?;
        }
        Ok(())
    }

    /// Forgets every sender key under `distribution_id` (ours and the members') and whom
    /// ours was shared with: the next send makes a new key and shares it again.
    pub fn forget_sender_keys(&self, group_id: &str, distribution_id: &[u8; 16]) -> Result<()> {
        self.conn.execute(
            "DELETE FROM sender_keys WHERE distribution_id = ?1",
            [&distribution_id[..]],
        )?;
        self.conn.execute(
            "DELETE FROM sender_key_shared WHERE group_id = ?1",
            [group_id],
        )?;
        Ok(())
    }

    /// Forgets our own sender key of a group and whom it was shared with (a member's key
    /// changed: the next send starts a new chain, shared again with everyone).
    pub fn forget_own_sender_key(
        &self,
        own_address: &str,
        group_id: &str,
        distribution_id: &[u8; 16],
    ) -> Result<()> {
        self.conn.execute(
            "DELETE FROM sender_keys WHERE address = ?1 AND distribution_id = ?2",
            params![own_address, &distribution_id[..]],
        )?;
        self.conn.execute(
            "DELETE FROM sender_key_shared WHERE group_id = ?1",
            [group_id],
        )?;
        Ok(())
    }

    /// Forgets `address`'s sender key under `distribution_id` (a member removed or gone).
    pub fn drop_sender_key(&self, address: &str, distribution_id: &[u8; 16]) -> Result<()> {
        self.conn.execute(
            "DELETE FROM sender_keys WHERE address = ?1 AND distribution_id = ?2",
            params![address, &distribution_id[..]],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str, id: &str) -> Group {
        Group {
            id: id.into(),
            handle: String::new(),
            name: name.into(),
            distribution_id: [7; 16],
            epoch: 1,
            left: false,
            members: vec![
                Member {
                    account_id: "a".into(),
                    admin: true,
                },
                Member {
                    account_id: "b".into(),
                    admin: false,
                },
            ],
        }
    }

    #[test]
    fn a_group_round_trips_and_a_name_clash_takes_a_suffix() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let one = "0".repeat(32);
        let two = "1".repeat(32);
        assert_eq!(
            store.insert_group(&group("team", &one), 1).unwrap(),
            "#team"
        );
        assert_eq!(
            store.insert_group(&group("team", &two), 1).unwrap(),
            "#team-2"
        );
        let got = store.group_by_handle("#team-2").unwrap().unwrap();
        assert_eq!(got.id, two);
        assert!(got.is_admin("a") && !got.is_admin("b") && !got.is_admin("c"));
        assert_eq!(got.members.len(), 2);
        let mut changed = got.clone();
        changed.name = "crew".into();
        changed.epoch = 2;
        changed.members.pop();
        assert_eq!(store.update_group(&changed).unwrap(), "#crew");
        let got = store.group(&two).unwrap().unwrap();
        assert_eq!((got.epoch, got.members.len()), (2, 1));
        assert!(store.group_by_handle("#team-2").unwrap().is_none());
        assert_eq!(store.groups_with_member("a").unwrap().len(), 2);
        assert!(is_group_id(&one) && !is_group_id("5f0e8f0c-0000-4000-8000-000000000000"));
    }
}
