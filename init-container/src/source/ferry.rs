//! `ferry://<bundle>[/<path>]`: manifests and blobs from `ferry-server`.
//!
//! The init container reads `GET /v1/bundles/{bundle}` (the manifest) and
//! `GET /v1/blobs/sha256:<hex>` (with `Range`), both with
//! `Authorization: Bearer <token>`. The token comes from `--token-file`:
//! either a file holding one token, or a directory (a mounted Kubernetes
//! Secret) holding a file named after the bundle, or else a file `token`.
//!
//! A server on a bucket answers a blob GET with `307` to a short-lived URL
//! the store signed ([`FerryBlob`]): the blob is then read from the store,
//! with `Range` on that URL to resume and without the bearer token (the
//! server's client follows no redirect by itself, so the token never goes
//! anywhere but the server). A signed URL refused later (it expired between
//! retries) is replaced by asking the server again; a fresh one refused at
//! once (clock skew, a store this pod cannot reach) sends this run's blob
//! reads through the server instead (`?redirect=false`). Either way the
//! fetch verifies the digest as always.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use ferry_core::api::Manifest;
use ferry_core::{BundleRef, Digest};
use ferry_io::{TokenError, Transient as _, read_token_file};
use reqwest::header::{LOCATION, RANGE};
use secrecy::SecretString;
use url::Url;

use super::http::{get_signed, opened, redacted, send, successful};
use super::{Opened, Source};
use crate::error::FetchError;

/// Where bundle tokens come from.
#[derive(Debug, Clone)]
pub enum TokenSource {
    /// No token: requests go without `Authorization` (and a protected
    /// server answers 401).
    None,
    /// `--token-file` is a file: one token for every bundle.
    File(PathBuf),
    /// `--token-file` is a directory: `<dir>/<bundle>`, else `<dir>/token`.
    Directory(PathBuf),
}

impl TokenSource {
    pub fn from_path(path: Option<&Path>) -> Self {
        match path {
            None => Self::None,
            Some(p) if p.is_dir() => Self::Directory(p.to_path_buf()),
            Some(p) => Self::File(p.to_path_buf()),
        }
    }

    /// The token for `bundle`, read fresh (a Secret may be updated in place).
    pub fn token_for(&self, bundle: &BundleRef) -> Result<Option<SecretString>, FetchError> {
        let path = match self {
            Self::None => return Ok(None),
            Self::File(path) => path.clone(),
            Self::Directory(dir) => {
                let named = dir.join(bundle.as_str());
                if named.is_file() {
                    named
                } else {
                    dir.join("token")
                }
            }
        };
        match read_token_file(&path) {
            Ok(token) => Ok(Some(token)),
            Err(TokenError::Read { path, source }) => Err(FetchError::io(
                format!("reading bundle token {}", path.display()),
                source,
            )),
            Err(TokenError::Empty { path }) => Err(FetchError::Invalid(format!(
                "bundle token file {} is empty",
                path.display()
            ))),
        }
    }
}

/// A client of one `ferry-server`.
#[derive(Clone)]
pub struct FerryServer {
    /// Follows no redirect: a blob redirect is handled by [`FerryBlob`].
    client: reqwest::Client,
    base: Url,
    /// Set once a store refused a fresh signed URL: from then on this
    /// run reads blobs through the server.
    through_server: Arc<AtomicBool>,
}

impl FerryServer {
    /// A client of the server at `base`; `client` must follow no redirects.
    pub fn new(client: reqwest::Client, base: Url) -> Self {
        Self {
            client,
            base,
            through_server: Arc::default(),
        }
    }

    fn url(&self, path: &str) -> Result<Url, FetchError> {
        let base = self.base.as_str().trim_end_matches('/');
        Url::parse(&format!("{base}{path}"))
            .map_err(|e| FetchError::Invalid(format!("server URL {base}{path}: {e}")))
    }

    /// `GET /v1/bundles/{bundle}`. A manifest whose entry paths are unsafe
    /// does not parse (entry paths are checked as they are read).
    pub async fn manifest(
        &self,
        bundle: &BundleRef,
        token: Option<&SecretString>,
    ) -> Result<Manifest, FetchError> {
        let url = self.url(&format!("/v1/bundles/{}", bundle.as_str()))?;
        let what = format!("bundle {bundle} at {url}");
        let response = send(self.client.get(url), token).await?;
        let response = successful(response, what.clone()).await?;
        let text = response
            .text()
            .await
            .map_err(|e| FetchError::from_reqwest(&e))?;
        serde_json::from_str(&text)
            .map_err(|e| FetchError::Invalid(format!("{what}: manifest refused: {e}")))
    }

    /// The blob `digest`, readable with the bundle's token.
    pub fn blob(
        &self,
        digest: &Digest,
        token: Option<SecretString>,
    ) -> Result<FerryBlob, FetchError> {
        Ok(FerryBlob {
            server: self.clone(),
            url: self.url(&format!("/v1/blobs/{digest}"))?,
            token,
            signed: Mutex::new(None),
        })
    }
}

/// One blob of a ferry-server, read from the server or, where it redirects,
/// from the store (see the module doc).
pub struct FerryBlob {
    server: FerryServer,
    /// `/v1/blobs/sha256:<hex>` on the server.
    url: Url,
    token: Option<SecretString>,
    /// The signed URL the server gave last, for resuming.
    signed: Mutex<Option<Url>>,
}

impl FerryBlob {
    fn signed(&self) -> Option<Url> {
        self.signed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn remember(&self, url: Option<Url>) {
        *self.signed.lock().unwrap_or_else(|e| e.into_inner()) = url;
    }

    /// Asks the server for the blob from `offset`: its bytes, or a redirect.
    async fn ask_server(&self, offset: u64) -> Result<reqwest::Response, FetchError> {
        let mut url = self.url.clone();
        if self.server.through_server.load(Ordering::Relaxed) {
            url.query_pairs_mut().append_pair("redirect", "false");
        }
        let mut request = self.server.client.get(url);
        if offset > 0 {
            request = request.header(RANGE, format!("bytes={offset}-"));
        }
        send(request, self.token.as_ref()).await
    }

    /// Where a redirect from the server points.
    fn location(&self, response: &reqwest::Response) -> Result<Url, FetchError> {
        response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| self.url.join(v).ok())
            .ok_or_else(|| {
                FetchError::Invalid(format!(
                    "{} redirected without a usable Location",
                    self.describe()
                ))
            })
    }
}

#[async_trait]
impl Source for FerryBlob {
    async fn open(&self, offset: u64) -> Result<Opened, FetchError> {
        if let Some(url) = self.signed() {
            match get_signed(&self.server.client, &url, offset).await {
                Ok(opened) => return Ok(opened),
                Err(error) if error.is_transient() => return Err(error),
                Err(error) => {
                    tracing::debug!(blob = %self.describe(), %error, "the store refused the signed URL (expired?); asking the server for a new one");
                    self.remember(None);
                }
            }
        }
        let response = self.ask_server(offset).await?;
        if !response.status().is_redirection() {
            return opened(response, self.describe(), offset, true).await;
        }
        let url = self.location(&response)?;
        match get_signed(&self.server.client, &url, offset).await {
            Ok(opened) => {
                self.remember(Some(url));
                Ok(opened)
            }
            Err(error) => {
                tracing::warn!(blob = %self.describe(), store = %redacted(&url), %error, "the store refused a URL the server had just signed (clock skew, or a store this pod cannot reach?); reading blobs through the server from now on");
                self.server.through_server.store(true, Ordering::Relaxed);
                let response = self.ask_server(offset).await?;
                opened(response, self.describe(), offset, true).await
            }
        }
    }

    fn describe(&self) -> String {
        self.url.to_string()
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret as _;

    use super::*;

    #[test]
    fn a_token_directory_prefers_the_bundle_file_then_token() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "general\n").unwrap();
        std::fs::write(dir.path().join("team-libs"), " special ").unwrap();
        let tokens = TokenSource::from_path(Some(dir.path()));
        let named = BundleRef::parse("team-libs").unwrap();
        let other = BundleRef::parse("other").unwrap();
        let token = |tokens: &TokenSource, bundle| {
            tokens
                .token_for(bundle)
                .unwrap()
                .map(|t| t.expose_secret().to_owned())
        };
        assert_eq!(token(&tokens, &named).as_deref(), Some("special"));
        assert_eq!(token(&tokens, &other).as_deref(), Some("general"));
        let file = TokenSource::from_path(Some(&dir.path().join("token")));
        assert_eq!(token(&file, &named).as_deref(), Some("general"));
        std::fs::write(dir.path().join("token"), "\n").unwrap();
        assert!(file.token_for(&named).is_err());
    }
}
