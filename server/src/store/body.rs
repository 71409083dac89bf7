//! Reading an upload body, the same for every backend: the idle timeout,
//! the size limit, and a little lingering over a refused body.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use super::StoreError;
use super::backend::{BodyLimits, UploadBody};

/// How much of a refused body is read before answering, and for how long.
const LINGER_BYTES: u64 = 1 << 20;
const LINGER_TIME: Duration = Duration::from_millis(500);

/// The next chunk of an upload body, `None` at its end, with `received`
/// counting the bytes so far. A body silent for the idle timeout is
/// `Stalled`; one past the limit is `TooLarge`, after a little more of it
/// was read.
pub(super) async fn next_chunk(
    body: &mut UploadBody<'_>,
    received: &mut u64,
    limits: BodyLimits,
) -> Result<Option<Bytes>, StoreError> {
    let next = tokio::time::timeout(limits.idle_timeout, body.next())
        .await
        .map_err(|_| StoreError::Stalled(limits.idle_timeout))?;
    let Some(chunk) = next else { return Ok(None) };
    let chunk = chunk.map_err(|e| StoreError::Body(e.to_string()))?;
    *received += chunk.len() as u64;
    if *received > limits.max_bytes {
        linger(body).await;
        return Err(StoreError::TooLarge {
            limit: limits.max_bytes,
        });
    }
    Ok(Some(chunk))
}

/// Reads and drops a little more of a refused body, so a client still
/// sending a small one reads the answer instead of a connection reset (the
/// kernel resets a connection closed with unread input).
async fn linger(body: &mut UploadBody<'_>) {
    let mut left = LINGER_BYTES;
    let _ = tokio::time::timeout(LINGER_TIME, async {
        while let Some(Ok(chunk)) = body.next().await {
            left = left.saturating_sub(chunk.len() as u64);
            if left == 0 {
                break;
            }
        }
    })
    .await;
}
