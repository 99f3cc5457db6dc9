//! The runtime's errors ([`CniError`]). The plugin's own failures are the spec's error JSON
//! ([`crate::types::CniErrorResult`]), built in `plugin.rs`.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

use crate::types::CniErrorResult;

/// Failures of [`crate::Runtime`] operations.
#[derive(Debug, Error)]
pub enum CniError {
    /// The conf dir holds no loadable network configuration.
    #[error("no network config found in {0}")]
    NoConfig(PathBuf),
    /// A file operation (conf dir, cache) failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The attachment's parameters break the spec's rules.
    #[error("invalid attachment: {0}")]
    InvalidAttachment(String),
    /// A plugin `type` names no executable in the bin dirs.
    #[error("failed to find plugin {plugin:?} in path {dirs:?}")]
    PluginNotFound {
        /// The `type`.
        plugin: String,
        /// Where it was looked for.
        dirs: Vec<PathBuf>,
    },
    /// The plugin could not be started or talked to.
    #[error("run plugin {plugin} ({path}): {source}")]
    Exec {
        /// The `type`.
        plugin: String,
        /// The executable.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The plugin did not finish in time (it was killed).
    #[error("plugin {plugin} {command} timed out after {after:?}")]
    Timeout {
        /// The `type`.
        plugin: String,
        /// `ADD`, `DEL` or `CHECK`.
        command: &'static str,
        /// The limit.
        after: Duration,
    },
    /// The plugin failed and said why in the spec's error JSON.
    #[error("plugin {plugin} {command} failed: {error}")]
    Plugin {
        /// The `type`.
        plugin: String,
        /// `ADD`, `DEL` or `CHECK`.
        command: &'static str,
        /// The plugin's error (code, msg, details).
        error: CniErrorResult,
    },
    /// The plugin's output was not what the spec requires (no JSON, or a failure without an
    /// error object).
    #[error("plugin {plugin} {command}: {reason}")]
    BadOutput {
        /// The `type`.
        plugin: String,
        /// `ADD`, `DEL` or `CHECK`.
        command: &'static str,
        /// What was wrong, with the plugin's stderr.
        reason: String,
    },
    /// CHECK for an attachment without a cached ADD result.
    #[error("no cached ADD result for {0}")]
    NoCachedResult(String),
}

impl CniError {
    /// The plugin's error code, when a plugin answered with one.
    pub fn code(&self) -> Option<u32> {
        match self {
            Self::Plugin { error, .. } => Some(error.code),
            _ => None,
        }
    }
}
