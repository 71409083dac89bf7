//! `ferry-server fsck`: re-verifies every blob against its digest and every
//! bundle record and index, and optionally moves damaged blobs aside.
//!
//! Safe to run while the server is serving, and while several replicas
//! serve one bucket: it only reads, and with `--quarantine` renames damaged
//! blobs to `quarantine/`, which readers then see as missing (a re-upload
//! repairs them). What the replicas change while it runs is not damage: a
//! bundle deleted or expired since the listing is skipped, and a blob
//! missing from the blob listing is looked up again (it may have been
//! uploaded for a bundle created since).

use std::collections::{HashMap, HashSet};

use ferry_core::{BundleId, Digest};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::store::{BlobInfo, BundleRecord, NameClaim, Pointer, Prefix, Store, StoreError};

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
    /// Names whose bundle was deleted: free for the next bundle.
    pub names_released: u64,
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
    let mut report = Report::default();
    let sizes = check_blobs(store, quarantine, jobs, &mut report).await?;
    let live = check_bundles(store, &sizes, &mut report).await?;
    for prefix in [Prefix::Names, Prefix::Tokens] {
        for key in store.list_keys(prefix).await? {
            report.indexes_checked += 1;
            let leads_to = if prefix == Prefix::Names {
                store
                    .read_json::<NameClaim>(&key)
                    .await
                    .map(|claim| claim.id)
            } else {
                store
                    .read_json::<Pointer>(&key)
                    .await
                    .map(|pointer| Some(pointer.id))
            };
            match leads_to {
                Ok(None) => report.names_released += 1,
                Ok(Some(id)) if live.contains(&id) => {}
                Ok(Some(_)) | Err(StoreError::Corrupt { .. } | StoreError::NotFound) => {
                    report.dangling_indexes += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
    report.uploads_in_flight = store.list_uploads().await?.len() as u64;
    Ok(report)
}

/// Re-hashes every blob, `jobs` at a time; returns the sizes of the sound ones.
async fn check_blobs(
    store: &Store,
    quarantine: bool,
    jobs: usize,
    report: &mut Report,
) -> Result<HashMap<Digest, u64>, StoreError> {
    let listing = store.list_blobs().await?;
    for stray in &listing.strays {
        report.blobs_checked += 1;
        report.bytes_checked += stray.size;
        report.problems.push(Problem::StrayBlobObject {
            path: stray.key.to_string(),
        });
    }
    let mut sizes: HashMap<Digest, u64> = HashMap::with_capacity(listing.blobs.len());
    let results: Vec<Option<(BlobInfo, Digest)>> = futures::stream::iter(listing.blobs)
        .map(|blob| async move {
            let body = match store.get_blob(&blob.digest, None).await {
                Ok(body) => body.into_stream(),
                // Deleted since the listing (GC runs alongside): not damage.
                Err(StoreError::NotFound) => return Ok(None),
                Err(e) => return Err(e),
            };
            let hasher = ferry_io::hash::hash_stream(body)
                .await
                .map_err(StoreError::from_io)?;
            Ok::<_, StoreError>(Some((blob, hasher.finish())))
        })
        .buffer_unordered(jobs.max(1))
        .try_collect()
        .await?;
    for (blob, actual) in results.into_iter().flatten() {
        report.blobs_checked += 1;
        report.bytes_checked += blob.size;
        if actual == blob.digest {
            sizes.insert(blob.digest, blob.size);
            continue;
        }
        let path = crate::store::layout::blob(&blob.digest).to_string();
        let quarantined = quarantine && store.quarantine_blob(&blob.digest).await.is_ok();
        tracing::error!(%path, %actual, quarantined, "corrupt blob");
        report.problems.push(Problem::CorruptBlob {
            path,
            actual: actual.to_string(),
            quarantined,
        });
    }
    Ok(sizes)
}

/// Checks every bundle record parses and that its blobs are there at the
/// sizes it says; returns the ids of the bundles that parse.
async fn check_bundles(
    store: &Store,
    sizes: &HashMap<Digest, u64>,
    report: &mut Report,
) -> Result<HashSet<BundleId>, StoreError> {
    let mut live: HashSet<BundleId> = HashSet::new();
    let now = chrono::Utc::now();
    for key in store.list_keys(Prefix::Bundles).await? {
        let record = match store.read_json::<BundleRecord>(&key).await {
            Ok(record) => record,
            Err(StoreError::Corrupt { path, reason }) => {
                report.bundles_checked += 1;
                report
                    .problems
                    .push(Problem::CorruptBundle { path, reason });
                continue;
            }
            // Deleted since the listing.
            Err(StoreError::NotFound) => continue,
            Err(e) => return Err(e),
        };
        report.bundles_checked += 1;
        live.insert(record.manifest.id.clone());
        if record.is_expired(now) {
            // Garbage a GC run may be sweeping right now: not damage.
            continue;
        }
        let bundle = record.manifest.id.to_string();
        for entry in &record.manifest.entries {
            let size = match sizes.get(&entry.digest) {
                Some(&size) => Some(size),
                // Not in the blob listing: uploaded since, for a bundle
                // created since, or missing indeed.
                None => match store.blob_size(&entry.digest).await {
                    Ok(size) => Some(size),
                    Err(StoreError::NotFound) => None,
                    Err(e) => return Err(e),
                },
            };
            match size {
                None if !store.bundle_exists(&record.manifest.id).await? => break,
                None => report.problems.push(Problem::MissingBlob {
                    bundle: bundle.clone(),
                    path: entry.path.to_string(),
                    digest: entry.digest.to_string(),
                }),
                Some(size) if size != entry.size => report.problems.push(Problem::SizeMismatch {
                    bundle: bundle.clone(),
                    path: entry.path.to_string(),
                    digest: entry.digest.to_string(),
                    expected: entry.size,
                    actual: size,
                }),
                Some(_) => {}
            }
        }
    }
    Ok(live)
}
