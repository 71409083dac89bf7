//! Prometheus counters, rendered in the text exposition format at `/metrics`.
//!
//! Plain atomics and one small map: the counters are few and fixed, and the
//! hot path (a blob byte count) is a single relaxed add.
//!
//! Counters an alert watches for a rare event (storage errors) are printed
//! at 0 from the start, for every label set they can have: Prometheus sees
//! no increase when a series first appears already at 1, so an error
//! counted before its first scrape would otherwise never fire an alert.
//! `deploy/monitoring/` holds the dashboard and alerts built on these names.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::store::StoreError;

/// Request counts of one route: method, then status.
type RequestsByMethod = BTreeMap<String, BTreeMap<u16, u64>>;

/// Every counter and gauge the server exports.
#[derive(Default)]
pub struct Metrics {
    /// Request counts by route, method, status. Nested so that counting a
    /// request already seen allocates nothing.
    requests: Mutex<BTreeMap<String, RequestsByMethod>>,
    pub bytes_received: AtomicU64,
    /// Blob bytes this server sent itself (proxied from a bucket, or read
    /// from local disk); a redirected read sends none.
    pub bytes_sent: AtomicU64,
    /// Blob GETs answered with a redirect to a URL the store signed.
    pub blob_redirects: AtomicU64,
    pub blobs_stored: AtomicU64,
    pub blobs_already_present: AtomicU64,
    pub uploads_rejected: Mutex<BTreeMap<&'static str, u64>>,
    pub bundles_created: AtomicU64,
    pub bundles_deleted: Mutex<BTreeMap<&'static str, u64>>,
    pub gc_runs: AtomicU64,
    pub gc_blobs_deleted: AtomicU64,
    pub gc_bytes_deleted: AtomicU64,
    pub gc_uploads_deleted: AtomicU64,
    pub bundles: AtomicI64,
    pub blobs: AtomicI64,
    pub in_flight: AtomicI64,
    /// Bytes of blobs newly stored by uploads (verified, not already present).
    pub blob_bytes_stored: AtomicU64,
    /// For each bundle created, the sizes of the distinct blobs it lists.
    pub bundle_bytes: AtomicU64,
    /// When a GC run last completed, in milliseconds since the epoch; 0 before.
    gc_last_success_millis: AtomicU64,
    /// `--gc-interval`, in milliseconds.
    gc_interval_millis: AtomicU64,
    /// [`Readiness`] of the last storage probe, as its `u8`.
    readiness: AtomicU8,
    readiness_changes: AtomicU64,
    /// Indexed by [`StorageOperation`], then [`StorageErrorKind`].
    storage_errors: [[AtomicU64; StorageErrorKind::ALL.len()]; StorageOperation::ALL.len()],
    /// When this process started, for `process_start_time_seconds`.
    started: StartTime,
}

/// What the server was doing when storage failed: the label of
/// `ferry_storage_errors_total{operation}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageOperation {
    /// `PUT /v1/blobs/{digest}`.
    BlobWrite,
    /// Blob reads and `POST /v1/blobs/missing`.
    BlobRead,
    /// Bundle creation and deletion.
    BundleWrite,
    /// Bundle reads and listings, and bundle-token lookups.
    BundleRead,
    /// The storage probe behind `/readyz` and `ferry_ready`.
    Readiness,
    /// A garbage-collection run.
    Gc,
    /// Any other request.
    Other,
}

impl StorageOperation {
    pub const ALL: [Self; 7] = [
        Self::BlobWrite,
        Self::BlobRead,
        Self::BundleWrite,
        Self::BundleRead,
        Self::Readiness,
        Self::Gc,
        Self::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::BlobWrite => "blob_write",
            Self::BlobRead => "blob_read",
            Self::BundleWrite => "bundle_write",
            Self::BundleRead => "bundle_read",
            Self::Readiness => "readiness",
            Self::Gc => "gc",
            Self::Other => "other",
        }
    }
}

/// How storage failed: the label of `ferry_storage_errors_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageErrorKind {
    /// The backend did not answer or answered with an error (503 to clients).
    Unavailable,
    /// Out of space or quota (507 to clients).
    Full,
    /// A stored record did not parse (500 to clients).
    Corrupt,
}

impl StorageErrorKind {
    pub const ALL: [Self; 3] = [Self::Unavailable, Self::Full, Self::Corrupt];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unavailable => "unavailable",
            Self::Full => "full",
            Self::Corrupt => "corrupt",
        }
    }

    /// The kind of a store error that is the storage's fault; `None` for
    /// answers about the request (not found, digest mismatch, a client that
    /// stopped sending).
    pub fn of(error: &StoreError) -> Option<Self> {
        match error {
            StoreError::Backend(_) | StoreError::Unsupported(_) => Some(Self::Unavailable),
            StoreError::Full(_) => Some(Self::Full),
            StoreError::Corrupt { .. } => Some(Self::Corrupt),
            // Lost races the store resolves itself, and the server's own
            // failures (a storage thread that panicked): not the storage's.
            StoreError::NotFound
            | StoreError::AlreadyExists { .. }
            | StoreError::VersionMismatch { .. }
            | StoreError::Internal(_)
            | StoreError::DigestMismatch { .. }
            | StoreError::TooLarge { .. }
            | StoreError::Truncated { .. }
            | StoreError::Stalled(_)
            | StoreError::Body(_) => None,
        }
    }
}

/// What the last storage probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Readiness {
    /// No probe has finished yet.
    Unknown = 0,
    Ready = 1,
    NotReady = 2,
}

struct StartTime(SystemTime);

impl Default for StartTime {
    fn default() -> Self {
        Self(SystemTime::now())
    }
}

fn seconds_since_epoch(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn millis_since_epoch(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Metrics {
    pub fn record_request(&self, route: &str, method: &str, status: u16) {
        let mut map = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        let methods = match map.get_mut(route) {
            Some(methods) => methods,
            None => map.entry(route.to_owned()).or_default(),
        };
        let statuses = match methods.get_mut(method) {
            Some(statuses) => statuses,
            None => methods.entry(method.to_owned()).or_default(),
        };
        *statuses.entry(status).or_default() += 1;
    }

    pub fn count_rejected(&self, reason: &'static str) {
        let mut map = self
            .uploads_rejected
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *map.entry(reason).or_default() += 1;
    }

    /// Counts a failure of the storage itself; other store errors are the
    /// request's and are not counted here.
    pub fn count_storage_error(&self, operation: StorageOperation, error: &StoreError) {
        if let Some(kind) = StorageErrorKind::of(error) {
            self.count_storage_failure(operation, kind);
        }
    }

    pub fn count_storage_failure(&self, operation: StorageOperation, kind: StorageErrorKind) {
        let (o, k) = (operation as usize, kind as usize);
        self.storage_errors[o][k].fetch_add(1, Ordering::Relaxed);
    }

    /// Records a storage probe's outcome and returns the one before (`None`
    /// before the first). A change between ready and not ready (not the
    /// first outcome) counts as a readiness change.
    pub fn observe_readiness(&self, ready: bool) -> Option<bool> {
        let now = if ready {
            Readiness::Ready
        } else {
            Readiness::NotReady
        };
        let before = self.readiness.swap(now as u8, Ordering::Relaxed);
        if before == Readiness::Unknown as u8 {
            return None;
        }
        if before != now as u8 {
            self.readiness_changes.fetch_add(1, Ordering::Relaxed);
        }
        Some(before == Readiness::Ready as u8)
    }

    /// Whether the last storage probe succeeded.
    pub fn is_ready(&self) -> bool {
        self.readiness.load(Ordering::Relaxed) == Readiness::Ready as u8
    }

    /// A GC run completed: counts it and stamps the time.
    pub fn gc_run_succeeded(&self) {
        self.gc_runs.fetch_add(1, Ordering::Relaxed);
        self.gc_run_succeeded_elsewhere();
    }

    /// Another replica (holding the GC lease) completed a run: stamps the
    /// time, so this replica's `ferry_gc_last_success_timestamp_seconds`
    /// says when the bucket was last collected, by whichever replica.
    pub fn gc_run_succeeded_elsewhere(&self) {
        self.gc_last_success_millis
            .store(millis_since_epoch(SystemTime::now()), Ordering::Relaxed);
    }

    pub fn set_gc_interval(&self, interval: Duration) {
        let millis = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        self.gc_interval_millis.store(millis, Ordering::Relaxed);
    }

    pub fn count_bundle_deleted(&self, reason: &'static str) {
        let mut map = self
            .bundles_deleted
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *map.entry(reason).or_default() += 1;
    }

    /// The Prometheus text format (version 0.0.4).
    ///
    /// Long as the list of series it exports, one statement each, in the
    /// order `/metrics` shows them; there is no logic to split.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            single(out, "counter", name, help, value);
        };
        let gauge = |out: &mut String, name: &str, help: &str, value: i64| {
            single(out, "gauge", name, help, value);
        };
        let float_gauge = |out: &mut String, name: &str, help: &str, value: f64| {
            single(out, "gauge", name, help, value);
        };
        let _ = writeln!(
            out,
            "# HELP ferry_http_requests_total HTTP requests answered, by route, method and status.\n# TYPE ferry_http_requests_total counter"
        );
        let requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        for (route, methods) in requests.iter() {
            for (method, statuses) in methods {
                for (status, n) in statuses {
                    let _ = writeln!(
                        out,
                        "ferry_http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {n}",
                        escape(route)
                    );
                }
            }
        }
        drop(requests);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        counter(
            &mut out,
            "ferry_bytes_received_total",
            "Blob body bytes received by uploads.",
            load(&self.bytes_received),
        );
        counter(
            &mut out,
            "ferry_bytes_sent_total",
            "Blob bytes sent to readers by this server (proxied or from local disk; a redirected read sends none).",
            load(&self.bytes_sent),
        );
        counter(
            &mut out,
            "ferry_blob_redirects_total",
            "Blob GETs answered with a redirect to a URL the store signed.",
            load(&self.blob_redirects),
        );
        counter(
            &mut out,
            "ferry_blobs_stored_total",
            "New blobs stored after verification.",
            load(&self.blobs_stored),
        );
        counter(
            &mut out,
            "ferry_blobs_already_present_total",
            "Uploads of blobs that were already stored.",
            load(&self.blobs_already_present),
        );
        let _ = writeln!(
            out,
            "# HELP ferry_uploads_rejected_total Uploads refused, by reason; nothing of them was kept.\n# TYPE ferry_uploads_rejected_total counter"
        );
        for (reason, n) in self
            .uploads_rejected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "ferry_uploads_rejected_total{{reason=\"{reason}\"}} {n}"
            );
        }
        counter(
            &mut out,
            "ferry_bundles_created_total",
            "Bundles created.",
            load(&self.bundles_created),
        );
        let _ = writeln!(
            out,
            "# HELP ferry_bundles_deleted_total Bundles deleted, by reason.\n# TYPE ferry_bundles_deleted_total counter"
        );
        for (reason, n) in self
            .bundles_deleted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "ferry_bundles_deleted_total{{reason=\"{reason}\"}} {n}"
            );
        }
        counter(
            &mut out,
            "ferry_gc_runs_total",
            "Garbage collection runs completed.",
            load(&self.gc_runs),
        );
        counter(
            &mut out,
            "ferry_gc_blobs_deleted_total",
            "Unreferenced blobs deleted by GC.",
            load(&self.gc_blobs_deleted),
        );
        counter(
            &mut out,
            "ferry_gc_bytes_deleted_total",
            "Bytes of blobs deleted by GC.",
            load(&self.gc_bytes_deleted),
        );
        counter(
            &mut out,
            "ferry_gc_uploads_deleted_total",
            "Abandoned partial uploads deleted by GC.",
            load(&self.gc_uploads_deleted),
        );
        gauge(
            &mut out,
            "ferry_bundles",
            "Live bundles at the last GC run.",
            self.bundles.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "ferry_blobs",
            "Stored blobs at the last GC run.",
            self.blobs.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "ferry_http_requests_in_flight",
            "Requests being served now.",
            self.in_flight.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "ferry_blob_bytes_stored_total",
            "Bytes of new blobs stored by uploads (verified, not already present).",
            load(&self.blob_bytes_stored),
        );
        counter(
            &mut out,
            "ferry_bundle_bytes_total",
            "For each bundle created, the total size of the distinct blobs it lists.",
            load(&self.bundle_bytes),
        );
        let millis = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64 / 1000.0;
        float_gauge(
            &mut out,
            "ferry_gc_last_success_timestamp_seconds",
            "When a garbage collection run last completed (0: none yet).",
            millis(&self.gc_last_success_millis),
        );
        float_gauge(
            &mut out,
            "ferry_gc_interval_seconds",
            "How often garbage collection runs (--gc-interval).",
            millis(&self.gc_interval_millis),
        );
        gauge(
            &mut out,
            "ferry_ready",
            "1 when the last storage probe succeeded, else 0.",
            i64::from(self.is_ready()),
        );
        counter(
            &mut out,
            "ferry_readiness_changes_total",
            "Changes between ready and not ready.",
            load(&self.readiness_changes),
        );
        let _ = writeln!(
            out,
            "# HELP ferry_storage_errors_total Storage failures (unreachable, full, corrupt record), by operation and kind.\n# TYPE ferry_storage_errors_total counter"
        );
        for operation in StorageOperation::ALL {
            for kind in StorageErrorKind::ALL {
                let n = load(&self.storage_errors[operation as usize][kind as usize]);
                let _ = writeln!(
                    out,
                    "ferry_storage_errors_total{{operation=\"{}\",kind=\"{}\"}} {n}",
                    operation.as_str(),
                    kind.as_str()
                );
            }
        }
        float_gauge(
            &mut out,
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds.",
            seconds_since_epoch(self.started.0),
        );
        out
    }
}

/// One unlabelled sample with its HELP and TYPE lines.
fn single(out: &mut String, kind: &str, name: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_has_type_lines_and_labelled_samples() {
        let m = Metrics::default();
        m.record_request("/v1/blobs/{digest}", "PUT", 201);
        m.record_request("/v1/blobs/{digest}", "PUT", 201);
        m.bytes_received.fetch_add(10, Ordering::Relaxed);
        let text = m.render();
        assert!(text.contains(
            "ferry_http_requests_total{route=\"/v1/blobs/{digest}\",method=\"PUT\",status=\"201\"} 2"
        ));
        assert!(
            text.contains(
                "# TYPE ferry_bytes_received_total counter\nferry_bytes_received_total 10"
            )
        );
    }

    #[test]
    fn readiness_changes_count_flips_but_not_the_first_outcome() {
        let m = Metrics::default();
        assert!(m.render().contains("\nferry_ready 0\n"));
        assert_eq!(m.observe_readiness(true), None);
        assert_eq!(m.observe_readiness(true), Some(true));
        assert_eq!(m.observe_readiness(false), Some(true));
        assert_eq!(m.observe_readiness(false), Some(false));
        assert_eq!(m.observe_readiness(true), Some(false));
        let text = m.render();
        assert!(text.contains("\nferry_ready 1\n"), "{text}");
        assert!(
            text.contains("\nferry_readiness_changes_total 2\n"),
            "{text}"
        );
    }

    #[test]
    fn storage_errors_start_at_zero_for_every_label_set_and_skip_request_errors() {
        let m = Metrics::default();
        let zeros = m
            .render()
            .lines()
            .filter(|l| l.starts_with("ferry_storage_errors_total{") && l.ends_with(" 0"))
            .count();
        assert_eq!(
            zeros,
            StorageOperation::ALL.len() * StorageErrorKind::ALL.len()
        );
        m.count_storage_error(
            StorageOperation::BlobWrite,
            &StoreError::Full("ENOSPC".into()),
        );
        m.count_storage_error(StorageOperation::BlobWrite, &StoreError::NotFound);
        m.count_storage_error(
            StorageOperation::Gc,
            &StoreError::Corrupt {
                path: "bundles/x.json".into(),
                reason: "eof".into(),
            },
        );
        let text = m.render();
        assert!(
            text.contains("ferry_storage_errors_total{operation=\"blob_write\",kind=\"full\"} 1\n")
        );
        assert!(text.contains(
            "ferry_storage_errors_total{operation=\"blob_write\",kind=\"unavailable\"} 0\n"
        ));
        assert!(text.contains("ferry_storage_errors_total{operation=\"gc\",kind=\"corrupt\"} 1\n"));
    }

    #[test]
    fn gc_success_is_stamped_and_the_interval_is_in_seconds() {
        let m = Metrics::default();
        assert!(
            m.render()
                .contains("\nferry_gc_last_success_timestamp_seconds 0\n")
        );
        m.set_gc_interval(Duration::from_millis(1500));
        let before = seconds_since_epoch(SystemTime::now());
        m.gc_run_succeeded();
        let text = m.render();
        assert!(text.contains("\nferry_gc_interval_seconds 1.5\n"), "{text}");
        assert!(text.contains("\nferry_gc_runs_total 1\n"), "{text}");
        let stamped: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("ferry_gc_last_success_timestamp_seconds "))
            .and_then(|v| v.parse().ok())
            .expect("timestamp sample");
        assert!(
            stamped >= before.floor() && stamped < before + 60.0,
            "{stamped} vs {before}"
        );
    }
}
