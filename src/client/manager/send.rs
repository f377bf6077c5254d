//! The manager's outgoing path: our messages from the store to the relay, and what the
//! relay's answers do to their states; delivery receipts and sender certificates.
//!
//! Part of the manager (it works on `Manager`'s state). Must not read arriving envelopes.

use std::time::SystemTime;

use libsignal_protocol::{SenderCertificate, SessionStore as _, SignalProtocolError};

use super::receipts::ThreadKey;
use super::{
    CERT_MARGIN_MS, ClientError, Event, Manager, RETRY_MAX, RETRY_START, Warning, describe, now_ms,
};
use crate::client::conn::{LinkError, Reply};
use crate::client::content::{self, Content};
use crate::client::crypto;
use crate::client::signal_store::Stores;
use crate::client::store::{Contact, Message, MessageKind, MessageState};
use crate::client::trust;
use crate::wire::{ClientFrame, ErrorCode, RelayFrame};

/// The relay's answer (or the lack of one) to a message's request.
/// A message the user asked to send, not yet stored.
pub(super) struct Draft {
    pub(super) id: String,
    pub(super) to: String,
    pub(super) secret: bool,
    pub(super) text: String,
    pub(super) reply_to: Option<String>,
}

/// An envelope ready for the relay.
pub(super) enum Outgoing {
    Normal {
        to: String,
        body: Vec<u8>,
        expires_at: Option<u64>,
    },
    Sealed {
        to: String,
        access_token: Vec<u8>,
        envelope: Vec<u8>,
        expires_at: Option<u64>,
        recipient_key: Vec<u8>,
    },
    /// A normal group message: one body queued for each of `to`.
    Group {
        to: Vec<String>,
        body: Vec<u8>,
        expires_at: Option<u64>,
    },
    /// A secret group message: one sealed-sender v2 envelope for every recipient, after the
    /// `preludes` (our sender key, 1:1 secret, for members who lack it) on the same link.
    Multi {
        preludes: Vec<Outgoing>,
        envelope: Vec<u8>,
        recipients: Vec<crate::wire::SealedRecipient>,
        expires_at: Option<u64>,
    },
}

pub(super) struct Sent {
    pub(super) id: String,
    pub(super) handle: String,
    pub(super) secret: bool,
    pub(super) result: Result<RelayFrame, LinkError>,
}

/// At most this many message ids in one receipt.
const RECEIPT_BATCH: usize = 200;

impl Manager {
    /// Stores the user's new messages under one commit (one sync for a burst of them), then
    /// sends them. Each is sealed inside the same commit, and leaves only after it: an
    /// envelope must never go out ahead of the ratchet step that made it, or a crash could
    /// make the next message reuse its key.
    pub(super) async fn send_all(&mut self, drafts: Vec<Draft>) {
        let burst = match self.store.begin_burst() {
            Ok(b) => b,
            Err(e) => {
                let e = ClientError::from(e);
                for d in drafts {
                    self.fail(d.id, &e).await;
                }
                return;
            }
        };
        let mut stored = Vec::with_capacity(drafts.len());
        let mut refused = Vec::new();
        for d in drafts {
            let id = d.id.clone();
            match self.store_draft(d).await {
                Ok(m) => stored.push(m),
                Err(e) => refused.push((id, e)),
            }
        }
        let prepared = self.prepare_all(&stored).await;
        if let Err(e) = self.store.end_burst(burst) {
            // Nothing of the burst was kept: neither the messages nor their ratchet steps.
            let e = ClientError::from(e);
            for id in stored
                .into_iter()
                .map(|m| m.id)
                .chain(refused.into_iter().map(|r| r.0))
            {
                self.fail(id, &e).await;
            }
            return;
        }
        for m in stored {
            self.emit(Event::Message(m)).await;
        }
        for (id, e) in refused {
            self.fail(id, &e).await;
        }
        self.submit_all(prepared).await;
    }

    /// Checks a new message and stores it as `sending`.
    async fn store_draft(&mut self, d: Draft) -> Result<Message, ClientError> {
        if d.text.trim().is_empty() {
            return Err(ClientError::EmptyText);
        }
        if d.text.len() > content::MAX_TEXT_BYTES {
            return Err(ClientError::TooLong(d.text.len()));
        }
        let contact = self.contact_by_handle(&d.to).await?;
        let timer = self.store.thread_timer(&contact.account_id, d.secret)?;
        let reply = match d.reply_to {
            Some(target) => Some(self.quote_for_reply(&contact, d.secret, &target)?),
            None => None,
        };
        self.originate(
            d.id,
            &contact,
            d.secret,
            MessageKind::Text,
            d.text,
            timer,
            reply,
        )
    }

    /// Reports that message `id` cannot be sent, and why.
    pub(super) async fn fail(&self, id: String, e: &ClientError) {
        self.emit(Event::MessageFailed {
            id,
            error: describe(e),
        })
        .await
    }

    /// Reports that the command tagged `tag` failed, and why.
    pub(super) async fn fail_command(&self, tag: u64, e: &ClientError) {
        self.emit(Event::Failed {
            tag,
            error: describe(e),
        })
        .await
    }

    /// Sends every message still marked `sending`, oldest first.
    pub(super) async fn flush_unsent(&mut self) {
        match self.store.unsent() {
            Ok(list) => self.transmit_all(&list).await,
            Err(e) => tracing::error!(error = %e, "cannot read unsent messages"),
        }
    }

    /// Hands stored messages to the relay, sealing the secret ones under one commit first.
    /// Answers come back later as `Sent`s (see `on_sent`), so nothing waits for them.
    pub(super) async fn transmit_all(&mut self, messages: &[Message]) {
        let burst = match self.store.begin_burst() {
            Ok(b) => b,
            Err(e) => return tracing::error!(error = %e, "cannot send; messages stay queued"),
        };
        let prepared = self.prepare_all(messages).await;
        if let Err(e) = self.store.end_burst(burst) {
            // Nothing was sealed for good, so nothing may leave; they stay `sending`.
            return tracing::error!(error = %e, "cannot send; messages stay queued");
        }
        self.submit_all(prepared).await
    }

    /// Turns messages into envelopes, inside the caller's burst. Messages already on their
    /// way, and local-only lines, are left out.
    async fn prepare_all(
        &mut self,
        messages: &[Message],
    ) -> Vec<(Message, Result<Outgoing, ClientError>)> {
        let mut prepared = Vec::with_capacity(messages.len());
        for m in messages {
            if self.in_flight.contains(&m.id) {
                continue;
            }
            let content = match m.attachment {
                Some(_) if m.deleted => None,
                // Its file must be at the relay first.
                Some(_) => self.attachment_content(m),
                None => Self::content(m),
            };
            let Some(content) = content else {
                continue;
            };
            // The relay may drop the envelope once the message would have disappeared anyway.
            let relay_expiry = match m.kind {
                MessageKind::Text => m.timer.map(|t| m.sent_at + u64::from(t) * 1000),
                _ => None,
            };
            let out = self
                .prepare(&m.contact, m.secret, &content, relay_expiry)
                .await;
            prepared.push((m.clone(), out));
        }
        prepared
    }

    /// Sends prepared envelopes without waiting for their answers.
    async fn submit_all(&mut self, prepared: Vec<(Message, Result<Outgoing, ClientError>)>) {
        for (m, out) in prepared {
            let submitted = match out {
                Ok(out) => self.submit(out, false).await.map_err(ClientError::from),
                Err(e) => Err(e),
            };
            let reply = match submitted {
                Ok(reply) => reply,
                Err(e) => {
                    self.settle_failed(&m.id, e).await;
                    continue;
                }
            };
            self.in_flight.insert(m.id.clone());
            let done = self.sent.clone();
            tokio::spawn(async move {
                let result = reply.answer().await;
                let _ = done.send(Sent {
                    id: m.id,
                    handle: m.contact,
                    secret: m.secret,
                    result,
                });
            });
        }
    }

    /// The relay answered (or not) these messages' requests. The accepted ones are marked
    /// `sent` in one transaction: under load the answers of a whole burst arrive together.
    pub(super) async fn on_sent(&mut self, answers: Vec<Sent>) {
        let mut accepted = Vec::with_capacity(answers.len());
        for sent in answers {
            if self.actions.remove(&sent.id) {
                self.action_answered(sent).await;
                continue;
            }
            self.in_flight.remove(&sent.id);
            let e = match sent.result {
                Ok(_) => {
                    accepted.push(sent.id);
                    continue;
                }
                Err(LinkError::Refused {
                    code: ErrorCode::IdentityChanged,
                    message,
                }) if sent.secret && crate::client::group_handle(&sent.handle) => {
                    self.learn_key_changes(&message).await
                }
                Err(LinkError::Refused {
                    code: ErrorCode::IdentityChanged,
                    ..
                }) if sent.secret => self.learn_key_change(&sent.handle).await,
                Err(LinkError::Refused {
                    code: code @ (ErrorCode::QuotaExceeded | ErrorCode::RateLimited),
                    ..
                }) => {
                    self.retry_later(&sent.handle, code).await;
                    continue;
                }
                Err(e) => e.into(),
            };
            self.settle_failed(&sent.id, e).await;
        }
        if accepted.is_empty() {
            return;
        }
        self.retry_backoff = RETRY_START;
        let ids: Vec<&str> = accepted.iter().map(String::as_str).collect();
        match self.store.set_states(&ids, MessageState::Sent) {
            Ok(changed) => {
                for id in changed {
                    self.emit(Event::MessageState {
                        id: id.to_string(),
                        state: MessageState::Sent,
                    })
                    .await
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot record sent state"),
        }
    }

    /// The relay refused a message for a quota (a full mailbox) or a rate: it stays
    /// `sending` and every unsent message is sent again after a wait that doubles while
    /// refusals go on. The user is told once per refusal.
    async fn retry_later(&mut self, handle: &str, code: ErrorCode) {
        let now = tokio::time::Instant::now();
        if self.retry_at.is_none() {
            self.retry_at = Some(now + self.retry_backoff);
            self.retry_backoff = (self.retry_backoff * 2).min(RETRY_MAX);
        }
        let warning = match code {
            ErrorCode::QuotaExceeded => Warning::about(
                format!(
                    "{handle}'s mailbox at the relay is full (or you have too much mail waiting there); the message stays queued and is retried later"
                ),
                handle,
            ),
            // A rate is the sender's, whichever thread they send in.
            _ => Warning::general(
                "the relay is limiting how fast you send; the message stays queued and is retried in a moment",
            ),
        };
        self.emit(Event::Warning(warning)).await;
    }

    /// Records that a message's send did not go through. A connection problem leaves it
    /// `sending` for the next flush; a refusal marks it failed.
    async fn settle_failed(&mut self, id: &str, e: ClientError) {
        if let ClientError::Link(LinkError::Offline | LinkError::Timeout) = e {
            return;
        }
        // The error may name the recipient (their handle, or their account in libsignal's
        // words): at debug only.
        tracing::warn!("a message failed");
        tracing::debug!(error = %e, "message failed");
        if let Err(e) = self.store.set_state(id, MessageState::Failed) {
            tracing::error!(error = %e, "cannot record failure");
        }
        // Sent again once the user accepts the new key (`contacts::resend_held`).
        if let ClientError::IdentityChanged { .. } = e
            && let Err(e) = self.store.hold_for_key(id)
        {
            tracing::error!(error = %e, "cannot hold the message for the key change");
        }
        self.emit(Event::MessageFailed {
            id: id.to_string(),
            error: describe(&e),
        })
        .await;
    }

    /// The relay refused a secret send because `handle`'s key changed: learn the new key
    /// now, so the user sees the change and the block.
    async fn learn_key_change(&mut self, handle: &str) -> ClientError {
        let held = match self.known(handle) {
            Ok(c) => c,
            Err(e) => return e,
        };
        let id = held.account_id.clone();
        let looked_up = self
            .lookup(move |req| ClientFrame::Lookup {
                req,
                handle: None,
                account_id: Some(id),
            })
            .await;
        match looked_up {
            // The directory's new key was refused: the contact's key has not changed.
            Ok(c) if c.identity_key == held.identity_key => ClientError::KeyRefused {
                handle: handle.to_string(),
            },
            Ok(_) => ClientError::IdentityChanged {
                handle: handle.to_string(),
            },
            Err(e) => e,
        }
    }

    /// The relay refused a secret group message because members' keys changed (it names
    /// them): learn each new key, so the user sees the changes and the block.
    async fn learn_key_changes(&mut self, message: &str) -> ClientError {
        let mut first = None;
        for id in crate::wire::changed_recipients(message) {
            let e = match self.store.contact_by_id(&id) {
                Ok(Some(c)) => self.learn_key_change(&c.handle).await,
                Ok(None) => continue,
                Err(e) => e.into(),
            };
            first.get_or_insert(e);
        }
        first.unwrap_or_else(|| {
            LinkError::Refused {
                code: ErrorCode::IdentityChanged,
                message: message.to_string(),
            }
            .into()
        })
    }

    /// What goes on the wire for one of our messages; a key-change line is local only.
    fn content(m: &Message) -> Option<Content> {
        // A tombstone's text is gone: there is nothing left to send.
        if m.deleted {
            return None;
        }
        match m.kind {
            MessageKind::Text => Some(Content::of(content::Body::Text {
                id: m.id.clone(),
                text: m.text.clone(),
                sent_at: m.sent_at,
                timer: m.timer,
                reply_to: m.reply.as_ref().map(|q| content::Quote {
                    id: q.id.clone(),
                    excerpt: q.excerpt.clone(),
                }),
            })),
            MessageKind::Timer => Some(Content::timer_change(m.id.clone(), m.timer, m.sent_at)),
            _ => None,
        }
    }

    /// Turns `content` for `handle`'s normal or secret thread into an envelope. A secret one
    /// is sealed and its ratchet step committed, or, inside a burst, committed with the
    /// burst. `expires_at` (Unix ms) is told to the relay in the clear, so it can drop an
    /// envelope whose message would already have disappeared.
    pub(super) async fn prepare(
        &mut self,
        handle: &str,
        secret: bool,
        content: &Content,
        expires_at: Option<u64>,
    ) -> Result<Outgoing, ClientError> {
        if crate::client::group_handle(handle) {
            return self
                .prepare_group(handle, secret, content, expires_at)
                .await;
        }
        if secret {
            return self.seal(handle, content, expires_at).await;
        }
        let contact = self.contact_by_handle(handle).await?;
        Ok(Outgoing::Normal {
            to: contact.account_id,
            body: content.encode(),
            expires_at,
        })
    }

    /// Hands an envelope to the link it travels on; an `online_only` one the relay never
    /// queues (see `wire::ClientFrame::SendSealed`).
    pub(super) async fn submit(
        &self,
        out: Outgoing,
        online_only: bool,
    ) -> Result<Reply, LinkError> {
        let out = match out {
            Outgoing::Multi {
                preludes,
                envelope,
                recipients,
                expires_at,
            } => {
                // On the same link, ahead of the message: the relay queues them first.
                for prelude in preludes {
                    let reply = self.submit_one(prelude, false).await?;
                    tokio::spawn(receipt_answered(reply));
                }
                return self
                    .anon
                    .submit(|req| ClientFrame::SendMulti {
                        req,
                        envelope: envelope.into(),
                        recipients,
                        expires_at,
                        online_only,
                    })
                    .await;
            }
            out => out,
        };
        self.submit_one(out, online_only).await
    }

    /// `submit` for an envelope without preludes.
    async fn submit_one(&self, out: Outgoing, online_only: bool) -> Result<Reply, LinkError> {
        match out {
            Outgoing::Group {
                to,
                body,
                expires_at,
            } => {
                self.link
                    .submit(|req| ClientFrame::SendGroup {
                        req,
                        to,
                        body: body.into(),
                        expires_at,
                        online_only,
                    })
                    .await
            }
            Outgoing::Multi { .. } => Err(LinkError::Protocol(
                "a group envelope cannot precede another".into(),
            )),
            Outgoing::Normal {
                to,
                body,
                expires_at,
            } => {
                self.link
                    .submit(|req| ClientFrame::Send {
                        req,
                        to,
                        body: body.into(),
                        expires_at,
                        online_only,
                    })
                    .await
            }
            Outgoing::Sealed {
                to,
                access_token,
                envelope,
                expires_at,
                recipient_key,
            } => {
                self.anon
                    .submit(|req| ClientFrame::SendSealed {
                        req,
                        to,
                        access_token: access_token.into(),
                        envelope: envelope.into(),
                        expires_at,
                        recipient_key: Some(recipient_key.into()),
                        online_only,
                    })
                    .await
            }
        }
    }

    /// Sends receipts (delivery or read, as `make` builds them) for the messages `owed` per
    /// thread; returns the relay's answers to come. Secret receipts are sealed under one
    /// commit and leave only after it, as messages do (`send_all`).
    pub(super) async fn send_receipts(
        &mut self,
        owed: Vec<(ThreadKey, Vec<String>)>,
        make: fn(Vec<String>) -> Content,
    ) -> Vec<Reply> {
        if owed.is_empty() {
            return Vec::new();
        }
        let burst = match self.store.begin_burst() {
            Ok(b) => b,
            Err(e) => {
                tracing::info!(error = %e, "delivery receipts were not sent");
                return Vec::new();
            }
        };
        let mut prepared = Vec::new();
        for ((handle, secret), ids) in owed {
            // Receipts stay between two people: a group's members are not told who read what.
            if crate::client::group_handle(&handle) {
                continue;
            }
            for chunk in ids.chunks(RECEIPT_BATCH) {
                let receipt = make(chunk.to_vec());
                match self.prepare(&handle, secret, &receipt, None).await {
                    Ok(out) => prepared.push(out),
                    Err(e) => {
                        tracing::debug!(error = %describe(&e), "a delivery receipt was not sent")
                    }
                }
            }
        }
        if let Err(e) = self.store.end_burst(burst) {
            // Their ratchet steps were not kept, so none of them may leave.
            tracing::info!(error = %e, "delivery receipts were not sent");
            return Vec::new();
        }
        let mut replies = Vec::with_capacity(prepared.len());
        for out in prepared {
            match self.submit(out, false).await {
                Ok(reply) => replies.push(reply),
                Err(e) => tracing::info!(error = %e, "a delivery receipt was not sent"),
            }
        }
        replies
    }

    pub(super) async fn sender_cert(&mut self) -> Result<SenderCertificate, ClientError> {
        if let Some(c) = &self.cert
            && crypto::cert_fresh(c, SystemTime::now(), CERT_MARGIN_MS)
        {
            return Ok(c.clone());
        }
        let frame = self
            .link
            .request(|req| ClientFrame::GetSenderCert { req })
            .await?;
        let RelayFrame::SenderCert { certificate, .. } = frame else {
            return Err(
                LinkError::Protocol("unexpected answer to a certificate request".into()).into(),
            );
        };
        let cert = SenderCertificate::deserialize(&certificate.0)?;
        if !cert.validate(
            self.certs.root(),
            libsignal_protocol::Timestamp::from_epoch_millis(now_ms()),
        )? {
            return Err(LinkError::Protocol(
                "the relay issued a certificate that does not verify".into(),
            )
            .into());
        }
        // Our contacts open our messages only under our own key: a certificate for another
        // key or account would have every message refused as a forgery.
        if cert.sender_uuid()? != self.reg.account_id || cert.key()? != *self.identity.public_key()
        {
            return Err(LinkError::Protocol(
                "the relay issued a certificate for another key than this profile's; secret messages cannot be sent through it".into(),
            )
            .into());
        }
        self.cert = Some(cert.clone());
        Ok(cert)
    }

    pub(super) async fn seal(
        &mut self,
        handle: &str,
        content: &Content,
        expires_at: Option<u64>,
    ) -> Result<Outgoing, ClientError> {
        if !self.anon.is_online() {
            return Err(LinkError::Offline.into());
        }
        let contact = self.contact_by_handle(handle).await?;
        if !self.has_session(&contact.account_id).await? {
            let id = contact.account_id.clone();
            let frame = self
                .link
                .request(|req| ClientFrame::FetchBundle {
                    req,
                    account_id: id,
                })
                .await?;
            let RelayFrame::Bundle { bundle, .. } = frame else {
                return Err(
                    LinkError::Protocol("unexpected answer to a bundle request".into()).into(),
                );
            };
            // A session is set up only with the key the contact's record holds; a bundle
            // under any other key (or for another account) is a substitution.
            if bundle.account_id != contact.account_id
                || crate::identity::canonical(&bundle.identity_key.0).as_ref()
                    != Some(&contact.identity_key)
            {
                let offered = bundle.identity_key.0;
                self.refused_key(&contact, trust::KeyEvent::RefusedBundle, &offered)
                    .await;
                return Err(ClientError::BundleRefused {
                    handle: contact.handle,
                });
            }
            let mut stores = Stores::new(self.store.conn(), &self.identity, self.registration_id);
            crypto::start_session(&mut stores, &bundle, SystemTime::now(), &mut rand::rng())
                .await
                .map_err(|e| self.identity_error(e, &contact))?;
        }
        let cert = self.sender_cert().await?;
        let plaintext = content::pad(content.encode());
        // libsignal writes the peer's identity and then the ratchet state: one transaction
        // makes the pair atomic and costs one sync instead of two.
        let envelope = {
            let work = self.store.atomic()?;
            let mut stores = Stores::new(self.store.conn(), &self.identity, self.registration_id);
            let envelope = crypto::seal(
                &mut stores,
                &contact.account_id,
                &cert,
                &plaintext,
                SystemTime::now(),
                &mut rand::rng(),
            )
            .await
            .map_err(|e| self.identity_error(e, &contact))?;
            work.commit()?;
            envelope
        };
        Ok(Outgoing::Sealed {
            to: contact.account_id,
            access_token: contact.access_token,
            envelope,
            expires_at,
            recipient_key: contact.identity_key,
        })
    }

    /// Whether a secret session with `account_id` can send now, without a new bundle.
    pub(super) async fn has_session(&self, account_id: &str) -> Result<bool, ClientError> {
        let address = crypto::address(account_id);
        let stores = Stores::new(self.store.conn(), &self.identity, self.registration_id);
        Ok(stores
            .sessions
            .load_session(&address)
            .await?
            .is_some_and(|s| {
                s.has_usable_sender_chain(
                    SystemTime::now(),
                    libsignal_protocol::SessionUsabilityRequirements::all(),
                )
                .unwrap_or(false)
            }))
    }

    fn identity_error(&self, e: SignalProtocolError, contact: &Contact) -> ClientError {
        match e {
            SignalProtocolError::UntrustedIdentity(_) => ClientError::IdentityChanged {
                handle: contact.handle.clone(),
            },
            e => e.into(),
        }
    }
}

/// Waits for the relay's answer to a receipt. Receipts are best effort: a failure is only
/// logged.
pub(super) async fn receipt_answered(reply: Reply) {
    if let Err(e) = reply.answer().await {
        tracing::info!(error = %e, "a delivery receipt was not stored");
    }
}
