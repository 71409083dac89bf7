//! Bodies of HTTP API v1, shared by `ferry-server` and its clients.
//!
//! Routes (see the README's API table): `POST /v1/blobs/missing`,
//! `PUT|HEAD|GET /v1/blobs/{digest}`, `POST|GET /v1/bundles`,
//! `GET|DELETE /v1/bundles/{id-or-name}`, and the upload sessions
//! `POST /v1/uploads`, `GET|HEAD|PATCH|PUT|DELETE /v1/uploads/{id}`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{BundleId, BundleName, Digest, EntryPath, Ttl};

/// Path prefix of every versioned route.
pub const API_PREFIX: &str = "/v1";
/// Most digests one `POST /v1/blobs/missing` may ask about.
pub const MAX_MISSING_QUERY: usize = 10_000;

/// `POST /v1/blobs/missing` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MissingRequest {
    pub digests: Vec<Digest>,
}

/// `POST /v1/blobs/missing` response: the subset of the asked digests the
/// server does not hold, in the order asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingResponse {
    pub missing: Vec<Digest>,
}

/// Where an upload session's route lives: `/v1/uploads/<id>` (also its
/// `Location` header).
pub const UPLOADS_PATH: &str = "/v1/uploads";
/// Response header with the bytes a session has committed so far.
pub const UPLOAD_OFFSET_HEADER: &str = "upload-offset";

/// Where an upload session stands: the answer to `POST /v1/uploads`,
/// `GET /v1/uploads/{id}` and each `PATCH`.
///
/// A chunk is `min_chunk..=max_chunk` bytes, except the last, which may be
/// smaller (object stores want parts of at least 5 MiB but the last).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadStatus {
    pub id: String,
    /// Bytes committed: the next chunk starts here.
    pub offset: u64,
    pub min_chunk: u64,
    pub max_chunk: u64,
    /// The session is dropped (and its bytes swept) after this.
    pub expires_at: DateTime<Utc>,
}

/// The answer to a blob upload: `PUT /v1/blobs/{digest}` and the commit of
/// a session, `PUT /v1/uploads/{id}?digest=...` (`201` new, `200` already
/// stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobStored {
    pub digest: Digest,
    pub size: u64,
}

/// `POST /v1/blobs`: several small blobs in one `multipart/form-data`
/// body, each part named by its digest; at most this many parts.
pub const MAX_BATCH_BLOBS: usize = 1024;

/// One blob of a batch upload, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchBlob {
    pub digest: Digest,
    pub size: u64,
    /// `false`: the server had it already and the bytes were dropped.
    pub created: bool,
}

/// The answer to `POST /v1/blobs`: every part, in the order sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchStored {
    pub blobs: Vec<BatchBlob>,
}

/// One file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub path: EntryPath,
    pub digest: Digest,
    pub size: u64,
    /// Unix permission bits (e.g. `0o755` for an executable); absent means
    /// `0o644`. Only the permission bits are honoured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

/// Who owns a bundle: it lives while a pod in `namespace` matches `selector`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Owner {
    pub namespace: String,
    /// A Kubernetes equality-based label selector, `k=v[,k=v...]`.
    pub selector: String,
}

/// `POST /v1/bundles` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBundleRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<BundleName>,
    pub entries: Vec<Entry>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// Absent: the server's default TTL (`never` for named bundles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<Ttl>,
}

/// `201` response to `POST /v1/bundles`. The token is shown only here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateBundleResponse {
    pub id: BundleId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<BundleName>,
    pub token: String,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A bundle's manifest, as `GET /v1/bundles/{bundle}` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub id: BundleId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<BundleName>,
    pub entries: Vec<Entry>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl Manifest {
    pub fn total_size(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }
}

/// One row of `GET /v1/bundles`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleSummary {
    pub id: BundleId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<BundleName>,
    pub files: usize,
    pub bytes: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// `GET /v1/bundles` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListBundlesResponse {
    pub bundles: Vec<BundleSummary>,
}

/// Every error code the API returns, as it appears in the JSON body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    InvalidDigest,
    InvalidPath,
    InvalidManifest,
    DigestMismatch,
    SizeMismatch,
    MissingBlobs,
    Unauthorized,
    Forbidden,
    NotFound,
    NameTaken,
    RangeNotSatisfiable,
    /// Another request is writing the same upload session right now.
    SessionBusy,
    PayloadTooLarge,
    RequestTimeout,
    InsufficientStorage,
    StorageUnavailable,
    Internal,
    /// A code this build does not know (a newer server).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The HTTP status the server answers this code with.
    pub fn status(self) -> u16 {
        match self {
            Self::BadRequest
            | Self::InvalidDigest
            | Self::InvalidPath
            | Self::InvalidManifest
            | Self::DigestMismatch
            | Self::SizeMismatch => 400,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::RequestTimeout => 408,
            Self::MissingBlobs | Self::NameTaken | Self::SessionBusy => 409,
            Self::PayloadTooLarge => 413,
            Self::RangeNotSatisfiable => 416,
            Self::Internal | Self::Unknown => 500,
            Self::StorageUnavailable => 503,
            Self::InsufficientStorage => 507,
        }
    }

    /// Whether a client may retry the same request and expect success.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Self::RequestTimeout | Self::StorageUnavailable | Self::Internal | Self::SessionBusy
        )
    }
}

/// `{"error": {...}}`, the body of every non-2xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
    /// With `missing_blobs`: the digests the bundle named that are not stored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<Digest>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_request_rejects_evil_paths_and_unknown_fields() {
        let d = Digest::of(b"x");
        let good = format!(r#"{{"entries":[{{"path":"jars/a.jar","digest":"{d}","size":1}}]}}"#);
        assert!(serde_json::from_str::<CreateBundleRequest>(&good).is_ok());
        let evil = good.replace("jars/a.jar", "../a.jar");
        assert!(serde_json::from_str::<CreateBundleRequest>(&evil).is_err());
        let extra = good.replace("\"entries\"", "\"x\":1,\"entries\"");
        assert!(serde_json::from_str::<CreateBundleRequest>(&extra).is_err());
    }

    #[test]
    fn error_body_round_trips_and_tolerates_new_codes() {
        let body = ErrorBody {
            error: ErrorDetail {
                code: ErrorCode::DigestMismatch,
                message: "m".into(),
                missing: vec![],
            },
        };
        let json = serde_json::to_string(&body).unwrap();
        assert_eq!(
            json,
            r#"{"error":{"code":"digest_mismatch","message":"m"}}"#
        );
        let future: ErrorBody =
            serde_json::from_str(r#"{"error":{"code":"brand_new","message":"m"}}"#).unwrap();
        assert_eq!(future.error.code, ErrorCode::Unknown);
    }
}
