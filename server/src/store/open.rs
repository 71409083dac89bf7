//! Turning `--data` into a store: a local directory, or a bucket URL.

use std::sync::Arc;

use ferry_io::http::WithBundledRoots as _;
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::multipart::MultipartStore;
use object_store::prefix::PrefixStore;
use object_store::signer::Signer;
use object_store::{BackoffConfig, RetryConfig};

use super::{LocalBackend, ObjectStoreBackend, Store};

/// Why `--data` could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create or open data directory {path}: {source}")]
    LocalDir {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "unsupported --data scheme {0:?}: use a directory, s3://bucket[/prefix], gs://bucket[/prefix] or az://container[/prefix]"
    )]
    Scheme(String),
    #[error("invalid --data URL {0:?}: {1}")]
    Url(String, String),
    #[error("cannot configure storage {0}: {1}")]
    Backend(String, object_store::Error),
}

/// Opens the store named by `data`: a path for local disk (created if
/// needed), or `s3://`, `gs://`, `az://` with credentials and endpoint from
/// each cloud's standard environment variables.
pub fn open(data: &str) -> Result<Store, OpenError> {
    let Some((scheme, _)) = data.split_once("://") else {
        return open_local(data);
    };
    let url = url::Url::parse(data).map_err(|e| OpenError::Url(data.into(), e.to_string()))?;
    let bucket_url = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default());
    let prefix = url.path().trim_matches('/');
    let backend_error = |e| OpenError::Backend(data.into(), e);
    let backend = match scheme {
        "s3" | "s3a" => bucket(
            AmazonS3Builder::from_env()
                .with_url(bucket_url.replace("s3a://", "s3://"))
                .with_bundled_roots_if_needed()
                .with_retry(retry())
                .build()
                .map_err(backend_error)?,
            prefix,
            data,
        ),
        "gs" => bucket(
            GoogleCloudStorageBuilder::from_env()
                .with_url(&bucket_url)
                .with_bundled_roots_if_needed()
                .with_retry(retry())
                .build()
                .map_err(backend_error)?,
            prefix,
            data,
        ),
        "az" | "abfs" | "abfss" => bucket(
            MicrosoftAzureBuilder::from_env()
                .with_url(data)
                .with_bundled_roots_if_needed()
                .with_retry(retry())
                .build()
                .map_err(backend_error)?,
            // An abfs URL names its path inside the container itself.
            if scheme.starts_with("ab") { "" } else { prefix },
            data,
        ),
        "file" => return open_local(url.path()),
        other => return Err(OpenError::Scheme(other.into())),
    };
    Ok(Store::new(Arc::new(backend)))
}

/// A bucket's backend, under `prefix` if not empty: one client serves as
/// the store, its multipart API (upload sessions) and the signer of its
/// URLs (redirected reads; with a prefix, prefixed keys are signed too).
fn bucket<T: ObjectStore + MultipartStore + Signer>(
    store: T,
    prefix: &str,
    description: &str,
) -> ObjectStoreBackend {
    fn all<S: ObjectStore + MultipartStore + Signer>(
        store: S,
        description: &str,
    ) -> ObjectStoreBackend {
        let store = Arc::new(store);
        ObjectStoreBackend::new(store.clone(), description)
            .with_multipart(store.clone())
            .with_signer(store)
    }
    if prefix.is_empty() {
        all(store, description)
    } else {
        all(PrefixStore::new(store, prefix), description)
    }
}

/// Retries that ride out a blip but surface an outage to clients (as `503`)
/// within seconds instead of the library default of minutes.
fn retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: 3,
        retry_timeout: std::time::Duration::from_secs(15),
    }
}

fn open_local(path: &str) -> Result<Store, OpenError> {
    let local_error = |source| OpenError::LocalDir {
        path: path.to_owned(),
        source,
    };
    std::fs::create_dir_all(path).map_err(local_error)?;
    let root = std::fs::canonicalize(path).map_err(local_error)?;
    let backend = LocalBackend::new(root).map_err(|e| OpenError::Backend(path.into(), e))?;
    Ok(Store::new(Arc::new(backend)))
}
