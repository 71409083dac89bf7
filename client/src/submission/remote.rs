//! What Spark would have used to reach each remote dependency, carried
//! over to ferry-init: store settings per fetched URI (endpoint, region,
//! path style, key file, ...), the secrets among them by reference, and the
//! pod-side ways users already hand secrets to Spark (`secretKeyRef`s,
//! mounted Secrets, driver/executor env, the user's own template).
//!
//! Everything here is a function of one Spark configuration map (key →
//! value, Hadoop settings as `spark.hadoop.*`), so every front end carries
//! the same: `ferry submit` passes its `--conf`s over the properties file
//! (or `spark-defaults.conf`); a SparkApplication passes `spec.sparkConf`
//! and `spec.hadoopConf` (prefixed `spark.hadoop.`).
//!
//! Secrets never land in a manifest: a key given inline as a setting goes
//! into the token Secret ferry already creates (one more data key) and
//! reaches ferry-init as an env var from a `secretKeyRef`; the plan names
//! only the variable. A dependency whose credentials ferry cannot carry (an
//! unsupported credentials provider, Kerberos) is left to Spark, with a
//! one-line notice.

use std::collections::BTreeMap;
use std::fmt;

use ferry_core::SourceUri;
use ferry_core::plan::{FetchPlan, StoreSettings};
use ferry_core::uri::SourceKind;
use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, Pod, Secret, SecretKeySelector, SecretVolumeSource, Volume,
    VolumeMount,
};

use super::{Dependency, Origin};
use crate::k8s::INIT_CONTAINER;

/// What a dry run shows instead of a secret.
pub const REDACTED: &str = "<redacted>";

/// Spark's prefix for Hadoop settings.
const HADOOP: &str = "spark.hadoop.";
/// Prefix of the volumes ferry adds for the user's mounted Secrets.
const USER_SECRET_VOLUME: &str = "ferry-user-secret-";

/// A value that must not be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Hidden(String);

impl Hidden {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Hidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Which pods a reference is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Driver,
    Executor,
}

/// One env var of ferry-init.
#[derive(Debug, Clone, PartialEq, Eq)]
enum EnvRef {
    /// A plain, non-secret value.
    Value { name: String, value: String },
    /// A data key of the token Secret ferry creates.
    Ferry { name: String, key: String },
    /// A key of one of the user's Secrets.
    User {
        name: String,
        secret: String,
        key: String,
    },
}

/// What one side's ferry-init gets besides the common references.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct PodRefs {
    env: Vec<EnvRef>,
    /// (Secret name, mount path).
    secrets: Vec<(String, String)>,
}

/// Everything carried over for one submission.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteAccess {
    /// Fetched URI → how ferry-init reaches its store.
    stores: BTreeMap<String, StoreSettings>,
    /// Data keys added to the token Secret → their values.
    inline: BTreeMap<String, Hidden>,
    /// For every ferry-init: the inline store secrets.
    common: Vec<EnvRef>,
    driver: PodRefs,
    executor: PodRefs,
}

/// What one store needs: plain options, and secret ones with the setting
/// they came from.
#[derive(Debug, Default)]
struct Needs {
    options: BTreeMap<String, String>,
    /// object_store key → (Spark setting, value).
    secrets: BTreeMap<String, (String, String)>,
}

/// Splits `deps` into those ferry may deliver and one-line notices for the
/// remote ones it leaves to Spark because it cannot carry what Spark would
/// use to reach them.
pub fn keep_carriable(
    conf: &BTreeMap<String, String>,
    deps: Vec<Dependency>,
) -> (Vec<Dependency>, Vec<String>) {
    let mut kept = Vec::new();
    let mut notices = Vec::new();
    for dep in deps {
        if let Ok(Origin::Remote(uri)) = dep.origin()
            && let Err(reason) = needs(conf, &uri)
        {
            let notice = format!("ferry: leaving {} to Spark: {reason}", dep.location);
            if !notices.contains(&notice) {
                notices.push(notice);
            }
            continue;
        }
        kept.push(dep);
    }
    (kept, notices)
}

impl RemoteAccess {
    /// What ferry-init needs for `fetched` (URIs that passed
    /// [`keep_carriable`]) and the pod-side references in `conf`.
    pub fn new<'a>(
        conf: &BTreeMap<String, String>,
        fetched: impl IntoIterator<Item = &'a SourceUri>,
    ) -> Self {
        let mut access = Self::default();
        for uri in fetched {
            let Ok(needs) = needs(conf, uri) else {
                continue;
            };
            if needs.options.is_empty() && needs.secrets.is_empty() {
                continue;
            }
            let mut settings = StoreSettings {
                options: needs.options,
                env: BTreeMap::new(),
            };
            for (key, (setting, value)) in needs.secrets {
                let var = env_name(&setting);
                let data_key = data_key(&setting);
                settings.env.insert(key, var.clone());
                access.inline.insert(data_key.clone(), Hidden(value));
                let reference = EnvRef::Ferry {
                    name: var,
                    key: data_key,
                };
                if !access.common.contains(&reference) {
                    access.common.push(reference);
                }
            }
            access.stores.insert(uri.as_str().to_owned(), settings);
        }
        access.driver = access.pod_refs(conf, Side::Driver);
        access.executor = access.pod_refs(conf, Side::Executor);
        access
    }

    /// `spark.kubernetes.<role>.secretKeyRef.*` / `.secrets.*` and the
    /// store variables among `driverEnv` / `executorEnv`; a secret-looking
    /// value among those goes into the token Secret.
    fn pod_refs(&mut self, conf: &BTreeMap<String, String>, side: Side) -> PodRefs {
        let role = match side {
            Side::Driver => "driver",
            Side::Executor => "executor",
        };
        let mut refs = PodRefs::default();
        let key_refs = format!("spark.kubernetes.{role}.secretKeyRef.");
        let mounts = format!("spark.kubernetes.{role}.secrets.");
        let env_prefix = match side {
            Side::Driver => "spark.kubernetes.driverEnv.",
            Side::Executor => "spark.executorEnv.",
        };
        for (setting, value) in conf {
            if let Some(name) = setting.strip_prefix(&key_refs)
                && let Some((secret, key)) = value.split_once(':')
                && is_store_variable(name)
            {
                refs.env.push(EnvRef::User {
                    name: name.to_owned(),
                    secret: secret.trim().to_owned(),
                    key: key.trim().to_owned(),
                });
            } else if let Some(secret) = setting.strip_prefix(&mounts) {
                refs.secrets.push((secret.to_owned(), value.clone()));
            } else if let Some(name) = setting.strip_prefix(env_prefix)
                && is_store_variable(name)
            {
                if looks_secret(name) {
                    let key = data_key(setting);
                    self.inline.insert(key.clone(), Hidden(value.clone()));
                    refs.env.push(EnvRef::Ferry {
                        name: name.to_owned(),
                        key,
                    });
                } else {
                    refs.env.push(EnvRef::Value {
                        name: name.to_owned(),
                        value: value.clone(),
                    });
                }
            }
        }
        refs
    }

    /// Writes each fetched item's store settings into `plan`.
    pub fn annotate(&self, plan: &mut FetchPlan) {
        for item in &mut plan.items {
            if let Some(settings) = self.stores.get(item.uri.as_str()) {
                item.store = Some(settings.clone());
            }
        }
    }

    /// The data keys to add to the token Secret, with their values.
    pub fn secret_data(&self) -> impl Iterator<Item = (&str, &str)> {
        self.inline.iter().map(|(k, v)| (k.as_str(), v.expose()))
    }

    /// Whether the token Secret carries `key` for store access (so a dry
    /// run shows it redacted).
    pub fn is_carried_key(&self, key: &str) -> bool {
        self.inline.contains_key(key)
    }

    /// `secret` as a dry run shows it: the store secrets carried in it
    /// redacted.
    pub fn shown(&self, secret: &Secret) -> Secret {
        let mut shown = secret.clone();
        for (key, value) in shown.string_data.iter_mut().flatten() {
            if self.is_carried_key(key) {
                *value = REDACTED.into();
            }
        }
        shown
    }

    /// Gives the ferry-init container of `pod` the references it needs on
    /// `side`: env vars (from `secret_name`, the token Secret, and the
    /// user's Secrets), the user's mounted Secrets, and the store variables
    /// and Secret mounts of the user's own main container `container`.
    /// Without a token Secret (nothing staged) inline keys have nowhere to
    /// live: ferry-init then says which variable it lacks.
    pub fn add_to_pod(
        &self,
        pod: &mut Pod,
        side: Side,
        secret_name: Option<&str>,
        container: &str,
    ) {
        let refs = match side {
            Side::Driver => &self.driver,
            Side::Executor => &self.executor,
        };
        let Some(spec) = pod.spec.as_mut() else {
            return;
        };
        let (template_env, template_mounts) = spec
            .containers
            .iter()
            .find(|c| c.name == container)
            .or(spec.containers.first())
            .map(|main| store_refs_of(main, spec.volumes.as_deref().unwrap_or_default()))
            .unwrap_or_default();
        let mut volumes = Vec::new();
        let mut mounts = template_mounts;
        for (secret, path) in &refs.secrets {
            let name = volume_name(secret);
            volumes.push(Volume {
                name: name.clone(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(secret.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            });
            mounts.push(VolumeMount {
                name,
                mount_path: path.clone(),
                read_only: Some(true),
                ..Default::default()
            });
        }
        let mut env = template_env;
        for reference in self.common.iter().chain(&refs.env) {
            let var = match (reference, secret_name) {
                (EnvRef::Ferry { .. }, None) => continue,
                (_, name) => env_var(reference, name.unwrap_or_default()),
            };
            env.retain(|e| e.name != var.name);
            env.push(var);
        }
        if env.is_empty() && mounts.is_empty() {
            return;
        }
        // By name, so a second call (or the other role's, where the two
        // share `spec.volumes`, as a SparkApplication's do) keeps what the
        // first added.
        let all_volumes = spec.volumes.get_or_insert_with(Vec::new);
        all_volumes.retain(|v| !volumes.iter().any(|n| n.name == v.name));
        all_volumes.extend(volumes);
        let Some(init) = spec
            .init_containers
            .iter_mut()
            .flatten()
            .find(|c| c.name == INIT_CONTAINER)
        else {
            return;
        };
        let init_env = init.env.get_or_insert_with(Vec::new);
        init_env.retain(|e| !env.iter().any(|n| n.name == e.name));
        init_env.extend(env);
        let init_mounts = init.volume_mounts.get_or_insert_with(Vec::new);
        init_mounts.retain(|m| !mounts.iter().any(|n| n.mount_path == m.mount_path));
        init_mounts.extend(mounts);
    }
}

/// The store variables (any form: value, `secretKeyRef`) and the Secret
/// mounts of the user's main container, for ferry-init to share.
fn store_refs_of(main: &Container, volumes: &[Volume]) -> (Vec<EnvVar>, Vec<VolumeMount>) {
    let env = main
        .env
        .iter()
        .flatten()
        .filter(|e| is_store_variable(&e.name))
        .cloned()
        .collect();
    let is_secret_volume =
        |name: &str| volumes.iter().any(|v| v.name == name && v.secret.is_some());
    let mounts = main
        .volume_mounts
        .iter()
        .flatten()
        .filter(|m| is_secret_volume(&m.name))
        .map(|m| VolumeMount {
            read_only: Some(true),
            ..m.clone()
        })
        .collect();
    (env, mounts)
}

fn env_var(reference: &EnvRef, ferry_secret: &str) -> EnvVar {
    let from_secret = |name: &str, secret: &str, key: &str| EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    match reference {
        EnvRef::Value { name, value } => EnvVar {
            name: name.clone(),
            value: Some(value.clone()),
            ..Default::default()
        },
        EnvRef::Ferry { name, key } => from_secret(name, ferry_secret, key),
        EnvRef::User { name, secret, key } => from_secret(name, secret, key),
    }
}

/// Environment variables a store client (ferry-init's, or Spark's) reads;
/// ferry-init's own `FERRY_*` settings are never taken from the user's pod
/// settings.
fn is_store_variable(name: &str) -> bool {
    // AZURITE_*: the emulator's endpoints, which object_store reads.
    ["AWS_", "GOOGLE_", "AZURE_", "AZURITE_", "HADOOP_"]
        .iter()
        .any(|p| name.starts_with(p))
        || name == "SERVICE_ACCOUNT"
}

fn looks_secret(name: &str) -> bool {
    ["SECRET", "TOKEN", "PASSWORD", "KEY", "CREDENTIAL"]
        .iter()
        .any(|w| name.contains(w))
}

/// Whether a Spark setting's value is a secret (shown redacted by a dry run).
pub fn is_secret_setting(key: &str) -> bool {
    if let Some(name) = key
        .strip_prefix("spark.kubernetes.driverEnv.")
        .or_else(|| key.strip_prefix("spark.executorEnv."))
    {
        return is_store_variable(name) && looks_secret(name);
    }
    let Some(hadoop) = key.strip_prefix(HADOOP) else {
        return false;
    };
    [".access.key", ".secret.key", ".session.token"]
        .iter()
        .any(|s| hadoop.starts_with("fs.s3a.") && hadoop.ends_with(s))
        || hadoop.starts_with("fs.azure.account.key")
        || hadoop.starts_with("fs.azure.sas.")
        || hadoop.starts_with("fs.azure.account.oauth2.client.secret")
        || hadoop.ends_with("service.account.json.private.key")
}

/// `FERRY_` and the setting in upper case, `_` for anything else: one
/// variable per setting, readable in `kubectl describe`.
fn env_name(setting: &str) -> String {
    let body: String = setting
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("FERRY_{body}")
}

/// A Secret data key for a setting: the setting itself, `_` for any
/// character a data key cannot hold.
fn data_key(setting: &str) -> String {
    setting
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A volume name (DNS label) for one of the user's Secrets.
fn volume_name(secret: &str) -> String {
    let mut name: String = format!("{USER_SECRET_VOLUME}{secret}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    if name.len() > 63 {
        let digest = ferry_core::Digest::of(secret.as_bytes()).hex();
        name.truncate(63 - 9);
        name = format!("{}-{}", name.trim_end_matches('-'), &digest[..8]);
    }
    name
}

/// A Hadoop setting: `spark.hadoop.<key>` → (setting, value).
fn hadoop<'a>(conf: &'a BTreeMap<String, String>, key: &str) -> Option<(&'a str, &'a str)> {
    conf.get_key_value(&format!("{HADOOP}{key}"))
        .map(|(k, v)| (k.as_str(), v.trim()))
}

/// What ferry-init needs to reach `uri`'s store as Spark would, or why it
/// cannot.
fn needs(conf: &BTreeMap<String, String>, uri: &SourceUri) -> Result<Needs, String> {
    let scheme = uri
        .as_str()
        .split_once("://")
        .map(|(s, _)| s.to_ascii_lowercase())
        .unwrap_or_default();
    match uri.kind() {
        SourceKind::S3 { bucket, .. } if scheme == "s3a" => s3a(conf, bucket),
        SourceKind::Gcs { .. } => gcs(conf),
        SourceKind::Azure {
            account: Some(_),
            container,
            ..
        } => azure(conf, uri.as_str(), container),
        SourceKind::Hdfs { .. } | SourceKind::WebHdfs { .. } => hdfs(conf),
        _ => Ok(Needs::default()),
    }
}

/// Hadoop's S3A credential providers ferry-init can stand in for.
enum S3Provider {
    /// Keys from the settings.
    Keys,
    /// The AWS default chain (env, web identity, container, instance).
    Chain,
    Anonymous,
}

fn s3_provider(class: &str) -> Option<S3Provider> {
    let short = class.rsplit('.').next().unwrap_or(class);
    match short {
        "SimpleAWSCredentialsProvider" | "TemporaryAWSCredentialsProvider" => {
            Some(S3Provider::Keys)
        }
        "AnonymousAWSCredentialsProvider" | "AnonymousCredentialsProvider" => {
            Some(S3Provider::Anonymous)
        }
        "EnvironmentVariableCredentialsProvider"
        | "DefaultAWSCredentialsProviderChain"
        | "DefaultCredentialsProvider"
        | "WebIdentityTokenCredentialsProvider"
        | "WebIdentityTokenFileCredentialsProvider"
        | "IAMInstanceCredentialsProvider"
        | "InstanceProfileCredentialsProvider"
        | "EC2ContainerCredentialsProviderWrapper"
        | "ContainerCredentialsProvider" => Some(S3Provider::Chain),
        _ => None,
    }
}

fn s3a(conf: &BTreeMap<String, String>, bucket: &str) -> Result<Needs, String> {
    // A per-bucket setting wins over the global one, as in S3A.
    let get = |key: &str| {
        hadoop(conf, &format!("fs.s3a.bucket.{bucket}.{key}"))
            .or_else(|| hadoop(conf, &format!("fs.s3a.{key}")))
            .filter(|(_, v)| !v.is_empty())
    };
    let mut needs = Needs::default();
    let providers: Vec<&str> = get("aws.credentials.provider")
        .map(|(_, v)| {
            v.split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let mut anonymous = false;
    for class in &providers {
        match s3_provider(class) {
            Some(S3Provider::Anonymous) => anonymous = true,
            Some(S3Provider::Keys | S3Provider::Chain) => {}
            None => {
                return Err(format!(
                    "S3A credentials provider {class} is not one ferry-init can stand in for"
                ));
            }
        }
    }
    if anonymous && providers.len() == 1 {
        needs
            .options
            .insert("aws_skip_signature".into(), "true".into());
    } else {
        for (key, name) in [
            ("aws_access_key_id", "access.key"),
            ("aws_secret_access_key", "secret.key"),
            ("aws_session_token", "session.token"),
        ] {
            if let Some((setting, value)) = get(name) {
                needs
                    .secrets
                    .insert(key.into(), (setting.to_owned(), value.to_owned()));
            }
        }
    }
    let ssl = get("connection.ssl.enabled").is_none_or(|(_, v)| !v.eq_ignore_ascii_case("false"));
    let path_style = get("path.style.access").is_some_and(|(_, v)| v.eq_ignore_ascii_case("true"));
    if let Some((_, region)) = get("endpoint.region") {
        needs.options.insert("aws_region".into(), region.to_owned());
    }
    if let Some((_, endpoint)) = get("endpoint") {
        let (scheme, host) = match endpoint.split_once("://") {
            Some((scheme, host)) => (scheme.to_ascii_lowercase(), host.trim_end_matches('/')),
            None => (
                if ssl { "https" } else { "http" }.to_owned(),
                endpoint.trim_end_matches('/'),
            ),
        };
        if let Some(region) = aws_region_of(host) {
            // AWS's own endpoint: the region is all object_store needs.
            needs.options.entry("aws_region".into()).or_insert(region);
        } else {
            if path_style {
                needs
                    .options
                    .insert("aws_endpoint".into(), format!("{scheme}://{host}"));
            } else {
                // S3A's default: virtual-hosted style, the bucket in the host.
                needs
                    .options
                    .insert("aws_endpoint".into(), format!("{scheme}://{bucket}.{host}"));
                needs
                    .options
                    .insert("aws_virtual_hosted_style_request".into(), "true".into());
            }
            if scheme == "http" {
                needs.options.insert("aws_allow_http".into(), "true".into());
            }
        }
    }
    Ok(needs)
}

/// `s3.amazonaws.com` → us-east-1, `s3.eu-west-3.amazonaws.com` /
/// `s3-eu-west-3.amazonaws.com` → eu-west-3; `None` for other hosts.
fn aws_region_of(host: &str) -> Option<String> {
    let host = host.split(['/', ':']).next().unwrap_or(host);
    let name = host
        .strip_suffix(".amazonaws.com")
        .or_else(|| host.strip_suffix(".amazonaws.com.cn"))?;
    if name == "s3" || name == "s3-external-1" {
        return Some("us-east-1".into());
    }
    let region = name
        .strip_prefix("s3.")
        .or_else(|| name.strip_prefix("s3-"))?
        .trim_start_matches("dualstack.");
    (!region.is_empty() && !region.contains('.')).then(|| region.to_owned())
}

fn gcs(conf: &BTreeMap<String, String>) -> Result<Needs, String> {
    let mut needs = Needs::default();
    let auth = hadoop(conf, "fs.gs.auth.type").map(|(_, v)| v.to_ascii_uppercase());
    let keyfile = hadoop(conf, "fs.gs.auth.service.account.json.keyfile")
        .or_else(|| hadoop(conf, "google.cloud.auth.service.account.json.keyfile"));
    let null_auth = ["fs.gs.auth.null.enable", "google.cloud.auth.null.enable"]
        .iter()
        .any(|k| hadoop(conf, k).is_some_and(|(_, v)| v.eq_ignore_ascii_case("true")));
    match auth.as_deref() {
        None | Some("SERVICE_ACCOUNT_JSON_KEYFILE") => {
            if let Some((_, path)) = keyfile {
                needs
                    .options
                    .insert("google_service_account_path".into(), path.to_owned());
            } else if null_auth {
                needs
                    .options
                    .insert("google_skip_signature".into(), "true".into());
            }
        }
        Some("UNAUTHENTICATED") => {
            needs
                .options
                .insert("google_skip_signature".into(), "true".into());
        }
        Some("APPLICATION_DEFAULT" | "COMPUTE_ENGINE") => {}
        Some(other) => {
            return Err(format!(
                "GCS auth type {other} (fs.gs.auth.type) is not one ferry-init can stand in for"
            ));
        }
    }
    if let Some((_, url)) = hadoop(conf, "fs.gs.storage.root.url") {
        needs.options.insert(
            "google_base_url".into(),
            url.trim_end_matches('/').to_owned(),
        );
    }
    Ok(needs)
}

fn azure(conf: &BTreeMap<String, String>, uri: &str, container: &str) -> Result<Needs, String> {
    // abfss://<container>@<account>.dfs.core.windows.net/...: the host
    // is what Hadoop's per-account settings are keyed by.
    let host = uri
        .split_once('@')
        .map(|(_, rest)| rest.split('/').next().unwrap_or(rest))
        .unwrap_or_default();
    let account = host.split('.').next().unwrap_or_default();
    let twin = host.replace(".dfs.", ".blob.").replace(
        ".blob.core",
        if host.contains(".dfs.") {
            ".blob.core"
        } else {
            ".dfs.core"
        },
    );
    let get = |key: &str| {
        hadoop(conf, &format!("{key}.{host}"))
            .or_else(|| hadoop(conf, &format!("{key}.{twin}")))
            .or_else(|| hadoop(conf, key))
            .filter(|(_, v)| !v.is_empty())
    };
    let mut needs = Needs::default();
    let secret = |needs: &mut Needs, key: &str, found: Option<(&str, &str)>| {
        if let Some((setting, value)) = found {
            needs
                .secrets
                .insert(key.to_owned(), (setting.to_owned(), value.to_owned()));
        }
    };
    let auth = get("fs.azure.account.auth.type").map(|(_, v)| v.to_owned());
    match auth.as_deref().unwrap_or("SharedKey") {
        "SharedKey" => {
            secret(
                &mut needs,
                "azure_storage_account_key",
                get("fs.azure.account.key"),
            );
            // WASB's per-container SAS.
            secret(
                &mut needs,
                "azure_storage_sas_key",
                hadoop(conf, &format!("fs.azure.sas.{container}.{host}")),
            );
        }
        "SAS" => {
            let fixed = get("fs.azure.sas.fixed.token");
            if fixed.is_none() {
                return Err(format!(
                    "Azure SAS for {account} comes from a SAS token provider class, which ferry-init cannot run (set fs.azure.sas.fixed.token)"
                ));
            }
            secret(&mut needs, "azure_storage_sas_key", fixed);
        }
        "OAuth" => {
            let provider = get("fs.azure.account.oauth.provider.type")
                .map(|(_, v)| v.rsplit('.').next().unwrap_or(v).to_owned())
                .unwrap_or_default();
            match provider.as_str() {
                "ClientCredsTokenProvider" => {
                    if let Some((_, id)) = get("fs.azure.account.oauth2.client.id") {
                        needs
                            .options
                            .insert("azure_client_id".into(), id.to_owned());
                    }
                    secret(
                        &mut needs,
                        "azure_client_secret",
                        get("fs.azure.account.oauth2.client.secret"),
                    );
                    if let Some(tenant) = get("fs.azure.account.oauth2.client.endpoint")
                        .and_then(|(_, e)| tenant_of(e))
                    {
                        needs.options.insert("azure_tenant_id".into(), tenant);
                    }
                }
                "MsiTokenProvider" | "WorkloadIdentityTokenProvider" => {}
                other => {
                    return Err(format!(
                        "Azure OAuth provider {other:?} for {account} is not one ferry-init can stand in for"
                    ));
                }
            }
        }
        other => {
            return Err(format!(
                "Azure auth type {other} for {account} is not one ferry-init can stand in for"
            ));
        }
    }
    Ok(needs)
}

/// `https://login.microsoftonline.com/<tenant>/oauth2/token` → `<tenant>`.
fn tenant_of(endpoint: &str) -> Option<String> {
    let path = endpoint.split_once("://")?.1;
    let tenant = path.split('/').nth(1)?;
    (!tenant.is_empty()).then(|| tenant.to_owned())
}

fn hdfs(conf: &BTreeMap<String, String>) -> Result<Needs, String> {
    let kerberos = hadoop(conf, "hadoop.security.authentication")
        .is_some_and(|(_, v)| v.eq_ignore_ascii_case("kerberos"))
        || [
            "spark.kerberos.keytab",
            "spark.kerberos.principal",
            "spark.kubernetes.kerberos.krb5.path",
            "spark.kubernetes.kerberos.krb5.configMapName",
            "spark.kubernetes.kerberos.tokenSecret.name",
        ]
        .iter()
        .any(|k| conf.contains_key(*k));
    if kerberos {
        return Err("HDFS with Kerberos needs Spark's delegation tokens".into());
    }
    Ok(Needs::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::submission::Kind;

    fn conf(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn uri(text: &str) -> SourceUri {
        SourceUri::parse(text).unwrap()
    }

    fn settings(access: &RemoteAccess, text: &str) -> StoreSettings {
        access.stores.get(text).cloned().unwrap_or_default()
    }

    fn options(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        conf(pairs)
    }

    #[test]
    fn s3a_settings_are_carried_per_bucket_with_keys_by_reference() {
        let conf = conf(&[
            ("spark.hadoop.fs.s3a.endpoint", "http://minio.data:9000"),
            ("spark.hadoop.fs.s3a.path.style.access", "true"),
            ("spark.hadoop.fs.s3a.endpoint.region", "eu-west-3"),
            ("spark.hadoop.fs.s3a.access.key", "AKIAGLOBAL"),
            ("spark.hadoop.fs.s3a.secret.key", "global-secret"),
            (
                "spark.hadoop.fs.s3a.bucket.other.endpoint",
                "ceph.local:7480",
            ),
            (
                "spark.hadoop.fs.s3a.bucket.other.connection.ssl.enabled",
                "false",
            ),
            (
                "spark.hadoop.fs.s3a.bucket.other.secret.key",
                "other-secret",
            ),
            (
                "spark.hadoop.fs.s3a.bucket.other.path.style.access",
                "false",
            ),
        ]);
        let fetched = [
            uri("s3a://b/x.jar"),
            uri("s3a://other/y.jar"),
            uri("s3://b/z.jar"),
        ];
        let access = RemoteAccess::new(&conf, &fetched);
        let b = settings(&access, "s3a://b/x.jar");
        assert_eq!(
            b.options,
            options(&[
                ("aws_allow_http", "true"),
                ("aws_endpoint", "http://minio.data:9000"),
                ("aws_region", "eu-west-3"),
            ])
        );
        assert_eq!(
            b.env,
            options(&[
                ("aws_access_key_id", "FERRY_SPARK_HADOOP_FS_S3A_ACCESS_KEY"),
                (
                    "aws_secret_access_key",
                    "FERRY_SPARK_HADOOP_FS_S3A_SECRET_KEY"
                ),
            ])
        );
        let other = settings(&access, "s3a://other/y.jar");
        assert_eq!(
            other.options,
            options(&[
                ("aws_allow_http", "true"),
                ("aws_endpoint", "http://other.ceph.local:7480"),
                ("aws_region", "eu-west-3"),
                ("aws_virtual_hosted_style_request", "true"),
            ])
        );
        assert_eq!(
            other.env["aws_secret_access_key"],
            "FERRY_SPARK_HADOOP_FS_S3A_BUCKET_OTHER_SECRET_KEY"
        );
        assert_eq!(
            other.env["aws_access_key_id"], "FERRY_SPARK_HADOOP_FS_S3A_ACCESS_KEY",
            "the global key where the bucket has none"
        );
        assert!(
            !access.stores.contains_key("s3://b/z.jar"),
            "s3:// is not S3A: fs.s3a settings are not Spark's for it"
        );
        let data: BTreeMap<&str, &str> = access.secret_data().collect();
        assert_eq!(data["spark.hadoop.fs.s3a.secret.key"], "global-secret");
        assert_eq!(
            data["spark.hadoop.fs.s3a.bucket.other.secret.key"],
            "other-secret"
        );
        assert_eq!(data.len(), 3);
        assert!(
            !format!("{access:?}").contains("secret\""),
            "Debug hides values"
        );
        assert!(!format!("{access:?}").contains("global-secret"));
    }

    #[test]
    fn aws_endpoints_become_regions_and_anonymous_access_is_carried() {
        let access = RemoteAccess::new(
            &conf(&[
                ("spark.hadoop.fs.s3a.endpoint", "s3.eu-west-3.amazonaws.com"),
                (
                    "spark.hadoop.fs.s3a.aws.credentials.provider",
                    "org.apache.hadoop.fs.s3a.AnonymousAWSCredentialsProvider",
                ),
            ]),
            &[uri("s3a://public/x.jar")],
        );
        assert_eq!(
            settings(&access, "s3a://public/x.jar").options,
            options(&[("aws_region", "eu-west-3"), ("aws_skip_signature", "true")])
        );
        assert_eq!(
            aws_region_of("s3.amazonaws.com").as_deref(),
            Some("us-east-1")
        );
        assert_eq!(aws_region_of("minio:9000"), None);
    }

    #[test]
    fn what_cannot_be_carried_is_left_to_spark_with_one_line() {
        let conf = conf(&[
            (
                "spark.hadoop.fs.s3a.bucket.vault.aws.credentials.provider",
                "org.apache.hadoop.fs.s3a.auth.AssumedRoleCredentialProvider",
            ),
            ("spark.hadoop.hadoop.security.authentication", "kerberos"),
            ("spark.hadoop.fs.gs.auth.type", "USER_CREDENTIALS"),
        ]);
        let deps = [
            "s3a://vault/a.jar",
            "s3a://open/b.jar",
            "hdfs://nn:8020/c.jar",
            "gs://g/d.jar",
            "https://h/e.jar",
        ]
        .map(|d| Dependency::parse(Kind::Jar, d))
        .to_vec();
        let (kept, notices) = keep_carriable(&conf, deps);
        let kept: Vec<&str> = kept.iter().map(|d| d.location.as_str()).collect();
        assert_eq!(kept, ["s3a://open/b.jar", "https://h/e.jar"]);
        assert_eq!(notices.len(), 3, "{notices:?}");
        assert!(notices[0].starts_with("ferry: leaving s3a://vault/a.jar to Spark: "));
        assert!(notices[0].contains("AssumedRoleCredentialProvider"));
        assert!(notices[1].contains("Kerberos"));
        assert!(notices.iter().all(|n| !n.contains('\n')));
    }

    #[test]
    fn gcs_key_files_and_azure_keys_sas_and_client_secrets_are_carried() {
        let conf = conf(&[
            (
                "spark.hadoop.google.cloud.auth.service.account.json.keyfile",
                "/mnt/gcp/key.json",
            ),
            (
                "spark.hadoop.fs.gs.storage.root.url",
                "http://127.0.0.1:4443/",
            ),
            (
                "spark.hadoop.fs.azure.account.key.acct.dfs.core.windows.net",
                "azure-key",
            ),
            (
                "spark.hadoop.fs.azure.account.auth.type.oauthy.dfs.core.windows.net",
                "OAuth",
            ),
            (
                "spark.hadoop.fs.azure.account.oauth.provider.type",
                "org.apache.hadoop.fs.azurebfs.oauth2.ClientCredsTokenProvider",
            ),
            ("spark.hadoop.fs.azure.account.oauth2.client.id", "app-id"),
            (
                "spark.hadoop.fs.azure.account.oauth2.client.secret",
                "client-secret",
            ),
            (
                "spark.hadoop.fs.azure.account.oauth2.client.endpoint",
                "https://login.microsoftonline.com/tenant-1/oauth2/token",
            ),
            (
                "spark.hadoop.fs.azure.sas.c.wasbacct.blob.core.windows.net",
                "sas-token",
            ),
        ]);
        let fetched = [
            uri("gs://g/x.jar"),
            uri("abfss://c@acct.dfs.core.windows.net/x.jar"),
            uri("abfss://c@oauthy.dfs.core.windows.net/x.jar"),
            uri("wasbs://c@wasbacct.blob.core.windows.net/x.jar"),
        ];
        let access = RemoteAccess::new(&conf, &fetched);
        assert_eq!(
            settings(&access, "gs://g/x.jar").options,
            options(&[
                ("google_base_url", "http://127.0.0.1:4443"),
                ("google_service_account_path", "/mnt/gcp/key.json"),
            ])
        );
        let key = settings(&access, "abfss://c@acct.dfs.core.windows.net/x.jar");
        assert!(key.env.contains_key("azure_storage_account_key"));
        let oauth = settings(&access, "abfss://c@oauthy.dfs.core.windows.net/x.jar");
        assert_eq!(
            oauth.options,
            options(&[
                ("azure_client_id", "app-id"),
                ("azure_tenant_id", "tenant-1")
            ])
        );
        assert!(oauth.env.contains_key("azure_client_secret"));
        let sas = settings(&access, "wasbs://c@wasbacct.blob.core.windows.net/x.jar");
        assert!(sas.env.contains_key("azure_storage_sas_key"));
        let data: BTreeMap<&str, &str> = access.secret_data().collect();
        for value in ["azure-key", "client-secret", "sas-token"] {
            assert!(data.values().any(|v| *v == value), "{value} in the Secret");
        }
    }

    #[test]
    fn pod_side_references_reach_ferry_init_by_reference() {
        let conf = conf(&[
            (
                "spark.kubernetes.driver.secretKeyRef.AWS_ACCESS_KEY_ID",
                "aws:key",
            ),
            (
                "spark.kubernetes.driver.secretKeyRef.FERRY_SERVER",
                "evil:url",
            ),
            ("spark.kubernetes.executor.secrets.gcp-key", "/mnt/gcp"),
            ("spark.kubernetes.driverEnv.AWS_REGION", "eu-west-3"),
            (
                "spark.kubernetes.driverEnv.AWS_SECRET_ACCESS_KEY",
                "env-secret",
            ),
            ("spark.executorEnv.AWS_ENDPOINT_URL", "http://minio:9000"),
            ("spark.hadoop.fs.s3a.secret.key", "conf-secret"),
        ]);
        let access = RemoteAccess::new(&conf, &[uri("s3a://b/x.jar")]);
        let init = crate::k8s::InitSpec {
            image: "ferry-init:test".into(),
            server: "http://ferry:7070".into(),
            secret_name: Some("ferry-id-x".into()),
            node_cache: None,
            work_dir: None,
            deps_dir: crate::k8s::DEPS_DIR.into(),
            plan: FetchPlan::new(Vec::new()),
            archive_dirs: Vec::new(),
        };
        let user: Pod = serde_yaml::from_str(
            "spec:\n  containers:\n  - name: main\n    env:\n    - {name: AWS_PROFILE, value: team}\n    - {name: JAVA_OPTS, value: -X}\n    volumeMounts:\n    - {name: creds, mountPath: /creds}\n    - {name: data, mountPath: /data}\n  volumes:\n  - {name: creds, secret: {secretName: team-creds}}\n  - {name: data, emptyDir: {}}\n",
        )
        .unwrap();
        let mut driver = crate::k8s::merge_template(Some(user), &init, "main");
        access.add_to_pod(&mut driver, Side::Driver, Some("ferry-id-x"), "main");
        let mut executor = crate::k8s::merge_template(None, &init, "spark-kubernetes-executor");
        access.add_to_pod(&mut executor, Side::Executor, Some("ferry-id-x"), "x");
        let ferry_init =
            |pod: &Pod| pod.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[0].clone();
        let describe = |c: &Container| -> Vec<String> {
            c.env
                .iter()
                .flatten()
                .map(|e| match (&e.value, &e.value_from) {
                    (Some(v), _) => format!("{}={v}", e.name),
                    (_, Some(from)) => {
                        let r = from.secret_key_ref.as_ref().unwrap();
                        format!("{}<-{}:{}", e.name, r.name, r.key)
                    }
                    _ => e.name.clone(),
                })
                .collect()
        };
        let driver_init = ferry_init(&driver);
        assert_eq!(
            describe(&driver_init),
            [
                "AWS_PROFILE=team",
                "FERRY_SPARK_HADOOP_FS_S3A_SECRET_KEY<-ferry-id-x:spark.hadoop.fs.s3a.secret.key",
                "AWS_ACCESS_KEY_ID<-aws:key",
                "AWS_REGION=eu-west-3",
                "AWS_SECRET_ACCESS_KEY<-ferry-id-x:spark.kubernetes.driverEnv.AWS_SECRET_ACCESS_KEY",
            ]
        );
        let mounts: Vec<&str> = driver_init
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.mount_path.as_str())
            .collect();
        assert!(
            mounts.contains(&"/creds") && !mounts.contains(&"/data"),
            "{mounts:?}"
        );
        let executor_init = ferry_init(&executor);
        assert_eq!(
            describe(&executor_init),
            [
                "FERRY_SPARK_HADOOP_FS_S3A_SECRET_KEY<-ferry-id-x:spark.hadoop.fs.s3a.secret.key",
                "AWS_ENDPOINT_URL=http://minio:9000",
            ]
        );
        assert!(
            executor_init
                .volume_mounts
                .iter()
                .flatten()
                .any(|m| m.mount_path == "/mnt/gcp" && m.name == "ferry-user-secret-gcp-key")
        );
        let yaml =
            serde_yaml::to_string(&driver).unwrap() + &serde_yaml::to_string(&executor).unwrap();
        for secret in ["env-secret", "conf-secret"] {
            assert!(!yaml.contains(secret), "{secret} written into a template");
        }
        assert!(is_secret_setting("spark.hadoop.fs.s3a.bucket.b.secret.key"));
        assert!(is_secret_setting(
            "spark.kubernetes.driverEnv.AWS_SECRET_ACCESS_KEY"
        ));
        assert!(!is_secret_setting("spark.hadoop.fs.s3a.endpoint"));
    }
}
