//! `GET /healthz` (liveness), `GET /readyz` (storage reachable) and
//! `GET /metrics` (Prometheus text); no auth.

use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use ferry_core::api::ErrorCode;
use http::header;

use super::{ApiError, SharedState};

pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

pub(super) async fn readyz(State(state): State<SharedState>) -> Result<&'static str, ApiError> {
    match tokio::time::timeout(Duration::from_secs(3), state.store.is_reachable()).await {
        Ok(Ok(())) => Ok("ready\n"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check failed");
            Err(ApiError::new(
                ErrorCode::StorageUnavailable,
                "storage is not reachable",
            ))
        }
        Err(_) => Err(ApiError::new(
            ErrorCode::StorageUnavailable,
            "storage did not answer within 3s",
        )),
    }
}

pub(super) async fn metrics(State(state): State<SharedState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
