//! The manager's outgoing path: our messages from the store to the relay, and what the
//! relay's answers do to their states; delivery receipts and sender certificates.
//!
//! Part of the manager (it works on `Manager`'s state). Must not read arriving envelopes.

use std::time::SystemTime;

use libsignal_protocol::{SenderCertificate, SessionStore as _, SignalProtocolError};

use super::{CERT_MARGIN_MS, ClientError, Event, Manager, describe, now_ms};
use crate::client::conn::{LinkError, Reply};
use crate::client::content::{self, Content};
use crate::client::crypto;
use crate::client::signal_store::Stores;
use crate::client::store::{Contact, Message, MessageKind, MessageState};
use crate::wire::{ClientFrame, ErrorCode, RelayFrame};

/// The relay's answer (or the lack of one) to a message's request.
pub(super) struct Sent {
    pub(super) id: String,
    pub(super) handle: String,
    pub(super) secret: bool,
    pub(super) result: Result<RelayFrame, LinkError>,
}

/// At most this many message ids in one receipt.
const RECEIPT_BATCH: usize = 200;

impl Manager {
    pub(super) async fn send(&mut self, id: String, to: String, secret: bool, text: String) {
        let result = async {
            if text.trim().is_empty() {
                return Err(ClientError::EmptyText);
            }
            if text.len() > content::MAX_TEXT_BYTES {
                return Err(ClientError::TooLong(text.len()));
            }
            let contact = self.contact_by_handle(&to).await?;
            let timer = self.store.thread_timer(&contact.account_id, secret)?;
            let m = self.originate(id.clone(), &contact, secret, MessageKind::Text, text, timer)?;
            self.emit(Event::Message(m.clone())).await;
            Ok(m)
        }
        .await;
        match result {
            Ok(m) => self.transmit(&m).await,
            Err(e) => {
                self.emit(Event::MessageFailed {
                    id,
                    error: describe(&e),
                })
                .await
            }
        }
    }

    /// Sends every message still marked `sending`, oldest first.
    pub(super) async fn flush_unsent(&mut self) {
        match self.store.unsent() {
            Ok(list) => {
                for m in list {
                    self.transmit(&m).await;
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read unsent messages"),
        }
    }

    /// Hands a stored message to the relay without waiting for its answer, which comes
    /// back as a `Sent` (see `on_sent`), so the next message can follow at once.
    pub(super) async fn transmit(&mut self, m: &Message) {
        if self.in_flight.contains(&m.id) {
            return;
        }
        // The relay may drop the envelope once the message would have disappeared anyway.
        let relay_expiry = match m.kind {
            MessageKind::Text => m.timer.map(|t| m.sent_at + u64::from(t) * 1000),
            MessageKind::Timer | MessageKind::KeyChange => None,
        };
        let Some(content) = Self::content(m) else {
            return;
        };
        let reply = match self
            .send_content(&m.contact, m.secret, &content, relay_expiry)
            .await
        {
            Ok(reply) => reply,
            Err(e) => return self.settle(&m.id, Err(e)).await,
        };
        self.in_flight.insert(m.id.clone());
        let done = self.sent.clone();
        let (id, handle, secret) = (m.id.clone(), m.contact.clone(), m.secret);
        tokio::spawn(async move {
            let result = reply.answer().await;
            let _ = done.send(Sent {
                id,
                handle,
                secret,
                result,
            });
        });
    }

    /// The relay answered (or not) a message's request.
    pub(super) async fn on_sent(&mut self, sent: Sent) {
        self.in_flight.remove(&sent.id);
        let outcome = match sent.result {
            Ok(_) => Ok(()),
            Err(LinkError::Refused {
                code: ErrorCode::IdentityChanged,
                ..
            }) if sent.secret => Err(self.learn_key_change(&sent.handle).await),
            Err(e) => Err(e.into()),
        };
        self.settle(&sent.id, outcome).await
    }

    /// Records what became of a message's send. A connection problem leaves it `sending`
    /// for the next flush; a refusal marks it failed.
    pub(super) async fn settle(&mut self, id: &str, outcome: Result<(), ClientError>) {
        match outcome {
            Ok(()) => match self.store.set_state(id, MessageState::Sent) {
                Ok(true) => {
                    self.emit(Event::MessageState {
                        id: id.to_string(),
                        state: MessageState::Sent,
                    })
                    .await
                }
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "cannot record sent state"),
            },
            Err(ClientError::Link(LinkError::Offline | LinkError::Timeout)) => {}
            Err(e) => {
                tracing::warn!(error = %e, "message failed");
                if let Err(e) = self.store.set_state(id, MessageState::Failed) {
                    tracing::error!(error = %e, "cannot record failure");
                }
                self.emit(Event::MessageFailed {
                    id: id.to_string(),
                    error: describe(&e),
                })
                .await;
            }
        }
    }

    /// The relay refused a secret send because `handle`'s key changed: learn the new key
    /// now, so the user sees the change and the block.
    pub(super) async fn learn_key_change(&mut self, handle: &str) -> ClientError {
        let id = match self.known(handle) {
            Ok(c) => c.account_id,
            Err(e) => return e,
        };
        let looked_up = self
            .lookup(move |req| ClientFrame::Lookup {
                req,
                handle: None,
                account_id: Some(id),
            })
            .await;
        match looked_up {
            Ok(_) => ClientError::IdentityChanged {
                handle: handle.to_string(),
            },
            Err(e) => e,
        }
    }

    /// What goes on the wire for one of our messages; a key-change line is local only.
    pub(super) fn content(m: &Message) -> Option<Content> {
        match m.kind {
            MessageKind::Text => Some(Content::text(
                m.id.clone(),
                m.text.clone(),
                m.sent_at,
                m.timer,
            )),
            MessageKind::Timer => Some(Content::timer_change(m.id.clone(), m.timer, m.sent_at)),
            MessageKind::KeyChange => None,
        }
    }

    /// Sends `content` to `handle` in its normal or secret thread. `expires_at` (Unix ms) is
    /// told to the relay in the clear, so it can drop an envelope whose message would already
    /// have disappeared.
    pub(super) async fn send_content(
        &mut self,
        handle: &str,
        secret: bool,
        content: &Content,
        expires_at: Option<u64>,
    ) -> Result<Reply, ClientError> {
        if secret {
            self.send_sealed(handle, content, expires_at).await
        } else {
            self.send_normal(handle, content, expires_at).await
        }
    }

    pub(super) async fn send_normal(
        &mut self,
        handle: &str,
        content: &Content,
        expires_at: Option<u64>,
    ) -> Result<Reply, ClientError> {
        let contact = self.contact_by_handle(handle).await?;
        let body = content.encode();
        let reply = self
            .link
            .submit(|req| ClientFrame::Send {
                req,
                to: contact.account_id,
                body: body.into(),
                expires_at,
            })
            .await?;
        Ok(reply)
    }

    /// Sends the delivery receipts owed; they are best effort, so a failure is only logged.
    pub(super) async fn flush_receipts(&mut self) {
        for ((handle, secret), ids) in std::mem::take(&mut self.receipts) {
            for chunk in ids.chunks(RECEIPT_BATCH) {
                let receipt = Content::receipt(chunk.to_vec());
                match self.send_content(&handle, secret, &receipt, None).await {
                    Ok(reply) => {
                        tokio::spawn(async move {
                            if let Err(e) = reply.answer().await {
                                tracing::info!(error = %e, "a delivery receipt was not stored");
                            }
                        });
                    }
                    Err(e) => {
                        tracing::info!(error = %describe(&e), "a delivery receipt was not sent")
                    }
                }
            }
        }
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
            &self.trust_root,
            libsignal_protocol::Timestamp::from_epoch_millis(now_ms()),
        )? {
            return Err(LinkError::Protocol(
                "the relay issued a certificate that does not verify".into(),
            )
            .into());
        }
        self.cert = Some(cert.clone());
        Ok(cert)
    }

    pub(super) async fn send_sealed(
        &mut self,
        handle: &str,
        content: &Content,
        expires_at: Option<u64>,
    ) -> Result<Reply, ClientError> {
        if !self.anon.is_online() {
            return Err(LinkError::Offline.into());
        }
        let contact = self.contact_by_handle(handle).await?;
        let address = crypto::address(&contact.account_id);
        let has_session = {
            let stores = Stores::new(self.store.conn(), &self.identity, self.registration_id);
            stores
                .sessions
                .load_session(&address)
                .await?
                .is_some_and(|s| {
                    s.has_usable_sender_chain(
                        SystemTime::now(),
                        libsignal_protocol::SessionUsabilityRequirements::all(),
                    )
                    .unwrap_or(false)
                })
        };
        if !has_session {
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
        let reply = self
            .anon
            .submit(|req| ClientFrame::SendSealed {
                req,
                to: contact.account_id.clone(),
                access_token: contact.access_token.clone().into(),
                envelope: envelope.into(),
                expires_at,
                recipient_key: Some(contact.identity_key.clone().into()),
            })
            .await?;
        Ok(reply)
    }

    pub(super) fn identity_error(&self, e: SignalProtocolError, contact: &Contact) -> ClientError {
        match e {
            SignalProtocolError::UntrustedIdentity(_) => ClientError::IdentityChanged {
                handle: contact.handle.clone(),
            },
            e => e.into(),
        }
    }
}
