//! Identity keys as both ends compare them: the canonical form, and the check that a key
//! change was endorsed by the key it replaces.
//!
//! Owns nothing but these two rules, so the relay (which records a change) and the client
//! (which re-checks it rather than take the relay's word) cannot disagree. Must not do I/O or
//! keep state; every signature check is libsignal's.

use libsignal_protocol::IdentityKey;

use crate::wire;

/// The canonical serialisation of an identity key (libsignal's 33 bytes), or None if the
/// bytes are not a key. Keys are compared and stored only in this form: the same key with
/// trailing bytes must not pass as another key.
pub fn canonical(bytes: &[u8]) -> Option<Vec<u8>> {
    IdentityKey::decode(bytes)
        .ok()
        .map(|k| k.serialize().to_vec())
}

/// Whether `old_key` signed `rekey_message(new_key)`: the old key's holder endorsed the new one.
pub fn endorses(old_key: &[u8], new_key: &[u8], signature: &[u8]) -> bool {
    IdentityKey::decode(old_key)
        .map(|k| {
            k.public_key()
                .verify_signature(&wire::rekey_message(new_key), signature)
        })
        .unwrap_or(false)
}

/// How a contact's key came to be replaced, as the client checked it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replaced {
    /// Every step was signed by the key it replaced.
    Endorsed,
    /// At least one step was the relay operator's reset (a lost device): nothing but the
    /// operator's word stands behind it, which is why every change is shown loudly.
    Reset,
}

/// Follows the directory's key-change log from `held` (the key the client has) to `offered`
/// (the key the directory names now), checking each rekey's endorsement itself. None: no such
/// path exists, so the offered key is not a change of the held one but a substitution.
pub fn path(held: &[u8], offered: &[u8], log: &[wire::KeyChange]) -> Option<Replaced> {
    let mut key = held.to_vec();
    let mut how = Replaced::Endorsed;
    // Each step consumes one entry, so a log that loops cannot keep this going.
    for _ in 0..log.len() {
        if key == offered {
            return Some(how);
        }
        let step = log
            .iter()
            .rev()
            .find(|c| canonical(&c.old_key.0).as_deref() == Some(&key[..]))?;
        let next = canonical(&step.new_key.0)?;
        match (&step.via, &step.endorsement) {
            (wire::KeyChangeVia::Rekey, Some(sig)) if endorses(&key, &next, &sig.0) => {}
            (wire::KeyChangeVia::Reset, _) => how = Replaced::Reset,
            _ => return None,
        }
        key = next;
    }
    (key == offered).then_some(how)
}

#[cfg(test)]
mod tests {
    use libsignal_protocol::IdentityKeyPair;

    use super::*;
    use crate::wire::{B64, KeyChange, KeyChangeVia};

    fn key(p: &IdentityKeyPair) -> Vec<u8> {
        p.identity_key().serialize().to_vec()
    }

    fn rekey(old: &IdentityKeyPair, new: &IdentityKeyPair) -> KeyChange {
        let sig = old
            .private_key()
            .calculate_signature(&wire::rekey_message(&key(new)), &mut rand::rng())
            .unwrap();
        KeyChange {
            old_key: B64(key(old)),
            new_key: B64(key(new)),
            via: KeyChangeVia::Rekey,
            endorsement: Some(B64(sig.to_vec())),
            at: 1,
        }
    }

    #[test]
    fn trailing_bytes_do_not_make_another_key() {
        let k = IdentityKeyPair::generate(&mut rand::rng());
        let mut padded = key(&k);
        padded.extend_from_slice(b"tail");
        assert_eq!(canonical(&padded), Some(key(&k)));
        assert_eq!(canonical(b"not a key"), None);
    }

    #[test]
    fn a_chain_of_endorsed_rekeys_is_followed_and_a_forged_step_breaks_it() {
        let mut rng = rand::rng();
        let [a, b, c, m] = [(); 4].map(|_| IdentityKeyPair::generate(&mut rng));
        let log = vec![rekey(&a, &b), rekey(&b, &c)];
        assert_eq!(path(&key(&a), &key(&c), &log), Some(Replaced::Endorsed));
        assert_eq!(path(&key(&b), &key(&c), &log), Some(Replaced::Endorsed));
        assert_eq!(path(&key(&c), &key(&c), &log), Some(Replaced::Endorsed));
        // No entry leads to m.
        assert_eq!(path(&key(&a), &m.identity_key().serialize(), &log), None);
        // An entry claiming a rekey to m, signed by m rather than by the old key.
        let mut forged = rekey(&m, &m);
        forged.old_key = B64(key(&a));
        assert_eq!(path(&key(&a), &key(&m), &[forged]), None);
        // The same claim without any signature.
        let mut unsigned = rekey(&a, &m);
        unsigned.endorsement = None;
        assert_eq!(path(&key(&a), &key(&m), &[unsigned]), None);
        // Nothing at all: the directory just names another key.
        assert_eq!(path(&key(&a), &key(&m), &[]), None);
    }

    #[test]
    fn an_operator_reset_is_a_path_but_says_so() {
        let mut rng = rand::rng();
        let [a, b, c] = [(); 3].map(|_| IdentityKeyPair::generate(&mut rng));
        let reset = KeyChange {
            old_key: B64(key(&a)),
            new_key: B64(key(&b)),
            via: KeyChangeVia::Reset,
            endorsement: None,
            at: 1,
        };
        let log = vec![reset, rekey(&b, &c)];
        assert_eq!(path(&key(&a), &key(&c), &log), Some(Replaced::Reset));
    }
}
