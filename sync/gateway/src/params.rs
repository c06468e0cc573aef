//! Request parameters as the signature sees them: a flat JSON object whose values are strings,
//! integers or booleans, rendered to the exact text that is signed. Nested values and floats are
//! refused because they have no single canonical text (a float would also smuggle imprecise
//! money in).

use std::collections::BTreeMap;

use serde_json::Value;
use thiserror::Error;

/// The longest parameter name we accept; real names are short.
const MAX_KEY_LEN: usize = 64;
/// The longest parameter value we accept (subject and body included).
const MAX_VALUE_LEN: usize = 2_048;

/// Why a request body is not a valid parameter object.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParamsError {
    /// The body is not a JSON object.
    #[error("the body must be a JSON object of parameters")]
    NotAnObject,
    /// A key is not `[a-z0-9_]{1,64}`.
    #[error("parameter name {0:?} is invalid: use lowercase letters, digits and _ (at most 64)")]
    BadKey(String),
    /// A value is an object, array or non-integer number.
    #[error(
        "parameter {0:?} must be a string, an integer or a boolean (amounts are strings like \"12.34\")"
    )]
    BadValue(String),
    /// A value is longer than the limit.
    #[error("parameter {0:?} is longer than 2048 characters")]
    TooLong(String),
}

/// Renders one JSON value as signed text; `None` for values that are never valid.
fn render(value: &Value) -> Option<String> {
    match value {
        Value::Null => Some(String::new()),
        Value::String(text) => Some(text.clone()),
        Value::Bool(flag) => Some(flag.to_string()),
        Value::Number(number) if number.is_i64() || number.is_u64() => Some(number.to_string()),
        Value::Number(_) | Value::Array(_) | Value::Object(_) => None,
    }
}

/// Flattens a request body into the parameter map (null renders as empty and so is unsigned).
pub fn from_json_object(value: &Value) -> Result<BTreeMap<String, String>, ParamsError> {
    let Value::Object(object) = value else {
        return Err(ParamsError::NotAnObject);
    };
    let mut params = BTreeMap::new();
    for (key, value) in object {
        let key_ok = !key.is_empty()
            && key.len() <= MAX_KEY_LEN
            && key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !key_ok {
            return Err(ParamsError::BadKey(key.clone()));
        }
        let text = render(value).ok_or_else(|| ParamsError::BadValue(key.clone()))?;
        if text.chars().count() > MAX_VALUE_LEN {
            return Err(ParamsError::TooLong(key.clone()));
        }
        params.insert(key.clone(), text);
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_scalars_and_refuses_the_rest() {
        let params =
            from_json_object(&json!({"a": "x", "b": 1_730_000_000_000_i64, "c": true, "d": null}))
                .unwrap();
        assert_eq!(params["b"], "1730000000000");
        assert_eq!(params["c"], "true");
        assert_eq!(params["d"], "");
        assert_eq!(
            from_json_object(&json!({"total_amount": 1.5})),
            Err(ParamsError::BadValue("total_amount".into()))
        );
        assert_eq!(
            from_json_object(&json!({"A": "x"})),
            Err(ParamsError::BadKey("A".into()))
        );
        assert_eq!(from_json_object(&json!([1])), Err(ParamsError::NotAnObject));
    }
}
