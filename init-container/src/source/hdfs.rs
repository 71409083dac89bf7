//! `hdfs://<namenode>[:port]/<path>` over HDFS's native RPC protocol, via
//! `hdfs-native-object-store` (no JVM, no libhdfs).
//!
//! Hadoop configuration comes the usual way: `HADOOP_CONF_DIR` (core-site.xml,
//! hdfs-site.xml, for name services and HA), `HADOOP_USER_NAME` for simple
//! auth. Kerberos needs a ticket cache and the system's GSSAPI library, as
//! with any HDFS client. No HDFS server can run in this repository's tests;
//! they check the error a client gets when the namenode does not answer.

use std::sync::Arc;

use object_store::ObjectStore;

use crate::error::FetchError;

/// A store for the namenode or name service `authority`.
pub fn store(authority: &str) -> Result<Arc<dyn ObjectStore>, FetchError> {
    let url = format!("hdfs://{authority}");
    let store = hdfs_native_object_store::HdfsObjectStoreBuilder::new()
        .with_url(url.as_str())
        .build()
        .map_err(|e| {
            FetchError::Invalid(format!(
                "cannot set up an HDFS client for {url}: {}",
                ferry_io::render_chain(&e)
            ))
        })?;
    Ok(Arc::new(store))
}
