//! Maven packages (`--packages`, `spark.jars.packages`) resolved once, on
//! the submitter's machine, into jars staged like any local jar: pods never
//! run Ivy.
//!
//! Resolution is Spark's own: the Ivy jar of the user's Spark distribution
//! (`$SPARK_HOME/jars/ivy-*.jar`), run with the `java` spark-submit uses,
//! with the resolver chain, default exclusions and `default(runtime)`
//! configuration Spark's `MavenUtils` builds ([`ivy`]). Matching Ivy's
//! rules (parent POMs, BOMs, scopes, exclusions, optional dependencies,
//! classifiers, version ranges) is the point, so nothing here reimplements
//! them.
//!
//! A lock file ([`lock`]) records every resolved artifact with its digest;
//! with the lock present and the request unchanged, [`resolve`] stages from
//! it without resolving: the jars come from ferry's content-addressed jar
//! cache ([`cache`]), and only a jar missing there is fetched again, pinned
//! and checked against the lock. Staging then uploads only what the server
//! lacks, as for any local jar.
//!
//! [`resolve`] is the one entry point front ends call: `ferry submit` with
//! the request read from spark-submit's command line
//! ([`crate::spark::packages`]), a SparkApplication front end with
//! `spec.deps.packages`.

pub mod cache;
pub mod ivy;
pub mod lock;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ferry_core::{Digest, EntryPath};

use cache::JarCache;
use ivy::{IvyEnvironment, IvyError};
use lock::{LockError, LockFile, LockedArtifact};

/// A Maven coordinate as Spark's `--packages` takes it:
/// `groupId:artifactId:version`, or `groupId/artifactId:version`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Coordinate {
    pub group: String,
    pub artifact: String,
    /// A version, or an Ivy range (`[1.0,2.0)`, `1.+`, `latest.release`).
    pub version: String,
}

/// `groupId:artifactId`, as `--exclude-packages` takes it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModuleId {
    pub group: String,
    pub artifact: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CoordinateError {
    #[error(
        "package {0:?} is not groupId:artifactId:version (Spark's --packages form; classifiers come from the POMs)"
    )]
    Package(String),
    #[error("excluded package {0:?} is not groupId:artifactId")]
    Exclude(String),
    #[error("repository {0:?} is not an http(s):// or file: URL")]
    Repository(String),
}

/// The parts of one list element, split on `:` after Spark's `/` → `:`,
/// each non-blank and free of characters no Maven name has.
fn parts(text: &str, count: usize) -> Option<Vec<String>> {
    let parts: Vec<String> = text
        .trim()
        .replace('/', ":")
        .split(':')
        .map(|p| p.trim().to_owned())
        .collect();
    let valid = parts.len() == count
        && parts.iter().all(|p| {
            !p.is_empty()
                && !p
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || "<>&\"'#".contains(c))
        });
    valid.then_some(parts)
}

impl FromStr for Coordinate {
    type Err = CoordinateError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let [group, artifact, version]: [String; 3] = parts(text, 3)
            .and_then(|p| p.try_into().ok())
            .ok_or_else(|| CoordinateError::Package(text.to_owned()))?;
        Ok(Self {
            group,
            artifact,
            version,
        })
    }
}

impl fmt::Display for Coordinate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.group, self.artifact, self.version)
    }
}

impl FromStr for ModuleId {
    type Err = CoordinateError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let [group, artifact]: [String; 2] = parts(text, 2)
            .and_then(|p| p.try_into().ok())
            .ok_or_else(|| CoordinateError::Exclude(text.to_owned()))?;
        Ok(Self { group, artifact })
    }
}

impl fmt::Display for ModuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.group, self.artifact)
    }
}

/// What the user asked for: Spark's package settings, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackageRequest {
    /// `--packages` / `spark.jars.packages`, in the order given.
    pub packages: Vec<Coordinate>,
    /// `--exclude-packages` / `spark.jars.excludes`.
    pub excludes: Vec<ModuleId>,
    /// `--repositories` / `spark.jars.repositories`, searched after Spark's
    /// default chain, in order.
    pub repositories: Vec<String>,
    /// `spark.jars.ivySettings`: an Ivy settings file replacing Spark's
    /// default chain (private repositories and their credentials).
    pub ivy_settings: Option<PathBuf>,
    /// `spark.jars.ivy`: Ivy's user directory (cache and local repository);
    /// default `~/.ivy2.5.2`, as Spark's.
    pub ivy_dir: Option<PathBuf>,
}

fn list(text: Option<&str>) -> impl Iterator<Item = &str> {
    text.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

impl PackageRequest {
    /// Parses Spark's settings, each `None` when unset.
    pub fn parse(
        packages: Option<&str>,
        excludes: Option<&str>,
        repositories: Option<&str>,
        ivy_settings: Option<&str>,
        ivy_dir: Option<&str>,
    ) -> Result<Self, CoordinateError> {
        let repositories = list(repositories)
            .map(|r| {
                let lower = r.to_ascii_lowercase();
                if ["http://", "https://", "file:"]
                    .iter()
                    .any(|s| lower.starts_with(s))
                {
                    Ok(r.to_owned())
                } else {
                    Err(CoordinateError::Repository(r.to_owned()))
                }
            })
            .collect::<Result<_, _>>()?;
        let path = |p: Option<&str>| {
            p.map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| PathBuf::from(p.strip_prefix("file://").unwrap_or(p)))
        };
        Ok(Self {
            packages: list(packages).map(str::parse).collect::<Result<_, _>>()?,
            excludes: list(excludes).map(str::parse).collect::<Result<_, _>>()?,
            repositories,
            ivy_settings: path(ivy_settings),
            ivy_dir: path(ivy_dir),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.packages.is_empty()
    }
}

/// One jar to put on the class paths, with its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedJar {
    /// Spark's name for it: `<group>_<artifact>-<version>[-<classifier>].jar`.
    pub name: EntryPath,
    pub digest: Digest,
    pub size: u64,
    /// Its bytes on this machine, in ferry's jar cache, under `name`.
    pub path: PathBuf,
}

/// How the jars were found, for the progress note.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provenance {
    /// Nothing was requested.
    Nothing,
    /// Ivy resolved the request (and the lock, if any, was written).
    Resolved,
    /// The lock matched the request; `fetched` jars were not in the jar
    /// cache and were fetched again, pinned.
    Locked { fetched: usize },
}

/// The jars of a request, in Spark's class path order.
#[derive(Debug, Clone)]
pub struct Resolution {
    pub jars: Vec<ResolvedJar>,
    pub provenance: Provenance,
}

/// How [`resolve`] works, beyond the request.
#[derive(Debug, Clone)]
pub struct ResolveOptions {
    /// `--lock FILE`: read when present, written after a resolution.
    pub lock: Option<PathBuf>,
    /// `--locked`: the lock must exist and match the request.
    pub locked: bool,
    /// ferry's content-addressed jar cache.
    pub cache: JarCache,
    /// Where Spark and Java are, and the environment Ivy runs in.
    pub environment: IvyEnvironment,
}

#[derive(Debug, thiserror::Error)]
pub enum PackagesError {
    #[error(transparent)]
    Ivy(#[from] IvyError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("--locked needs the lock file {}, which does not exist; run once without --locked to write it", .0.display())]
    NoLock(PathBuf),
    #[error("--locked needs --lock FILE")]
    LockedWithoutLock,
    #[error(
        "--locked: the requested packages no longer match {}: {diff}; run without --locked to resolve again and rewrite it",
        path.display()
    )]
    Mismatch { path: PathBuf, diff: String },
    #[error(transparent)]
    DigestMismatch(Box<DigestMismatch>),
    #[error("jar cache {}", path.display())]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A fetched jar whose bytes are not the locked ones.
#[derive(Debug, thiserror::Error)]
#[error(
    "{coordinate} ({file}) from {url} has {actual}, but {} locked {expected}: the repository changed a published artifact; if that is intended, delete the lock (or run without --locked) to resolve again",
    lock.display()
)]
pub struct DigestMismatch {
    pub coordinate: String,
    pub file: String,
    pub url: String,
    pub lock: PathBuf,
    pub expected: Digest,
    pub actual: Digest,
}

/// Resolves `request` into local jars: from the lock when it matches, else
/// with Spark's Ivy (writing the lock when one is named). Blocking: Ivy
/// runs as a child process and jars are hashed (call it from
/// `spawn_blocking` in async code).
///
/// This is the one entry point of every front end: `ferry submit` with
/// the request read from spark-submit's command line, a SparkApplication
/// front end with `spec.deps.packages`. A request without packages
/// resolves to nothing and leaves the lock alone.
pub fn resolve(
    request: &PackageRequest,
    options: &ResolveOptions,
) -> Result<Resolution, PackagesError> {
    if options.locked && options.lock.is_none() {
        return Err(PackagesError::LockedWithoutLock);
    }
    if request.is_empty() {
        return Ok(Resolution {
            jars: Vec::new(),
            provenance: Provenance::Nothing,
        });
    }
    if let Some(path) = &options.lock {
        match LockFile::read(path)? {
            Some(lock) => match lock.request.diff(request) {
                None => return from_lock(request, &lock, path, options),
                Some(diff) if options.locked => {
                    return Err(PackagesError::Mismatch {
                        path: path.clone(),
                        diff,
                    });
                }
                Some(diff) => {
                    tracing::info!(lock = %path.display(), %diff, "the request changed; resolving again");
                }
            },
            None if options.locked => return Err(PackagesError::NoLock(path.clone())),
            None => {}
        }
    }
    let mut jars = Vec::new();
    let mut locked = Vec::new();
    for artifact in ivy::resolve(&options.environment, request, None)? {
        let (digest, size, path) = options.cache.insert(&artifact.path, &artifact.file_name)?;
        locked.push(LockedArtifact::new(&artifact, digest, size));
        jars.push(ResolvedJar {
            name: artifact.file_name,
            digest,
            size,
            path,
        });
    }
    if let Some(path) = &options.lock {
        LockFile::new(request, locked).write(path)?;
    }
    Ok(Resolution {
        jars,
        provenance: Provenance::Resolved,
    })
}

/// Stages from a matching lock: each jar from the jar cache when it holds
/// the locked bytes; the others fetched again with Ivy, pinned to the
/// locked versions, and refused unless they have the locked digest.
fn from_lock(
    request: &PackageRequest,
    lock: &LockFile,
    lock_path: &Path,
    options: &ResolveOptions,
) -> Result<Resolution, PackagesError> {
    let mut paths: Vec<Option<PathBuf>> = Vec::with_capacity(lock.artifacts.len());
    for artifact in &lock.artifacts {
        paths.push(options.cache.get(&artifact.digest, &artifact.file)?);
    }
    let to_fetch: Vec<usize> = (0..paths.len()).filter(|&i| paths[i].is_none()).collect();
    if !to_fetch.is_empty() {
        let wanted: Vec<&LockedArtifact> = to_fetch.iter().map(|&i| &lock.artifacts[i]).collect();
        let fetched = ivy::resolve(&options.environment, request, Some(&wanted))?;
        for &index in &to_fetch {
            let artifact = &lock.artifacts[index];
            let found = fetched
                .iter()
                .find(|f| artifact.is(f))
                .ok_or_else(|| IvyError::NotRetrieved(artifact.coordinate_text()))?;
            let (digest, _, path) = options.cache.insert(&found.path, &artifact.file)?;
            if digest != artifact.digest {
                options.cache.remove(&digest, &artifact.file);
                return Err(PackagesError::DigestMismatch(Box::new(DigestMismatch {
                    coordinate: artifact.coordinate_text(),
                    file: artifact.file.to_string(),
                    url: found.url.clone(),
                    lock: lock_path.to_owned(),
                    expected: artifact.digest,
                    actual: digest,
                })));
            }
            paths[index] = Some(path);
        }
    }
    let jars = lock
        .artifacts
        .iter()
        .zip(paths)
        .filter_map(|(artifact, path)| {
            Some(ResolvedJar {
                name: artifact.file.clone(),
                digest: artifact.digest,
                size: artifact.size,
                path: path?,
            })
        })
        .collect();
    Ok(Resolution {
        jars,
        provenance: Provenance::Locked {
            fetched: to_fetch.len(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinates_are_parsed_as_spark_parses_them() {
        let c: Coordinate = "com.example:lib:1.0".parse().unwrap();
        assert_eq!(
            (c.group.as_str(), c.artifact.as_str(), c.version.as_str()),
            ("com.example", "lib", "1.0")
        );
        assert_eq!(
            "com.example/lib:[1.0,2.0)".parse::<Coordinate>().unwrap(),
            Coordinate {
                group: "com.example".into(),
                artifact: "lib".into(),
                version: "[1.0,2.0)".into()
            }
        );
        for bad in [
            "com.example:lib",
            "com.example:lib:1.0:linux",
            ":lib:1.0",
            "a:b: ",
            "a:b<c:1",
        ] {
            assert_eq!(
                bad.parse::<Coordinate>(),
                Err(CoordinateError::Package(bad.into())),
                "{bad}"
            );
        }
        assert_eq!(
            "org.x:y".parse::<ModuleId>().unwrap().to_string(),
            "org.x:y"
        );
        assert!("org.x:y:1".parse::<ModuleId>().is_err());
    }

    #[test]
    fn a_request_reads_spark_lists() {
        let request = PackageRequest::parse(
            Some(" com.a:x:1 ,, com.b:y:2"),
            Some("com.c:z"),
            Some("https://repo.example/m2,file:/srv/m2"),
            Some("file:///etc/ivy.xml"),
            None,
        )
        .unwrap();
        assert_eq!(request.packages.len(), 2);
        assert_eq!(request.packages[1].to_string(), "com.b:y:2");
        assert_eq!(request.excludes[0].to_string(), "com.c:z");
        assert_eq!(
            request.repositories,
            ["https://repo.example/m2", "file:/srv/m2"]
        );
        assert_eq!(request.ivy_settings, Some(PathBuf::from("/etc/ivy.xml")));
        assert!(
            PackageRequest::parse(None, None, None, None, None)
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            PackageRequest::parse(None, None, Some("repo.example/m2"), None, None),
            Err(CoordinateError::Repository("repo.example/m2".into()))
        );
    }
}
