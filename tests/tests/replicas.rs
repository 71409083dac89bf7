//! Several `ferry-server` replicas on one bucket (moto for S3, Azurite for
//! Azure), all real processes on loopback: names raced across replicas have
//! one owner, a deleted bundle's token stops working on every replica
//! within the revocation bound, GC on all replicas at once during a write
//! load loses no acknowledged bundle, a replica killed mid-upload leaves the
//! others serving (and its GC lease to them), and ferry-init reads blobs
//! straight from the store through signed-URL redirects — through a
//! recording relay in front of the emulator, which shows that no
//! `Authorization` header went along with a signed URL.

use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use ferry_core::Digest;
use ferry_tests::api::ApiClient;
use ferry_tests::azurite::Azurite;
use ferry_tests::init::{self, path_str, stderr};
use ferry_tests::moto::Moto;
use ferry_tests::relay::CountingRelay;
use ferry_tests::server::FerryServer;
use ferry_tests::{pseudo_random_bytes, wait_until};
use serde_json::{Value, json};

const TOKEN: &str = "replicas-upload-token-0123456789abcdef";

/// A bucket and the environment that points a server at it.
struct Bucket {
    data: String,
    env: Vec<(String, String)>,
    /// In front of the emulator: every request to the store passes it.
    relay: CountingRelay,
    /// Keeps the emulator running.
    _emulator: Box<dyn std::any::Any>,
}

fn moto_bucket(name: &str) -> Option<Bucket> {
    moto_bucket_on(Moto::start()?, name)
}

fn moto_bucket_on(moto: Moto, name: &str) -> Option<Bucket> {
    moto.create_bucket(name);
    let relay = CountingRelay::start(
        ([127, 0, 0, 1], 0).into(),
        ([127, 0, 0, 1], moto.port).into(),
    );
    let endpoint = format!("http://127.0.0.1:{}", relay.addr.port());
    let env = moto
        .env()
        .into_iter()
        .map(|(k, v)| match k.as_str() {
            "AWS_ENDPOINT_URL" | "AWS_ENDPOINT" => (k, endpoint.clone()),
            _ => (k, v),
        })
        .collect();
    Some(Bucket {
        data: format!("s3://{name}/ferry"),
        env,
        relay,
        _emulator: Box::new(moto),
    })
}

fn azurite_bucket(name: &str) -> Option<Bucket> {
    let azurite = Azurite::start()?;
    azurite.create_container(name);
    let relay = CountingRelay::start(
        ([127, 0, 0, 1], 0).into(),
        ([127, 0, 0, 1], azurite.port).into(),
    );
    let endpoint = format!("http://127.0.0.1:{}", relay.addr.port());
    let env = azurite
        .env()
        .into_iter()
        .map(|(k, v)| match k.as_str() {
            "AZURITE_BLOB_STORAGE_URL" => (k, endpoint.clone()),
            _ => (k, v),
        })
        .collect();
    Some(Bucket {
        data: format!("az://{name}/ferry"),
        env,
        relay,
        _emulator: Box::new(azurite),
    })
}

/// `n` replicas on `bucket`, sharing the upload token.
fn replicas(bucket: &Bucket, n: usize, args: &[&str]) -> Vec<FerryServer> {
    (0..n)
        .map(|_| {
            let mut builder = FerryServer::builder()
                .data(bucket.data.clone())
                .token(TOKEN)
                .env("AWS_METADATA_ENDPOINT", "http://127.0.0.1:9")
                .env("AWS_EC2_METADATA_DISABLED", "true")
                .args(args.iter().copied());
            for (k, v) in &bucket.env {
                builder = builder.env(k.clone(), v.clone());
            }
            builder.start()
        })
        .collect()
}

fn api(server: &FerryServer) -> ApiClient {
    ApiClient::new(&server.url, Some(TOKEN))
}

/// A client that follows no redirect, so a `307` is seen as such.
fn no_redirects(server: &FerryServer, token: &str) -> ApiClient {
    let http = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client");
    ApiClient::with_client(&server.url, Some(token), http)
}

fn entry(path: &str, bytes: &[u8]) -> Value {
    json!({"path": path, "digest": Digest::of(bytes), "size": bytes.len()})
}

/// Each replica POSTs `body` at once; returns every answer (status, body).
fn race(servers: &[FerryServer], body: &Value) -> Vec<(u16, Value)> {
    let barrier = Arc::new(Barrier::new(servers.len()));
    std::thread::scope(|scope| {
        let handles: Vec<_> = servers
            .iter()
            .map(|server| {
                let (barrier, client) = (barrier.clone(), api(server));
                scope.spawn(move || {
                    barrier.wait();
                    let response = client.create_bundle(body);
                    let status = response.status().as_u16();
                    (status, response.json().unwrap_or(Value::Null))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("racer"))
            .collect()
    })
}

/// Exactly one 201, the others `409 name_taken`; returns the winner's id.
fn one_winner(round: &str, answers: &[(u16, Value)], servers: &[FerryServer]) -> String {
    let winners: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == 201)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "{round}: answers {answers:?}; logs:\n{}",
        servers[0].log()
    );
    for (status, body) in answers.iter().filter(|(s, _)| *s != 201) {
        assert_eq!(*status, 409, "{round}: {body}");
        assert_eq!(body["error"]["code"], "name_taken", "{round}: {body}");
    }
    winners[0]["id"].as_str().expect("winner id").to_owned()
}

/// The id every replica resolves `name` to.
fn resolved_everywhere(servers: &[FerryServer], name: &str) -> Vec<String> {
    servers
        .iter()
        .map(|server| {
            let response = api(server)
                .request(reqwest::Method::GET, &format!("/v1/bundles/{name}"))
                .send()
                .expect("GET bundle");
            assert_eq!(response.status(), 200, "{name} on {}", server.url);
            let body: Value = response.json().expect("manifest");
            body["id"].as_str().expect("id").to_owned()
        })
        .collect()
}

fn raced_names_have_one_owner(bucket: Bucket) {
    let servers = replicas(&bucket, 3, &["--gc-interval", "1h"]);
    let blob = pseudo_random_bytes(1, 10_000);
    assert!(api(&servers[0]).put_blob(&blob).status().is_success());
    for round in 0..100 {
        let name = format!("race-{round}");
        let body = json!({"name": name, "entries": [entry("a.jar", &blob)]});
        let answers = race(&servers, &body);
        let winner = one_winner(&name, &answers, &servers);
        assert_eq!(resolved_everywhere(&servers, &name), vec![winner; 3]);
    }

    // Names whose bundles expired: raced takeovers, one winner each.
    let names: Vec<String> = (0..5).map(|i| format!("expiring-{i}")).collect();
    for name in &names {
        let body = json!({"name": name, "ttl_seconds": 1, "entries": [entry("a.jar", &blob)]});
        assert_eq!(api(&servers[1]).create_bundle(&body).status(), 201);
    }
    std::thread::sleep(Duration::from_millis(2100));
    for name in &names {
        let body = json!({"name": name, "entries": [entry("a.jar", &blob)]});
        let answers = race(&servers, &body);
        let winner = one_winner(name, &answers, &servers);
        assert_eq!(resolved_everywhere(&servers, name), vec![winner; 3]);
    }
}

#[test]
fn raced_names_have_one_owner_on_moto() {
    // moto's conditional PUT is not atomic (see `Moto::start_atomic`).
    let Some(bucket) = Moto::start_atomic().and_then(|moto| moto_bucket_on(moto, "race")) else {
        return;
    };
    raced_names_have_one_owner(bucket);
}

#[test]
fn raced_names_have_one_owner_on_azurite() {
    let Some(bucket) = azurite_bucket("race") else {
        return;
    };
    raced_names_have_one_owner(bucket);
}

/// The bundle token's answer for its blob on `server` (no redirect followed).
fn token_answer(server: &FerryServer, token: &str, digest: &Digest) -> u16 {
    no_redirects(server, token)
        .get_blob(digest)
        .status()
        .as_u16()
}

fn revocation_reaches_every_replica(bucket: Bucket) {
    let servers = replicas(&bucket, 3, &["--gc-interval", "1h"]);
    let blob = pseudo_random_bytes(2, 20_000);
    let digest = Digest::of(&blob);
    let bundle = api(&servers[0]).stage(&[("a.jar", &blob)], json!({}));
    let (id, token) = (
        bundle["id"].as_str().unwrap(),
        bundle["token"].as_str().unwrap(),
    );
    // Every replica has granted (and cached) the token.
    for server in &servers {
        assert_eq!(token_answer(server, token, &digest), 307, "{}", server.url);
    }
    let deleted = api(&servers[0])
        .request(reqwest::Method::DELETE, &format!("/v1/bundles/{id}"))
        .send()
        .expect("DELETE");
    assert!(deleted.status().is_success(), "{:?}", deleted.text());
    let deleted_at = Instant::now();
    assert_eq!(token_answer(&servers[0], token, &digest), 401);
    // The bound is 1 s (the default); 300 ms of margin for this machine.
    std::thread::sleep(Duration::from_millis(1300).saturating_sub(deleted_at.elapsed()));
    for server in &servers[1..] {
        assert_eq!(
            token_answer(server, token, &digest),
            401,
            "{} still honours a deleted bundle's token after the revocation bound",
            server.url
        );
    }
}

#[test]
fn a_deleted_bundles_token_is_refused_on_every_replica_within_the_bound_on_moto() {
    let Some(bucket) = moto_bucket("revoke") else {
        return;
    };
    revocation_reaches_every_replica(bucket);
}

#[test]
fn a_deleted_bundles_token_is_refused_on_every_replica_within_the_bound_on_azurite() {
    let Some(bucket) = azurite_bucket("revoke") else {
        return;
    };
    revocation_reaches_every_replica(bucket);
}

/// Runs ferry-init for `bundle` against `server`; returns what it wrote.
fn fetch_with_init(server: &FerryServer, bundle: &str, token: &str) -> tempfile::TempDir {
    fetch_with_init_args(server, bundle, token, &[])
}

/// [`fetch_with_init`] with `extra` ferry-init options.
fn fetch_with_init_args(
    server: &FerryServer,
    bundle: &str,
    token: &str,
    extra: &[&str],
) -> tempfile::TempDir {
    let work = tempfile::tempdir().unwrap();
    let token_file = work.path().join("token");
    std::fs::write(&token_file, token).unwrap();
    let dest = work.path().join("dest");
    let output = init::run(
        &[
            "--server",
            &server.url,
            "--token-file",
            path_str(&token_file),
            "--into",
            path_str(&dest),
            &format!("ferry://{bundle}"),
        ]
        .into_iter()
        .chain(extra.iter().copied())
        .collect::<Vec<_>>(),
    );
    assert!(
        output.status.success(),
        "ferry-init failed: {}\nserver log:\n{}",
        stderr(&output),
        server.log()
    );
    work
}

fn init_reads_blobs_from_the_store(bucket: Bucket, signature: &str) {
    let servers = replicas(&bucket, 3, &["--gc-interval", "1h"]);
    let small = pseudo_random_bytes(3, 70_000);
    let large = pseudo_random_bytes(4, 3 * 1024 * 1024 + 17);
    let bundle = api(&servers[0]).stage(
        &[("jars/small.jar", &small), ("files/large.bin", &large)],
        json!({"name": "redirected"}),
    );
    let token = bundle["token"].as_str().unwrap();
    let work = fetch_with_init(&servers[2], "redirected", token);
    let dest = work.path().join("dest");
    assert_eq!(std::fs::read(dest.join("jars/small.jar")).unwrap(), small);
    assert_eq!(std::fs::read(dest.join("files/large.bin")).unwrap(), large);

    // No blob byte went through any server; the reader's replica redirected.
    for server in &servers {
        assert_eq!(server.metric("ferry_bytes_sent_total"), 0, "{}", server.url);
    }
    assert!(servers[2].metric("ferry_blob_redirects_total") >= 2);
    // The signed GETs reached the store without an Authorization header.
    let signed: Vec<String> = bucket
        .relay
        .request_heads("GET")
        .into_iter()
        .filter(|head| head.lines().next().is_some_and(|l| l.contains(signature)))
        .collect();
    assert!(
        signed.len() >= 2,
        "no signed GET reached the store: {:?}",
        bucket.relay.request_heads("GET")
    );
    for head in &signed {
        assert!(
            !head
                .lines()
                .any(|l| l.to_ascii_lowercase().starts_with("authorization:")),
            "a signed GET carried an Authorization header:\n{head}"
        );
    }
    // And the bundle token went nowhere but the servers.
    for head in bucket.relay.request_heads("GET") {
        assert!(!head.contains(token), "the bundle token reached the store");
    }

    // A replica proxying (`?redirect=false`) still serves, and counts it.
    let response = no_redirects(&servers[1], token)
        .request(
            reqwest::Method::GET,
            &format!("/v1/blobs/{}?redirect=false", Digest::of(&small)),
        )
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().unwrap().as_ref(), small.as_slice());
    assert_eq!(
        servers[1].metric("ferry_bytes_sent_total"),
        small.len() as u64
    );
}

#[test]
fn ferry_init_reads_blobs_through_redirects_without_its_token_on_moto() {
    let Some(bucket) = moto_bucket("redirects") else {
        return;
    };
    init_reads_blobs_from_the_store(bucket, "X-Amz-Signature=");
}

#[test]
fn ferry_init_reads_blobs_through_redirects_without_its_token_on_azurite() {
    let Some(bucket) = azurite_bucket("redirects") else {
        return;
    };
    init_reads_blobs_from_the_store(bucket, "sig=");
}

/// A signed URL that expires between retries: the store's transfer is cut
/// part way (a relay stands where the network would drop it), ferry-init
/// waits its retry delay, longer than the URL lives, the store refuses the
/// old URL, and ferry-init asks the server for a new one and resumes at the
/// offset it had. On Azurite, which enforces a SAS's expiry; moto does not
/// check a presigned URL's expiry, so it cannot play this part.
#[test]
fn a_signed_url_that_expires_between_retries_is_renewed_and_the_fetch_resumes() {
    let Some(bucket) = azurite_bucket("expiry") else {
        return;
    };
    let servers = replicas(
        &bucket,
        1,
        &["--gc-interval", "1h", "--redirect-expiry", "2s"],
    );
    let large = pseudo_random_bytes(5, 8 * 1024 * 1024 + 3);
    let bundle =
        api(&servers[0]).stage(&[("files/large.bin", &large)], json!({"name": "expiring"}));
    let token = bundle["token"].as_str().unwrap();
    let cut_after = 2 * 1024 * 1024;
    bucket.relay.cut_once("sig=", cut_after);
    // Equal jitter: the first retry waits 4-8 s, past the 2 s expiry.
    let work = fetch_with_init_args(&servers[0], "expiring", token, &["--retry-delay", "8s"]);
    assert_eq!(
        std::fs::read(work.path().join("dest/files/large.bin")).unwrap(),
        large
    );

    let signed: Vec<String> = bucket
        .relay
        .request_heads("GET")
        .into_iter()
        .filter(|head| head.lines().next().is_some_and(|l| l.contains("sig=")))
        .collect();
    let line = |head: &String| head.lines().next().unwrap_or_default().to_owned();
    let range = |head: &String| {
        head.lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("range: bytes=")
                    .map(|r| r.trim_end_matches('-').parse::<u64>().unwrap())
            })
            .unwrap_or(0)
    };
    // The cut transfer, the same URL refused after the retry delay, and a
    // new URL resuming where the cut left off.
    assert_eq!(signed.len(), 3, "signed GETs: {signed:#?}");
    assert_eq!(line(&signed[0]), line(&signed[1]), "{signed:#?}");
    assert_ne!(line(&signed[1]), line(&signed[2]), "{signed:#?}");
    assert_eq!(range(&signed[0]), 0);
    let resumed = range(&signed[2]);
    assert!(
        resumed > 0 && resumed < cut_after,
        "the new URL did not resume the transfer: {signed:#?}"
    );
    assert_eq!(range(&signed[1]), resumed, "{signed:#?}");
    assert_eq!(servers[0].metric("ferry_blob_redirects_total"), 2);
    assert_eq!(servers[0].metric("ferry_bytes_sent_total"), 0);
}

/// GC on three replicas every 100 ms, with a short grace, while writers
/// upload and create bundles on all of them and fsck checks the bucket:
/// every acknowledged bundle stays whole, and fsck finds no damage.
#[test]
fn gc_on_every_replica_during_a_write_load_keeps_every_acknowledged_bundle() {
    let Some(bucket) = moto_bucket("gc-load") else {
        return;
    };
    let servers = replicas(
        &bucket,
        3,
        &[
            "--gc-interval",
            "100ms",
            "--gc-grace",
            "1s",
            "--gc-lease-ttl",
            "2s",
        ],
    );
    let acknowledged = Mutex::new(Vec::<(String, Vec<u8>)>::new());
    let refused = Mutex::new(0u32);
    std::thread::scope(|scope| {
        // fsck on the bucket the replicas are writing: what they change
        // meanwhile is not damage (two bounded runs).
        let (data, env) = (bucket.data.clone(), bucket.env.clone());
        scope.spawn(move || {
            for _ in 0..2 {
                std::thread::sleep(Duration::from_millis(1500));
                let output = std::process::Command::new(ferry_tests::bin("ferry-server"))
                    .args(["fsck", "--data", &data])
                    .envs(env.iter().map(|(k, v)| (k, v)))
                    .env("AWS_METADATA_ENDPOINT", "http://127.0.0.1:9")
                    .output()
                    .expect("run ferry-server fsck");
                assert!(
                    output.status.success(),
                    "fsck during the load: {}\n{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        });
        for writer in 0..3u64 {
            let (servers, acknowledged, refused) = (&servers, &acknowledged, &refused);
            scope.spawn(move || {
                // Bounded: 25 bundles per writer.
                for i in 0..25u64 {
                    let blob = pseudo_random_bytes(1000 * writer + i, 5_000 + i as usize);
                    let upload = api(&servers[(i % 3) as usize]);
                    assert!(upload.put_blob(&blob).status().is_success());
                    // Some bundles are created after the grace, racing GC
                    // for their blob; some expire at once (garbage).
                    if i % 5 == 0 {
                        std::thread::sleep(Duration::from_millis(1200));
                    }
                    let ttl = if i % 4 == 0 { json!(1) } else { json!("never") };
                    let body = json!({"ttl_seconds": ttl, "entries": [entry("b.bin", &blob)]});
                    let response = api(&servers[((i + writer) % 3) as usize]).create_bundle(&body);
                    match response.status().as_u16() {
                        201 if ttl == "never" => {
                            let id = response.json::<Value>().unwrap()["id"]
                                .as_str()
                                .unwrap()
                                .to_owned();
                            acknowledged.lock().unwrap().push((id, blob));
                        }
                        201 => {}
                        409 => {
                            assert_eq!(ApiClient::error_code(response), "missing_blobs");
                            *refused.lock().unwrap() += 1;
                        }
                        other => panic!("create: {other}: {:?}", response.text()),
                    }
                }
            });
        }
    });
    // A few more sweeps after the load.
    std::thread::sleep(Duration::from_secs(2));
    let acknowledged = acknowledged.into_inner().unwrap();
    assert!(
        acknowledged.len() >= 40,
        "{} acknowledged",
        acknowledged.len()
    );
    let runs: u64 = servers
        .iter()
        .map(|s| s.metric("ferry_gc_runs_total"))
        .sum();
    assert!(runs >= 3, "GC ran {runs} times in all");
    let deleted: u64 = servers
        .iter()
        .map(|s| s.metric("ferry_gc_blobs_deleted_total"))
        .sum();
    assert!(deleted >= 1, "GC deleted nothing: the test raced nothing");
    for (id, blob) in &acknowledged {
        let reader = api(&servers[0]);
        let response = reader
            .request(reqwest::Method::GET, &format!("/v1/bundles/{id}"))
            .send()
            .unwrap();
        assert_eq!(response.status(), 200, "acknowledged bundle {id} is gone");
        let response = reader.get_blob(&Digest::of(blob));
        assert_eq!(response.status(), 200, "blob of {id}");
        assert_eq!(response.bytes().unwrap().as_ref(), blob.as_slice());
    }
    eprintln!(
        "{} acknowledged bundles intact; {} creates refused as missing_blobs; {runs} GC runs, {deleted} blobs deleted",
        acknowledged.len(),
        refused.into_inner().unwrap()
    );
}

/// A replica killed with SIGKILL mid-upload (the GC lease's keeper, as the
/// first one up is) leaves the others serving, and the GC job to them.
/// (Whether it died holding the lease or between runs depends on timing;
/// the takeover of a held lease after its TTL is in `lease.rs`'s tests.)
#[test]
fn a_replica_killed_mid_upload_leaves_the_others_serving_and_its_lease_to_them() {
    let Some(bucket) = moto_bucket("kill") else {
        return;
    };
    let args = [
        "--gc-interval",
        "200ms",
        "--gc-grace",
        "1h",
        "--gc-lease-ttl",
        "2s",
    ];
    let mut first = replicas(&bucket, 1, &args);
    // The first replica up takes the lease.
    assert!(
        wait_until(Duration::from_secs(10), || first[0]
            .metric("ferry_gc_runs_total")
            >= 1),
        "{}",
        first[0].log()
    );
    let others = replicas(&bucket, 2, &args);
    let blob = pseudo_random_bytes(5, 2_000_000);
    let held = ferry_tests::api::start_partial_put(
        first[0].port,
        TOKEN,
        &Digest::of(&blob),
        blob.len(),
        &blob[..blob.len() / 2],
    );
    std::thread::sleep(Duration::from_millis(200));
    first[0].kill();
    drop(held);

    let bundle = api(&others[0]).stage(&[("x.bin", &blob)], json!({}));
    let token = bundle["token"].as_str().unwrap();
    let response = ApiClient::new(&others[1].url, Some(token)).get_blob(&Digest::of(&blob));
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().unwrap().as_ref(), blob.as_slice());
    // One of the others takes the lease over and sweeps.
    assert!(
        wait_until(Duration::from_secs(15), || others
            .iter()
            .any(|s| s.metric("ferry_gc_runs_total") >= 1)),
        "no replica took over the GC lease; logs:\n{}\n{}",
        others[0].log(),
        others[1].log()
    );
}
