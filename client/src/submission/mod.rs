//! A submission, whatever its front end: which local files become which
//! bundle entries, which remote URIs ferry-init fetches where, what each
//! dependency is rewritten to, the namespace, the bundle's labels and the
//! pods that own it.
//!
//! A front end lists its dependencies as [`Dependency`] values and gives a
//! namespace and an application name; everything else is decided here.
//! `ferry submit` reads them from a spark-submit command line
//! ([`crate::spark::submission`]); a SparkApplication front end reads them
//! from its object. Both go through [`Deliveries::plan`] and
//! [`Submission::new`], so they cannot place, rewrite or own a dependency
//! differently. Nothing here does I/O beyond a `stat` of each local file;
//! [`render`] turns a submission and its staged bundle into Kubernetes
//! objects.

pub mod deliveries;
pub mod dependency;
pub mod render;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use ferry_core::api::Owner;
use ferry_core::{PathError, Selector, SelectorError, Ttl, UriError};

pub use deliveries::{Deliveries, Fetch};
pub use dependency::{Dependency, Kind, Origin};

use crate::staging::StageRequest;

/// Label put on driver and executor pods; the bundle lives while a pod has it.
pub const SUBMISSION_LABEL: &str = "ferry.dev/submission";
/// Bundle label carrying the application's name, for `ferry bundles ls`.
pub const APP_NAME_LABEL: &str = "spark-app-name";
/// Folder under the deps dir for bundle entries outside every group (a
/// submission makes none; ferry-init needs somewhere to put them).
const OTHER_GROUP: &str = "other";

/// Why a submission cannot be planned.
#[derive(Debug, thiserror::Error)]
pub enum SubmissionError {
    #[error("{group} dependency {}", path.display())]
    Stat {
        group: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{} is not a regular file; Spark takes files (zip a folder, or stage it with `ferry stage`)",
        .0.display()
    )]
    NotAFile(PathBuf),
    #[error("{0} has no UTF-8 file name")]
    NoFileName(String),
    #[error("{location} cannot be delivered")]
    EntryPath {
        location: String,
        #[source]
        source: PathError,
    },
    #[error("{location} cannot be fetched by ferry-init")]
    Uri {
        location: String,
        #[source]
        source: UriError,
    },
    #[error(
        "{0} names a whole bundle or a bundle folder, but a Spark dependency is one file: name one entry, e.g. ferry://<bundle>/jars/x.jar"
    )]
    ManyFiles(String),
    #[error("{previous} and {location} would both land at {target}; rename one")]
    Collision {
        previous: String,
        location: String,
        target: String,
    },
    #[error("no local or remote dependencies to hand to the pods; run spark-submit directly")]
    Nothing,
    #[error(
        "only remote dependencies: ferry submit needs at least one local file to stage (the bundle carries the pods' token)"
    )]
    OnlyRemote,
    #[error("owner selector")]
    Selector(#[from] SelectorError),
}

/// A short random id for one submission, `s-<12 hex>`: a valid label value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmissionId(String);

impl SubmissionId {
    pub fn generate() -> Self {
        let seed = format!(
            "{:?}-{}-{:?}",
            std::time::SystemTime::now(),
            std::process::id(),
            std::thread::current().id()
        );
        Self(format!(
            "s-{}",
            &ferry_core::Digest::of(seed.as_bytes()).hex()[..12]
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SubmissionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The folder inside the pods where dependencies land (the shared volume's
/// mount path): absolute, not `/`, no trailing `/`, and no character a
/// Spark URI list cannot carry even escaped (`,`, `#`, `?`, `%`, controls).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepsDir(String);

impl DepsDir {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Where the files of one kind land: `<deps dir>/<group>`.
    pub fn group_dir(&self, kind: Kind) -> String {
        format!("{}/{}", self.0, kind.group())
    }

    /// Where bundle entries outside every group would land.
    pub fn other_dir(&self) -> String {
        format!("{}/{OTHER_GROUP}", self.0)
    }
}

impl FromStr for DepsDir {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim_end_matches('/');
        if !text.starts_with('/') || trimmed.is_empty() {
            return Err(format!("{text:?} is not an absolute folder other than /"));
        }
        if trimmed
            .chars()
            .any(|c| c.is_control() || matches!(c, ',' | '#' | '?' | '%'))
        {
            return Err(format!(
                "{text:?} has a character Spark URI lists cannot carry"
            ));
        }
        Ok(Self(trimmed.to_owned()))
    }
}

impl fmt::Display for DepsDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Everything decided about a submission before anything is staged.
#[derive(Debug, Clone)]
pub struct Submission {
    pub id: SubmissionId,
    pub namespace: String,
    pub app_name: Option<String>,
    pub deliveries: Deliveries,
    /// The pods that own the bundle: those labelled with this submission.
    pub owner_selector: Selector,
}

impl Submission {
    /// Checks that there is something to stage: ferry's pods read their
    /// token from the bundle, so a submission without a local file has no
    /// way to hand the pods one.
    pub fn new(
        id: SubmissionId,
        namespace: String,
        app_name: Option<String>,
        deliveries: Deliveries,
    ) -> Result<Self, SubmissionError> {
        if deliveries.staged().is_empty() {
            return Err(if deliveries.fetched().is_empty() {
                SubmissionError::Nothing
            } else {
                SubmissionError::OnlyRemote
            });
        }
        Self::without_token_check(id, namespace, app_name, deliveries)
    }

    /// As [`Submission::new`], for a front end that can hand the pods a
    /// submission with nothing staged (`ferry apply`: the init container
    /// then fetches the remote URIs without a bundle or a token).
    pub fn without_token_check(
        id: SubmissionId,
        namespace: String,
        app_name: Option<String>,
        deliveries: Deliveries,
    ) -> Result<Self, SubmissionError> {
        let owner_selector = Selector::single(SUBMISSION_LABEL, id.as_str())?;
        Ok(Self {
            id,
            namespace,
            app_name,
            deliveries,
            owner_selector,
        })
    }

    /// The labels every pod of the submission must carry to own the bundle.
    pub fn pod_labels(&self) -> &BTreeMap<String, String> {
        self.owner_selector.terms()
    }

    /// Who owns the bundle, as the server is told.
    pub fn owner(&self) -> Owner {
        Owner {
            namespace: self.namespace.clone(),
            selector: self.owner_selector.to_string(),
        }
    }

    /// The bundle's labels: the submission, and the application's name.
    pub fn bundle_labels(&self) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::from([(SUBMISSION_LABEL.to_owned(), self.id.to_string())]);
        if let Some(app) = &self.app_name {
            labels.insert(APP_NAME_LABEL.to_owned(), app.clone());
        }
        labels
    }

    /// What to stage: the local files as one unnamed bundle owned by the
    /// submission's pods.
    pub fn stage_request(&self, ttl: Option<Ttl>, quiet: bool) -> StageRequest {
        StageRequest {
            files: self.deliveries.staged().to_vec(),
            name: None,
            ttl,
            labels: self.bundle_labels(),
            owner: Some(self.owner()),
            quiet,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deliveries(deps: &[Dependency]) -> Deliveries {
        Deliveries::plan(deps, &crate::k8s::DEPS_DIR.parse().unwrap()).unwrap()
    }

    #[test]
    fn deps_dirs_are_absolute_and_carried_by_spark_lists() {
        assert_eq!(
            "/var/ferry/".parse::<DepsDir>().unwrap().as_str(),
            "/var/ferry"
        );
        assert_eq!(
            "/pod dir".parse::<DepsDir>().unwrap().group_dir(Kind::Jar),
            "/pod dir/jars"
        );
        for bad in ["var/ferry", "/", "//", "/a,b", "/a#b", "/a%20", "/a\nb"] {
            assert!(bad.parse::<DepsDir>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_owner_is_the_submissions_pods_and_the_bundle_is_labelled_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let jar = dir.path().join("a.jar");
        std::fs::write(&jar, "jar").unwrap();
        let id = SubmissionId::generate();
        let submission = Submission::new(
            id.clone(),
            "spark-jobs".into(),
            Some("etl".into()),
            deliveries(&[Dependency::parse(Kind::Jar, &jar.display().to_string())]),
        )
        .unwrap();
        let owner = submission.owner();
        assert_eq!(owner.namespace, "spark-jobs");
        assert_eq!(owner.selector, format!("ferry.dev/submission={id}"));
        // What the server is told matches the labels the pods are given.
        let selector = Selector::parse(&owner.selector).unwrap();
        assert!(selector.matches(submission.pod_labels()));
        let request = submission.stage_request(None, true);
        assert_eq!(request.labels["ferry.dev/submission"], id.as_str());
        assert_eq!(request.labels["spark-app-name"], "etl");
        assert_eq!(request.files.len(), 1);
        assert_eq!(request.owner, Some(owner));
    }

    #[test]
    fn a_submission_needs_a_local_file_to_carry_the_token() {
        let submit = |deps: &[Dependency]| {
            Submission::new(
                SubmissionId::generate(),
                "ns".into(),
                None,
                deliveries(deps),
            )
        };
        assert!(matches!(
            submit(&[Dependency::parse(Kind::Jar, "local:///opt/x.jar")]),
            Err(SubmissionError::Nothing)
        ));
        let only_remote = submit(&[Dependency::parse(Kind::Jar, "s3a://b/x.jar")]).unwrap_err();
        assert!(matches!(only_remote, SubmissionError::OnlyRemote));
        assert!(
            SubmissionError::Nothing
                .to_string()
                .contains("run spark-submit directly")
        );
    }
}
