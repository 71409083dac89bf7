//! A bounded mixed load on ferry-server (loopback only, fixed request counts
//! and a time cap): no errors, no leaked file descriptors, memory that does
//! not grow from one round to the next. Latencies are printed, not asserted
//! (timing belongs in benches/).

use std::time::{Duration, Instant};

use ferry_core::Digest;
use ferry_tests::api::ApiClient;
use ferry_tests::{FerryServer, pseudo_random_bytes};

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// One round: `workers` threads, each doing `per_worker` requests (a third
/// uploads, the rest downloads), stopping early at `cap`. Returns latencies
/// and the number of failed requests.
fn round(
    server: &FerryServer,
    round_seed: u64,
    workers: u64,
    per_worker: u64,
    cap: Duration,
) -> (Vec<Duration>, usize) {
    let shared = pseudo_random_bytes(round_seed, 256 * 1024);
    let api = ApiClient::new(&server.url, Some(&server.token));
    assert!(api.put_blob(&shared).status().is_success());
    let deadline = Instant::now() + cap;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let shared = &shared;
                scope.spawn(move || {
                    let api = ApiClient::new(&server.url, Some(&server.token));
                    let mut latencies = Vec::new();
                    let mut failures = 0;
                    for k in 0..per_worker {
                        if Instant::now() > deadline {
                            break;
                        }
                        let started = Instant::now();
                        let ok = if k % 3 == 0 {
                            let bytes = pseudo_random_bytes(
                                round_seed * 1_000_000 + w * 1000 + k,
                                64 * 1024,
                            );
                            api.put_blob(&bytes).status().is_success()
                        } else {
                            let response = api.get_blob(&Digest::of(shared));
                            response.status() == 200
                                && response.bytes().is_ok_and(|b| b.len() == shared.len())
                        };
                        latencies.push(started.elapsed());
                        if !ok {
                            failures += 1;
                        }
                    }
                    (latencies, failures)
                })
            })
            .collect();
        let mut all = Vec::new();
        let mut failures = 0;
        for h in handles {
            let (l, f) = h.join().unwrap();
            all.extend(l);
            failures += f;
        }
        (all, failures)
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[test]
fn mixed_load_has_no_errors_no_fd_leak_and_flat_memory() {
    let server = FerryServer::start();
    let pid = server.child.id();
    let fds_before = open_fds(pid);

    let (_, warm_failures) = round(&server, 1, 16, 60, Duration::from_secs(20));
    assert_eq!(warm_failures, 0);
    let rss_after_first = rss_kib(pid);
    let (mut latencies, failures) = round(&server, 2, 16, 120, Duration::from_secs(30));
    assert_eq!(failures, 0, "requests failed under load");
    let rss_after_second = rss_kib(pid);

    latencies.sort();
    eprintln!(
        "load: {} requests, p50 {:?}, p99 {:?}, max {:?}; server RSS {} KiB after round 1, {} KiB after round 2",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().unwrap(),
        rss_after_first,
        rss_after_second
    );
    assert!(
        latencies.len() >= 500,
        "the load was cut short: {}",
        latencies.len()
    );
    // Twice the requests must not mean more memory: allow 16 MiB of allocator slack.
    assert!(
        rss_after_second <= rss_after_first + 16 * 1024,
        "server memory grew from {rss_after_first} KiB to {rss_after_second} KiB"
    );
    // Client connections close when the clients drop; the server must not keep
    // descriptors (files, sockets) behind them.
    let deadline = Instant::now() + Duration::from_secs(5);
    while open_fds(pid) > fds_before + 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        open_fds(pid) <= fds_before + 4,
        "fds: {} before, {} after",
        fds_before,
        open_fds(pid)
    );
}
