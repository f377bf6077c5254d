//! The manager's arriving path: envelopes pushed by the relay, opened, stored in bursts
//! under one commit, reported and acknowledged.
//!
//! Part of the manager (it works on `Manager`'s state). Must not send anything but acks and
//! the lookups an unknown sender needs.

use std::time::{Duration, SystemTime};

use libsignal_protocol::SignalProtocolError;

use super::{Event, Manager, Warning, describe, now_ms};
use crate::client::content::{self, Body, Content};
use crate::client::crypto;
use crate::client::signal_store::{Stores, is_storage_failure};
use crate::client::store::{Contact, Message, MessageKind, MessageState};
use crate::client::trust;
use crate::wire::{ClientFrame, Payload};

impl Manager {
    /// Stores a burst of arriving envelopes' messages under one commit, then reports them
    /// and acknowledges them. An ack is withheld only when our own storage failed, so the
    /// relay redelivers that envelope later.
    pub(super) async fn deliver_all(&mut self, burst: Vec<Delivery>) {
        let mut outcomes = Vec::with_capacity(burst.len());
        let open = match self.store.begin_burst() {
            Ok(b) => b,
            Err(e) => return self.not_stored(&describe(&e)).await,
        };
        for d in burst {
            let online = d.online_only;
            let result = match d.payload {
                Payload::Normal { from, body, .. } => {
                    self.receive_normal(&from, &body.0, online).await
                }
                Payload::Sealed { envelope } => {
                    let at = SystemTime::UNIX_EPOCH + Duration::from_millis(d.received_at);
                    self.receive_sealed(&envelope.0, at, online).await
                }
            };
            outcomes.push((d.id, online, result));
        }
        if let Err(e) = self.store.end_burst(open) {
            return self.not_stored(&describe(&e)).await;
        }
        self.wipe_wal_if_due();
        for (id, online, result) in outcomes {
            self.report(id, online, result).await;
        }
    }

    /// Arriving messages could not be stored; they stay queued at the relay.
    async fn not_stored(&mut self, e: &str) {
        tracing::error!(error = %e, "cannot store arriving messages; they stay queued at the relay");
        self.emit(Event::Warning(Warning::general(format!(
            "could not store arriving messages ({e}); they will be retried"
        ))))
        .await;
    }

    /// Tells the user about one stored envelope and acknowledges it (an online-only one was
    /// never stored at the relay, so it is not acknowledged).
    async fn report(
        &mut self,
        envelope_id: u64,
        online_only: bool,
        result: Result<Incoming, Receive>,
    ) {
        match result {
            Ok(Incoming::Message(m)) => {
                self.typing_ended_by(&m).await;
                self.receipts.owe(
                    (m.contact.clone(), m.secret),
                    m.id.clone(),
                    tokio::time::Instant::now(),
                );
                if m.kind == MessageKind::Timer {
                    self.emit(Event::TimerSet {
                        contact: m.contact.clone(),
                        secret: m.secret,
                        timer: m.timer,
                    })
                    .await;
                }
                let seq = m.seq;
                let file = m.attachment.is_some();
                self.emit(Event::Message(m)).await;
                if file {
                    self.arrived(seq);
                }
            }
            Ok(Incoming::Delivered(ids)) => {
                for id in ids {
                    self.emit(Event::MessageState {
                        id,
                        state: MessageState::Delivered,
                    })
                    .await;
                }
            }
            Ok(Incoming::Read(ids)) => {
                for id in ids {
                    self.emit(Event::MessageState {
                        id,
                        state: MessageState::Read,
                    })
                    .await;
                }
            }
            Ok(Incoming::Typing {
                contact,
                secret,
                active,
            }) => self.typing_heard(contact, secret, active).await,
            Ok(Incoming::Changed(message, change)) => {
                self.emit(Event::MessageChanged {
                    message,
                    change: Box::new(change),
                })
                .await
            }
            Ok(Incoming::GroupChanged(changed)) => self.group_changed(*changed).await,
            Ok(Incoming::Nothing) => {}
            Err(Receive::Retry(e)) => return self.not_stored(&e).await,
            Err(Receive::Drop(warning)) => {
                // The warning names the sender and may quote libsignal's error, which names
                // their account: at debug only.
                tracing::warn!("dropping an undeliverable envelope");
                tracing::debug!(%warning, "dropped envelope");
                self.emit(Event::Warning(warning)).await;
            }
        }
        if online_only {
            return;
        }
        if let Err(e) = self.link.send(ClientFrame::Ack { id: envelope_id }).await {
            tracing::info!(error = %e, "ack not sent; the relay will redeliver and we will drop the duplicate");
        }
    }

    /// Applies decoded content from `contact` inside the caller's transaction: stores a text
    /// (unless its id is known) or marks our messages delivered or read. `online_only`: the
    /// relay pushed it without queuing it, which only typing may be (and typing must be).
    fn apply(
        &self,
        contact: &Contact,
        secret: bool,
        content: Content,
        online_only: bool,
    ) -> Result<Incoming, Receive> {
        self.apply_as(contact, secret, content, online_only, None)
    }

    /// `apply` for a thread (a contact's, or a group's) and the person who wrote it: in a
    /// group's thread, `author` is the member.
    fn apply_as(
        &self,
        contact: &Contact,
        secret: bool,
        content: Content,
        online_only: bool,
        author: Option<&Contact>,
    ) -> Result<Incoming, Receive> {
        // Blocked: acknowledged to the relay (so it is gone there), never kept or answered.
        if contact.blocked || author.is_some_and(|a| a.blocked) {
            return Ok(Incoming::Nothing);
        }
        if online_only != matches!(content.body, Body::Typing { .. }) {
            tracing::debug!(
                online_only,
                "ignoring content sent the wrong way for its kind"
            );
            return Ok(Incoming::Nothing);
        }
        let line = |id, text, sent_at, kind, timer| Message {
            seq: 0,
            id,
            contact: contact.handle.clone(),
            secret,
            outgoing: false,
            text,
            sent_at,
            state: MessageState::Received,
            kind,
            timer,
            // Counting starts when the user first sees it.
            expires_at: None,
            reply: None,
            reactions: Vec::new(),
            edited: false,
            deleted: false,
            attachment: None,
            author: author.map(|a| a.handle.clone()),
        };
        let mut announced = None;
        let mut m = match content.body {
            Body::Text {
                id,
                text,
                sent_at,
                timer,
                reply_to,
            } => {
                // A peer's timer out of range is brought into range, never dropped: the
                // sender asked for the message to disappear.
                let timer = timer.map(|t| t.clamp(crate::timer::MIN_SECS, crate::timer::MAX_SECS));
                let mut m = line(id, text, sent_at, MessageKind::Text, timer);
                if let Some(q) = reply_to {
                    m.reply = self
                        .quote_received(contact, secret, &q.id)
                        .map_err(Receive::retry)?;
                }
                m
            }
            Body::TimerChange { id, timer, sent_at } => {
                if let Some(t) = timer
                    && crate::timer::check(t).is_err()
                {
                    return Err(Receive::Drop(Warning::in_thread(
                        format!(
                            "{} sent a disappearing timer of {t} seconds, outside 5s to 24h; it was not applied",
                            contact.handle
                        ),
                        &contact.handle,
                        secret,
                    )));
                }
                self.store
                    .set_timer(&contact.account_id, secret, timer)
                    .map_err(Receive::retry)?;
                line(id, String::new(), sent_at, MessageKind::Timer, timer)
            }
            Body::Receipt { ids } => {
                return Ok(Incoming::Delivered(
                    self.store
                        .mark_delivered(&contact.account_id, &ids)
                        .map_err(Receive::retry)?,
                ));
            }
            Body::Read { ids } => {
                if !self.settings.read_receipts {
                    return Ok(Incoming::Nothing);
                }
                return Ok(Incoming::Read(
                    self.store
                        .mark_read(&contact.account_id, secret, &ids)
                        .map_err(Receive::retry)?,
                ));
            }
            Body::Typing { active } => {
                return Ok(match self.settings.typing {
                    true => Incoming::Typing {
                        contact: contact.handle.clone(),
                        secret,
                        active,
                    },
                    false => Incoming::Nothing,
                });
            }
            body @ (Body::Reaction { .. } | Body::Edit { .. } | Body::Delete { .. }) => {
                return self
                    .apply_change(contact, secret, body)
                    .map_err(Receive::retry);
            }
            Body::Attachment {
                id,
                file,
                caption,
                sent_at,
                timer,
            } => {
                let attachment = self.announced(&file).map_err(|e| {
                    Receive::Drop(Warning::in_thread(
                        format!("{} {e}", contact.handle),
                        &contact.handle,
                        secret,
                    ))
                })?;
                let timer = timer.map(|t| t.clamp(crate::timer::MIN_SECS, crate::timer::MAX_SECS));
                let mut m = line(
                    id,
                    caption.unwrap_or_default(),
                    sent_at,
                    MessageKind::Text,
                    timer,
                );
                m.attachment = Some(attachment);
                announced = Some(file);
                m
            }
            // Group content reaches `apply_as` only unwrapped, from `in_group` and the 1:1
            // secret path; anywhere else it is ignored.
            Body::GroupUpdate { .. } | Body::SenderKey { .. } | Body::InGroup { .. } => {
                tracing::warn!("ignored group content that came the wrong way");
                return Ok(Incoming::Nothing);
            }
            Body::Unknown => {
                tracing::info!(
                    "a message of a kind this version does not know was stored as unsupported"
                );
                line(
                    format!("unsupported-{}", uuid::Uuid::new_v4()),
                    String::new(),
                    now_ms(),
                    MessageKind::Unsupported,
                    None,
                )
            }
        };
        let seq = self
            .store
            .insert_message(&contact.account_id, &m, now_ms())
            .map_err(Receive::retry)?;
        Ok(match seq {
            Some(seq) => {
                m.seq = seq;
                if let (Some(file), Some(a)) = (announced, &m.attachment) {
                    self.store
                        .insert_attachment(
                            seq,
                            a,
                            Some(&file.blob_id),
                            Some(&file.key.0),
                            Some(&file.digest.0),
                            file.blob_size,
                        )
                        .map_err(Receive::retry)?;
                }
                Incoming::Message(m)
            }
            None => Incoming::Nothing,
        })
    }

    /// A sealed message certified for a key that is not `contact`'s: refused unread, logged
    /// in the contact's key-change log as a forgery attempt, and a line in the secret thread
    /// says so.
    async fn forged(&mut self, contact: &Contact, key: Option<&[u8]>) -> Receive {
        let now = now_ms();
        let event = trust::KeyEvent::RefusedCertificate;
        if let Err(e) = trust::record(&self.store, &contact.account_id, event, key, now) {
            return Receive::retry(e);
        }
        let line = Message::notice(
            format!("forgery-{}-{now}", contact.account_id),
            &contact.handle,
            true,
            false,
            MessageKind::KeyChange,
            format!(
                "a secret message claiming to be from {0} was refused: it was certified for a key {0} never endorsed (possible forgery by the relay)",
                contact.handle
            ),
            now,
        );
        match self.store.insert_message(&contact.account_id, &line, now) {
            Ok(Some(seq)) => self.emit(Event::Message(Message { seq, ..line })).await,
            Ok(None) => {}
            Err(e) => return Receive::retry(e),
        }
        Receive::Drop(Warning::refused_key(&contact.handle, event))
    }

    async fn receive_normal(
        &mut self,
        from: &str,
        body: &[u8],
        online_only: bool,
    ) -> Result<Incoming, Receive> {
        let contact = self.contact_by_id(from).await.map_err(Receive::retry)?;
        let content = Content::decode(body).map_err(|e| {
            Receive::Drop(Warning::in_thread(
                format!("a message from {} was unreadable: {e}", contact.handle),
                &contact.handle,
                false,
            ))
        })?;
        match content.body {
            Body::InGroup { group, body } => {
                self.in_group(&contact, false, &group, None, *body, online_only)
            }
            body => self.apply(&contact, false, Content { body, ..content }, online_only),
        }
    }

    /// A message of a group's thread from `sender`: kept only if the group is one we are in,
    /// the sender is a member, and (secret) it came under the group's distribution id.
    /// Anything else is ignored and logged.
    fn in_group(
        &self,
        sender: &Contact,
        secret: bool,
        group_id: &str,
        distribution_id: Option<[u8; 16]>,
        body: Body,
        online_only: bool,
    ) -> Result<Incoming, Receive> {
        let group = self.store.group(group_id).map_err(Receive::retry)?;
        let why = match &group {
            None => Some("a message for a group we are not in"),
            Some(g) if g.left => Some("a message for a group we left"),
            Some(g) if g.member(&sender.account_id).is_none() => {
                Some("a group message from someone not in the group")
            }
            Some(g) if distribution_id.is_some_and(|d| d != g.distribution_id) => {
                Some("a group message under another distribution id")
            }
            Some(_) => None,
        };
        if let Some(why) = why {
            tracing::warn!(why, "ignored a group message");
            return Ok(Incoming::Nothing);
        }
        let thread = self
            .store
            .contact_by_id(group_id)
            .map_err(Receive::retry)?
            .ok_or_else(|| Receive::Retry("a group's thread is missing".into()))?;
        if matches!(body, Body::Receipt { .. } | Body::Read { .. }) {
            return Ok(Incoming::Nothing);
        }
        // The thread is the group's, so `apply_change`'s "not ours" is not "theirs": only the
        // member who wrote a message may edit or delete it.
        if let Body::Edit { target, .. } | Body::Delete { target, .. } = &body {
            let theirs = self
                .store
                .thread_message(group_id, secret, target)
                .map_err(Receive::retry)?
                .is_some_and(|m| m.author.as_deref() == Some(sender.handle.as_str()));
            if !theirs {
                tracing::warn!("ignored a change of another member's group message");
                return Ok(Incoming::Nothing);
            }
        }
        self.apply_as(
            &thread,
            secret,
            Content::of(body),
            online_only,
            Some(sender),
        )
    }

    async fn receive_sealed(
        &mut self,
        envelope: &[u8],
        received_at: SystemTime,
        online_only: bool,
    ) -> Result<Incoming, Receive> {
        let unsealed = {
            let stores = Stores::new(self.store.conn(), &self.identity, self.registration_id);
            crypto::unseal(&stores, envelope, &mut self.certs, received_at)
                .await
                .map_err(|e| {
                    // Unopened, it names no sender: it belongs to no thread.
                    Receive::Drop(Warning::general(format!(
                        "a secret message could not be opened: {e}"
                    )))
                })?
        };
        // Learning who an unknown sender is needs the network, so it happens before the
        // transaction that decrypts.
        let mut contact = self
            .contact_by_id(&unsealed.sender)
            .await
            .map_err(Receive::retry)?;
        if contact.identity_key != unsealed.sender_key {
            // Certified for another key than the contact's: only a change the old key
            // endorsed (or an operator's reset) at the directory makes it theirs, and then the
            // change is recorded, with its line, before what they sent is shown.
            let id = unsealed.sender.clone();
            contact = self
                .lookup(move |req| ClientFrame::Lookup {
                    req,
                    handle: None,
                    account_id: Some(id),
                })
                .await
                .map_err(Receive::retry)?;
            if contact.identity_key != unsealed.sender_key {
                return Err(self.forged(&contact, Some(&unsealed.sender_key)).await);
            }
        }
        let distribution_id = unsealed.distribution_id();
        let work = self.store.atomic().map_err(Receive::retry)?;
        let opened = {
            let mut stores = Stores::new(self.store.conn(), &self.identity, self.registration_id);
            crypto::decrypt(
                &mut stores,
                &unsealed,
                &self.reg.account_id,
                &mut rand::rng(),
            )
            .await
        };
        let opened = match opened {
            Ok(o) => o,
            // Already decrypted and stored before a crash cut the ack off: nothing to do.
            Err(SignalProtocolError::DuplicatedMessage(..)) => return Ok(Incoming::Nothing),
            Err(e) if is_storage_failure(&e) => return Err(Receive::retry(e)),
            // Inside, the message is from a key that is not the contact's (a certificate for
            // their key wrapped around someone else's session): the same forgery. Nothing
            // of the decrypt is kept.
            Err(SignalProtocolError::UntrustedIdentity(_)) => {
                drop(work);
                return Err(self.forged(&contact, None).await);
            }
            Err(e) => {
                return Err(Receive::Drop(Warning::in_thread(
                    format!(
                        "a secret message from {} could not be decrypted: {e}",
                        contact.handle
                    ),
                    &contact.handle,
                    true,
                )));
            }
        };
        let content = content::unpad(&opened)
            .map_err(|e| describe(&e))
            .and_then(|p| Content::decode(p).map_err(|e| describe(&e)));
        let content = match content {
            Ok(c) => c,
            Err(e) => {
                // The ratchet has moved on; keep its state and drop the unreadable payload.
                work.commit().map_err(Receive::retry)?;
                return Err(Receive::Drop(Warning::in_thread(
                    format!(
                        "a secret message from {} was unreadable: {e}",
                        contact.handle
                    ),
                    &contact.handle,
                    true,
                )));
            }
        };
        // `work` is open on the store's connection, so what `apply` writes is part of it.
        let incoming = match (distribution_id, content.body) {
            (Some(d), Body::InGroup { group, body }) => {
                self.in_group(&contact, true, &group, Some(d), *body, online_only)?
            }
            (Some(_), _) => {
                tracing::warn!("ignored a sender-key message that was not a group message");
                Incoming::Nothing
            }
            // Group messages come under a sender key, never in a 1:1 session.
            (None, Body::InGroup { .. }) => Incoming::Nothing,
            (None, body @ Body::GroupUpdate { .. }) => self.group_update_arrived(&contact, body)?,
            (None, Body::SenderKey { group, skdm }) => {
                self.sender_key_arrived(&contact, &group, &skdm.0).await?
            }
            (None, body) => self.apply(&contact, true, Content { body, ..content }, online_only)?,
        };
        work.commit().map_err(Receive::retry)?;
        Ok(incoming)
    }
}

/// An envelope the relay pushed to us.
pub(super) struct Delivery {
    pub(super) id: u64,
    pub(super) received_at: u64,
    pub(super) payload: Payload,
    /// Pushed without being queued: never acknowledged.
    pub(super) online_only: bool,
}

/// What an arriving envelope turned out to carry.
pub(super) enum Incoming {
    /// A new message, now stored.
    Message(Message),
    /// Our messages with these ids reached the peer's device.
    Delivered(Vec<String>),
    /// The peer displayed our messages with these ids.
    Read(Vec<String>),
    /// The peer is typing in this thread, or stopped.
    Typing {
        contact: String,
        secret: bool,
        active: bool,
    },
    /// A stored message changed (a reaction, an edit, a deletion for everyone).
    Changed(Message, super::Change),
    /// A group was made or changed (committed; the user is told after).
    GroupChanged(Box<super::groups::Changed>),
    /// A duplicate, or something ignored.
    Nothing,
}

/// Why an arriving envelope was not stored.
pub(super) enum Receive {
    /// Our side failed (storage, network): keep the envelope queued.
    Retry(String),
    /// The envelope itself is bad: acknowledge it and tell the user.
    Drop(Warning),
}

impl Receive {
    pub(super) fn retry(e: impl std::error::Error) -> Self {
        Receive::Retry(describe(&e))
    }
}
