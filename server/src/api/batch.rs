//! `POST /v1/blobs` (upload token): several small blobs in one
//! `multipart/form-data` body, each part named by its digest, as
//! `curl -F sha256:<hex>=@lib.jar -F sha256:<hex>=@other.jar` sends them.
//!
//! Staging hundreds of small jars one `PUT` each costs two fsyncs per jar
//! (the file, then its directory); a batch costs two syncs in all (see the
//! local backend's `put_batch`). The body is held in memory while it is
//! checked, so it is bounded (`--max-batch-size`, at most
//! [`MAX_BATCH_BLOBS`] parts) and at most [`BATCHES_AT_ONCE`] batches are
//! held at once; the rest wait for a turn before their bodies are read.
//!
//! Every part is hashed as it arrives and nothing is stored before all
//! are: one that does not hash to its name fails the whole batch with
//! `400 digest_mismatch` naming it, and nothing of the batch is kept.

use axum::extract::multipart::{Field, MultipartError};
use axum::extract::{FromRequest as _, Multipart, State};
use bytes::{Bytes, BytesMut};
use ferry_core::api::{BatchBlob, BatchStored, ErrorCode, MAX_BATCH_BLOBS};
use ferry_core::{Digest, Sha256Hasher};
use http::{HeaderMap, StatusCode};
use std::sync::atomic::Ordering;
use tokio::sync::Semaphore;

use super::blobs::{count_stored, declared_length, parse_digest};
use super::{ApiError, SharedState};
use crate::store::StoreError;

/// Batches held in memory at once (each up to `--max-batch-size`).
pub const BATCHES_AT_ONCE: usize = 4;
static BATCHES: Semaphore = Semaphore::const_new(BATCHES_AT_ONCE);

fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!(
            "a batch may carry at most {limit} bytes (--max-batch-size); send larger files with PUT /v1/blobs/<digest>"
        ),
    )
}

fn malformed(limit: u64, error: &MultipartError) -> ApiError {
    if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return too_large(limit);
    }
    ApiError::bad_request(format!(
        "malformed multipart/form-data batch: {}; nothing was stored",
        error.body_text()
    ))
}

/// Waits at most the body idle timeout for the next piece of the body.
async fn within<T>(
    idle: std::time::Duration,
    next: impl Future<Output = Result<T, MultipartError>>,
    limit: u64,
) -> Result<T, ApiError> {
    match tokio::time::timeout(idle, next).await {
        Ok(result) => result.map_err(|e| malformed(limit, &e)),
        Err(_) => Err(StoreError::Stalled(idle).into()),
    }
}

/// Reads every part of the batch: (the digest it is named by, its bytes).
async fn read_parts(
    state: &SharedState,
    mut multipart: Multipart,
) -> Result<Vec<(Digest, Bytes)>, ApiError> {
    let limit = state.limits.max_batch_bytes;
    let idle = state.limits.body_idle_timeout;
    let mut parts = Vec::new();
    let mut total = 0u64;
    let mut over = false;
    while let Some(mut field) = within(idle, multipart.next_field(), limit).await? {
        if parts.len() == MAX_BATCH_BLOBS {
            return Err(ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("a batch may carry at most {MAX_BATCH_BLOBS} blobs"),
            ));
        }
        let name = field.name().unwrap_or_default().to_owned();
        if name.is_empty() {
            return Err(ApiError::new(
                ErrorCode::InvalidDigest,
                "each part of a batch is named by its digest (form field sha256:<hex>)",
            ));
        }
        let expected = parse_digest(&name)?;
        // Hashed as it arrives, a body chunk (a few KiB) at a time: small
        // steps, so the runtime's thread is never held long.
        let mut hasher = Sha256Hasher::new();
        let mut bytes = BytesMut::new();
        while let Some(chunk) = within(idle, field.chunk(), limit).await? {
            total += chunk.len() as u64;
            if total > limit {
                over = true;
                break;
            }
            state
                .metrics
                .bytes_received
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            hasher.update(&chunk);
            bytes.extend_from_slice(&chunk);
        }
        if over {
            // Read on a little (see `drain`) so the client, still sending,
            // gets to read the 413.
            let mut drained = drain_field(field, 0).await;
            while drained < DRAIN_MAX {
                match tokio::time::timeout(DRAIN_WAIT, multipart.next_field()).await {
                    Ok(Ok(Some(field))) => drained = drain_field(field, drained).await,
                    _ => break,
                }
            }
            return Err(too_large(limit));
        }
        let actual = hasher.finish();
        if actual != expected {
            return Err(StoreError::DigestMismatch { expected, actual }.into());
        }
        parts.push((expected, bytes.freeze()));
    }
    Ok(parts)
}

/// A refused body is read on, up to this much and while it keeps coming
/// within [`DRAIN_WAIT`], before the answer: a server that answers and
/// closes while the client is still sending makes most clients see a
/// broken connection instead of the `413` (nginx's lingering close does
/// the same).
const DRAIN_MAX: u64 = 1 << 20;
const DRAIN_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Reads and drops the rest of `field` while fewer than [`DRAIN_MAX`]
/// bytes (`drained` so far) were dropped; answers the new count.
async fn drain_field(mut field: Field<'_>, mut drained: u64) -> u64 {
    while drained < DRAIN_MAX {
        match tokio::time::timeout(DRAIN_WAIT, field.chunk()).await {
            Ok(Ok(Some(chunk))) => drained += chunk.len() as u64,
            _ => break,
        }
    }
    drained
}

/// Reads and drops up to [`DRAIN_MAX`] bytes of `body`.
async fn drain(body: axum::body::Body) {
    let mut stream = body.into_data_stream();
    let mut drained = 0u64;
    while drained < DRAIN_MAX {
        match tokio::time::timeout(DRAIN_WAIT, futures::StreamExt::next(&mut stream)).await {
            Ok(Some(Ok(bytes))) => drained += bytes.len() as u64,
            _ => break,
        }
    }
}

pub(super) async fn upload(
    State(state): State<SharedState>,
    request: axum::extract::Request,
) -> Result<axum::Json<BatchStored>, ApiError> {
    let headers: HeaderMap = request.headers().clone();
    state
        .auth
        .authenticate(&headers, &state.store)
        .await?
        .require_uploader()?;
    let limit = state.limits.max_batch_bytes;
    if declared_length(&headers).is_some_and(|len| len > limit) {
        state.metrics.count_rejected("too_large");
        drain(request.into_body()).await;
        return Err(too_large(limit));
    }
    let multipart = Multipart::from_request(request, &state)
        .await
        .map_err(|e| {
            ApiError::bad_request(format!(
                "a batch is a multipart/form-data body, one part per blob named by its digest: {}",
                e.body_text()
            ))
        })?;
    let _turn = BATCHES.acquire().await.map_err(|_| ApiError::internal())?;
    let parts = read_parts(&state, multipart).await.inspect_err(|e| {
        let reason = match e.code() {
            ErrorCode::PayloadTooLarge => "too_large",
            ErrorCode::RequestTimeout => "stalled",
            ErrorCode::DigestMismatch => "digest_mismatch",
            ErrorCode::InvalidDigest => "invalid_digest",
            _ => "body_broken",
        };
        state.metrics.count_rejected(reason);
        tracing::warn!(reason, "batch refused");
    })?;
    let digests: Vec<(Digest, u64)> = parts.iter().map(|(d, b)| (*d, b.len() as u64)).collect();
    let outcomes = state
        .store
        .put_blobs(parts, state.limits.body_idle_timeout)
        .await
        .inspect_err(|e| {
            state.metrics.count_rejected("storage_error");
            tracing::warn!(%e, "batch not stored");
        })?;
    let blobs: Vec<BatchBlob> = digests
        .into_iter()
        .zip(outcomes)
        .map(|((digest, size), outcome)| BatchBlob {
            digest,
            size,
            created: count_stored(&state, outcome),
        })
        .collect();
    tracing::info!(blobs = blobs.len(), "batch stored");
    Ok(axum::Json(BatchStored { blobs }))
}
