//! ferry-server under faults: killed mid-write, disk full, storage backend
//! gone, corrupted blobs. What was acknowledged survives; nothing partial is
//! ever visible; `ferry-server fsck` agrees.

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ferry_core::Digest;
use ferry_tests::api::ApiClient;
use ferry_tests::disk::SmallDisk;
use ferry_tests::moto::Moto;
use ferry_tests::{FerryServer, bin, pseudo_random_bytes};
use reqwest::Method;
use serde_json::{Value, json};

fn fsck(data: &str, extra: &[&str]) -> (i32, Value) {
    let output = Command::new(bin("ferry-server"))
        .args(["fsck", "--json", "--data", data])
        .args(extra)
        .output()
        .expect("run ferry-server fsck");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "fsck JSON: {e}: {}",
            String::from_utf8_lossy(&output.stdout)
        )
    });
    (output.status.code().unwrap_or(-1), report)
}

#[test]
fn kill_9_during_uploads_and_bundle_creation_loses_nothing_acknowledged() {
    let mut server = FerryServer::start();
    let blobs_acked: Mutex<Vec<u64>> = Mutex::new(Vec::new());
    let bundles_acked: Mutex<Vec<(String, String, u64)>> = Mutex::new(Vec::new());
    // One upload certainly in flight at the moment of the kill.
    let partial = pseudo_random_bytes(999, 1 << 20);
    let mut in_flight = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    write!(
        in_flight,
        "PUT /v1/blobs/{} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n\r\n",
        Digest::of(&partial),
        server.token,
        partial.len()
    )
    .unwrap();
    in_flight.write_all(&partial[..300_000]).unwrap();

    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let api = ApiClient::with_client(&server.url, Some(&server.token), http);
    std::thread::scope(|scope| {
        for worker in 0..6u64 {
            let (api, blobs_acked, bundles_acked) = (&api, &blobs_acked, &bundles_acked);
            scope.spawn(move || {
                for k in 0..400u64 {
                    let seed = worker * 10_000 + k;
                    let bytes = pseudo_random_bytes(seed, 64 * 1024 + (seed as usize % 7) * 4096);
                    let digest = Digest::of(&bytes);
                    let Ok(r) = api
                        .request(Method::PUT, &format!("/v1/blobs/{digest}"))
                        .body(bytes.clone())
                        .send()
                    else {
                        return;
                    };
                    if r.status() != 201 && r.status() != 200 {
                        return;
                    }
                    blobs_acked.lock().unwrap().push(seed);
                    if k % 3 == 0 {
                        let body = json!({"entries": [{"path": format!("f/{seed}"), "digest": digest, "size": bytes.len()}]});
                        let Ok(r) = api.request(Method::POST, "/v1/bundles").json(&body).send() else { return };
                        if r.status() != 201 {
                            return;
                        }
                        let Ok(created) = r.json::<Value>() else { return };
                        bundles_acked.lock().unwrap().push((
                            created["id"].as_str().unwrap_or_default().to_owned(),
                            created["token"].as_str().unwrap_or_default().to_owned(),
                            seed,
                        ));
                    }
                }
            });
        }
        // Let the load run, then pull the plug mid-stream.
        let deadline = Instant::now() + Duration::from_secs(5);
        while blobs_acked.lock().unwrap().len() < 60 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        server.kill();
    });
    drop(in_flight);
    let blobs_acked = blobs_acked.into_inner().unwrap();
    let bundles_acked = bundles_acked.into_inner().unwrap();
    assert!(
        blobs_acked.len() >= 10,
        "the load did not get going: {}",
        blobs_acked.len()
    );

    let (code, report) = fsck(&server.data, &[]);
    assert_eq!(code, 0, "fsck after kill -9: {report:#}");
    assert_eq!(report["problems"], json!([]));

    server.restart();
    let api = ApiClient::new(&server.url, Some(&server.token));
    for seed in &blobs_acked {
        let bytes = pseudo_random_bytes(*seed, 64 * 1024 + (*seed as usize % 7) * 4096);
        let got = api.get_blob(&Digest::of(&bytes)).bytes().unwrap();
        assert!(
            got.as_ref() == bytes.as_slice(),
            "acknowledged blob {seed} damaged or lost"
        );
    }
    for (id, token, seed) in &bundles_acked {
        let reader = api.as_token(Some(token));
        let manifest = reader
            .request(Method::GET, &format!("/v1/bundles/{id}"))
            .send()
            .unwrap();
        assert_eq!(manifest.status(), 200, "acknowledged bundle {id} lost");
        let bytes = pseudo_random_bytes(*seed, 64 * 1024 + (*seed as usize % 7) * 4096);
        assert_eq!(reader.get_blob(&Digest::of(&bytes)).status(), 200);
    }
    // The interrupted upload is not visible, and can simply be retried.
    assert_eq!(
        api.missing(&[Digest::of(&partial)]),
        vec![Digest::of(&partial)]
    );
    assert_eq!(api.put_blob(&partial).status(), 201);
}

#[test]
fn fsck_finds_and_quarantines_a_corrupted_blob() {
    let server = FerryServer::start();
    let api = ApiClient::new(&server.url, Some(&server.token));
    let data = pseudo_random_bytes(11, 100_000);
    let digest = Digest::of(&data);
    api.stage(&[("jars/a.jar", &data)], json!({}));
    assert_eq!(fsck(&server.data, &[]).0, 0);

    let path = Path::new(&server.data).join(format!(
        "blobs/sha256/{}/{}",
        &digest.hex()[..2],
        digest.hex()
    ));
    let mut damaged = std::fs::read(&path).unwrap();
    damaged[5000] ^= 0xff;
    std::fs::write(&path, damaged).unwrap();

    let (code, report) = fsck(&server.data, &[]);
    assert_eq!(code, 1);
    assert_eq!(report["problems"][0]["kind"], "corrupt_blob");
    assert_eq!(report["problems"][0]["quarantined"], false);

    let (code, report) = fsck(&server.data, &["--quarantine"]);
    assert_eq!(code, 1);
    assert_eq!(report["problems"][0]["quarantined"], true);
    assert_eq!(
        api.get_blob(&digest).status(),
        404,
        "a quarantined blob is not served"
    );
    assert_eq!(api.missing(&[digest]), vec![digest]);
    // Re-uploading the right bytes repairs the store.
    assert_eq!(api.put_blob(&data).status(), 201);
    let (code, report) = fsck(&server.data, &[]);
    assert_eq!(code, 0, "{report:#}");
}

#[test]
fn disk_full_upload_gets_507_keeps_nothing_and_reads_go_on() {
    let Some(disk) = SmallDisk::mount(8) else {
        return;
    };
    let data_dir = disk.path().join("data");
    let server = FerryServer::builder()
        .data(data_dir.display().to_string())
        .start();
    let api = ApiClient::new(&server.url, Some(&server.token));
    let small = pseudo_random_bytes(21, 1 << 20);
    assert_eq!(api.put_blob(&small).status(), 201);

    let too_big = pseudo_random_bytes(22, 12 << 20);
    let response = api.put_blob(&too_big);
    assert_eq!(response.status(), 507);
    assert_eq!(ApiClient::error_code(response), "insufficient_storage");
    assert_eq!(
        api.missing(&[Digest::of(&too_big)]),
        vec![Digest::of(&too_big)]
    );
    let uploads: Vec<_> = std::fs::read_dir(data_dir.join("uploads"))
        .unwrap()
        .flatten()
        .collect();
    assert!(
        uploads.is_empty(),
        "partial upload left on the full disk: {uploads:?}"
    );
    // A batch that does not fit is refused whole, and leaves nothing.
    let parts: Vec<Vec<u8>> = (0..5)
        .map(|i| pseudo_random_bytes(60 + i, 3 << 19))
        .collect();
    let batch: Vec<(Digest, &[u8])> = parts
        .iter()
        .map(|p| (Digest::of(p), p.as_slice()))
        .collect();
    let response = api.put_batch(&batch);
    assert_eq!(response.status(), 507);
    assert_eq!(ApiClient::error_code(response), "insufficient_storage");
    let digests: Vec<Digest> = batch.iter().map(|(d, _)| *d).collect();
    assert_eq!(
        api.missing(&digests).len(),
        5,
        "a refused batch kept a blob"
    );
    let left = std::fs::read_dir(data_dir.join("uploads")).unwrap().count();
    assert_eq!(
        left, 0,
        "a refused batch left upload files on the full disk"
    );
    // Reads keep working, and the space of the refused upload is back.
    assert_eq!(
        api.get_blob(&Digest::of(&small)).bytes().unwrap().as_ref(),
        small.as_slice()
    );
    assert_eq!(
        api.put_blob(&pseudo_random_bytes(23, 1 << 20)).status(),
        201
    );
    assert_eq!(fsck(&server.data, &[]).0, 0);
}

#[test]
fn s3_outage_flips_readiness_and_data_survives() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("flap");
    let mut builder = FerryServer::builder()
        .data("s3://flap")
        .token("flap-upload-token-0123456789");
    for (k, v) in moto.env() {
        builder = builder.env(k, v);
    }
    let server = builder.start();
    let api = ApiClient::new(&server.url, Some(&server.token));
    let data = pseudo_random_bytes(31, 200_000);
    assert_eq!(api.put_blob(&data).status(), 201);
    let ready = || {
        reqwest::blocking::get(server.at("/readyz"))
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(ready(), 200);

    // A hung backend: readiness goes false within its timeout.
    moto.child.signal(19); // SIGSTOP
    assert_eq!(ready(), 503);
    moto.child.signal(18); // SIGCONT
    let deadline = Instant::now() + Duration::from_secs(10);
    while ready() != 200 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(ready(), 200, "readiness did not come back");
    assert_eq!(
        api.get_blob(&Digest::of(&data)).bytes().unwrap().as_ref(),
        data.as_slice()
    );

    // A backend that is gone: clear 503s, not hangs or 500s.
    let port = moto.port;
    drop(moto);
    assert_eq!(ready(), 503);
    let response = api.put_blob(b"while the store is down");
    assert_eq!(response.status(), 503);
    assert_eq!(ApiClient::error_code(response), "storage_unavailable");
    // It comes back (moto keeps data in memory, so the bucket is new and empty).
    let moto = Moto::start_on(port).expect("moto restarts");
    moto.create_bucket("flap");
    assert_eq!(ready(), 200);
    assert_eq!(api.put_blob(b"after the outage").status(), 201);
}

#[test]
fn tls_port_refuses_tls_1_1() {
    let Some(openssl) = ferry_tests::require_tool("openssl", "FERRY_TEST_OPENSSL", &["openssl"])
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cert = ferry_tests::tls::self_signed(dir.path());
    let server = FerryServer::builder().tls(&cert.cert, &cert.key).start();
    let connect = |version: &str| {
        // SECLEVEL=0 lets the client offer old versions, so a refusal is the server's.
        Command::new(&openssl)
            .args([
                "s_client",
                "-connect",
                &format!("127.0.0.1:{}", server.port),
                version,
            ])
            .args(["-cipher", "DEFAULT@SECLEVEL=0"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    assert!(connect("-tls1_2").status.success(), "TLS 1.2 must work");
    assert!(connect("-tls1_3").status.success(), "TLS 1.3 must work");
    assert!(
        !connect("-tls1_1").status.success(),
        "TLS 1.1 must be refused"
    );
}

#[test]
fn reader_that_stops_reading_is_cut_off_but_a_slow_steady_one_is_not() {
    use std::io::Read;
    let server = FerryServer::builder()
        .arg("--io-idle-timeout")
        .arg("1s")
        .start();
    let api = ApiClient::new(&server.url, Some(&server.token));
    let data = pseudo_random_bytes(41, 16 << 20);
    let digest = Digest::of(&data);
    assert_eq!(api.put_blob(&data).status(), 201);
    let request = format!(
        "GET /v1/blobs/{digest} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        server.token
    );

    // Never reads: after the idle timeout the server drops the connection, so
    // draining it later yields far less than the blob.
    let mut stalled = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stalled.write_all(request.as_bytes()).unwrap();
    // A steady reader slower than the whole timeout, but never idle that long.
    let mut steady = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    steady.write_all(request.as_bytes()).unwrap();
    let started = Instant::now();
    let mut steady_total = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    while started.elapsed() < Duration::from_millis(2500) {
        steady_total += steady.read(&mut buf).unwrap();
        std::thread::sleep(Duration::from_millis(150));
    }
    steady
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    loop {
        match steady.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => steady_total += n,
        }
        if steady_total >= data.len() {
            break;
        }
    }
    assert!(
        steady_total >= data.len(),
        "steady reader got {steady_total} bytes"
    );

    stalled
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut stalled_total = 0usize;
    loop {
        match stalled.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => stalled_total += n,
        }
    }
    assert!(
        stalled_total < data.len(),
        "a reader that stopped was never cut off"
    );
    // The server is fine for everyone else.
    assert_eq!(api.get_blob(&digest).bytes().unwrap().len(), data.len());
}

#[test]
fn kill_9_during_garbage_collection_loses_no_live_bundle() {
    let fast_gc = |builder: ferry_tests::FerryServerBuilder| {
        builder
            .args(["--gc-interval", "1s", "--gc-grace", "1s"])
            .start()
    };
    // Staged with GC out of the way, so the sweep below starts with all of it.
    let mut stager = FerryServer::builder().args(["--gc-interval", "1h"]).start();
    let api = ApiClient::new(&stager.url, Some(&stager.token));
    // Live bundles, expiring bundles, and many orphans for the sweep to chew on.
    let mut live = Vec::new();
    for i in 0..20u64 {
        let bytes = pseudo_random_bytes(7000 + i, 2000 + i as usize);
        let created = api.stage(&[("f", &bytes)], json!({"ttl_seconds": 3600}));
        live.push((
            created["id"].as_str().unwrap().to_owned(),
            created["token"].as_str().unwrap().to_owned(),
            bytes,
        ));
    }
    for i in 0..20u64 {
        let bytes = pseudo_random_bytes(8000 + i, 1500);
        api.stage(&[("f", &bytes)], json!({"ttl_seconds": 1}));
    }
    // The sweep deletes in batches of 1000 and counts each batch when it is
    // done, so with four batches' worth the first count leaves two or more
    // batches still to go: the kill lands mid-sweep however fast the disk.
    let orphans: Vec<Vec<u8>> = (0..3100u64)
        .map(|i| pseudo_random_bytes(9000 + i, 1024))
        .collect();
    std::thread::scope(|scope| {
        for part in orphans.chunks(orphans.len().div_ceil(4)) {
            let api = &api;
            scope.spawn(move || {
                for bytes in part {
                    assert_eq!(api.put_blob(bytes).status(), 201);
                }
            });
        }
    });

    stager.kill();
    // Past the grace period and the expiring bundles' TTL.
    std::thread::sleep(Duration::from_millis(1500));
    let mut server = fast_gc(
        FerryServer::builder()
            .data(stager.data.clone())
            .token(stager.token.clone()),
    );

    // Kill the moment the sweep has counted its first batch, before it can finish.
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.metric("ferry_gc_blobs_deleted_total") == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    server.kill();
    let swept_before_kill = deleted_on_disk(&server.data, &orphans);
    assert!(
        swept_before_kill > 0 && swept_before_kill < orphans.len(),
        "the kill did not land mid-sweep ({swept_before_kill} of {} swept)",
        orphans.len()
    );
    eprintln!(
        "killed with {swept_before_kill} of {} orphans swept",
        orphans.len()
    );

    // Nothing half-deleted or corrupt; every live bundle intact.
    let (code, report) = fsck(&server.data, &[]);
    assert_eq!(code, 0, "fsck after kill -9 during GC: {report:#}");
    let mut after = fast_gc(
        FerryServer::builder()
            .data(server.data.clone())
            .token(server.token.clone()),
    );
    let api = ApiClient::new(&after.url, Some(&after.token));
    let check_live = |api: &ApiClient| {
        for (id, token, bytes) in &live {
            let reader = api.as_token(Some(token));
            let status = reader
                .request(Method::GET, &format!("/v1/bundles/{id}"))
                .send()
                .unwrap()
                .status();
            assert_eq!(status, 200, "live bundle {id} lost");
            let got = reader.get_blob(&Digest::of(bytes)).bytes().unwrap();
            assert!(
                got.as_ref() == bytes.as_slice(),
                "live blob of {id} damaged"
            );
        }
    };
    check_live(&api);
    // The restarted server finishes the sweep, still sparing live blobs.
    let deadline = Instant::now() + Duration::from_secs(60);
    while deleted_on_disk(&after.data, &orphans) < orphans.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        deleted_on_disk(&after.data, &orphans),
        orphans.len(),
        "orphans left after restart; log:\n{}",
        after.log()
    );
    check_live(&api);
    after.kill();
    assert_eq!(fsck(&after.data, &[]).0, 0);
}

/// How many of `blobs` are no longer on disk under `data`.
fn deleted_on_disk(data: &str, blobs: &[Vec<u8>]) -> usize {
    blobs
        .iter()
        .filter(|b| {
            let hex = Digest::of(b).hex();
            !Path::new(data)
                .join(format!("blobs/sha256/{}/{hex}", &hex[..2]))
                .exists()
        })
        .count()
}
