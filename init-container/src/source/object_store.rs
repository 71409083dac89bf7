//! `s3://`, `s3a://`, `gs://` and Azure (`abfs[s]://`, `wasb[s]://`, `az://`)
//! through the `object_store` crate, plus the shared reader `hdfs://` uses.
//!
//! Each store is built with its builder's `from_env()`, so credentials and
//! endpoints come from each cloud's standard environment variables
//! (`AWS_*`, `GOOGLE_*`, `AZURE_*`/`AZURITE_BLOB_STORAGE_URL`) and the same
//! binary works against the real clouds and against emulators.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore, RetryConfig};

use super::{Opened, Source};
use crate::error::FetchError;

/// One object in a store.
pub struct ObjectSource {
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    uri: String,
}

impl ObjectSource {
    pub fn new(store: Arc<dyn ObjectStore>, key: &str, uri: impl Into<String>) -> Self {
        Self {
            store,
            path: ObjectPath::from(key),
            uri: uri.into(),
        }
    }
}

#[async_trait]
impl Source for ObjectSource {
    async fn open(&self, offset: u64) -> Result<Opened, FetchError> {
        let options = GetOptions {
            range: (offset > 0).then_some(GetRange::Offset(offset)),
            ..GetOptions::default()
        };
        let result = self
            .store
            .get_opts(&self.path, options)
            .await
            .map_err(FetchError::from_object_store)?;
        let start = result.range.start;
        let size = Some(result.meta.size);
        let body = result.into_stream().map_err(FetchError::from_object_store);
        Ok(Opened {
            body: Box::pin(body),
            start,
            size,
        })
    }

    fn describe(&self) -> String {
        self.uri.clone()
    }
}

/// Which store a URI names; stores are built once per key and shared.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StoreKey {
    S3 {
        bucket: String,
    },
    Gcs {
        bucket: String,
    },
    Azure {
        account: Option<String>,
        container: String,
    },
    Hdfs {
        authority: String,
    },
}

/// Builds and caches stores.
#[derive(Default)]
pub struct Stores {
    built: Mutex<HashMap<StoreKey, Arc<dyn ObjectStore>>>,
}

/// Short retries inside `object_store`; ferry-init's own retry loop (with
/// resume from the last byte) wraps them.
fn retry_config() -> RetryConfig {
    RetryConfig {
        max_retries: 2,
        retry_timeout: Duration::from_secs(30),
        ..RetryConfig::default()
    }
}

impl Stores {
    pub fn get(&self, key: &StoreKey) -> Result<Arc<dyn ObjectStore>, FetchError> {
        let mut built = self
            .built
            .lock()
            .map_err(|_| FetchError::Invalid("store cache poisoned".into()))?;
        if let Some(store) = built.get(key) {
            return Ok(store.clone());
        }
        let store = build(key)?;
        built.insert(key.clone(), store.clone());
        Ok(store)
    }
}

fn build(key: &StoreKey) -> Result<Arc<dyn ObjectStore>, FetchError> {
    let config_error = |what: &str, e: object_store::Error| {
        FetchError::Invalid(format!(
            "cannot configure {what} from the environment: {}",
            ferry_io::render_chain(&e)
        ))
    };
    Ok(match key {
        StoreKey::S3 { bucket } => Arc::new(
            object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_retry(retry_config())
                .build()
                .map_err(|e| config_error("S3", e))?,
        ),
        StoreKey::Gcs { bucket } => Arc::new(
            object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(bucket)
                .with_retry(retry_config())
                .build()
                .map_err(|e| config_error("Google Cloud Storage", e))?,
        ),
        StoreKey::Azure { account, container } => {
            let mut builder = object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_container_name(container)
                .with_retry(retry_config());
            if let Some(account) = account {
                builder = builder.with_account(account);
            }
            Arc::new(builder.build().map_err(|e| config_error("Azure", e))?)
        }
        StoreKey::Hdfs { authority } => super::hdfs::store(authority)?,
    })
}
