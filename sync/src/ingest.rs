//! How the gateway judges an entry a terminal sends: accept it, acknowledge a duplicate again,
//! hold it behind a gap, or refuse it as a fork or a forgery. Pure: the caller supplies what
//! it has stored.

use ed25519_dalek::VerifyingKey;

use crate::journal::{EntryError, SignedEntry};

/// What the gateway has accepted of one terminal's chain so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainHead {
    /// The highest contiguous sequence stored (0 before any).
    pub seq: u64,
    pub hash: [u8; 32],
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Next in the chain and valid: store it (and apply it to the ledger) now.
    Accept,
    /// Already stored with the same hash: acknowledge again, store nothing.
    Duplicate,
    /// A different entry under a sequence number already stored: an alarm, never stored.
    Fork { stored_hash: [u8; 32] },
    /// Later than the next expected: hold it until the gap is filled, and report the gap.
    Gap { expected: u64 },
    /// Invalid on its own or does not link to the head: refused and reported.
    Invalid(EntryError),
}

/// Judges one entry against the head. `stored_hash(seq)` returns the hash stored for an
/// earlier sequence number, if any.
pub fn judge(
    head: ChainHead,
    entry: &SignedEntry,
    terminal_id: &str,
    key: &VerifyingKey,
    stored_hash: impl Fn(u64) -> Option<[u8; 32]>,
) -> Verdict {
    judge_with(head, entry, terminal_id, key, stored_hash, Signature::Check)
}

/// Whether [`judge_with`] still has to check the entry's signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signature {
    Check,
    /// Already verified with the terminal's key, in a batch
    /// ([`crate::journal::verify_signatures`]); everything else is still checked.
    Verified,
}

/// [`judge`], with the signature possibly checked already.
pub fn judge_with(
    head: ChainHead,
    entry: &SignedEntry,
    terminal_id: &str,
    key: &VerifyingKey,
    stored_hash: impl Fn(u64) -> Option<[u8; 32]>,
    signature: Signature,
) -> Verdict {
    if entry.terminal_id != terminal_id {
        return Verdict::Invalid(EntryError::WrongTerminal {
            expected: terminal_id.into(),
            found: entry.terminal_id.clone(),
        });
    }
    if entry.seq == 0 {
        return Verdict::Invalid(EntryError::SequenceGap {
            expected: 1,
            found: 0,
        });
    }
    if entry.seq <= head.seq {
        return match stored_hash(entry.seq) {
            Some(hash) if hash == entry.hash => Verdict::Duplicate,
            Some(stored_hash) => Verdict::Fork { stored_hash },
            None => Verdict::Invalid(EntryError::SequenceGap {
                expected: head.seq + 1,
                found: entry.seq,
            }),
        };
    }
    if entry.seq > head.seq + 1 {
        return Verdict::Gap {
            expected: head.seq + 1,
        };
    }
    if entry.prev_hash != head.hash {
        return Verdict::Invalid(EntryError::ChainBroken(head.seq));
    }
    let checked = match signature {
        Signature::Check => entry.verify(key),
        Signature::Verified => entry.verify_contents(),
    };
    match checked {
        Ok(()) => Verdict::Accept,
        Err(error) => Verdict::Invalid(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{EntryDraft, GENESIS_PREV_HASH};
    use ed25519_dalek::SigningKey;

    fn entries(key: &SigningKey, n: u64) -> Vec<SignedEntry> {
        let mut prev = GENESIS_PREV_HASH;
        (1..=n)
            .map(|seq| {
                let e = EntryDraft {
                    terminal_id: "T1".into(),
                    seq,
                    kind: "sale_completed".into(),
                    created_at_ms: 0,
                    prev_hash: prev,
                    payload: format!("{{\"total_fen\":{}}}", seq * 100).into_bytes(),
                }
                .sign(key)
                .unwrap();
                prev = e.hash;
                e
            })
            .collect()
    }

    #[test]
    fn every_case_is_told_apart() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let public = key.verifying_key();
        let chain = entries(&key, 3);
        let genesis = ChainHead {
            seq: 0,
            hash: GENESIS_PREV_HASH,
        };
        let none = |_| None;
        assert_eq!(
            judge(genesis, &chain[0], "T1", &public, none),
            Verdict::Accept
        );
        assert_eq!(
            judge(genesis, &chain[2], "T1", &public, none),
            Verdict::Gap { expected: 1 }
        );
        let head = ChainHead {
            seq: 2,
            hash: chain[1].hash,
        };
        let stored = |seq: u64| Some(chain[seq as usize - 1].hash);
        assert_eq!(
            judge(head, &chain[1], "T1", &public, stored),
            Verdict::Duplicate
        );
        assert_eq!(
            judge(head, &chain[2], "T1", &public, stored),
            Verdict::Accept
        );

        // A re-signed entry with a changed amount under a used sequence number: a fork.
        let mut changed = chain[1].draft();
        changed.payload = b"{\"total_fen\":1}".to_vec();
        let changed = changed.sign(&key).unwrap();
        assert_eq!(
            judge(head, &changed, "T1", &public, stored),
            Verdict::Fork {
                stored_hash: chain[1].hash
            }
        );

        // A forged entry (another key) at the next sequence number.
        let forged = chain[2]
            .draft()
            .sign(&SigningKey::from_bytes(&[2; 32]))
            .unwrap();
        assert_eq!(
            judge(head, &forged, "T1", &public, stored),
            Verdict::Invalid(EntryError::BadSignature)
        );

        // The next sequence number but linked to something else.
        let mut unlinked = chain[2].draft();
        unlinked.prev_hash = [7; 32];
        let unlinked = unlinked.sign(&key).unwrap();
        assert_eq!(
            judge(head, &unlinked, "T1", &public, stored),
            Verdict::Invalid(EntryError::ChainBroken(2))
        );
        assert!(matches!(
            judge(head, &chain[2], "T9", &public, stored),
            Verdict::Invalid(EntryError::WrongTerminal { .. })
        ));
    }
}
