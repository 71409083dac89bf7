//! Who is calling: the holder of the upload credential, or the holder of one
//! bundle's read token.
//!
//! Tokens are compared as sha256 hashes in constant time; the server never
//! keeps a bundle token itself, only its hash, and never logs either.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ferry_core::{BundleId, BundleRef, Digest};
use http::HeaderMap;
use rand::RngCore as _;
use subtle::ConstantTimeEq;

use crate::api::ApiError;
use crate::store::{Store, StoreError};

/// How long a resolved bundle token is remembered, so a fan-out of many
/// blob reads costs one lookup; deletion takes effect within this time.
const TOKEN_CACHE_TTL: Duration = Duration::from_secs(15);
/// Most resolved tokens remembered at once.
const TOKEN_CACHE_MAX: usize = 4096;

/// The upload credential, held only as its hash.
#[derive(Clone)]
pub enum UploadAuth {
    /// `--insecure-no-auth`: every caller may upload.
    Disabled,
    Token([u8; 32]),
}

impl UploadAuth {
    pub fn from_token(token: &str) -> Self {
        Self::Token(*Digest::of(token.trim().as_bytes()).as_bytes())
    }
}

/// What a request is allowed to do.
#[derive(Debug, Clone)]
pub enum Caller {
    /// May upload, create, list and delete anything.
    Uploader,
    /// May read one bundle's manifest and the blobs it lists.
    BundleReader(Arc<BundleGrant>),
}

/// What a bundle token opens.
#[derive(Debug)]
pub struct BundleGrant {
    pub id: BundleId,
    pub name: Option<ferry_core::BundleName>,
    pub digests: HashSet<Digest>,
    /// The grant ends with its bundle, cached or not.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Caller {
    /// Refuses a caller that is not the uploader.
    pub fn require_uploader(&self) -> Result<(), ApiError> {
        match self {
            Self::Uploader => Ok(()),
            Self::BundleReader(_) => Err(ApiError::forbidden(
                "a bundle token cannot do this; use the upload token",
            )),
        }
    }

    /// Whether this caller may read blob `digest`.
    pub fn may_read_blob(&self, digest: &Digest) -> bool {
        match self {
            Self::Uploader => true,
            Self::BundleReader(grant) => grant.digests.contains(digest),
        }
    }

    /// Whether this caller may read bundle `bundle`.
    pub fn may_read_bundle(&self, bundle: &BundleRef) -> bool {
        match self {
            Self::Uploader => true,
            Self::BundleReader(grant) => match bundle {
                BundleRef::Id(id) => &grant.id == id,
                BundleRef::Name(name) => grant.name.as_ref() == Some(name),
            },
        }
    }
}

/// Authenticates requests against the upload credential and bundle tokens.
pub struct Authenticator {
    upload: UploadAuth,
    cache: Mutex<HashMap<Digest, (Instant, Arc<BundleGrant>)>>,
}

impl Authenticator {
    pub fn new(upload: UploadAuth) -> Self {
        Self {
            upload,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Identifies the caller from `Authorization: Bearer <token>`.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        store: &Store,
    ) -> Result<Caller, ApiError> {
        let presented = bearer(headers);
        let hash = match (&self.upload, presented) {
            (UploadAuth::Disabled, _) => return Ok(Caller::Uploader),
            (UploadAuth::Token(_), None) => {
                return Err(ApiError::unauthorized(
                    "missing credentials: send Authorization: Bearer <token>",
                ));
            }
            (UploadAuth::Token(expected), Some(token)) => {
                let hash = Digest::of(token.as_bytes());
                if bool::from(hash.as_bytes().ct_eq(expected)) {
                    return Ok(Caller::Uploader);
                }
                hash
            }
        };
        self.bundle_grant(hash, store)
            .await
            .map(Caller::BundleReader)
    }

    async fn bundle_grant(
        &self,
        token_hash: Digest,
        store: &Store,
    ) -> Result<Arc<BundleGrant>, ApiError> {
        if let Some(grant) = self.cached(&token_hash) {
            return Ok(grant);
        }
        let key = token_hash.hex();
        let refused =
            || ApiError::unauthorized("the token was refused: it is unknown, revoked or expired");
        let id = match store.bundle_for_token(&key).await {
            Ok(id) => id,
            Err(StoreError::NotFound) => return Err(refused()),
            Err(e) => return Err(e.into()),
        };
        let record = match store.get_bundle(&BundleRef::Id(id)).await {
            Ok(record) => record,
            Err(StoreError::NotFound) => return Err(refused()),
            Err(e) => return Err(e.into()),
        };
        // The index is only a pointer: the record's own hash must match too.
        if !bool::from(record.token_sha256.as_bytes().ct_eq(key.as_bytes()))
            || record.is_expired(chrono::Utc::now())
        {
            return Err(refused());
        }
        let grant = Arc::new(BundleGrant {
            id: record.manifest.id.clone(),
            name: record.manifest.name.clone(),
            digests: record.manifest.entries.iter().map(|e| e.digest).collect(),
            expires_at: record.manifest.expires_at,
        });
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= TOKEN_CACHE_MAX {
            let now = Instant::now();
            cache.retain(|_, (at, _)| now.duration_since(*at) < TOKEN_CACHE_TTL);
            if cache.len() >= TOKEN_CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(token_hash, (Instant::now(), grant.clone()));
        Ok(grant)
    }

    fn cached(&self, key: &Digest) -> Option<Arc<BundleGrant>> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(key)
            .filter(|(at, grant)| {
                at.elapsed() < TOKEN_CACHE_TTL
                    && grant.expires_at.is_none_or(|t| t > chrono::Utc::now())
            })
            .map(|(_, grant)| grant.clone())
    }

    /// Forgets cached grants of a deleted bundle at once (on this replica).
    pub fn forget_bundle(&self, id: &BundleId) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|_, (_, grant)| &grant.id != id);
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// A fresh token: 256 random bits, base64url without padding.
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_256_bits_and_unique() {
        let a = generate_token();
        let b = generate_token();
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), 32);
        assert_ne!(a, b);
    }

    #[test]
    fn bearer_header_is_parsed_strictly() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(http::header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(http::header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
        h.insert(http::header::AUTHORIZATION, "Bearer ".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }
}
