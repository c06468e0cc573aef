//! The test vector of `docs/journal.md`, checked byte for byte against this implementation,
//! so the document another implementation follows cannot drift from the code.
#![allow(clippy::unwrap_used)]

use ed25519_dalek::SigningKey;
use lanepay_sync::journal::{ChainVerifier, EntryDraft, GENESIS_PREV_HASH};

/// Pulls the value written after `label` in the document's vector section.
fn documented(doc: &str, label: &str) -> String {
    let start = doc
        .find(label)
        .unwrap_or_else(|| panic!("{label} missing from docs/journal.md"))
        + label.len();
    doc[start..]
        .split_whitespace()
        .next()
        .unwrap()
        .trim_matches('`')
        .to_string()
}

#[test]
fn the_documented_vector_matches() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/journal.md"))
        .unwrap();
    let seed: [u8; 32] = hex::decode(documented(&doc, "terminal key seed:"))
        .unwrap()
        .try_into()
        .unwrap();
    let key = SigningKey::from_bytes(&seed);
    let payload = documented(&doc, "payload:");
    let draft = EntryDraft {
        terminal_id: documented(&doc, "terminal_id:"),
        seq: documented(&doc, "seq:").parse().unwrap(),
        kind: documented(&doc, "kind:"),
        created_at_ms: documented(&doc, "created_at_ms:").parse().unwrap(),
        prev_hash: GENESIS_PREV_HASH,
        payload: payload.into_bytes(),
    };
    let entry = draft.sign(&key).unwrap();
    println!("public key {}", hex::encode(key.verifying_key().to_bytes()));
    println!("hash {}", hex::encode(entry.hash));
    println!("signature {}", hex::encode(entry.signature));
    assert_eq!(
        hex::encode(key.verifying_key().to_bytes()),
        documented(&doc, "public key:")
    );
    assert_eq!(hex::encode(entry.hash), documented(&doc, "entry hash:"));
    assert_eq!(hex::encode(entry.signature), documented(&doc, "signature:"));
    ChainVerifier::from_genesis(&entry.terminal_id, key.verifying_key())
        .push(&entry)
        .unwrap();
}
