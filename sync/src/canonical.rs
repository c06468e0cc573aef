//! Canonical JSON: one byte sequence per value, so that a signature over it can be checked by
//! any implementation that re-encodes the same value.
//!
//! Rules (also in `docs/journal.md`): UTF-8; no whitespace; object keys sorted by their UTF-8
//! bytes, no duplicates; numbers are integers only (amounts are fen); strings escape `"` and
//! `\` with a backslash, the control characters U+0008, U+0009, U+000A, U+000C, U+000D as
//! `\b \t \n \f \r`, other control characters below U+0020 as `\u00XX` (lowercase hex), and
//! nothing else; `true`, `false`, `null` as usual.

use serde::Serialize;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum CanonicalError {
    #[error("value cannot be encoded as JSON: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("canonical JSON allows integers only; found {0}")]
    NonInteger(String),
    #[error("bytes are not canonical JSON: {0}")]
    NotCanonical(&'static str),
}

/// Encodes a serialisable value canonically.
pub fn to_vec<T: Serialize>(value: &T) -> Result<Vec<u8>, CanonicalError> {
    let value = serde_json::to_value(value)?;
    encode_value(&value)
}

/// Encodes a JSON value canonically.
pub fn encode_value(value: &Value) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::with_capacity(256);
    write_value(value, &mut out)?;
    Ok(out)
}

// Written out by hand rather than left to serde_json's writer: key order must not depend on
// whether some crate in the build turns on serde_json's `preserve_order` feature.
fn write_value(value: &Value, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) if n.is_i64() || n.is_u64() => {
            out.extend_from_slice(n.to_string().as_bytes())
        }
        Value::Number(n) => return Err(CanonicalError::NonInteger(n.to_string())),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(key, out);
                out.push(b':');
                write_value(item, out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn write_string(text: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for ch in text.chars() {
        match ch {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            '\r' => out.extend_from_slice(b"\\r"),
            c if (c as u32) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes())
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// Checks that `bytes` are the canonical encoding of the value they hold.
pub fn check(bytes: &[u8]) -> Result<Value, CanonicalError> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|_| CanonicalError::NotCanonical("not JSON"))?;
    if encode_value(&value)? != bytes {
        return Err(CanonicalError::NotCanonical(
            "differs from its canonical re-encoding",
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_sorted_and_whitespace_dropped() {
        let bytes = encode_value(&json!({"b": 1, "a": [true, null], "A": "x"})).unwrap();
        assert_eq!(bytes, br#"{"A":"x","a":[true,null],"b":1}"#);
    }

    #[test]
    fn escapes_are_the_documented_ones() {
        let bytes = encode_value(&json!({"s": "q\"b\\\u{8}\t\n\u{c}\r\u{1}/é中"})).unwrap();
        assert_eq!(
            bytes,
            "{\"s\":\"q\\\"b\\\\\\b\\t\\n\\f\\r\\u0001/é中\"}".as_bytes()
        );
    }

    #[test]
    fn floats_are_refused_and_non_canonical_bytes_detected() {
        assert!(matches!(
            encode_value(&json!({"x": 1.5})),
            Err(CanonicalError::NonInteger(_))
        ));
        assert!(check(br#"{"a":1}"#).is_ok());
        assert!(check(br#"{ "a":1}"#).is_err());
        assert!(check(br#"{"b":1,"a":2}"#).is_err());
        assert!(check(b"\xff").is_err());
    }
}
