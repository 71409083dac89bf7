//! Storage: blobs by digest, bundle records, name and token indexes, all as
//! objects in one `object_store` (local disk by default, or a cloud bucket).
//!
//! Layout under the store's root:
//!
//! | object | content |
//! |---|---|
//! | `blobs/sha256/<2 hex>/<64 hex>` | blob bytes, visible only once verified |
//! | `uploads/<uuid>` | an upload in flight; renamed into `blobs/` when its digest checks out |
//! | `bundles/<id>.json` | a bundle record: manifest plus the hash of its read token |
//! | `names/<name>.json` | `{"id": ...}`: which bundle a name points to |
//! | `tokens/<sha256 of token>.json` | `{"id": ...}`: which bundle a read token opens |
//!
//! Every object is immutable once written, so several stateless replicas can
//! serve one bucket.

mod blobs;
mod bundles;
mod chunks;
mod open;
mod small;
mod upload;

use std::path::PathBuf;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::path::Path;

pub(crate) use blobs::push_hex;
pub use blobs::{BlobBody, Content, OpenBlob, PutOutcome};
pub(crate) use bundles::Pointer;
pub use bundles::{BundleRecord, CreateError};
pub use open::open;

/// Errors of the storage layer that callers branch on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
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
    #[error("client connection failed mid-body: {0}")]
    Body(String),
    #[error("storage is full: {0}")]
    Full(String),
    #[error("storage error: {0}")]
    Backend(#[from] object_store::Error),
    #[error("corrupt record {path}: {reason}")]
    Corrupt { path: String, reason: String },
}

impl StoreError {
    /// Classifies an `object_store` error: not-found and disk-full are
    /// answers a client can act on, the rest are backend failures.
    pub fn from_backend(error: object_store::Error) -> Self {
        if matches!(error, object_store::Error::NotFound { .. }) {
            return Self::NotFound;
        }
        if is_storage_full(&error) {
            return Self::Full(error.to_string());
        }
        Self::Backend(error)
    }
}

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
        if e.to_string().contains("No space left on device") {
            return true;
        }
        source = e.source();
    }
    false
}

/// The store every route reads and writes.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    /// For local data: the directory objects live under, so blob reads can
    /// stream from the file directly with large buffers.
    local_root: Option<PathBuf>,
    /// Multipart chunk size for uploads.
    chunk_size: usize,
    /// Small local blobs read recently.
    small: Arc<small::SmallBlobs>,
    /// Human description (`/srv/ferry-data`, `s3://bucket/prefix`).
    description: String,
}

impl Store {
    pub fn new(
        inner: Arc<dyn ObjectStore>,
        local_root: Option<PathBuf>,
        description: String,
    ) -> Self {
        let chunk_size = if local_root.is_some() {
            1 << 20
        } else {
            8 << 20
        };
        Self {
            inner,
            local_root,
            chunk_size,
            small: Arc::default(),
            description,
        }
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    pub fn local_root(&self) -> Option<&std::path::Path> {
        self.local_root.as_deref()
    }

    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    /// Whether the backend answers: a HEAD of an object that need not exist.
    pub async fn is_reachable(&self) -> Result<(), StoreError> {
        use object_store::ObjectStoreExt;
        match self.inner.head(&Path::from("readyz-probe")).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StoreError::Backend(e)),
        }
    }
}
