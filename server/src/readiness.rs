//! Readiness: whether storage answers, probed on a timer and on each
//! `GET /readyz`.
//!
//! `/readyz` alone would make `ferry_ready` depend on who calls it (a
//! kubelet every few seconds, nobody on a laptop). The timer probes every
//! `--readiness-probe-interval` regardless, so the gauge and the "not ready
//! for 5 minutes" alert built on it stay true with no caller at all. Both
//! paths run the same [`check`], which records its outcome in the metrics.

use std::sync::Arc;
use std::time::Duration;

use crate::api::AppState;
use crate::metrics::{Metrics, StorageErrorKind, StorageOperation};
use crate::store::{Store, StoreError};

/// Longest a probe waits for the backend: a hung store is a failed probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Why storage is not ready.
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    #[error("storage is not reachable: {0}")]
    Unreachable(#[source] StoreError),
    #[error("storage did not answer within {}s", PROBE_TIMEOUT.as_secs())]
    TimedOut,
}

/// Probes storage once and records the outcome (`ferry_ready`,
/// `ferry_readiness_changes_total`, `ferry_storage_errors_total`).
pub async fn check(store: &Store, metrics: &Metrics) -> Result<(), NotReady> {
    let outcome = match tokio::time::timeout(PROBE_TIMEOUT, store.is_reachable()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(NotReady::Unreachable(error)),
        Err(_) => Err(NotReady::TimedOut),
    };
    let before = metrics.observe_readiness(outcome.is_ok());
    match &outcome {
        Ok(()) if before != Some(true) => {
            tracing::info!(data = store.description(), "storage is ready")
        }
        Ok(()) => {}
        Err(error) => {
            match error {
                NotReady::Unreachable(e) => {
                    metrics.count_storage_error(StorageOperation::Readiness, e);
                }
                NotReady::TimedOut => metrics.count_storage_failure(
                    StorageOperation::Readiness,
                    StorageErrorKind::Unavailable,
                ),
            }
            // Once per outage at warn: the timer probes every few seconds.
            if before != Some(false) {
                tracing::warn!(%error, data = store.description(), "readiness check failed");
            } else {
                tracing::debug!(%error, data = store.description(), "readiness check failed again");
            }
        }
    }
    outcome
}

/// Probes every `interval` until `shutdown` resolves.
pub async fn run_loop(
    state: Arc<AppState>,
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = ticker.tick() => {}
        }
        // The outcome is in the metrics and the log; nothing else to do.
        let _ = check(&state.store, &state.metrics).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_loop_sets_the_gauge_without_any_request() {
        let state = AppState::in_memory();
        assert!(
            !state.metrics.is_ready(),
            "not ready before the first probe"
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run_loop(state.clone(), Duration::from_secs(10), async {
            let _ = stopped.await;
        }));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(state.metrics.is_ready());
        let text = state.metrics.render();
        assert!(text.contains("\nferry_ready 1\n"), "{text}");
        // The first outcome is not a change.
        assert!(
            text.contains("\nferry_readiness_changes_total 0\n"),
            "{text}"
        );
        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("loop stops on shutdown")
            .unwrap();
    }
}
