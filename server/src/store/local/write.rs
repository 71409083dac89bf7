//! Uploads to a local data directory, without `object_store` in the way.
//!
//! The body is received on the connection's task and handed to ferry-io's
//! pipelined [`Sink`]: a writer thread writes each chunk and passes the same
//! bytes on to a hasher thread, so receiving, writing and hashing overlap,
//! and the writer starts each step's writeback as it goes so the fsync
//! before publishing is short. A body announced as small is gathered and
//! written and hashed in one blocking task instead. Only a body that hashes
//! to its digest is published, with ferry-io's durable publish (fsync the
//! file, rename it into `blobs/`, fsync the directory, new directories made
//! durable in their parents).

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use ferry_core::{Digest, Sha256Hasher};
use ferry_io::{Sink, SinkError};

use super::super::backend::{BodyLimits, PutOutcome, UploadBody};
use super::super::{StoreError, body, layout};

/// Receives `body` into `root/uploads/<uuid>`, and publishes it as blob
/// `expected` if it hashes to that.
pub(super) async fn put(
    root: &Path,
    expected: Digest,
    body: UploadBody<'_>,
    limits: BodyLimits,
) -> Result<PutOutcome, StoreError> {
    let upload = root.join(layout::new_upload().as_ref());
    let target = root.join(layout::blob_key(&expected));
    let result = put_upload(&upload, &target, expected, body, limits).await;
    if !matches!(result, Ok(PutOutcome::Created(_))) {
        // Published uploads are renamed away; anything else goes.
        remove_quietly(&upload);
    }
    result.map_err(|e| match e {
        // A file or directory of ours vanished mid-write: not the "no such
        // blob" a client could act on.
        StoreError::NotFound => StoreError::Backend("upload file vanished while written".into()),
        other => other,
    })
}

async fn put_upload(
    upload: &Path,
    target: &Path,
    expected: Digest,
    mut body: UploadBody<'_>,
    limits: BodyLimits,
) -> Result<PutOutcome, StoreError> {
    let file = {
        let upload = upload.to_path_buf();
        tokio::task::spawn_blocking(move || create_upload_file(&upload))
            .await
            .map_err(|e| StoreError::from_join("upload file", e))?
            .map_err(StoreError::from_io)?
    };
    let mut sink = Sink::new(file, Sha256Hasher::new(), limits.expected_len).map_err(sink_error)?;
    let mut received = 0u64;
    while let Some(chunk) = body::next_chunk(&mut body, &mut received, limits).await? {
        sink.push(chunk).await.map_err(sink_error)?;
    }
    let (file, hasher) = sink.finish().await.map_err(sink_error)?;
    let size = hasher.len();
    let actual = hasher.finish();
    if actual != expected {
        return Err(StoreError::DigestMismatch { expected, actual });
    }
    let (upload, target) = (upload.to_path_buf(), target.to_path_buf());
    tokio::task::spawn_blocking(move || publish(&file, &upload, &target, size))
        .await
        .map_err(|e| StoreError::from_join("upload publish", e))?
}

/// Stores a batch of small blobs already checked against their digests:
/// each is written to an upload file of its own, all are made durable with
/// one `syncfs`, renamed into `blobs/`, and the renames (and any new
/// directories) made durable with a second. That is two syncs per batch
/// where PUTs cost two fsyncs per blob (file and directory), each a disk
/// flush. On any failure the upload files not yet renamed are removed; the
/// blobs renamed by then are whole and correct, as a PUT's would be.
pub(super) fn put_batch(
    root: &Path,
    blobs: &[(Digest, Bytes)],
) -> Result<Vec<PutOutcome>, StoreError> {
    let mut pending: Vec<(PathBuf, PathBuf)> = Vec::new();
    let result = write_batch(root, blobs, &mut pending);
    if result.is_err() {
        for (upload, _) in &pending {
            remove_quietly(upload);
        }
    }
    result.map_err(StoreError::from_io)
}

fn write_batch(
    root: &Path,
    blobs: &[(Digest, Bytes)],
    pending: &mut Vec<(PathBuf, PathBuf)>,
) -> std::io::Result<Vec<PutOutcome>> {
    let mut outcomes = Vec::with_capacity(blobs.len());
    let mut seen = std::collections::HashSet::new();
    for (digest, bytes) in blobs {
        let target = root.join(layout::blob_key(digest));
        let size = bytes.len() as u64;
        // Named twice in the batch: the first is written, the rest present.
        if !seen.insert(*digest) || target.exists() {
            outcomes.push(PutOutcome::AlreadyPresent(size));
            continue;
        }
        let upload = root.join(layout::new_upload().as_ref());
        let mut file = create_upload_file(&upload)?;
        pending.push((upload, target));
        file.write_all(bytes)?;
        outcomes.push(PutOutcome::Created(size));
    }
    if pending.is_empty() {
        return Ok(outcomes);
    }
    let data_dir = File::open(root)?;
    ferry_io::durable::sync_filesystem(&data_dir)?;
    while let Some((upload, target)) = pending.last() {
        match std::fs::rename(upload, target) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && upload.exists() => {
                if let Some(dir) = target.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                std::fs::rename(upload, target)?;
            }
            other => other?,
        }
        pending.pop();
    }
    ferry_io::durable::sync_filesystem(&data_dir)?;
    Ok(outcomes)
}

/// A sink failure as the store reports it: a write error is the disk's (a
/// full disk is `Full`), a stopped thread is ours.
fn sink_error(error: SinkError) -> StoreError {
    match error {
        SinkError::Write { source } => StoreError::from_io(source),
        other => StoreError::Internal(format!("upload writer: {other}")),
    }
}

pub(super) fn create_upload_file(path: &Path) -> std::io::Result<File> {
    let open = || File::options().write(true).create_new(true).open(path);
    match open() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            open()
        }
        other => other,
    }
}

/// Makes the upload durable and renames it to `target`, unless that blob is
/// already stored (then the upload is dropped by the caller).
///
/// Same digest means same bytes, so a concurrent upload of the same blob
/// that renames first is harmless: either rename leaves the blob whole. The
/// `uploads/` side need not be durable: an entry left there by a crash is
/// an abandoned upload, which GC removes.
pub(super) fn publish(
    file: &File,
    upload: &Path,
    target: &Path,
    size: u64,
) -> Result<PutOutcome, StoreError> {
    if target.exists() {
        return Ok(PutOutcome::AlreadyPresent(size));
    }
    ferry_io::durable::publish(file, upload, target).map_err(StoreError::from_io)?;
    Ok(PutOutcome::Created(size))
}

fn remove_quietly(path: &Path) {
    let _ = std::fs::remove_file(path);
}
