//! Streaming a large file through an upload session: hashed while it is
//! sent (one read of the file, not two), in chunks the server and any
//! proxy in between accept, resumed from the server's committed offset
//! when an earlier run was killed.
//!
//! Resuming needs the session's id after the process that opened it is
//! gone: [`ResumeBook`] keeps `<cache dir>/sessions.json`, one entry per
//! (server, file) holding the file's identity and the session id. A file
//! changed since (another identity) starts a new session. The bytes the
//! server already has are hashed again locally (reading them is much
//! cheaper than sending them), not sent.
//!
//! A proxy in front of the server with a smaller body limit than the chunk
//! answers `413` with a body that is not ferry's: the upload then halves
//! its chunk size (down to 256 KiB, and never under the server's
//! `min_chunk`) and continues from the committed offset.

use std::collections::HashMap;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use ferry_core::api::{ErrorCode, UploadStatus};
use ferry_core::{Digest, Sha256Hasher};
use ferry_io::identity::FileIdentity;
use serde::{Deserialize, Serialize};

use crate::api::{ApiClient, ApiError};

/// Chunk size unless `FERRY_CHUNK_SIZE` says otherwise (then clamped to
/// what the server advertises).
pub const DEFAULT_CHUNK: u64 = 16 << 20;
const BOOK_FILE: &str = "sessions.json";
/// The smallest chunk tried when a proxy refuses bodies as large as ours.
const MIN_PROXY_CHUNK: u64 = 256 << 10;

/// Why a session upload failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionUploadError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} changed while it was uploaded", .0.display())]
    Changed(PathBuf),
    #[error("the server committed {server} bytes where {expected} were expected")]
    Offset { server: u64, expected: u64 },
    #[error("hashing thread failed")]
    Thread(#[source] tokio::task::JoinError),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Resumable {
    identity: FileIdentity,
    session: String,
}

/// Open sessions by (server, file), saved on every change so a killed run
/// leaves them behind for the next.
#[derive(Debug, Clone, Default)]
pub struct ResumeBook {
    file: Option<PathBuf>,
    entries: Arc<Mutex<HashMap<String, Resumable>>>,
}

impl ResumeBook {
    /// The book in cache directory `dir` (none: sessions are not resumed).
    pub fn load(dir: Option<&Path>) -> Self {
        let file = dir.map(|d| d.join(BOOK_FILE));
        let entries = file
            .as_ref()
            .and_then(|f| std::fs::read(f).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Self {
            file,
            entries: Arc::new(Mutex::new(entries)),
        }
    }

    fn key(server: &str, path: &Path) -> String {
        format!("{server} {}", path.display())
    }

    fn get(&self, server: &str, path: &Path, identity: &FileIdentity) -> Option<String> {
        let entries = self.entries.lock().ok()?;
        let entry = entries.get(&Self::key(server, path))?;
        (entry.identity == *identity).then(|| entry.session.clone())
    }

    fn set(&self, server: &str, path: &Path, entry: Option<Resumable>) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        let key = Self::key(server, path);
        match entry {
            Some(entry) => entries.insert(key, entry),
            None => entries.remove(&key),
        };
        // Only a convenience for the next run: a failed save costs a resume.
        if let Some(file) = &self.file
            && let Ok(bytes) = serde_json::to_vec(&*entries)
        {
            let temp = file.with_extension(format!("{}.tmp", std::process::id()));
            let _ = file
                .parent()
                .map(std::fs::create_dir_all)
                .transpose()
                .and_then(|_| std::fs::write(&temp, bytes))
                .and_then(|()| std::fs::rename(&temp, file));
        }
    }
}

/// What a session upload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Streamed {
    pub digest: Digest,
    pub size: u64,
    /// Whether the blob is new on the server (`false`: it was there, and
    /// the bytes sent were dropped).
    pub created: bool,
    /// Bytes not sent because the server had them from an earlier run.
    pub resumed_from: u64,
}

/// The chunk size to use: `FERRY_CHUNK_SIZE` or the default, within the
/// server's bounds.
fn chunk_size(status: &UploadStatus) -> u64 {
    let wanted = std::env::var("FERRY_CHUNK_SIZE")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(DEFAULT_CHUNK);
    wanted.min(status.max_chunk).max(status.min_chunk.max(1))
}

/// Reads `len` bytes at `offset` and hashes them onto `hasher`, off the
/// runtime.
async fn read_chunk(
    path: &Path,
    offset: u64,
    len: u64,
    mut hasher: Sha256Hasher,
) -> Result<(Bytes, Sha256Hasher), SessionUploadError> {
    let owned = path.to_owned();
    let read = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&owned)?;
        let mut buf = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)];
        let mut filled = 0;
        while filled < buf.len() {
            match file.read_at(&mut buf[filled..], offset + filled as u64)? {
                0 => break,
                n => filled += n,
            }
        }
        buf.truncate(filled);
        hasher.update(&buf);
        Ok::<_, std::io::Error>((Bytes::from(buf), hasher))
    })
    .await
    .map_err(SessionUploadError::Thread)?;
    read.map_err(|source| SessionUploadError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Hashes the first `len` bytes of the file (what the server committed in
/// an earlier run), in pieces, off the runtime.
async fn hash_prefix(path: &Path, len: u64) -> Result<Sha256Hasher, SessionUploadError> {
    let mut hasher = Sha256Hasher::new();
    let mut at = 0;
    while at < len {
        let piece = (len - at).min(DEFAULT_CHUNK);
        let (bytes, next) = read_chunk(path, at, piece, hasher).await?;
        if (bytes.len() as u64) < piece {
            return Err(SessionUploadError::Changed(path.to_owned()));
        }
        hasher = next;
        at += piece;
    }
    Ok(hasher)
}

/// A session to continue for this file, or a new one.
async fn session_for(
    client: &ApiClient,
    book: &ResumeBook,
    path: &Path,
    identity: FileIdentity,
) -> Result<UploadStatus, SessionUploadError> {
    if let Some(id) = book.get(client.server(), path, &identity) {
        match client.session_status(&id).await {
            Ok(status) if status.offset <= identity.size => return Ok(status),
            Ok(_) => {}
            Err(ApiError::Server {
                code: ErrorCode::NotFound,
                ..
            }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let status = client.open_session().await?;
    book.set(
        client.server(),
        path,
        Some(Resumable {
            identity,
            session: status.id.clone(),
        }),
    );
    Ok(status)
}

/// Streams the file at `path` (whose identity was `identity` when it was
/// chosen) through an upload session; `on_bytes` sees each chunk sent.
pub async fn stream_file(
    client: &ApiClient,
    book: &ResumeBook,
    path: &Path,
    identity: FileIdentity,
    on_bytes: &(dyn Fn(u64) + Send + Sync),
) -> Result<Streamed, SessionUploadError> {
    let size = identity.size;
    let status = session_for(client, book, path, identity).await?;
    let id = status.id.clone();
    let resumed_from = status.offset;
    on_bytes(resumed_from);
    let mut chunk = chunk_size(&status);
    let mut offset = status.offset;
    let hasher = loop {
        let prefix = hash_prefix(path, offset).await?;
        match send_from(client, &id, path, (offset, size), chunk, prefix, on_bytes).await {
            Ok(hasher) => break hasher,
            // A proxy in front of the server refused the body (its answer
            // is not ferry's JSON): smaller chunks, from what is committed.
            Err(SessionUploadError::Api(ApiError::Server {
                status: 413,
                code: ErrorCode::Unknown,
                ..
            })) if chunk / 2 >= MIN_PROXY_CHUNK.max(status.min_chunk) => {
                chunk /= 2;
                offset = client.session_status(&id).await?.offset;
            }
            Err(e) => return Err(e),
        }
    };
    let digest = hasher.finish();
    let created = client.commit_session(&id, &digest).await?;
    book.set(client.server(), path, None);
    Ok(Streamed {
        digest,
        size,
        created,
        resumed_from,
    })
}

/// Sends the file from `offset` to `size` in chunks of `chunk`, hashing
/// onto `hasher` (the hash of the bytes before `offset`); returns the hash
/// of the whole file.
async fn send_from(
    client: &ApiClient,
    id: &str,
    path: &Path,
    (mut offset, size): (u64, u64),
    chunk: u64,
    hasher: Sha256Hasher,
    on_bytes: &(dyn Fn(u64) + Send + Sync),
) -> Result<Sha256Hasher, SessionUploadError> {
    // Each next chunk is read and hashed while the one before is sent.
    let first = chunk.min(size - offset);
    let (mut bytes, mut hashed) = read_chunk(path, offset, first, hasher).await?;
    while offset < size {
        let len = bytes.len() as u64;
        if len != chunk.min(size - offset) {
            return Err(SessionUploadError::Changed(path.to_owned()));
        }
        let after = offset + len;
        if after < size {
            let piece = chunk.min(size - after);
            let (sent, read) = tokio::join!(
                send_chunk(client, id, offset, bytes),
                read_chunk(path, after, piece, hashed)
            );
            sent?;
            (bytes, hashed) = read?;
        } else {
            send_chunk(client, id, offset, bytes).await?;
            bytes = Bytes::new();
        }
        on_bytes(len);
        offset = after;
    }
    Ok(hashed)
}

/// Sends one chunk; a retry that finds the chunk committed already (the
/// first try landed, its answer was lost) counts as sent.
async fn send_chunk(
    client: &ApiClient,
    id: &str,
    offset: u64,
    bytes: Bytes,
) -> Result<(), SessionUploadError> {
    let expected = offset + bytes.len() as u64;
    let committed = match client.append_chunk(id, offset, bytes).await {
        Ok(status) => status.offset,
        Err(ApiError::Server {
            code: ErrorCode::RangeNotSatisfiable,
            ..
        }) => client.session_status(id).await?.offset,
        Err(e) => return Err(e.into()),
    };
    if committed != expected {
        return Err(SessionUploadError::Offset {
            server: committed,
            expected,
        });
    }
    Ok(())
}
