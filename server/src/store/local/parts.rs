//! Objects written in parts (upload sessions) on a local data directory:
//! one file, each part written at its offset.
//!
//! Parts are not synced one by one (a sync per chunk made a session three
//! quarters slower than a plain PUT: the disk write could no longer overlap
//! the next chunk's transfer); the file is synced once, at completion,
//! before it is published. Each part's disk write is started as soon as
//! it is in the page cache (as a PUT's are, [`ferry_io::writeback`]), so
//! that sync finds little left to write rather than the whole file. What
//! the session record calls committed is therefore in the page cache,
//! which a killed process does not lose but a power loss does. So a
//! process that goes on from bytes it did not write itself (a restarted
//! server, another one on the same directory) first re-hashes them against
//! the record's midstate ([`intact`]); the process that wrote them knows
//! them ([`Known`]) and skips that.

use std::collections::HashSet;
use std::fs::File;
use std::io::Read as _;
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::sync::Mutex;

use ferry_core::Midstate;
use ferry_io::writeback;

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

/// The parts files this process wrote or re-hashed.
#[derive(Debug, Default)]
pub(super) struct Known(Mutex<HashSet<PathBuf>>);

impl Known {
    fn contains(&self, file: &PathBuf) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(file)
    }

    fn insert(&self, file: PathBuf) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(file);
    }

    /// Forgets a parts file that is gone (published or aborted), so the
    /// set holds only the sessions still open.
    fn remove(&self, file: &PathBuf) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(file);
    }
}

pub(super) async fn create(file: PathBuf, known: &Known) -> Result<String, StoreError> {
    let created = file.clone();
    blocking("session file", move || {
        write::create_upload_file(&created).map(drop)
    })
    .await?;
    known.insert(file);
    Ok(LOCAL_ID.to_owned())
}

/// Writes the part at its offset (into the page cache; see the module doc).
pub(super) async fn put(
    file: PathBuf,
    part: PartData,
    known: &Known,
) -> Result<String, StoreError> {
    let (offset, len) = (part.offset, part.len());
    let written = file.clone();
    blocking("session part", move || {
        let file = File::options().write(true).open(&written)?;
        let mut at = part.offset;
        for bytes in &part.bytes {
            file.write_all_at(bytes, at)?;
            at += bytes.len() as u64;
        }
        writeback::start(&file, part.offset, at - part.offset);
        Ok(())
    })
    .await?;
    known.insert(file);
    Ok(format!("{offset}+{len}"))
}

/// Whether the file's first `hash.len()` bytes hash to `hash`: known when
/// this process wrote or checked them, else read and hashed again.
pub(super) async fn intact(
    file: PathBuf,
    hash: &Midstate,
    known: std::sync::Arc<Known>,
) -> Result<bool, StoreError> {
    if hash.is_empty() || known.contains(&file) {
        return Ok(true);
    }
    let expected = hash.clone();
    blocking("session check", move || {
        let mut opened = match File::open(&file) {
            Ok(opened) => opened,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let mut rehashed = Midstate::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut left = expected.len();
        while left > 0 {
            let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            let n = opened.read(&mut buf[..want])?;
            if n == 0 {
                return Ok(false);
            }
            rehashed.update(&buf[..n]);
            left -= n as u64;
        }
        let intact = rehashed == expected;
        if intact {
            known.insert(file);
        }
        Ok(intact)
    })
    .await
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

pub(super) async fn abort(file: PathBuf, known: &Known) -> Result<(), StoreError> {
    known.remove(&file);
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
    known: &Known,
) -> Result<PutOutcome, StoreError> {
    known.remove(&file);
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
