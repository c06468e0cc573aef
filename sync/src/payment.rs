//! Payments between a lane and the gateway: the terminal payment API's wire types, card data
//! sealed to the gateway, and the signed offline-QR order and its confirmation.
//!
//! Amounts on this wire are integer fen. Formats are written down in `docs/payments.md`:
//! - a sealed card is an X25519 sealed box: an ephemeral key agreed with the gateway's
//!   card-seal key, HKDF-SHA256 over the shared secret, ChaCha20-Poly1305 over the card's
//!   JSON; only the gateway's secret opens it;
//! - an offline order is canonical JSON signed by the terminal's ed25519 key, carried in the
//!   gateway cashier URL `{base}/pay/offline?o=..&s=..`;
//! - a confirmation is canonical JSON signed by the gateway's ed25519 key, as the QR text
//!   `LPC1.<payload>.<signature>` (both base64url without padding).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use crate::canonical;

pub const PAY_CODE_PATH: &str = "/v1/terminal/payments/code";
pub const CREATE_QR_PATH: &str = "/v1/terminal/payments/qr";
pub const PAY_CARD_PATH: &str = "/v1/terminal/payments/card";
pub const QUERY_PATH: &str = "/v1/terminal/payments/query";
pub const REVERSE_PATH: &str = "/v1/terminal/payments/reverse";
pub const CLOSE_PATH: &str = "/v1/terminal/payments/close";
pub const REFUND_PATH: &str = "/v1/terminal/payments/refund";
/// The gateway's cashier page for a signed offline order.
pub const OFFLINE_PAY_PATH: &str = "/pay/offline";

/// The longest out_trade_no (and refund_no) the gateway accepts.
pub const MAX_TRADE_NO_LEN: usize = 64;

/// Order states as the gateway names them (`PaymentView::state`).
pub mod state {
    pub const CREATED: &str = "CREATED";
    pub const WAIT_PAY: &str = "WAIT_PAY";
    pub const PAYING: &str = "PAYING";
    pub const SUCCESS: &str = "SUCCESS";
    pub const REFUND: &str = "REFUND";
    pub const CLOSED: &str = "CLOSED";
    pub const FAILED: &str = "FAILED";
    pub const REVOKED: &str = "REVOKED";

    /// A state no later call changes except by a refund.
    pub fn is_final(state: &str) -> bool {
        matches!(state, SUCCESS | REFUND | CLOSED | FAILED | REVOKED)
    }

    /// The money was taken (a refunded order was paid first).
    pub fn is_paid(state: &str) -> bool {
        matches!(state, SUCCESS | REFUND)
    }
}

/// Pay with a wallet payment code the customer shows (scanned at the lane).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayCodeRequest {
    pub out_trade_no: String,
    pub amount_fen: i64,
    /// The customer's single-use code; a bearer credential, so `Debug` hides most of it.
    pub auth_code: String,
    pub subject: String,
}

impl std::fmt::Debug for PayCodeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayCodeRequest")
            .field("out_trade_no", &self.out_trade_no)
            .field("amount_fen", &self.amount_fen)
            .field("auth_code", &mask_tail(&self.auth_code, 4))
            .field("subject", &self.subject)
            .finish()
    }
}

/// Create a dynamic QR order the customer scans. `pay_type`: alipay, wechat or unionpay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateQrRequest {
    pub out_trade_no: String,
    pub amount_fen: i64,
    pub subject: String,
    pub pay_type: String,
}

/// Pay with a contactless card. `stored_at_ms` is `Some` when the lane took the card offline
/// and forwards it now (store-and-forward): a decline then is an alarm for HQ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardPaymentRequest {
    pub out_trade_no: String,
    pub amount_fen: i64,
    pub card: SealedCard,
    /// First 6 and last 4 digits (see [`masked_pan`]); what receipts and HQ show.
    pub masked_pan: String,
    #[serde(default)]
    pub stored_at_ms: Option<i64>,
}

/// Names an order the terminal created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentRef {
    pub out_trade_no: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TerminalRefundRequest {
    pub out_trade_no: String,
    /// The lane's idempotency key for this refund.
    pub refund_no: String,
    pub amount_fen: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalRefundView {
    pub refund_no: String,
    pub out_trade_no: String,
    pub amount_fen: i64,
    /// PROCESSING, SUCCESS or FAILED.
    pub state: String,
}

/// An order as the terminal sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentView {
    pub out_trade_no: String,
    /// The gateway's id of the order.
    pub trade_no: String,
    pub pay_type: String,
    /// One of [`state`]'s names.
    pub state: String,
    pub amount_fen: i64,
    pub paid_fen: i64,
    /// The URL to render as a QR (dynamic QR orders).
    #[serde(default)]
    pub pay_url: Option<String>,
    #[serde(default)]
    pub paid_at_ms: Option<i64>,
    /// Why the payment failed, in words for the cashier.
    #[serde(default)]
    pub failure: Option<String>,
}

/// The body of every 4xx/5xx answer on the terminal payment API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentError {
    pub code: String,
    pub message: String,
    /// The same request may succeed later (the gateway was busy, a channel was down).
    pub retryable: bool,
}

impl std::fmt::Display for PaymentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

/// How a payment call ended when it did not return a [`PaymentView`]. What the lane may do
/// next depends on whether the gateway could have acted on the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentCallError {
    /// The gateway answered with a refusal: the outcome is known (nothing was done, unless
    /// the refusal says otherwise).
    #[error("the gateway refused: {0}")]
    Refused(PaymentError),
    /// The request may have reached the gateway (timeout, connection lost after sending, a
    /// garbled answer): the outcome is unknown; query before trying anything else.
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// The request surely never reached the gateway (connection refused, name lookup, a
    /// request that could not be built): nothing happened.
    #[error("not sent: {0}")]
    NotSent(String),
}

impl PaymentCallError {
    /// Whether the gateway certainly did not act on the request, or said what it did.
    pub fn outcome_known(&self) -> bool {
        !matches!(self, PaymentCallError::Unknown(_))
    }
}

/// Checks an out_trade_no or refund_no: 1–64 characters of `A-Z a-z 0-9 - _`.
pub fn validate_trade_no(no: &str) -> Result<(), String> {
    if no.is_empty() || no.len() > MAX_TRADE_NO_LEN {
        return Err(format!(
            "must be 1 to {MAX_TRADE_NO_LEN} characters (got {})",
            no.len()
        ));
    }
    if !no
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("may hold only letters, digits, '-' and '_'".into());
    }
    Ok(())
}

fn mask_tail(text: &str, keep: usize) -> String {
    let count = text.chars().count();
    let shown: String = text.chars().skip(count.saturating_sub(keep)).collect();
    format!("{}{shown}", "*".repeat(count.saturating_sub(keep)))
}

// ---------------------------------------------------------------------------------------
// Card sealing

const SEAL_INFO: &[u8] = b"LANEPAY-CARD-SEAL-V1";

/// What a card reader read, as the gateway needs it to authorize. Exists on the lane only
/// between the tap and [`seal_card`]; `Debug` masks the PAN and the memory is wiped on drop.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize)]
#[zeroize(drop)]
#[serde(deny_unknown_fields)]
pub struct CardSecret {
    pub pan: String,
    /// Expiry as `YYMM`, as read from the card (tag 5F24's first two bytes).
    pub expiry_yymm: String,
    #[serde(default)]
    pub pan_sequence: Option<u8>,
    pub aid_hex: String,
}

impl std::fmt::Debug for CardSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CardSecret")
            .field("pan", &masked_pan(&self.pan))
            .field("expiry_yymm", &"**")
            .field("pan_sequence", &self.pan_sequence)
            .field("aid_hex", &self.aid_hex)
            .finish()
    }
}

impl CardSecret {
    /// The card's expiry as (year, month), `None` when it is not `YYMM` digits with a month
    /// 01–12.
    pub fn expiry(&self) -> Option<(i32, u32)> {
        let digits = self.expiry_yymm.as_bytes();
        if digits.len() != 4 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let year = 2000 + i32::from(digits[0] - b'0') * 10 + i32::from(digits[1] - b'0');
        let month = u32::from(digits[2] - b'0') * 10 + u32::from(digits[3] - b'0');
        (1..=12).contains(&month).then_some((year, month))
    }
}

/// A card sealed to the gateway's X25519 key. Hex fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedCard {
    /// The sender's one-time X25519 public key (32 bytes).
    pub ephemeral_public: String,
    /// ChaCha20-Poly1305 nonce (12 bytes).
    pub nonce: String,
    /// The card's JSON, encrypted, with the 16-byte tag.
    pub ciphertext: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("no randomness for sealing: {0}")]
    NoRandomness(String),
    #[error("the sealed card is malformed: {0}")]
    Malformed(&'static str),
    #[error("the sealed card does not open with this key (tampered, or sealed to another key)")]
    DoesNotOpen,
    #[error("the card-seal public key is degenerate")]
    WeakKey,
}

/// Seals `card` to the gateway's card-seal public key, with fresh OS randomness.
pub fn seal_card(card: &CardSecret, gateway_public: &[u8; 32]) -> Result<SealedCard, SealError> {
    let mut ephemeral = Zeroizing::new([0u8; 32]);
    let mut nonce = [0u8; 12];
    getrandom::fill(ephemeral.as_mut())
        .and_then(|()| getrandom::fill(&mut nonce))
        .map_err(|e| SealError::NoRandomness(e.to_string()))?;
    seal_card_with(card, gateway_public, &ephemeral, nonce)
}

/// Seals with the given ephemeral secret and nonce: deterministic, for test vectors. Never
/// reuse an ephemeral secret.
pub fn seal_card_with(
    card: &CardSecret,
    gateway_public: &[u8; 32],
    ephemeral_secret: &[u8; 32],
    nonce: [u8; 12],
) -> Result<SealedCard, SealError> {
    let ephemeral = x25519_dalek::StaticSecret::from(*ephemeral_secret);
    let ephemeral_public = x25519_dalek::PublicKey::from(&ephemeral);
    let shared = ephemeral.diffie_hellman(&x25519_dalek::PublicKey::from(*gateway_public));
    if !shared.was_contributory() {
        return Err(SealError::WeakKey);
    }
    let cipher = seal_cipher(
        shared.as_bytes(),
        ephemeral_public.as_bytes(),
        gateway_public,
    );
    let plaintext = Zeroizing::new(
        serde_json::to_vec(card).map_err(|_| SealError::Malformed("card not encodable"))?,
    );
    let ciphertext = cipher
        .encrypt(&Nonce::from(nonce), plaintext.as_slice())
        .map_err(|_| SealError::Malformed("card too large"))?;
    Ok(SealedCard {
        ephemeral_public: hex::encode(ephemeral_public.as_bytes()),
        nonce: hex::encode(nonce),
        ciphertext: hex::encode(ciphertext),
    })
}

/// Opens a sealed card with the gateway's card-seal secret.
pub fn open_card(sealed: &SealedCard, secret: &[u8; 32]) -> Result<CardSecret, SealError> {
    let ephemeral_public: [u8; 32] = decode_hex_array(&sealed.ephemeral_public).ok_or(
        SealError::Malformed("ephemeral_public must be 32 bytes of hex"),
    )?;
    let nonce: [u8; 12] = decode_hex_array(&sealed.nonce)
        .ok_or(SealError::Malformed("nonce must be 12 bytes of hex"))?;
    let ciphertext = hex::decode(&sealed.ciphertext)
        .map_err(|_| SealError::Malformed("ciphertext is not hex"))?;
    let secret = x25519_dalek::StaticSecret::from(*secret);
    let own_public = x25519_dalek::PublicKey::from(&secret);
    let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(ephemeral_public));
    if !shared.was_contributory() {
        return Err(SealError::DoesNotOpen);
    }
    let cipher = seal_cipher(shared.as_bytes(), &ephemeral_public, own_public.as_bytes());
    let plaintext = Zeroizing::new(
        cipher
            .decrypt(&Nonce::from(nonce), ciphertext.as_slice())
            .map_err(|_| SealError::DoesNotOpen)?,
    );
    serde_json::from_slice(&plaintext).map_err(|_| SealError::Malformed("card fields"))
}

/// The public key that belongs to a card-seal secret.
pub fn card_seal_public_key(secret: &[u8; 32]) -> [u8; 32] {
    x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*secret)).to_bytes()
}

// The salt binds both public keys, so a box cannot be re-targeted to another recipient key.
fn seal_cipher(
    shared: &[u8; 32],
    ephemeral_public: &[u8; 32],
    recipient: &[u8; 32],
) -> ChaCha20Poly1305 {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(ephemeral_public);
    salt[32..].copy_from_slice(recipient);
    let hkdf = hkdf::Hkdf::<Sha256>::new(Some(&salt), shared);
    let mut key = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's limit of 8,160: expand cannot fail.
    let _ = hkdf.expand(SEAL_INFO, key.as_mut());
    ChaCha20Poly1305::new(&Key::from(*key))
}

fn decode_hex_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    hex::decode(text).ok()?.try_into().ok()
}

/// The PAN as receipts and logs may show it: first 6 and last 4 digits, the rest `*`.
/// Anything with fewer than 11 characters is masked entirely.
pub fn masked_pan(pan: &str) -> String {
    let digits: Vec<char> = pan.chars().filter(|c| !c.is_whitespace()).collect();
    if digits.len() < 11 {
        return "*".repeat(digits.len());
    }
    let head: String = digits[..6].iter().collect();
    let tail: String = digits[digits.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(digits.len() - 10))
}

// ---------------------------------------------------------------------------------------
// Signed offline QR

const OFFLINE_ORDER_DOMAIN: &[u8] = b"LANEPAY-OFFLINE-ORDER-V1\n";
const CONFIRMATION_DOMAIN: &[u8] = b"LANEPAY-OFFLINE-CONFIRMATION-V1\n";
/// The confirmation QR text starts with this.
pub const CONFIRMATION_PREFIX: &str = "LPC1.";

/// An order a lane shows as a QR while it cannot reach the gateway; signed by the terminal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineOrder {
    pub merchant_id: String,
    pub store_id: String,
    pub terminal_id: String,
    pub out_trade_no: String,
    /// The lane's sequence number for offline orders; with the terminal, unique.
    pub seq: u64,
    pub amount_fen: i64,
    /// ISO 4217; CNY.
    pub currency: String,
    pub expires_at_ms: i64,
}

/// The gateway's word that an offline order was paid; signed by the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineConfirmation {
    pub out_trade_no: String,
    pub terminal_id: String,
    pub amount_fen: i64,
    /// The gateway's id of the order; the sale's tender reference.
    pub trade_no: String,
    pub paid_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfflineQrError {
    #[error("not an offline order URL: {0}")]
    NotAnOrderUrl(&'static str),
    #[error("not a Lanepay payment confirmation")]
    NotAConfirmation,
    #[error("malformed: {0}")]
    Malformed(&'static str),
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the order expired")]
    Expired,
    #[error("the confirmation is for another order ({0})")]
    Mismatch(&'static str),
}

fn sign_domain(domain: &[u8], payload: &[u8], key: &SigningKey) -> Signature {
    let mut bytes = Vec::with_capacity(domain.len() + payload.len());
    bytes.extend_from_slice(domain);
    bytes.extend_from_slice(payload);
    key.sign(&bytes)
}

fn verify_domain(
    domain: &[u8],
    payload: &[u8],
    signature: &Signature,
    key: &VerifyingKey,
) -> Result<(), OfflineQrError> {
    let mut bytes = Vec::with_capacity(domain.len() + payload.len());
    bytes.extend_from_slice(domain);
    bytes.extend_from_slice(payload);
    key.verify_strict(&bytes, signature)
        .map_err(|_| OfflineQrError::BadSignature)
}

fn canonical_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    // Structs of strings and integers always encode; an empty payload would never verify.
    canonical::to_vec(value).unwrap_or_default()
}

fn decode_signature(text: &str) -> Result<Signature, OfflineQrError> {
    let bytes: [u8; 64] = URL_SAFE_NO_PAD
        .decode(text)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(OfflineQrError::Malformed("signature"))?;
    Ok(Signature::from_bytes(&bytes))
}

/// Decodes a base64url canonical-JSON payload; refuses bytes that are not canonical, so one
/// order has one encoding.
fn decode_payload<T: serde::de::DeserializeOwned + Serialize>(
    text: &str,
) -> Result<(T, Vec<u8>), OfflineQrError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| OfflineQrError::Malformed("payload is not base64url"))?;
    let value: T =
        serde_json::from_slice(&bytes).map_err(|_| OfflineQrError::Malformed("payload fields"))?;
    if canonical_bytes(&value) != bytes {
        return Err(OfflineQrError::Malformed("payload is not canonical JSON"));
    }
    Ok((value, bytes))
}

/// The `o` and `s` query values of an offline order URL.
pub fn offline_order_params(order: &OfflineOrder, terminal_key: &SigningKey) -> (String, String) {
    let payload = canonical_bytes(order);
    let signature = sign_domain(OFFLINE_ORDER_DOMAIN, &payload, terminal_key);
    (
        URL_SAFE_NO_PAD.encode(&payload),
        URL_SAFE_NO_PAD.encode(signature.to_bytes()),
    )
}

/// `{base}/pay/offline?o=<b64url canonical JSON>&s=<b64url ed25519 sig>`.
pub fn offline_order_url(
    base_url: &str,
    order: &OfflineOrder,
    terminal_key: &SigningKey,
) -> String {
    let (o, s) = offline_order_params(order, terminal_key);
    format!(
        "{}{OFFLINE_PAY_PATH}?o={o}&s={s}",
        base_url.trim_end_matches('/')
    )
}

/// Reads an offline order's `o` value WITHOUT checking its signature: only to learn which
/// terminal's key to check it with. Trust nothing in it before [`verify_offline_order`].
pub fn peek_offline_order(o: &str) -> Result<OfflineOrder, OfflineQrError> {
    Ok(decode_payload(o)?.0)
}

/// Checks an offline order's `o` and `s` values against the terminal's key.
pub fn verify_offline_order(
    o: &str,
    s: &str,
    terminal_public: &VerifyingKey,
) -> Result<OfflineOrder, OfflineQrError> {
    let (order, payload) = decode_payload::<OfflineOrder>(o)?;
    let signature = decode_signature(s)?;
    verify_domain(OFFLINE_ORDER_DOMAIN, &payload, &signature, terminal_public)?;
    Ok(order)
}

/// The `o` and `s` values of an offline order URL (or of its query string alone).
pub fn offline_order_url_params(url: &str) -> Result<(String, String), OfflineQrError> {
    let query = match url.split_once('?') {
        Some((_, query)) => query,
        None => url,
    };
    let (mut o, mut s) = (None, None);
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("o", value)) if o.is_none() => o = Some(value.to_string()),
            Some(("s", value)) if s.is_none() => s = Some(value.to_string()),
            Some(("o" | "s", _)) => {
                return Err(OfflineQrError::NotAnOrderUrl("repeated parameter"));
            }
            _ => {}
        }
    }
    match (o, s) {
        (Some(o), Some(s)) => Ok((o, s)),
        _ => Err(OfflineQrError::NotAnOrderUrl("needs o= and s=")),
    }
}

/// Parses and verifies a whole offline order URL.
pub fn parse_offline_order_url(
    url: &str,
    terminal_public: &VerifyingKey,
) -> Result<OfflineOrder, OfflineQrError> {
    let (o, s) = offline_order_url_params(url)?;
    verify_offline_order(&o, &s, terminal_public)
}

impl OfflineOrder {
    pub fn check_not_expired(&self, now_ms: i64) -> Result<(), OfflineQrError> {
        if now_ms >= self.expires_at_ms {
            return Err(OfflineQrError::Expired);
        }
        Ok(())
    }
}

/// The confirmation QR text: `LPC1.<b64url canonical JSON>.<b64url signature>`.
pub fn encode_confirmation(confirmation: &OfflineConfirmation, gateway_key: &SigningKey) -> String {
    let payload = canonical_bytes(confirmation);
    let signature = sign_domain(CONFIRMATION_DOMAIN, &payload, gateway_key);
    format!(
        "{CONFIRMATION_PREFIX}{}.{}",
        URL_SAFE_NO_PAD.encode(&payload),
        URL_SAFE_NO_PAD.encode(signature.to_bytes())
    )
}

/// Checks a scanned confirmation's gateway signature. Whether it belongs to the open order,
/// and was not used before, is [`verify_confirmation_for`]'s and the lane's business.
pub fn verify_confirmation(
    text: &str,
    gateway_public: &VerifyingKey,
) -> Result<OfflineConfirmation, OfflineQrError> {
    let rest = text
        .trim()
        .strip_prefix(CONFIRMATION_PREFIX)
        .ok_or(OfflineQrError::NotAConfirmation)?;
    let (payload, signature) = rest
        .split_once('.')
        .ok_or(OfflineQrError::Malformed("needs payload.signature"))?;
    let (confirmation, bytes) = decode_payload::<OfflineConfirmation>(payload)?;
    verify_domain(
        CONFIRMATION_DOMAIN,
        &bytes,
        &decode_signature(signature)?,
        gateway_public,
    )?;
    Ok(confirmation)
}

/// Verifies a confirmation and checks it confirms exactly `order` (terminal, out_trade_no,
/// amount): a confirmation for another order is refused.
pub fn verify_confirmation_for(
    text: &str,
    gateway_public: &VerifyingKey,
    order: &OfflineOrder,
) -> Result<OfflineConfirmation, OfflineQrError> {
    let confirmation = verify_confirmation(text, gateway_public)?;
    if confirmation.terminal_id != order.terminal_id {
        return Err(OfflineQrError::Mismatch("terminal"));
    }
    if confirmation.out_trade_no != order.out_trade_no {
        return Err(OfflineQrError::Mismatch("out_trade_no"));
    }
    if confirmation.amount_fen != order.amount_fen {
        return Err(OfflineQrError::Mismatch("amount"));
    }
    Ok(confirmation)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const PAN: &str = "6212345678901234";

    fn card() -> CardSecret {
        CardSecret {
            pan: PAN.into(),
            expiry_yymm: "2912".into(),
            pan_sequence: Some(1),
            aid_hex: "A000000333010101".into(),
        }
    }

    fn seal_secret(seed: u8) -> [u8; 32] {
        [seed; 32]
    }

    #[test]
    fn sealed_card_opens_with_the_gateway_secret_only() {
        let secret = seal_secret(7);
        let public = card_seal_public_key(&secret);
        let sealed = seal_card(&card(), &public).unwrap();
        assert_eq!(open_card(&sealed, &secret).unwrap(), card());
        assert_eq!(
            open_card(&sealed, &seal_secret(8)).unwrap_err(),
            SealError::DoesNotOpen
        );
        let text = serde_json::to_string(&sealed).unwrap();
        assert!(!text.contains(PAN) && !text.contains("5678901234"));
    }

    #[test]
    fn two_seals_of_one_card_differ() {
        let public = card_seal_public_key(&seal_secret(7));
        let a = seal_card(&card(), &public).unwrap();
        let b = seal_card(&card(), &public).unwrap();
        assert_ne!(a.ephemeral_public, b.ephemeral_public);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn tampered_sealed_card_does_not_open() {
        let secret = seal_secret(7);
        let public = card_seal_public_key(&secret);
        let sealed = seal_card_with(&card(), &public, &[3; 32], [9; 12]).unwrap();
        let mut bytes = hex::decode(&sealed.ciphertext).unwrap();
        bytes[0] ^= 1;
        let flipped = SealedCard {
            ciphertext: hex::encode(&bytes),
            ..sealed.clone()
        };
        assert_eq!(
            open_card(&flipped, &secret).unwrap_err(),
            SealError::DoesNotOpen
        );
        let other_nonce = SealedCard {
            nonce: hex::encode([8u8; 12]),
            ..sealed.clone()
        };
        assert_eq!(
            open_card(&other_nonce, &secret).unwrap_err(),
            SealError::DoesNotOpen
        );
        // Swapping in another ephemeral key changes the shared secret and the HKDF salt.
        let other_ephemeral = SealedCard {
            ephemeral_public: hex::encode(card_seal_public_key(&[4; 32])),
            ..sealed.clone()
        };
        assert_eq!(
            open_card(&other_ephemeral, &secret).unwrap_err(),
            SealError::DoesNotOpen
        );
        let truncated = SealedCard {
            ciphertext: sealed.ciphertext[..20].to_string(),
            ..sealed.clone()
        };
        assert_eq!(
            open_card(&truncated, &secret).unwrap_err(),
            SealError::DoesNotOpen
        );
        let short_key = SealedCard {
            ephemeral_public: "abcd".into(),
            ..sealed
        };
        assert!(matches!(
            open_card(&short_key, &secret).unwrap_err(),
            SealError::Malformed(_)
        ));
    }

    #[test]
    fn sealing_to_a_low_order_point_is_refused() {
        // The all-zero point gives an all-zero shared secret whatever the ephemeral key.
        assert_eq!(
            seal_card(&card(), &[0; 32]).unwrap_err(),
            SealError::WeakKey
        );
        let secret = seal_secret(7);
        let sealed = SealedCard {
            ephemeral_public: hex::encode([0u8; 32]),
            nonce: hex::encode([0u8; 12]),
            ciphertext: hex::encode([0u8; 40]),
        };
        assert_eq!(
            open_card(&sealed, &secret).unwrap_err(),
            SealError::DoesNotOpen
        );
    }

    #[test]
    fn card_debug_masks_the_pan() {
        let text = format!("{:?}", card());
        assert!(!text.contains(PAN), "{text}");
        assert!(text.contains("621234******1234"), "{text}");
        assert!(!text.contains("2912"));
    }

    #[test]
    fn masked_pan_keeps_first_six_and_last_four() {
        assert_eq!(masked_pan("6212345678901234"), "621234******1234");
        assert_eq!(masked_pan("4111111111111111111"), "411111*********1111");
        assert_eq!(masked_pan("1234"), "****");
    }

    #[test]
    fn card_expiry_parses_yymm() {
        assert_eq!(card().expiry(), Some((2029, 12)));
        let mut bad = card();
        bad.expiry_yymm = "2913".into();
        assert_eq!(bad.expiry(), None);
        bad.expiry_yymm = "29x2".into();
        assert_eq!(bad.expiry(), None);
    }

    #[test]
    fn pay_code_debug_hides_the_code() {
        let request = PayCodeRequest {
            out_trade_no: "T1-1-1".into(),
            amount_fen: 100,
            auth_code: "134567890123456789".into(),
            subject: "sale".into(),
        };
        let text = format!("{request:?}");
        assert!(!text.contains("134567890123456789"));
        assert!(text.contains("6789"));
    }

    #[test]
    fn trade_numbers_are_checked() {
        assert!(validate_trade_no("T-01_x").is_ok());
        assert!(validate_trade_no("").is_err());
        assert!(validate_trade_no(&"a".repeat(65)).is_err());
        assert!(validate_trade_no("a b").is_err());
        assert!(validate_trade_no("单").is_err());
    }

    fn order() -> OfflineOrder {
        OfflineOrder {
            merchant_id: "m1".into(),
            store_id: "s1".into(),
            terminal_id: "t1".into(),
            out_trade_no: "t1-7-1".into(),
            seq: 7,
            amount_fen: 1_234,
            currency: "CNY".into(),
            expires_at_ms: 1_000_000,
        }
    }

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn offline_order_url_round_trips() {
        let url = offline_order_url("http://127.0.0.1:9/", &order(), &key(1));
        assert!(
            url.starts_with("http://127.0.0.1:9/pay/offline?o="),
            "{url}"
        );
        let parsed = parse_offline_order_url(&url, &key(1).verifying_key()).unwrap();
        assert_eq!(parsed, order());
        let (o, _) = offline_order_url_params(&url).unwrap();
        assert_eq!(peek_offline_order(&o).unwrap().terminal_id, "t1");
        assert!(order().check_not_expired(999_999).is_ok());
        assert_eq!(
            order().check_not_expired(1_000_000).unwrap_err(),
            OfflineQrError::Expired
        );
    }

    #[test]
    fn offline_order_with_another_key_or_changed_amount_is_refused() {
        let url = offline_order_url("http://127.0.0.1:9", &order(), &key(1));
        assert_eq!(
            parse_offline_order_url(&url, &key(2).verifying_key()).unwrap_err(),
            OfflineQrError::BadSignature
        );
        let (_, s) = offline_order_url_params(&url).unwrap();
        let mut more = order();
        more.amount_fen = 1;
        let o = URL_SAFE_NO_PAD.encode(canonical::to_vec(&more).unwrap());
        assert_eq!(
            verify_offline_order(&o, &s, &key(1).verifying_key()).unwrap_err(),
            OfflineQrError::BadSignature
        );
        // The same order in non-canonical JSON (spaces) is refused before the signature.
        let spaced = serde_json::to_vec_pretty(&order()).unwrap();
        let o = URL_SAFE_NO_PAD.encode(spaced);
        assert!(matches!(
            verify_offline_order(&o, &s, &key(1).verifying_key()).unwrap_err(),
            OfflineQrError::Malformed(_)
        ));
        assert!(matches!(
            parse_offline_order_url("http://x/pay/offline?o=abc", &key(1).verifying_key()),
            Err(OfflineQrError::NotAnOrderUrl(_))
        ));
        assert!(matches!(
            verify_offline_order("!!", "??", &key(1).verifying_key()),
            Err(OfflineQrError::Malformed(_))
        ));
    }

    fn confirmation() -> OfflineConfirmation {
        OfflineConfirmation {
            out_trade_no: "t1-7-1".into(),
            terminal_id: "t1".into(),
            amount_fen: 1_234,
            trade_no: "2026112200000001".into(),
            paid_at_ms: 500_000,
        }
    }

    #[test]
    fn confirmation_verifies_with_the_gateway_key_only() {
        let text = encode_confirmation(&confirmation(), &key(9));
        assert!(text.starts_with("LPC1."));
        assert_eq!(
            verify_confirmation(&text, &key(9).verifying_key()).unwrap(),
            confirmation()
        );
        assert_eq!(
            verify_confirmation(&text, &key(1).verifying_key()).unwrap_err(),
            OfflineQrError::BadSignature
        );
        // An order URL signed by the terminal is not a confirmation.
        assert_eq!(
            verify_confirmation("http://x/pay/offline?o=a&s=b", &key(9).verifying_key())
                .unwrap_err(),
            OfflineQrError::NotAConfirmation
        );
    }

    #[test]
    fn tampered_confirmation_is_refused() {
        let text = encode_confirmation(&confirmation(), &key(9));
        let (_, signature) = text.rsplit_once('.').unwrap();
        let mut richer = confirmation();
        richer.amount_fen = 999_999;
        let forged = format!(
            "LPC1.{}.{signature}",
            URL_SAFE_NO_PAD.encode(canonical::to_vec(&richer).unwrap())
        );
        assert_eq!(
            verify_confirmation(&forged, &key(9).verifying_key()).unwrap_err(),
            OfflineQrError::BadSignature
        );
        // A terminal-order signature does not pass as a confirmation (domain separation).
        let payload = canonical::to_vec(&confirmation()).unwrap();
        let cross = sign_domain(OFFLINE_ORDER_DOMAIN, &payload, &key(9));
        let cross = format!(
            "LPC1.{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(cross.to_bytes())
        );
        assert_eq!(
            verify_confirmation(&cross, &key(9).verifying_key()).unwrap_err(),
            OfflineQrError::BadSignature
        );
        assert!(matches!(
            verify_confirmation("LPC1.nodot", &key(9).verifying_key()),
            Err(OfflineQrError::Malformed(_))
        ));
    }

    #[test]
    fn confirmation_for_another_order_is_refused() {
        let text = encode_confirmation(&confirmation(), &key(9));
        let gateway = key(9).verifying_key();
        assert!(verify_confirmation_for(&text, &gateway, &order()).is_ok());
        let mut next = order();
        next.out_trade_no = "t1-8-1".into();
        next.seq = 8;
        assert_eq!(
            verify_confirmation_for(&text, &gateway, &next).unwrap_err(),
            OfflineQrError::Mismatch("out_trade_no")
        );
        let mut other_lane = order();
        other_lane.terminal_id = "t2".into();
        assert_eq!(
            verify_confirmation_for(&text, &gateway, &other_lane).unwrap_err(),
            OfflineQrError::Mismatch("terminal")
        );
        let mut dearer = order();
        dearer.amount_fen += 1;
        assert_eq!(
            verify_confirmation_for(&text, &gateway, &dearer).unwrap_err(),
            OfflineQrError::Mismatch("amount")
        );
    }

    #[test]
    fn wire_types_keep_their_field_names() {
        let view = PaymentView {
            out_trade_no: "a".into(),
            trade_no: "b".into(),
            pay_type: "card".into(),
            state: state::SUCCESS.into(),
            amount_fen: 5,
            paid_fen: 5,
            pay_url: None,
            paid_at_ms: Some(1),
            failure: None,
        };
        let json = serde_json::to_value(&view).unwrap();
        for field in [
            "out_trade_no",
            "trade_no",
            "pay_type",
            "state",
            "amount_fen",
            "paid_fen",
            "pay_url",
            "paid_at_ms",
            "failure",
        ] {
            assert!(json.get(field).is_some(), "{field}");
        }
        let card_request: Result<CardPaymentRequest, _> = serde_json::from_str(
            r#"{"out_trade_no":"a","amount_fen":1,"card":{"ephemeral_public":"","nonce":"","ciphertext":""},"masked_pan":"x","pan":"1"}"#,
        );
        assert!(card_request.is_err(), "unknown fields are refused");
    }
}
