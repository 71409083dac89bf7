//! Garbage collection: expired bundles, blobs no bundle references, and
//! abandoned uploads, in one loop that runs every `--gc-interval` while the
//! server serves.
//!
//! One run:
//! 1. **expire**: delete every bundle whose TTL has passed;
//! 2. **mark**: the digests every remaining bundle lists;
//! 3. **sweep**: delete blobs that are not marked *and* were last modified
//!    more than `--gc-grace` ago — after listing the bundles a second time,
//!    so that a bundle created while the run listed blobs still protects them;
//! 4. delete `uploads/` objects (partial or abandoned uploads) older than
//!    `--gc-grace`.
//!
//! The invariant that keeps an upload racing a sweep safe: a client uploads
//! blobs first and creates the bundle naming them afterwards, so for a
//! moment a fresh blob is referenced by nothing. A blob's age counts from
//! the moment it was published, and only blobs older than the grace period
//! are swept, so a client has the whole grace period (default 1h) between
//! uploading a blob and creating its bundle. Bundle creation checks that
//! every blob exists (`Store::missing`) before it writes the record, so a
//! bundle is never created over a blob that is already gone. The remaining
//! window is a client that *reuses* an old, unreferenced blob (its earlier
//! bundle expired) and creates its bundle in the milliseconds between the
//! second bundle listing and the delete; the second listing narrows that
//! window from the length of a run to that of one delete call.
//!
//! Several replicas on one bucket may all run GC: every step is idempotent.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ferry_core::Digest;
use futures::{StreamExt, TryStreamExt};

use crate::api::AppState;
pub use crate::store::BlobInfo;
use crate::store::{BundleRecord, Store, StoreError};

/// Garbage-collection flags, flattened into the server's [`crate::Args`].
#[derive(Debug, Clone, clap::Args)]
pub struct GcArgs {
    /// How often garbage collection runs (expired bundles, unreferenced
    /// blobs, abandoned uploads).
    #[arg(long, env = "FERRY_GC_INTERVAL", default_value = "10m", value_parser = humantime::parse_duration)]
    pub gc_interval: Duration,

    /// A blob no bundle references, or an upload, is deleted only once it is
    /// older than this. It is the time a client has between uploading a
    /// blob and creating the bundle that names it; keep it well above the
    /// longest upload-to-bundle gap (and above --body-idle-timeout).
    #[arg(long, env = "FERRY_GC_GRACE", default_value = "1h", value_parser = humantime::parse_duration)]
    pub gc_grace: Duration,
}

/// Validated garbage-collection settings.
#[derive(Debug, Clone, Copy)]
pub struct GcConfig {
    pub interval: Duration,
    pub grace: Duration,
}

impl GcConfig {
    pub fn from_args(args: &GcArgs) -> Result<Self, crate::config::ConfigError> {
        if args.gc_interval.is_zero() {
            return Err(crate::config::ConfigError::Zero("--gc-interval"));
        }
        Ok(Self {
            interval: args.gc_interval,
            grace: args.gc_grace,
        })
    }
}

/// What one run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub bundles_expired: u64,
    pub bundles_live: u64,
    pub blobs_kept: u64,
    pub blobs_deleted: u64,
    pub bytes_deleted: u64,
    pub uploads_deleted: u64,
    pub sessions_swept: u64,
}

/// The bundles whose TTL has passed at `now`.
pub fn expired_bundles(records: &[BundleRecord], now: DateTime<Utc>) -> Vec<&BundleRecord> {
    records.iter().filter(|r| r.is_expired(now)).collect()
}

/// The digests that `records` reference (the mark set).
pub fn marked_digests<'a>(records: impl IntoIterator<Item = &'a BundleRecord>) -> HashSet<Digest> {
    records
        .into_iter()
        .flat_map(|r| r.manifest.entries.iter().map(|e| e.digest))
        .collect()
}

/// Whether something last modified at `last_modified` is past the grace
/// period at `now`. A timestamp in the future (clock skew between replicas
/// or a storage backend) is never past it.
pub fn is_past_grace(last_modified: DateTime<Utc>, now: DateTime<Utc>, grace: Duration) -> bool {
    let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
    now.signed_duration_since(last_modified) > grace
}

/// The blobs to sweep: not in `marked`, and older than `grace` at `now`.
pub fn blobs_to_sweep<'a>(
    blobs: &'a [BlobInfo],
    marked: &HashSet<Digest>,
    now: DateTime<Utc>,
    grace: Duration,
) -> Vec<&'a BlobInfo> {
    blobs
        .iter()
        .filter(|b| !marked.contains(&b.digest) && is_past_grace(b.last_modified, now, grace))
        .collect()
}

/// Runs the collector every `config.interval` until `shutdown` resolves.
/// A failed run is logged and retried at the next interval.
pub async fn run_loop(
    state: Arc<AppState>,
    config: GcConfig,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    tracing::info!(
        interval = %humantime::format_duration(config.interval),
        grace = %humantime::format_duration(config.grace),
        "garbage collection scheduled"
    );
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = ticker.tick() => {}
        }
        match collect(&state, config.grace).await {
            Ok(report) => tracing::info!(
                bundles_expired = report.bundles_expired,
                bundles_live = report.bundles_live,
                blobs_kept = report.blobs_kept,
                blobs_deleted = report.blobs_deleted,
                bytes_deleted = report.bytes_deleted,
                uploads_deleted = report.uploads_deleted,
                "garbage collection done"
            ),
            Err(error) => {
                state
                    .metrics
                    .count_storage_error(crate::metrics::StorageOperation::Gc, &error);
                tracing::warn!(%error, "garbage collection failed; retrying next interval")
            }
        }
    }
}

/// One full run: expire, mark, sweep, uploads. Updates the metrics.
pub async fn collect(state: &AppState, grace: Duration) -> Result<GcReport, StoreError> {
    let store = &state.store;
    let metrics = &state.metrics;
    let mut report = GcReport::default();

    let now = Utc::now();
    let records = store.list_bundles().await?;
    for record in expired_bundles(&records, now) {
        store.delete_bundle(record).await?;
        state.auth.forget_bundle(&record.manifest.id);
        metrics.count_bundle_deleted("expired");
        report.bundles_expired += 1;
        tracing::info!(id = %record.manifest.id, expires_at = ?record.manifest.expires_at, "expired bundle deleted");
    }
    let live: Vec<&BundleRecord> = records.iter().filter(|r| !r.is_expired(now)).collect();
    report.bundles_live = live.len() as u64;
    metrics
        .bundles
        .store(report.bundles_live as i64, Ordering::Relaxed);

    let mut marked = marked_digests(live);
    let blobs = list_blobs(store).await?;
    let now = Utc::now();
    let candidates = blobs_to_sweep(&blobs, &marked, now, grace);
    if !candidates.is_empty() {
        // Second mark: bundles created since the first listing protect
        // their blobs too (see the module doc for the remaining window).
        marked.extend(marked_digests(
            store
                .list_bundles()
                .await?
                .iter()
                .filter(|r| !r.is_expired(now)),
        ));
    }
    for blob in candidates {
        if marked.contains(&blob.digest) {
            continue;
        }
        match store.delete_blob(&blob.digest).await {
            Ok(()) | Err(StoreError::NotFound) => {}
            Err(e) => return Err(e),
        }
        tracing::info!(digest = %blob.digest, bytes = blob.size, last_modified = %blob.last_modified, "unreferenced blob deleted");
        report.blobs_deleted += 1;
        report.bytes_deleted += blob.size;
        metrics.gc_blobs_deleted.fetch_add(1, Ordering::Relaxed);
        metrics
            .gc_bytes_deleted
            .fetch_add(blob.size, Ordering::Relaxed);
    }
    report.blobs_kept = blobs.len() as u64 - report.blobs_deleted;
    metrics
        .blobs
        .store(report.blobs_kept as i64, Ordering::Relaxed);

    report.uploads_deleted = sweep_uploads(store, grace).await?;
    metrics
        .gc_uploads_deleted
        .fetch_add(report.uploads_deleted, Ordering::Relaxed);
    report.sessions_swept = sweep_sessions(store).await?;
    metrics.gc_run_succeeded();
    Ok(report)
}

async fn list_blobs(store: &Store) -> Result<Vec<BlobInfo>, StoreError> {
    let listing = store.list_blobs().await?;
    for stray in &listing.strays {
        // Not ours to delete: fsck reports it.
        tracing::debug!(key = %stray.key, "object under blobs/ is not a blob; left alone");
    }
    Ok(listing.blobs)
}

/// Deletes uploads older than `grace`; returns how many. An upload still
/// being written has a fresh modification time and is kept.
async fn sweep_uploads(store: &Store, grace: Duration) -> Result<u64, StoreError> {
    let now = Utc::now();
    let mut old = store.list_uploads().await?;
    old.retain(|upload| is_past_grace(upload.last_modified, now, grace));
    let count = old.len() as u64;
    futures::stream::iter(old)
        .map(|upload| async move {
            store.delete_upload(&upload.key).await?;
            tracing::info!(key = %upload.key, "abandoned upload deleted");
            Ok::<_, StoreError>(())
        })
        .buffer_unordered(8)
        .try_collect::<()>()
        .await?;
    Ok(count)
}

/// Drops upload sessions past their expiry (idle longer than
/// `--upload-session-ttl`); returns how many. A step of its own: it needs
/// no grace, the expiry is the session's own.
pub async fn sweep_sessions(store: &Store) -> Result<u64, StoreError> {
    store.sweep_sessions(Utc::now()).await
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ferry_core::api::{Entry, Manifest};
    use ferry_core::{BundleId, EntryPath};

    use super::*;
    use crate::store::BodyLimits;

    fn record(digests: &[Digest], expires_at: Option<DateTime<Utc>>) -> BundleRecord {
        let created_at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        BundleRecord {
            manifest: Manifest {
                id: BundleId::generate(created_at.timestamp_millis() as u64, rand::random()),
                name: None,
                entries: digests
                    .iter()
                    .enumerate()
                    .map(|(i, d)| Entry {
                        path: EntryPath::parse(&format!("f{i}")).unwrap(),
                        digest: *d,
                        size: 1,
                        mode: None,
                    })
                    .collect(),
                labels: BTreeMap::new(),
                owner: None,
                created_at,
                expires_at,
            },
            token_sha256: Digest::of(b"token").hex(),
        }
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn only_bundles_past_their_expiry_are_expired_and_never_means_never() {
        let keep_forever = record(&[], None);
        let expired = record(&[], Some(at(10)));
        let later = record(&[], Some(at(100)));
        let records = vec![keep_forever, expired.clone(), later];
        let gone = expired_bundles(&records, at(50));
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].manifest.id, expired.manifest.id);
        // Exactly at the expiry instant the bundle is gone.
        assert_eq!(expired_bundles(&records, at(100)).len(), 2);
    }

    #[test]
    fn unreferenced_blobs_are_swept_only_after_the_grace_period() {
        let (a, b, c) = (Digest::of(b"a"), Digest::of(b"b"), Digest::of(b"c"));
        let marked = marked_digests([&record(&[a], None)]);
        let blobs = vec![
            BlobInfo {
                digest: a,
                size: 1,
                last_modified: at(0),
            },
            BlobInfo {
                digest: b,
                size: 2,
                last_modified: at(0),
            },
            BlobInfo {
                digest: c,
                size: 3,
                last_modified: at(90),
            },
        ];
        let grace = Duration::from_secs(60);
        let swept: Vec<_> = blobs_to_sweep(&blobs, &marked, at(100), grace)
            .iter()
            .map(|b| b.digest)
            .collect();
        assert_eq!(swept, vec![b], "a is referenced, c is too young");
        assert!(blobs_to_sweep(&blobs, &marked, at(60), grace).is_empty());
    }

    #[test]
    fn a_blob_stamped_in_the_future_is_never_past_grace() {
        assert!(!is_past_grace(at(500), at(100), Duration::ZERO));
        assert!(is_past_grace(at(0), at(100), Duration::from_secs(99)));
        assert!(!is_past_grace(at(0), at(100), Duration::from_secs(100)));
    }

    fn memory_state() -> Arc<AppState> {
        AppState::in_memory()
    }

    #[tokio::test]
    async fn collect_keeps_referenced_and_young_blobs_and_drops_the_rest() {
        let state = memory_state();
        let store = &state.store;
        let referenced = b"referenced".as_slice();
        let orphan = b"orphan".as_slice();
        for bytes in [referenced, orphan] {
            store
                .put_blob(
                    Digest::of(bytes),
                    futures::stream::iter([Ok(bytes::Bytes::from(bytes))]).boxed(),
                    BodyLimits {
                        max_bytes: 1 << 20,
                        idle_timeout: Duration::from_secs(5),
                        expected_len: None,
                    },
                )
                .await
                .unwrap();
        }
        let live = record(&[Digest::of(referenced)], None);
        store.create_bundle(&live).await.unwrap();
        let expired = record(&[Digest::of(orphan)], Some(Utc::now()));
        store.create_bundle(&expired).await.unwrap();

        // With a long grace nothing unreferenced is old enough yet.
        let report = collect(&state, Duration::from_secs(3600)).await.unwrap();
        assert_eq!(report.bundles_expired, 1);
        assert_eq!(report.bundles_live, 1);
        assert_eq!(report.blobs_deleted, 0);
        assert!(
            store
                .missing(&[Digest::of(orphan)])
                .await
                .unwrap()
                .is_empty()
        );

        // With no grace the orphan goes, the referenced blob stays.
        let report = collect(&state, Duration::ZERO).await.unwrap();
        assert_eq!(report.blobs_deleted, 1);
        assert_eq!(report.bytes_deleted, orphan.len() as u64);
        assert_eq!(
            store
                .missing(&[Digest::of(referenced), Digest::of(orphan)])
                .await
                .unwrap(),
            vec![Digest::of(orphan)]
        );
        assert_eq!(state.metrics.gc_runs.load(Ordering::Relaxed), 2);
        assert_eq!(state.metrics.blobs.load(Ordering::Relaxed), 1);
        assert_eq!(state.metrics.bundles.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_loop_runs_once_per_interval_and_stops_on_shutdown() {
        let state = memory_state();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run_loop(
            state.clone(),
            GcConfig {
                interval: Duration::from_secs(600),
                grace: Duration::from_secs(3600),
            },
            async {
                let _ = stopped.await;
            },
        ));
        // The first tick fires at once; then one run per interval.
        for expected in 1..=3u64 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert_eq!(state.metrics.gc_runs.load(Ordering::Relaxed), expected);
            tokio::time::sleep(Duration::from_secs(599)).await;
        }
        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("loop stops on shutdown")
            .unwrap();
    }
}
