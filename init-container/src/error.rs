//! Why one item could not be put in place, and whether trying again may help.
//!
//! The retry loop branches on [`FetchError::is_transient`]; the report prints
//! the `Display` form, so every variant says what failed and what to check.

use std::io;

use ferry_core::Digest;

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
    #[error("{0}")]
    Invalid(String),
}

impl FetchError {
    /// Whether the same request may succeed if tried again: connection
    /// failures, 5xx, 429, 408 and truncated bodies. Everything else (404,
    /// 403, a wrong digest, a bad path) fails the same way every time.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Network(_) | Self::Truncated { .. } => true,
            Self::Status { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            _ => false,
        }
    }

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
        let mut text = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
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
                Self::Network(format!("{store}: {}", chain(source.as_ref())))
            }
            other => Self::Invalid(chain(&other)),
        }
    }
}

/// `error: cause: cause...`, so a wrapped error keeps its root cause.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_retryable_failures_are_transient() {
        for status in [500, 502, 503, 429, 408] {
            assert!(FetchError::from_status(status, "x", None).is_transient());
        }
        for status in [400, 401, 403, 404, 416] {
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
