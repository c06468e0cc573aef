//! TOML text to the private file structs, with errors that name the dotted key and the line.

use std::path::Path;

use serde_path_to_error::Segment;

use crate::error::ConfigError;
use crate::file::AgentFile;

/// Where a reader finds every key and its meaning; named in hints.
const REFERENCE_FILE_NAME: &str = "agent.reference.toml";

/// Parses `text` into the file structs; `path` only names the file in errors.
pub(crate) fn parse_agent_file(text: &str, path: &Path) -> Result<AgentFile, ConfigError> {
    let deserializer =
        toml::de::Deserializer::parse(text).map_err(|error| syntax_error(text, path, &error))?;
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let key = dotted_key(error.path());
        let inner = error.into_inner();
        let line = inner.span().map(|span| line_of_offset(text, span.start));
        let (key, message) = explain(key, inner.message());
        ConfigError::Parse {
            path: path.to_path_buf(),
            key,
            line,
            message,
        }
    })
}

fn syntax_error(text: &str, path: &Path, error: &toml::de::Error) -> ConfigError {
    ConfigError::Parse {
        path: path.to_path_buf(),
        key: String::new(),
        line: error.span().map(|span| line_of_offset(text, span.start)),
        message: format!(
            "invalid TOML: {}; fix the syntax (see {REFERENCE_FILE_NAME} for a valid file)",
            one_line(error.message())
        ),
    }
}

/// `sale.weighted_barcode.prefixes[2]` from the path serde_path_to_error tracked.
fn dotted_key(path: &serde_path_to_error::Path) -> String {
    let mut key = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => key.push_str(&format!("[{index}]")),
            Segment::Map { key: name } | Segment::Enum { variant: name } => {
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(name);
            }
            Segment::Unknown => {
                if !key.is_empty() {
                    key.push('.');
                }
                key.push('?');
            }
        }
    }
    key
}

/// Completes the key for "missing field" errors (serde reports them at the parent table) and
/// adds what to do to the messages serde and toml write.
fn explain(mut key: String, message: &str) -> (String, String) {
    let message = one_line(message);
    if let Some(field) = backquoted_after(&message, "missing field ") {
        if !key.is_empty() {
            key.push('.');
        }
        key.push_str(field);
        let message = format!("{message}; add it (see {REFERENCE_FILE_NAME})");
        return (key, message);
    }
    if message.starts_with("unknown field") {
        let message = format!(
            "{message}; remove it or fix its spelling (every key is listed in {REFERENCE_FILE_NAME})"
        );
        return (key, message);
    }
    if message.starts_with("invalid type") {
        let message = format!("{message}; see {REFERENCE_FILE_NAME} for the expected form");
        return (key, message);
    }
    (key, message)
}

/// The text between backquotes right after `lead`, e.g. `id` in "missing field `id`".
fn backquoted_after<'a>(message: &'a str, lead: &str) -> Option<&'a str> {
    let rest = message.strip_prefix(lead)?.strip_prefix('`')?;
    let end = rest.find('`')?;
    rest.get(..end)
}

/// toml writes some messages over several lines; a log line wants one.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// 1-based line of a byte offset; offsets past the end count as the last line.
fn line_of_offset(text: &str, byte_offset: usize) -> usize {
    let end = byte_offset.min(text.len());
    let newlines = text.as_bytes().get(..end).map_or(0, |before| {
        before.iter().filter(|byte| **byte == b'\n').count()
    });
    newlines + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_numbers_are_one_based_and_clamped() {
        assert_eq!(line_of_offset("a\nb\nc", 0), 1);
        assert_eq!(line_of_offset("a\nb\nc", 2), 2);
        assert_eq!(line_of_offset("a\nb\nc", 4), 3);
        assert_eq!(line_of_offset("a\nb\nc", 999), 3);
    }

    #[test]
    fn missing_field_key_is_completed() {
        let (key, message) = explain("terminal".to_owned(), "missing field `id`");
        assert_eq!(key, "terminal.id");
        assert!(message.contains("add it"));
        let (key, _) = explain(String::new(), "missing field `terminal`");
        assert_eq!(key, "terminal");
    }
}
