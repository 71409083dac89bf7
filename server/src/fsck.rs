//! `ferry-server fsck`: re-verifies every blob against its digest and every
//! bundle record and index, and optionally moves damaged blobs aside.
//!
//! Safe to run while the server is serving: it only reads, and with
//! `--quarantine` renames damaged blobs to `quarantine/`, which readers then
//! see as missing (a re-upload repairs them).

use std::collections::{HashMap, HashSet};

use ferry_core::{BundleId, Digest, Sha256Hasher};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde::Serialize;

use crate::store::{BundleRecord, Pointer, Store, StoreError};

/// One thing fsck found wrong.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// A blob whose bytes do not hash to its name.
    CorruptBlob {
        path: String,
        actual: String,
        quarantined: bool,
    },
    /// An object under `blobs/` whose name is not a digest.
    StrayBlobObject { path: String },
    /// A bundle record that does not parse.
    CorruptBundle { path: String, reason: String },
    /// A bundle entry whose blob is absent or of another size.
    MissingBlob {
        bundle: String,
        path: String,
        digest: String,
    },
    SizeMismatch {
        bundle: String,
        path: String,
        digest: String,
        expected: u64,
        actual: u64,
    },
}

/// What fsck looked at and found.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub blobs_checked: u64,
    pub bytes_checked: u64,
    pub bundles_checked: u64,
    pub indexes_checked: u64,
    /// Name or token indexes that lead to no bundle: left by a crash between
    /// writing an index and its bundle record, or by a deletion. Harmless
    /// (they open nothing) and not counted as problems.
    pub dangling_indexes: u64,
    /// Uploads in flight (or abandoned by a crash); never visible to readers.
    pub uploads_in_flight: u64,
    pub problems: Vec<Problem>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks the whole store; with `quarantine`, moves corrupt blobs aside.
pub async fn fsck(store: &Store, quarantine: bool, jobs: usize) -> Result<Report, StoreError> {
    let inner = store.object_store().clone();
    let mut report = Report::default();

    let blobs: Vec<_> = inner
        .list(Some(&Path::from("blobs")))
        .try_collect()
        .await
        .map_err(StoreError::from_backend)?;
    let mut sizes: HashMap<Digest, u64> = HashMap::with_capacity(blobs.len());
    let checks = futures::stream::iter(blobs)
        .map(|meta| {
            let store = store.clone();
            async move {
                let name = meta.location.filename().unwrap_or_default().to_owned();
                let Ok(digest) = Digest::from_hex(&name) else {
                    return Ok::<_, StoreError>((meta, None));
                };
                let mut body = store.get_blob(&digest, None).await?.into_stream();
                let mut hasher = Sha256Hasher::new();
                while let Some(chunk) = body.next().await {
                    let chunk = chunk.map_err(|e| StoreError::Body(e.to_string()))?;
                    hasher.update(&chunk);
                }
                Ok((meta, Some((digest, hasher.finish()))))
            }
        })
        .buffer_unordered(jobs.max(1));
    let results: Vec<_> = checks.try_collect().await?;
    for (meta, checked) in results {
        report.blobs_checked += 1;
        report.bytes_checked += meta.size;
        match checked {
            None => report.problems.push(Problem::StrayBlobObject {
                path: meta.location.to_string(),
            }),
            Some((digest, actual)) if actual == digest => {
                sizes.insert(digest, meta.size);
            }
            Some((digest, actual)) => {
                let mut quarantined = false;
                if quarantine {
                    let target = Path::from(format!("quarantine/{}", digest.hex()));
                    quarantined = inner.rename(&meta.location, &target).await.is_ok();
                }
                tracing::error!(path = %meta.location, %actual, quarantined, "corrupt blob");
                report.problems.push(Problem::CorruptBlob {
                    path: meta.location.to_string(),
                    actual: actual.to_string(),
                    quarantined,
                });
            }
        }
    }

    let bundle_objects: Vec<_> = inner
        .list(Some(&Path::from("bundles")))
        .try_collect()
        .await
        .map_err(StoreError::from_backend)?;
    let mut live: HashSet<BundleId> = HashSet::new();
    for meta in bundle_objects {
        report.bundles_checked += 1;
        let record = match store.read_json::<BundleRecord>(&meta.location).await {
            Ok(record) => record,
            Err(StoreError::Corrupt { path, reason }) => {
                report
                    .problems
                    .push(Problem::CorruptBundle { path, reason });
                continue;
            }
            Err(e) => return Err(e),
        };
        let bundle = record.manifest.id.to_string();
        for entry in &record.manifest.entries {
            match sizes.get(&entry.digest) {
                None => report.problems.push(Problem::MissingBlob {
                    bundle: bundle.clone(),
                    path: entry.path.to_string(),
                    digest: entry.digest.to_string(),
                }),
                Some(&size) if size != entry.size => report.problems.push(Problem::SizeMismatch {
                    bundle: bundle.clone(),
                    path: entry.path.to_string(),
                    digest: entry.digest.to_string(),
                    expected: entry.size,
                    actual: size,
                }),
                Some(_) => {}
            }
        }
        live.insert(record.manifest.id);
    }

    for prefix in ["names", "tokens"] {
        let objects: Vec<_> = inner
            .list(Some(&Path::from(prefix)))
            .try_collect()
            .await
            .map_err(StoreError::from_backend)?;
        for meta in objects {
            report.indexes_checked += 1;
            let points_at_live = match store.read_json::<Pointer>(&meta.location).await {
                Ok(pointer) => live.contains(&pointer.id),
                Err(StoreError::Corrupt { .. }) => false,
                Err(e) => return Err(e),
            };
            if !points_at_live {
                report.dangling_indexes += 1;
            }
        }
    }

    report.uploads_in_flight = inner
        .list(Some(&Path::from("uploads")))
        .try_fold(0u64, |n, _| async move { Ok(n + 1) })
        .await
        .map_err(StoreError::from_backend)?;
    Ok(report)
}
