//! The HTTP client every ferry binary builds the same way: user agent,
//! connect and read timeouts, a redirect limit, and the CA certificates of
//! an extra PEM file merged into the trusted roots.
//!
//! Trusted roots: reqwest verifies with the platform's verifier, which on
//! Linux is the system CA store (`/etc/ssl/certs`, or `SSL_CERT_FILE` /
//! `SSL_CERT_DIR`). A minimal container image has no such store, and then
//! reqwest refuses to build a client at all, failing plain `http://`
//! fetches too. So [`http_client`] looks first: where the system store is
//! empty it trusts the Mozilla roots bundled into the binary
//! (`webpki-root-certs`), plus the extra CA file, and logs that it did.
//! Where the system has roots, only those (plus the CA file) are trusted,
//! so an administrator's curated store keeps its meaning.
//!
//! `object_store`'s clients (S3, GCS, Azure) build their own reqwest
//! client the same way and fail the same way, for `http://` endpoints
//! too; [`WithBundledRoots`] gives them the bundled roots under the same
//! rule.

use std::path::PathBuf;
use std::time::Duration;

use object_store::{ClientConfigKey, ClientOptions};

/// How to build a client.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// `User-Agent` of every request (`ferry-init/0.1.0`).
    pub user_agent: String,
    pub connect_timeout: Duration,
    /// Longest wait for the next bytes of an answer (not the whole answer).
    pub read_timeout: Duration,
    /// Redirects followed at most; 0 follows none.
    pub max_redirects: usize,
    /// Extra PEM CA certificates to trust, besides the roots.
    pub ca_file: Option<PathBuf>,
    /// Idle connections kept per host (reqwest's default when `None`).
    pub max_idle_per_host: Option<usize>,
}

impl HttpOptions {
    /// 10 s to connect, 120 s between reads, 10 redirects, no extra CA.
    pub fn new(user_agent: impl Into<String>) -> Self {
        Self {
            user_agent: user_agent.into(),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(120),
            max_redirects: 10,
            ca_file: None,
            max_idle_per_host: None,
        }
    }
}

/// Why no client could be built.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot read CA file {path}: {source}")]
    ReadCa {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("CA file {path} is not PEM certificates")]
    BadCa {
        path: PathBuf,
        #[source]
        source: reqwest::Error,
    },
    #[error("cannot set up the HTTP client")]
    Build(#[source] reqwest::Error),
}

/// A client built to `options`. Reads the CA file and probes the system's
/// CA store: blocking, but once per process.
pub fn http_client(options: &HttpOptions) -> Result<reqwest::Client, HttpError> {
    let redirects = match options.max_redirects {
        0 => reqwest::redirect::Policy::none(),
        n => reqwest::redirect::Policy::limited(n),
    };
    let mut builder = reqwest::Client::builder()
        .user_agent(options.user_agent.as_str())
        .connect_timeout(options.connect_timeout)
        .read_timeout(options.read_timeout)
        .redirect(redirects);
    if let Some(idle) = options.max_idle_per_host {
        builder = builder.pool_max_idle_per_host(idle);
    }
    let extra = match &options.ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|source| HttpError::ReadCa {
                path: path.clone(),
                source,
            })?;
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| HttpError::BadCa {
                path: path.clone(),
                source,
            })?
        }
        None => Vec::new(),
    };
    builder = if system_has_roots() {
        builder.tls_certs_merge(extra)
    } else {
        let bundled = bundled_roots().map_err(HttpError::Build)?;
        tracing::info!(
            bundled = bundled.len(),
            extra = extra.len(),
            "no CA certificates in the system store; https trusts the bundled Mozilla roots"
        );
        builder.tls_certs_only(bundled.into_iter().chain(extra))
    };
    builder.build().map_err(HttpError::Build)
}

/// Every client setting `object_store` reads from a store's environment
/// or configuration, copied across when the client options are replaced.
const STORE_CLIENT_KEYS: &[&str] = &[
    "allow_http",
    "allow_invalid_certificates",
    "connect_timeout",
    "default_content_type",
    "http1_only",
    "http2_only",
    "http2_keep_alive_interval",
    "http2_keep_alive_timeout",
    "http2_keep_alive_while_idle",
    "http2_max_frame_size",
    "pool_idle_timeout",
    "pool_max_idle_per_host",
    "proxy_url",
    "proxy_ca_certificate",
    "proxy_excludes",
    "randomize_addresses",
    "read_timeout",
    "timeout",
    "user_agent",
];

/// Client options for an `object_store` builder where the system CA store
/// is empty: the builder's own client settings (read through `current`)
/// plus the bundled Mozilla roots as the only trusted ones. `None` where
/// the system has roots: the builder is then right as it is.
fn store_client_options(
    current: impl Fn(ClientConfigKey) -> Option<String>,
) -> Option<ClientOptions> {
    if system_has_roots() {
        return None;
    }
    let mut options = ClientOptions::new();
    for name in STORE_CLIENT_KEYS {
        let Ok(key) = name.parse::<ClientConfigKey>() else {
            continue;
        };
        if let Some(value) = current(key) {
            options = options.with_config(key, value);
        }
    }
    for der in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
        if let Ok(root) = object_store::Certificate::from_der(der) {
            options = options.with_root_certificate(root);
        }
    }
    tracing::info!(
        bundled = webpki_root_certs::TLS_SERVER_ROOT_CERTS.len(),
        "no CA certificates in the system store; the object store client trusts the bundled Mozilla roots"
    );
    Some(options.with_no_system_certificates(true))
}

/// Whether the system CA store holds any certificate (probed once per
/// process).
fn system_has_roots() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(probe_system_roots)
}

/// An `object_store` builder that works without a system CA store: where
/// there is none, its client trusts the bundled roots (its other client
/// settings kept); elsewhere it is returned unchanged.
pub trait WithBundledRoots: Sized {
    fn with_bundled_roots_if_needed(self) -> Self;
}

macro_rules! bundled_roots_for {
    ($builder:ty, $key:path) => {
        impl WithBundledRoots for $builder {
            fn with_bundled_roots_if_needed(self) -> Self {
                match store_client_options(|k| self.get_config_value(&$key(k))) {
                    Some(options) => self.with_client_options(options),
                    None => self,
                }
            }
        }
    };
}

bundled_roots_for!(
    object_store::aws::AmazonS3Builder,
    object_store::aws::AmazonS3ConfigKey::Client
);
bundled_roots_for!(
    object_store::gcp::GoogleCloudStorageBuilder,
    object_store::gcp::GoogleConfigKey::Client
);
bundled_roots_for!(
    object_store::azure::MicrosoftAzureBuilder,
    object_store::azure::AzureConfigKey::Client
);

/// The Mozilla roots compiled into the binary.
fn bundled_roots() -> reqwest::Result<Vec<reqwest::Certificate>> {
    webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .map(|der| reqwest::Certificate::from_der(der))
        .collect()
}

/// Whether the system CA store that reqwest's verifier reads holds any
/// certificate (the same call and the same test it makes).
#[cfg(all(unix, not(target_os = "android"), not(target_vendor = "apple")))]
fn probe_system_roots() -> bool {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::debug!(%error, "reading the system CA store");
    }
    let mut store = rustls::RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(found.certs);
    added > 0
}

/// Elsewhere the verifier asks the operating system, which always answers.
#[cfg(not(all(unix, not(target_os = "android"), not(target_vendor = "apple"))))]
fn probe_system_roots() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_roots_are_certificates() {
        let roots = bundled_roots().unwrap();
        assert!(roots.len() > 50, "{} roots", roots.len());
    }

    #[test]
    fn a_missing_or_non_pem_ca_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut options = HttpOptions::new("test");
        options.ca_file = Some(dir.path().join("absent.pem"));
        let error = http_client(&options).unwrap_err();
        assert!(matches!(error, HttpError::ReadCa { .. }), "{error}");
        assert!(error.to_string().contains("absent.pem"));

        let bad = dir.path().join("bad.pem");
        std::fs::write(
            &bad,
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        options.ca_file = Some(bad);
        let error = http_client(&options).unwrap_err();
        assert!(matches!(error, HttpError::BadCa { .. }), "{error}");
    }
}
