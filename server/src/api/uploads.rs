//! Upload sessions, all with the upload token: `POST /v1/uploads` opens
//! one, `PATCH /v1/uploads/{id}` appends a chunk at the offset its
//! `Content-Range` states, `GET`/`HEAD` report the committed offset,
//! `PUT /v1/uploads/{id}?digest=sha256:...` commits, `DELETE` aborts.
//!
//! Modelled on the OCI distribution upload flow. The committed offset is
//! in the JSON body ([`UploadStatus`]) and in `Upload-Offset` and `Range`
//! (`0-<last byte>`, OCI's spelling) headers.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use ferry_core::api::{ErrorCode, UPLOAD_OFFSET_HEADER, UPLOADS_PATH, UploadStatus};
use http::{HeaderMap, Method, StatusCode, header};
use serde::Deserialize;

use super::blobs::{counted_upload, parse_digest, stored};
use super::{ApiError, SharedState};
use crate::store::{ChunkLimits, SessionError, SessionStatus, StoreError};

impl From<SessionError> for ApiError {
    fn from(error: SessionError) -> Self {
        let message = error.to_string();
        match error {
            SessionError::NotFound => ApiError::not_found(message),
            SessionError::WrongOffset { committed, .. } | SessionError::Lost { committed, .. } => {
                ApiError::new(ErrorCode::RangeNotSatisfiable, message)
                    .with_header(header::RANGE, committed_range(committed))
                    .with_header(
                        http::HeaderName::from_static(UPLOAD_OFFSET_HEADER),
                        committed.to_string(),
                    )
            }
            SessionError::Busy => ApiError::new(ErrorCode::SessionBusy, message),
            SessionError::AfterShortChunk { .. } | SessionError::LengthMismatch { .. } => {
                ApiError::bad_request(message)
            }
            SessionError::ChunkTooLarge { .. } | SessionError::BlobTooLarge { .. } => {
                ApiError::new(ErrorCode::PayloadTooLarge, message)
            }
            SessionError::Store(error) => error.into(),
        }
    }
}

/// `0-<last committed byte>`, or `0-0` when nothing is (as OCI registries
/// answer; `Upload-Offset` is the unambiguous one).
fn committed_range(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

fn location(id: &str) -> String {
    format!("{UPLOADS_PATH}/{id}")
}

fn answer(state: &SharedState, status: StatusCode, session: SessionStatus) -> Response {
    let body = UploadStatus {
        offset: session.offset,
        min_chunk: session.min_chunk,
        max_chunk: state.limits.max_chunk_size,
        expires_at: session.expires_at,
        id: session.id,
    };
    (
        status,
        [
            (header::LOCATION, location(&body.id)),
            (header::RANGE, committed_range(body.offset)),
            (
                http::HeaderName::from_static(UPLOAD_OFFSET_HEADER),
                body.offset.to_string(),
            ),
        ],
        axum::Json(body),
    )
        .into_response()
}

async fn require_uploader(state: &SharedState, headers: &HeaderMap) -> Result<(), ApiError> {
    state
        .auth
        .authenticate(headers, &state.store)
        .await?
        .require_uploader()?;
    Ok(())
}

pub(super) async fn open(
    State(state): State<SharedState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_uploader(&state, &headers).await?;
    let session = state.store.open_session(state.limits.session_ttl).await?;
    Ok(answer(&state, StatusCode::CREATED, session))
}

pub(super) async fn status(
    State(state): State<SharedState>,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_uploader(&state, &headers).await?;
    let session = state.store.session_status(&id).await?;
    let response = answer(&state, StatusCode::OK, session);
    if method == Method::HEAD {
        let (parts, _) = response.into_parts();
        return Ok(Response::from_parts(parts, Body::empty()));
    }
    Ok(response)
}

/// The first and last byte a `Content-Range` names: `bytes 0-99/*`,
/// `bytes 0-99/1000` or OCI's bare `0-99`.
fn parse_content_range(headers: &HeaderMap) -> Result<(u64, u64), ApiError> {
    let bad = || {
        ApiError::bad_request(
            "a chunk needs Content-Range: bytes <first>-<last>/* (the offset it starts at)",
        )
    };
    let text = headers
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(bad)?
        .trim();
    let text = text.strip_prefix("bytes ").unwrap_or(text);
    let range = text.split_once('/').map_or(text, |(range, _)| range);
    let (first, last) = range.split_once('-').ok_or_else(bad)?;
    let first: u64 = first.trim().parse().map_err(|_| bad())?;
    let last: u64 = last.trim().parse().map_err(|_| bad())?;
    if last < first {
        return Err(bad());
    }
    Ok((first, last - first + 1))
}

pub(super) async fn append(
    State(state): State<SharedState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require_uploader(&state, &headers).await?;
    let (offset, len) = parse_content_range(&headers)?;
    let max_chunk = state.limits.max_chunk_size;
    if len > max_chunk {
        // Refused before a byte is read.
        state.metrics.count_rejected("too_large");
        return Err(SessionError::ChunkTooLarge { max: max_chunk }.into());
    }
    let limits = ChunkLimits {
        max_chunk,
        max_blob: state.limits.max_blob_size,
        idle_timeout: state.limits.body_idle_timeout,
        ttl: state.limits.session_ttl,
    };
    let body = counted_upload(body, state.metrics.clone());
    // On a task of its own: hyper drops a handler whose client hung up, and
    // a chunk dropped halfway would keep the session claimed until the
    // claim goes stale. The task sees the broken body and lets go at once.
    let (store, task_id) = (state.store.clone(), id.clone());
    let appended = tokio::spawn(async move {
        store
            .append_chunk(&task_id, (offset, len), body, limits)
            .await
    })
    .await
    .map_err(|e| SessionError::Store(StoreError::from_join("chunk", e)))?;
    match appended {
        Ok(session) => Ok(answer(&state, StatusCode::ACCEPTED, session)),
        Err(error) => {
            tracing::warn!(session = %id, offset, len, %error, "chunk refused");
            Err(error.into())
        }
    }
}

#[derive(Deserialize)]
pub(super) struct CommitQuery {
    digest: Option<String>,
}

pub(super) async fn commit(
    State(state): State<SharedState>,
    Path(id): Path<String>,
    Query(query): Query<CommitQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_uploader(&state, &headers).await?;
    let digest = parse_digest(query.digest.as_deref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidDigest,
            "commit needs ?digest=sha256:<hex>",
        )
    })?)?;
    let has_body = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() != "0");
    if has_body {
        return Err(ApiError::bad_request(
            "the commit carries no bytes; send the last chunk with PATCH first",
        ));
    }
    // On a task of its own, so a client that hangs up cannot stop a
    // commit halfway.
    let (store, task_id, idle) = (
        state.store.clone(),
        id.clone(),
        state.limits.body_idle_timeout,
    );
    let committed = tokio::spawn(async move { store.commit_session(&task_id, digest, idle).await })
        .await
        .map_err(|e| SessionError::Store(StoreError::from_join("commit", e)))?;
    match committed {
        Ok(outcome) => Ok(stored(&state, digest, outcome)),
        Err(error) => {
            if matches!(
                error,
                SessionError::Store(StoreError::DigestMismatch { .. })
            ) {
                state.metrics.count_rejected("digest_mismatch");
            }
            tracing::warn!(session = %id, %digest, %error, "commit refused");
            Err(error.into())
        }
    }
}

pub(super) async fn abort(
    State(state): State<SharedState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    require_uploader(&state, &headers).await?;
    state.store.abort_session(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(value: &str) -> Result<(u64, u64), ApiError> {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_RANGE, value.parse().unwrap());
        parse_content_range(&headers)
    }

    #[test]
    fn content_range_in_http_and_oci_spelling_gives_offset_and_length() {
        assert_eq!(range("bytes 0-99/*").unwrap(), (0, 100));
        assert_eq!(range("bytes 100-199/1000").unwrap(), (100, 100));
        assert_eq!(range("5-5").unwrap(), (5, 1));
        for bad in ["bytes 9-3/*", "bytes */10", "ten-20", ""] {
            assert!(range(bad).is_err(), "{bad}");
        }
        assert!(parse_content_range(&HeaderMap::new()).is_err());
    }
}
