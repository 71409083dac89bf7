//! `ferry://<bundle>[/<path>]`: manifests and blobs from `ferry-server`.
//!
//! The init container reads `GET /v1/bundles/{bundle}` (the manifest) and
//! `GET /v1/blobs/sha256:<hex>` (with `Range`), both with
//! `Authorization: Bearer <token>`. The token comes from `--token-file`:
//! either a file holding one token, or a directory (a mounted Kubernetes
//! Secret) holding a file named after the bundle, or else a file `token`.

use std::path::{Path, PathBuf};

use ferry_core::api::Manifest;
use ferry_core::{BundleRef, Digest};
use ferry_io::{TokenError, read_token_file};
use secrecy::SecretString;
use url::Url;

use super::http::{HttpSource, send, successful};
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
    client: reqwest::Client,
    base: Url,
}

impl FerryServer {
    pub fn new(client: reqwest::Client, base: Url) -> Self {
        Self { client, base }
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
    ) -> Result<HttpSource, FetchError> {
        let url = self.url(&format!("/v1/blobs/{digest}"))?;
        Ok(HttpSource::new(self.client.clone(), url).with_bearer(token))
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
