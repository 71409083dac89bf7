//! A small blocking HTTP client for ferry-server's API, for tests, and raw
//! HTTP/1.1 for uploads held open on purpose.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use ferry_core::Digest;
use reqwest::blocking::{Client, Response};
use serde_json::{Value, json};

/// Talks to one server as one token holder.
pub struct ApiClient {
    pub base: String,
    pub token: Option<String>,
    pub http: Client,
}

impl ApiClient {
    pub fn new(base: &str, token: Option<&str>) -> Self {
        Self::with_client(base, token, Client::builder().build().expect("http client"))
    }

    pub fn with_client(base: &str, token: Option<&str>, http: Client) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            token: token.map(str::to_owned),
            http,
        }
    }

    /// The same server, another token.
    pub fn as_token(&self, token: Option<&str>) -> Self {
        Self {
            base: self.base.clone(),
            token: token.map(str::to_owned),
            http: self.http.clone(),
        }
    }

    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::blocking::RequestBuilder {
        let builder = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    pub fn put_blob(&self, bytes: &[u8]) -> Response {
        self.put_blob_as(&Digest::of(bytes), bytes)
    }

    pub fn put_blob_as(&self, digest: &Digest, bytes: &[u8]) -> Response {
        self.request(reqwest::Method::PUT, &format!("/v1/blobs/{digest}"))
            .body(bytes.to_vec())
            .send()
            .expect("PUT blob")
    }

    /// `POST /v1/blobs`: the parts of one batch, each named by the digest
    /// given (which may be wrong, on purpose).
    pub fn put_batch(&self, parts: &[(Digest, &[u8])]) -> Response {
        let mut form = reqwest::blocking::multipart::Form::new();
        for (digest, bytes) in parts {
            let part = reqwest::blocking::multipart::Part::bytes(bytes.to_vec()).file_name("blob");
            form = form.part(digest.to_string(), part);
        }
        self.request(reqwest::Method::POST, "/v1/blobs")
            .multipart(form)
            .send()
            .expect("POST batch")
    }

    pub fn get_blob(&self, digest: &Digest) -> Response {
        self.request(reqwest::Method::GET, &format!("/v1/blobs/{digest}"))
            .send()
            .expect("GET blob")
    }

    pub fn missing(&self, digests: &[Digest]) -> Vec<Digest> {
        let response = self
            .request(reqwest::Method::POST, "/v1/blobs/missing")
            .json(&json!({ "digests": digests }))
            .send()
            .expect("POST missing");
        assert_eq!(response.status(), 200, "missing: {:?}", response.text());
        let body: Value = response.json().expect("missing JSON");
        serde_json::from_value(body["missing"].clone()).expect("missing list")
    }

    pub fn create_bundle(&self, body: &Value) -> Response {
        self.request(reqwest::Method::POST, "/v1/bundles")
            .json(body)
            .send()
            .expect("POST bundle")
    }

    /// Uploads each `(path, bytes)` and creates a bundle of them; returns the
    /// 201 body (`id`, `token`, ...).
    pub fn stage(&self, files: &[(&str, &[u8])], extra: Value) -> Value {
        for (_, bytes) in files {
            let status = self.put_blob(bytes).status();
            assert!(status == 201 || status == 200, "upload failed: {status}");
        }
        let entries: Vec<Value> = files
            .iter()
            .map(|(path, bytes)| json!({"path": path, "digest": Digest::of(bytes), "size": bytes.len()}))
            .collect();
        let mut body = json!({ "entries": entries });
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        let response = self.create_bundle(&body);
        assert_eq!(
            response.status(),
            201,
            "create bundle: {:?}",
            response.text()
        );
        response.json().expect("bundle JSON")
    }

    /// The error code of a JSON error response.
    pub fn error_code(response: Response) -> String {
        let body: Value = response.json().expect("error body is JSON");
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// Starts `PUT /v1/blobs/{digest}` on 127.0.0.1:`port` declaring `declared`
/// bytes but sending only `sent`, and returns the open connection (send the
/// rest, or not, then [`read_status`]).
pub fn start_partial_put(
    port: u16,
    token: &str,
    digest: &Digest,
    declared: usize,
    sent: &[u8],
) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the server");
    write!(
        stream,
        "PUT /v1/blobs/{digest} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nContent-Length: {declared}\r\n\r\n"
    )
    .expect("send request head");
    stream.write_all(sent).expect("send body");
    stream.flush().expect("flush");
    stream
}

/// The status line of the response on `stream` (empty if none came within
/// `timeout`).
pub fn read_status(stream: &mut TcpStream, timeout: Duration) -> String {
    stream
        .set_read_timeout(Some(timeout))
        .expect("read timeout");
    let mut buf = [0u8; 512];
    let n = stream.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}
