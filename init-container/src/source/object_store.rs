//! `s3://`, `s3a://`, `gs://` and Azure (`abfs[s]://`, `wasb[s]://`, `az://`)
//! through the `object_store` crate, plus the shared reader `hdfs://` uses.
//!
//! Each store starts from its builder's `from_env()`, so credentials and
//! endpoints come from each cloud's standard environment variables
//! (`AWS_*`, `GOOGLE_*`, `AZURE_*`/`AZURITE_BLOB_STORAGE_URL`) and the same
//! binary works against the real clouds and against emulators. A plan item
//! may carry [`StoreSettings`] (what the submitter's Spark settings said:
//! endpoint, region, path style, key file, which env var holds which key);
//! those override the environment, key by key. Starting from the
//! environment rather than from nothing keeps pod identities (IRSA, workload
//! identity) and the metadata-endpoint settings working when the plan
//! carries only an endpoint or a region.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore, RetryConfig};

use ferry_core::plan::StoreSettings;

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

/// Builds and caches stores, one per store and settings: two buckets on
/// two endpoints are two stores.
#[derive(Default)]
pub struct Stores {
    built: Mutex<HashMap<BuiltKey, Arc<dyn ObjectStore>>>,
}

/// A store and the settings it was built with.
type BuiltKey = (StoreKey, Option<StoreSettings>);

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
    /// The store for `key` configured with `settings` (the plan item's),
    /// built on first use.
    pub fn get(
        &self,
        key: &StoreKey,
        settings: Option<&StoreSettings>,
    ) -> Result<Arc<dyn ObjectStore>, FetchError> {
        let mut built = self
            .built
            .lock()
            .map_err(|_| FetchError::Invalid("store cache poisoned".into()))?;
        let cache_key = (key.clone(), settings.cloned());
        if let Some(store) = built.get(&cache_key) {
            return Ok(store.clone());
        }
        let store = build(key, &settings.map(resolve).transpose()?.unwrap_or_default())?;
        built.insert(cache_key, store.clone());
        Ok(store)
    }
}

/// The settings as `object_store` configuration: plain options as they are,
/// secret ones read from the environment variables the plan names.
fn resolve(settings: &StoreSettings) -> Result<Vec<(String, String)>, FetchError> {
    let mut config: Vec<(String, String)> = settings
        .options
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (key, var) in &settings.env {
        let value = std::env::var(var).map_err(|_| {
            FetchError::Invalid(format!(
                "store setting {key} is to come from environment variable {var}, which is not set (is the Secret it references there?)"
            ))
        })?;
        config.push((key.clone(), value));
    }
    Ok(config)
}

/// Applies `config` to a builder; a key the builder does not know is an
/// error naming it (never its value, which may be a secret).
fn configure<B, K>(
    mut builder: B,
    config: &[(String, String)],
    with: impl Fn(B, K, &str) -> B,
) -> Result<B, FetchError>
where
    K: std::str::FromStr,
{
    for (key, value) in config {
        let parsed = key.parse::<K>().map_err(|_| {
            FetchError::Invalid(format!("unknown object store setting {key:?} in the plan"))
        })?;
        builder = with(builder, parsed, value);
    }
    Ok(builder)
}

fn build(key: &StoreKey, config: &[(String, String)]) -> Result<Arc<dyn ObjectStore>, FetchError> {
    use ferry_io::http::WithBundledRoots as _;
    use object_store::aws::AmazonS3Builder;
    use object_store::azure::MicrosoftAzureBuilder;
    use object_store::gcp::GoogleCloudStorageBuilder;
    let config_error = |what: &str, e: object_store::Error| {
        FetchError::Invalid(format!(
            "cannot configure {what}: {}",
            ferry_io::render_chain(&e)
        ))
    };
    Ok(match key {
        StoreKey::S3 { bucket } => {
            let builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
            Arc::new(
                configure(builder, config, |b, k, v| b.with_config(k, v))?
                    .with_bundled_roots_if_needed()
                    .with_retry(retry_config())
                    .build()
                    .map_err(|e| config_error("S3", e))?,
            )
        }
        StoreKey::Gcs { bucket } => {
            let builder = GoogleCloudStorageBuilder::from_env().with_bucket_name(bucket);
            Arc::new(
                configure(builder, config, |b, k, v| b.with_config(k, v))?
                    .with_bundled_roots_if_needed()
                    .with_retry(retry_config())
                    .build()
                    .map_err(|e| config_error("Google Cloud Storage", e))?,
            )
        }
        StoreKey::Azure { account, container } => {
            let mut builder = MicrosoftAzureBuilder::from_env().with_container_name(container);
            if let Some(account) = account {
                builder = builder.with_account(account);
            }
            Arc::new(
                configure(builder, config, |b, k, v| b.with_config(k, v))?
                    .with_bundled_roots_if_needed()
                    .with_retry(retry_config())
                    .build()
                    .map_err(|e| config_error("Azure", e))?,
            )
        }
        StoreKey::Hdfs { authority } => super::hdfs::store(authority)?,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn secret_settings_come_from_the_named_variables_and_unknown_keys_are_refused() {
        let settings = StoreSettings {
            options: BTreeMap::from([("aws_region".into(), "eu-west-3".into())]),
            env: BTreeMap::from([(
                "aws_access_key_id".into(),
                "FERRY_TEST_SURELY_UNSET_VARIABLE".into(),
            )]),
        };
        let message = resolve(&settings).unwrap_err().to_string();
        assert!(
            message.contains("FERRY_TEST_SURELY_UNSET_VARIABLE"),
            "{message}"
        );
        let stores = Stores::default();
        let unknown = StoreSettings {
            options: BTreeMap::from([("aws_no_such_setting".into(), "s3cr3t".into())]),
            env: BTreeMap::new(),
        };
        let key = StoreKey::S3 { bucket: "b".into() };
        let error = stores
            .get(&key, Some(&unknown))
            .expect_err("refused")
            .to_string();
        assert!(
            error.contains("aws_no_such_setting") && !error.contains("s3cr3t"),
            "{error}"
        );
        // One store per bucket and settings.
        let plain = StoreSettings {
            options: BTreeMap::from([("aws_endpoint".into(), "http://127.0.0.1:9".into())]),
            env: BTreeMap::new(),
        };
        let a = stores.get(&key, Some(&plain)).unwrap();
        let b = stores.get(&key, Some(&plain)).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let other = StoreSettings {
            options: BTreeMap::from([("aws_endpoint".into(), "http://127.0.0.2:9".into())]),
            env: BTreeMap::new(),
        };
        assert!(!Arc::ptr_eq(&a, &stores.get(&key, Some(&other)).unwrap()));
    }
}
