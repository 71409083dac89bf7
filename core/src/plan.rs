//! The fetch plan: what `ferry-init` fetches and where each item lands.
//!
//! This is the contract between the client and the init container, one
//! type on both sides. `ferry submit` builds a plan (the staged bundle with
//! its groups and their directories, then each remote URI with its
//! directory and file name) and writes it into the init container of the
//! pod templates as `ferry-init --plan-json '<plan>'`; `ferry-init` reads it
//! from there, from `FERRY_PLAN_JSON`, or from a file (`--plan FILE`).
//!
//! Schema, version 1 (the README's "fetch plan" section shows the same):
//!
//! ```json
//! {
//!   "version": 1,
//!   "items": [
//!     {"uri": "ferry://id-.../jars/app.jar", "dest": "/var/ferry/jars"},
//!     {"uri": "https://repo/x.jar#sha256=<hex>", "dest": "/var/ferry/jars", "name": "x.jar"},
//!     {"uri": "ferry://team-libs", "dest": "/var/ferry", "groups": {"jars": "/var/ferry/jars"}}
//!   ]
//! }
//! ```
//!
//! - `version`: `1`.
//! - `items[].uri`: any [`SourceUri`], optionally pinned with `#sha256=<hex>`.
//! - `items[].dest`: absolute directory the item lands in.
//! - `items[].name`: optional path under `dest` (default: the URI's last
//!   segment); ignored for whole bundles and bundle folders.
//! - `items[].groups`: optional, for whole bundles: top-level folder →
//!   absolute directory.
//! - `items[].store`: optional, for object-store URIs (`s3a://`, `gs://`,
//!   `abfss://`, ...): how to reach the store, as the submitter's Spark
//!   settings said. `options` maps an `object_store` configuration key
//!   (`aws_endpoint`, `aws_region`, `google_service_account_path`, ...) to
//!   its value and never holds a secret; `env` maps such a key to the name
//!   of the environment variable holding its value (set in the pod from a
//!   `secretKeyRef`), so no secret is ever written into the plan. Absent,
//!   the store is configured from its standard environment only.
//! - `items[].unpack`: optional, default `false`. `true` for Spark's
//!   `archives` group: the file is an archive, unpacked into the directory
//!   `dest/name` (its kind from the file name, as Spark chooses it: `.jar`,
//!   `.zip`, `.tar.gz`/`.tgz`, `.tar`; any other name is delivered as a
//!   file with a warning). Said explicitly so a `.zip` in `--files` is never
//!   unpacked by guess. An entry of a whole bundle that an unpack item names
//!   exactly is placed by that item only.
//!
//! How the schema evolves: unknown fields are refused, so a ferry-init that
//! predates a field refuses a plan using it instead of silently doing less
//! (say, leaving an archive packed). A new field is therefore optional, and
//! its absence means what version 1 does today, so every plan written now
//! stays valid; a change that is not additive raises `version`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{BundleRef, EntryPath, SourceUri};

/// The only plan version this build reads and writes.
pub const PLAN_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchPlan {
    pub version: u32,
    pub items: Vec<PlanItem>,
}

/// One URI and where it lands (the fields are described in the module doc).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanItem {
    pub uri: SourceUri,
    /// Absolute directory the item lands in.
    pub dest: String,
    /// Relative path under `dest`; default: the URI's last path segment. For
    /// a whole bundle or bundle folder, ignored: entries keep their paths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<EntryPath>,
    /// For a whole bundle: top-level folder → directory. An entry under a
    /// listed folder lands in that directory with the folder stripped; any
    /// other entry lands under `dest` with its full path.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<String, String>,
    /// Unpack the archive into the directory `dest/name` (Spark's
    /// `archives`); absent means a file, as in every plan before it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unpack: bool,
    /// How to reach the item's object store (see the module doc).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreSettings>,
}

/// Store configuration for one item: plain options, and the environment
/// variables that hold the secret ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// `object_store` configuration key → value; never a secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
    /// `object_store` configuration key → environment variable holding it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

impl StoreSettings {
    pub fn is_empty(&self) -> bool {
        self.options.is_empty() && self.env.is_empty()
    }
}

/// Whether `name` can be an environment variable set from a pod spec
/// (a C identifier: letters, digits, `_`, not starting with a digit).
pub fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("fetch plan is not valid JSON for schema version {PLAN_VERSION}: {0}")]
    Json(String),
    #[error("fetch plan has version {0}; this ferry-init reads version {PLAN_VERSION}")]
    Version(u32),
    #[error(
        "fetch plan item {index} ({uri}): store setting {key} names {var:?}, not an environment variable"
    )]
    StoreEnv {
        index: usize,
        uri: String,
        key: String,
        var: String,
    },
    #[error("fetch plan item {index} ({uri}): dest {dest:?} must be an absolute path")]
    RelativeDest {
        index: usize,
        uri: String,
        dest: String,
    },
}

impl PlanItem {
    /// A whole bundle: an entry under a top-level folder named in `groups`
    /// lands in that folder's directory with the folder stripped, any other
    /// under `dest` with its full path.
    pub fn bundle(bundle: &BundleRef, dest: String, groups: BTreeMap<String, String>) -> Self {
        Self {
            uri: SourceUri::bundle(bundle),
            dest,
            name: None,
            groups,
            store: None,
            unpack: false,
        }
    }

    /// One file, landing at `dest/name`.
    pub fn file(uri: SourceUri, dest: String, name: EntryPath) -> Self {
        Self {
            uri,
            dest,
            name: Some(name),
            groups: BTreeMap::new(),
            store: None,
            unpack: false,
        }
    }

    /// An archive unpacked into the directory `dest/name`.
    pub fn archive(uri: SourceUri, dest: String, name: EntryPath) -> Self {
        Self {
            unpack: true,
            ..Self::file(uri, dest, name)
        }
    }
}

impl FetchPlan {
    pub fn new(items: Vec<PlanItem>) -> Self {
        Self {
            version: PLAN_VERSION,
            items,
        }
    }

    /// Parses and checks a plan.
    pub fn from_json(text: &str) -> Result<Self, PlanError> {
        let plan: FetchPlan =
            serde_json::from_str(text).map_err(|e| PlanError::Json(e.to_string()))?;
        if plan.version != PLAN_VERSION {
            return Err(PlanError::Version(plan.version));
        }
        for (index, item) in plan.items.iter().enumerate() {
            let dirs = std::iter::once(&item.dest).chain(item.groups.values());
            for dest in dirs {
                if !dest.starts_with('/') || dest.contains('\0') {
                    return Err(PlanError::RelativeDest {
                        index,
                        uri: item.uri.to_string(),
                        dest: dest.clone(),
                    });
                }
            }
            let env = item.store.iter().flat_map(|s| &s.env);
            for (key, var) in env {
                if !is_env_name(var) {
                    return Err(PlanError::StoreEnv {
                        index,
                        uri: item.uri.to_string(),
                        key: key.clone(),
                        var: var.clone(),
                    });
                }
            }
        }
        Ok(plan)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_round_trips_and_checks_itself() {
        let plan = FetchPlan::new(vec![PlanItem {
            uri: SourceUri::parse("ferry://libs/jars/a.jar").unwrap(),
            dest: "/var/ferry/jars".into(),
            name: None,
            groups: BTreeMap::new(),
            store: None,
            unpack: false,
        }]);
        assert_eq!(FetchPlan::from_json(&plan.to_json()).unwrap(), plan);
        assert!(!plan.to_json().contains("unpack"), "absent when false");
        let relative = plan.to_json().replace("/var/ferry/jars", "jars");
        assert!(matches!(
            FetchPlan::from_json(&relative),
            Err(PlanError::RelativeDest { .. })
        ));
        let future = plan.to_json().replace("\"version\": 1", "\"version\": 2");
        assert_eq!(FetchPlan::from_json(&future), Err(PlanError::Version(2)));
        let evil = plan.to_json().replace("jars/a.jar", "../a.jar");
        assert!(matches!(
            FetchPlan::from_json(&evil),
            Err(PlanError::Json(_))
        ));
    }

    #[test]
    fn store_settings_are_optional_and_name_env_vars_not_values() {
        let without = r#"{"version":1,"items":[{"uri":"s3a://b/x.jar","dest":"/d"}]}"#;
        let plan = FetchPlan::from_json(without).unwrap();
        assert_eq!(plan.items[0].store, None);
        assert!(!plan.to_json().contains("store"), "absent stays absent");
        let mut with = plan.clone();
        with.items[0].store = Some(StoreSettings {
            options: BTreeMap::from([("aws_endpoint".into(), "http://minio:9000".into())]),
            env: BTreeMap::from([("aws_secret_access_key".into(), "FERRY_S3_0_SECRET".into())]),
        });
        assert_eq!(FetchPlan::from_json(&with.to_json()).unwrap(), with);
        let bad = with.to_json().replace("FERRY_S3_0_SECRET", "not a var");
        assert!(matches!(
            FetchPlan::from_json(&bad),
            Err(PlanError::StoreEnv { .. })
        ));
        let unknown = with.to_json().replace("\"options\"", "\"secrets\"");
        assert!(matches!(
            FetchPlan::from_json(&unknown),
            Err(PlanError::Json(_))
        ));
        assert!(is_env_name("_A1") && !is_env_name("1A") && !is_env_name(""));
    }

    #[test]
    fn the_unpack_flag_is_explicit_and_optional() {
        let archive = PlanItem::archive(
            SourceUri::parse("s3a://b/env.tar.gz").unwrap(),
            "/var/ferry/archives".into(),
            EntryPath::parse("environment").unwrap(),
        );
        let plan = FetchPlan::new(vec![archive]);
        let json = plan.to_json();
        assert!(json.contains("\"unpack\": true"), "{json}");
        assert_eq!(FetchPlan::from_json(&json).unwrap(), plan);
        // A plan written before the field reads as files.
        let old = json.replace(",\n      \"unpack\": true", "");
        assert!(
            !FetchPlan::from_json(&old).unwrap().items[0].unpack,
            "{old}"
        );
    }
}
