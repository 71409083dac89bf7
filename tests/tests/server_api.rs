//! ferry-server end to end: the real binary on a loopback port, spoken to
//! over HTTP. The storage cases run once on local disk and once on moto's
//! S3 server, so both backends keep the same contract.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use ferry_core::Digest;
use ferry_tests::api::{ApiClient, read_status, start_partial_put};
use ferry_tests::moto::Moto;
use ferry_tests::{FerryServer, pseudo_random_bytes};
use reqwest::Method;
use serde_json::{Value, json};

fn client(server: &FerryServer) -> ApiClient {
    ApiClient::new(&server.url, Some(&server.token))
}

/// Files under `dir`, recursively (empty when it does not exist).
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Waits (bounded) until no upload is in flight in a local data directory.
fn assert_no_uploads_left(server: &FerryServer) {
    let uploads = Path::new(&server.data).join("uploads");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !files_under(&uploads).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        files_under(&uploads),
        Vec::<std::path::PathBuf>::new(),
        "partial uploads left behind"
    );
}

/// Waits (bounded) until the server has counted one upload refused for a
/// broken body: after a client hangs up, the server may not even have
/// opened its temporary file yet, so leftovers are looked for only then.
fn wait_for_broken_body(server: &FerryServer) {
    let refused = "ferry_uploads_rejected_total{reason=\"body_broken\"} 1";
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.metrics().contains(refused) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        server.metrics().contains(refused),
        "the cut-short upload was not counted as refused:\n{}",
        server.metrics()
    );
}

// ---- the storage contract, run against each backend -------------------

fn blob_round_trip_and_dedup(server: &FerryServer) {
    let api = client(server);
    let data = pseudo_random_bytes(1, 3 << 20);
    let digest = Digest::of(&data);
    assert_eq!(api.missing(&[digest]), vec![digest]);
    assert_eq!(api.put_blob(&data).status(), 201);
    assert_eq!(
        api.put_blob(&data).status(),
        200,
        "second upload reports already present"
    );
    assert!(api.missing(&[digest]).is_empty());
    let response = api.get_blob(&digest);
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"], format!("\"{digest}\"").as_str());
    assert!(
        response.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    assert_eq!(
        response.headers()["content-length"],
        data.len().to_string().as_str()
    );
    assert_eq!(response.bytes().unwrap().as_ref(), data.as_slice());
    let head = api
        .request(Method::HEAD, &format!("/v1/blobs/{digest}"))
        .send()
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"],
        data.len().to_string().as_str()
    );
}

fn wrong_digest_stores_nothing(server: &FerryServer) {
    let api = client(server);
    let claimed = Digest::of(b"what the client promised");
    let response = api.put_blob_as(&claimed, b"something else entirely");
    assert_eq!(response.status(), 400);
    assert_eq!(ApiClient::error_code(response), "digest_mismatch");
    assert_eq!(api.missing(&[claimed]), vec![claimed]);
    assert_eq!(
        api.missing(&[Digest::of(b"something else entirely")]).len(),
        1
    );
    assert_eq!(api.get_blob(&claimed).status(), 404);
}

/// A batch (`POST /v1/blobs`) stores every part, says which were new,
/// and one part named by the wrong digest keeps nothing of its batch.
fn batches_store_all_or_nothing(server: &FerryServer) {
    let api = client(server);
    let present = pseudo_random_bytes(40, 30_000);
    assert_eq!(api.put_blob(&present).status(), 201);
    let new: Vec<Vec<u8>> = (41..44).map(|s| pseudo_random_bytes(s, 50_000)).collect();
    let mut parts: Vec<(Digest, &[u8])> =
        new.iter().map(|b| (Digest::of(b), b.as_slice())).collect();
    parts.push((Digest::of(&present), &present));
    // The same blob twice in one batch is stored once.
    parts.push((Digest::of(&new[0]), &new[0]));
    parts.push((Digest::of(b""), b""));
    let response = api.put_batch(&parts);
    assert_eq!(response.status(), 200);
    let body: Value = response.json().unwrap();
    let created: Vec<bool> = body["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["created"].as_bool().unwrap())
        .collect();
    assert_eq!(created, [true, true, true, false, false, true]);
    assert_eq!(body["blobs"][1]["digest"], json!(Digest::of(&new[1])));
    assert_eq!(body["blobs"][1]["size"], json!(50_000));
    for blob in &new {
        assert_eq!(
            api.get_blob(&Digest::of(blob)).bytes().unwrap().as_ref(),
            blob
        );
    }
    assert_eq!(api.get_blob(&Digest::of(b"")).status(), 200);

    let good = pseudo_random_bytes(45, 20_000);
    let bad = pseudo_random_bytes(46, 20_000);
    let claimed = Digest::of(b"not these bytes");
    let response = api.put_batch(&[(Digest::of(&good), &good), (claimed, &bad)]);
    assert_eq!(response.status(), 400);
    let text = response.text().unwrap();
    assert!(
        text.contains("digest_mismatch") && text.contains(&claimed.to_string()),
        "{text}"
    );
    assert_eq!(
        api.missing(&[Digest::of(&good), Digest::of(&bad), claimed])
            .len(),
        3,
        "a refused batch kept a blob"
    );
}

fn range_requests(server: &FerryServer) {
    let api = client(server);
    let data = pseudo_random_bytes(2, 10_000);
    let digest = Digest::of(&data);
    api.put_blob(&data);
    let get = |range: &str| {
        api.request(Method::GET, &format!("/v1/blobs/{digest}"))
            .header("Range", range)
            .send()
            .unwrap()
    };
    let r = get("bytes=100-199");
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 100-199/10000");
    assert_eq!(r.bytes().unwrap().as_ref(), &data[100..200]);
    let r = get("bytes=9990-");
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().unwrap().as_ref(), &data[9990..]);
    let r = get("bytes=-5");
    assert_eq!(r.bytes().unwrap().as_ref(), &data[9995..]);
    let r = get("bytes=10000-10010");
    assert_eq!(r.status(), 416);
    assert_eq!(r.headers()["content-range"], "bytes */10000");
    assert_eq!(ApiClient::error_code(r), "range_not_satisfiable");
    let r = get("bytes=0-1,5-6");
    assert_eq!(
        r.status(),
        200,
        "multiple ranges fall back to the whole blob"
    );
    assert_eq!(r.bytes().unwrap().len(), 10_000);
}

fn bundle_lifecycle(server: &FerryServer) {
    let api = client(server);
    let created = api.stage(
        &[("jars/a.jar", b"aaa"), ("files/conf.yaml", b"k: v")],
        json!({"labels": {"team": "data"}, "owner": {"namespace": "spark", "selector": "app=etl"}}),
    );
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("id-"));
    assert!(
        created["expires_at"].is_string(),
        "unnamed bundles get the default TTL"
    );
    let manifest: Value = api
        .request(Method::GET, &format!("/v1/bundles/{id}"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(manifest["entries"].as_array().unwrap().len(), 2);
    assert_eq!(manifest["owner"]["selector"], "app=etl");
    assert!(
        manifest.get("token").is_none(),
        "the manifest never carries the token"
    );
    let list: Value = api
        .request(Method::GET, "/v1/bundles?label=team=data")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(
        list["bundles"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["id"] == id.as_str())
    );
    let list: Value = api
        .request(Method::GET, "/v1/bundles?label=team=other")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(list["bundles"].as_array().unwrap().is_empty());
    assert_eq!(
        api.request(Method::DELETE, &format!("/v1/bundles/{id}"))
            .send()
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        api.request(Method::GET, &format!("/v1/bundles/{id}"))
            .send()
            .unwrap()
            .status(),
        404
    );
    let token = created["token"].as_str().unwrap();
    assert_eq!(
        api.as_token(Some(token))
            .get_blob(&Digest::of(b"aaa"))
            .status(),
        401,
        "a deleted bundle's token opens nothing"
    );
}

fn named_bundles(server: &FerryServer) {
    let api = client(server);
    let created = api.stage(
        &[("libs/x.jar", b"x")],
        json!({"name": "team-libs-2026.11"}),
    );
    assert!(
        created["expires_at"].is_null(),
        "named bundles default to never expiring"
    );
    let by_name = api
        .request(Method::GET, "/v1/bundles/team-libs-2026.11")
        .send()
        .unwrap();
    assert_eq!(by_name.status(), 200);
    let taken = api.create_bundle(&json!({
        "name": "team-libs-2026.11",
        "entries": [{"path": "y", "digest": Digest::of(b"x"), "size": 1}]
    }));
    assert_eq!(taken.status(), 409);
    assert_eq!(ApiClient::error_code(taken), "name_taken");
    let list: Value = api
        .request(Method::GET, "/v1/bundles?name=team-libs")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(list["bundles"].as_array().unwrap().len(), 1);
    // After deletion the name is free again.
    api.request(Method::DELETE, "/v1/bundles/team-libs-2026.11")
        .send()
        .unwrap();
    api.stage(
        &[("libs/x.jar", b"x")],
        json!({"name": "team-libs-2026.11"}),
    );
}

fn run_storage_contract(server: &FerryServer) {
    blob_round_trip_and_dedup(server);
    wrong_digest_stores_nothing(server);
    batches_store_all_or_nothing(server);
    range_requests(server);
    bundle_lifecycle(server);
    named_bundles(server);
}

#[test]
fn storage_contract_holds_on_local_disk() {
    let server = FerryServer::start();
    run_storage_contract(&server);
    assert_no_uploads_left(&server);
}

#[test]
fn storage_contract_holds_on_s3() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("ferry-test");
    let mut builder = FerryServer::builder()
        .data("s3://ferry-test/some/prefix")
        .token("s3-upload-token-0123456789")
        // The contract is what the server itself serves (headers, ranges,
        // 404s); redirected reads to the store are `tests/replicas.rs`'s.
        .arg("--redirect=false");
    for (k, v) in moto.env() {
        builder = builder.env(k, v);
    }
    let mut server = builder.start();
    assert_eq!(
        reqwest::blocking::get(server.at("/readyz"))
            .unwrap()
            .status(),
        200
    );
    run_storage_contract(&server);
    // Data lives in the bucket, not in the server: a restart sees it all.
    let data = pseudo_random_bytes(1, 3 << 20);
    server.restart();
    assert_eq!(
        client(&server)
            .get_blob(&Digest::of(&data))
            .bytes()
            .unwrap()
            .as_ref(),
        data.as_slice()
    );
    // With the bucket's server gone, readiness says so.
    drop(moto);
    let ready = reqwest::blocking::get(server.at("/readyz")).unwrap();
    assert_eq!(ready.status(), 503);
}

// ---- local-disk and process behaviour ----------------------------------

#[test]
fn every_route_answers_its_success_path() {
    let server = FerryServer::start();
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(
            reqwest::blocking::get(server.at(path)).unwrap().status(),
            200,
            "{path}"
        );
    }
    let api = client(&server);
    let created = api.stage(&[("a.txt", b"hello")], json!({}));
    let id = created["id"].as_str().unwrap();
    assert_eq!(api.get_blob(&Digest::of(b"hello")).status(), 200);
    assert_eq!(
        api.request(Method::GET, &format!("/v1/bundles/{id}"))
            .send()
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        api.request(Method::GET, "/v1/bundles")
            .send()
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        api.request(Method::DELETE, &format!("/v1/bundles/{id}"))
            .send()
            .unwrap()
            .status(),
        204
    );
    assert_eq!(server.metric("ferry_bundles_created_total"), 1);
    assert_eq!(server.metric("ferry_blobs_stored_total"), 1);
    assert_eq!(server.metric("ferry_bytes_received_total"), 5);
}

#[test]
fn generated_upload_token_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let server = FerryServer::start();
    let path = Path::new(&server.data).join("upload-token");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(server.token.len() >= 43, "256 bits in base64url");
    assert!(
        !server.log().contains(&server.token),
        "the token never appears in the log"
    );
}

#[test]
fn missing_wrong_and_foreign_tokens_are_refused() {
    let server = FerryServer::start();
    let api = client(&server);
    let mine = api.stage(&[("a", b"mine")], json!({}));
    let theirs = api.stage(&[("b", b"theirs")], json!({}));
    let anonymous = api.as_token(None);
    let wrong = api.as_token(Some("not-a-real-token-at-all-000000000000000"));
    let reader = api.as_token(mine["token"].as_str());

    for (who, client) in [("no token", &anonymous), ("wrong token", &wrong)] {
        for response in [
            client.get_blob(&Digest::of(b"mine")),
            client.put_blob(b"new"),
            client.request(Method::GET, "/v1/bundles").send().unwrap(),
            client
                .request(Method::POST, "/v1/blobs/missing")
                .json(&json!({"digests": []}))
                .send()
                .unwrap(),
        ] {
            assert_eq!(response.status(), 401, "{who}");
        }
    }
    // A bundle token reads its own bundle and the blobs it lists, nothing else.
    assert_eq!(reader.get_blob(&Digest::of(b"mine")).status(), 200);
    assert_eq!(reader.get_blob(&Digest::of(b"theirs")).status(), 403);
    let own = mine["id"].as_str().unwrap();
    let other = theirs["id"].as_str().unwrap();
    assert_eq!(
        reader
            .request(Method::GET, &format!("/v1/bundles/{own}"))
            .send()
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        reader
            .request(Method::GET, &format!("/v1/bundles/{other}"))
            .send()
            .unwrap()
            .status(),
        403
    );
    assert_eq!(reader.put_blob(b"sneaky").status(), 403);
    assert_eq!(
        reader
            .request(Method::DELETE, &format!("/v1/bundles/{own}"))
            .send()
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        reader
            .request(Method::GET, "/v1/bundles")
            .send()
            .unwrap()
            .status(),
        403
    );
    let log = server.log();
    for token in [server.token.as_str(), mine["token"].as_str().unwrap()] {
        assert!(!log.contains(token), "a token leaked into the log");
    }
}

#[test]
fn expired_bundle_token_is_refused() {
    let server = FerryServer::start();
    let api = client(&server);
    let created = api.stage(&[("a", b"short-lived")], json!({"ttl_seconds": 1}));
    let reader = api.as_token(created["token"].as_str());
    assert_eq!(reader.get_blob(&Digest::of(b"short-lived")).status(), 200);
    std::thread::sleep(Duration::from_millis(2100));
    let id = created["id"].as_str().unwrap();
    assert_eq!(
        api.request(Method::GET, &format!("/v1/bundles/{id}"))
            .send()
            .unwrap()
            .status(),
        404
    );
    // Refused at once, although the grant was cached a moment ago.
    assert_eq!(reader.get_blob(&Digest::of(b"short-lived")).status(), 401);
    let mut server = server;
    server.restart();
    let reader = ApiClient::new(&server.url, created["token"].as_str());
    assert_eq!(reader.get_blob(&Digest::of(b"short-lived")).status(), 401);
}

#[test]
fn revoked_and_malformed_tokens_are_refused_on_every_route_and_never_echoed() {
    let server = FerryServer::start();
    let api = client(&server);
    let kept = api.stage(&[("k", b"kept")], json!({}));
    let revoked = api.stage(&[("r", b"revoked")], json!({}));
    let revoked_token = revoked["token"].as_str().unwrap().to_owned();
    let revoked_reader = api.as_token(Some(&revoked_token));
    assert_eq!(
        revoked_reader.get_blob(&Digest::of(b"revoked")).status(),
        200
    );
    let id = revoked["id"].as_str().unwrap();
    let deleted = api
        .request(Method::DELETE, &format!("/v1/bundles/{id}"))
        .send()
        .unwrap();
    assert_eq!(deleted.status(), 204);

    let kept_id = kept["id"].as_str().unwrap();
    let digest = Digest::of(b"kept");
    let routes: Vec<(Method, String)> = vec![
        (Method::GET, format!("/v1/blobs/{digest}")),
        (Method::HEAD, format!("/v1/blobs/{digest}")),
        (Method::PUT, format!("/v1/blobs/{}", Digest::of(b"x"))),
        (Method::POST, "/v1/blobs/missing".into()),
        (Method::POST, "/v1/bundles".into()),
        (Method::GET, "/v1/bundles".into()),
        (Method::GET, format!("/v1/bundles/{kept_id}")),
        (Method::DELETE, format!("/v1/bundles/{kept_id}")),
    ];
    let long = "A".repeat(5000);
    let headers: Vec<(&str, Option<String>)> = vec![
        (
            "revoked bundle token",
            Some(format!("Bearer {revoked_token}")),
        ),
        ("no scheme", Some(server.token.clone())),
        ("basic auth", Some(format!("Basic {}", server.token))),
        ("empty bearer", Some("Bearer ".into())),
        (
            "bearer twice",
            Some(format!("Bearer Bearer {}", server.token)),
        ),
        (
            "token with a space",
            Some(format!("Bearer {} x", server.token)),
        ),
        ("overlong token", Some(format!("Bearer {long}"))),
        ("no header", None),
    ];
    let http = reqwest::blocking::Client::new();
    for (what, header) in &headers {
        for (method, path) in &routes {
            let mut request = http.request(method.clone(), server.at(path));
            if let Some(value) = header {
                request = request.header("Authorization", value);
            }
            let response = request.body("{}").send().unwrap();
            let status = response.status().as_u16();
            let body = response.text().unwrap_or_default();
            assert_eq!(
                status, 401,
                "{what}: {method} {path} answered {status}: {body}"
            );
            assert!(
                !body.contains(&server.token) && !body.contains(&revoked_token),
                "{what}: a token was echoed in {body}"
            );
        }
    }
    // The kept bundle was not touched by any of that.
    assert_eq!(api.get_blob(&digest).status(), 200);
    let metrics = server.metrics();
    let log = server.log();
    for token in [
        &server.token,
        &revoked_token,
        &kept["token"].as_str().unwrap().to_owned(),
    ] {
        assert!(!log.contains(token.as_str()), "a token leaked into the log");
        assert!(
            !metrics.contains(token.as_str()),
            "a token leaked into the metrics"
        );
    }
}

#[test]
fn evil_entry_paths_are_refused_and_nothing_is_created() {
    let server = FerryServer::start();
    let api = client(&server);
    api.put_blob(b"payload");
    let digest = Digest::of(b"payload");
    let evil = [
        "../escape.jar".to_owned(),
        "jars/../../escape.jar".into(),
        "/etc/passwd".into(),
        "jars//a.jar".into(),
        "jars/./a.jar".into(),
        "jars\\..\\a.jar".into(),
        "jars/a\u{0}.jar".into(),
        "C:/windows/a.jar".into(),
        "x".repeat(2000),
        String::new(),
    ];
    for path in &evil {
        let response =
            api.create_bundle(&json!({"entries": [{"path": path, "digest": digest, "size": 7}]}));
        assert_eq!(response.status(), 400, "{path:?}");
        let code = ApiClient::error_code(response);
        assert!(
            code == "invalid_path" || code == "bad_request",
            "{path:?}: {code}"
        );
    }
    for entries in [
        json!([{"path": "a", "digest": digest, "size": 7}, {"path": "a", "digest": digest, "size": 7}]),
        json!([{"path": "a", "digest": digest, "size": 7}, {"path": "a/b", "digest": digest, "size": 7}]),
    ] {
        assert_eq!(
            api.create_bundle(&json!({"entries": entries})).status(),
            400
        );
    }
    let list: Value = api
        .request(Method::GET, "/v1/bundles")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(list["bundles"].as_array().unwrap().is_empty());
    assert!(files_under(&Path::new(&server.data).join("bundles")).is_empty());
}

#[test]
fn bundle_of_unuploaded_or_mis_sized_blobs_is_refused() {
    let server = FerryServer::start();
    let api = client(&server);
    let absent = Digest::of(b"never uploaded");
    let response =
        api.create_bundle(&json!({"entries": [{"path": "a", "digest": absent, "size": 14}]}));
    assert_eq!(response.status(), 409);
    let body: Value = response.json().unwrap();
    assert_eq!(body["error"]["code"], "missing_blobs");
    assert_eq!(body["error"]["missing"], json!([absent]));
    api.put_blob(b"four");
    let response = api.create_bundle(
        &json!({"entries": [{"path": "a", "digest": Digest::of(b"four"), "size": 5}]}),
    );
    assert_eq!(ApiClient::error_code(response), "size_mismatch");
}

#[test]
fn malformed_requests_get_json_errors() {
    let server = FerryServer::start();
    let api = client(&server);
    let r = api
        .request(Method::GET, "/v1/blobs/sha256:XYZ")
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(ApiClient::error_code(r), "invalid_digest");
    let r = api
        .request(Method::POST, "/v1/bundles")
        .body("{not json")
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(ApiClient::error_code(r), "bad_request");
    let r = api.request(Method::GET, "/v1/nothing-here").send().unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(ApiClient::error_code(r), "not_found");
    let r = api
        .request(Method::GET, "/v1/bundles/-bad-name")
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[test]
fn body_cut_short_leaves_no_blob() {
    let server = FerryServer::start();
    let api = client(&server);
    let data = pseudo_random_bytes(3, 1 << 20);
    let digest = Digest::of(&data);
    let stream = start_partial_put(
        server.port,
        &server.token,
        &digest,
        data.len(),
        &data[..100_000],
    );
    drop(stream);
    wait_for_broken_body(&server);
    assert_no_uploads_left(&server);
    assert_eq!(api.missing(&[digest]), vec![digest]);
    assert!(files_under(&Path::new(&server.data).join("blobs")).is_empty());
    // The same upload, retried whole, succeeds.
    assert_eq!(api.put_blob(&data).status(), 201);
}

#[test]
fn batches_are_bounded_named_and_authenticated_and_curl_can_send_one() {
    let server = FerryServer::builder()
        .arg("--max-batch-size")
        .arg("10KiB")
        .start();
    let api = client(&server);
    // Small enough that the whole body fits in the socket buffers: the
    // server answers 413 without reading it, and closes.
    let big = pseudo_random_bytes(50, 6_000);
    let other = pseudo_random_bytes(51, 6_000);
    let response = api.put_batch(&[(Digest::of(&big), &big), (Digest::of(&other), &other)]);
    assert_eq!(response.status(), 413);
    let text = response.text().unwrap();
    assert!(
        text.contains("10240") && text.contains("--max-batch-size"),
        "{text}"
    );
    // Sent chunked (no Content-Length), the limit holds while reading.
    let boundary = "ferry-test-boundary";
    let mut raw = Vec::new();
    for blob in [&big, &other] {
        raw.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{}\"; filename=\"b\"\r\n\r\n",
                Digest::of(blob)
            )
            .as_bytes(),
        );
        raw.extend_from_slice(blob);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        raw.chunks(1024).map(|c| Ok(c.to_vec())).collect();
    let response = api
        .request(Method::POST, "/v1/blobs")
        .header(
            "Content-Type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(reqwest::blocking::Body::new(ChunkReader::new(chunks)))
        .send()
        .unwrap();
    assert_eq!(response.status(), 413);
    // A part not named by a digest, a body that is not multipart, no token.
    let response = api.put_batch(&[(Digest::of(b"x"), b"x")]);
    assert_eq!(response.status(), 200);
    let form = reqwest::blocking::multipart::Form::new().text("lib.jar", "bytes");
    let response = api
        .request(Method::POST, "/v1/blobs")
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(ApiClient::error_code(response), "invalid_digest");
    let response = api
        .request(Method::POST, "/v1/blobs")
        .body("not a form")
        .send()
        .unwrap();
    assert_eq!(response.status(), 400);
    let response = api.as_token(None).put_batch(&[(Digest::of(b"y"), b"y")]);
    assert_eq!(response.status(), 401);
    assert_eq!(api.missing(&[Digest::of(b"y")]).len(), 1);
    // The README's curl line.
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.jar"), dir.path().join("b.jar"));
    std::fs::write(&a, &big[..4_000]).unwrap();
    std::fs::write(&b, &other[..4_000]).unwrap();
    let out = std::process::Command::new("curl")
        .args(["-sS", "-f", "-H"])
        .arg(format!("Authorization: Bearer {}", server.token))
        .arg("-F")
        .arg(format!("{}=@{}", Digest::of(&big[..4_000]), a.display()))
        .arg("-F")
        .arg(format!("{}=@{}", Digest::of(&other[..4_000]), b.display()))
        .arg(format!("{}/v1/blobs", server.url))
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        api.missing(&[Digest::of(&big[..4_000]), Digest::of(&other[..4_000])])
            .is_empty()
    );
    assert_no_uploads_left(&server);
}

#[test]
fn batch_cut_short_keeps_nothing() {
    let server = FerryServer::start();
    let api = client(&server);
    let blob = pseudo_random_bytes(52, 200_000);
    let head = format!(
        "--b\r\nContent-Disposition: form-data; name=\"{}\"\r\n\r\n",
        Digest::of(&blob)
    );
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    write!(
        stream,
        "POST /v1/blobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: {}\r\n\r\n{head}",
        server.token,
        head.len() + blob.len() + 8
    )
    .unwrap();
    stream.write_all(&blob[..100_000]).unwrap();
    stream.flush().unwrap();
    drop(stream);
    wait_for_broken_body(&server);
    assert_eq!(api.missing(&[Digest::of(&blob)]).len(), 1);
    assert_no_uploads_left(&server);
}

#[test]
fn stalled_upload_is_cut_off_and_others_proceed() {
    let server = FerryServer::builder()
        .arg("--body-idle-timeout")
        .arg("1s")
        .start();
    let api = client(&server);
    let data = pseudo_random_bytes(4, 200_000);
    let digest = Digest::of(&data);
    let mut stalled = start_partial_put(
        server.port,
        &server.token,
        &digest,
        data.len(),
        &data[..1000],
    );
    // Meanwhile other clients are served.
    assert_eq!(api.put_blob(b"unaffected").status(), 201);
    let status = read_status(&mut stalled, Duration::from_secs(10));
    assert!(status.contains("408"), "stalled upload got {status:?}");
    assert_no_uploads_left(&server);
    assert_eq!(api.missing(&[digest]), vec![digest]);
}

#[test]
fn oversized_blob_is_refused_before_and_during_upload() {
    let server = FerryServer::builder()
        .arg("--max-blob-size")
        .arg("1KiB")
        .start();
    let api = client(&server);
    let big = pseudo_random_bytes(5, 4096);
    let r = api.put_blob(&big);
    assert_eq!(r.status(), 413);
    assert_eq!(ApiClient::error_code(r), "payload_too_large");
    // Without Content-Length (chunked), the limit is enforced while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(512).map(|c| Ok(c.to_vec())).collect();
    let body = reqwest::blocking::Body::new(ChunkReader::new(chunks));
    let r = api
        .request(Method::PUT, &format!("/v1/blobs/{}", Digest::of(&big)))
        .body(body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_no_uploads_left(&server);
    assert_eq!(api.put_blob(&big[..1000]).status(), 201);
}

/// A reader that yields pre-cut chunks (so reqwest sends chunked encoding).
struct ChunkReader {
    chunks: std::vec::IntoIter<Result<Vec<u8>, std::io::Error>>,
    current: std::io::Cursor<Vec<u8>>,
}

impl ChunkReader {
    fn new(chunks: Vec<Result<Vec<u8>, std::io::Error>>) -> Self {
        Self {
            chunks: chunks.into_iter(),
            current: std::io::Cursor::new(Vec::new()),
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let n = self.current.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            match self.chunks.next() {
                Some(chunk) => self.current = std::io::Cursor::new(chunk?),
                None => return Ok(0),
            }
        }
    }
}

#[test]
fn concurrent_uploads_of_same_and_different_blobs_all_land() {
    let server = FerryServer::start();
    let same = pseudo_random_bytes(6, 512 * 1024);
    let statuses: Vec<(u16, u16)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..32u64)
            .map(|i| {
                let api = client(&server);
                let same = &same;
                scope.spawn(move || {
                    let mine = pseudo_random_bytes(100 + i, 256 * 1024);
                    let a = api.put_blob(same).status().as_u16();
                    let b = api.put_blob(&mine).status().as_u16();
                    (a, b)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        statuses.iter().all(|(a, _)| *a == 200 || *a == 201),
        "{statuses:?}"
    );
    assert!(statuses.iter().any(|(a, _)| *a == 201));
    assert!(statuses.iter().all(|(_, b)| *b == 201), "{statuses:?}");
    let api = client(&server);
    assert_eq!(
        api.get_blob(&Digest::of(&same)).bytes().unwrap().as_ref(),
        same.as_slice()
    );
    for i in 0..32u64 {
        let mine = pseudo_random_bytes(100 + i, 256 * 1024);
        assert_eq!(
            api.get_blob(&Digest::of(&mine)).bytes().unwrap().as_ref(),
            mine.as_slice()
        );
    }
    assert_eq!(
        files_under(&Path::new(&server.data).join("blobs")).len(),
        33
    );
    assert_no_uploads_left(&server);
}

#[test]
fn restart_after_kill_keeps_every_acknowledged_blob_and_bundle() {
    let mut server = FerryServer::start();
    let api = client(&server);
    let data = pseudo_random_bytes(7, 2 << 20);
    let created = api.stage(&[("jars/big.jar", &data)], json!({"name": "kept"}));
    server.kill();
    server.restart();
    let api = client(&server);
    let reader = api.as_token(created["token"].as_str());
    assert_eq!(
        reader
            .get_blob(&Digest::of(&data))
            .bytes()
            .unwrap()
            .as_ref(),
        data.as_slice()
    );
    assert_eq!(
        api.request(Method::GET, "/v1/bundles/kept")
            .send()
            .unwrap()
            .status(),
        200
    );
    assert!(api.missing(&[Digest::of(&data)]).is_empty());
}

#[test]
fn tls_round_trip_and_plain_http_is_refused_on_the_tls_port() {
    let dir = tempfile::tempdir().unwrap();
    let cert = ferry_tests::tls::self_signed(dir.path());
    let server = FerryServer::builder().tls(&cert.cert, &cert.key).start();
    let http = reqwest::blocking::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert.cert_pem.as_bytes()).unwrap()])
        .build()
        .unwrap();
    let api = ApiClient::with_client(&server.url, Some(&server.token), http);
    assert_eq!(api.put_blob(b"over tls").status(), 201);
    assert_eq!(
        api.get_blob(&Digest::of(b"over tls"))
            .bytes()
            .unwrap()
            .as_ref(),
        b"over tls"
    );
    let plain = reqwest::blocking::get(format!("http://127.0.0.1:{}/healthz", server.port));
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    // A client that does not trust the certificate is refused by its own TLS check.
    assert!(reqwest::blocking::get(server.at("/healthz")).is_err());
}

#[test]
fn sigterm_lets_an_inflight_upload_finish_then_exits() {
    let mut server = FerryServer::start();
    let data = pseudo_random_bytes(8, 300_000);
    let digest = Digest::of(&data);
    let mut stream = start_partial_put(
        server.port,
        &server.token,
        &digest,
        data.len(),
        &data[..100_000],
    );
    std::thread::sleep(Duration::from_millis(200));
    server.child.signal(15);
    std::thread::sleep(Duration::from_millis(300));
    // New connections are no longer accepted...
    assert!(
        TcpStream::connect(("127.0.0.1", server.port)).is_err(),
        "listener still open after SIGTERM"
    );
    // ...but the open upload completes.
    stream.write_all(&data[100_000..]).unwrap();
    let status = read_status(&mut stream, Duration::from_secs(10));
    assert!(status.contains("201"), "in-flight upload got {status:?}");
    drop(stream);
    let exit = server.child.wait_timeout(Duration::from_secs(10));
    assert!(
        exit.is_some_and(|s| s.success()),
        "server did not exit cleanly: {exit:?}\n{}",
        server.log()
    );
    let blob = Path::new(&server.data).join(format!(
        "blobs/sha256/{}/{}",
        &digest.hex()[..2],
        digest.hex()
    ));
    assert_eq!(std::fs::read(blob).unwrap(), data);
}

#[test]
fn bucket_data_without_a_token_file_refuses_to_start() {
    let output = std::process::Command::new(ferry_tests::bin("ferry-server"))
        .args(["--data", "s3://bucket/prefix", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--upload-token-file"));
}

#[test]
fn manifest_limits_are_enforced_with_clear_errors() {
    let server = FerryServer::builder()
        .args(["--max-entries", "2", "--max-json-size", "2KiB"])
        .start();
    let api = client(&server);
    api.put_blob(b"x");
    let entry = |p: &str| json!({"path": p, "digest": Digest::of(b"x"), "size": 1});
    let r = api.create_bundle(&json!({"entries": [entry("a"), entry("b"), entry("c")]}));
    assert_eq!(r.status(), 400);
    let body: Value = r.json().unwrap();
    assert_eq!(body["error"]["code"], "invalid_manifest");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 2 entries")
    );
    let long_labels: serde_json::Map<String, Value> = (0..60)
        .map(|i| (format!("label-{i}"), json!("v".repeat(40))))
        .collect();
    let r = api.create_bundle(&json!({"entries": [entry("a")], "labels": long_labels}));
    assert_eq!(r.status(), 413);
    assert_eq!(ApiClient::error_code(r), "payload_too_large");
    assert_eq!(
        api.create_bundle(&json!({"entries": [entry("a"), entry("b")]}))
            .status(),
        201
    );
}

#[test]
fn client_that_never_finishes_its_headers_is_disconnected() {
    let server = FerryServer::builder()
        .args(["--header-timeout", "1s"])
        .start();
    let mut slow = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let started = Instant::now();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 256];
    let n = slow.read(&mut buf).unwrap_or(0);
    let answer = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "slow headers held the connection"
    );
    assert!(
        n == 0 || answer.starts_with("HTTP/1.1 408"),
        "unexpected answer {answer:?}"
    );
    assert_eq!(
        reqwest::blocking::get(server.at("/healthz"))
            .unwrap()
            .status(),
        200
    );
}
