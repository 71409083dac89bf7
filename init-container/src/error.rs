//! Why one item could not be put in place, and whether trying again may help.
//!
//! The retry loop branches on [`Transient::is_transient`] (HTTP statuses by
//! the shared rule, [`is_transient_status`]); the report prints the error
//! with its causes ([`ferry_io::render_chain`]), so every variant says what
//! failed and what to check.

use std::io;

use ferry_core::Digest;
use ferry_io::{SinkError, Transient, is_transient_status, render_chain};

/// A failure while resolving, fetching, verifying or writing one item.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("access denied: {0}")]
    Denied(String),
    #[error("HTTP {status} from {what}")]
    Status { status: u16, what: String },
    #[error("network error: {0}")]
    Network(String),
    #[error("connection ended after {got} of {expected} bytes")]
    Truncated { got: u64, expected: u64 },
    #[error("the source sent more bytes than the {expected} it announced")]
    TooLong { expected: u64 },
    #[error("timed out after {0}")]
    Timeout(String),
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("refusing unsafe destination {path:?}: {reason}")]
    UnsafePath { path: String, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot unpack the archive")]
    Unpack(#[source] crate::unpack::UnpackError),
    #[error("{0}")]
    Invalid(String),
}

impl Transient for FetchError {
    /// Whether the same request may succeed if tried again: connection
    /// failures, truncated bodies and the statuses [`is_transient_status`]
    /// names (408, 429, most 5xx). Everything else (404, 403, a wrong
    /// digest, a bad path) fails the same way every time.
    fn is_transient(&self) -> bool {
        match self {
            Self::Network(_) | Self::Truncated { .. } => true,
            Self::Status { status, .. } => is_transient_status(*status),
            _ => false,
        }
    }
}

impl From<SinkError> for FetchError {
    fn from(error: SinkError) -> Self {
        match error {
            SinkError::Write { source } => Self::io("writing a temp file", source),
            SinkError::Spawn { thread, source } => {
                Self::io(format!("starting a {thread} thread"), source)
            }
            stopped @ SinkError::Stopped { .. } => Self::Invalid(stopped.to_string()),
        }
    }
}

impl FetchError {
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// Maps an HTTP status that is not a success to an error.
    pub fn from_status(status: u16, what: impl Into<String>, detail: Option<String>) -> Self {
        let what = what.into();
        let what = match detail {
            Some(detail) if !detail.is_empty() => format!("{what} ({detail})"),
            _ => what,
        };
        match status {
            404 | 410 => Self::NotFound(what),
            401 => Self::Denied(format!("{what}: HTTP 401, missing or wrong credentials")),
            403 => Self::Denied(format!("{what}: HTTP 403, credentials lack permission")),
            _ => Self::Status { status, what },
        }
    }

    /// Maps a reqwest error, keeping its cause chain in the message.
    pub fn from_reqwest(error: &reqwest::Error) -> Self {
        let text = render_chain(error);
        if let Some(status) = error.status() {
            return Self::from_status(status.as_u16(), text, None);
        }
        if error.is_timeout() {
            // A stalled connection: worth another attempt with Range.
            return Self::Network(format!("stalled: {text}"));
        }
        if error.is_builder() || error.is_redirect() {
            return Self::Invalid(text);
        }
        Self::Network(text)
    }

    /// Maps an `object_store` error.
    pub fn from_object_store(error: object_store::Error) -> Self {
        use object_store::Error as E;
        match error {
            E::NotFound { path, source } => Self::NotFound(format!("{path}: {source}")),
            E::PermissionDenied { path, source } | E::Unauthenticated { path, source } => {
                Self::Denied(format!("{path}: {source}"))
            }
            E::Generic { store, source } => {
                // The builders report 5xx, throttling and connection failures
                // as Generic (after their own short retries); configuration
                // mistakes surface earlier, when the store is built.
                Self::Network(format!("{store}: {}", render_chain(source.as_ref())))
            }
            other => Self::Invalid(render_chain(&other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_retryable_failures_are_transient() {
        for status in [500, 502, 503, 429, 408] {
            assert!(FetchError::from_status(status, "x", None).is_transient());
        }
        for status in [400, 401, 403, 404, 416, 501, 505, 507] {
            assert!(!FetchError::from_status(status, "x", None).is_transient());
        }
        assert!(
            FetchError::Truncated {
                got: 1,
                expected: 2
            }
            .is_transient()
        );
        let d = Digest::of(b"");
        assert!(
            !FetchError::DigestMismatch {
                expected: d,
                actual: d
            }
            .is_transient()
        );
    }
}
