//! Service-account auth (`--kubernetes-auth`): a submitter may present a
//! Kubernetes service-account token instead of the upload token. The server
//! asks the API server about it with a TokenReview and accepts it when the
//! token is authenticated as `system:serviceaccount:<namespace>:<name>` with
//! the namespace or the account on the allow list.
//!
//! It works as an exchange at the edge of the router: a request whose bearer
//! token is a JWT (three dot-separated parts; upload and bundle tokens are
//! base64url and have no dots) is reviewed, and if accepted its
//! `Authorization` header is replaced by the upload credential for the rest
//! of that request, so the routes' own auth needs no second code path.
//! Verdicts are cached by token hash for a short while, so an upload of many
//! blobs costs one review.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ::kube::Api;
use ::kube::api::PostParams;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ferry_core::Digest;
use ferry_core::api::ErrorCode;
use http::HeaderValue;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};

use crate::api::ApiError;

/// How long a review's verdict is reused.
const VERDICT_TTL: Duration = Duration::from_secs(60);
/// Most verdicts remembered.
const VERDICT_CACHE_MAX: usize = 4096;
/// A TokenReview that takes longer than this fails the request (retryable).
const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);

/// Which service accounts may upload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    /// Every service account in these namespaces.
    pub namespaces: BTreeSet<String>,
    /// These `(namespace, name)` accounts.
    pub service_accounts: BTreeSet<(String, String)>,
}

impl AllowList {
    /// Parses `namespace:name` or `system:serviceaccount:namespace:name`.
    pub fn parse_service_account(text: &str) -> Option<(String, String)> {
        let text = text.trim();
        let rest = text.strip_prefix("system:serviceaccount:").unwrap_or(text);
        let (namespace, name) = rest.split_once(':')?;
        (!namespace.is_empty() && !name.is_empty() && !name.contains(':'))
            .then(|| (namespace.to_owned(), name.to_owned()))
    }

    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty() && self.service_accounts.is_empty()
    }

    fn allows(&self, namespace: &str, name: &str) -> bool {
        self.namespaces.contains(namespace)
            || self
                .service_accounts
                .contains(&(namespace.to_owned(), name.to_owned()))
    }
}

/// The outcome of reviewing one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The token is this service account's, and it is allowed.
    Allowed { username: String },
    /// Refused, with the reason told to the caller.
    Refused(String),
}

/// Judges a TokenReview's status against the allow list (no I/O).
pub fn judge(status: Option<&TokenReviewStatus>, allowed: &AllowList) -> Verdict {
    let Some(status) = status else {
        return Verdict::Refused("the Kubernetes API returned no review status".into());
    };
    if status.authenticated != Some(true) {
        let why = status
            .error
            .clone()
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| "not authenticated".into());
        return Verdict::Refused(format!("Kubernetes did not accept the token: {why}"));
    }
    let username = status
        .user
        .as_ref()
        .and_then(|u| u.username.clone())
        .unwrap_or_default();
    let Some((namespace, name)) = username
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
    else {
        return Verdict::Refused(format!(
            "{username:?} is not a service account; only service-account tokens are accepted"
        ));
    };
    if allowed.allows(namespace, name) {
        Verdict::Allowed { username }
    } else {
        Verdict::Refused(format!(
            "service account {namespace}/{name} may not upload to this server (see --auth-namespaces, --auth-service-accounts)"
        ))
    }
}

/// Whether a bearer token is shaped like a JWT (and so may be a
/// service-account token).
pub fn looks_like_jwt(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Reviews tokens through the Kubernetes API and caches verdicts.
pub struct TokenReviewer {
    api: Api<TokenReview>,
    allowed: AllowList,
    audiences: Vec<String>,
    cache: Mutex<HashMap<Digest, (Instant, Verdict)>>,
}

#[derive(Debug, thiserror::Error)]
#[error("TokenReview failed: {0}")]
pub struct ReviewError(String);

impl TokenReviewer {
    pub fn new(client: ::kube::Client, allowed: AllowList, audiences: Vec<String>) -> Self {
        Self {
            api: Api::all(client),
            allowed,
            audiences,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The verdict on `token`, from the cache or a fresh TokenReview.
    pub async fn review(&self, token: &str) -> Result<Verdict, ReviewError> {
        let key = Digest::of(token.as_bytes());
        if let Some(verdict) = self.cached(&key) {
            return Ok(verdict);
        }
        let request = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: (!self.audiences.is_empty()).then(|| self.audiences.clone()),
            },
            ..Default::default()
        };
        let answer = tokio::time::timeout(
            REVIEW_TIMEOUT,
            self.api.create(&PostParams::default(), &request),
        )
        .await
        .map_err(|_| ReviewError(format!("no answer within {}s", REVIEW_TIMEOUT.as_secs())))?
        .map_err(|e| ReviewError(e.to_string()))?;
        let verdict = judge(answer.status.as_ref(), &self.allowed);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= VERDICT_CACHE_MAX {
            cache.retain(|_, (at, _)| at.elapsed() < VERDICT_TTL);
            if cache.len() >= VERDICT_CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(key, (Instant::now(), verdict.clone()));
        Ok(verdict)
    }

    fn cached(&self, key: &Digest) -> Option<Verdict> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(key)
            .filter(|(at, _)| at.elapsed() < VERDICT_TTL)
            .map(|(_, v)| v.clone())
    }
}

/// State of the exchange middleware.
pub struct Exchange {
    pub reviewer: TokenReviewer,
    /// `Bearer <upload token>`, put in place of an accepted service-account token.
    pub upload_header: HeaderValue,
}

/// Axum middleware: exchanges an accepted service-account token for the
/// upload credential; refuses a rejected one with 401.
pub async fn exchange(
    State(exchange): State<Arc<Exchange>>,
    mut request: Request,
    next: Next,
) -> Response {
    let token = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_owned())
        .filter(|t| looks_like_jwt(t));
    let Some(token) = token else {
        return next.run(request).await;
    };
    match exchange.reviewer.review(&token).await {
        Ok(Verdict::Allowed { username }) => {
            tracing::debug!(%username, "service-account token accepted");
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, exchange.upload_header.clone());
            next.run(request).await
        }
        Ok(Verdict::Refused(reason)) => {
            tracing::info!(%reason, "service-account token refused");
            ApiError::unauthorized(reason).into_response()
        }
        Err(error) => {
            tracing::warn!(%error, "could not review a service-account token");
            ApiError::new(
                ErrorCode::Internal,
                "could not verify the service-account token with the Kubernetes API; try again",
            )
            .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::authentication::v1::UserInfo;

    use super::*;

    fn status(authenticated: bool, username: &str) -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(authenticated),
            user: Some(UserInfo {
                username: Some(username.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn allow(namespaces: &[&str], accounts: &[&str]) -> AllowList {
        AllowList {
            namespaces: namespaces.iter().map(|s| (*s).into()).collect(),
            service_accounts: accounts
                .iter()
                .map(|a| AllowList::parse_service_account(a).unwrap())
                .collect(),
        }
    }

    #[test]
    fn an_allowed_namespace_or_account_is_accepted() {
        let list = allow(&["spark-jobs"], &["ci:publisher"]);
        assert!(matches!(
            judge(
                Some(&status(true, "system:serviceaccount:spark-jobs:spark")),
                &list
            ),
            Verdict::Allowed { .. }
        ));
        assert!(matches!(
            judge(
                Some(&status(true, "system:serviceaccount:ci:publisher")),
                &list
            ),
            Verdict::Allowed { .. }
        ));
    }

    #[test]
    fn others_unauthenticated_and_people_are_refused() {
        let list = allow(&["spark-jobs"], &["ci:publisher"]);
        for (authenticated, user) in [
            (true, "system:serviceaccount:ci:other"),
            (true, "system:serviceaccount:default:default"),
            (false, "system:serviceaccount:spark-jobs:spark"),
            (true, "alice@example.com"),
            (true, "system:serviceaccount:spark-jobs"),
        ] {
            assert!(
                matches!(
                    judge(Some(&status(authenticated, user)), &list),
                    Verdict::Refused(_)
                ),
                "{user} ({authenticated}) must be refused"
            );
        }
        assert!(matches!(judge(None, &list), Verdict::Refused(_)));
    }

    #[test]
    fn service_accounts_parse_in_both_spellings() {
        assert_eq!(
            AllowList::parse_service_account("system:serviceaccount:ci:pub"),
            Some(("ci".into(), "pub".into()))
        );
        assert_eq!(
            AllowList::parse_service_account("ci:pub"),
            Some(("ci".into(), "pub".into()))
        );
        assert_eq!(AllowList::parse_service_account("ci"), None);
        assert_eq!(AllowList::parse_service_account("a:b:c"), None);
    }

    #[test]
    fn only_jwt_shaped_tokens_are_reviewed() {
        assert!(looks_like_jwt("eyJhbGciOi.eyJpc3Mi.c2lnbmF0dXJl"));
        // Upload and bundle tokens: 43 base64url characters, no dots.
        assert!(!looks_like_jwt(&crate::auth::generate_token()));
        assert!(!looks_like_jwt("a..b"));
        assert!(!looks_like_jwt("a.b.c.d"));
    }
}
