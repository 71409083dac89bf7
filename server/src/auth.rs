//! Who is calling: the holder of the upload credential, or the holder of one
//! bundle's read token.
//!
//! Tokens are compared as sha256 hashes in constant time; the server never
//! keeps a bundle token itself, only its hash, and never logs either.
//!
//! A resolved bundle token is cached, so a fan-out of many blob reads costs
//! one lookup. A replica learns that another deleted the bundle by checking
//! that the bundle's record still exists (one `HEAD`) whenever its cached
//! answer is older than `--revocation-bound`: so a deleted bundle's token
//! stops working on every replica within that bound, at the cost of one
//! small request per token per bound per replica (concurrent requests with
//! one token share that check). An expired bundle's token stops at once:
//! the grant carries the expiry.

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

/// How long a resolved bundle token is remembered before it is looked up
/// whole again. Revocation does not wait for it (see the module doc): the
/// grant of a bundle never changes, only whether the bundle still exists.
const TOKEN_CACHE_TTL: Duration = Duration::from_secs(600);
/// `--revocation-bound`'s default.
pub const DEFAULT_REVOCATION_BOUND: Duration = Duration::from_secs(1);
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

/// A resolved token: its grant, when it was looked up, and when its
/// bundle was last seen to exist.
struct Cached {
    grant: Arc<BundleGrant>,
    resolved: Instant,
    /// When its bundle was last seen to exist: read by every request (a
    /// short lock, never held across an await).
    checked: Mutex<Instant>,
    /// Held across the existence check, so concurrent requests with one
    /// token wait for one check instead of each making their own. Taken
    /// only once the answer is stale: an async lock on every request made
    /// small GETs with one token queue behind each other.
    checking: tokio::sync::Mutex<()>,
}

impl Cached {
    fn fresh(&self, bound: Duration) -> bool {
        self.checked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
            < bound
    }
}

/// Authenticates requests against the upload credential and bundle tokens.
pub struct Authenticator {
    upload: UploadAuth,
    cache: Mutex<HashMap<Digest, Arc<Cached>>>,
    revocation_bound: Duration,
}

impl Authenticator {
    pub fn new(upload: UploadAuth) -> Self {
        Self {
            upload,
            cache: Mutex::new(HashMap::new()),
            revocation_bound: DEFAULT_REVOCATION_BOUND,
        }
    }

    /// Checks a cached grant's bundle again once the answer is older than
    /// `bound` (`--revocation-bound`; zero checks on every request).
    pub fn with_revocation_bound(mut self, bound: Duration) -> Self {
        self.revocation_bound = bound;
        self
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
        if let Some(cached) = self.cached(&token_hash) {
            return self.recheck(&token_hash, &cached, store).await;
        }
        let key = token_hash.hex();
        // The record is read after this moment: the first existence check
        // is due one bound after it.
        let looked_up = Instant::now();
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
            cache.retain(|_, cached| now.duration_since(cached.resolved) < TOKEN_CACHE_TTL);
            if cache.len() >= TOKEN_CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(
            token_hash,
            Arc::new(Cached {
                grant: grant.clone(),
                resolved: looked_up,
                checked: Mutex::new(looked_up),
                checking: tokio::sync::Mutex::new(()),
            }),
        );
        Ok(grant)
    }

    /// A cached grant, if it is neither too old nor expired.
    fn cached(&self, key: &Digest) -> Option<Arc<Cached>> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(key)
            .filter(|cached| {
                cached.resolved.elapsed() < TOKEN_CACHE_TTL
                    && cached
                        .grant
                        .expires_at
                        .is_none_or(|t| t > chrono::Utc::now())
            })
            .cloned()
    }

    /// `cached`'s grant, after checking that its bundle still exists if the
    /// last check is older than the revocation bound.
    async fn recheck(
        &self,
        token_hash: &Digest,
        cached: &Cached,
        store: &Store,
    ) -> Result<Arc<BundleGrant>, ApiError> {
        if cached.fresh(self.revocation_bound) {
            return Ok(cached.grant.clone());
        }
        let checking = cached.checking.lock().await;
        // Another request may have checked while this one waited.
        if cached.fresh(self.revocation_bound) {
            return Ok(cached.grant.clone());
        }
        // Stamped with the time the check starts: the record existed at
        // some moment after it.
        let started = Instant::now();
        if store.bundle_exists(&cached.grant.id).await? {
            *cached.checked.lock().unwrap_or_else(|e| e.into_inner()) = started;
            return Ok(cached.grant.clone());
        }
        drop(checking);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.remove(token_hash);
        tracing::debug!(id = %cached.grant.id, "bundle gone; its cached token grant dropped");
        Err(refused())
    }

    /// Forgets cached grants of a deleted bundle at once (on this replica;
    /// the others within the revocation bound).
    pub fn forget_bundle(&self, id: &BundleId) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|_, cached| &cached.grant.id != id);
    }
}

fn refused() -> ApiError {
    ApiError::unauthorized("the token was refused: it is unknown, revoked or expired")
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
