//! The storage layer's one error type, and the only places that turn a
//! backend's errors into it: [`StoreError::from_io`] for the file system,
//! [`StoreError::from_object_store`] for `object_store` (whose errors may
//! wrap I/O errors of its own local backend), [`StoreError::from_join`] for
//! work handed to another thread.

/// Errors of the storage layer that callers branch on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A create-if-absent write found the object already there.
    #[error("{key} already exists")]
    AlreadyExists { key: String },
    /// A compare-and-swap write found another version than the one it was
    /// given: someone else wrote the object in between.
    #[error("{key} changed since it was read")]
    VersionMismatch { key: String },
    #[error("digest mismatch: expected {expected}, received {actual}")]
    DigestMismatch {
        expected: ferry_core::Digest,
        actual: ferry_core::Digest,
    },
    #[error("body exceeds the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("body ended after {received} of {expected} bytes")]
    Truncated { expected: u64, received: u64 },
    #[error("client stopped sending for {0:?}")]
    Stalled(std::time::Duration),
    /// The client's connection failed mid-body (the client's fault).
    #[error("client connection failed mid-body: {0}")]
    Body(String),
    #[error("storage is full: {0}")]
    Full(String),
    /// The backend cannot do this operation (a store without conditional
    /// writes asked for a compare-and-swap, say).
    #[error("storage cannot do this: {0}")]
    Unsupported(String),
    #[error("storage error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("corrupt record {path}: {reason}")]
    Corrupt { path: String, reason: String },
    /// The server failed itself: a task that could not be joined, a thread
    /// that panicked. Never the client's fault.
    #[error("internal failure: {0}")]
    Internal(String),
}

impl StoreError {
    /// Classifies a file-system error: a missing file is `NotFound`, a full
    /// disk or quota `Full`, the rest backend failures.
    pub fn from_io(error: std::io::Error) -> Self {
        if error.kind() == std::io::ErrorKind::NotFound {
            return Self::NotFound;
        }
        if is_storage_full(&error) {
            return Self::Full(error.to_string());
        }
        Self::Backend(Box::new(error))
    }

    /// Classifies an `object_store` error: answers a caller can act on get
    /// their own variant; a full disk under its local backend is `Full`.
    pub fn from_object_store(error: object_store::Error) -> Self {
        match error {
            object_store::Error::NotFound { .. } => Self::NotFound,
            object_store::Error::AlreadyExists { path, .. } => Self::AlreadyExists { key: path },
            object_store::Error::Precondition { path, .. } => Self::VersionMismatch { key: path },
            object_store::Error::NotImplemented { operation, .. } => Self::Unsupported(operation),
            error if is_storage_full(&error) => Self::Full(error.to_string()),
            error => Self::Backend(Box::new(error)),
        }
    }

    /// A task handed to another thread that did not come back (it panicked
    /// or the runtime is shutting down).
    pub fn from_join(what: &str, error: tokio::task::JoinError) -> Self {
        Self::Internal(format!("{what}: {error}"))
    }
}

/// Whether `error` or anything it wraps says the disk or the quota is full.
fn is_storage_full(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && (matches!(
                io.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ) || matches!(io.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)))
        {
            return true;
        }
        // Some layers keep only the message of the error they wrap.
        if e.to_string().contains("No space left on device") {
            return true;
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_or_quota_is_full_however_it_is_wrapped() {
        for errno in [libc::ENOSPC, libc::EDQUOT] {
            let io = std::io::Error::from_raw_os_error(errno);
            assert!(matches!(StoreError::from_io(io), StoreError::Full(_)));
            let wrapped = object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(std::io::Error::from_raw_os_error(errno)),
            };
            assert!(matches!(
                StoreError::from_object_store(wrapped),
                StoreError::Full(_)
            ));
        }
        let other = std::io::Error::from_raw_os_error(libc::EIO);
        assert!(matches!(StoreError::from_io(other), StoreError::Backend(_)));
    }

    #[test]
    fn answers_a_caller_acts_on_keep_their_own_variant() {
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert!(matches!(StoreError::from_io(missing), StoreError::NotFound));
        let exists = object_store::Error::AlreadyExists {
            path: "names/a.json".into(),
            source: "exists".into(),
        };
        assert!(matches!(
            StoreError::from_object_store(exists),
            StoreError::AlreadyExists { key } if key == "names/a.json"
        ));
        let changed = object_store::Error::Precondition {
            path: "names/a.json".into(),
            source: "etag".into(),
        };
        assert!(matches!(
            StoreError::from_object_store(changed),
            StoreError::VersionMismatch { .. }
        ));
    }

    #[tokio::test]
    async fn a_task_that_panicked_is_an_internal_failure() {
        let join = tokio::task::spawn_blocking(|| panic!("writer thread died"))
            .await
            .unwrap_err();
        let error = StoreError::from_join("upload writer", join);
        assert!(
            matches!(&error, StoreError::Internal(m) if m.starts_with("upload writer")),
            "{error:?}"
        );
    }
}
