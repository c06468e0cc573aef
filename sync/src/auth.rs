//! Terminal request signatures and gateway acknowledgements: who may speak for a terminal,
//! and how a lane knows the gateway really stored its entries.
//!
//! A terminal signs every request (REST and the WebSocket handshake) with its ed25519 key
//! over the method, the path with its query, a timestamp, a nonce and the SHA-256 of the
//! body. The gateway checks the timestamp against its own clock (±300 s), refuses a nonce it
//! has seen inside that window, and signs its acknowledgements with its own key. Layouts are
//! in `docs/sync.md`.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How far a request's timestamp may be from the gateway's clock.
pub const MAX_CLOCK_SKEW_MS: i64 = 300_000;
/// Nonces are 16 random bytes, hex: 32 characters.
pub const NONCE_HEX_LEN: usize = 32;

/// HTTP headers that carry a terminal's signature, and the gateway's time.
pub mod header {
    pub const TERMINAL: &str = "x-lanepay-terminal";
    pub const TIMESTAMP: &str = "x-lanepay-timestamp";
    pub const NONCE: &str = "x-lanepay-nonce";
    pub const SIGNATURE: &str = "x-lanepay-signature";
    /// On every gateway response: the gateway's clock, so lanes can report skew.
    pub const SERVER_TIME: &str = "x-lanepay-server-time";
}

const REQUEST_DOMAIN: &[u8] = b"LANEPAY-REQUEST-V1\n";
const ACK_DOMAIN: &[u8] = b"LANEPAY-ACK-V1\n";

/// The signature headers of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestAuth {
    pub terminal_id: String,
    pub timestamp_ms: i64,
    pub nonce: String,
    /// Hex of the 64-byte signature.
    pub signature: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("request is not signed (missing {0} header)")]
    Missing(&'static str),
    #[error("malformed {0} header")]
    Malformed(&'static str),
    #[error(
        "request time is {skew_ms} ms away from the gateway's clock (limit {MAX_CLOCK_SKEW_MS}); fix the lane's clock"
    )]
    Skew { skew_ms: i64 },
    #[error("signature does not verify with the terminal's key")]
    BadSignature,
    #[error("nonce already used inside the replay window")]
    Replay,
}

/// The bytes a terminal signs for a request.
pub fn request_signing_bytes(
    method: &str,
    path_and_query: &str,
    timestamp_ms: i64,
    nonce: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(REQUEST_DOMAIN.len() + path_and_query.len() + 128);
    bytes.extend_from_slice(REQUEST_DOMAIN);
    for part in [
        method.to_ascii_uppercase().as_str(),
        path_and_query,
        &timestamp_ms.to_string(),
        nonce,
    ] {
        bytes.extend_from_slice(part.as_bytes());
        bytes.push(b'\n');
    }
    bytes.extend_from_slice(hex::encode(Sha256::digest(body)).as_bytes());
    bytes
}

/// Signs a request. `nonce` is 16 random bytes the caller draws (hex).
pub fn sign_request(
    key: &SigningKey,
    terminal_id: &str,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    timestamp_ms: i64,
    nonce: &str,
) -> RequestAuth {
    let signature = key.sign(&request_signing_bytes(
        method,
        path_and_query,
        timestamp_ms,
        nonce,
        body,
    ));
    RequestAuth {
        terminal_id: terminal_id.to_string(),
        timestamp_ms,
        nonce: nonce.to_string(),
        signature: hex::encode(signature.to_bytes()),
    }
}

/// Checks a request's signature and time window. The nonce's uniqueness is the caller's
/// (it needs storage shared by every gateway node).
pub fn verify_request(
    auth: &RequestAuth,
    key: &VerifyingKey,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    now_ms: i64,
) -> Result<(), AuthError> {
    if auth.nonce.len() != NONCE_HEX_LEN || !auth.nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AuthError::Malformed(header::NONCE));
    }
    let skew_ms = auth.timestamp_ms.saturating_sub(now_ms);
    if skew_ms.abs() > MAX_CLOCK_SKEW_MS {
        return Err(AuthError::Skew { skew_ms });
    }
    let signature =
        parse_signature(&auth.signature).ok_or(AuthError::Malformed(header::SIGNATURE))?;
    key.verify(
        &request_signing_bytes(method, path_and_query, auth.timestamp_ms, &auth.nonce, body),
        &signature,
    )
    .map_err(|_| AuthError::BadSignature)
}

pub fn parse_signature(text: &str) -> Option<Signature> {
    let bytes: [u8; 64] = hex::decode(text).ok()?.try_into().ok()?;
    Some(Signature::from_bytes(&bytes))
}

pub fn parse_public_key(text: &str) -> Option<VerifyingKey> {
    let bytes: [u8; 32] = hex::decode(text.trim()).ok()?.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

/// The gateway's signed statement: every entry of `terminal_id` up to `seq` is stored, the
/// last one with `hash`. A lane moves its outbox only on one that verifies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    pub terminal_id: String,
    pub seq: u64,
    /// Hex of the entry hash at `seq` (64 zeros when `seq` is 0).
    pub hash: String,
    pub server_time_ms: i64,
    /// Hex of the gateway's ed25519 signature over [`Ack::signing_bytes`].
    pub signature: String,
}

impl Ack {
    pub fn signing_bytes(terminal_id: &str, seq: u64, hash: &str, server_time_ms: i64) -> Vec<u8> {
        let mut bytes = ACK_DOMAIN.to_vec();
        bytes.extend_from_slice(
            format!("{terminal_id}\n{seq}\n{hash}\n{server_time_ms}").as_bytes(),
        );
        bytes
    }

    pub fn sign(
        key: &SigningKey,
        terminal_id: &str,
        seq: u64,
        hash: [u8; 32],
        server_time_ms: i64,
    ) -> Ack {
        let hash = hex::encode(hash);
        let signature = key.sign(&Ack::signing_bytes(terminal_id, seq, &hash, server_time_ms));
        Ack {
            terminal_id: terminal_id.to_string(),
            seq,
            hash,
            server_time_ms,
            signature: hex::encode(signature.to_bytes()),
        }
    }

    /// Verifies the gateway's signature and returns the acknowledged hash.
    pub fn verify(
        &self,
        gateway_key: &VerifyingKey,
        terminal_id: &str,
    ) -> Result<[u8; 32], AuthError> {
        if self.terminal_id != terminal_id {
            return Err(AuthError::BadSignature);
        }
        let signature =
            parse_signature(&self.signature).ok_or(AuthError::Malformed("ack signature"))?;
        gateway_key
            .verify(
                &Ack::signing_bytes(&self.terminal_id, self.seq, &self.hash, self.server_time_ms),
                &signature,
            )
            .map_err(|_| AuthError::BadSignature)?;
        hex::decode(&self.hash)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(AuthError::Malformed("ack hash"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: &str = "00112233445566778899aabbccddeeff";

    #[test]
    fn a_signed_request_verifies_and_any_change_breaks_it() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let auth = sign_request(
            &key,
            "T1",
            "post",
            "/v1/terminal/journal",
            b"{}",
            1_000_000,
            NONCE,
        );
        let public = key.verifying_key();
        assert_eq!(
            verify_request(
                &auth,
                &public,
                "POST",
                "/v1/terminal/journal",
                b"{}",
                1_000_000
            ),
            Ok(())
        );
        assert_eq!(
            verify_request(
                &auth,
                &public,
                "POST",
                "/v1/terminal/journal",
                b"{ }",
                1_000_000
            ),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            verify_request(
                &auth,
                &public,
                "GET",
                "/v1/terminal/journal",
                b"{}",
                1_000_000
            ),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            verify_request(
                &auth,
                &public,
                "POST",
                "/v1/terminal/journal?x=1",
                b"{}",
                1_000_000
            ),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            verify_request(
                &auth,
                &public,
                "POST",
                "/v1/terminal/journal",
                b"{}",
                1_000_000 + MAX_CLOCK_SKEW_MS + 1
            ),
            Err(AuthError::Skew {
                skew_ms: -MAX_CLOCK_SKEW_MS - 1
            })
        );
        let other = SigningKey::from_bytes(&[4; 32]).verifying_key();
        assert_eq!(
            verify_request(
                &auth,
                &other,
                "POST",
                "/v1/terminal/journal",
                b"{}",
                1_000_000
            ),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn acks_verify_only_with_the_gateway_key_and_terminal() {
        let gateway = SigningKey::from_bytes(&[5; 32]);
        let ack = Ack::sign(&gateway, "T1", 7, [9; 32], 123);
        assert_eq!(ack.verify(&gateway.verifying_key(), "T1"), Ok([9; 32]));
        assert!(ack.verify(&gateway.verifying_key(), "T2").is_err());
        let mut forged = ack.clone();
        forged.seq = 8;
        assert_eq!(
            forged.verify(&gateway.verifying_key(), "T1"),
            Err(AuthError::BadSignature)
        );
    }
}
