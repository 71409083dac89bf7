//! Where every dependency of a submission goes: local files become bundle
//! entries `<group>/<name>`, remote URIs become fetch-plan items landing in
//! `<deps dir>/<group>/<name>`, and each is rewritten to that `local://`
//! path. Two dependencies that would land on one path are refused.
//!
//! Archives (`--archives`, `spark.archives`) are the exception: ferry-init
//! unpacks each into `<deps dir>/archives/<alias>` (the `#alias`, else the
//! file name, as Spark names the directory), the pods mount that directory
//! at `<working dir>/<alias>`, and the archive is taken out of what Spark
//! sees (Spark would fetch it again and wipe the directory). See
//! [`UnpackedArchive`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use ferry_core::plan::{FetchPlan, PlanItem};
use ferry_core::{BundleRef, EntryPath, SourceUri};

use super::{Dependency, DepsDir, Kind, Origin, SubmissionError};
use crate::files::LocalFile;

/// A remote URI ferry-init fetches, and the file it becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    pub uri: SourceUri,
    /// Its group: it lands in `<deps dir>/<group>/`.
    pub kind: Kind,
    pub name: EntryPath,
}

/// What becomes of each dependency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deliveries {
    deps_dir: DepsDir,
    staged: Vec<LocalFile>,
    fetched: Vec<Fetch>,
    /// Dependency as written (kind, location without alias) → its
    /// `local://` replacement.
    rewrites: BTreeMap<(Kind, String), String>,
    /// Archives ferry delivers unpacked (and takes out of Spark's lists).
    archives: Vec<UnpackedArchive>,
}

/// An archive delivered as a directory, `<deps dir>/archives/<alias>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackedArchive {
    /// The archive's bytes: a bundle entry (`archives/<file name>`) or a
    /// remote URI.
    pub source: ArchiveSource,
    /// The directory's name: the `#alias`, else the file name (Spark's rule).
    pub alias: EntryPath,
    /// Whether its name is a kind Spark unpacks; otherwise it is delivered
    /// as a file under the alias, as Spark does (with a warning).
    pub unpack: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveSource {
    Staged(EntryPath),
    Remote(SourceUri),
}

/// What an archive dependency is replaced with in Spark's lists: nothing
/// (see [`crate::spark::rewrite`]).
pub const REMOVED: &str = "";

impl Deliveries {
    /// Decides where every dependency goes under `deps_dir` in the pods;
    /// stats each local file (it must be a regular file) and nothing else.
    /// A dependency listed twice is delivered once.
    pub fn plan(deps: &[Dependency], deps_dir: &DepsDir) -> Result<Self, SubmissionError> {
        let mut deliveries = Self {
            deps_dir: deps_dir.clone(),
            staged: Vec::new(),
            fetched: Vec::new(),
            rewrites: BTreeMap::new(),
            archives: Vec::new(),
        };
        // Entry path under the deps dir → the dependency that lands there.
        let mut landing: BTreeMap<EntryPath, String> = BTreeMap::new();
        for dep in deps {
            let key = (dep.kind, dep.location.clone());
            if deliveries.rewrites.contains_key(&key) {
                continue;
            }
            let origin = dep.origin().map_err(|source| SubmissionError::Uri {
                location: dep.location.clone(),
                source,
            })?;
            let (name, source) = match origin {
                Origin::Untouched => continue,
                Origin::Local(path) => {
                    let (name, executable) = local_file(dep, &path)?;
                    (name, Source::Local { path, executable })
                }
                Origin::Remote(uri) => (remote_name(dep, &uri)?, Source::Remote(uri)),
            };
            let landing_name = match dep.kind {
                Kind::Archive => archive_alias(dep, &name)?,
                _ => name.clone(),
            };
            let target = EntryPath::parse(dep.kind.group())
                .and_then(|group| group.join(&landing_name))
                .map_err(|source| SubmissionError::EntryPath {
                    location: dep.location.clone(),
                    source,
                })?;
            if let Some(previous) = landing.insert(target.clone(), dep.location.clone()) {
                return Err(SubmissionError::Collision {
                    previous,
                    location: dep.location.clone(),
                    target: format!("{}/{target}", deps_dir.as_str()),
                });
            }
            if dep.kind == Kind::Archive {
                deliveries.add_archive(source, name, landing_name);
                deliveries.rewrites.insert(key, REMOVED.to_owned());
                continue;
            }
            match source {
                Source::Local { path, executable } => deliveries.staged.push(LocalFile {
                    source: path,
                    path: target.clone(),
                    executable,
                }),
                Source::Remote(uri) => deliveries.fetched.push(Fetch {
                    uri,
                    kind: dep.kind,
                    name,
                }),
            }
            deliveries.rewrites.insert(
                key,
                ferry_core::uri::local_uri(&format!("{}/{target}", deps_dir.as_str())),
            );
        }
        Ok(deliveries)
    }

    /// An archive: staged as `archives/<file name>` or fetched, and
    /// unpacked into `archives/<alias>`.
    fn add_archive(&mut self, source: Source, name: EntryPath, alias: EntryPath) {
        let group = Kind::Archive.group();
        let unpack = ferry_core::archive::ArchiveKind::from_name(name.as_str()).is_some();
        let source = match source {
            Source::Local { path, executable } => {
                let entry = EntryPath::parse(group)
                    .and_then(|g| g.join(&name))
                    .unwrap_or_else(|_| name.clone());
                self.staged.push(LocalFile {
                    source: path,
                    path: entry.clone(),
                    executable,
                });
                ArchiveSource::Staged(entry)
            }
            Source::Remote(uri) => {
                self.fetched.push(Fetch {
                    uri: uri.clone(),
                    kind: Kind::Archive,
                    name: alias.clone(),
                });
                ArchiveSource::Remote(uri)
            }
        };
        self.archives.push(UnpackedArchive {
            source,
            alias,
            unpack,
        });
    }

    /// The archives delivered as directories.
    pub fn archives(&self) -> &[UnpackedArchive] {
        &self.archives
    }

    /// The local files, as bundle entries.
    pub fn staged(&self) -> &[LocalFile] {
        &self.staged
    }

    /// The remote URIs ferry-init fetches.
    pub fn fetched(&self) -> &[Fetch] {
        &self.fetched
    }

    pub fn deps_dir(&self) -> &DepsDir {
        &self.deps_dir
    }

    /// What `dep` is rewritten to, if ferry delivers it.
    pub fn rewrite(&self, dep: &Dependency) -> Option<&str> {
        self.rewrites
            .get(&(dep.kind, dep.location.clone()))
            .map(String::as_str)
    }

    /// What ferry-init fetches once `bundle` holds the staged files: the
    /// bundle, each group into its directory, then every remote URI.
    pub fn fetch_plan(&self, bundle: &BundleRef) -> FetchPlan {
        let groups = Kind::ALL
            .iter()
            .map(|kind| (kind.group().to_owned(), self.deps_dir.group_dir(*kind)))
            .collect();
        let mut items = vec![PlanItem::bundle(bundle, self.deps_dir.other_dir(), groups)];
        items.extend(self.remote_items());
        items.extend(self.archive_items(Some(bundle)));
        FetchPlan::new(items)
    }

    /// What ferry-init fetches when nothing was staged (a front end that
    /// allows that, e.g. `ferry apply`): every remote URI, no bundle.
    pub fn remote_fetch_plan(&self) -> FetchPlan {
        FetchPlan::new(
            self.remote_items()
                .chain(self.archive_items(None))
                .collect(),
        )
    }

    fn remote_items(&self) -> impl Iterator<Item = PlanItem> + '_ {
        self.fetched
            .iter()
            .filter(|fetch| fetch.kind != Kind::Archive)
            .map(|fetch| {
                PlanItem::file(
                    fetch.uri.clone(),
                    self.deps_dir.group_dir(fetch.kind),
                    fetch.name.clone(),
                )
            })
    }

    /// The archives, unpacked into `archives/<alias>`; staged ones only
    /// when there is a bundle.
    fn archive_items<'a>(
        &'a self,
        bundle: Option<&'a BundleRef>,
    ) -> impl Iterator<Item = PlanItem> + 'a {
        self.archives.iter().filter_map(move |archive| {
            let uri = match (&archive.source, bundle) {
                (ArchiveSource::Staged(entry), Some(bundle)) => {
                    SourceUri::bundle_entry(bundle, entry)
                }
                (ArchiveSource::Staged(_), None) => return None,
                (ArchiveSource::Remote(uri), _) => uri.clone(),
            };
            let dest = self.deps_dir.group_dir(Kind::Archive);
            Some(if archive.unpack {
                PlanItem::archive(uri, dest, archive.alias.clone())
            } else {
                PlanItem::file(uri, dest, archive.alias.clone())
            })
        })
    }
}

/// Where the bytes of one delivered dependency come from.
enum Source {
    Local { path: PathBuf, executable: bool },
    Remote(SourceUri),
}

/// A local dependency's file name, and whether it is executable (kept as
/// mode 0755 in the bundle), from one stat.
fn local_file(
    dep: &Dependency,
    path: &std::path::Path,
) -> Result<(EntryPath, bool), SubmissionError> {
    let meta = std::fs::metadata(path).map_err(|source| SubmissionError::Stat {
        group: dep.kind.group(),
        path: path.to_owned(),
        source,
    })?;
    if !meta.is_file() {
        return Err(SubmissionError::NotAFile(path.to_owned()));
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| SubmissionError::NoFileName(dep.location.clone()))?;
    let name = EntryPath::parse(name).map_err(|source| SubmissionError::EntryPath {
        location: dep.location.clone(),
        source,
    })?;
    use std::os::unix::fs::PermissionsExt as _;
    Ok((name, meta.permissions().mode() & 0o111 != 0))
}

/// The directory an archive is unpacked into: its `#alias`, else its file
/// name, one path segment.
fn archive_alias(dep: &Dependency, name: &EntryPath) -> Result<EntryPath, SubmissionError> {
    let Some(alias) = &dep.alias else {
        return Ok(name.clone());
    };
    EntryPath::parse(alias)
        .and_then(|alias| match alias.segments().count() {
            1 => Ok(alias),
            _ => Err(ferry_core::PathError::DotSegment),
        })
        .map_err(|source| SubmissionError::EntryPath {
            location: format!("{}#{alias}", dep.location),
            source,
        })
}

/// The file name a remote dependency lands under: its URI's last segment,
/// as ferry-init would choose it. A whole bundle or bundle folder is many
/// files, which one Spark list element cannot name.
fn remote_name(dep: &Dependency, uri: &SourceUri) -> Result<EntryPath, SubmissionError> {
    if uri.is_many() {
        return Err(SubmissionError::ManyFiles(dep.location.clone()));
    }
    uri.file_name().map_err(|source| SubmissionError::Uri {
        location: dep.location.clone(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deps_dir() -> DepsDir {
        crate::k8s::DEPS_DIR.parse().unwrap()
    }

    fn dep(kind: Kind, text: &str) -> Dependency {
        Dependency::parse(kind, text)
    }

    #[test]
    fn local_files_are_staged_by_group_and_remote_ones_fetched_into_theirs() {
        let dir = tempfile::tempdir().unwrap();
        let jar = dir.path().join("a b.jar");
        std::fs::write(&jar, "jar").unwrap();
        let script = dir.path().join("run,v2.py");
        std::fs::write(&script, "py").unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let deps = [
            dep(Kind::Jar, &jar.display().to_string()),
            dep(Kind::Jar, &jar.display().to_string()),
            dep(Kind::Jar, "s3a://bucket/lib/x.jar"),
            dep(Kind::PyFile, "https://h/dl/helpers%20v1.py?raw=1"),
            dep(Kind::File, "local:///opt/in-image.conf"),
            dep(Kind::Primary, &script.display().to_string()),
        ];
        let deliveries = Deliveries::plan(&deps, &deps_dir()).unwrap();
        let staged: Vec<(&str, bool)> = deliveries
            .staged()
            .iter()
            .map(|f| (f.path.as_str(), f.executable))
            .collect();
        assert_eq!(staged, [("jars/a b.jar", false), ("app/run,v2.py", true)]);
        let fetched: Vec<(String, Kind, &str)> = deliveries
            .fetched()
            .iter()
            .map(|f| (f.uri.to_string(), f.kind, f.name.as_str()))
            .collect();
        assert_eq!(
            fetched,
            [
                ("s3a://bucket/lib/x.jar".to_owned(), Kind::Jar, "x.jar"),
                (
                    "https://h/dl/helpers%20v1.py?raw=1".to_owned(),
                    Kind::PyFile,
                    "helpers v1.py"
                ),
            ]
        );
        let rewrite = |d: &Dependency| deliveries.rewrite(d).map(str::to_owned);
        assert_eq!(
            rewrite(&deps[0]).as_deref(),
            Some("local:///var/ferry/jars/a%20b.jar")
        );
        assert_eq!(
            rewrite(&deps[2]).as_deref(),
            Some("local:///var/ferry/jars/x.jar")
        );
        assert_eq!(
            rewrite(&deps[3]).as_deref(),
            Some("local:///var/ferry/pyfiles/helpers%20v1.py")
        );
        assert_eq!(rewrite(&deps[4]), None, "local:// is Spark's");
        assert_eq!(
            rewrite(&deps[5]).as_deref(),
            Some("local:///var/ferry/app/run%2Cv2.py")
        );
    }

    #[test]
    fn the_fetch_plan_has_the_bundle_by_group_then_each_remote_uri() {
        let deps = [
            dep(Kind::Jar, "s3a://bucket/x.jar"),
            dep(Kind::File, "gs://b/conf/app.yaml"),
        ];
        let deliveries = Deliveries::plan(&deps, &"/pod dir".parse().unwrap()).unwrap();
        let bundle = BundleRef::parse("id-0000000000000000000000000a").unwrap();
        let plan = deliveries.fetch_plan(&bundle);
        assert_eq!(plan.items.len(), 3);
        assert_eq!(plan.items[0].uri, SourceUri::bundle(&bundle));
        assert_eq!(plan.items[0].dest, "/pod dir/other");
        assert_eq!(
            plan.items[0].groups,
            BTreeMap::from(
                ["app", "archives", "files", "jars", "pyfiles"]
                    .map(|g| (g.to_owned(), format!("/pod dir/{g}")))
            )
        );
        let remote: Vec<(String, &str, Option<&str>)> = plan.items[1..]
            .iter()
            .map(|i| {
                (
                    i.uri.to_string(),
                    i.dest.as_str(),
                    i.name.as_ref().map(EntryPath::as_str),
                )
            })
            .collect();
        assert_eq!(
            remote,
            [
                (
                    "s3a://bucket/x.jar".to_owned(),
                    "/pod dir/jars",
                    Some("x.jar")
                ),
                (
                    "gs://b/conf/app.yaml".to_owned(),
                    "/pod dir/files",
                    Some("app.yaml")
                ),
            ]
        );
        // What ferry-init reads is what was written.
        assert_eq!(FetchPlan::from_json(&plan.to_json()).unwrap(), plan);
    }

    #[test]
    fn two_dependencies_landing_in_one_place_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["x", "y"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
            std::fs::write(dir.path().join(d).join("a.jar"), d).unwrap();
        }
        let local = [
            dep(Kind::Jar, &dir.path().join("x/a.jar").display().to_string()),
            dep(Kind::Jar, &dir.path().join("y/a.jar").display().to_string()),
        ];
        let err = Deliveries::plan(&local, &deps_dir())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("would both land at /var/ferry/jars/a.jar"),
            "{err}"
        );
        let mixed = [local[0].clone(), dep(Kind::Jar, "https://h/a.jar")];
        assert!(matches!(
            Deliveries::plan(&mixed, &deps_dir()),
            Err(SubmissionError::Collision { .. })
        ));
        let other_groups = [local[0].clone(), dep(Kind::File, "https://h/a.jar")];
        assert!(Deliveries::plan(&other_groups, &deps_dir()).is_ok());
    }

    #[test]
    fn what_cannot_be_delivered_is_refused_before_anything_is_staged() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().display().to_string();
        let refused =
            |text: &str| Deliveries::plan(&[dep(Kind::Jar, text)], &deps_dir()).unwrap_err();
        assert!(matches!(refused(&folder), SubmissionError::NotAFile(_)));
        assert!(matches!(
            refused("/no/such/dep.jar"),
            SubmissionError::Stat { .. }
        ));
        assert!(matches!(
            refused("ferry://team-libs"),
            SubmissionError::ManyFiles(_)
        ));
        assert!(matches!(
            refused("ferry://team-libs/jars/"),
            SubmissionError::ManyFiles(_)
        ));
        assert!(matches!(
            refused("s3a://bucket/"),
            SubmissionError::Uri { .. }
        ));
        assert!(matches!(refused("https://h/"), SubmissionError::Uri { .. }));
        let message = refused("s3a://bucket/").to_string();
        assert!(message.starts_with("s3a://bucket/"), "{message}");
    }

    #[test]
    fn archives_are_unpacked_under_their_alias_and_taken_out_of_sparks_lists() {
        let dir = tempfile::tempdir().unwrap();
        let venv = dir.path().join("pyspark venv.tar.gz");
        std::fs::write(&venv, "tgz").unwrap();
        let deps = [
            dep(Kind::Archive, &format!("{}#environment", venv.display())),
            dep(Kind::Archive, "s3a://b/envs/other.zip"),
            dep(Kind::Archive, "https://h/data.rar#data"),
            dep(Kind::PyFile, "https://h/helpers.zip"),
        ];
        let deliveries = Deliveries::plan(&deps, &deps_dir()).unwrap();
        let staged: Vec<&str> = deliveries
            .staged()
            .iter()
            .map(|f| f.path.as_str())
            .collect();
        assert_eq!(staged, ["archives/pyspark venv.tar.gz"]);
        for archive in &deps[..3] {
            assert_eq!(deliveries.rewrite(archive), Some(REMOVED), "{archive:?}");
        }
        assert_eq!(
            deliveries.rewrite(&deps[3]),
            Some("local:///var/ferry/pyfiles/helpers.zip"),
            "--py-files are delivered as files, as before"
        );
        let bundle = BundleRef::parse("id-0000000000000000000000000a").unwrap();
        let plan = deliveries.fetch_plan(&bundle);
        let items: Vec<(String, &str, &str, bool)> = plan.items[1..]
            .iter()
            .map(|i| {
                (
                    i.uri.to_string(),
                    i.dest.as_str(),
                    i.name.as_ref().unwrap().as_str(),
                    i.unpack,
                )
            })
            .collect();
        assert_eq!(
            items,
            [
                (
                    "https://h/helpers.zip".to_owned(),
                    "/var/ferry/pyfiles",
                    "helpers.zip",
                    false
                ),
                (
                    format!("ferry://{bundle}/archives/pyspark%20venv.tar.gz"),
                    "/var/ferry/archives",
                    "environment",
                    true
                ),
                (
                    "s3a://b/envs/other.zip".to_owned(),
                    "/var/ferry/archives",
                    "other.zip",
                    true
                ),
                (
                    "https://h/data.rar".to_owned(),
                    "/var/ferry/archives",
                    "data",
                    false
                ),
            ]
        );
        // The staged archive's URI reads back as the bundle entry.
        let reread = FetchPlan::from_json(&plan.to_json()).unwrap();
        assert_eq!(reread, plan);
        // Two archives unpacked into one directory are refused.
        let clash = [
            dep(Kind::Archive, "s3a://b/a.zip#env"),
            dep(Kind::Archive, "s3a://b/b.zip#env"),
        ];
        assert!(matches!(
            Deliveries::plan(&clash, &deps_dir()),
            Err(SubmissionError::Collision { .. })
        ));
        assert!(matches!(
            Deliveries::plan(&[dep(Kind::Archive, "s3a://b/a.zip#a/b")], &deps_dir()),
            Err(SubmissionError::EntryPath { .. })
        ));
    }
}
