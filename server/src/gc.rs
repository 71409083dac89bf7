//! Garbage collection: expired bundles, blobs no bundle references, and
//! abandoned uploads, in one loop that runs every `--gc-interval` while the
//! server serves.
//!
//! One run:
//! 1. **expire**: delete every bundle whose TTL has passed;
//! 2. **mark**: the digests every remaining bundle lists;
//! 3. **sweep**: blobs that are not marked *and* were last modified more
//!    than `--gc-grace` ago are candidates. In batches: put a mark on each
//!    candidate (`condemned/<hex>`), list the bundles again and mark what
//!    the new ones list, delete the candidates still unmarked, remove the
//!    marks;
//! 4. delete `uploads/` objects (partial or abandoned uploads) older than
//!    `--gc-grace`.
//!
//! A client uploads blobs first and creates the bundle naming them
//! afterwards, so for a moment a fresh blob is referenced by nothing. A
//! blob's age counts from the moment it was published, and only blobs older
//! than the grace period are candidates, so a client has the whole grace
//! period (default 1h) between uploading a blob and creating its bundle.
//!
//! A client may also *reuse* an old blob no bundle references any more (its
//! earlier bundle expired): its bundle creation sees the blob stored, but a
//! sweep may be deciding to delete it at that very moment. The marks close
//! that race. Bundle creation writes the record, *then* checks that none of
//! its blobs is marked or gone ([`crate::store::Store::create_bundle`];
//! if one is, the creation is undone and answered `409 missing_blobs`, and
//! the client uploads again). Take a bundle whose creation succeeded: its
//! check found no mark on blob B. If a sweep marked B after that check,
//! the record was written before the mark, so the sweep's listing after
//! marking sees the record and keeps B. If the sweep marked B before the
//! check, it removed the mark before the check too, so it had finished
//! with B; had it deleted B, the check would have found B gone. Either way
//! an acknowledged bundle's blobs stay. (The stores ferry supports list
//! what was written before the listing: S3, GCS, Azure and local disk are
//! strongly consistent.)
//!
//! **Several replicas** on one bucket: each runs this loop, but a run needs
//! the GC lease ([`crate::lease`]), so one replica sweeps at a time (and
//! keeps the job while it lives); a replica killed mid-sweep loses the
//! lease after `--gc-lease-ttl`, and its marks are removed by the next run.
//! Every step is idempotent, and a holder that may have lost the lease
//! stops before its next delete.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ferry_core::Digest;
use futures::{StreamExt, TryStreamExt};

use crate::api::AppState;
use crate::lease::{Attempt, Held, Lease};
pub use crate::store::BlobInfo;
use crate::store::{BundleRecord, Prefix, Store, StoreError, layout};

/// Candidates marked, checked and deleted together.
const SWEEP_BATCH: usize = 1000;

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

    /// With several replicas on one bucket, one at a time runs GC, holding a
    /// lease in the bucket that it renews while it runs. A holder that
    /// stops renewing (killed) loses it after this long.
    #[arg(long, env = "FERRY_GC_LEASE_TTL", default_value = "1m", value_parser = humantime::parse_duration)]
    pub gc_lease_ttl: Duration,
}

/// Validated garbage-collection settings.
#[derive(Debug, Clone, Copy)]
pub struct GcConfig {
    pub interval: Duration,
    pub grace: Duration,
    /// TTL of the GC lease, where there is one (several replicas).
    pub lease_ttl: Duration,
}

impl GcConfig {
    pub fn from_args(args: &GcArgs) -> Result<Self, crate::config::ConfigError> {
        if args.gc_interval.is_zero() {
            return Err(crate::config::ConfigError::Zero("--gc-interval"));
        }
        if args.gc_lease_ttl < Duration::from_secs(1) {
            return Err(crate::config::ConfigError::Invalid(
                "--gc-lease-ttl must be at least 1s".into(),
            ));
        }
        Ok(Self {
            interval: args.gc_interval,
            grace: args.gc_grace,
            lease_ttl: args.gc_lease_ttl,
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

/// Runs the collector every `config.interval` until `shutdown` resolves;
/// with `lease`, only when this replica holds it. A failed run is logged
/// and retried at the next interval.
pub async fn run_loop(
    state: Arc<AppState>,
    config: GcConfig,
    lease: Option<Arc<Lease>>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    tracing::info!(
        interval = %humantime::format_duration(config.interval),
        grace = %humantime::format_duration(config.grace),
        lease = lease.as_ref().map(|l| l.holder()),
        "garbage collection scheduled"
    );
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = ticker.tick() => {}
        }
        let held = match &lease {
            None => None,
            Some(lease) => match lease.try_acquire().await {
                Ok(Attempt::Held(held)) => Some(held),
                Ok(Attempt::Elsewhere { others_succeeded }) => {
                    if others_succeeded {
                        state.metrics.gc_run_succeeded_elsewhere();
                    }
                    tracing::debug!("another replica holds the GC lease; not collecting");
                    continue;
                }
                Err(error) => {
                    state
                        .metrics
                        .count_storage_error(crate::metrics::StorageOperation::Gc, &error);
                    tracing::warn!(%error, "cannot read the GC lease; retrying next interval");
                    continue;
                }
            },
        };
        let result = collect_under(&state, config.grace, held.as_ref()).await;
        if let Some(held) = held {
            held.release(result.is_ok()).await;
        }
        match result {
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
    collect_under(state, grace, None).await
}

/// [`collect`], stopping before any delete once `lease` may be lost.
pub async fn collect_under(
    state: &AppState,
    grace: Duration,
    lease: Option<&Held>,
) -> Result<GcReport, StoreError> {
    let store = &state.store;
    let metrics = &state.metrics;
    let mut report = GcReport::default();

    let now = Utc::now();
    let records = store.list_bundles().await?;
    for record in expired_bundles(&records, now) {
        still_held(lease)?;
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

    let mut sweep = Sweep {
        store,
        lease,
        marked: marked_digests(live),
        listed: records
            .iter()
            .map(|r| layout::bundle(&r.manifest.id).to_string())
            .collect(),
    };
    let blobs = list_blobs(store).await?;
    let candidates = blobs_to_sweep(&blobs, &sweep.marked, Utc::now(), grace);
    // Marks of a run killed mid-sweep; no other sweep runs now.
    let stale: Vec<Digest> = store.condemned().await?.into_iter().collect();
    store.pardon(&stale).await?;
    for batch in candidates.chunks(SWEEP_BATCH) {
        for blob in sweep.batch(batch).await? {
            report.blobs_deleted += 1;
            report.bytes_deleted += blob.size;
            metrics.gc_blobs_deleted.fetch_add(1, Ordering::Relaxed);
            metrics
                .gc_bytes_deleted
                .fetch_add(blob.size, Ordering::Relaxed);
        }
    }
    report.blobs_kept = blobs.len() as u64 - report.blobs_deleted;
    metrics
        .blobs
        .store(report.blobs_kept as i64, Ordering::Relaxed);

    still_held(lease)?;
    report.uploads_deleted = sweep_uploads(store, grace).await?;
    metrics
        .gc_uploads_deleted
        .fetch_add(report.uploads_deleted, Ordering::Relaxed);
    report.sessions_swept = sweep_sessions(store).await?;
    metrics.gc_run_succeeded();
    Ok(report)
}

/// Refuses to go on once the lease may have passed to another replica.
fn still_held(lease: Option<&Held>) -> Result<(), StoreError> {
    match lease {
        Some(held) if held.is_lost() => Err(StoreError::Internal(
            "the GC lease may have passed to another replica; this run stops".into(),
        )),
        _ => Ok(()),
    }
}

/// The sweep of one run: what is marked so far, and which bundle records
/// it has read.
struct Sweep<'a> {
    store: &'a Store,
    lease: Option<&'a Held>,
    marked: HashSet<Digest>,
    /// Keys of the bundle records read; records never change, so each is
    /// read once.
    listed: HashSet<String>,
}

impl Sweep<'_> {
    /// Marks the unmarked blobs of `batch` condemned, marks what bundles
    /// created since list, deletes the rest, removes the marks; returns
    /// what it deleted. See the module doc for why in this order.
    async fn batch<'b>(&mut self, batch: &[&'b BlobInfo]) -> Result<Vec<&'b BlobInfo>, StoreError> {
        let doomed: Vec<Digest> = batch
            .iter()
            .map(|blob| blob.digest)
            .filter(|digest| !self.marked.contains(digest))
            .collect();
        if doomed.is_empty() {
            return Ok(Vec::new());
        }
        still_held(self.lease)?;
        self.store.condemn(&doomed).await?;
        let deleted = self.delete_unmarked(batch).await;
        let pardoned = self.store.pardon(&doomed).await;
        let deleted = deleted?;
        pardoned?;
        Ok(deleted)
    }

    async fn delete_unmarked<'b>(
        &mut self,
        batch: &[&'b BlobInfo],
    ) -> Result<Vec<&'b BlobInfo>, StoreError> {
        self.mark_new_bundles().await?;
        let mut deleted = Vec::new();
        for blob in batch {
            if self.marked.contains(&blob.digest) {
                continue;
            }
            still_held(self.lease)?;
            match self.store.delete_blob(&blob.digest).await {
                Ok(()) | Err(StoreError::NotFound) => {}
                Err(e) => return Err(e),
            }
            tracing::info!(digest = %blob.digest, bytes = blob.size, last_modified = %blob.last_modified, "unreferenced blob deleted");
            deleted.push(*blob);
        }
        Ok(deleted)
    }

    /// Marks what every bundle not read before lists.
    async fn mark_new_bundles(&mut self) -> Result<(), StoreError> {
        let keys: Vec<_> = self
            .store
            .list_keys(Prefix::Bundles)
            .await?
            .into_iter()
            .filter(|key| !self.listed.contains(key.as_ref()))
            .collect();
        self.listed
            .extend(keys.iter().map(|key| key.as_ref().to_owned()));
        let now = Utc::now();
        for record in self.store.read_bundles(keys).await? {
            if !record.is_expired(now) {
                self.marked.extend(record.digests());
            }
        }
        Ok(())
    }
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
                lease_ttl: Duration::from_secs(60),
            },
            None,
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
