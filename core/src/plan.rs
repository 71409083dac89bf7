//! The fetch plan: what `ferry-init` fetches and where each item lands.
//!
//! `ferry submit` writes it (into the pod template, as JSON); `ferry-init
//! --plan FILE` reads it. Schema (version 1):
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

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{EntryPath, SourceUri};

/// The only plan version this build reads and writes.
pub const PLAN_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchPlan {
    pub version: u32,
    pub items: Vec<PlanItem>,
}

/// One URI and where it lands.
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
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("fetch plan is not valid JSON for schema version {PLAN_VERSION}: {0}")]
    Json(String),
    #[error("fetch plan has version {0}; this ferry-init reads version {PLAN_VERSION}")]
    Version(u32),
    #[error("fetch plan item {index} ({uri}): dest {dest:?} must be an absolute path")]
    RelativeDest {
        index: usize,
        uri: String,
        dest: String,
    },
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
        }]);
        assert_eq!(FetchPlan::from_json(&plan.to_json()).unwrap(), plan);
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
}
