//! The manager's group membership: the `Command::Group` actions (create, add, remove, leave,
//! rename, members), the update each sends 1:1 secret to every member, and what an arriving
//! update or sender key does to the group as we keep it.
//!
//! Part of the manager. Membership lives on the clients: an update is taken only from an admin
//! of the group as we know it (or from a member leaving it), with a newer epoch; anything else
//! is ignored and logged. Must not seal or open group messages (`group_send`, `receive`).

use super::receive::{Incoming, Receive};
use super::{
    ClientError, Command, Event, GroupAction, GroupMember, Manager, Warning, describe, now_ms,
};
use crate::client::content::{Body, Content, GroupMemberRef};
use crate::client::crypto;
use crate::client::group_crypto;
use crate::client::signal_store::Stores;
use crate::client::store::{Contact, Group, Member, Message, MessageKind};
use crate::client::{group_handle, valid_group_name};

/// Members a group may have, ourselves included (each removal costs about n² key messages).
pub const MAX_MEMBERS: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error(
        "no group {0:?} here; a group's handle is # and its name (the contact list shows them)"
    )]
    Unknown(String),
    #[error("only an admin of {0} can change its members or its name")]
    NotAdmin(String),
    #[error("you are no longer in {0}; nothing can be sent to it or changed")]
    Left(String),
    #[error("{member} is already in {group}")]
    AlreadyIn { group: String, member: String },
    #[error("{member} is not in {group}")]
    NotIn { group: String, member: String },
    #[error("{0:?} cannot name a group: use 1 to 31 lowercase letters, digits, '-', '_' or '.'")]
    BadName(String),
    #[error("a group holds at most {MAX_MEMBERS} members, you included; make a second group")]
    TooMany,
    #[error("a group needs someone besides you: name at least one contact")]
    Alone,
    #[error(
        "{0} is a group, not a person: block its members one by one, or leave it (/group leave)"
    )]
    NotAPerson(String),
    #[error("to leave yourself, use /group leave (sotto group leave)")]
    RemoveSelf,
}

/// What an arriving update changed, for the user once it is committed.
pub(super) struct Changed {
    pub(super) group: String,
    pub(super) change: String,
    pub(super) lines: Vec<Message>,
    /// Members we hold no contact for: looked up once the update is committed.
    pub(super) unknown: Vec<String>,
}

impl Manager {
    pub(super) async fn group_command(&mut self, tag: u64, action: GroupAction) {
        let done = match action {
            GroupAction::Create { name, members } => self.create_group(tag, name, members).await,
            GroupAction::Members { group } => self.list_members(tag, &group).await,
            GroupAction::Add { group, handle } => {
                self.change_group(tag, &group, Edit::Add(handle)).await
            }
            GroupAction::Remove { group, handle } => {
                self.change_group(tag, &group, Edit::Remove(handle)).await
            }
            GroupAction::Leave { group } => self.change_group(tag, &group, Edit::Leave).await,
            GroupAction::Rename { group, name } => {
                self.change_group(tag, &group, Edit::Rename(name)).await
            }
        };
        if let Err(e) = done {
            self.fail_command(tag, &e).await;
        }
    }

    /// Refuses blocking or removing a group as if it were a person (its members are
    /// blocked one by one, and it is left with `GroupAction::Leave`); true if it was one.
    /// Safety numbers refuse groups in `trust`.
    pub(super) async fn refused_for_group(&self, cmd: &Command) -> bool {
        let (Command::Block { handle, tag, .. } | Command::RemoveContact { handle, tag }) = cmd
        else {
            return false;
        };
        if !group_handle(handle) {
            return false;
        }
        let e = ClientError::from(GroupError::NotAPerson(handle.clone()));
        self.fail_command(*tag, &e).await;
        true
    }

    fn group_named(&self, handle: &str) -> Result<Group, ClientError> {
        self.store
            .group_by_handle(handle)?
            .ok_or_else(|| GroupError::Unknown(handle.to_string()).into())
    }

    /// A person to put in a group: a contact, or someone the directory knows.
    async fn person(&mut self, handle: &str) -> Result<Contact, ClientError> {
        if group_handle(handle) {
            return Err(GroupError::NotAPerson(handle.to_string()).into());
        }
        self.contact_by_handle(handle).await
    }

    async fn list_members(&mut self, tag: u64, handle: &str) -> Result<(), ClientError> {
        let group = self.group_named(handle)?;
        let mut members = Vec::with_capacity(group.members.len());
        for m in &group.members {
            members.push(GroupMember {
                handle: self.member_handle(&m.account_id)?,
                admin: m.admin,
            });
        }
        // Admins first, then by handle: the same list on every member's device.
        members.sort_by(|a, b| (!a.admin, &a.handle).cmp(&(!b.admin, &b.handle)));
        self.emit(Event::GroupMembers {
            tag,
            group: group.handle,
            members,
        })
        .await;
        Ok(())
    }

    /// A member's handle: ours, a contact's, or else their account id.
    fn member_handle(&self, account_id: &str) -> Result<String, ClientError> {
        if account_id == self.reg.account_id {
            return Ok(self.reg.handle.clone());
        }
        Ok(self
            .store
            .contact_by_id(account_id)?
            .map_or_else(|| account_id.to_string(), |c| c.handle))
    }

    async fn create_group(
        &mut self,
        tag: u64,
        name: String,
        handles: Vec<String>,
    ) -> Result<(), ClientError> {
        if !valid_group_name(&name) {
            return Err(GroupError::BadName(name).into());
        }
        let mut members = vec![Member {
            account_id: self.reg.account_id.clone(),
            admin: true,
        }];
        let mut names = Vec::new();
        for h in handles {
            let c = self.person(&h).await?;
            if members.iter().all(|m| m.account_id != c.account_id) {
                members.push(Member {
                    account_id: c.account_id,
                    admin: false,
                });
                names.push(c.handle);
            }
        }
        if members.len() < 2 {
            return Err(GroupError::Alone.into());
        }
        if members.len() > MAX_MEMBERS {
            return Err(GroupError::TooMany.into());
        }
        let mut group = Group {
            id: new_group_id(),
            handle: String::new(),
            name,
            distribution_id: *uuid::Uuid::new_v4().as_bytes(),
            epoch: 1,
            left: false,
            members,
        };
        let change = format!(
            "{} made the group with {}",
            self.reg.handle,
            names.join(", ")
        );
        group.handle = self.store.insert_group(&group, now_ms())?;
        let to = others(&group, &self.reg.account_id);
        self.announce(tag, &group, to, change).await
    }

    /// An admin's change (or our own leaving): the new state with epoch + 1, kept here, then
    /// sent to every member before and after it.
    async fn change_group(
        &mut self,
        tag: u64,
        handle: &str,
        edit: Edit,
    ) -> Result<(), ClientError> {
        let old = self.group_named(handle)?;
        let own = self.reg.account_id.clone();
        if old.left {
            return Err(GroupError::Left(old.handle).into());
        }
        if !matches!(edit, Edit::Leave) && !old.is_admin(&own) {
            return Err(GroupError::NotAdmin(old.handle).into());
        }
        let mut new = old.clone();
        new.epoch += 1;
        let change = match edit {
            Edit::Add(h) => {
                let c = self.person(&h).await?;
                if old.member(&c.account_id).is_some() {
                    return Err(GroupError::AlreadyIn {
                        group: old.handle,
                        member: c.handle,
                    }
                    .into());
                }
                if old.members.len() >= MAX_MEMBERS {
                    return Err(GroupError::TooMany.into());
                }
                new.members.push(Member {
                    account_id: c.account_id,
                    admin: false,
                });
                format!("{} added {}", self.reg.handle, c.handle)
            }
            Edit::Remove(h) => {
                if h == self.reg.handle {
                    return Err(GroupError::RemoveSelf.into());
                }
                let c = self.person(&h).await?;
                if old.member(&c.account_id).is_none() {
                    return Err(GroupError::NotIn {
                        group: old.handle,
                        member: c.handle,
                    }
                    .into());
                }
                new.members.retain(|m| m.account_id != c.account_id);
                format!("{} removed {}", self.reg.handle, c.handle)
            }
            Edit::Leave => {
                new.members.retain(|m| m.account_id != own);
                // A group is never left without an admin: the first member takes over.
                if !new.members.iter().any(|m| m.admin)
                    && let Some(first) = new.members.first_mut()
                {
                    first.admin = true;
                }
                new.left = true;
                format!("{} left", self.reg.handle)
            }
            Edit::Rename(name) => {
                if !valid_group_name(&name) {
                    return Err(GroupError::BadName(name).into());
                }
                let change = format!("{} renamed the group {name}", self.reg.handle);
                new.name = name;
                change
            }
        };
        let mut to = others(&old, &own);
        for m in others(&new, &own) {
            if !to.contains(&m) {
                to.push(m);
            }
        }
        new.handle = self.store.update_group(&new)?;
        self.rotate(&old, &new)?;
        self.announce(tag, &new, to, change).await
    }

    /// Records a change of ours in the group's threads, sends the update 1:1 secret to
    /// `to`, and reports it.
    async fn announce(
        &mut self,
        tag: u64,
        group: &Group,
        to: Vec<String>,
        change: String,
    ) -> Result<(), ClientError> {
        let id = uuid::Uuid::new_v4().to_string();
        let now = now_ms();
        let lines = self.group_lines(group, &id, &change, now, None, true)?;
        let update = Content::of(Body::GroupUpdate {
            id,
            group: group.id.clone(),
            name: group.name.clone(),
            epoch: group.epoch,
            admins: group
                .members
                .iter()
                .filter(|m| m.admin)
                .map(|m| m.account_id.clone())
                .collect(),
            members: {
                let mut refs = Vec::with_capacity(group.members.len());
                for m in &group.members {
                    refs.push(GroupMemberRef {
                        account_id: m.account_id.clone(),
                        handle: self.member_handle(&m.account_id)?,
                    });
                }
                refs
            },
            distribution_id: group.distribution_id.to_vec().into(),
            change: change.clone(),
            sent_at: now,
        });
        for line in lines {
            self.emit(Event::Message(line)).await;
        }
        let replies = self.send_one_to_one(&group.handle, &to, &update).await;
        // The change is reported once the relay holds every update (or refused one): a
        // command that exits on the report must not take unsent updates with it.
        let (events, tap) = (self.events.clone(), self.tap.clone());
        let group = group.handle.clone();
        tokio::spawn(async move {
            for reply in replies {
                if let Err(e) = reply.answer().await {
                    tracing::warn!("a group update was not stored at the relay");
                    let warning = Event::Warning(Warning::about(
                        format!("a group member was not told about the change: {e}"),
                        &group,
                    ));
                    tap.event(&warning);
                    let _ = events.send(warning).await;
                }
            }
            let changed = Event::GroupChanged {
                tag: Some(tag),
                group,
                change,
            };
            tap.event(&changed);
            let _ = events.send(changed).await;
        });
        Ok(())
    }

    /// Sends `content` about `group` (its handle) 1:1 secret to each of `to` (account ids),
    /// sealed under one commit; returns the relay's answers to come. A member it cannot reach
    /// is reported in the group's thread; nothing is retried.
    pub(super) async fn send_one_to_one(
        &mut self,
        group: &str,
        to: &[String],
        content: &Content,
    ) -> Vec<crate::client::conn::Reply> {
        let burst = match self.store.begin_burst() {
            Ok(b) => b,
            Err(e) => {
                self.emit(Event::Warning(Warning::about(describe(&e), group)))
                    .await;
                return Vec::new();
            }
        };
        let mut prepared = Vec::with_capacity(to.len());
        let mut unreached = Vec::new();
        for member in to {
            let sealed = match self.contact_by_id(member).await {
                Ok(c) => self.prepare(&c.handle, true, content, None).await,
                Err(e) => Err(e),
            };
            match sealed {
                Ok(out) => prepared.push(out),
                Err(e) => unreached.push(describe(&e)),
            }
        }
        if let Err(e) = self.store.end_burst(burst) {
            self.emit(Event::Warning(Warning::about(describe(&e), group)))
                .await;
            return Vec::new();
        }
        let mut replies = Vec::with_capacity(prepared.len());
        for out in prepared {
            match self.submit(out, false).await {
                Ok(reply) => replies.push(reply),
                Err(e) => unreached.push(describe(&e)),
            }
        }
        for e in unreached {
            tracing::warn!("a group update or sender key did not reach a member");
            self.emit(Event::Warning(Warning::about(
                format!("a group member was not told about the change: {e}"),
                group,
            )))
            .await;
        }
        replies
    }

    /// After a change from `old` to `new`: a member gone (or ourselves) takes the keys with
    /// them. Our own key is forgotten, so the next message starts a new chain shared only with
    /// those still in; the gone member's key is dropped. Leaving forgets every key.
    pub(super) fn rotate(&self, old: &Group, new: &Group) -> Result<(), ClientError> {
        let own = crypto::address_key(&self.reg.account_id);
        let dist = &old.distribution_id;
        if new.left || old.distribution_id != new.distribution_id {
            self.store.forget_sender_keys(&old.id, dist)?;
            return Ok(());
        }
        let gone: Vec<_> = old
            .members
            .iter()
            .filter(|m| new.member(&m.account_id).is_none())
            .collect();
        if gone.is_empty() {
            return Ok(());
        }
        self.store.forget_own_sender_key(&own, &old.id, dist)?;
        for m in gone {
            self.store
                .drop_sender_key(&crypto::address_key(&m.account_id), dist)?;
        }
        Ok(())
    }

    /// A member's identity key changed: our sender key of every group they are in starts
    /// again, shared anew with everyone.
    pub(super) fn member_rekeyed(&self, account_id: &str) -> Result<(), ClientError> {
        let own = crypto::address_key(&self.reg.account_id);
        for id in self.store.groups_with_member(account_id)? {
            if let Some(g) = self.store.group(&id)? {
                self.store
                    .forget_own_sender_key(&own, &g.id, &g.distribution_id)?;
            }
        }
        Ok(())
    }

    /// Stores a membership line in both of the group's threads; `author` is the member who
    /// made the change (None: us).
    fn group_lines(
        &self,
        group: &Group,
        id: &str,
        change: &str,
        sent_at: u64,
        author: Option<&Contact>,
        outgoing: bool,
    ) -> Result<Vec<Message>, ClientError> {
        let mut lines = Vec::with_capacity(2);
        for secret in [false, true] {
            let mut m = Message {
                author: author.map(|a| a.handle.clone()),
                ..Message::notice(
                    format!("{id}{}", if secret { ".s" } else { "" }),
                    &group.handle,
                    secret,
                    outgoing,
                    MessageKind::Group,
                    change.to_string(),
                    sent_at,
                )
            };
            if let Some(seq) = self.store.insert_message(&group.id, &m, now_ms())? {
                m.seq = seq;
                lines.push(m);
            }
        }
        Ok(lines)
    }

    /// A `GroupUpdate` from `sender` (1:1 secret, so certified theirs), inside the caller's
    /// transaction. Taken when it makes a group we are in and comes from one of its admins, or
    /// changes a group we know from an admin of it (or from a member leaving), with a newer
    /// epoch. Anything else is ignored and logged, never shown.
    pub(super) fn group_update_arrived(
        &self,
        sender: &Contact,
        body: Body,
    ) -> Result<Incoming, Receive> {
        let Body::GroupUpdate {
            id,
            group,
            name,
            epoch,
            admins,
            members,
            distribution_id,
            change,
            sent_at,
        } = body
        else {
            return Ok(Incoming::Nothing);
        };
        let own = &self.reg.account_id;
        let dist = <[u8; 16]>::try_from(distribution_id.0.as_slice()).ok();
        let Some(dist) = dist.filter(|_| {
            crate::client::store::is_group_id(&group)
                && valid_group_name(&name)
                && members.len() <= MAX_MEMBERS
        }) else {
            return Err(Receive::Drop(Warning::in_thread(
                format!(
                    "{} sent a group change that is not valid; it was ignored",
                    sender.handle
                ),
                &sender.handle,
                true,
            )));
        };
        let mut list: Vec<Member> = Vec::with_capacity(members.len());
        for m in &members {
            if list.iter().all(|l| l.account_id != m.account_id) {
                list.push(Member {
                    account_id: m.account_id.clone(),
                    admin: admins.contains(&m.account_id),
                });
            }
        }
        let old = self.store.group(&group).map_err(Receive::retry)?;
        let ignored = |why: &str| {
            tracing::warn!(why, "ignored a group change");
            Ok(Incoming::Nothing)
        };
        match &old {
            None => {
                if !admins.contains(&sender.account_id)
                    || list.iter().all(|m| &m.account_id != own)
                    || list.iter().all(|m| m.account_id != sender.account_id)
                {
                    return ignored("a new group from someone not its admin, or without us");
                }
            }
            Some(g) if g.left => return ignored("a change of a group we left"),
            Some(g) if epoch <= g.epoch => return ignored("a change with an old epoch"),
            Some(g) if !g.is_admin(&sender.account_id) && !leaves(g, &list, &name, sender) => {
                return ignored("a change from a member who is not an admin");
            }
            Some(_) => {}
        }
        let mut new = Group {
            id: group.clone(),
            handle: String::new(),
            name,
            distribution_id: dist,
            epoch,
            left: list.iter().all(|m| &m.account_id != own),
            members: list,
        };
        new.handle = match &old {
            None => self.store.insert_group(&new, now_ms()),
            Some(_) => self.store.update_group(&new),
        }
        .map_err(Receive::retry)?;
        if let Some(old) = &old {
            self.rotate(old, &new).map_err(Receive::retry)?;
        }
        let lines = self
            .group_lines(&new, &id, &change, sent_at, Some(sender), false)
            .map_err(Receive::retry)?;
        let mut unknown = Vec::new();
        for m in &new.members {
            if &m.account_id != own
                && self
                    .store
                    .contact_by_id(&m.account_id)
                    .map_err(Receive::retry)?
                    .is_none()
            {
                unknown.push(m.account_id.clone());
            }
        }
        Ok(Incoming::GroupChanged(Box::new(Changed {
            group: new.handle,
            change,
            lines,
            unknown,
        })))
    }

    /// `sender`'s sender key for `group` (1:1 secret, so certified theirs): kept under their
    /// own address, and only if they are a member of a group we are in.
    pub(super) async fn sender_key_arrived(
        &self,
        sender: &Contact,
        group: &str,
        skdm: &[u8],
    ) -> Result<Incoming, Receive> {
        let Some(g) = self.store.group(group).map_err(Receive::retry)? else {
            tracing::warn!("ignored a sender key for a group we do not know");
            return Ok(Incoming::Nothing);
        };
        if g.left || g.member(&sender.account_id).is_none() {
            tracing::warn!("ignored a sender key from someone not in the group");
            return Ok(Incoming::Nothing);
        }
        let mut stores = Stores::new(self.store.conn(), &self.identity, self.registration_id);
        group_crypto::accept_sender_key(&mut stores, &sender.account_id, skdm, &g.distribution_id)
            .await
            .map_err(|e| {
                Receive::Drop(Warning::in_thread(
                    format!(
                        "{}'s key for {} was not valid: {e}",
                        sender.handle, g.handle
                    ),
                    &g.handle,
                    true,
                ))
            })?;
        Ok(Incoming::Nothing)
    }

    /// Once an update is committed: tells the user, and looks up the members we hold no
    /// contact for (so that we can send to them).
    pub(super) async fn group_changed(&mut self, changed: Changed) {
        for line in changed.lines {
            self.emit(Event::Message(line)).await;
        }
        self.emit(Event::GroupChanged {
            tag: None,
            group: changed.group,
            change: changed.change,
        })
        .await;
        for id in changed.unknown {
            if let Err(e) = self.contact_by_id(&id).await {
                tracing::warn!(error = %describe(&e), "cannot look a group member up");
            }
        }
    }
}

/// A membership change a member asks for.
enum Edit {
    Add(String),
    Remove(String),
    Leave,
    Rename(String),
}

/// The members of `group` but `own`.
pub(super) fn others(group: &Group, own: &str) -> Vec<String> {
    group
        .members
        .iter()
        .filter(|m| m.account_id != own)
        .map(|m| m.account_id.clone())
        .collect()
}

/// Whether going from `old` to `members` named `name` is `sender` leaving and nothing else
/// (an admin is named only if none remained).
fn leaves(old: &Group, members: &[Member], name: &str, sender: &Contact) -> bool {
    let rest: Vec<_> = old
        .members
        .iter()
        .filter(|m| m.account_id != sender.account_id)
        .collect();
    let admin_left = rest.iter().any(|m| m.admin);
    name == old.name
        && members.len() == rest.len()
        && members.iter().all(|b| {
            rest.iter()
                .any(|a| a.account_id == b.account_id && (a.admin == b.admin || !admin_left))
        })
}

/// A new group id: 16 random bytes, as 32 lowercase hex digits.
fn new_group_id() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
