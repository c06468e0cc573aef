//! Request, response and notify signatures (seed 004 签名生成规则, issue 3): the parameters
//! except `sign` whose value is not empty, sorted by key (ASCII), joined as `k1=v1&k2=v2`.
//! HMAC-SHA256 appends `&key=SECRET` and signs with the secret as key (uppercase hex; byte
//! compatible with WeChat Pay v2). RSA-SHA256 signs the joined string without the key part with
//! PKCS#1 v1.5 (base64). `docs/gateway-api.md` holds test vectors that a unit test below checks.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{KeyInit as _, Mac as _};
use rsa::pkcs1::DecodeRsaPublicKey as _;
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::{DecodePublicKey as _, EncodePublicKey as _};
use rsa::sha2::Sha256 as RsaSha256Digest;
use rsa::signature::{SignatureEncoding as _, Signer as _, Verifier as _};
use rsa::{RsaPrivateKey, RsaPublicKey};
use thiserror::Error;

/// The parameter that carries the signature; never part of the signed string.
pub const SIGN_PARAM: &str = "sign";
/// The parameter that names the algorithm; signed like any other parameter.
pub const SIGN_TYPE_PARAM: &str = "sign_type";

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The two signing algorithms. A merchant's is pinned at registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignType {
    /// HMAC-SHA256 over `string&key=SECRET`, uppercase hex.
    HmacSha256,
    /// RSA PKCS#1 v1.5 with SHA-256 over the string, base64.
    RsaSha256,
}

impl SignType {
    /// The wire name: `HMAC-SHA256` or `RSA-SHA256`.
    pub fn as_str(self) -> &'static str {
        match self {
            SignType::HmacSha256 => "HMAC-SHA256",
            SignType::RsaSha256 => "RSA-SHA256",
        }
    }
}

impl fmt::Display for SignType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SignType {
    type Err = SignError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "HMAC-SHA256" => Ok(SignType::HmacSha256),
            "RSA-SHA256" => Ok(SignType::RsaSha256),
            other => Err(SignError::UnknownSignType(other.to_owned())),
        }
    }
}

/// Failures of key handling and signing (verification failures are plain `false`).
#[derive(Debug, Error)]
pub enum SignError {
    /// Not `HMAC-SHA256` or `RSA-SHA256`.
    #[error("unknown sign type {0:?}: use HMAC-SHA256 or RSA-SHA256")]
    UnknownSignType(String),
    /// The RSA public key could not be read.
    #[error(
        "cannot read the RSA public key (expected PEM \"PUBLIC KEY\" or \"RSA PUBLIC KEY\", or base64 DER): {0}"
    )]
    PublicKey(String),
    /// The RSA private key could not be read or written.
    #[error("RSA private key: {0}")]
    PrivateKey(String),
    /// The HMAC key was refused (cannot happen for HMAC; kept so nothing panics).
    #[error("HMAC key: {0}")]
    Hmac(String),
    /// RSA signing failed.
    #[error("RSA signing failed: {0}")]
    Rsa(String),
}

/// The string that is signed: non-empty parameters except `sign`, sorted, `k=v` joined by `&`.
pub fn canonical_string(params: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    for (key, value) in params {
        if key == SIGN_PARAM || value.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(key);
        out.push('=');
        out.push_str(value);
    }
    out
}

fn hmac_of(params: &BTreeMap<String, String>, secret: &str) -> Result<HmacSha256, SignError> {
    let string_to_sign = format!("{}&key={secret}", canonical_string(params));
    // HMAC takes keys of any length; the error arm exists only because the trait is generic.
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes())
        .map_err(|error| SignError::Hmac(error.to_string()))?;
    mac.update(string_to_sign.as_bytes());
    Ok(mac)
}

/// HMAC-SHA256 signature: uppercase hex of HMAC(secret, string + "&key=" + secret).
pub fn hmac_sign(params: &BTreeMap<String, String>, secret: &str) -> Result<String, SignError> {
    Ok(hex::encode_upper(
        hmac_of(params, secret)?.finalize().into_bytes(),
    ))
}

/// Checks an HMAC-SHA256 signature in constant time. Hex case is not significant.
pub fn hmac_verify(params: &BTreeMap<String, String>, secret: &str, sign: &str) -> bool {
    let Ok(claimed) = hex::decode(sign) else {
        return false;
    };
    hmac_of(params, secret).is_ok_and(|mac| mac.verify_slice(&claimed).is_ok())
}

/// RSA-SHA256 (PKCS#1 v1.5) signature over the canonical string, base64 (standard, padded).
pub fn rsa_sign(
    params: &BTreeMap<String, String>,
    key: &RsaPrivateKey,
) -> Result<String, SignError> {
    let signing_key = SigningKey::<RsaSha256Digest>::new(key.clone());
    let signature = signing_key
        .try_sign(canonical_string(params).as_bytes())
        .map_err(|error| SignError::Rsa(error.to_string()))?;
    Ok(BASE64.encode(signature.to_bytes()))
}

/// Checks an RSA-SHA256 signature.
pub fn rsa_verify(params: &BTreeMap<String, String>, key: &RsaPublicKey, sign: &str) -> bool {
    let Ok(bytes) = BASE64.decode(sign) else {
        return false;
    };
    let Ok(signature) = Signature::try_from(bytes.as_slice()) else {
        return false;
    };
    VerifyingKey::<RsaSha256Digest>::new(key.clone())
        .verify(canonical_string(params).as_bytes(), &signature)
        .is_ok()
}

/// Reads an RSA public key: PEM `PUBLIC KEY` (SPKI), PEM `RSA PUBLIC KEY` (PKCS#1), or the
/// single-line base64 SPKI DER that `merchant add` prints for the gateway's own key.
pub fn parse_public_key(text: &str) -> Result<RsaPublicKey, SignError> {
    let text = text.trim();
    if text.contains("BEGIN RSA PUBLIC KEY") {
        return RsaPublicKey::from_pkcs1_pem(text).map_err(|e| SignError::PublicKey(e.to_string()));
    }
    if text.contains("BEGIN PUBLIC KEY") {
        return RsaPublicKey::from_public_key_pem(text)
            .map_err(|e| SignError::PublicKey(e.to_string()));
    }
    let der = BASE64
        .decode(text)
        .map_err(|e| SignError::PublicKey(e.to_string()))?;
    RsaPublicKey::from_public_key_der(&der).map_err(|e| SignError::PublicKey(e.to_string()))
}

/// The single-line form of a public key used on the CLI and in docs: base64 of the SPKI DER
/// (the body of a PEM `PUBLIC KEY` block without line breaks).
pub fn public_key_base64_der(key: &RsaPublicKey) -> Result<String, SignError> {
    let der = key
        .to_public_key_der()
        .map_err(|e| SignError::PublicKey(e.to_string()))?;
    Ok(BASE64.encode(der.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs8::DecodePrivateKey as _;

    const API_DOC: &str = include_str!("../../../docs/gateway-api.md");

    /// Reads the fenced block that follows the line `<!-- vector: NAME -->` in the API doc.
    fn doc_block(name: &str) -> String {
        let marker = format!("<!-- vector: {name} -->");
        let start = API_DOC
            .find(&marker)
            .unwrap_or_else(|| panic!("no vector {name}"));
        let rest = &API_DOC[start + marker.len()..];
        let open = rest.find("```").unwrap();
        let body_start = open + rest[open..].find('\n').unwrap() + 1;
        let close = rest[body_start..].find("```").unwrap();
        rest[body_start..body_start + close]
            .trim_end_matches('\n')
            .to_owned()
    }

    fn doc_params() -> BTreeMap<String, String> {
        let json: serde_json::Value = serde_json::from_str(&doc_block("request-json")).unwrap();
        crate::params::from_json_object(&json).unwrap()
    }

    #[test]
    fn documented_hmac_vector_matches_byte_for_byte() {
        let params = doc_params();
        assert_eq!(canonical_string(&params), doc_block("canonical-string"));
        let secret = doc_block("hmac-secret");
        assert_eq!(
            format!("{}&key={secret}", canonical_string(&params)),
            doc_block("hmac-string-to-sign")
        );
        let sign = hmac_sign(&params, &secret).unwrap();
        assert_eq!(sign, doc_block("hmac-sign"));
        assert!(hmac_verify(&params, &secret, &sign));
        assert!(hmac_verify(&params, &secret, &sign.to_lowercase()));
        assert!(!hmac_verify(&params, "other-secret", &sign));
    }

    #[test]
    fn documented_rsa_vector_matches_byte_for_byte() {
        let mut params = doc_params();
        params.insert(SIGN_TYPE_PARAM.to_owned(), "RSA-SHA256".to_owned());
        let private_key = RsaPrivateKey::from_pkcs8_pem(&doc_block("rsa-private-key")).unwrap();
        let public_key = parse_public_key(&doc_block("rsa-public-key")).unwrap();
        assert_eq!(public_key, private_key.to_public_key());
        assert_eq!(canonical_string(&params), doc_block("rsa-canonical-string"));
        let sign = rsa_sign(&params, &private_key).unwrap();
        assert_eq!(sign, doc_block("rsa-sign"));
        assert!(rsa_verify(&params, &public_key, &sign));
        params.insert("total_amount".to_owned(), "88.89".to_owned());
        assert!(!rsa_verify(&params, &public_key, &sign));
    }

    #[test]
    fn empty_values_and_sign_are_left_out() {
        let params: BTreeMap<String, String> = [("b", "2"), ("a", "1"), ("sign", "X"), ("c", "")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(canonical_string(&params), "a=1&b=2");
    }
}
