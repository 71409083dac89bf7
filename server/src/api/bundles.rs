//! `POST /v1/bundles`, `GET /v1/bundles` and `DELETE /v1/bundles/{bundle}`
//! (upload token); `GET /v1/bundles/{bundle}` (upload token, or that
//! bundle's own token).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use axum::extract::{Path, RawQuery, State};
use axum::response::IntoResponse;
use bytes::Bytes;
use chrono::Utc;
use ferry_core::api::{
    BundleSummary, CreateBundleRequest, CreateBundleResponse, Entry, ErrorCode,
    ListBundlesResponse, Manifest,
};
use ferry_core::{BundleId, BundleRef, Digest, Selector, Ttl};
use http::{HeaderMap, StatusCode};
use rand::RngCore as _;

use super::{ApiError, SharedState, parse_json};
use crate::auth::generate_token;
use crate::store::{BundleRecord, CreateError, Store, StoreError};

const MAX_LABELS: usize = 64;
const MAX_LABEL_KEY: usize = 128;
const MAX_LABEL_VALUE: usize = 256;

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidManifest, message)
}

/// Checks what serde cannot: counts, duplicates, files that are also folders,
/// labels and the owner.
fn validate(request: &CreateBundleRequest, max_entries: usize) -> Result<(), ApiError> {
    if request.entries.is_empty() {
        return Err(invalid("a bundle needs at least one entry"));
    }
    if request.entries.len() > max_entries {
        return Err(invalid(format!(
            "a bundle may have at most {max_entries} entries, this one has {}",
            request.entries.len()
        )));
    }
    ferry_core::path::check_tree(request.entries.iter().map(|e| &e.path))
        .map_err(|e| ApiError::new(ErrorCode::InvalidPath, e.to_string()))?;
    for entry in &request.entries {
        if entry.mode.is_some_and(|m| m & !0o777 != 0) {
            return Err(invalid(format!(
                "mode of {} must be permission bits only (0 to 0o777)",
                entry.path
            )));
        }
    }
    if request.labels.len() > MAX_LABELS {
        return Err(invalid(format!("at most {MAX_LABELS} labels")));
    }
    for (key, value) in &request.labels {
        if key.is_empty() || key.len() > MAX_LABEL_KEY || value.len() > MAX_LABEL_VALUE {
            return Err(invalid(format!(
                "label {key:?}: keys are 1-{MAX_LABEL_KEY} bytes, values at most {MAX_LABEL_VALUE}"
            )));
        }
        if key.chars().chain(value.chars()).any(char::is_control) || key.contains('=') {
            return Err(invalid(format!(
                "label {key:?} has control characters or '='"
            )));
        }
    }
    if let Some(owner) = &request.owner {
        if !is_dns_label(&owner.namespace) {
            return Err(invalid(format!(
                "owner namespace {:?} is not a Kubernetes namespace name",
                owner.namespace
            )));
        }
        Selector::parse(&owner.selector).map_err(|e| invalid(e.to_string()))?;
    }
    Ok(())
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Every blob the entries name must be stored, at the size they claim
/// (one `HEAD` per distinct blob). Returns the bytes of the distinct blobs.
async fn check_blobs_stored(store: &Store, entries: &[Entry]) -> Result<u64, ApiError> {
    let distinct: HashSet<Digest> = entries.iter().map(|e| e.digest).collect();
    let digests: Vec<Digest> = distinct.into_iter().collect();
    let stored: HashMap<Digest, Option<u64>> =
        store.blob_sizes(&digests).await?.into_iter().collect();
    let missing: Vec<Digest> = digests
        .iter()
        .copied()
        .filter(|d| stored.get(d).copied().flatten().is_none())
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::missing_blobs(missing));
    }
    for entry in entries {
        let stored = stored.get(&entry.digest).copied().flatten().unwrap_or(0);
        if stored != entry.size {
            return Err(ApiError::new(
                ErrorCode::SizeMismatch,
                format!(
                    "entry {} says {} bytes but blob {} has {stored}",
                    entry.path, entry.size, entry.digest
                ),
            ));
        }
    }
    Ok(stored.values().flatten().sum())
}

pub(super) async fn create(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    state
        .auth
        .authenticate(&headers, &state.store)
        .await?
        .require_uploader()?;
    let request: CreateBundleRequest = parse_json(body, state.limits.max_json_bytes)?;
    validate(&request, state.limits.max_entries)?;

    let distinct_bytes = check_blobs_stored(&state.store, &request.entries).await?;
    let now = Utc::now();
    let ttl = request.ttl_seconds.unwrap_or(if request.name.is_some() {
        Ttl::Never
    } else {
        Ttl::After(state.limits.default_ttl)
    });
    let expires_at = match ttl {
        Ttl::Never => None,
        Ttl::After(d) => Some(
            now + chrono::Duration::from_std(d).map_err(|_| invalid("ttl_seconds is too large"))?,
        ),
    };
    let mut random = [0u8; 10];
    rand::rng().fill_bytes(&mut random);
    let id = BundleId::generate(now.timestamp_millis().max(0) as u64, random);
    let token = generate_token();
    let record = BundleRecord {
        manifest: Manifest {
            id: id.clone(),
            name: request.name.clone(),
            entries: request.entries,
            labels: request.labels,
            owner: request.owner,
            created_at: now,
            expires_at,
        },
        token_sha256: Digest::of(token.as_bytes()).hex(),
    };
    match state.store.create_bundle(&record).await {
        Ok(()) => {}
        Err(CreateError::NameTaken(name)) => {
            return Err(ApiError::new(
                ErrorCode::NameTaken,
                format!("bundle name {name} is in use; delete it first or choose another name"),
            ));
        }
        Err(CreateError::MissingBlobs(gone)) => {
            tracing::info!(%id, blobs = gone.len(), "bundle not created: blobs went to garbage collection meanwhile");
            return Err(ApiError::missing_blobs(gone));
        }
        Err(CreateError::Store(e)) => return Err(e.into()),
    }
    state
        .metrics
        .bundles_created
        .fetch_add(1, Ordering::Relaxed);
    state
        .metrics
        .bundle_bytes
        .fetch_add(distinct_bytes, Ordering::Relaxed);
    tracing::info!(
        %id,
        name = record.manifest.name.as_ref().map(|n| n.as_str()),
        entries = record.manifest.entries.len(),
        bytes = record.manifest.total_size(),
        "bundle created"
    );
    Ok((
        StatusCode::CREATED,
        axum::Json(CreateBundleResponse {
            id,
            name: request.name,
            token,
            expires_at,
        }),
    ))
}

fn parse_bundle_ref(text: &str) -> Result<BundleRef, ApiError> {
    BundleRef::parse(text).map_err(|e| ApiError::bad_request(e.to_string()))
}

pub(super) async fn show(
    State(state): State<SharedState>,
    Path(bundle): Path<String>,
    headers: HeaderMap,
) -> Result<axum::Json<Manifest>, ApiError> {
    let bundle = parse_bundle_ref(&bundle)?;
    let caller = state.auth.authenticate(&headers, &state.store).await?;
    if !caller.may_read_bundle(&bundle) {
        return Err(ApiError::forbidden("this token belongs to another bundle"));
    }
    match state.store.get_bundle(&bundle).await {
        Ok(record) => Ok(axum::Json(record.manifest)),
        Err(StoreError::NotFound) => Err(ApiError::not_found(format!(
            "no bundle {bundle} (never created, deleted, or expired)"
        ))),
        Err(e) => Err(e.into()),
    }
}

pub(super) async fn list(
    State(state): State<SharedState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<axum::Json<ListBundlesResponse>, ApiError> {
    state
        .auth
        .authenticate(&headers, &state.store)
        .await?
        .require_uploader()?;
    let mut name_prefix = None;
    let mut wanted_labels = Vec::new();
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "name" => name_prefix = Some(value.into_owned()),
            "label" => {
                let (k, v) = value.split_once('=').ok_or_else(|| {
                    ApiError::bad_request(format!("label filter {value:?} is not key=value"))
                })?;
                wanted_labels.push((k.to_owned(), v.to_owned()));
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?} (use name=<prefix>, label=<k>=<v>)"
                )));
            }
        }
    }
    let now = Utc::now();
    let mut bundles: Vec<BundleSummary> = state
        .store
        .list_bundles()
        .await?
        .into_iter()
        .filter(|r| !r.is_expired(now))
        .map(|r| r.manifest)
        .filter(|m| {
            name_prefix.as_ref().is_none_or(|p| {
                m.name
                    .as_ref()
                    .is_some_and(|n| n.as_str().starts_with(p.as_str()))
            })
        })
        .filter(|m| {
            wanted_labels
                .iter()
                .all(|(k, v)| m.labels.get(k).is_some_and(|have| have == v))
        })
        .map(|m| BundleSummary {
            files: m.entries.len(),
            bytes: m.total_size(),
            id: m.id,
            name: m.name,
            labels: m.labels,
            owner: m.owner,
            created_at: m.created_at,
            expires_at: m.expires_at,
        })
        .collect();
    bundles.sort_by(|a, b| {
        a.created_at
            .cmp(&b.created_at)
            .then_with(|| a.id.cmp(&b.id))
    });
    Ok(axum::Json(ListBundlesResponse { bundles }))
}

pub(super) async fn delete(
    State(state): State<SharedState>,
    Path(bundle): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let bundle = parse_bundle_ref(&bundle)?;
    state
        .auth
        .authenticate(&headers, &state.store)
        .await?
        .require_uploader()?;
    let record = match state.store.get_bundle(&bundle).await {
        Ok(record) => record,
        Err(StoreError::NotFound) => {
            // A name a crash left claimed by a bundle never written is freed.
            if let BundleRef::Name(name) = &bundle
                && state.store.release_orphan_name(name).await?
            {
                return Err(ApiError::not_found(format!(
                    "no bundle {bundle}; its name was claimed by a bundle never written and is free now"
                )));
            }
            return Err(ApiError::not_found(format!("no bundle {bundle}")));
        }
        Err(e) => return Err(e.into()),
    };
    state.store.delete_bundle(&record).await?;
    state.auth.forget_bundle(&record.manifest.id);
    state.metrics.count_bundle_deleted("request");
    tracing::info!(id = %record.manifest.id, "bundle deleted on request");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use ferry_core::api::{Entry, Owner};

    use super::*;

    fn request_owned_by(selector: &str) -> CreateBundleRequest {
        CreateBundleRequest {
            name: None,
            entries: vec![Entry {
                path: ferry_core::EntryPath::parse("jars/a.jar").unwrap(),
                digest: Digest::of(b"a"),
                size: 1,
                mode: None,
            }],
            labels: Default::default(),
            owner: Some(Owner {
                namespace: "spark-jobs".into(),
                selector: selector.into(),
            }),
            ttl_seconds: None,
        }
    }

    #[test]
    fn owner_selectors_are_checked_with_the_shared_selector_rules() {
        for ok in ["ferry.dev/submission=s-0123", "app=etl, team==data"] {
            assert!(validate(&request_owned_by(ok), 10).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "app",
            "app!=etl",
            "app=a b",
            "Bad.Prefix/app=x",
            "app=a,app=b",
        ] {
            let error = validate(&request_owned_by(bad), 10).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidManifest, "{bad}");
            assert!(
                error.message.contains("label selector"),
                "{bad}: {}",
                error.message
            );
        }
    }
}
