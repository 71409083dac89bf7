//! Prometheus counters, rendered in the text exposition format at `/metrics`.
//!
//! Plain atomics and one small map: the counters are few and fixed, and the
//! hot path (a blob byte count) is a single relaxed add.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Request counts of one route: method, then status.
type RequestsByMethod = BTreeMap<String, BTreeMap<u16, u64>>;

/// Every counter and gauge the server exports.
#[derive(Default)]
pub struct Metrics {
    /// Request counts by route, method, status. Nested so that counting a
    /// request already seen allocates nothing.
    requests: Mutex<BTreeMap<String, RequestsByMethod>>,
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
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
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        let gauge = |out: &mut String, name: &str, help: &str, value: i64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
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
            "Blob bytes sent to readers.",
            load(&self.bytes_sent),
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
        out
    }
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
}
