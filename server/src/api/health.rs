//! `GET /healthz` (liveness), `GET /readyz` (storage reachable) and
//! `GET /metrics` (Prometheus text); no auth.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use ferry_core::api::ErrorCode;
use http::header;

use super::{ApiError, SharedState};
use crate::readiness::{NotReady, PROBE_TIMEOUT};

pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

/// The same probe as the background one; its outcome updates `ferry_ready`.
pub(super) async fn readyz(State(state): State<SharedState>) -> Result<&'static str, ApiError> {
    match crate::readiness::check(&state.store, &state.metrics).await {
        Ok(()) => Ok("ready\n"),
        Err(NotReady::Unreachable(_)) => Err(ApiError::new(
            ErrorCode::StorageUnavailable,
            "storage is not reachable",
        )),
        Err(NotReady::TimedOut) => Err(ApiError::new(
            ErrorCode::StorageUnavailable,
            format!("storage did not answer within {}s", PROBE_TIMEOUT.as_secs()),
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
