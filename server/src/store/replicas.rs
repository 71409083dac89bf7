//! What writers that run at once (replicas on one bucket, or a GC sweep and
//! a bundle creation in one process) need from the store beyond records:
//! the marks a sweep puts on blobs it is about to delete, and the start-up
//! check that the store really keeps conditional writes.

use std::collections::HashSet;

use bytes::Bytes;
use ferry_core::Digest;
use futures::stream::{StreamExt, TryStreamExt};

use super::backend::{Object, Version, WriteMode};
use super::layout::{self, Prefix};
use super::{Store, StoreError};

/// Marks written or removed at once.
const MARK_CONCURRENCY: usize = 16;

/// Why a store cannot serve several replicas.
#[derive(Debug, thiserror::Error)]
pub enum ConditionalWriteError {
    /// The store answered, but not as a store with conditional writes does.
    #[error("{store} {problem}; several replicas cannot keep bundle names unique on it")]
    Missing { store: String, problem: String },
    /// The store did not answer; nothing is known yet.
    #[error("could not check {store} for conditional writes: {source}")]
    Unreachable {
        store: String,
        #[source]
        source: StoreError,
    },
}

impl Store {
    /// Reads a small object and its version (the GC lease).
    pub async fn read_small_object(
        &self,
        key: &object_store::path::Path,
    ) -> Result<Object, StoreError> {
        self.backend.read_object(key).await
    }

    /// Writes a small object whole, conditionally or not (the GC lease).
    pub async fn write_small_object(
        &self,
        key: &object_store::path::Path,
        bytes: Bytes,
        mode: WriteMode,
    ) -> Result<Version, StoreError> {
        self.backend.write_object(key, bytes, mode).await
    }

    /// Marks `digests` as about to be deleted by a sweep.
    pub async fn condemn(&self, digests: &[Digest]) -> Result<(), StoreError> {
        futures::stream::iter(digests.iter().copied())
            .map(|digest| async move {
                self.backend
                    .write_object(
                        &layout::condemned(&digest),
                        Bytes::new(),
                        WriteMode::Overwrite,
                    )
                    .await
                    .map(|_| ())
            })
            .buffer_unordered(MARK_CONCURRENCY)
            .try_collect::<()>()
            .await
    }

    /// Removes the marks of `digests`.
    pub async fn pardon(&self, digests: &[Digest]) -> Result<(), StoreError> {
        futures::stream::iter(digests.iter().copied())
            .map(|digest| async move {
                self.backend
                    .delete_object(&layout::condemned(&digest))
                    .await
            })
            .buffer_unordered(MARK_CONCURRENCY)
            .try_collect::<()>()
            .await
    }

    /// The blobs a sweep has marked (normally none: one `LIST` of an empty
    /// prefix).
    pub async fn condemned(&self) -> Result<HashSet<Digest>, StoreError> {
        Ok(self
            .list_keys(Prefix::Condemned)
            .await?
            .iter()
            .filter_map(layout::digest_of_condemned)
            .collect())
    }

    /// Checks, on an object of its own, that the store refuses a second
    /// create-if-absent and a compare-and-swap on a stale version, and
    /// accepts one on the current version: what keeps names unique and the
    /// GC lease single when several replicas share the store. Some
    /// S3-compatible stores ignore `If-None-Match` and `If-Match` silently;
    /// this is how they are caught before they race.
    pub async fn check_conditional_writes(&self) -> Result<(), ConditionalWriteError> {
        let key = layout::write_check();
        let result = self.try_conditional_writes(&key).await;
        // Best effort: a leftover check object is a few bytes nobody reads.
        let _ = self.backend.delete_object(&key).await;
        result
    }

    async fn try_conditional_writes(
        &self,
        key: &object_store::path::Path,
    ) -> Result<(), ConditionalWriteError> {
        let store = self.description().to_owned();
        let missing = |problem: &str| ConditionalWriteError::Missing {
            store: store.clone(),
            problem: problem.to_owned(),
        };
        let unreachable = |source| ConditionalWriteError::Unreachable {
            store: store.clone(),
            source,
        };
        let write = |body: &'static [u8], mode| {
            self.backend
                .write_object(key, Bytes::from_static(body), mode)
        };
        let first = match write(b"{\"check\":1}", WriteMode::Create).await {
            Ok(version) => version,
            Err(StoreError::Unsupported(_)) => {
                return Err(missing("cannot create an object only if it is absent"));
            }
            Err(e) => return Err(unreachable(e)),
        };
        match write(b"{\"check\":2}", WriteMode::Create).await {
            Err(StoreError::AlreadyExists { .. }) => {}
            Ok(_) => {
                return Err(missing(
                    "overwrote an object that a create-if-absent write (If-None-Match: *) should have refused",
                ));
            }
            Err(StoreError::Unsupported(_)) => {
                return Err(missing("cannot create an object only if it is absent"));
            }
            Err(e) => return Err(unreachable(e)),
        }
        let stale = Version {
            e_tag: Some("\"ferry-stale-version\"".into()),
            // GCS compares generations, which are numbers; no real one is 1.
            version: Some("1".into()),
        };
        match write(b"{\"check\":3}", WriteMode::Update(stale)).await {
            Err(StoreError::VersionMismatch { .. }) => {}
            Ok(_) => {
                return Err(missing(
                    "replaced an object whose version did not match (If-Match was ignored)",
                ));
            }
            Err(StoreError::Unsupported(_)) => {
                return Err(missing(
                    "cannot replace an object only at the version read (compare-and-swap)",
                ));
            }
            Err(e) => return Err(unreachable(e)),
        }
        match write(b"{\"check\":4}", WriteMode::Update(first)).await {
            Ok(_) => Ok(()),
            Err(StoreError::VersionMismatch { .. }) => Err(missing(
                "refused a compare-and-swap at the version it had just returned",
            )),
            Err(StoreError::Unsupported(_)) => Err(missing(
                "cannot replace an object only at the version read (compare-and-swap)",
            )),
            Err(e) => Err(unreachable(e)),
        }
    }
}
