//! An HTTP client for ferry-server's API v1, with retries on transient
//! failures (the shared [`RetryPolicy`] and status rule) and errors that say
//! what to do.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use ferry_core::Digest;
use ferry_core::api::{
    BatchBlob, BatchStored, CreateBundleRequest, CreateBundleResponse, ErrorBody, ErrorCode,
    ListBundlesResponse, MAX_MISSING_QUERY, Manifest, MissingRequest, MissingResponse,
    UPLOADS_PATH, UploadStatus,
};
use ferry_io::{
    HttpError, HttpOptions, RetryPolicy, Transient, http_client, is_transient_status, render_chain,
};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret as _, SecretString};

/// Why a call to the server failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(
        "cannot reach ferry-server at {server}: {reason} (is it running? check --server / FERRY_SERVER)"
    )]
    Unreachable { server: String, reason: String },
    #[error(
        "ferry-server at {server} refused the token: {message} (check --token-file / FERRY_TOKEN)"
    )]
    Unauthorized { server: String, message: String },
    #[error("ferry-server answered {status} ({code:?}): {message}")]
    Server {
        status: u16,
        code: ErrorCode,
        message: String,
        missing: Vec<Digest>,
    },
    #[error("cannot read {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("unexpected answer from ferry-server: {0}")]
    Protocol(String),
}

impl Transient for ApiError {
    /// An unreachable server, a status the shared rule retries (408, 429,
    /// most 5xx, not 507: a full disk waits for an operator), or an error
    /// code the server marks as transient.
    fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Server { status, code, .. } => {
                code.is_transient() || is_transient_status(*status)
            }
            _ => false,
        }
    }
}

/// Connection settings for one server.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    token: Option<SecretString>,
    http: reqwest::Client,
    retry: RetryPolicy,
}

impl ApiClient {
    /// A client of `server`, trusting the extra CA certificates in
    /// `ca_file`, retrying transient failures `retries` times.
    pub fn new(
        server: &str,
        token: Option<SecretString>,
        ca_file: Option<PathBuf>,
        retries: u32,
    ) -> Result<Self, HttpError> {
        let http = http_client(&HttpOptions {
            ca_file,
            // Uploads run many at once against one server.
            max_idle_per_host: Some(64),
            ..HttpOptions::new(concat!("ferry/", env!("CARGO_PKG_VERSION")))
        })?;
        Ok(Self {
            base: server.trim_end_matches('/').to_owned(),
            token,
            http,
            // 0.4 s, 0.8 s, 1.6 s… up to 12.8 s before jitter: a server
            // restarting under a rolling update is back within a few tries.
            retry: RetryPolicy {
                retries,
                base: Duration::from_millis(400),
                max: Duration::from_millis(12_800),
            },
        })
    }

    pub fn server(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => builder.bearer_auth(token.expose_secret()),
            None => builder,
        }
    }

    /// Sends a request (rebuilt by `make` for each attempt), retrying
    /// transient failures with backoff. `what` names it in retry logs.
    async fn send<F, Fut>(&self, what: &str, make: F) -> Result<reqwest::Response, ApiError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<reqwest::RequestBuilder, ApiError>>,
    {
        self.retry
            .run(what, || async {
                match make().await?.send().await {
                    Ok(response) => self.check(response).await,
                    Err(e) => Err(ApiError::Unreachable {
                        server: self.base.clone(),
                        reason: describe(&e),
                    }),
                }
            })
            .await
    }

    async fn check(&self, response: reqwest::Response) -> Result<reqwest::Response, ApiError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        let body: Option<ErrorBody> = serde_json::from_str(&text).ok();
        let (code, message, missing) = match body {
            Some(b) => (b.error.code, b.error.message, b.error.missing),
            None => (
                ErrorCode::Unknown,
                text.chars().take(200).collect(),
                Vec::new(),
            ),
        };
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(ApiError::Unauthorized {
                server: self.base.clone(),
                message,
            });
        }
        Err(ApiError::Server {
            status: status.as_u16(),
            code,
            message,
            missing,
        })
    }

    /// The digests among `digests` the server lacks.
    pub async fn missing(&self, digests: &[Digest]) -> Result<Vec<Digest>, ApiError> {
        let mut missing = Vec::new();
        for chunk in digests.chunks(MAX_MISSING_QUERY) {
            let body = MissingRequest {
                digests: chunk.to_vec(),
            };
            let response = self
                .send("asking which blobs are missing", || async {
                    Ok(self.request(Method::POST, "/v1/blobs/missing").json(&body))
                })
                .await?;
            let answer: MissingResponse = response
                .json()
                .await
                .map_err(|e| ApiError::Protocol(e.to_string()))?;
            missing.extend(answer.missing);
        }
        Ok(missing)
    }

    /// Streams the file at `path` as blob `digest`; `on_bytes` sees progress.
    pub async fn upload(
        &self,
        path: &Path,
        digest: &Digest,
        size: u64,
        on_bytes: impl Fn(u64) + Clone + Send + Sync + 'static,
    ) -> Result<(), ApiError> {
        self.send(&format!("uploading {digest}"), || {
            let on_bytes = on_bytes.clone();
            async move {
                let file = tokio::fs::File::open(path)
                    .await
                    .map_err(|source| ApiError::File {
                        path: path.display().to_string(),
                        source,
                    })?;
                let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024);
                let stream = futures::StreamExt::inspect(stream, move |chunk| {
                    if let Ok(bytes) = chunk {
                        on_bytes(bytes.len() as u64);
                    }
                });
                Ok(self
                    .request(Method::PUT, &format!("/v1/blobs/{digest}"))
                    .header(reqwest::header::CONTENT_LENGTH, size)
                    .body(reqwest::Body::wrap_stream(stream)))
            }
        })
        .await?;
        Ok(())
    }

    /// Uploads several small blobs in one request (`POST /v1/blobs`, a
    /// `multipart/form-data` body with one part per blob named by its
    /// digest); the server's outcome per blob, in order.
    pub async fn upload_batch(
        &self,
        blobs: &[(Digest, Bytes)],
    ) -> Result<Vec<BatchBlob>, ApiError> {
        let response = self
            .send(
                &format!("uploading a batch of {} blobs", blobs.len()),
                || async {
                    let mut form = reqwest::multipart::Form::new();
                    for (digest, bytes) in blobs {
                        let part = reqwest::multipart::Part::stream_with_length(
                            reqwest::Body::from(bytes.clone()),
                            bytes.len() as u64,
                        )
                        .file_name(digest.hex());
                        form = form.part(digest.to_string(), part);
                    }
                    Ok(self.request(Method::POST, "/v1/blobs").multipart(form))
                },
            )
            .await?;
        let answer: BatchStored = response
            .json()
            .await
            .map_err(|e| ApiError::Protocol(e.to_string()))?;
        if answer.blobs.len() != blobs.len() {
            return Err(ApiError::Protocol(format!(
                "the server answered for {} blobs of a batch of {}",
                answer.blobs.len(),
                blobs.len()
            )));
        }
        Ok(answer.blobs)
    }

    /// Opens an upload session (`POST /v1/uploads`).
    pub async fn open_session(&self) -> Result<UploadStatus, ApiError> {
        let response = self
            .send("opening an upload session", || async {
                Ok(self.request(Method::POST, UPLOADS_PATH))
            })
            .await?;
        session_status_of(response).await
    }

    /// Where session `id` stands, or `Server { code: NotFound, .. }`.
    pub async fn session_status(&self, id: &str) -> Result<UploadStatus, ApiError> {
        let path = session_path(id)?;
        let response = self
            .send("asking for an upload session", || async {
                Ok(self.request(Method::GET, &path))
            })
            .await?;
        session_status_of(response).await
    }

    /// Appends `bytes` (not empty) to session `id` at `offset`.
    pub async fn append_chunk(
        &self,
        id: &str,
        offset: u64,
        bytes: bytes::Bytes,
    ) -> Result<UploadStatus, ApiError> {
        let path = session_path(id)?;
        let last = offset + (bytes.len() as u64).max(1) - 1;
        let response = self
            .send(&format!("sending bytes {offset}-{last}"), || async {
                Ok(self
                    .request(Method::PATCH, &path)
                    .header(
                        reqwest::header::CONTENT_RANGE,
                        format!("bytes {offset}-{last}/*"),
                    )
                    .body(bytes.clone()))
            })
            .await?;
        session_status_of(response).await
    }

    /// Commits session `id` as blob `digest`; `true` if the blob is new.
    pub async fn commit_session(&self, id: &str, digest: &Digest) -> Result<bool, ApiError> {
        let path = format!("{}?digest={digest}", session_path(id)?);
        let response = self
            .send(&format!("committing {digest}"), || async {
                Ok(self.request(Method::PUT, &path))
            })
            .await?;
        Ok(response.status() == StatusCode::CREATED)
    }

    pub async fn create_bundle(
        &self,
        request: &CreateBundleRequest,
    ) -> Result<CreateBundleResponse, ApiError> {
        let response = self
            .send("creating the bundle", || async {
                Ok(self.request(Method::POST, "/v1/bundles").json(request))
            })
            .await?;
        response
            .json()
            .await
            .map_err(|e| ApiError::Protocol(e.to_string()))
    }

    pub async fn get_bundle(&self, bundle: &str) -> Result<Manifest, ApiError> {
        let path = format!("/v1/bundles/{bundle}");
        let response = self
            .send(&format!("reading bundle {bundle}"), || async {
                Ok(self.request(Method::GET, &path))
            })
            .await?;
        response
            .json()
            .await
            .map_err(|e| ApiError::Protocol(e.to_string()))
    }

    pub async fn list_bundles(
        &self,
        name_prefix: Option<&str>,
        labels: &[(String, String)],
    ) -> Result<ListBundlesResponse, ApiError> {
        let mut query: Vec<(String, String)> = Vec::new();
        if let Some(prefix) = name_prefix {
            query.push(("name".into(), prefix.into()));
        }
        for (k, v) in labels {
            query.push(("label".into(), format!("{k}={v}")));
        }
        let response = self
            .send("listing bundles", || async {
                Ok(self.request(Method::GET, "/v1/bundles").query(&query))
            })
            .await?;
        response
            .json()
            .await
            .map_err(|e| ApiError::Protocol(e.to_string()))
    }

    pub async fn delete_bundle(&self, bundle: &str) -> Result<(), ApiError> {
        let path = format!("/v1/bundles/{bundle}");
        self.send(&format!("deleting bundle {bundle}"), || async {
            Ok(self.request(Method::DELETE, &path))
        })
        .await?;
        Ok(())
    }
}

/// The route of session `id`, which the server chose: checked before it
/// goes into a URL.
fn session_path(id: &str) -> Result<String, ApiError> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return Err(ApiError::Protocol(format!("odd upload session id {id:?}")));
    }
    Ok(format!("{UPLOADS_PATH}/{id}"))
}

async fn session_status_of(response: reqwest::Response) -> Result<UploadStatus, ApiError> {
    response
        .json()
        .await
        .map_err(|e| ApiError::Protocol(e.to_string()))
}

/// A reqwest error with its causes, down to the informative root one
/// ("Connection refused", "certificate not trusted").
fn describe(error: &reqwest::Error) -> String {
    let text = render_chain(error);
    if error.is_timeout() {
        format!("timed out ({text})")
    } else {
        text
    }
}
