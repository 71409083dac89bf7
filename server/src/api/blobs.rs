//! `POST /v1/blobs/missing` (upload token), `PUT /v1/blobs/{digest}` (upload
//! token), `GET`/`HEAD /v1/blobs/{digest}` (upload token, or a bundle token
//! whose bundle lists the digest).
//!
//! With `--redirect` (the default on a bucket) a `GET` is answered `307` to
//! a short-lived URL the store signed, so the bytes go from the store to
//! the reader; the token check, `HEAD` and `If-None-Match` stay here.
//! `?redirect=false` asks for the bytes from the server (what ferry-init
//! does when the store refuses a fresh URL, say for clock skew).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use ferry_core::Digest;
use ferry_core::api::{BlobStored, ErrorCode, MAX_MISSING_QUERY, MissingRequest, MissingResponse};
use ferry_core::range::{RangeRequest, parse_range};
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};

use super::{ApiError, SharedState, parse_json};
use crate::metrics::Metrics;
use crate::store::layout::push_hex;
use crate::store::{BodyLimits, Content, PutOutcome, StoreError, UploadBody};

/// Blobs never change, but may need a token.
const BLOB_CACHE_CONTROL: &str = "private, max-age=31536000, immutable";

pub(super) fn parse_digest(text: &str) -> Result<Digest, ApiError> {
    text.parse()
        .map_err(|e| ApiError::new(ErrorCode::InvalidDigest, format!("{e}")))
}

pub(super) async fn missing(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<axum::Json<MissingResponse>, ApiError> {
    state
        .auth
        .authenticate(&headers, &state.store)
        .await?
        .require_uploader()?;
    let request: MissingRequest = parse_json(body, state.limits.max_json_bytes)?;
    if request.digests.len() > MAX_MISSING_QUERY {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("ask about at most {MAX_MISSING_QUERY} digests at once"),
        ));
    }
    let missing = state.store.missing(&request.digests).await?;
    Ok(axum::Json(MissingResponse { missing }))
}

/// Counts a blob stored (by `PUT`, a session's commit or a batch) in the
/// metrics; answers whether it is new.
pub(super) fn count_stored(state: &SharedState, outcome: PutOutcome) -> bool {
    match outcome {
        PutOutcome::Created(size) => {
            state.metrics.blobs_stored.fetch_add(1, Ordering::Relaxed);
            state
                .metrics
                .blob_bytes_stored
                .fetch_add(size, Ordering::Relaxed);
            true
        }
        PutOutcome::AlreadyPresent(_) => {
            state
                .metrics
                .blobs_already_present
                .fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}

/// The answer to a blob stored (by `PUT` or a session's commit), counted.
pub(super) fn stored(state: &SharedState, digest: Digest, outcome: PutOutcome) -> Response {
    let (PutOutcome::Created(size) | PutOutcome::AlreadyPresent(size)) = outcome;
    if count_stored(state, outcome) {
        tracing::info!(%digest, size, "blob stored");
        (StatusCode::CREATED, axum::Json(BlobStored { digest, size })).into_response()
    } else {
        (StatusCode::OK, axum::Json(BlobStored { digest, size })).into_response()
    }
}

/// The body length a request announces (`Content-Length`), if any.
pub(super) fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

pub(super) async fn put(
    State(state): State<SharedState>,
    Path(digest): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let digest = parse_digest(&digest)?;
    state
        .auth
        .authenticate(&headers, &state.store)
        .await?
        .require_uploader()?;
    let limit = state.limits.max_blob_size;
    let declared = declared_length(&headers);
    if declared.is_some_and(|len| len > limit) {
        state.metrics.count_rejected("too_large");
        return Err(StoreError::TooLarge { limit }.into());
    }
    let stream = counted_upload(body, state.metrics.clone());
    let limits = BodyLimits {
        max_bytes: limit,
        idle_timeout: state.limits.body_idle_timeout,
        expected_len: declared,
    };
    let outcome = state.store.put_blob(digest, stream, limits).await;
    match outcome {
        Ok(outcome) => Ok(stored(&state, digest, outcome)),
        Err(error) => {
            let reason = match &error {
                StoreError::DigestMismatch { .. } => "digest_mismatch",
                StoreError::TooLarge { .. } => "too_large",
                StoreError::Stalled(_) => "stalled",
                StoreError::Body(_) | StoreError::Truncated { .. } => "body_broken",
                StoreError::Full(_) => "storage_full",
                _ => "storage_error",
            };
            state.metrics.count_rejected(reason);
            tracing::warn!(%digest, reason, %error, "upload refused");
            Err(error.into())
        }
    }
}

/// An upload body that counts the bytes received.
pub(super) fn counted_upload(body: Body, metrics: Arc<Metrics>) -> UploadBody<'static> {
    body.into_data_stream()
        .map(move |chunk| match chunk {
            Ok(bytes) => {
                metrics
                    .bytes_received
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                Ok(bytes)
            }
            Err(e) => Err(std::io::Error::other(e)),
        })
        .boxed()
}

pub(super) async fn get(
    State(state): State<SharedState>,
    Path(digest): Path<String>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    // Headers read in place: the `HeaderMap` extractor would clone them.
    let (method, headers) = (request.method(), request.headers());
    let digest = parse_digest(&digest)?;
    let caller = state.auth.authenticate(headers, &state.store).await?;
    if !caller.may_read_blob(&digest) {
        return Err(ApiError::forbidden(
            "this bundle token does not grant that blob",
        ));
    }
    if method == Method::GET
        && let Some(expires_in) = state.redirect
        && !proxy_asked(request.uri())
    {
        return redirect(&state, &digest, headers, expires_in).await;
    }
    let (size, blob) = if method == Method::HEAD {
        (state.store.blob_size(&digest).await?, None)
    } else {
        let blob = state.store.open_blob(&digest).await?;
        (blob.size, Some(blob))
    };
    let etag = etag(&digest);
    let mut response = Response::builder()
        .header(
            header::CACHE_CONTROL,
            HeaderValue::from_static(BLOB_CACHE_CONTROL),
        )
        .header(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"))
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
    let etag_text = etag.to_str().unwrap_or_default();
    if matches_none_of(headers, etag_text) {
        return Ok(not_modified(response, etag));
    }
    // If-Range with another validator means "send the whole blob".
    let if_range_ok = headers
        .get(header::IF_RANGE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.trim() == etag_text);
    let range_header = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .filter(|_| if_range_ok);
    let range = match parse_range(range_header, size) {
        RangeRequest::Whole => None,
        RangeRequest::Partial(range) => Some(range),
        RangeRequest::NotSatisfiable => {
            return Err(ApiError::new(
                ErrorCode::RangeNotSatisfiable,
                format!(
                    "range {} is outside the blob's {size} bytes",
                    range_header.unwrap_or_default()
                ),
            )
            .with_header(header::CONTENT_RANGE, format!("bytes */{size}")));
        }
    };
    let length = range.map_or(size, |r| r.len());
    response = response
        .header(header::ETAG, etag)
        .header(header::CONTENT_LENGTH, length);
    if let Some(r) = range {
        response = response.status(StatusCode::PARTIAL_CONTENT).header(
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{size}", r.start, r.end),
        );
    }
    let Some(blob) = blob else {
        return Ok(response.body(Body::empty()).unwrap_or_default());
    };
    let body = counted_body(blob.read(range).await?.content, &state.metrics);
    response
        .body(body)
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))
}

/// A `304`: the client's copy (named by `If-None-Match`) is current.
fn not_modified(response: http::response::Builder, etag: HeaderValue) -> Response {
    response
        .header(header::ETAG, etag)
        .status(StatusCode::NOT_MODIFIED)
        .body(Body::empty())
        .unwrap_or_default()
}

/// Whether the query says `redirect=false`: send the bytes, not a URL.
fn proxy_asked(uri: &http::Uri) -> bool {
    uri.query().is_some_and(|query| {
        url::form_urlencoded::parse(query.as_bytes())
            .any(|(key, value)| key == "redirect" && matches!(value.as_ref(), "false" | "0"))
    })
}

/// A `307` to a URL that reads blob `digest` from the store for
/// `expires_in`; the reader sends its `Range` there. Not cached: the URL
/// expires. The URL is a credential, so it is never logged.
async fn redirect(
    state: &SharedState,
    digest: &Digest,
    headers: &HeaderMap,
    expires_in: std::time::Duration,
) -> Result<Response, ApiError> {
    let etag = etag(digest);
    if matches_none_of(headers, etag.to_str().unwrap_or_default()) {
        let response = Response::builder().header(
            header::CACHE_CONTROL,
            HeaderValue::from_static(BLOB_CACHE_CONTROL),
        );
        return Ok(not_modified(response, etag));
    }
    let url = state.store.signed_blob_url(digest, expires_in).await?;
    let location = HeaderValue::from_str(url.as_str())
        .map_err(|_| ApiError::new(ErrorCode::Internal, "the store signed an unusable URL"))?;
    state.metrics.blob_redirects.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(%digest, "blob read redirected to the store");
    Response::builder()
        .status(StatusCode::TEMPORARY_REDIRECT)
        .header(header::LOCATION, location)
        .header(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))
        .header(header::ETAG, etag)
        .body(Body::empty())
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))
}

/// A response body of `content` that counts the bytes sent: a whole blob
/// at once, a stream chunk by chunk (one relaxed add each, no allocation).
fn counted_body(content: Content, metrics: &Arc<Metrics>) -> Body {
    match content {
        Content::Whole(bytes) => {
            metrics
                .bytes_sent
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            Body::from(bytes)
        }
        Content::Stream(stream) => {
            let metrics = metrics.clone();
            Body::from_stream(stream.map(move |chunk| {
                if let Ok(bytes) = &chunk {
                    metrics
                        .bytes_sent
                        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                }
                chunk
            }))
        }
    }
}

/// Whether `If-None-Match` names the blob's ETag (or `*`): then the
/// client's copy is current.
fn matches_none_of(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
}

/// `"<digest>"`: a blob's strong validator.
fn etag(digest: &Digest) -> HeaderValue {
    let mut text = String::with_capacity(74);
    text.push_str("\"sha256:");
    push_hex(&mut text, digest.as_bytes());
    text.push('"');
    HeaderValue::from_maybe_shared(Bytes::from(text))
        .unwrap_or_else(|_| HeaderValue::from_static("\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_is_the_quoted_digest() {
        let digest = Digest::of(b"etag");
        assert_eq!(etag(&digest).to_str().unwrap(), format!("\"{digest}\""));
    }
}
