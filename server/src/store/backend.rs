//! The storage seam: what the server needs from a place to keep bytes, as
//! one object-safe trait, [`Backend`], with two implementations (local disk
//! in [`super::local`], any `object_store` in [`super::object`]) and one
//! conformance suite both pass.
//!
//! Keys come from [`super::layout`]; a backend stores them as given and
//! never interprets them beyond that.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use ferry_core::Digest;
use ferry_core::range::ByteRange;
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;

use super::StoreError;
use super::layout::Prefix;

/// An upload body on its way in. Errors are the client connection's.
pub type UploadBody<'a> = BoxStream<'a, Result<Bytes, std::io::Error>>;

/// Blobs of one batch stored at once by the default [`Backend::put_blobs`].
const BATCH_PUT_CONCURRENCY: usize = 8;

/// What an upload body is held to.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// More bytes than this is [`StoreError::TooLarge`].
    pub max_bytes: u64,
    /// A body silent for this long is [`StoreError::Stalled`].
    pub idle_timeout: Duration,
    /// The size the client announced (`Content-Length`), if any: a hint
    /// for how to receive it (a small body is gathered and written in one
    /// go), never trusted for the limit or the digest.
    pub expected_len: Option<u64>,
}

/// What a PUT did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The blob is new; this many bytes were stored.
    Created(u64),
    /// The blob was already stored; the body was read and discarded.
    AlreadyPresent(u64),
}

/// One object as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: Path,
    pub size: u64,
    pub last_modified: DateTime<Utc>,
}

/// Which version of a small object was read or written, for a later
/// compare-and-swap ([`WriteMode::Update`]). Opaque: only the backend that
/// returned it knows what it means.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Version {
    pub e_tag: Option<String>,
    pub version: Option<String>,
}

/// A small object's bytes and the version they are.
#[derive(Debug, Clone)]
pub struct Object {
    pub bytes: Bytes,
    pub version: Version,
}

/// How [`Backend::write_object`] treats an object already there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteMode {
    /// Write only if absent, else [`StoreError::AlreadyExists`].
    Create,
    /// Replace whatever is there.
    Overwrite,
    /// Replace the object only if it is still at this version, else
    /// [`StoreError::VersionMismatch`] (also when it was deleted).
    Update(Version),
}

/// Everything the server asks of storage.
///
/// Blobs are written only through [`Backend::put_blob`], which publishes a
/// blob under its key only once its bytes hash to it. Small objects (bundle
/// records, indexes) are written whole. Deletes are idempotent: deleting
/// what is not there succeeds.
#[async_trait]
pub trait Backend: std::fmt::Debug + Send + Sync + 'static {
    /// For people: `/srv/ferry-data`, `s3://bucket/prefix`.
    fn description(&self) -> &str;

    /// Stores `body` as blob `expected` if its bytes hash to it; the bytes
    /// wait under an upload key (see [`super::layout::new_upload`]) until
    /// then. Any failure (mismatch, limit, stall, broken body, storage
    /// error) keeps nothing. A blob already stored is `AlreadyPresent`.
    async fn put_blob(
        &self,
        expected: Digest,
        body: UploadBody<'_>,
        limits: BodyLimits,
    ) -> Result<PutOutcome, StoreError>;

    /// Stores several small blobs whose bytes are known to hash to their
    /// digests (the caller checked), durable once this returns; an outcome
    /// per blob, in order. A failure may leave some of them stored (each
    /// whole and correct, as a `put_blob` of it would), never a partial one.
    /// By default one `put_blob` after the other, a few at once; local disk
    /// makes the whole batch durable with one sync instead of two per blob.
    async fn put_blobs(
        &self,
        blobs: Vec<(Digest, Bytes)>,
        idle_timeout: Duration,
    ) -> Result<Vec<PutOutcome>, StoreError> {
        // A blob named twice in one batch is stored once: the later ones
        // are already present by the time the batch is answered.
        let mut seen = std::collections::HashSet::new();
        let puts = blobs.into_iter().map(|(digest, bytes)| {
            let first = seen.insert(digest);
            async move {
                let len = bytes.len() as u64;
                if !first {
                    return Ok(PutOutcome::AlreadyPresent(len));
                }
                let body: UploadBody<'_> = futures::stream::once(async move { Ok(bytes) }).boxed();
                let limits = BodyLimits {
                    max_bytes: len,
                    idle_timeout,
                    expected_len: Some(len),
                };
                self.put_blob(digest, body, limits).await
            }
        });
        futures::stream::iter(puts)
            .buffered(BATCH_PUT_CONCURRENCY)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
    }

    /// The size of blob `digest`, or `NotFound`.
    async fn blob_size(&self, digest: &Digest) -> Result<u64, StoreError>;

    /// Opens blob `digest`: its size is known, no byte is read yet.
    async fn open_blob(&self, digest: &Digest) -> Result<OpenBlob, StoreError>;

    async fn delete_blob(&self, digest: &Digest) -> Result<(), StoreError>;

    /// Every object under `prefix`, in no particular order.
    async fn list(&self, prefix: Prefix) -> Result<Vec<ObjectInfo>, StoreError>;

    async fn read_object(&self, key: &Path) -> Result<Object, StoreError>;

    /// Writes a small object whole (readers see the old bytes or the new,
    /// never a mix) and returns the version written.
    async fn write_object(
        &self,
        key: &Path,
        bytes: Bytes,
        mode: WriteMode,
    ) -> Result<Version, StoreError>;

    async fn delete_object(&self, key: &Path) -> Result<(), StoreError>;

    /// Moves an object to another key (replacing what is there).
    async fn rename(&self, from: &Path, to: &Path) -> Result<(), StoreError>;

    /// Whether the storage answers at all.
    async fn probe(&self) -> Result<(), StoreError>;

    // Several replicas on one store, and blob bytes served by the store
    // itself (`ferry-server` answers a read with a redirect).

    /// The size and age of a small object, without reading its bytes: a
    /// bundle record's existence is checked this way, every revocation
    /// bound, where reading a large manifest again would be wasteful.
    async fn head_object(&self, key: &Path) -> Result<ObjectInfo, StoreError>;

    /// Whether [`Backend::signed_blob_url`] can answer at all (a bucket
    /// whose client signs; never local disk).
    fn can_sign(&self) -> bool;

    /// A URL anyone holding it may `GET` (with `Range`) blob `digest` from,
    /// straight from the store, until `expires_in` passes; `Unsupported`
    /// where [`Backend::can_sign`] is false. The URL is a credential: never
    /// log it.
    async fn signed_blob_url(
        &self,
        digest: &Digest,
        expires_in: Duration,
    ) -> Result<url::Url, StoreError>;

    // --- Upload sessions: an object written in parts, by any replica. ---
    // The session logic (offsets, the hash, the record) is the store's
    // (`super::sessions`); a backend only keeps the parts.

    /// The smallest part this backend takes, but for the last (object
    /// stores want 5 MiB; local disk takes any).
    fn min_part_size(&self) -> u64;

    /// Starts an object at `key` to be written in parts; returns the id the
    /// other part methods take (any replica may use it).
    async fn create_parts(&self, key: &Path) -> Result<String, StoreError>;

    /// Writes part `index` (0, 1, ...), which begins at byte `offset` of the
    /// object; returns the part's id for [`Backend::complete_parts`]. A part
    /// written again at the same index replaces the earlier one.
    async fn put_part(&self, key: &Path, id: &str, part: PartData) -> Result<String, StoreError>;

    /// Joins `parts` (the ids `put_part` returned, in order) into the object
    /// at `key`, durable once this returns.
    async fn complete_parts(
        &self,
        key: &Path,
        id: &str,
        parts: Vec<String>,
    ) -> Result<(), StoreError>;

    /// Whether the first `hash.len()` bytes written in parts at `key` still
    /// hash to `hash`, checked before a session goes on from them. Object
    /// stores keep every acknowledged part, so by default they are; local
    /// disk syncs parts only at completion and re-hashes what another
    /// process wrote (a restart may follow a power loss that took them).
    async fn parts_intact(
        &self,
        _key: &Path,
        _id: &str,
        _hash: &ferry_core::Midstate,
    ) -> Result<bool, StoreError> {
        Ok(true)
    }

    /// Drops an unfinished object and its parts; idempotent.
    async fn abort_parts(&self, key: &Path, id: &str) -> Result<(), StoreError>;

    /// Publishes the completed object at `key`, whose bytes hash to
    /// `digest`, as that blob (the object at `key` is gone afterwards).
    async fn publish_upload(
        &self,
        key: &Path,
        digest: &Digest,
        size: u64,
    ) -> Result<PutOutcome, StoreError>;
}

/// One part of an object written in parts.
#[derive(Debug, Clone)]
pub struct PartData {
    pub index: usize,
    /// Where in the object it begins.
    pub offset: u64,
    /// Its bytes, as they arrived (not joined into one buffer).
    pub bytes: Vec<Bytes>,
}

impl PartData {
    pub fn len(&self) -> u64 {
        self.bytes.iter().map(|b| b.len() as u64).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Reads an opened blob; each backend has its own.
#[async_trait]
pub trait ReadBlob: Send {
    /// The bytes `range` (all of them if `None`) of a blob of `size` bytes.
    async fn read(
        self: Box<Self>,
        size: u64,
        range: Option<ByteRange>,
    ) -> Result<Content, StoreError>;
}

/// A blob opened for reading: its size is known, no byte is read yet.
pub struct OpenBlob {
    pub size: u64,
    reader: Reader,
}

enum Reader {
    /// The bytes are at hand already (a cached small blob).
    Memory(Bytes),
    Backend(Box<dyn ReadBlob>),
}

impl OpenBlob {
    /// A blob whose bytes are already in memory.
    pub fn in_memory(bytes: Bytes) -> Self {
        Self {
            size: bytes.len() as u64,
            reader: Reader::Memory(bytes),
        }
    }

    /// A blob of `size` bytes that `reader` will read.
    pub fn new(size: u64, reader: Box<dyn ReadBlob>) -> Self {
        Self {
            size,
            reader: Reader::Backend(reader),
        }
    }

    /// The whole blob, or `range` of it.
    pub async fn read(self, range: Option<ByteRange>) -> Result<BlobBody, StoreError> {
        let size = self.size;
        let content = match self.reader {
            Reader::Memory(bytes) => Content::Whole(match range {
                Some(r) => bytes.slice(r.start as usize..r.end as usize + 1),
                None => bytes,
            }),
            Reader::Backend(reader) => reader.read(size, range).await?,
        };
        Ok(BlobBody { size, content })
    }
}

/// A blob's bytes (or a range of them) on their way out.
pub struct BlobBody {
    /// Size of the whole blob.
    pub size: u64,
    pub content: Content,
}

/// The bytes of a [`BlobBody`]: small ones read whole, larger ones streamed.
pub enum Content {
    /// All of it, read at once.
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
