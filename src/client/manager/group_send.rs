//! The manager's outgoing group messages: one envelope for every other member, readable
//! (`SendGroup`, like a normal 1:1 message) or sealed under our sender key (`SendMulti`),
//! after our key is sent 1:1 secret to the members who lack it.
//!
//! Part of the manager's outgoing path (`send::prepare` hands group threads here). Must not
//! decide membership (`groups`) nor read arriving envelopes.

use super::send::Outgoing;
use super::{ClientError, Manager};
use crate::client::conn::LinkError;
use crate::client::content::{self, Body, Content};
use crate::client::group_crypto;
use crate::client::signal_store::Stores;
use crate::client::store::Group;
use crate::wire::SealedRecipient;

impl Manager {
    /// `content` for the group `handle`'s normal or secret thread, as one envelope for every
    /// other member. Inside the caller's burst: the sender keys shared and the chain step are
    /// committed with it, before anything leaves.
    pub(super) async fn prepare_group(
        &mut self,
        handle: &str,
        secret: bool,
        content: &Content,
        expires_at: Option<u64>,
    ) -> Result<Outgoing, ClientError> {
        let group = self
            .store
            .group_by_handle(handle)?
            .ok_or_else(|| super::groups::GroupError::Unknown(handle.to_string()))?;
        if group.left {
            return Err(super::groups::GroupError::Left(group.handle).into());
        }
        let to = super::groups::others(&group, &self.reg.account_id);
        if to.is_empty() {
            return Err(super::groups::GroupError::Alone.into());
        }
        let wrapped = Content::of(Body::InGroup {
            group: group.id.clone(),
            body: Box::new(content.body.clone()),
        });
        if !secret {
            return Ok(Outgoing::Group {
                to,
                body: wrapped.encode(),
                expires_at,
            });
        }
        if !self.anon.is_online() {
            return Err(LinkError::Offline.into());
        }
        let preludes = self.share_sender_key(&group, &to).await?;
        let mut recipients = Vec::with_capacity(to.len());
        for member in &to {
            let c = self.contact_by_id(member).await?;
            recipients.push(SealedRecipient {
                to: c.account_id,
                access_token: c.access_token.into(),
                recipient_key: Some(c.identity_key.into()),
            });
        }
        let cert = self.sender_cert().await?;
        let plaintext = content::pad(wrapped.encode());
        let envelope = {
            let work = self.store.atomic()?;
            let mut stores = Stores::new(self.store.conn(), &self.identity, self.registration_id);
            let envelope = group_crypto::seal(
                &mut stores,
                &self.reg.account_id,
                &group.distribution_id,
                &cert,
                &plaintext,
                &to,
                &mut rand::rng(),
            )
            .await?;
            // The chain step is kept before the envelope can leave: a crash in between must
            // never have the next message reuse its key.
            work.commit()?;
            envelope
        };
        Ok(Outgoing::Multi {
            preludes,
            envelope,
            recipients,
            expires_at,
        })
    }

    /// Our sender key of `group`, sealed 1:1 for each of `to` that does not have it yet (and
    /// recorded as theirs now); they go out ahead of the group message.
    async fn share_sender_key(
        &mut self,
        group: &Group,
        to: &[String],
    ) -> Result<Vec<Outgoing>, ClientError> {
        let shared = self.store.sender_key_shared(&group.id)?;
        let lacking: Vec<String> = to
            .iter()
            .filter(|m| !shared.contains(*m))
            .cloned()
            .collect();
        if lacking.is_empty() {
            return Ok(Vec::new());
        }
        let skdm = {
            let mut stores = Stores::new(self.store.conn(), &self.identity, self.registration_id);
            group_crypto::sender_key_message(
                &mut stores,
                &self.reg.account_id,
                &group.distribution_id,
                &mut rand::rng(),
            )
            .await?
        };
        let key = Content::of(Body::SenderKey {
            group: group.id.clone(),
            skdm: skdm.into(),
        });
        let mut preludes = Vec::with_capacity(lacking.len());
        for member in &lacking {
            let c = self.contact_by_id(member).await?;
            preludes.push(self.seal(&c.handle, &key, None).await?);
        }
        self.store.mark_sender_key_shared(&group.id, &lacking)?;
        Ok(preludes)
    }
}
