//! The relay's state in this process's memory: plain collections behind one mutex, for tests
//! of the relay's logic and as the reference the conformance suite holds the other backends
//! to.
//!
//! Owns those collections and their bookkeeping (which one-time key is next, which ids are
//! used, the queue's totals); the decisions are `rules`' and `quota`'s, as for every backend.
//! Must not touch files or sockets: nothing here outlives the last handle.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};

use super::rules::{self, Recipient};
use super::{
    Account, BlobRow, BlobSummary, Created, Directory, Fetched, KEY_HISTORY, NewEnvelope, Origin,
    Outcome, Queue, QueueSummary, Queued, Result, StoreError, Stored,
};
use crate::relay::quota::{Entry, QueueLimits, QueueUsage};
use crate::wire::{B64, Bundle, KeyChange, KeyChangeVia, KeyUpload, PreKey, SignedKey};

/// A handle on one in-memory relay state; every clone is a handle on the same state, so the
/// relay's directory, its queue and a test looking on see one queue.
#[derive(Clone, Default)]
pub struct MemoryStore(Arc<Mutex<State>>);

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// The queue's write path on this state, holding new envelopes to `limits`.
    pub fn queue(&self, limits: QueueLimits) -> MemoryQueue {
        let usage = self.lock().usage(limits);
        MemoryQueue {
            store: self.clone(),
            usage,
            staged: None,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every method checks before it changes anything, so a panic leaves the state whole.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Default)]
struct State {
    meta: HashMap<String, Vec<u8>>,
    /// By account id.
    accounts: HashMap<String, AccountRow>,
    /// Every key change, oldest first, with its account id.
    key_changes: Vec<(String, KeyChange)>,
    /// Committed envelopes by recipient, then id.
    queue: HashMap<String, BTreeMap<u64, Envelope>>,
    /// The highest envelope id given out, committed or not.
    last_id: u64,
    blobs: HashMap<String, BlobRow>,
}

struct AccountRow {
    account: Account,
    signed_prekey: SignedKey,
    last_resort: SignedKey,
    /// One-time keys by id: bundles take the lowest first.
    prekeys: BTreeMap<u32, PreKey>,
    kyber: BTreeMap<u32, SignedKey>,
    /// The armed reset code and its expiry (Unix ms).
    reset: Option<(Vec<u8>, u64)>,
}

#[derive(Clone)]
struct Envelope {
    sender: Option<String>,
    sealed: bool,
    payload: Vec<u8>,
    received_at: u64,
    expires_at: Option<u64>,
}

impl Envelope {
    fn entry<'a>(&'a self, recipient: &'a str) -> Entry<'a> {
        Entry {
            recipient,
            sender: self.sender.as_deref(),
            bytes: self.payload.len() as u64,
        }
    }
}

impl State {
    fn by_handle(&self, handle: &str) -> Option<&AccountRow> {
        self.accounts.values().find(|a| a.account.handle == handle)
    }

    fn key_holder(&self, identity_key: &[u8]) -> Option<&AccountRow> {
        self.accounts
            .values()
            .find(|a| a.account.identity_key == identity_key)
    }

    fn recipient(&self, account_id: &str) -> Option<Recipient<'_>> {
        self.accounts.get(account_id).map(|a| Recipient {
            access_token: &a.account.access_token,
            identity_key: &a.account.identity_key,
        })
    }

    fn usage(&self, limits: QueueLimits) -> QueueUsage {
        let mut usage = QueueUsage::new(limits);
        for (recipient, queued) in &self.queue {
            for e in queued.values() {
                usage.add(&e.entry(recipient));
            }
        }
        usage
    }

    /// Replaces an account's keys (see `Directory::rekey`); checks everything first, so an
    /// error changes nothing.
    fn replace_keys(
        &mut self,
        account_id: &str,
        keys: &KeyUpload,
        via: KeyChangeVia,
        endorsement: Option<&[u8]>,
        now: u64,
    ) -> Result<()> {
        if !self.accounts.contains_key(account_id) {
            return Err(StoreError::NotFound);
        }
        if self.key_holder(&keys.identity_key.0).is_some() {
            return Err(StoreError::KeyTaken);
        }
        let row = self
            .accounts
            .get_mut(account_id)
            .ok_or(StoreError::NotFound)?;
        let old = std::mem::replace(&mut row.account.identity_key, keys.identity_key.0.clone());
        row.account.registration_id = keys.registration_id;
        row.signed_prekey = keys.signed_prekey.clone();
        row.last_resort = keys.kyber_last_resort.clone();
        row.prekeys = by_id(&keys.one_time_prekeys, |k| k.id);
        row.kyber = by_id(&keys.one_time_kyber, |k| k.id);
        self.key_changes.push((
            account_id.to_string(),
            KeyChange {
                old_key: B64(old),
                new_key: keys.identity_key.clone(),
                via,
                endorsement: endorsement.map(|e| B64(e.to_vec())),
                at: now,
            },
        ));
        Ok(())
    }

    /// (handle, envelopes, bytes) of the `top` accounts by queued bytes, counted under
    /// `key` of each envelope (its sender or recipient), for accounts that exist.
    fn ranked(
        &self,
        top: usize,
        key: impl Fn(&str, &Envelope) -> Option<String>,
    ) -> Vec<(String, u64, u64)> {
        let mut totals: HashMap<String, (u64, u64)> = HashMap::new();
        for (recipient, queued) in &self.queue {
            for e in queued.values() {
                if let Some(k) = key(recipient, e) {
                    let t = totals.entry(k).or_default();
                    t.0 += 1;
                    t.1 += e.payload.len() as u64;
                }
            }
        }
        let mut ranked: Vec<_> = totals
            .into_iter()
            .filter_map(|(id, (n, bytes))| {
                let handle = self.accounts.get(&id)?.account.handle.clone();
                Some((handle, n, bytes))
            })
            .collect();
        ranked.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
        ranked.truncate(top);
        ranked
    }
}

/// How many keys `held` would hold with keys of these ids added (a held id is replaced).
fn held_after<K>(held: &BTreeMap<u32, K>, ids: impl Iterator<Item = u32>) -> u32 {
    let new: HashSet<u32> = ids.filter(|id| !held.contains_key(id)).collect();
    (held.len() + new.len()) as u32
}

fn by_id<K: Clone>(keys: &[K], id: impl Fn(&K) -> u32) -> BTreeMap<u32, K> {
    keys.iter().map(|k| (id(k), k.clone())).collect()
}

impl Directory for MemoryStore {
    fn meta(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.lock().meta.get(key).cloned())
    }

    fn add_meta(&mut self, entries: &[(&str, &[u8])]) -> Result<()> {
        let mut s = self.lock();
        for (key, value) in entries {
            s.meta
                .entry(key.to_string())
                .or_insert_with(|| value.to_vec());
        }
        Ok(())
    }

    fn register(
        &mut self,
        account_id: &str,
        handle: &str,
        keys: &KeyUpload,
        access_token: &[u8],
        _now: u64,
    ) -> Result<()> {
        let mut s = self.lock();
        let taken = s
            .by_handle(handle)
            .or_else(|| s.key_holder(&keys.identity_key.0))
            .map(|a| a.account.handle.clone());
        if let Some(e) = rules::registration_conflict(taken.as_deref(), handle) {
            return Err(e);
        }
        if s.accounts.contains_key(account_id) {
            return Err(StoreError::Backend(format!(
                "an account with the id {account_id:?} exists"
            )));
        }
        s.accounts.insert(
            account_id.to_string(),
            AccountRow {
                account: Account {
                    account_id: account_id.to_string(),
                    handle: handle.to_string(),
                    identity_key: keys.identity_key.0.clone(),
                    registration_id: keys.registration_id,
                    access_token: access_token.to_vec(),
                },
                signed_prekey: keys.signed_prekey.clone(),
                last_resort: keys.kyber_last_resort.clone(),
                prekeys: by_id(&keys.one_time_prekeys, |k| k.id),
                kyber: by_id(&keys.one_time_kyber, |k| k.id),
                reset: None,
            },
        );
        Ok(())
    }

    fn rekey(
        &mut self,
        account_id: &str,
        keys: &KeyUpload,
        via: KeyChangeVia,
        endorsement: Option<&[u8]>,
        now: u64,
    ) -> Result<()> {
        self.lock()
            .replace_keys(account_id, keys, via, endorsement, now)
    }

    fn arm_reset(&mut self, handle: &str, code: &[u8], expires_at: u64) -> Result<Option<String>> {
        let mut s = self.lock();
        let Some(row) = s.accounts.values_mut().find(|a| a.account.handle == handle) else {
            return Ok(None);
        };
        row.reset = Some((code.to_vec(), expires_at));
        Ok(Some(row.account.account_id.clone()))
    }

    fn claim_reset(
        &mut self,
        handle: &str,
        code: &[u8],
        keys: &KeyUpload,
        now: u64,
    ) -> Result<Option<String>> {
        let mut s = self.lock();
        let Some(row) = s.by_handle(handle) else {
            return Ok(None);
        };
        let armed = row.reset.as_ref();
        let allowed = rules::claim_allowed(
            armed.map(|(c, _)| c.as_slice()),
            armed.map(|(_, e)| *e),
            code,
            now,
        );
        if !allowed {
            return Ok(None);
        }
        let account_id = row.account.account_id.clone();
        s.replace_keys(&account_id, keys, KeyChangeVia::Reset, None, now)?;
        if let Some(row) = s.accounts.get_mut(&account_id) {
            row.reset = None;
        }
        Ok(Some(account_id))
    }

    fn key_changes(&mut self, account_id: &str) -> Result<u64> {
        let s = self.lock();
        Ok(s.key_changes
            .iter()
            .filter(|(a, _)| a == account_id)
            .count() as u64)
    }

    fn key_history(&mut self, account_id: &str) -> Result<Vec<KeyChange>> {
        let s = self.lock();
        let mut mine: Vec<(usize, &KeyChange)> = s
            .key_changes
            .iter()
            .enumerate()
            .filter(|(_, (a, _))| a == account_id)
            .map(|(i, (_, c))| (i, c))
            .collect();
        mine.sort_by_key(|(i, c)| (c.at, *i));
        let skip = mine.len().saturating_sub(KEY_HISTORY);
        Ok(mine
            .into_iter()
            .skip(skip)
            .map(|(_, c)| c.clone())
            .collect())
    }

    fn upload_prekeys(
        &mut self,
        account_id: &str,
        prekeys: &[PreKey],
        kyber: &[SignedKey],
        max: u32,
    ) -> Result<bool> {
        let mut s = self.lock();
        let row = s.accounts.get_mut(account_id).ok_or(StoreError::NotFound)?;
        let ec = held_after(&row.prekeys, prekeys.iter().map(|k| k.id));
        let ky = held_after(&row.kyber, kyber.iter().map(|k| k.id));
        if !rules::prekeys_fit((ec, ky), max) {
            return Ok(false);
        }
        row.prekeys
            .extend(prekeys.iter().map(|k| (k.id, k.clone())));
        row.kyber.extend(kyber.iter().map(|k| (k.id, k.clone())));
        Ok(true)
    }

    fn prekey_count(&mut self, account_id: &str) -> Result<(u32, u32)> {
        let s = self.lock();
        Ok(s.accounts
            .get(account_id)
            .map_or((0, 0), |a| (a.prekeys.len() as u32, a.kyber.len() as u32)))
    }

    fn account_by_id(&mut self, account_id: &str) -> Result<Option<Account>> {
        Ok(self
            .lock()
            .accounts
            .get(account_id)
            .map(|a| a.account.clone()))
    }

    fn account_by_handle(&mut self, handle: &str) -> Result<Option<Account>> {
        Ok(self.lock().by_handle(handle).map(|a| a.account.clone()))
    }

    fn take_bundle(&mut self, account_id: &str, one_time: bool) -> Result<Bundle> {
        let mut s = self.lock();
        let row = s.accounts.get_mut(account_id).ok_or(StoreError::NotFound)?;
        let (prekey, kyber) = if one_time {
            (
                row.prekeys.pop_first().map(|(_, k)| k),
                row.kyber.pop_first().map(|(_, k)| k),
            )
        } else {
            (None, None)
        };
        Ok(Bundle {
            account_id: account_id.to_string(),
            handle: row.account.handle.clone(),
            identity_key: B64(row.account.identity_key.clone()),
            registration_id: row.account.registration_id,
            signed_prekey: row.signed_prekey.clone(),
            prekey,
            kyber: kyber.unwrap_or_else(|| row.last_resort.clone()),
        })
    }

    fn refusal(&mut self, recipient: &str, origin: &Origin) -> Result<Option<Stored>> {
        let s = self.lock();
        Ok(rules::refusal(s.recipient(recipient), origin))
    }

    fn pending(&mut self, recipient: &str, after: u64, limit: usize) -> Result<Vec<Queued>> {
        let s = self.lock();
        let Some(queued) = s.queue.get(recipient) else {
            return Ok(Vec::new());
        };
        let handle = |id: &Option<String>| {
            let a = s.accounts.get(id.as_deref()?)?;
            Some(a.account.handle.clone())
        };
        Ok(queued
            .range(after.saturating_add(1)..)
            .take(limit)
            .map(|(id, e)| Queued {
                id: *id,
                sender: e.sender.clone(),
                sender_handle: handle(&e.sender),
                sealed: e.sealed,
                payload: e.payload.clone(),
                received_at: e.received_at,
                expires_at: e.expires_at,
            })
            .collect())
    }

    fn queue_summary(&mut self, top: usize) -> Result<QueueSummary> {
        let s = self.lock();
        let all = s.queue.values().flat_map(|q| q.values());
        let (mut envelopes, mut bytes, mut sealed) = (0, 0, 0);
        for e in all {
            envelopes += 1;
            bytes += e.payload.len() as u64;
            sealed += u64::from(e.sealed);
        }
        Ok(QueueSummary {
            envelopes,
            bytes,
            sealed,
            top_senders: s.ranked(top, |_, e| e.sender.clone()),
            top_recipients: s.ranked(top, |to, _| Some(to.to_string())),
        })
    }

    fn queued_for(&mut self, recipient: &str) -> Result<u64> {
        Ok(self
            .lock()
            .queue
            .get(recipient)
            .map_or(0, |q| q.len() as u64))
    }

    fn create_blob(&mut self, blob: &BlobRow, max_blobs: u64, max_bytes: u64) -> Result<Created> {
        let mut s = self.lock();
        let mine = s.blobs.values().filter(|b| b.owner == blob.owner);
        let (count, bytes) = mine.fold((0, 0), |(n, sum), b| (n + 1, sum + b.size));
        let admitted = rules::admit_blob(count, bytes, blob.size, max_blobs, max_bytes);
        if admitted != Created::Yes {
            return Ok(admitted);
        }
        if s.blobs.contains_key(&blob.id) {
            return Err(StoreError::Backend(format!(
                "a blob with the id {:?} exists",
                blob.id
            )));
        }
        let row = BlobRow {
            stored: 0,
            ..blob.clone()
        };
        s.blobs.insert(blob.id.clone(), row);
        Ok(Created::Yes)
    }

    fn blob(&mut self, id: &str) -> Result<Option<BlobRow>> {
        Ok(self.lock().blobs.get(id).cloned())
    }

    fn blob_lengths(&mut self) -> Result<Vec<(String, u64)>> {
        let s = self.lock();
        Ok(s.blobs.values().map(|b| (b.id.clone(), b.stored)).collect())
    }

    fn record_stored(&mut self, id: &str, from: u64, to: u64) -> Result<bool> {
        let mut s = self.lock();
        Ok(match s.blobs.get_mut(id) {
            Some(b) if b.stored == from => {
                b.stored = to;
                true
            }
            _ => false,
        })
    }

    fn blob_fetched(&mut self, id: &str) -> Result<Fetched> {
        let mut s = self.lock();
        let Some(b) = s.blobs.get_mut(id) else {
            return Ok(Fetched::NotFound);
        };
        Ok(match rules::after_fetch(b.recipients_left) {
            Some(left) => {
                b.recipients_left = left;
                Fetched::Counted
            }
            None => {
                s.blobs.remove(id);
                Fetched::Last
            }
        })
    }

    fn delete_blob(&mut self, id: &str) -> Result<()> {
        self.lock().blobs.remove(id);
        Ok(())
    }

    fn delete_due_blobs(
        &mut self,
        now: u64,
        retained_since: u64,
        abandoned_since: u64,
    ) -> Result<Vec<String>> {
        let mut s = self.lock();
        let due = |b: &BlobRow| {
            b.expires_at.is_some_and(|e| e <= now)
                || b.created_at <= retained_since
                || (!b.complete() && b.created_at <= abandoned_since)
        };
        let ids: Vec<String> = s
            .blobs
            .values()
            .filter(|b| due(b))
            .map(|b| b.id.clone())
            .collect();
        for id in &ids {
            s.blobs.remove(id);
        }
        Ok(ids)
    }

    fn blob_summary(&mut self) -> Result<BlobSummary> {
        let s = self.lock();
        let mut sum = BlobSummary::default();
        for b in s.blobs.values() {
            sum.blobs += 1;
            sum.bytes += b.stored;
            sum.incomplete += u64::from(!b.complete());
        }
        Ok(sum)
    }
}

/// The queue's write path on a `MemoryStore`: a staged batch is kept here, out of the shared
/// state, until `commit` applies it.
pub struct MemoryQueue {
    store: MemoryStore,
    usage: QueueUsage,
    staged: Option<Staged>,
}

#[derive(Default)]
struct Staged {
    inserts: Vec<(String, u64, Envelope)>,
    removes: Vec<(String, u64)>,
}

impl MemoryQueue {
    /// Counts `e` as queued under the state's next id, or says why not (see `Queue::stage`).
    fn queue_one(&mut self, s: &mut State, e: &NewEnvelope) -> std::result::Result<u64, Stored> {
        if let Some(refused) = rules::refusal(s.recipient(&e.recipient), &e.origin) {
            return Err(refused);
        }
        let entry = e.entry();
        if let Some(quota) = self.usage.check(&entry) {
            return Err(Stored::OverQuota(quota));
        }
        self.usage.add(&entry);
        s.last_id += 1;
        Ok(s.last_id)
    }
}

impl Queue for MemoryQueue {
    fn stage(
        &mut self,
        new: &[Vec<NewEnvelope>],
        remove: &[(String, u64)],
    ) -> Result<Vec<Outcome>> {
        if self.staged.is_some() {
            return Err(StoreError::BatchOpen);
        }
        let store = self.store.clone();
        let mut s = store.lock();
        let mut staged = Staged::default();
        let mut outcomes = Vec::with_capacity(new.len());
        for unit in new {
            let before = s.last_id;
            let Ok((outcome, take_back)) =
                rules::queue_unit(unit, |e| Ok::<_, Infallible>(self.queue_one(&mut s, e)));
            if !take_back.is_empty() {
                // Nothing of the unit is handed over, so its ids are free again.
                s.last_id = before;
                for e in take_back {
                    self.usage.remove(&e.entry());
                }
            }
            let Outcome::Queued(ids) = outcome else {
                outcomes.push(outcome);
                continue;
            };
            for (e, id) in unit.iter().zip(&ids) {
                let envelope = Envelope {
                    sender: e.sender().map(str::to_string),
                    sealed: matches!(e.origin, Origin::Sealed { .. }),
                    payload: e.payload.clone(),
                    received_at: e.received_at,
                    expires_at: e.expires_at,
                };
                staged.inserts.push((e.recipient.clone(), *id, envelope));
            }
            outcomes.push(Outcome::Queued(ids));
        }
        let mut gone = HashSet::new();
        for (recipient, id) in remove {
            let found = s.queue.get(recipient).and_then(|q| q.get(id));
            if let Some(e) = found
                && gone.insert((recipient, *id))
            {
                self.usage.remove(&e.entry(recipient));
                staged.removes.push((recipient.clone(), *id));
            }
        }
        self.staged = Some(staged);
        Ok(outcomes)
    }

    fn commit(&mut self) -> Result<()> {
        let staged = self.staged.take().ok_or(StoreError::NoBatch)?;
        let mut s = self.store.lock();
        for (recipient, id, e) in staged.inserts {
            s.queue.entry(recipient).or_default().insert(id, e);
        }
        for (recipient, id) in staged.removes {
            if let Some(q) = s.queue.get_mut(&recipient) {
                q.remove(&id);
                if q.is_empty() {
                    s.queue.remove(&recipient);
                }
            }
        }
        Ok(())
    }

    fn rollback(&mut self) {
        if self.staged.take().is_some() {
            self.usage = self.store.lock().usage(self.usage.limits());
        }
    }
}
