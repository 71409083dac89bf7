//! Upload sessions: a blob sent in chunks, by offset, to any replica, named
//! by its digest only at commit.
//!
//! A session is two things in the store: its bytes, written in parts at
//! `sessions/<id>.part` through the backend's part methods (a multipart
//! upload on a bucket, one file on local disk), and its record,
//! `sessions/<id>.json`, holding the committed offset, the part ids and
//! the sha256 midstate of every byte committed ([`Midstate`]). Because the
//! hash state lives in the record, any replica can take the next chunk or
//! the commit: nothing about a session is kept in one process.
//!
//! Every change to a record is a compare-and-swap. A chunk first claims the
//! record (so two requests at the same offset cannot both write the part,
//! the second overwriting the first's bytes under the first's hash), then
//! writes the part, then records it and drops the claim. A claim older
//! than the body idle timeout twice over belongs to a request that died
//! with its replica, and the next chunk may take it over.

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use ferry_core::{Digest, Midstate};
use serde::{Deserialize, Serialize};

use super::backend::{BodyLimits, PartData, PutOutcome, UploadBody, Version, WriteMode};
use super::{Store, StoreError, body, layout};

/// Why a session request was refused (the store's own failures are
/// [`SessionError::Store`]).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("no such upload session (finished, aborted or expired)")]
    NotFound,
    #[error("chunk starts at {stated}, but {committed} bytes are committed")]
    WrongOffset { stated: u64, committed: u64 },
    #[error("another request is writing this session")]
    Busy,
    #[error(
        "the server lost this session's {lost} committed bytes (a crash of its machine took them before they reached the disk); the session starts again at {committed}: send it again"
    )]
    Lost { lost: u64, committed: u64 },
    #[error(
        "the last chunk was under the minimum of {min} bytes, so it must be the last; only the last chunk may be shorter"
    )]
    AfterShortChunk { min: u64 },
    #[error("the chunk's body has {received} bytes, its Content-Range says {stated}")]
    LengthMismatch { stated: u64, received: u64 },
    #[error("chunk exceeds the server's maximum of {max} bytes")]
    ChunkTooLarge { max: u64 },
    #[error("the session would exceed the server's blob limit of {limit} bytes")]
    BlobTooLarge { limit: u64 },
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for SessionError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => Self::NotFound,
            StoreError::VersionMismatch { .. } => Self::Busy,
            other => Self::Store(other),
        }
    }
}

/// What chunks are held to.
#[derive(Debug, Clone, Copy)]
pub struct ChunkLimits {
    pub max_chunk: u64,
    pub max_blob: u64,
    pub idle_timeout: Duration,
    /// How long a session lives after its last chunk.
    pub ttl: Duration,
}

/// Where a session stands, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStatus {
    pub id: String,
    pub offset: u64,
    pub min_chunk: u64,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    /// The backend's id of the parts object.
    parts_id: String,
    expires_at: DateTime<Utc>,
    /// The committed bytes' hash; its length is the committed offset.
    hash: Midstate,
    /// Part ids, in order.
    parts: Vec<String>,
    /// The last part was under the minimum: no part may follow it.
    #[serde(default)]
    closed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    claim: Option<DateTime<Utc>>,
}

impl Record {
    fn status(&self, id: &str, min_chunk: u64) -> SessionStatus {
        SessionStatus {
            id: id.to_owned(),
            offset: self.hash.len(),
            min_chunk,
            expires_at: self.expires_at,
        }
    }

    fn claimed(&self, now: DateTime<Utc>, idle: Duration) -> bool {
        let stale = chrono::Duration::from_std(idle * 2).unwrap_or(chrono::Duration::MAX);
        self.claim.is_some_and(|since| now - since < stale)
    }
}

fn expiry(now: DateTime<Utc>, ttl: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(1))
}

impl Store {
    /// The smallest chunk but the last.
    pub fn min_chunk(&self) -> u64 {
        self.backend.min_part_size()
    }

    async fn read_record(&self, id: &str) -> Result<(Record, Version), SessionError> {
        if !layout::is_session_id(id) {
            return Err(SessionError::NotFound);
        }
        let object = self.backend.read_object(&layout::session(id)).await?;
        let record: Record =
            serde_json::from_slice(&object.bytes).map_err(|e| StoreError::Corrupt {
                path: layout::session(id).to_string(),
                reason: e.to_string(),
            })?;
        if record.expires_at < Utc::now() {
            // GC has not swept it yet; to clients it is gone already.
            return Err(SessionError::NotFound);
        }
        Ok((record, object.version))
    }

    async fn write_record(
        &self,
        id: &str,
        record: &Record,
        mode: WriteMode,
    ) -> Result<Version, SessionError> {
        let bytes = serde_json::to_vec(record)
            .map_err(|e| StoreError::Internal(format!("session record: {e}")))?;
        Ok(self
            .backend
            .write_object(&layout::session(id), Bytes::from(bytes), mode)
            .await?)
    }

    /// Opens a session that lives `ttl` past its last chunk.
    pub async fn open_session(&self, ttl: Duration) -> Result<SessionStatus, SessionError> {
        let id = layout::new_session_id();
        let parts_id = self
            .backend
            .create_parts(&layout::session_part(&id))
            .await?;
        let record = Record {
            parts_id,
            expires_at: expiry(Utc::now(), ttl),
            hash: Midstate::new(),
            parts: Vec::new(),
            closed: false,
            claim: None,
        };
        self.write_record(&id, &record, WriteMode::Create).await?;
        tracing::info!(session = %id, "upload session opened");
        Ok(record.status(&id, self.min_chunk()))
    }

    pub async fn session_status(&self, id: &str) -> Result<SessionStatus, SessionError> {
        let (record, version) = self.read_record(id).await?;
        // A client asks this to resume: tell it the truth about the bytes.
        match self.check_parts(id, record, version).await {
            Ok((record, _)) => Ok(record.status(id, self.min_chunk())),
            Err(SessionError::Lost { .. }) => {
                let (record, _) = self.read_record(id).await?;
                Ok(record.status(id, self.min_chunk()))
            }
            Err(e) => Err(e),
        }
    }

    /// Appends `body`, `len` bytes, to session `id` at `offset`, which must
    /// be the committed offset; answers the new one.
    pub async fn append_chunk(
        &self,
        id: &str,
        (offset, len): (u64, u64),
        mut body: UploadBody<'_>,
        limits: ChunkLimits,
    ) -> Result<SessionStatus, SessionError> {
        let (record, version) = self.read_record(id).await?;
        let (mut record, version) = self.check_parts(id, record, version).await?;
        let committed = record.hash.len();
        if offset != committed {
            return Err(SessionError::WrongOffset {
                stated: offset,
                committed,
            });
        }
        let now = Utc::now();
        if record.claimed(now, limits.idle_timeout) {
            return Err(SessionError::Busy);
        }
        let min = self.min_chunk();
        if record.closed {
            return Err(SessionError::AfterShortChunk { min });
        }
        record.claim = Some(now);
        let claimed = self
            .write_record(id, &record, WriteMode::Update(version))
            .await?;
        record.claim = None;
        let received = self
            .receive_part(id, &record, &mut body, limits, (offset, len))
            .await;
        let (part_id, hash, len) = match received {
            Ok(part) => part,
            Err(e) => {
                // Let the next try in at once rather than after the claim goes stale.
                let _ = self
                    .write_record(id, &record, WriteMode::Update(claimed))
                    .await;
                return Err(e);
            }
        };
        record.hash = hash;
        record.parts.push(part_id);
        record.closed = len < min;
        record.expires_at = expiry(Utc::now(), limits.ttl);
        self.write_record(id, &record, WriteMode::Update(claimed))
            .await?;
        tracing::debug!(session = %id, offset = record.hash.len(), len, "chunk committed");
        Ok(record.status(id, min))
    }

    /// `record` as is when the bytes it calls committed are still there
    /// (see [`super::backend::Backend::parts_intact`]); otherwise the
    /// session is reset to nothing committed and [`SessionError::Lost`]
    /// says so, so the client sends it again rather than a blob being
    /// published from bytes a crash replaced.
    async fn check_parts(
        &self,
        id: &str,
        mut record: Record,
        version: Version,
    ) -> Result<(Record, Version), SessionError> {
        let key = layout::session_part(id);
        if self
            .backend
            .parts_intact(&key, &record.parts_id, &record.hash)
            .await?
        {
            return Ok((record, version));
        }
        let lost = record.hash.len();
        tracing::warn!(session = %id, lost, "upload session bytes lost (the machine crashed before they were synced); the session starts again");
        record.hash = Midstate::new();
        record.parts.clear();
        record.closed = false;
        record.claim = None;
        self.write_record(id, &record, WriteMode::Update(version))
            .await?;
        Err(SessionError::Lost { lost, committed: 0 })
    }

    /// Reads one chunk, hashes it onto the record's midstate and writes it
    /// as the next part.
    async fn receive_part(
        &self,
        id: &str,
        record: &Record,
        body: &mut UploadBody<'_>,
        limits: ChunkLimits,
        (offset, stated): (u64, u64),
    ) -> Result<(String, Midstate, u64), SessionError> {
        let body_limits = BodyLimits {
            max_bytes: limits.max_chunk,
            idle_timeout: limits.idle_timeout,
            expected_len: None,
        };
        // Hashed as it arrives, on a blocking thread: hashing after the
        // whole chunk was in kept the client waiting for it every chunk.
        let (pieces, hashing) = std::sync::mpsc::channel::<Bytes>();
        let mut hash = record.hash.clone();
        let hasher = tokio::task::spawn_blocking(move || {
            for piece in hashing {
                hash.update(&piece);
            }
            hash
        });
        let mut chunks = Vec::new();
        let mut received = 0u64;
        loop {
            match body::next_chunk(body, &mut received, body_limits).await {
                Ok(Some(chunk)) => {
                    // The hasher ends only when the sender is dropped.
                    let _ = pieces.send(chunk.clone());
                    chunks.push(chunk);
                }
                Ok(None) => break,
                Err(StoreError::TooLarge { .. }) => {
                    return Err(SessionError::ChunkTooLarge {
                        max: limits.max_chunk,
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
        drop(pieces);
        if received != stated {
            return Err(SessionError::LengthMismatch { stated, received });
        }
        if offset + received > limits.max_blob {
            return Err(SessionError::BlobTooLarge {
                limit: limits.max_blob,
            });
        }
        // The part is written while the hasher finishes: only a committed
        // record makes it count, so a part written for a chunk whose hashing
        // then failed is harmless (the next try at this offset replaces it).
        let part = PartData {
            index: record.parts.len(),
            offset,
            bytes: chunks,
        };
        let key = layout::session_part(id);
        let (hash, part_id) =
            tokio::join!(hasher, self.backend.put_part(&key, &record.parts_id, part));
        let hash = hash.map_err(|e| StoreError::from_join("chunk hashing", e))?;
        Ok((part_id?, hash, received))
    }

    /// Finishes session `id` as blob `expected`: published if the bytes
    /// committed hash to it, otherwise `DigestMismatch` and nothing kept.
    /// Either way the session is gone afterwards.
    pub async fn commit_session(
        &self,
        id: &str,
        expected: Digest,
        idle: Duration,
    ) -> Result<PutOutcome, SessionError> {
        let (record, version) = self.read_record(id).await?;
        let (mut record, version) = self.check_parts(id, record, version).await?;
        if record.claimed(Utc::now(), idle) {
            return Err(SessionError::Busy);
        }
        // Claimed for good: no chunk or second commit gets in.
        record.claim = Some(DateTime::<Utc>::MAX_UTC);
        self.write_record(id, &record, WriteMode::Update(version))
            .await?;
        let key = layout::session_part(id);
        let size = record.hash.len();
        let actual = record.hash.finish();
        let outcome = if actual != expected {
            Err(SessionError::Store(StoreError::DigestMismatch {
                expected,
                actual,
            }))
        } else if self.backend.blob_size(&expected).await.is_ok() {
            // The duplicate bytes are dropped; the commit costs a HEAD.
            Ok(PutOutcome::AlreadyPresent(size))
        } else if record.parts.is_empty() {
            // No part at all (an empty blob): object stores refuse to
            // complete a multipart upload of nothing.
            let empty: UploadBody<'_> = futures::StreamExt::boxed(futures::stream::empty());
            let limits = BodyLimits {
                max_bytes: 0,
                idle_timeout: idle,
                expected_len: Some(0),
            };
            self.backend
                .put_blob(expected, empty, limits)
                .await
                .map_err(SessionError::from)
        } else {
            let completed = self
                .backend
                .complete_parts(&key, &record.parts_id, record.parts.clone())
                .await;
            if let Err(e) = completed {
                // Nothing changed yet: let the client try the commit again.
                record.claim = None;
                if let Ok((_, now_at)) = self.read_record(id).await {
                    let _ = self
                        .write_record(id, &record, WriteMode::Update(now_at))
                        .await;
                }
                return Err(e.into());
            }
            return self.finish_published(id, &key, expected, size).await;
        };
        self.drop_session(id, &record.parts_id).await;
        outcome
    }

    /// Publishes a completed session's object and drops its record.
    async fn finish_published(
        &self,
        id: &str,
        key: &object_store::path::Path,
        digest: Digest,
        size: u64,
    ) -> Result<PutOutcome, SessionError> {
        let outcome = self.backend.publish_upload(key, &digest, size).await?;
        let _ = self.backend.delete_object(&layout::session(id)).await;
        tracing::info!(session = %id, %digest, size, "upload session committed");
        Ok(outcome)
    }

    /// Aborts session `id`: its parts and record are dropped.
    pub async fn abort_session(&self, id: &str) -> Result<(), SessionError> {
        let (record, _) = self.read_record(id).await?;
        self.drop_session(id, &record.parts_id).await;
        tracing::info!(session = %id, "upload session aborted");
        Ok(())
    }

    /// Drops a session's parts and then its record, quietly: what is left
    /// by a failure here, GC sweeps.
    async fn drop_session(&self, id: &str, parts_id: &str) {
        let key = layout::session_part(id);
        if let Err(error) = self.backend.abort_parts(&key, parts_id).await {
            tracing::warn!(session = %id, %error, "dropping a session's parts failed");
            return;
        }
        let _ = self.backend.delete_object(&key).await;
        let _ = self.backend.delete_object(&layout::session(id)).await;
    }

    /// Drops every session that expired before `now` (GC's step); returns
    /// how many.
    pub async fn sweep_sessions(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut swept = 0;
        for object in self.backend.list(super::Prefix::Sessions).await? {
            let Some(id) = layout::session_of_record(&object.key) else {
                continue;
            };
            let record: Record = match self.backend.read_object(&object.key).await {
                Ok(read) => match serde_json::from_slice(&read.bytes) {
                    Ok(record) => record,
                    Err(error) => {
                        tracing::warn!(key = %object.key, %error, "unreadable session record left alone");
                        continue;
                    }
                },
                Err(StoreError::NotFound) => continue,
                Err(e) => return Err(e),
            };
            if record.expires_at < now {
                self.drop_session(id, &record.parts_id).await;
                tracing::info!(session = %id, "expired upload session swept");
                swept += 1;
            }
        }
        Ok(swept)
    }
}
