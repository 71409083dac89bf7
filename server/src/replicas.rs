//! Serving as one of several replicas on one bucket: the check, before
//! serving, that the store keeps the conditional writes replicas rely on
//! (names, the GC lease), and the GC lease itself.
//!
//! A store that answers but lacks them (an S3-compatible store that ignores
//! `If-None-Match`, S3 with conditional puts disabled) stops the server
//! from starting: racing silently would break the promise that a name is
//! held by one bundle. A store that does not answer yet is checked again
//! until it does; the server serves meanwhile and stops if the check then
//! fails.

use std::sync::Arc;
use std::time::Duration;

use crate::lease::Lease;
use crate::store::{ConditionalWriteError, Store};

/// What a server on a shared store runs with.
pub struct SharedStore {
    /// The GC lease (see [`crate::lease`]).
    pub lease: Arc<Lease>,
    /// Resolves, with the reason, if the store turns out to lack
    /// conditional writes after all (checked again while it did not answer
    /// at start); never resolves otherwise.
    pub refused: futures::future::BoxFuture<'static, anyhow::Error>,
}

/// Checks `store` and sets up the GC lease. An error: do not serve.
pub async fn prepare(
    store: &Store,
    lease_ttl: Duration,
    recheck_interval: Duration,
) -> anyhow::Result<SharedStore> {
    let lease = Arc::new(Lease::new(store.clone(), "gc", lease_ttl));
    let refused: futures::future::BoxFuture<'static, anyhow::Error> =
        match store.check_conditional_writes().await {
            Ok(()) => {
                tracing::info!(
                    data = store.description(),
                    holder = lease.holder(),
                    "the store keeps conditional writes; replicas may share it"
                );
                Box::pin(std::future::pending())
            }
            Err(error @ ConditionalWriteError::Missing { .. }) => return Err(refusal(error)),
            Err(error @ ConditionalWriteError::Unreachable { .. }) => {
                tracing::warn!(%error, "checking again once the store answers");
                Box::pin(recheck(store.clone(), recheck_interval))
            }
        };
    Ok(SharedStore { lease, refused })
}

fn refusal(error: ConditionalWriteError) -> anyhow::Error {
    anyhow::Error::new(error).context(
        "refusing to serve a store that several replicas may share; if this server is the only one on it, pass --single-replica",
    )
}

/// Checks every `interval` until the store answers; resolves only if it
/// then lacks conditional writes.
async fn recheck(store: Store, interval: Duration) -> anyhow::Error {
    loop {
        tokio::time::sleep(interval).await;
        match store.check_conditional_writes().await {
            Ok(()) => {
                tracing::info!(
                    data = store.description(),
                    "the store keeps conditional writes; replicas may share it"
                );
                return std::future::pending().await;
            }
            Err(error @ ConditionalWriteError::Missing { .. }) => return refusal(error),
            Err(error) => tracing::debug!(%error, "store still not answering"),
        }
    }
}
