//! The [`Backend`] over any `object_store`: S3, GCS, Azure, or the in-memory
//! store tests use.
//!
//! An upload streams into a multipart upload at `uploads/<uuid>`, hashed
//! as it goes; once the digest matches, the object is renamed to its blob
//! key (a copy and a delete on most clouds), so no reader ever sees a
//! partial or wrong blob.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use ferry_core::range::ByteRange;
use ferry_core::{Digest, Sha256Hasher};
use futures::stream::{StreamExt, TryStreamExt};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{
    GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    UpdateVersion, WriteMultipart,
};

use super::backend::{
    Backend, BodyLimits, Content, Object, ObjectInfo, OpenBlob, PartData, PutOutcome, ReadBlob,
    UploadBody, Version, WriteMode,
};
use super::layout::{self, Prefix};
use super::{StoreError, body};

/// Multipart part size: S3 wants at least 5 MiB per part but the last.
const CHUNK_SIZE: usize = 8 << 20;
/// The smallest part S3 takes (but the last); GCS and Azure take any.
const MIN_PART_SIZE: u64 = 5 << 20;
/// How many multipart parts of one upload may be in flight at once.
const UPLOAD_CONCURRENCY: usize = 2;

/// Storage in an `object_store`.
#[derive(Clone)]
pub struct ObjectStoreBackend {
    inner: Arc<dyn ObjectStore>,
    /// The same store's multipart API, for upload sessions (any replica
    /// continues a multipart upload by its id); `None` for a store without
    /// one, which then refuses sessions.
    multipart: Option<Arc<dyn MultipartStore>>,
    description: String,
}

impl std::fmt::Debug for ObjectStoreBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStoreBackend")
            .field("inner", &self.inner)
            .field("multipart", &self.multipart.is_some())
            .field("description", &self.description)
            .finish()
    }
}

impl ObjectStoreBackend {
    pub fn new(inner: Arc<dyn ObjectStore>, description: impl Into<String>) -> Self {
        Self {
            inner,
            multipart: None,
            description: description.into(),
        }
    }

    /// Lets upload sessions write their parts through `multipart` (the
    /// same store as `inner`, seen through its multipart API).
    pub fn with_multipart(mut self, multipart: Arc<dyn MultipartStore>) -> Self {
        self.multipart = Some(multipart);
        self
    }

    fn multipart(&self) -> Result<&Arc<dyn MultipartStore>, StoreError> {
        self.multipart.as_ref().ok_or_else(|| {
            StoreError::Unsupported("upload sessions on a store without a multipart API".into())
        })
    }

    /// Renames a verified upload to its blob key, unless that blob is
    /// already stored (then the upload is dropped).
    async fn publish(
        &self,
        upload: &Path,
        digest: &Digest,
        size: u64,
    ) -> Result<PutOutcome, StoreError> {
        if self.blob_size(digest).await.is_ok() {
            let _ = self.inner.delete(upload).await;
            return Ok(PutOutcome::AlreadyPresent(size));
        }
        // Same digest means same bytes, so a concurrent upload of the same
        // blob that renames first is harmless: either rename leaves the blob whole.
        match self.inner.rename(upload, &layout::blob(digest)).await {
            Ok(()) => Ok(PutOutcome::Created(size)),
            Err(e) => {
                let _ = self.inner.delete(upload).await;
                Err(StoreError::from_object_store(e))
            }
        }
    }

    /// A create-if-absent write for stores without conditional PUT (some
    /// S3-compatible ones): check, then write.
    async fn create_unconditionally(
        &self,
        key: &Path,
        payload: PutPayload,
    ) -> Result<Version, StoreError> {
        match self.inner.head(key).await {
            Ok(_) => Err(StoreError::AlreadyExists {
                key: key.to_string(),
            }),
            Err(object_store::Error::NotFound { .. }) => self
                .inner
                .put(key, payload)
                .await
                .map(|r| Version {
                    e_tag: r.e_tag,
                    version: r.version,
                })
                .map_err(StoreError::from_object_store),
            Err(e) => Err(StoreError::from_object_store(e)),
        }
    }
}

/// Reads the body into `writer`, hashing as it goes; returns the digest and
/// size of what arrived.
async fn receive(
    writer: &mut WriteMultipart,
    body: &mut UploadBody<'_>,
    limits: BodyLimits,
) -> Result<(Digest, u64), StoreError> {
    let mut hasher = Sha256Hasher::new();
    let mut received = 0u64;
    while let Some(chunk) = body::next_chunk(body, &mut received, limits).await? {
        hasher.update(&chunk);
        writer.put(chunk);
        writer
            .wait_for_capacity(UPLOAD_CONCURRENCY)
            .await
            .map_err(StoreError::from_object_store)?;
    }
    let size = hasher.len();
    Ok((hasher.finish(), size))
}

#[async_trait]
impl Backend for ObjectStoreBackend {
    fn description(&self) -> &str {
        &self.description
    }

    async fn put_blob(
        &self,
        expected: Digest,
        mut body: UploadBody<'_>,
        limits: BodyLimits,
    ) -> Result<PutOutcome, StoreError> {
        let upload_key = layout::new_upload();
        let upload = self
            .inner
            .put_multipart(&upload_key)
            .await
            .map_err(StoreError::from_object_store)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, CHUNK_SIZE);
        match receive(&mut writer, &mut body, limits).await {
            Ok((actual, size)) if actual == expected => {
                writer
                    .finish()
                    .await
                    .map_err(StoreError::from_object_store)?;
                self.publish(&upload_key, &expected, size).await
            }
            Ok((actual, _)) => {
                let _ = writer.abort().await;
                Err(StoreError::DigestMismatch { expected, actual })
            }
            Err(e) => {
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }

    async fn blob_size(&self, digest: &Digest) -> Result<u64, StoreError> {
        self.inner
            .head(&layout::blob(digest))
            .await
            .map(|meta| meta.size)
            .map_err(StoreError::from_object_store)
    }

    async fn open_blob(&self, digest: &Digest) -> Result<OpenBlob, StoreError> {
        let key = layout::blob(digest);
        let size = self
            .inner
            .head(&key)
            .await
            .map_err(StoreError::from_object_store)?
            .size;
        let reader = ObjectReader {
            inner: self.inner.clone(),
            key,
        };
        Ok(OpenBlob::new(size, Box::new(reader)))
    }

    async fn delete_blob(&self, digest: &Digest) -> Result<(), StoreError> {
        self.delete_object(&layout::blob(digest)).await
    }

    async fn list(&self, prefix: Prefix) -> Result<Vec<ObjectInfo>, StoreError> {
        self.inner
            .list(Some(&prefix.path()))
            .map_ok(|meta| ObjectInfo {
                key: meta.location,
                size: meta.size,
                last_modified: meta.last_modified,
            })
            .try_collect()
            .await
            .map_err(StoreError::from_object_store)
    }

    async fn read_object(&self, key: &Path) -> Result<Object, StoreError> {
        let result = self
            .inner
            .get(key)
            .await
            .map_err(StoreError::from_object_store)?;
        let version = Version {
            e_tag: result.meta.e_tag.clone(),
            version: result.meta.version.clone(),
        };
        let bytes = result
            .bytes()
            .await
            .map_err(StoreError::from_object_store)?;
        Ok(Object { bytes, version })
    }

    async fn write_object(
        &self,
        key: &Path,
        bytes: Bytes,
        mode: WriteMode,
    ) -> Result<Version, StoreError> {
        let payload = PutPayload::from(bytes);
        let update = matches!(mode, WriteMode::Update(_));
        let put_mode = match mode {
            WriteMode::Create => PutMode::Create,
            WriteMode::Overwrite => PutMode::Overwrite,
            WriteMode::Update(version) => PutMode::Update(UpdateVersion {
                e_tag: version.e_tag,
                version: version.version,
            }),
        };
        let create = put_mode == PutMode::Create;
        let result = self
            .inner
            .put_opts(key, payload.clone(), PutOptions::from(put_mode))
            .await;
        match result {
            Ok(r) => Ok(Version {
                e_tag: r.e_tag,
                version: r.version,
            }),
            Err(object_store::Error::NotImplemented { .. }) if create => {
                self.create_unconditionally(key, payload).await
            }
            Err(e) => Err(match StoreError::from_object_store(e) {
                // A compare-and-swap on an object deleted meanwhile lost the
                // race as surely as one on an object rewritten meanwhile.
                StoreError::NotFound | StoreError::VersionMismatch { .. } if update => {
                    StoreError::VersionMismatch {
                        key: key.to_string(),
                    }
                }
                // Named by its key, not by where the backend keeps it.
                StoreError::AlreadyExists { .. } => StoreError::AlreadyExists {
                    key: key.to_string(),
                },
                other => other,
            }),
        }
    }

    async fn delete_object(&self, key: &Path) -> Result<(), StoreError> {
        match self.inner.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StoreError::from_object_store(e)),
        }
    }

    async fn rename(&self, from: &Path, to: &Path) -> Result<(), StoreError> {
        self.inner
            .rename(from, to)
            .await
            .map_err(StoreError::from_object_store)
    }

    async fn probe(&self) -> Result<(), StoreError> {
        match self.inner.head(&layout::probe()).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StoreError::from_object_store(e)),
        }
    }

    fn min_part_size(&self) -> u64 {
        MIN_PART_SIZE
    }

    async fn create_parts(&self, key: &Path) -> Result<String, StoreError> {
        self.multipart()?
            .create_multipart(key)
            .await
            .map_err(StoreError::from_object_store)
    }

    async fn put_part(&self, key: &Path, id: &str, part: PartData) -> Result<String, StoreError> {
        let payload = PutPayload::from_iter(part.bytes);
        self.multipart()?
            .put_part(key, &id.to_owned(), part.index, payload)
            .await
            .map(|part| part.content_id)
            .map_err(StoreError::from_object_store)
    }

    async fn complete_parts(
        &self,
        key: &Path,
        id: &str,
        parts: Vec<String>,
    ) -> Result<(), StoreError> {
        let parts = parts
            .into_iter()
            .map(|content_id| PartId { content_id })
            .collect();
        self.multipart()?
            .complete_multipart(key, &id.to_owned(), parts)
            .await
            .map(drop)
            .map_err(StoreError::from_object_store)
    }

    async fn abort_parts(&self, key: &Path, id: &str) -> Result<(), StoreError> {
        match self.multipart()?.abort_multipart(key, &id.to_owned()).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StoreError::from_object_store(e)),
        }
    }

    async fn publish_upload(
        &self,
        key: &Path,
        digest: &Digest,
        size: u64,
    ) -> Result<PutOutcome, StoreError> {
        self.publish(key, digest, size).await
    }
}

/// An opened blob in an `object_store`: one GET, of the range asked for.
struct ObjectReader {
    inner: Arc<dyn ObjectStore>,
    key: Path,
}

#[async_trait]
impl ReadBlob for ObjectReader {
    async fn read(
        self: Box<Self>,
        _size: u64,
        range: Option<ByteRange>,
    ) -> Result<Content, StoreError> {
        let options =
            GetOptions::new().with_range(range.map(|r| GetRange::Bounded(r.start..r.end + 1)));
        let result = self
            .inner
            .get_opts(&self.key, options)
            .await
            .map_err(StoreError::from_object_store)?;
        let stream = result.into_stream().map_err(std::io::Error::other).boxed();
        Ok(Content::Stream(stream))
    }
}
