//! The one error type of the crate: every failure names the file, the key and what to do.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Why a configuration could not be loaded, validated or written.
///
/// Every variant carries the path of the configuration file so a message printed by the agent
/// (`lanepay: {error}`) is enough for a store technician to find and fix the problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file itself could not be read.
    #[error(
        "{}: cannot read the configuration file: {source}; check the path and that the lane agent may read it",
        path.display()
    )]
    Read {
        /// The configuration file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },

    /// The file is not valid TOML, has a key the agent does not know, or a value of the wrong
    /// type or form.
    #[error("{}", ParseMessage { path, key, line: *line, message })]
    Parse {
        /// The configuration file.
        path: PathBuf,
        /// Dotted path of the offending key, e.g. `sale.tax_mode`; empty for TOML syntax errors
        /// that precede any key.
        key: String,
        /// 1-based line number when the TOML parser reported where the problem is.
        line: Option<usize>,
        /// What is wrong and what to write instead.
        message: String,
    },

    /// The file parsed, but a value breaks a rule (out of range, not loopback, both or neither
    /// of two alternatives, and so on).
    #[error("{}: key `{key}`: {message}", path.display())]
    Invalid {
        /// The configuration file.
        path: PathBuf,
        /// Dotted path of the offending key, e.g. `local_api.listen`.
        key: String,
        /// What is wrong and what to write instead.
        message: String,
    },

    /// `local_api.token_file` names a file that could not be read.
    #[error(
        "{}: key `local_api.token_file`: cannot read the token file {}: {source}; create it with a token of at least 16 characters, or set `local_api.token` instead",
        path.display(),
        token_path.display()
    )]
    ReadTokenFile {
        /// The configuration file.
        path: PathBuf,
        /// The token file, resolved against the configuration file's directory.
        token_path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },

    /// The configuration could not be written out as TOML (a bug, not a user error).
    #[error("cannot write the configuration as TOML: {message}")]
    Serialize {
        /// What the TOML writer said.
        message: String,
    },
}

impl ConfigError {
    /// The dotted key the error is about, when there is one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Parse { key, .. } | ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::ReadTokenFile { .. } => Some("local_api.token_file"),
            ConfigError::Read { .. } | ConfigError::Serialize { .. } => None,
        }
    }

    pub(crate) fn invalid(path: &Path, key: &str, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// Formats a [`ConfigError::Parse`] so that a missing key or line reads naturally.
struct ParseMessage<'a> {
    path: &'a Path,
    key: &'a str,
    line: Option<usize>,
    message: &'a str,
}

impl fmt::Display for ParseMessage<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}", self.path.display())?;
        if !self.key.is_empty() {
            write!(formatter, ": key `{}`", self.key)?;
        }
        if let Some(line) = self.line {
            write!(formatter, " (line {line})")?;
        }
        write!(formatter, ": {}", self.message)
    }
}
