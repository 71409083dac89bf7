//! Storage: blobs by digest, bundle records, name and token indexes, kept
//! by one [`Backend`]: a local data directory ([`LocalBackend`], the
//! default) or any `object_store` bucket ([`ObjectStoreBackend`]). The keys
//! are the same on both ([`layout`]).
//!
//! Blobs, bundle records and token indexes are written once and never
//! changed (a blob only under its verified digest; a record and a token
//! index under fresh ids), until GC deletes them. The objects that are
//! rewritten are rewritten only by conditional writes: a name claim,
//! `names/<name>.json`, is created if absent and otherwise changed only by
//! compare-and-swap ([`bundles`]), and so is the GC lease. That is why
//! several stateless replicas can serve one bucket whose store keeps
//! conditional writes ([`Store::check_conditional_writes`]).

mod backend;
mod body;
mod bundles;
#[cfg(any(test, feature = "conformance"))]
#[doc(hidden)]
pub mod conformance;
#[cfg(any(test, feature = "conformance"))]
mod conformance_sessions;
mod error;
pub mod layout;
mod local;
mod object;
mod open;
mod replicas;
mod sessions;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use ferry_core::Digest;
use ferry_core::range::ByteRange;
use futures::stream::{StreamExt, TryStreamExt};
use object_store::path::Path;

pub use backend::{
    Backend, BlobBody, BodyLimits, Content, Object, ObjectInfo, OpenBlob, PartData, PutOutcome,
    ReadBlob, UploadBody, Version, WriteMode,
};
pub use bundles::{BundleRecord, CreateError};
pub(crate) use bundles::{NameClaim, Pointer};
pub use error::StoreError;
pub use layout::Prefix;
pub use local::LocalBackend;
pub use object::ObjectStoreBackend;
pub use open::{OpenError, open};
pub use replicas::ConditionalWriteError;
pub use sessions::{ChunkLimits, SessionError, SessionStatus};

/// A stored blob as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    pub digest: Digest,
    pub size: u64,
    pub last_modified: DateTime<Utc>,
}

/// What is under `blobs/`: the blobs, and objects that are not blobs
/// (never deleted by GC; fsck reports them).
#[derive(Debug, Default)]
pub struct BlobListing {
    pub blobs: Vec<BlobInfo>,
    pub strays: Vec<ObjectInfo>,
}

/// The store every route reads and writes.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
}

impl Store {
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self { backend }
    }

    /// For people: `/srv/ferry-data`, `s3://bucket/prefix`.
    pub fn description(&self) -> &str {
        self.backend.description()
    }

    /// Whether the backend answers.
    pub async fn is_reachable(&self) -> Result<(), StoreError> {
        self.backend.probe().await
    }

    /// The digests among `digests` that are not stored, in the order given.
    pub async fn missing(&self, digests: &[Digest]) -> Result<Vec<Digest>, StoreError> {
        Ok(self
            .blob_sizes(digests)
            .await?
            .into_iter()
            .filter_map(|(digest, size)| size.is_none().then_some(digest))
            .collect())
    }

    /// The size of each of `digests` (`None`: not stored), in the order given.
    pub async fn blob_sizes(
        &self,
        digests: &[Digest],
    ) -> Result<Vec<(Digest, Option<u64>)>, StoreError> {
        futures::stream::iter(digests.iter().copied())
            .map(|digest| async move {
                match self.blob_size(&digest).await {
                    Ok(size) => Ok((digest, Some(size))),
                    Err(StoreError::NotFound) => Ok((digest, None)),
                    Err(e) => Err(e),
                }
            })
            .buffered(32)
            .try_collect()
            .await
    }

    /// Whether blob reads may be answered with a URL of the store's own.
    pub fn can_sign(&self) -> bool {
        self.backend.can_sign()
    }

    /// A short-lived URL that reads blob `digest` straight from the store
    /// (a credential: never log it).
    pub async fn signed_blob_url(
        &self,
        digest: &Digest,
        expires_in: std::time::Duration,
    ) -> Result<url::Url, StoreError> {
        self.backend.signed_blob_url(digest, expires_in).await
    }

    /// Size of a stored blob.
    pub async fn blob_size(&self, digest: &Digest) -> Result<u64, StoreError> {
        self.backend.blob_size(digest).await
    }

    /// Stores the body as blob `expected` if its bytes hash to it; any
    /// failure keeps nothing (see [`Backend::put_blob`]).
    pub async fn put_blob(
        &self,
        expected: Digest,
        body: UploadBody<'_>,
        limits: BodyLimits,
    ) -> Result<PutOutcome, StoreError> {
        self.backend.put_blob(expected, body, limits).await
    }

    /// Stores several small blobs already checked against their digests
    /// (see [`Backend::put_blobs`]).
    pub async fn put_blobs(
        &self,
        blobs: Vec<(Digest, bytes::Bytes)>,
        idle_timeout: std::time::Duration,
    ) -> Result<Vec<PutOutcome>, StoreError> {
        self.backend.put_blobs(blobs, idle_timeout).await
    }

    /// Opens blob `digest` for reading; its size is known before any byte
    /// is read, so a caller can answer conditional and range requests first.
    pub async fn open_blob(&self, digest: &Digest) -> Result<OpenBlob, StoreError> {
        self.backend.open_blob(digest).await
    }

    /// Streams blob `digest`, or the `range` of it.
    pub async fn get_blob(
        &self,
        digest: &Digest,
        range: Option<ByteRange>,
    ) -> Result<BlobBody, StoreError> {
        self.open_blob(digest).await?.read(range).await
    }

    /// Deletes a blob (garbage collection only).
    pub async fn delete_blob(&self, digest: &Digest) -> Result<(), StoreError> {
        self.backend.delete_blob(digest).await
    }

    /// Moves a damaged blob to `quarantine/`, where no reader looks.
    pub async fn quarantine_blob(&self, digest: &Digest) -> Result<(), StoreError> {
        self.backend
            .rename(&layout::blob(digest), &layout::quarantine(digest))
            .await
    }

    /// Everything under `blobs/`, sorted into blobs and strays.
    pub async fn list_blobs(&self) -> Result<BlobListing, StoreError> {
        let mut listing = BlobListing::default();
        for object in self.backend.list(Prefix::Blobs).await? {
            match layout::digest_of_blob(&object.key) {
                Some(digest) => listing.blobs.push(BlobInfo {
                    digest,
                    size: object.size,
                    last_modified: object.last_modified,
                }),
                None => listing.strays.push(object),
            }
        }
        Ok(listing)
    }

    /// Uploads in flight, or abandoned by a crash.
    pub async fn list_uploads(&self) -> Result<Vec<ObjectInfo>, StoreError> {
        let mut uploads = self.backend.list(Prefix::Uploads).await?;
        uploads.retain(|upload| layout::upload_id(&upload.key).is_some());
        Ok(uploads)
    }

    /// Deletes an upload a listing showed (garbage collection only).
    pub async fn delete_upload(&self, key: &Path) -> Result<(), StoreError> {
        self.backend.delete_object(key).await
    }

    /// The keys of every object under `prefix`.
    pub async fn list_keys(&self, prefix: Prefix) -> Result<Vec<Path>, StoreError> {
        Ok(self
            .backend
            .list(prefix)
            .await?
            .into_iter()
            .map(|object| object.key)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;

    #[tokio::test]
    async fn the_local_backend_keeps_the_storage_contract() {
        let mut dirs = Vec::new();
        conformance::run(|| {
            let dir = tempfile::tempdir().expect("temp dir");
            let root = dir.path().canonicalize().expect("canonical temp dir");
            dirs.push(dir);
            let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(root).expect("local"));
            std::future::ready(backend)
        })
        .await;
    }

    #[tokio::test]
    async fn the_object_store_backend_keeps_the_storage_contract_in_memory() {
        conformance::run(|| {
            let memory = Arc::new(InMemory::new());
            let backend: Arc<dyn Backend> =
                Arc::new(ObjectStoreBackend::new(memory.clone(), "memory").with_multipart(memory));
            std::future::ready(backend)
        })
        .await;
    }
}
