//! The lock file (`--lock ferry.lock`): what a resolution found, so the
//! next submission stages exactly those bytes without resolving.
//!
//! JSON, documented in the README ("The lock file"):
//!
//! ```json
//! {
//!   "version": 1,
//!   "request": {
//!     "packages": ["com.example:lib:1.0"],
//!     "excludes": [],
//!     "repositories": ["https://repo.example/m2/"]
//!   },
//!   "artifacts": [
//!     {
//!       "group": "com.example", "module": "lib", "version": "1.0",
//!       "artifact": "lib", "type": "jar", "ext": "jar", "classifier": null,
//!       "file": "com.example_lib-1.0.jar",
//!       "repository": "central",
//!       "url": "https://repo1.maven.org/maven2/com/example/lib/1.0/lib-1.0.jar",
//!       "size": 52311,
//!       "digest": "sha256:9f86d0..."
//!     }
//!   ]
//! }
//! ```
//!
//! The request part is compared with the next submission's: packages and
//! exclusions as sets, repositories in order (the chain searches them in
//! order). Credentials in repository URLs never reach the file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ferry_core::{Digest, EntryPath};
use serde::{Deserialize, Serialize};

use super::PackageRequest;
use super::ivy::Artifact;

/// The lock format this ferry writes and reads.
pub const LOCK_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("reading lock file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("lock file {} is not a ferry lock", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "lock file {} has version {found}; this ferry reads version {LOCK_VERSION} (resolve again without --locked to rewrite it)",
        path.display()
    )]
    Version { path: PathBuf, found: u32 },
    #[error("lock file {}: artifact file {file:?} is not a plain file name", path.display())]
    FileName { path: PathBuf, file: String },
    #[error("writing lock file {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The whole lock file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockFile {
    pub version: u32,
    pub request: LockedRequest,
    /// In Spark's class path order.
    pub artifacts: Vec<LockedArtifact>,
}

/// The part of a request that decides what resolves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedRequest {
    /// Sorted, each once.
    pub packages: Vec<String>,
    /// Sorted, each once.
    pub excludes: Vec<String>,
    /// In order, credentials removed.
    pub repositories: Vec<String>,
}

/// One resolved artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedArtifact {
    pub group: String,
    pub module: String,
    pub version: String,
    /// The artifact's own name (the module's, nearly always).
    pub artifact: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub ext: String,
    pub classifier: Option<String>,
    /// Its name on the class path and in the bundle.
    pub file: EntryPath,
    /// The Ivy resolver it came from (`central`, `repo-1`, ...).
    pub repository: String,
    /// Where it was downloaded from, credentials removed.
    pub url: String,
    pub size: u64,
    pub digest: Digest,
}

impl LockedRequest {
    pub fn of(request: &PackageRequest) -> Self {
        let sorted = |items: Vec<String>| -> Vec<String> {
            items
                .into_iter()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        };
        Self {
            packages: sorted(request.packages.iter().map(|p| p.to_string()).collect()),
            excludes: sorted(request.excludes.iter().map(|e| e.to_string()).collect()),
            repositories: request
                .repositories
                .iter()
                .map(|r| without_credentials(r))
                .collect(),
        }
    }

    /// What changed from the locked request to `request`, if anything.
    pub fn diff(&self, request: &PackageRequest) -> Option<String> {
        let now = Self::of(request);
        let mut changes = Vec::new();
        let set_change = |what: &str, old: &[String], new: &[String], changes: &mut Vec<String>| {
            let added: Vec<&str> = new
                .iter()
                .filter(|p| !old.contains(p))
                .map(String::as_str)
                .collect();
            let removed: Vec<&str> = old
                .iter()
                .filter(|p| !new.contains(p))
                .map(String::as_str)
                .collect();
            if !added.is_empty() {
                changes.push(format!("{what} added: {}", added.join(", ")));
            }
            if !removed.is_empty() {
                changes.push(format!("{what} removed: {}", removed.join(", ")));
            }
        };
        set_change("packages", &self.packages, &now.packages, &mut changes);
        set_change("exclusions", &self.excludes, &now.excludes, &mut changes);
        if self.repositories != now.repositories {
            changes.push(format!(
                "repositories were [{}], now [{}]",
                self.repositories.join(", "),
                now.repositories.join(", ")
            ));
        }
        (!changes.is_empty()).then(|| changes.join("; "))
    }
}

impl LockedArtifact {
    pub fn new(artifact: &Artifact, digest: Digest, size: u64) -> Self {
        Self {
            group: artifact.group.clone(),
            module: artifact.module.clone(),
            version: artifact.version.clone(),
            artifact: artifact.name.clone(),
            kind: artifact.kind.clone(),
            ext: artifact.ext.clone(),
            classifier: artifact.classifier.clone(),
            file: artifact.file_name.clone(),
            repository: artifact.repository.clone(),
            url: without_credentials(&artifact.url),
            size,
            digest,
        }
    }

    /// Whether Ivy's `found` is this artifact.
    pub fn is(&self, found: &Artifact) -> bool {
        self.group == found.group
            && self.module == found.module
            && self.version == found.version
            && self.artifact == found.name
            && self.ext == found.ext
            && self.classifier == found.classifier
    }

    /// `group:module:version`, with the classifier when there is one.
    pub fn coordinate_text(&self) -> String {
        let base = format!("{}:{}:{}", self.group, self.module, self.version);
        match &self.classifier {
            Some(classifier) => format!("{base} (classifier {classifier})"),
            None => base,
        }
    }
}

impl LockFile {
    pub fn new(request: &PackageRequest, artifacts: Vec<LockedArtifact>) -> Self {
        Self {
            version: LOCK_VERSION,
            request: LockedRequest::of(request),
            artifacts,
        }
    }

    /// The lock at `path`, or `None` when there is no file.
    pub fn read(path: &Path) -> Result<Option<Self>, LockError> {
        let text = match std::fs::read(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(LockError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        // The version first, so a future format is named as such rather
        // than as a parse error.
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let parse = |source| LockError::Parse {
            path: path.to_owned(),
            source,
        };
        let version: Version = serde_json::from_slice(&text).map_err(parse)?;
        if version.version != LOCK_VERSION {
            return Err(LockError::Version {
                path: path.to_owned(),
                found: version.version,
            });
        }
        let lock: Self = serde_json::from_slice(&text).map_err(parse)?;
        if let Some(bad) = lock
            .artifacts
            .iter()
            .find(|a| a.file.as_str().contains('/'))
        {
            return Err(LockError::FileName {
                path: path.to_owned(),
                file: bad.file.to_string(),
            });
        }
        Ok(Some(lock))
    }

    /// Writes the lock whole: to a temporary file beside it, then renamed.
    pub fn write(&self, path: &Path) -> Result<(), LockError> {
        let io = |source| LockError::Write {
            path: path.to_owned(),
            source,
        };
        let mut text = serde_json::to_string_pretty(self).map_err(|e| io(e.into()))?;
        text.push('\n');
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let temporary = path.with_file_name(format!(
            ".{}.{}.tmp",
            name.as_deref().unwrap_or("ferry.lock"),
            std::process::id()
        ));
        std::fs::write(&temporary, text)
            .and_then(|()| std::fs::rename(&temporary, path))
            .map_err(|error| {
                let _ = std::fs::remove_file(&temporary);
                io(error)
            })
    }
}

/// `url` without a `user:password@` part.
pub fn without_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(packages: &str, repositories: Option<&str>) -> PackageRequest {
        PackageRequest::parse(Some(packages), None, repositories, None, None).unwrap()
    }

    fn artifact() -> LockedArtifact {
        LockedArtifact {
            group: "com.example".into(),
            module: "natives".into(),
            version: "1.0".into(),
            artifact: "natives".into(),
            kind: "jar".into(),
            ext: "jar".into(),
            classifier: Some("linux".into()),
            file: EntryPath::parse("com.example_natives-1.0-linux.jar").unwrap(),
            repository: "central".into(),
            url: "https://h/m2/com/example/natives/1.0/natives-1.0-linux.jar".into(),
            size: 3,
            digest: Digest::of(b"abc"),
        }
    }

    #[test]
    fn a_lock_round_trips_and_matches_its_request_in_any_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.lock");
        assert_eq!(LockFile::read(&path).unwrap(), None);
        let asked = request("com.b:y:2,com.a:x:1", Some("https://u:secret@repo/m2"));
        let lock = LockFile::new(&asked, vec![artifact()]);
        lock.write(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("\"classifier\": \"linux\""), "{text}");
        let read = LockFile::read(&path).unwrap().unwrap();
        assert_eq!(read, lock);
        assert_eq!(read.request.packages, ["com.a:x:1", "com.b:y:2"]);
        assert_eq!(
            read.request.diff(&request(
                "com.a:x:1,com.b:y:2",
                Some("https://other:pw@repo/m2")
            )),
            None
        );
        let diff = read
            .request
            .diff(&request("com.a:x:1,com.c:z:3", Some("https://repo/m2")))
            .unwrap();
        assert_eq!(
            diff,
            "packages added: com.c:z:3; packages removed: com.b:y:2"
        );
        let diff = read.request.diff(&request("com.a:x:1,com.b:y:2", None));
        assert_eq!(
            diff.as_deref(),
            Some("repositories were [https://repo/m2], now []")
        );
    }

    #[test]
    fn a_foreign_or_unsafe_lock_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.lock");
        std::fs::write(&path, r#"{"version": 2, "whatever": true}"#).unwrap();
        assert!(matches!(
            LockFile::read(&path),
            Err(LockError::Version { found: 2, .. })
        ));
        std::fs::write(&path, "[]").unwrap();
        let error = LockFile::read(&path).unwrap_err().to_string();
        assert!(error.contains("ferry.lock is not a ferry lock"), "{error}");
        let mut lock = LockFile::new(&request("com.a:x:1", None), vec![artifact()]);
        lock.artifacts[0].file = EntryPath::parse("../x.jar")
            .or_else(|_| EntryPath::parse("jars/x.jar"))
            .unwrap();
        lock.write(&path).unwrap();
        assert!(matches!(
            LockFile::read(&path),
            Err(LockError::FileName { .. })
        ));
    }

    #[test]
    fn credentials_are_removed_from_urls() {
        assert_eq!(
            without_credentials("https://user:pw@repo.example/m2/a@b.jar"),
            "https://repo.example/m2/a@b.jar"
        );
        assert_eq!(without_credentials("file:/srv/m2"), "file:/srv/m2");
        assert_eq!(
            without_credentials("http://127.0.0.1:1/a"),
            "http://127.0.0.1:1/a"
        );
    }
}
