//! Blobs: streamed in, hashed while written, published only when verified.

use std::time::Duration;

use bytes::Bytes;
use ferry_core::range::ByteRange;
use ferry_core::{Digest, Sha256Hasher};
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStoreExt, WriteMultipart};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{Store, StoreError};

/// How many multipart chunks of one upload may be in flight at once.
const UPLOAD_CONCURRENCY: usize = 2;
/// Read buffer for streaming local blobs out.
const READ_BUFFER: usize = 256 * 1024;

/// What a PUT did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The blob is new; this many bytes were stored.
    Created(u64),
    /// The blob was already stored; the body was read and discarded.
    AlreadyPresent(u64),
}

/// A blob's bytes (or a range of them) on their way out.
pub struct BlobBody {
    /// Size of the whole blob.
    pub size: u64,
    pub stream: BoxStream<'static, Result<Bytes, std::io::Error>>,
}

pub(crate) fn blob_path(digest: &Digest) -> Path {
    let hex = digest.hex();
    Path::from(format!("blobs/sha256/{}/{hex}", &hex[..2]))
}

impl Store {
    /// The digests among `digests` that are not stored, in the order given.
    pub async fn missing(&self, digests: &[Digest]) -> Result<Vec<Digest>, StoreError> {
        let found: Vec<(Digest, bool)> = futures::stream::iter(digests.iter().copied())
            .map(|digest| async move {
                match self.blob_size(&digest).await {
                    Ok(_) => Ok((digest, true)),
                    Err(StoreError::NotFound) => Ok((digest, false)),
                    Err(e) => Err(e),
                }
            })
            .buffered(32)
            .try_collect()
            .await?;
        Ok(found
            .into_iter()
            .filter_map(|(d, present)| (!present).then_some(d))
            .collect())
    }

    /// Size of a stored blob.
    pub async fn blob_size(&self, digest: &Digest) -> Result<u64, StoreError> {
        if let Some(root) = &self.local_root {
            let path = root.join(blob_path(digest).as_ref());
            return match tokio::fs::metadata(&path).await {
                Ok(meta) => Ok(meta.len()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::NotFound),
                Err(e) => Err(StoreError::Backend(object_store::Error::Generic {
                    store: "LocalFileSystem",
                    source: Box::new(e),
                })),
            };
        }
        self.inner
            .head(&blob_path(digest))
            .await
            .map(|meta| meta.size)
            .map_err(StoreError::from_backend)
    }

    /// Stores the body as blob `expected` if its bytes hash to it.
    ///
    /// The body goes to `uploads/<uuid>` while it is hashed; it is renamed to
    /// its blob path only after the digest matched, so no reader ever sees a
    /// partial or wrong blob. Any failure (mismatch, limit, stalled or broken
    /// client, storage error) removes the upload and keeps nothing.
    pub async fn put_blob<S, E>(
        &self,
        expected: Digest,
        body: S,
        limit: u64,
        idle_timeout: Duration,
    ) -> Result<PutOutcome, StoreError>
    where
        S: futures::Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let upload_path = Path::from(format!("uploads/{}", uuid::Uuid::new_v4()));
        let upload = self
            .inner
            .put_multipart(&upload_path)
            .await
            .map_err(StoreError::from_backend)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, self.chunk_size);
        match receive(&mut writer, body, limit, idle_timeout).await {
            Ok((actual, size)) if actual == expected => {
                writer.finish().await.map_err(StoreError::from_backend)?;
                self.publish(&upload_path, &expected, size).await
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

    async fn publish(
        &self,
        upload_path: &Path,
        digest: &Digest,
        size: u64,
    ) -> Result<PutOutcome, StoreError> {
        let target = blob_path(digest);
        if self.blob_size(digest).await.is_ok() {
            let _ = self.inner.delete(upload_path).await;
            return Ok(PutOutcome::AlreadyPresent(size));
        }
        // Same digest means same bytes, so a concurrent upload of the same
        // blob that renames first is harmless: either rename leaves the blob whole.
        match self.inner.rename(upload_path, &target).await {
            Ok(()) => Ok(PutOutcome::Created(size)),
            Err(e) => {
                let _ = self.inner.delete(upload_path).await;
                Err(StoreError::from_backend(e))
            }
        }
    }

    /// Streams blob `digest`, or the `range` of it.
    pub async fn get_blob(
        &self,
        digest: &Digest,
        range: Option<ByteRange>,
    ) -> Result<BlobBody, StoreError> {
        if let Some(root) = &self.local_root {
            return self
                .get_local(root.join(blob_path(digest).as_ref()), range)
                .await;
        }
        let options =
            GetOptions::new().with_range(range.map(|r| GetRange::Bounded(r.start..r.end + 1)));
        let result = self
            .inner
            .get_opts(&blob_path(digest), options)
            .await
            .map_err(StoreError::from_backend)?;
        let size = result.meta.size;
        let stream = result
            .into_stream()
            .map_err(|e| std::io::Error::other(e.to_string()))
            .boxed();
        Ok(BlobBody { size, stream })
    }

    async fn get_local(
        &self,
        path: std::path::PathBuf,
        range: Option<ByteRange>,
    ) -> Result<BlobBody, StoreError> {
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(StoreError::NotFound),
            Err(e) => return Err(local_error(e)),
        };
        let size = file.metadata().await.map_err(local_error)?.len();
        let (start, len) = match range {
            Some(r) => (r.start, r.len()),
            None => (0, size),
        };
        if start > 0 {
            file.seek(std::io::SeekFrom::Start(start))
                .await
                .map_err(local_error)?;
        }
        let reader = file.take(len);
        let stream = tokio_util::io::ReaderStream::with_capacity(reader, READ_BUFFER).boxed();
        Ok(BlobBody { size, stream })
    }

    /// Deletes a blob (garbage collection only).
    pub async fn delete_blob(&self, digest: &Digest) -> Result<(), StoreError> {
        self.inner
            .delete(&blob_path(digest))
            .await
            .map_err(StoreError::from_backend)
    }
}

fn local_error(e: std::io::Error) -> StoreError {
    StoreError::Backend(object_store::Error::Generic {
        store: "LocalFileSystem",
        source: Box::new(e),
    })
}

/// Reads the body into `writer`, hashing as it goes; returns the digest and
/// size of what arrived.
async fn receive<S, E>(
    writer: &mut WriteMultipart,
    mut body: S,
    limit: u64,
    idle_timeout: Duration,
) -> Result<(Digest, u64), StoreError>
where
    S: futures::Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut hasher = Sha256Hasher::new();
    loop {
        let next = tokio::time::timeout(idle_timeout, body.next())
            .await
            .map_err(|_| StoreError::Stalled(idle_timeout))?;
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| StoreError::Body(e.to_string()))?;
        if hasher.len() + chunk.len() as u64 > limit {
            return Err(StoreError::TooLarge { limit });
        }
        hasher.update(&chunk);
        writer.put(chunk);
        writer
            .wait_for_capacity(UPLOAD_CONCURRENCY)
            .await
            .map_err(StoreError::from_backend)?;
    }
    let size = hasher.len();
    Ok((hasher.finish(), size))
}
