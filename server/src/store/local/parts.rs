//! Objects written in parts (upload sessions) on a local data directory:
//! one file, each part written at its offset and made durable before the
//! session records it, so a restarted server (or another one on the same
//! directory) continues where the record says.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;

use super::super::StoreError;
use super::super::backend::{PartData, PutOutcome};
use super::write;

/// The id of a local parts object: the file is the key's, so nothing more
/// is needed to find it.
pub(super) const LOCAL_ID: &str = "file";

async fn blocking<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::from_join(what, e))?
        .map_err(StoreError::from_io)
}

pub(super) async fn create(file: PathBuf) -> Result<String, StoreError> {
    blocking("session file", move || {
        write::create_upload_file(&file).map(drop)
    })
    .await?;
    Ok(LOCAL_ID.to_owned())
}

/// Writes the part at its offset and syncs it: the session records the
/// new offset only after this, so a committed offset is always on disk.
pub(super) async fn put(file: PathBuf, part: PartData) -> Result<String, StoreError> {
    let (offset, len) = (part.offset, part.len());
    blocking("session part", move || {
        let file = File::options().write(true).open(&file)?;
        let mut at = part.offset;
        for bytes in &part.bytes {
            file.write_all_at(bytes, at)?;
            at += bytes.len() as u64;
        }
        file.sync_data()
    })
    .await?;
    Ok(format!("{offset}+{len}"))
}

/// Cuts the file at the end of the last part (a part written again
/// shorter must not leave stale bytes behind) and syncs it.
pub(super) async fn complete(file: PathBuf, parts: &[String]) -> Result<(), StoreError> {
    let end = match parts.last() {
        None => 0,
        Some(last) => {
            let (offset, len) = last
                .split_once('+')
                .and_then(|(o, l)| Some((o.parse::<u64>().ok()?, l.parse::<u64>().ok()?)))
                .ok_or_else(|| StoreError::Internal(format!("bad local part id {last:?}")))?;
            offset + len
        }
    };
    blocking("session completion", move || {
        let file = File::options().write(true).open(&file)?;
        file.set_len(end)?;
        file.sync_all()
    })
    .await
}

pub(super) async fn abort(file: PathBuf) -> Result<(), StoreError> {
    blocking("session abort", move || match std::fs::remove_file(&file) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    })
    .await
}

/// Publishes the completed file as blob `digest` (durably, as a PUT does),
/// or drops it when that blob is already stored.
pub(super) async fn publish(
    file: PathBuf,
    target: PathBuf,
    size: u64,
) -> Result<PutOutcome, StoreError> {
    tokio::task::spawn_blocking(move || {
        let opened = File::open(&file).map_err(StoreError::from_io)?;
        let outcome = write::publish(&opened, &file, &target, size)?;
        if matches!(outcome, PutOutcome::AlreadyPresent(_)) {
            let _ = std::fs::remove_file(&file);
        }
        Ok(outcome)
    })
    .await
    .map_err(|e| StoreError::from_join("session publish", e))?
}
