//! HTTP API v1: the router, shared state, and the one error type every route
//! answers with.

mod batch;
mod blobs;
mod bundles;
mod health;
mod uploads;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ferry_core::Digest;
use ferry_core::api::{ErrorBody, ErrorCode, ErrorDetail};

use crate::auth::Authenticator;
use crate::metrics::{Metrics, StorageErrorKind, StorageOperation};
use crate::store::{Store, StoreError};

/// Limits every request is held to; set from the command line.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest blob accepted, in bytes.
    pub max_blob_size: u64,
    /// Most entries in one bundle.
    pub max_entries: usize,
    /// Largest JSON body (bundle manifest, missing query), in bytes.
    pub max_json_bytes: usize,
    /// An upload that sends nothing for this long is cut off.
    pub body_idle_timeout: Duration,
    /// TTL of an unnamed bundle that asks for none.
    pub default_ttl: Duration,
    /// Largest chunk of an upload session, in bytes.
    pub max_chunk_size: u64,
    /// Largest batch upload body, in bytes.
    pub max_batch_bytes: u64,
    /// An upload session idle for this long is dropped.
    pub session_ttl: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_blob_size: 64 << 30,
            max_entries: 100_000,
            max_json_bytes: 32 << 20,
            body_idle_timeout: Duration::from_secs(60),
            default_ttl: Duration::from_secs(24 * 3600),
            max_chunk_size: 32 << 20,
            max_batch_bytes: 8 << 20,
            session_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// What every handler can reach.
pub struct AppState {
    pub store: Store,
    pub auth: Authenticator,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    /// Blob GETs are answered with a `307` to a URL the store signs, valid
    /// this long (`--redirect`); `None`: the server sends the bytes.
    pub redirect: Option<Duration>,
}

pub type SharedState = Arc<AppState>;

#[cfg(test)]
impl AppState {
    /// State over `object_store`'s in-memory store, auth disabled.
    pub(crate) fn in_memory() -> SharedState {
        Arc::new(Self {
            store: Store::new({
                let memory = Arc::new(object_store::memory::InMemory::new());
                Arc::new(
                    crate::store::ObjectStoreBackend::new(memory.clone(), "memory")
                        .with_multipart(memory),
                )
            }),
            auth: Authenticator::new(crate::auth::UploadAuth::Disabled),
            metrics: Arc::new(Metrics::default()),
            limits: Limits::default(),
            redirect: None,
        })
    }
}

/// The whole HTTP API.
pub fn router(state: SharedState) -> Router {
    let json_limit = state.limits.max_json_bytes;
    // The parts' bytes are held to `max_batch_bytes` by the handler, which
    // then reads on a little so the client sees its 413; this bounds the
    // rest (part headers, that reading on).
    let batch_limit =
        usize::try_from(state.limits.max_batch_bytes.saturating_add(2 << 20)).unwrap_or(usize::MAX);
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route(
            "/v1/blobs",
            post(batch::upload).layer(DefaultBodyLimit::max(batch_limit)),
        )
        .route("/v1/blobs/missing", post(blobs::missing))
        .route("/v1/blobs/{digest}", get(blobs::get).put(blobs::put))
        .route("/v1/uploads", post(uploads::open))
        .route(
            "/v1/uploads/{id}",
            get(uploads::status)
                .patch(uploads::append)
                .put(uploads::commit)
                .delete(uploads::abort),
        )
        .route("/v1/bundles", post(bundles::create).get(bundles::list))
        .route(
            "/v1/bundles/{bundle}",
            get(bundles::show).delete(bundles::delete),
        )
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such route") })
        .layer(DefaultBodyLimit::max(json_limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state)
}

async fn count_requests(
    State(state): State<SharedState>,
    request: Request,
    next: Next,
) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = request.method().clone();
    state.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
    let response = next.run(request).await;
    state.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
    let route = route.as_ref().map_or("unmatched", |p| p.as_str());
    if let Some(StorageFailure(kind)) = response.extensions().get::<StorageFailure>() {
        state
            .metrics
            .count_storage_failure(storage_operation(route, &method), *kind);
    }
    state
        .metrics
        .record_request(route, method.as_str(), response.status().as_u16());
    response
}

/// Marks a response that failed because storage did; [`count_requests`]
/// counts it by the operation its route performs.
#[derive(Debug, Clone, Copy)]
struct StorageFailure(StorageErrorKind);

/// Which storage operation a route performs, for `ferry_storage_errors_total`.
fn storage_operation(route: &str, method: &http::Method) -> StorageOperation {
    use http::Method;
    if route.starts_with("/v1/uploads") {
        if method == Method::GET || method == Method::HEAD {
            StorageOperation::BlobRead
        } else {
            StorageOperation::BlobWrite
        }
    } else if route.starts_with("/v1/blobs") {
        if method == Method::PUT || route == "/v1/blobs" {
            StorageOperation::BlobWrite
        } else {
            StorageOperation::BlobRead
        }
    } else if route.starts_with("/v1/bundles") {
        if method == Method::POST || method == Method::DELETE {
            StorageOperation::BundleWrite
        } else {
            StorageOperation::BundleRead
        }
    } else {
        StorageOperation::Other
    }
}

/// An answer other than success: a code from the API's list, a message for
/// people, and with `missing_blobs` the digests that were missing.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
    missing: Vec<Digest>,
    headers: Vec<(http::HeaderName, String)>,
    /// Set when the storage itself failed (not the request).
    storage: Option<StorageErrorKind>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            missing: Vec::new(),
            headers: Vec::new(),
            storage: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
            .with_header(http::header::WWW_AUTHENTICATE, "Bearer realm=\"ferry\"")
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// A failure of the server's own, logged where it was turned into this.
    pub fn internal() -> Self {
        Self::new(ErrorCode::Internal, "internal error; see the server log")
    }

    pub fn missing_blobs(missing: Vec<Digest>) -> Self {
        let mut error = Self::new(
            ErrorCode::MissingBlobs,
            format!(
                "{} blob(s) named by the bundle are not uploaded yet",
                missing.len()
            ),
        );
        error.missing = missing;
        error
    }

    pub fn with_header(mut self, name: http::HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        let storage = StorageErrorKind::of(&error);
        let mut answer = match error {
            StoreError::NotFound => Self::not_found("not found"),
            StoreError::DigestMismatch { expected, actual } => Self::new(
                ErrorCode::DigestMismatch,
                format!("body hashes to {actual}, not {expected}; nothing was stored"),
            ),
            StoreError::TooLarge { limit } => Self::new(
                ErrorCode::PayloadTooLarge,
                format!("blob exceeds the server's limit of {limit} bytes (--max-blob-size)"),
            ),
            StoreError::Truncated { expected, received } => Self::new(
                ErrorCode::BadRequest,
                format!("body ended after {received} of {expected} bytes; nothing was stored"),
            ),
            StoreError::Stalled(after) => Self::new(
                ErrorCode::RequestTimeout,
                format!(
                    "no body bytes arrived for {}s; nothing was stored",
                    after.as_secs()
                ),
            ),
            StoreError::Body(reason) => Self::bad_request(format!(
                "the request body broke off ({reason}); nothing was stored"
            )),
            StoreError::Full(detail) => {
                tracing::error!(%detail, "storage full");
                Self::new(
                    ErrorCode::InsufficientStorage,
                    "the server's storage is full; nothing was stored",
                )
            }
            StoreError::Backend(detail) => {
                tracing::error!(%detail, "storage backend error");
                Self::new(
                    ErrorCode::StorageUnavailable,
                    "the storage backend failed; try again",
                )
            }
            StoreError::Corrupt { path, reason } => {
                tracing::error!(%path, %reason, "corrupt record in store");
                Self::internal()
            }
            // Conflicts the store layer resolves itself; one that gets this
            // far is the server's own failure, as are the rest.
            error @ (StoreError::AlreadyExists { .. }
            | StoreError::VersionMismatch { .. }
            | StoreError::Unsupported(_)
            | StoreError::Internal(_)) => {
                tracing::error!(%error, "internal failure");
                Self::internal()
            }
        };
        answer.storage = storage;
        answer
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = http::StatusCode::from_u16(self.code.status())
            .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                missing: self.missing,
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(kind) = self.storage {
            response.extensions_mut().insert(StorageFailure(kind));
        }
        for (name, value) in self.headers {
            if let Ok(value) = http::HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, value);
            }
        }
        response
    }
}

/// Parses a JSON body, answering malformed input with a readable 400.
fn parse_json<T: serde::de::DeserializeOwned>(
    body: Result<bytes::Bytes, axum::extract::rejection::BytesRejection>,
    limit: usize,
) -> Result<T, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("JSON body exceeds {limit} bytes"),
            )
        } else {
            ApiError::bad_request(format!("could not read the request body: {rejection}"))
        }
    })?;
    serde_json::from_slice(&body).map_err(|e| {
        let code = if e.to_string().starts_with("path ") {
            ErrorCode::InvalidPath
        } else {
            ErrorCode::BadRequest
        };
        ApiError::new(code, format!("invalid JSON body: {e}"))
    })
}
