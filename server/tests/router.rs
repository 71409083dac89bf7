//! The HTTP API's edge cases, in process: requests go straight into
//! `router(state)` with tower's `oneshot`, no socket and no spawned binary,
//! each case over both backends — `object_store`'s in-memory store (a real
//! implementation) and the local backend in a temporary directory.
//! The end-to-end tests in `tests/` cover the same API over real HTTP.

use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use bytes::Bytes;
use ferry_core::Digest;
use ferry_server::api::{AppState, Limits};
use ferry_server::auth::{Authenticator, UploadAuth};
use ferry_server::metrics::Metrics;
use ferry_server::store::{
    Backend, BodyLimits, LocalBackend, Object, ObjectInfo, ObjectStoreBackend, OpenBlob, PartData,
    Prefix, PutOutcome, Store, StoreError, UploadBody, Version, WriteMode,
};
use http::{HeaderMap, Method, Request, StatusCode, header};
use object_store::memory::InMemory;
use object_store::path::Path;
use serde_json::{Value, json};
use tower::ServiceExt as _;

const UPLOAD_TOKEN: &str = "router-test-upload-token-0123456789";
/// A small blob limit, so over-limit bodies stay small.
const MAX_BLOB: u64 = 100_000;

/// One app under test: the router over one backend.
struct App {
    router: axum::Router,
    state: Arc<AppState>,
    backend: &'static str,
    _dir: Option<tempfile::TempDir>,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

fn app_over(backend: Arc<dyn Backend>, name: &'static str, dir: Option<tempfile::TempDir>) -> App {
    let state = Arc::new(AppState {
        store: Store::new(backend),
        auth: Authenticator::new(UploadAuth::from_token(UPLOAD_TOKEN)),
        metrics: Arc::new(Metrics::default()),
        limits: Limits {
            max_blob_size: MAX_BLOB,
            ..Limits::default()
        },
    });
    App {
        router: ferry_server::router(state.clone()),
        state,
        backend: name,
        _dir: dir,
    }
}

/// The same app over each backend.
fn apps() -> Vec<App> {
    let in_memory = Arc::new(InMemory::new());
    let memory =
        Arc::new(ObjectStoreBackend::new(in_memory.clone(), "memory").with_multipart(in_memory));
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().canonicalize().expect("canonical temp dir");
    let local = Arc::new(LocalBackend::new(root).expect("local backend"));
    vec![
        app_over(memory, "memory", None),
        app_over(local, "local", Some(dir)),
    ]
}

fn request(method: Method, uri: &str, token: Option<&str>, body: Body) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    builder.body(body).expect("request")
}

fn json_body(value: &Value) -> Body {
    Body::from(serde_json::to_vec(value).expect("JSON"))
}

impl App {
    async fn send(&self, request: Request<Body>) -> Answer {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router always answers");
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), 64 << 20)
            .await
            .expect("response body");
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn call(&self, method: Method, uri: &str, token: Option<&str>, body: Body) -> Answer {
        self.send(request(method, uri, token, body)).await
    }

    async fn put_blob(&self, bytes: &[u8]) -> Answer {
        let uri = format!("/v1/blobs/{}", Digest::of(bytes));
        let request = Request::builder()
            .method(Method::PUT)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {UPLOAD_TOKEN}"))
            .header(header::CONTENT_LENGTH, bytes.len())
            .body(Body::from(bytes.to_vec()))
            .expect("request");
        self.send(request).await
    }

    async fn create_bundle(&self, manifest: Value) -> Answer {
        self.call(
            Method::POST,
            "/v1/bundles",
            Some(UPLOAD_TOKEN),
            json_body(&manifest),
        )
        .await
    }

    /// Uploads `files` and bundles them; returns the bundle's id and token.
    async fn stage(&self, files: &[(&str, &[u8])], extra: Value) -> (String, String) {
        let mut entries = Vec::new();
        for (path, bytes) in files {
            let put = self.put_blob(bytes).await;
            assert!(
                put.status.is_success(),
                "{}: put {}",
                self.backend,
                put.status
            );
            entries.push(json!({"path": path, "digest": Digest::of(bytes), "size": bytes.len()}));
        }
        let mut manifest = json!({ "entries": entries });
        if let (Some(manifest), Some(extra)) = (manifest.as_object_mut(), extra.as_object()) {
            manifest.extend(extra.clone());
        }
        let created = self.create_bundle(manifest).await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", self.backend);
        let created = created.json();
        (
            created["id"].as_str().unwrap_or_default().to_owned(),
            created["token"].as_str().unwrap_or_default().to_owned(),
        )
    }

    /// What `GET /v1/bundles` lists.
    async fn bundles(&self) -> Value {
        let listed = self
            .call(
                Method::GET,
                "/v1/bundles",
                Some(UPLOAD_TOKEN),
                Body::empty(),
            )
            .await;
        assert_eq!(listed.status, StatusCode::OK, "{}", self.backend);
        listed.json()["bundles"].clone()
    }

    fn rejected(&self, reason: &str) -> u64 {
        let rejected = self
            .state
            .metrics
            .uploads_rejected
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        rejected.get(reason).copied().unwrap_or(0)
    }
}

/// Every route that needs a token, with a body it would accept.
fn guarded_routes(blob: &Digest, bundle: &str) -> Vec<(Method, String, Body)> {
    vec![
        (
            Method::POST,
            "/v1/blobs/missing".into(),
            json_body(&json!({"digests": [blob]})),
        ),
        (Method::PUT, format!("/v1/blobs/{blob}"), Body::from("x")),
        (Method::GET, format!("/v1/blobs/{blob}"), Body::empty()),
        (Method::HEAD, format!("/v1/blobs/{blob}"), Body::empty()),
        (
            Method::POST,
            "/v1/bundles".into(),
            json_body(&json!({"entries": [{"path": "a", "digest": blob, "size": 1}]})),
        ),
        (Method::GET, "/v1/bundles".into(), Body::empty()),
        (Method::GET, format!("/v1/bundles/{bundle}"), Body::empty()),
        (
            Method::DELETE,
            format!("/v1/bundles/{bundle}"),
            Body::empty(),
        ),
    ]
}

#[tokio::test]
async fn every_guarded_route_refuses_missing_malformed_and_wrong_tokens() {
    for app in apps() {
        let (bundle, _) = app.stage(&[("a.jar", b"guarded")], json!({})).await;
        let blob = Digest::of(b"guarded");
        let refusals: [(&str, Option<&str>); 4] = [
            ("no Authorization", None),
            ("not Bearer", Some("Basic dXNlcjpwYXNz")),
            ("empty Bearer", Some("Bearer ")),
            (
                "unknown token",
                Some("Bearer not-a-real-token-000000000000"),
            ),
        ];
        for (what, authorization) in refusals {
            for (method, uri, body) in guarded_routes(&blob, &bundle) {
                let mut builder = Request::builder().method(method.clone()).uri(&uri);
                if let Some(value) = authorization {
                    builder = builder.header(header::AUTHORIZATION, value);
                }
                let answer = app.send(builder.body(body).expect("request")).await;
                assert_eq!(
                    answer.status,
                    StatusCode::UNAUTHORIZED,
                    "{}: {what}: {method} {uri}",
                    app.backend
                );
                assert_eq!(
                    answer.headers.get(header::WWW_AUTHENTICATE).unwrap(),
                    "Bearer realm=\"ferry\""
                );
                if method != Method::HEAD {
                    assert_eq!(answer.error_code(), "unauthorized");
                }
            }
        }
        // The blob and bundle are still there: nothing refused changed them.
        let answer = app
            .call(
                Method::GET,
                &format!("/v1/bundles/{bundle}"),
                Some(UPLOAD_TOKEN),
                Body::empty(),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", app.backend);
    }
}

#[tokio::test]
async fn a_bundle_token_opens_its_own_bundle_and_nothing_else() {
    for app in apps() {
        let (mine, token) = app.stage(&[("a", b"mine")], json!({})).await;
        let (theirs, _) = app.stage(&[("b", b"theirs")], json!({})).await;
        let reader = Some(token.as_str());
        let app = &app;
        let get =
            |uri: String| async move { app.call(Method::GET, &uri, reader, Body::empty()).await };
        let own_blob = format!("/v1/blobs/{}", Digest::of(b"mine"));
        let their_blob = format!("/v1/blobs/{}", Digest::of(b"theirs"));
        assert_eq!(
            get(format!("/v1/bundles/{mine}")).await.status,
            StatusCode::OK
        );
        assert_eq!(get(own_blob).await.body.as_ref(), b"mine");
        let forbidden = [
            get(format!("/v1/bundles/{theirs}")).await,
            get(their_blob).await,
            get("/v1/bundles".into()).await,
            app.call(
                Method::DELETE,
                &format!("/v1/bundles/{mine}"),
                reader,
                Body::empty(),
            )
            .await,
            app.call(
                Method::PUT,
                &format!("/v1/blobs/{}", Digest::of(b"x")),
                reader,
                Body::from("x"),
            )
            .await,
        ];
        for answer in forbidden {
            assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", app.backend);
            assert_eq!(answer.error_code(), "forbidden");
        }
    }
}

#[tokio::test]
async fn a_put_whose_bytes_do_not_match_its_digest_stores_nothing() {
    for app in apps() {
        let claimed = Digest::of(b"what the client said");
        let answer = app
            .call(
                Method::PUT,
                &format!("/v1/blobs/{claimed}"),
                Some(UPLOAD_TOKEN),
                Body::from("what the client sent"),
            )
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", app.backend);
        assert_eq!(answer.error_code(), "digest_mismatch");
        assert_eq!(app.rejected("digest_mismatch"), 1);
        let store = &app.state.store;
        assert_eq!(store.missing(&[claimed]).await.unwrap(), vec![claimed]);
        assert!(store.list_uploads().await.unwrap().is_empty());
        assert!(store.list_blobs().await.unwrap().blobs.is_empty());
    }
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_whether_declared_or_streamed() {
    for app in apps() {
        let big = vec![7u8; MAX_BLOB as usize + 1];
        let declared = app.put_blob(&big).await;
        assert_eq!(
            declared.status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{}",
            app.backend
        );
        assert_eq!(declared.error_code(), "payload_too_large");
        // No Content-Length: refused once the bytes pass the limit.
        let chunks: Vec<Result<Bytes, std::io::Error>> = big
            .chunks(30_000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let streamed = app
            .call(
                Method::PUT,
                &format!("/v1/blobs/{}", Digest::of(&big)),
                Some(UPLOAD_TOKEN),
                Body::from_stream(futures::stream::iter(chunks)),
            )
            .await;
        assert_eq!(
            streamed.status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{}",
            app.backend
        );
        assert_eq!(app.rejected("too_large"), 2);
        assert!(app.state.store.list_uploads().await.unwrap().is_empty());
        // At the limit exactly, it is stored.
        let at_limit = app.put_blob(&big[1..]).await;
        assert_eq!(at_limit.status, StatusCode::CREATED, "{}", app.backend);
    }
}

#[tokio::test]
async fn ranges_are_206_and_a_range_outside_the_blob_is_416() {
    for app in apps() {
        // One small blob (read whole) and one streamed in chunks.
        for len in [1_000usize, 90_000] {
            let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            assert_eq!(app.put_blob(&bytes).await.status, StatusCode::CREATED);
            let uri = format!("/v1/blobs/{}", Digest::of(&bytes));
            let ranged = |range: String| {
                let request = Request::builder()
                    .uri(&uri)
                    .header(header::AUTHORIZATION, format!("Bearer {UPLOAD_TOKEN}"))
                    .header(header::RANGE, range)
                    .body(Body::empty())
                    .expect("request");
                app.send(request)
            };
            let part = ranged("bytes=10-19".into()).await;
            assert_eq!(part.status, StatusCode::PARTIAL_CONTENT, "{}", app.backend);
            assert_eq!(part.body.as_ref(), &bytes[10..20]);
            assert_eq!(
                part.headers[header::CONTENT_RANGE],
                format!("bytes 10-19/{len}").as_str()
            );
            assert_eq!(part.headers[header::CONTENT_LENGTH], "10");
            let tail = ranged("bytes=-5".into()).await;
            assert_eq!(tail.status, StatusCode::PARTIAL_CONTENT);
            assert_eq!(tail.body.as_ref(), &bytes[len - 5..]);
            let outside = ranged(format!("bytes={len}-")).await;
            assert_eq!(outside.status, StatusCode::RANGE_NOT_SATISFIABLE);
            assert_eq!(outside.error_code(), "range_not_satisfiable");
            assert_eq!(
                outside.headers[header::CONTENT_RANGE],
                format!("bytes */{len}").as_str()
            );
        }
    }
}

#[tokio::test]
async fn the_etag_makes_if_none_match_304_and_a_stale_if_range_sends_everything() {
    for app in apps() {
        let bytes = b"conditional requests".as_slice();
        app.put_blob(bytes).await;
        let digest = Digest::of(bytes);
        let uri = format!("/v1/blobs/{digest}");
        let with = |name: header::HeaderName, value: String, range: bool| {
            let mut builder = Request::builder()
                .uri(&uri)
                .header(header::AUTHORIZATION, format!("Bearer {UPLOAD_TOKEN}"))
                .header(name, value);
            if range {
                builder = builder.header(header::RANGE, "bytes=0-3");
            }
            app.send(builder.body(Body::empty()).expect("request"))
        };
        let etag = format!("\"{digest}\"");
        let same = with(header::IF_NONE_MATCH, etag.clone(), false).await;
        assert_eq!(same.status, StatusCode::NOT_MODIFIED, "{}", app.backend);
        assert!(same.body.is_empty());
        assert_eq!(same.headers[header::ETAG], etag.as_str());
        let other = with(header::IF_NONE_MATCH, "\"sha256:00\"".into(), false).await;
        assert_eq!(other.status, StatusCode::OK);
        assert_eq!(other.body.as_ref(), bytes);
        let stale = with(header::IF_RANGE, "\"sha256:00\"".into(), true).await;
        assert_eq!(stale.status, StatusCode::OK, "a stale If-Range gets it all");
        assert_eq!(stale.body.as_ref(), bytes);
        let fresh = with(header::IF_RANGE, etag, true).await;
        assert_eq!(fresh.status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(fresh.body.as_ref(), &bytes[..4]);
    }
}

#[tokio::test]
async fn head_answers_the_headers_of_get_without_a_body() {
    for app in apps() {
        let bytes = vec![3u8; 70_000];
        app.put_blob(&bytes).await;
        let uri = format!("/v1/blobs/{}", Digest::of(&bytes));
        let head = app
            .call(Method::HEAD, &uri, Some(UPLOAD_TOKEN), Body::empty())
            .await;
        assert_eq!(head.status, StatusCode::OK, "{}", app.backend);
        assert!(head.body.is_empty());
        assert_eq!(head.headers[header::CONTENT_LENGTH], "70000");
        assert_eq!(head.headers[header::ACCEPT_RANGES], "bytes");
        let missing = format!("/v1/blobs/{}", Digest::of(b"absent"));
        let head = app
            .call(Method::HEAD, &missing, Some(UPLOAD_TOKEN), Body::empty())
            .await;
        assert_eq!(head.status, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn a_bundle_of_blobs_not_uploaded_is_409_with_the_missing_list() {
    for app in apps() {
        app.put_blob(b"present").await;
        let absent = Digest::of(b"absent");
        let answer = app
            .create_bundle(json!({"entries": [
                {"path": "here", "digest": Digest::of(b"present"), "size": 7},
                {"path": "gone", "digest": absent, "size": 6},
            ]}))
            .await;
        assert_eq!(answer.status, StatusCode::CONFLICT, "{}", app.backend);
        assert_eq!(answer.error_code(), "missing_blobs");
        assert_eq!(answer.json()["error"]["missing"], json!([absent]));
        assert_eq!(app.bundles().await, json!([]), "nothing was created");
    }
}

#[tokio::test]
async fn a_live_name_is_taken_and_a_freed_name_is_taken_over() {
    for app in apps() {
        let (first, _) = app
            .stage(&[("a", b"one")], json!({"name": "team-libs"}))
            .await;
        let again = app
            .create_bundle(json!({
                "name": "team-libs",
                "entries": [{"path": "a", "digest": Digest::of(b"one"), "size": 3}]
            }))
            .await;
        assert_eq!(again.status, StatusCode::CONFLICT, "{}", app.backend);
        assert_eq!(again.error_code(), "name_taken");
        let deleted = app
            .call(
                Method::DELETE,
                "/v1/bundles/team-libs",
                Some(UPLOAD_TOKEN),
                Body::empty(),
            )
            .await;
        assert_eq!(deleted.status, StatusCode::NO_CONTENT);
        let (second, _) = app
            .stage(&[("b", b"two")], json!({"name": "team-libs"}))
            .await;
        assert_ne!(first, second);
        let shown = app
            .call(
                Method::GET,
                "/v1/bundles/team-libs",
                Some(UPLOAD_TOKEN),
                Body::empty(),
            )
            .await;
        assert_eq!(shown.json()["id"], json!(second), "{}", app.backend);
    }
}

#[tokio::test]
async fn evil_paths_digests_and_bundle_refs_are_400() {
    for app in apps() {
        app.put_blob(b"evil").await;
        let digest = Digest::of(b"evil");
        for path in ["../escape", "/etc/passwd", "a/../../b", "a//b", "./a", ""] {
            let answer = app
                .create_bundle(json!({"entries": [{"path": path, "digest": digest, "size": 4}]}))
                .await;
            assert_eq!(
                answer.status,
                StatusCode::BAD_REQUEST,
                "{}: {path:?}",
                app.backend
            );
            assert_eq!(answer.error_code(), "invalid_path", "{path:?}");
        }
        for uri in [
            "/v1/blobs/sha256:XYZ",
            "/v1/blobs/md5:00",
            "/v1/blobs/..%2F..%2Fetc%2Fpasswd",
        ] {
            let answer = app
                .call(Method::GET, uri, Some(UPLOAD_TOKEN), Body::empty())
                .await;
            assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{uri}");
            assert_eq!(answer.error_code(), "invalid_digest", "{uri}");
        }
        let answer = app
            .call(
                Method::GET,
                "/v1/bundles/..%2Fnames%2Fx",
                Some(UPLOAD_TOKEN),
                Body::empty(),
            )
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        assert_eq!(app.bundles().await, json!([]), "nothing was created");
    }
}

#[tokio::test]
async fn an_unknown_route_is_a_404_json_error() {
    for app in apps() {
        for (method, uri) in [
            (Method::GET, "/v2/blobs"),
            (Method::POST, "/nothing"),
            (Method::GET, "/v1/bundles/a/b"),
        ] {
            let answer = app
                .call(method, uri, Some(UPLOAD_TOKEN), Body::empty())
                .await;
            assert_eq!(answer.status, StatusCode::NOT_FOUND, "{uri}");
            assert_eq!(answer.error_code(), "not_found");
        }
    }
}

/// The in-memory backend, except that its upload work dies on another
/// thread: what a panicking writer thread looks like to the server.
#[derive(Debug)]
struct PanickingWriter(ObjectStoreBackend);

#[async_trait]
impl Backend for PanickingWriter {
    fn description(&self) -> &str {
        "memory, with a writer that panics"
    }
    async fn put_blob(
        &self,
        _expected: Digest,
        _body: UploadBody<'_>,
        _limits: BodyLimits,
    ) -> Result<PutOutcome, StoreError> {
        tokio::task::spawn_blocking(|| panic!("the writer thread died"))
            .await
            .map_err(|e| StoreError::from_join("upload writer", e))
    }
    async fn blob_size(&self, digest: &Digest) -> Result<u64, StoreError> {
        self.0.blob_size(digest).await
    }
    async fn open_blob(&self, digest: &Digest) -> Result<OpenBlob, StoreError> {
        self.0.open_blob(digest).await
    }
    async fn delete_blob(&self, digest: &Digest) -> Result<(), StoreError> {
        self.0.delete_blob(digest).await
    }
    async fn list(&self, prefix: Prefix) -> Result<Vec<ObjectInfo>, StoreError> {
        self.0.list(prefix).await
    }
    async fn read_object(&self, key: &Path) -> Result<Object, StoreError> {
        self.0.read_object(key).await
    }
    async fn write_object(
        &self,
        key: &Path,
        bytes: Bytes,
        mode: WriteMode,
    ) -> Result<Version, StoreError> {
        self.0.write_object(key, bytes, mode).await
    }
    async fn delete_object(&self, key: &Path) -> Result<(), StoreError> {
        self.0.delete_object(key).await
    }
    async fn rename(&self, from: &Path, to: &Path) -> Result<(), StoreError> {
        self.0.rename(from, to).await
    }
    async fn probe(&self) -> Result<(), StoreError> {
        self.0.probe().await
    }
    fn min_part_size(&self) -> u64 {
        self.0.min_part_size()
    }
    async fn create_parts(&self, key: &Path) -> Result<String, StoreError> {
        self.0.create_parts(key).await
    }
    async fn put_part(&self, key: &Path, id: &str, part: PartData) -> Result<String, StoreError> {
        self.0.put_part(key, id, part).await
    }
    async fn complete_parts(
        &self,
        key: &Path,
        id: &str,
        parts: Vec<String>,
    ) -> Result<(), StoreError> {
        self.0.complete_parts(key, id, parts).await
    }
    async fn abort_parts(&self, key: &Path, id: &str) -> Result<(), StoreError> {
        self.0.abort_parts(key, id).await
    }
    async fn publish_upload(
        &self,
        key: &Path,
        digest: &Digest,
        size: u64,
    ) -> Result<PutOutcome, StoreError> {
        self.0.publish_upload(key, digest, size).await
    }
}

#[tokio::test]
async fn a_storage_thread_that_panics_is_500_internal_not_the_clients_fault() {
    let backend = PanickingWriter(ObjectStoreBackend::new(Arc::new(InMemory::new()), "memory"));
    let app = app_over(Arc::new(backend), "panicking", None);
    let answer = app.put_blob(b"never stored").await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(answer.error_code(), "internal");
    let message = answer.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        !message.contains("panic"),
        "internal detail leaked: {message}"
    );
    assert_eq!(app.rejected("storage_error"), 1);
    assert_eq!(app.rejected("body_broken"), 0);
}

impl App {
    async fn patch(&self, location: &str, range: Option<&str>, bytes: &[u8]) -> Answer {
        let mut builder = Request::builder()
            .method(Method::PATCH)
            .uri(location)
            .header(header::AUTHORIZATION, format!("Bearer {UPLOAD_TOKEN}"));
        if let Some(range) = range {
            builder = builder.header(header::CONTENT_RANGE, range);
        }
        self.send(builder.body(Body::from(bytes.to_vec())).expect("request"))
            .await
    }

    async fn open_session(&self) -> String {
        let opened = self
            .call(
                Method::POST,
                "/v1/uploads",
                Some(UPLOAD_TOKEN),
                Body::empty(),
            )
            .await;
        assert_eq!(opened.status, StatusCode::CREATED, "{}", self.backend);
        let location = opened.headers[header::LOCATION]
            .to_str()
            .expect("location")
            .to_owned();
        assert_eq!(
            location,
            format!(
                "/v1/uploads/{}",
                opened.json()["id"].as_str().unwrap_or_default()
            )
        );
        location
    }
}

fn upload_offset(answer: &Answer) -> &str {
    answer.headers["upload-offset"].to_str().unwrap_or_default()
}

#[tokio::test]
async fn an_upload_session_takes_chunks_in_order_and_commits_only_the_right_digest() {
    for app in apps() {
        let name = app.backend;
        let location = app.open_session().await;
        let opened = app
            .call(Method::GET, &location, Some(UPLOAD_TOKEN), Body::empty())
            .await;
        assert_eq!(opened.json()["offset"], 0, "{name}");
        assert_eq!(opened.json()["max_chunk"], 32 << 20, "{name}");
        let sent = app.patch(&location, Some("bytes 0-4/*"), b"hello").await;
        assert_eq!(sent.status, StatusCode::ACCEPTED, "{name}");
        assert_eq!(upload_offset(&sent), "5", "{name}");
        // The same chunk again: the offset is past it.
        let again = app.patch(&location, Some("bytes 0-4/*"), b"hello").await;
        assert_eq!(again.status, StatusCode::RANGE_NOT_SATISFIABLE, "{name}");
        assert_eq!(again.error_code(), "range_not_satisfiable");
        assert_eq!(upload_offset(&again), "5", "{name}");
        assert_eq!(again.headers[header::RANGE], "0-4", "{name}");
        let unstated = app.patch(&location, None, b" world").await;
        assert_eq!(unstated.status, StatusCode::BAD_REQUEST, "{name}");
        // Refused by its stated size, before a byte is read; the limit named.
        let huge = app
            .patch(&location, Some("bytes 5-40000004/*"), b" world")
            .await;
        assert_eq!(huge.status, StatusCode::PAYLOAD_TOO_LARGE, "{name}");
        let message = huge.json()["error"]["message"].to_string();
        assert!(
            message.contains(&(32u64 << 20).to_string()),
            "{name}: {message}"
        );
        let head = app
            .call(Method::HEAD, &location, Some(UPLOAD_TOKEN), Body::empty())
            .await;
        assert_eq!(head.status, StatusCode::OK, "{name}");
        assert_eq!(upload_offset(&head), "5", "{name}");
        assert!(head.body.is_empty(), "{name}");
        let wrong = app
            .call(
                Method::PUT,
                &format!("{location}?digest={}", Digest::of(b"help!")),
                Some(UPLOAD_TOKEN),
                Body::empty(),
            )
            .await;
        assert_eq!(wrong.status, StatusCode::BAD_REQUEST, "{name}");
        assert_eq!(wrong.error_code(), "digest_mismatch", "{name}");
        let gone = app
            .call(Method::GET, &location, Some(UPLOAD_TOKEN), Body::empty())
            .await;
        assert_eq!(gone.status, StatusCode::NOT_FOUND, "{name}");
        let blob = app
            .call(
                Method::HEAD,
                &format!("/v1/blobs/{}", Digest::of(b"hello")),
                Some(UPLOAD_TOKEN),
                Body::empty(),
            )
            .await;
        assert_eq!(blob.status, StatusCode::NOT_FOUND, "{name}: nothing kept");

        let location = app.open_session().await;
        app.patch(&location, Some("bytes 0-4/*"), b"hello").await;
        let committed = app
            .call(
                Method::PUT,
                &format!("{location}?digest={}", Digest::of(b"hello")),
                Some(UPLOAD_TOKEN),
                Body::empty(),
            )
            .await;
        assert_eq!(committed.status, StatusCode::CREATED, "{name}");
        assert_eq!(committed.json()["size"], 5, "{name}");
        let read = app
            .call(
                Method::GET,
                &format!("/v1/blobs/{}", Digest::of(b"hello")),
                Some(UPLOAD_TOKEN),
                Body::empty(),
            )
            .await;
        assert_eq!(read.body.as_ref(), b"hello", "{name}");
        let anonymous = app
            .call(Method::POST, "/v1/uploads", None, Body::empty())
            .await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "{name}");
    }
}

#[tokio::test]
async fn on_a_bucket_only_the_last_chunk_may_be_under_five_mib() {
    let app = apps().remove(0);
    assert_eq!(app.backend, "memory");
    let location = app.open_session().await;
    let opened = app
        .call(Method::GET, &location, Some(UPLOAD_TOKEN), Body::empty())
        .await;
    assert_eq!(opened.json()["min_chunk"], 5 << 20);
    app.patch(&location, Some("bytes 0-4/*"), b"hello").await;
    let after_short = app.patch(&location, Some("bytes 5-5/*"), b"!").await;
    assert_eq!(after_short.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        upload_offset(
            &app.call(Method::HEAD, &location, Some(UPLOAD_TOKEN), Body::empty())
                .await
        ),
        "5"
    );
}
