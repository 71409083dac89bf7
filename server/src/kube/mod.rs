//! Kubernetes integration, both optional: owner tracking (`--kubernetes`:
//! watch pods, delete a bundle once no pod of its owner is left) and
//! service-account auth (`--kubernetes-auth`: accept a submitter's
//! service-account token, checked with TokenReview).
//!
//! [`owner`] holds the decision as a pure function, [`watch`] the watcher
//! and the loop around it, [`auth`] the TokenReview exchange. The API server
//! is found the standard way (in-cluster service account, else `KUBECONFIG`
//! or `~/.kube/config`).

pub mod auth;
pub mod owner;
pub mod watch;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;

use crate::api::AppState;
use crate::config::{ConfigError, UploadCredential};

/// Kubernetes flags, flattened into the server's [`crate::Args`].
#[derive(Debug, Clone, clap::Args)]
pub struct KubeArgs {
    /// Watch pods and delete a bundle once no pod in its owner namespace
    /// matches its owner selector (after --owner-grace, and never before
    /// --owner-min-age). Needs get/list/watch on pods.
    #[arg(long, env = "FERRY_KUBERNETES")]
    pub kubernetes: bool,

    /// Namespaces whose pods are watched, comma-separated; default all
    /// (needs a ClusterRole). Bundles owned in other namespaces are left to
    /// their TTL.
    #[arg(long, env = "FERRY_WATCH_NAMESPACES", value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,

    /// How long a bundle must have had no matching pod before it is deleted
    /// (covers pod rescheduling and job retries).
    #[arg(long, env = "FERRY_OWNER_GRACE", default_value = "5m", value_parser = humantime::parse_duration)]
    pub owner_grace: Duration,

    /// An owned bundle younger than this is never deleted for lack of pods
    /// (the driver pod is created after the bundle).
    #[arg(long, env = "FERRY_OWNER_MIN_AGE", default_value = "15m", value_parser = humantime::parse_duration)]
    pub owner_min_age: Duration,

    /// How often owned bundles are compared with the watched pods.
    #[arg(long, env = "FERRY_OWNER_CHECK_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub owner_check_interval: Duration,

    /// Accept Kubernetes service-account tokens as upload credentials,
    /// checked with TokenReview (needs create on tokenreviews). The upload
    /// token keeps working too.
    #[arg(long, env = "FERRY_KUBERNETES_AUTH")]
    pub kubernetes_auth: bool,

    /// With --kubernetes-auth: namespaces whose service accounts may upload,
    /// comma-separated.
    #[arg(long, env = "FERRY_AUTH_NAMESPACES", value_delimiter = ',')]
    pub auth_namespaces: Vec<String>,

    /// With --kubernetes-auth: service accounts that may upload, as
    /// namespace:name, comma-separated.
    #[arg(long, env = "FERRY_AUTH_SERVICE_ACCOUNTS", value_delimiter = ',')]
    pub auth_service_accounts: Vec<String>,

    /// With --kubernetes-auth: audiences the token must be issued for
    /// (default: the API server's own).
    #[arg(long, env = "FERRY_AUTH_AUDIENCES", value_delimiter = ',')]
    pub auth_audiences: Vec<String>,
}

/// Validated owner-tracking settings.
#[derive(Debug, Clone, Copy)]
pub struct OwnerConfig {
    pub rules: owner::OwnerRules,
    pub check_interval: Duration,
}

/// Validated Kubernetes settings; both parts optional.
#[derive(Debug, Clone, Default)]
pub struct KubeConfig {
    pub owner: Option<OwnerConfig>,
    /// `None`: cluster-wide.
    pub watch_namespaces: Option<BTreeSet<String>>,
    pub auth: Option<AuthConfig>,
}

/// Validated service-account auth settings.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub allowed: auth::AllowList,
    pub audiences: Vec<String>,
}

impl KubeConfig {
    pub fn from_args(args: &KubeArgs) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Kubernetes(message);
        let owner = if args.kubernetes {
            if args.owner_check_interval.is_zero() {
                return Err(ConfigError::Zero("--owner-check-interval"));
            }
            Some(OwnerConfig {
                rules: owner::OwnerRules {
                    grace: args.owner_grace,
                    min_age: args.owner_min_age,
                },
                check_interval: args.owner_check_interval,
            })
        } else {
            None
        };
        let watch_namespaces: BTreeSet<String> = args
            .watch_namespaces
            .iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        let auth = if args.kubernetes_auth {
            let mut allowed = auth::AllowList {
                namespaces: args
                    .auth_namespaces
                    .iter()
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect(),
                ..Default::default()
            };
            for text in &args.auth_service_accounts {
                let account = auth::AllowList::parse_service_account(text).ok_or_else(|| {
                    invalid(format!(
                        "--auth-service-accounts: {text:?} is not namespace:name"
                    ))
                })?;
                allowed.service_accounts.insert(account);
            }
            if allowed.is_empty() {
                return Err(invalid(
                    "--kubernetes-auth needs --auth-namespaces or --auth-service-accounts (no service account is allowed by default)".into(),
                ));
            }
            Some(AuthConfig {
                allowed,
                audiences: args.auth_audiences.clone(),
            })
        } else {
            None
        };
        Ok(Self {
            owner,
            watch_namespaces: (!watch_namespaces.is_empty()).then_some(watch_namespaces),
            auth,
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.owner.is_some() || self.auth.is_some()
    }
}

/// Errors setting up the Kubernetes integration.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error(
        "cannot reach a Kubernetes API server (in-cluster service account, KUBECONFIG or ~/.kube/config): {0}"
    )]
    Client(String),
    #[error("--kubernetes-auth cannot read the upload token to exchange for: {0}")]
    UploadToken(String),
    #[error(
        "--kubernetes-auth has nothing to grant with --insecure-no-auth (everyone may upload already)"
    )]
    NoUploadCredential,
}

/// Starts what `config` enables: the pod watch and owner loop in the
/// background, and the service-account exchange around `app`. Returns the
/// router to serve.
pub async fn start(
    config: &KubeConfig,
    credential: &UploadCredential,
    state: Arc<AppState>,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Router, KubeError> {
    if !config.is_enabled() {
        return Ok(app);
    }
    let client = ::kube::Client::try_default()
        .await
        .map_err(|e| KubeError::Client(e.to_string()))?;
    if let Some(owner) = config.owner {
        let pods = watch::PodWatch::start(client.clone(), config.watch_namespaces.clone());
        tokio::spawn(watch::run_owner_loop(state, pods, owner, shutdown));
    }
    let Some(auth_config) = &config.auth else {
        return Ok(app);
    };
    let token_path = match credential {
        UploadCredential::Disabled => return Err(KubeError::NoUploadCredential),
        UploadCredential::File(path) | UploadCredential::Generated(path) => path,
    };
    let token = std::fs::read_to_string(token_path)
        .map_err(|e| KubeError::UploadToken(format!("{}: {e}", token_path.display())))?;
    let upload_header = http::HeaderValue::from_str(&format!("Bearer {}", token.trim()))
        .map_err(|e| KubeError::UploadToken(e.to_string()))?;
    let exchange = Arc::new(auth::Exchange {
        reviewer: auth::TokenReviewer::new(
            client,
            auth_config.allowed.clone(),
            auth_config.audiences.clone(),
        ),
        upload_header,
    });
    tracing::info!(
        namespaces = ?auth_config.allowed.namespaces,
        service_accounts = ?auth_config.allowed.service_accounts,
        "service-account tokens accepted for upload (TokenReview)"
    );
    Ok(app.layer(axum::middleware::from_fn_with_state(
        exchange,
        auth::exchange,
    )))
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn parse(args: &[&str]) -> Result<KubeConfig, ConfigError> {
        let mut all = vec!["ferry-server"];
        all.extend_from_slice(args);
        let args = crate::Args::parse_from(all);
        KubeConfig::from_args(&args.kubernetes)
    }

    #[test]
    fn kubernetes_is_off_unless_asked_for() {
        let config = parse(&[]).unwrap();
        assert!(!config.is_enabled());
    }

    #[test]
    fn owner_tracking_flags_become_rules() {
        let config = parse(&[
            "--kubernetes",
            "--owner-grace",
            "2m",
            "--owner-min-age",
            "1h",
            "--watch-namespaces",
            "a,b",
        ])
        .unwrap();
        let owner = config.owner.unwrap();
        assert_eq!(owner.rules.grace, Duration::from_secs(120));
        assert_eq!(owner.rules.min_age, Duration::from_secs(3600));
        assert_eq!(
            config.watch_namespaces,
            Some(["a".to_owned(), "b".to_owned()].into())
        );
    }

    #[test]
    fn service_account_auth_needs_an_allow_list() {
        assert!(parse(&["--kubernetes-auth"]).is_err());
        assert!(parse(&["--kubernetes-auth", "--auth-service-accounts", "nocolon"]).is_err());
        let config = parse(&[
            "--kubernetes-auth",
            "--auth-namespaces",
            "spark",
            "--auth-service-accounts",
            "ci:publisher",
        ])
        .unwrap();
        let auth = config.auth.unwrap();
        assert!(auth.allowed.namespaces.contains("spark"));
        assert!(
            auth.allowed
                .service_accounts
                .contains(&("ci".to_owned(), "publisher".to_owned()))
        );
    }
}
