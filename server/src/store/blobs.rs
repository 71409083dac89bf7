//! Blobs: streamed in, hashed while written, published only when verified.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_core::range::ByteRange;
use ferry_core::{Digest, Sha256Hasher};
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStoreExt, WriteMultipart};

use super::small::{FileId, SmallBlobs};
use super::{Store, StoreError};

/// How many multipart chunks of one upload may be in flight at once.
const UPLOAD_CONCURRENCY: usize = 2;
/// Read size for streaming local blobs out. An open download holds one or
/// two of these (hyper queues at most 128 KiB per connection), so this
/// bounds memory under fan-out: 200 downloads hold about 25 MiB.
const READ_BUFFER: usize = 64 * 1024;
/// Local reads up to this size are served from one buffer read at once.
pub const SMALL_READ: u64 = 64 * 1024;

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
    pub content: Content,
}

/// The bytes of a [`BlobBody`]: small ones read whole, larger ones streamed.
pub enum Content {
    /// All of it, read at once (at most [`SMALL_READ`] bytes).
    Whole(Bytes),
    Stream(BoxStream<'static, Result<Bytes, std::io::Error>>),
}

impl BlobBody {
    /// The bytes as a stream, whichever way they were read.
    pub fn into_stream(self) -> BoxStream<'static, Result<Bytes, std::io::Error>> {
        match self.content {
            Content::Whole(bytes) => futures::stream::once(async move { Ok(bytes) }).boxed(),
            Content::Stream(stream) => stream,
        }
    }
}

/// A blob opened for reading: its size is known, no byte is read yet.
pub struct OpenBlob {
    pub size: u64,
    source: Source,
    digest: Digest,
}

enum Source {
    /// A small blob's bytes from memory.
    Cached(Bytes),
    Local(std::fs::File, FileId, Arc<SmallBlobs>),
    Remote(Store),
}

impl OpenBlob {
    /// The whole blob, or `range` of it.
    pub async fn read(self, range: Option<ByteRange>) -> Result<BlobBody, StoreError> {
        let size = self.size;
        let (start, len) = match range {
            Some(r) => (r.start, r.len()),
            None => (0, size),
        };
        let whole = |bytes: Bytes| BlobBody {
            size,
            content: Content::Whole(bytes.slice(start as usize..(start + len) as usize)),
        };
        let file = match self.source {
            Source::Cached(bytes) => return Ok(whole(bytes)),
            Source::Local(file, id, cache) if size <= SMALL_READ => {
                let mut buf = vec![0u8; size as usize];
                std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf, 0)
                    .map_err(local_error)?;
                let bytes = Bytes::from(buf);
                cache.insert(self.digest, id, bytes.clone());
                return Ok(whole(bytes));
            }
            Source::Local(file, ..) => file,
            Source::Remote(store) => return store.get_remote(&self.digest, range).await,
        };
        if len <= SMALL_READ {
            // One positioned read into one buffer: no stream, no file state,
            // and hyper can send it with the headers in one write.
            let mut buf = vec![0u8; len as usize];
            std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf, start)
                .map_err(local_error)?;
            return Ok(BlobBody {
                size,
                content: Content::Whole(Bytes::from(buf)),
            });
        }
        let stream = super::chunks::Chunks::new(file, start, len, READ_BUFFER)
            .map_err(local_error)?
            .boxed();
        Ok(BlobBody {
            size,
            content: Content::Stream(stream),
        })
    }
}

pub(crate) fn blob_path(digest: &Digest) -> Path {
    Path::from(blob_key(digest))
}

/// The blob's key in the store: `blobs/sha256/<2 hex>/<64 hex>`.
pub(super) fn blob_key(digest: &Digest) -> String {
    let mut key = String::with_capacity(80);
    key.push_str("blobs/sha256/");
    push_hex(&mut key, &digest.as_bytes()[..1]);
    key.push('/');
    push_hex(&mut key, digest.as_bytes());
    key
}

/// Appends `bytes` in lowercase hex (on every blob read, so without the
/// per-character iterator `Digest::hex` goes through).
pub(crate) fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
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
            // A stat of a local file is a few microseconds: done in place,
            // since a hop to the blocking pool costs more than the call.
            let path = root.join(blob_key(digest));
            return match std::fs::metadata(&path) {
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
        if let Some(root) = &self.local_root {
            return super::upload::put_local(root, expected, body, limit, idle_timeout).await;
        }
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

    /// Opens blob `digest` for reading; its size is known before any byte
    /// is read, so a caller can answer conditional and range requests first.
    ///
    /// On local disk the file is opened and stat'ed once, here, with plain
    /// blocking calls: for a blob directory on a local disk that costs a few
    /// microseconds, less than handing the call to tokio's blocking pool and
    /// back (the way nginx serves static files without thread pools).
    pub async fn open_blob(&self, digest: &Digest) -> Result<OpenBlob, StoreError> {
        if let Some(root) = &self.local_root {
            let path = root.join(blob_key(digest));
            let not_found = |e: std::io::Error| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    StoreError::NotFound
                } else {
                    local_error(e)
                }
            };
            let meta = std::fs::metadata(&path).map_err(not_found)?;
            let (size, id) = (meta.len(), FileId::of(&meta));
            if size <= SMALL_READ
                && let Some(bytes) = self.small.get(digest, id)
            {
                return Ok(OpenBlob {
                    size,
                    source: Source::Cached(bytes),
                    digest: *digest,
                });
            }
            let file = std::fs::File::open(&path).map_err(not_found)?;
            return Ok(OpenBlob {
                size,
                source: Source::Local(file, id, self.small.clone()),
                digest: *digest,
            });
        }
        Ok(OpenBlob {
            size: self.blob_size(digest).await?,
            source: Source::Remote(self.clone()),
            digest: *digest,
        })
    }

    /// Streams blob `digest`, or the `range` of it.
    pub async fn get_blob(
        &self,
        digest: &Digest,
        range: Option<ByteRange>,
    ) -> Result<BlobBody, StoreError> {
        self.open_blob(digest).await?.read(range).await
    }

    async fn get_remote(
        &self,
        digest: &Digest,
        range: Option<ByteRange>,
    ) -> Result<BlobBody, StoreError> {
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
        Ok(BlobBody {
            size,
            content: Content::Stream(stream),
        })
    }

    /// Deletes a blob (garbage collection only).
    pub async fn delete_blob(&self, digest: &Digest) -> Result<(), StoreError> {
        self.small.forget(digest);
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
    let mut received = 0u64;
    while let Some(chunk) =
        super::upload::next_chunk(&mut body, &mut received, limit, idle_timeout).await?
    {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_key_is_the_sharded_hex_path() {
        let digest = Digest::of(b"key");
        let hex = digest.hex();
        assert_eq!(
            blob_key(&digest),
            format!("blobs/sha256/{}/{hex}", &hex[..2])
        );
    }
}
