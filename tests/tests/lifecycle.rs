//! Bundle and blob lifecycle against the real `ferry-server`: TTL expiry,
//! mark-and-sweep of unreferenced blobs, the grace period that protects an
//! upload waiting for its bundle, abandoned uploads, and GC running while
//! the server takes uploads. Durations are shrunk to a second so each test
//! finishes in a few seconds; every wait is a bounded poll.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use ferry_core::Digest;
use ferry_tests::api::ApiClient;
use ferry_tests::moto::Moto;
use ferry_tests::{FerryServer, FerryServerBuilder, pseudo_random_bytes};
use reqwest::Method;
use serde_json::json;

/// Longest any poll here waits.
const DEADLINE: Duration = Duration::from_secs(15);

fn fast_gc(builder: FerryServerBuilder, grace: &str) -> FerryServer {
    builder
        .arg("--gc-interval")
        .arg("1s")
        .arg("--gc-grace")
        .arg(grace)
        .start()
}

fn client(server: &FerryServer) -> ApiClient {
    ApiClient::new(&server.url, Some(&server.token))
}

/// Polls `condition` until it holds or [`DEADLINE`] passes.
fn eventually(server: &FerryServer, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while Instant::now() < deadline {
        if condition() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "{what} did not happen within {DEADLINE:?}; log:\n{}",
        server.log()
    );
}

/// Waits until GC has completed `runs` more runs than now.
fn wait_for_gc_runs(server: &FerryServer, runs: u64) {
    let start = server.metric("ferry_gc_runs_total");
    eventually(server, "garbage collection runs", || {
        server.metric("ferry_gc_runs_total") >= start + runs
    });
}

fn bundle_status(api: &ApiClient, bundle: &str) -> u16 {
    api.request(Method::GET, &format!("/v1/bundles/{bundle}"))
        .send()
        .expect("GET bundle")
        .status()
        .as_u16()
}

#[test]
fn expired_bundle_is_deleted_and_then_its_blobs_are_swept() {
    let server = fast_gc(FerryServer::builder(), "1s");
    let api = client(&server);
    let bytes = pseudo_random_bytes(1, 64 << 10);
    let created = api.stage(&[("a.jar", &bytes)], json!({"ttl_seconds": 1}));
    let id = created["id"].as_str().expect("id").to_owned();
    let record = Path::new(&server.data)
        .join("bundles")
        .join(format!("{id}.json"));
    assert!(
        record.is_file(),
        "bundle record {} written",
        record.display()
    );

    eventually(&server, "the expired bundle record is deleted", || {
        !record.exists()
    });
    assert_eq!(bundle_status(&api, &id), 404);
    eventually(&server, "the expired bundle's blob is swept", || {
        api.missing(&[Digest::of(&bytes)]) == vec![Digest::of(&bytes)]
    });
    assert!(server.metric("ferry_bundles_deleted_total{reason=\"expired\"}") >= 1);
    // The blob vanishes from the store a moment before the sweep counts it.
    eventually(&server, "the sweep is counted in the metrics", || {
        server.metric("ferry_gc_blobs_deleted_total") >= 1
            && server.metric("ferry_gc_bytes_deleted_total") >= bytes.len() as u64
    });
}

#[test]
fn blobs_of_live_and_never_expiring_bundles_survive_gc() {
    let server = fast_gc(FerryServer::builder(), "1s");
    let api = client(&server);
    let shared = pseudo_random_bytes(2, 10_000);
    let job = pseudo_random_bytes(3, 20_000);
    let orphan = pseudo_random_bytes(4, 30_000);
    api.stage(
        &[("libs/shared.jar", &shared)],
        json!({"name": "team-libs-2026.11", "ttl_seconds": "never"}),
    );
    let live = api.stage(&[("job.jar", &job)], json!({"ttl_seconds": 3600}));
    assert_eq!(api.put_blob(&orphan).status(), 201);

    eventually(&server, "the orphan blob is swept", || {
        !api.missing(&[Digest::of(&orphan)]).is_empty()
    });
    wait_for_gc_runs(&server, 2);
    assert!(
        api.missing(&[Digest::of(&shared), Digest::of(&job)])
            .is_empty(),
        "referenced blobs were swept; log:\n{}",
        server.log()
    );
    assert_eq!(bundle_status(&api, "team-libs-2026.11"), 200);
    assert_eq!(bundle_status(&api, live["id"].as_str().unwrap()), 200);
    // The gauges reflect the last run: two bundles, two blobs.
    assert_eq!(server.metric("ferry_bundles"), 2);
    assert_eq!(server.metric("ferry_blobs"), 2);
}

#[test]
fn an_unreferenced_blob_younger_than_the_grace_period_is_kept_for_its_bundle() {
    // The upload -> create-bundle window: GC runs every second, but a blob
    // uploaded moments ago is inside the 1h grace period.
    let server = fast_gc(FerryServer::builder(), "1h");
    let api = client(&server);
    let bytes = pseudo_random_bytes(5, 100_000);
    assert_eq!(api.put_blob(&bytes).status(), 201);
    wait_for_gc_runs(&server, 3);
    assert!(api.missing(&[Digest::of(&bytes)]).is_empty());
    let response = api.create_bundle(&json!({
        "entries": [{"path": "late.jar", "digest": Digest::of(&bytes), "size": bytes.len()}]
    }));
    assert_eq!(response.status(), 201, "{:?}", response.text());
    assert_eq!(server.metric("ferry_gc_blobs_deleted_total"), 0);
}

#[test]
fn abandoned_uploads_are_deleted_after_the_grace_period_and_fresh_ones_kept() {
    let server = fast_gc(FerryServer::builder(), "10m");
    let uploads = Path::new(&server.data).join("uploads");
    std::fs::create_dir_all(&uploads).unwrap();
    // What a crash mid-upload leaves: a staged part and a finished upload
    // object that was never renamed into blobs/.
    let stale = [
        uploads.join("5f0c6a3e-stale-upload#1"),
        uploads.join("5f0c6a3e-stale-upload"),
    ];
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    for path in &stale {
        std::fs::write(path, b"partial").unwrap();
        std::fs::File::options()
            .write(true)
            .open(path)
            .and_then(|f| f.set_modified(hour_ago))
            .unwrap();
    }
    let fresh = uploads.join("0d9e1b2c-in-flight#1");
    std::fs::write(&fresh, b"still arriving").unwrap();

    eventually(&server, "stale uploads are deleted", || {
        stale.iter().all(|p| !p.exists())
    });
    wait_for_gc_runs(&server, 1);
    assert!(
        fresh.exists(),
        "an upload inside the grace period was deleted"
    );
    assert!(server.metric("ferry_gc_uploads_deleted_total") >= 2);
}

#[test]
fn gc_running_while_uploads_and_bundles_arrive_loses_nothing() {
    // GC every second with a 1s grace, while a client uploads and bundles
    // for about four seconds (bounded to 40 rounds): every bundle's blobs
    // must still be there at the end.
    let server = fast_gc(FerryServer::builder(), "1s");
    let api = client(&server);
    let started = Instant::now();
    let mut staged = Vec::new();
    for round in 0..40u64 {
        if started.elapsed() > Duration::from_secs(4) && round >= 8 {
            break;
        }
        let bytes = pseudo_random_bytes(100 + round, 4096 + round as usize);
        api.stage(&[("f.bin", &bytes)], json!({"ttl_seconds": 3600}));
        staged.push(Digest::of(&bytes));
        // An orphan each round keeps the sweeper busy.
        let orphan = pseudo_random_bytes(1000 + round, 512);
        assert!(api.put_blob(&orphan).status().is_success());
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_for_gc_runs(&server, 2);
    assert_eq!(
        api.missing(&staged),
        Vec::<Digest>::new(),
        "log:\n{}",
        server.log()
    );
    assert!(server.metric("ferry_gc_blobs_deleted_total") >= 1);
}

#[test]
fn gc_expires_and_sweeps_on_s3_too() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("ferry-gc");
    let mut builder = FerryServer::builder()
        .data("s3://ferry-gc/prefix")
        .token("s3-gc-upload-token-0123456789");
    for (k, v) in moto.env() {
        builder = builder.env(k, v);
    }
    let server = fast_gc(builder, "1s");
    let api = client(&server);
    let kept = pseudo_random_bytes(7, 50_000);
    let expiring = pseudo_random_bytes(8, 60_000);
    api.stage(&[("kept.jar", &kept)], json!({"ttl_seconds": "never"}));
    let gone = api.stage(&[("gone.jar", &expiring)], json!({"ttl_seconds": 1}));
    eventually(
        &server,
        "the expired bundle's blob is swept from the bucket",
        || api.missing(&[Digest::of(&expiring)]) == vec![Digest::of(&expiring)],
    );
    assert_eq!(bundle_status(&api, gone["id"].as_str().unwrap()), 404);
    assert!(api.missing(&[Digest::of(&kept)]).is_empty());
}

#[test]
fn gc_flags_are_validated() {
    let out = std::process::Command::new(ferry_tests::bin("ferry-server"))
        .args(["--gc-interval", "0s", "--data"])
        .arg(tempfile::tempdir().unwrap().path())
        .output()
        .expect("run ferry-server");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--gc-interval"));
}
