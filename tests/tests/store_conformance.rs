//! The storage conformance suite (`ferry_server::store::conformance`, the
//! same cases the server's unit tests run on local disk and in memory) on
//! real cloud emulators on loopback: S3 through moto, Azure Blob storage
//! through Azurite. Each case runs on a fresh prefix of one bucket.
//!
//! Under `CI=true` a missing emulator fails the test (the harness does
//! that); elsewhere the test says why it did nothing.

use std::sync::Arc;
use std::time::Duration;

use ferry_server::store::{Backend, ObjectStoreBackend, conformance};
use ferry_tests::azurite::{self, Azurite};
use ferry_tests::moto::{self, Moto};
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::multipart::MultipartStore;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, RetryConfig};

/// Fail within seconds when an emulator misbehaves, instead of retrying
/// for minutes.
fn retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: 2,
        retry_timeout: Duration::from_secs(10),
    }
}

/// Runs the suite with each case on its own prefix of `bucket`.
fn run_suite<T: ObjectStore + MultipartStore + Clone>(bucket: T, description: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut case = 0;
    runtime.block_on(conformance::run(|| {
        case += 1;
        let prefixed = Arc::new(PrefixStore::new(bucket.clone(), format!("case-{case}")));
        let backend: Arc<dyn Backend> = Arc::new(
            ObjectStoreBackend::new(prefixed.clone(), format!("{description}/case-{case}"))
                .with_multipart(prefixed),
        );
        std::future::ready(backend)
    }));
}

#[test]
fn the_object_store_backend_keeps_the_storage_contract_on_s3() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("conformance");
    // Static credentials: no credential chain, no metadata endpoint asked.
    let s3 = AmazonS3Builder::new()
        .with_endpoint(&moto.endpoint)
        .with_allow_http(true)
        .with_bucket_name("conformance")
        .with_region(moto::REGION)
        .with_access_key_id(moto::ACCESS_KEY)
        .with_secret_access_key(moto::SECRET_KEY)
        .with_retry(retry())
        .build()
        .expect("S3 client for moto");
    run_suite(s3, "s3://conformance");
}

#[test]
fn the_object_store_backend_keeps_the_storage_contract_on_azure() {
    let Some(azurite) = Azurite::start() else {
        return;
    };
    azurite.create_container("conformance");
    // Path-style URLs with the development account's key, as Azurite wants.
    let azure = MicrosoftAzureBuilder::new()
        .with_endpoint(format!("{}/{}", azurite.endpoint, azurite::ACCOUNT))
        .with_allow_http(true)
        .with_account(azurite::ACCOUNT)
        .with_access_key(azurite::KEY)
        .with_container_name("conformance")
        .with_retry(retry())
        .build()
        .expect("Azure client for Azurite");
    run_suite(azure, "az://conformance");
}
