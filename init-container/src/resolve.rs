//! From plan items to concrete tasks: one file each, with its source, its
//! destination, and the digest it must have.
//!
//! A whole bundle (`ferry://<bundle>`) or a bundle folder
//! (`ferry://<bundle>/jars/`) becomes one task per entry of its manifest; an
//! entry under a top-level folder named in `groups` lands in that folder's
//! directory with the folder stripped, any other under `dest` with its full
//! path. Manifests are read once per bundle.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferry_core::api::{Entry, Manifest};
use ferry_core::archive::ArchiveKind;
use ferry_core::plan::StoreSettings;
use ferry_core::uri::SourceKind;
use ferry_core::{BundleRef, Digest, EntryPath, SourceUri};

use crate::Context;
use crate::config::Item;
use crate::error::FetchError;
use crate::fetch::Target;
use crate::source::Source;
use crate::source::file::FileSource;
use crate::source::http::HttpSource;
use crate::source::object_store::{ObjectSource, StoreKey};
use crate::source::webhdfs::WebHdfsSource;
use crate::write::{DEFAULT_MODE, DestDir};

/// What to do for one file.
pub enum Action {
    Fetch(Target),
    CheckLocal { path: PathBuf, pin: Option<Digest> },
}

/// One file and what to do for it.
pub struct Task {
    /// The URI as the user wrote it, or `ferry://<bundle>/<entry>`.
    pub uri: String,
    /// Where it lands, for messages.
    pub dest: String,
    pub action: Action,
}

/// An item (or one file of it) that failed.
#[derive(Debug)]
pub struct Failure {
    pub uri: String,
    pub dest: Option<String>,
    pub error: FetchError,
}

/// Resolves every item; failures are collected, not fatal to the others.
pub async fn resolve(ctx: &Context, items: &[Item]) -> (Vec<Task>, Vec<Failure>) {
    let mut resolver = Resolver {
        ctx,
        dests: HashMap::new(),
        manifests: HashMap::new(),
        tasks: Vec::new(),
        failures: Vec::new(),
        landed: HashMap::new(),
        claimed: claimed_entries(items),
    };
    for item in items {
        if let Err(error) = resolver.item(item).await {
            resolver.failures.push(Failure {
                uri: item.uri.to_string(),
                dest: item.dest.as_ref().map(|d| d.display().to_string()),
                error,
            });
        }
    }
    (resolver.tasks, resolver.failures)
}

struct Resolver<'a> {
    ctx: &'a Context,
    dests: HashMap<PathBuf, Arc<DestDir>>,
    manifests: HashMap<BundleRef, Arc<Manifest>>,
    tasks: Vec<Task>,
    failures: Vec<Failure>,
    /// Final path → (URI, digest) of what lands there, to catch two items
    /// aiming at one file.
    landed: HashMap<PathBuf, (String, Option<Digest>)>,
    /// Bundle entries an unpack item names exactly: the whole-bundle item
    /// that also lists them leaves them to it.
    claimed: std::collections::HashSet<(BundleRef, EntryPath)>,
}

/// The bundle entries that unpack items name one by one.
fn claimed_entries(items: &[Item]) -> std::collections::HashSet<(BundleRef, EntryPath)> {
    items
        .iter()
        .filter(|item| item.unpack)
        .filter_map(|item| match item.uri.kind() {
            SourceKind::Ferry {
                bundle,
                path: Some(path),
            } => Some((bundle.clone(), path.clone())),
            _ => None,
        })
        .collect()
}

/// The archive kind to unpack `file_name` as, for an unpack item; like
/// Spark, a name of no known kind is delivered as a file, with a warning.
fn unpack_kind(item: &Item, file_name: &str) -> Option<ArchiveKind> {
    if !item.unpack {
        return None;
    }
    let kind = ArchiveKind::from_name(file_name);
    if kind.is_none() {
        tracing::warn!(
            uri = %item.uri,
            file_name,
            "not an archive Spark unpacks (.jar, .zip, .tar.gz, .tgz, .tar); delivered as a file"
        );
    }
    kind
}

impl Resolver<'_> {
    async fn item(&mut self, item: &Item) -> Result<(), FetchError> {
        match item.uri.kind() {
            SourceKind::Ferry { bundle, path } => self.ferry(item, bundle, path.as_ref()).await,
            SourceKind::Local(path) => {
                self.tasks.push(Task {
                    uri: item.uri.to_string(),
                    dest: path.clone(),
                    action: Action::CheckLocal {
                        path: PathBuf::from(path),
                        pin: item.uri.pin(),
                    },
                });
                Ok(())
            }
            _ => {
                let source = self.source_for(&item.uri, item.store.as_ref())?;
                let path = match &item.name {
                    Some(name) => name.clone(),
                    None => item
                        .uri
                        .file_name()
                        .map_err(|e| FetchError::Invalid(e.to_string()))?,
                };
                let dest = required_dest(item)?;
                let unpack = if item.unpack {
                    let file_name = item
                        .uri
                        .file_name()
                        .map_err(|e| FetchError::Invalid(e.to_string()))?;
                    unpack_kind(item, file_name.as_str())
                } else {
                    None
                };
                self.push_fetch(
                    item.uri.as_str().to_owned(),
                    source,
                    &dest,
                    path,
                    (item.uri.pin(), None, DEFAULT_MODE),
                    unpack,
                )
            }
        }
    }

    fn source_for(
        &self,
        uri: &SourceUri,
        settings: Option<&StoreSettings>,
    ) -> Result<Arc<dyn Source>, FetchError> {
        let ctx = self.ctx;
        let text = uri.as_str();
        Ok(match uri.kind() {
            SourceKind::Http(url) => Arc::new(HttpSource::new(ctx.http.clone(), url.clone())),
            SourceKind::S3 { bucket, key } => {
                let store = ctx.stores.get(
                    &StoreKey::S3 {
                        bucket: bucket.clone(),
                    },
                    settings,
                )?;
                Arc::new(ObjectSource::new(store, key, text))
            }
            SourceKind::Gcs { bucket, key } => {
                let store = ctx.stores.get(
                    &StoreKey::Gcs {
                        bucket: bucket.clone(),
                    },
                    settings,
                )?;
                Arc::new(ObjectSource::new(store, key, text))
            }
            SourceKind::Azure {
                account,
                container,
                key,
            } => {
                let store = ctx.stores.get(
                    &StoreKey::Azure {
                        account: account.clone(),
                        container: container.clone(),
                    },
                    settings,
                )?;
                Arc::new(ObjectSource::new(store, key, text))
            }
            SourceKind::Hdfs { authority, path } => {
                let store = ctx.stores.get(
                    &StoreKey::Hdfs {
                        authority: authority.clone(),
                    },
                    settings,
                )?;
                Arc::new(ObjectSource::new(store, path.trim_start_matches('/'), text))
            }
            SourceKind::WebHdfs {
                authority,
                path,
                tls,
            } => Arc::new(WebHdfsSource::new(
                ctx.http.clone(),
                authority,
                path,
                *tls,
                text,
            )?),
            SourceKind::File(path) => Arc::new(FileSource::new(path)),
            SourceKind::Ferry { .. } | SourceKind::Local(_) => {
                return Err(FetchError::Invalid(format!("{text} has no byte source")));
            }
        })
    }

    async fn manifest(&mut self, bundle: &BundleRef) -> Result<Arc<Manifest>, FetchError> {
        if let Some(manifest) = self.manifests.get(bundle) {
            return Ok(manifest.clone());
        }
        let ctx = self.ctx;
        let server = ctx.ferry.as_ref().ok_or_else(|| {
            FetchError::Invalid(format!(
                "ferry://{bundle} needs a staging server: pass --server or set FERRY_SERVER"
            ))
        })?;
        let token = ctx.tokens.token_for(bundle)?;
        let manifest = ctx
            .retry
            .run(&format!("manifest of {bundle}"), || {
                server.manifest(bundle, token.as_ref())
            })
            .await?;
        // The server checked this at creation; a hostile or damaged server
        // gets no benefit of the doubt.
        ferry_core::path::check_tree(manifest.entries.iter().map(|e| &e.path))
            .map_err(|e| FetchError::Invalid(format!("manifest of ferry://{bundle}: {e}")))?;
        let manifest = Arc::new(manifest);
        self.manifests.insert(bundle.clone(), manifest.clone());
        Ok(manifest)
    }

    async fn ferry(
        &mut self,
        item: &Item,
        bundle: &BundleRef,
        path: Option<&EntryPath>,
    ) -> Result<(), FetchError> {
        let manifest = self.manifest(bundle).await?;
        let token = self.ctx.tokens.token_for(bundle)?;
        let uri_of = |entry: &Entry| format!("ferry://{bundle}/{}", entry.path);
        // One entry named exactly: it lands under its own name or `name`.
        if let Some(path) = path
            && let Some(entry) = manifest.entries.iter().find(|e| &e.path == path)
        {
            if let Some(pin) = item.uri.pin()
                && pin != entry.digest
            {
                return Err(FetchError::DigestMismatch {
                    expected: pin,
                    actual: entry.digest,
                });
            }
            let dest = required_dest(item)?;
            let name = item
                .name
                .clone()
                .unwrap_or_else(|| file_name_of(&entry.path));
            let source = Arc::new(self.server()?.blob(&entry.digest, token)?);
            let unpack = unpack_kind(item, entry.path.file_name());
            return self.push_entry(uri_of(entry), source, &dest, name, entry, unpack);
        }
        // A folder, or the whole bundle.
        let prefix = path.map(|p| format!("{p}/"));
        let selected: Vec<&Entry> = manifest
            .entries
            .iter()
            .filter(|e| {
                prefix
                    .as_deref()
                    .is_none_or(|prefix| e.path.as_str().starts_with(prefix))
                    && (item.unpack || !self.claimed.contains(&(bundle.clone(), e.path.clone())))
            })
            .collect();
        if selected.is_empty() {
            return Err(FetchError::NotFound(match path {
                Some(path) => format!("bundle {bundle} has no entry or folder {path}"),
                None => format!("bundle {bundle} is empty"),
            }));
        }
        for entry in selected {
            let uri = uri_of(entry);
            let placed = match path {
                Some(folder) => {
                    let rest = &entry.path.as_str()[folder.as_str().len() + 1..];
                    EntryPath::parse(rest)
                        .map_err(|e| FetchError::Invalid(e.to_string()))
                        .and_then(|rest| Ok((required_dest(item)?, rest)))
                }
                None => self.group_placement(item, &entry.path),
            };
            let result = placed.and_then(|(dest, rel)| {
                let source = Arc::new(self.server()?.blob(&entry.digest, token.clone())?);
                self.push_entry(uri.clone(), source, &dest, rel, entry, None)
            });
            if let Err(error) = result {
                self.failures.push(Failure {
                    uri,
                    dest: None,
                    error,
                });
            }
        }
        Ok(())
    }

    fn server(&self) -> Result<&crate::source::ferry::FerryServer, FetchError> {
        self.ctx
            .ferry
            .as_ref()
            .ok_or_else(|| FetchError::Invalid("no --server".into()))
    }

    /// Where a whole-bundle entry lands: its group's directory, else `dest`.
    fn group_placement(
        &self,
        item: &Item,
        path: &EntryPath,
    ) -> Result<(PathBuf, EntryPath), FetchError> {
        if let (Some(dir), Some(rest)) = (item.groups.get(path.top_level()), path.below_top_level())
        {
            return Ok((dir.clone(), rest));
        }
        match &item.dest {
            Some(dest) => Ok((dest.clone(), path.clone())),
            None => Err(FetchError::Invalid(format!(
                "entry {path} is in no --dest group ({}) and there is no --into",
                item.groups.keys().cloned().collect::<Vec<_>>().join(", ")
            ))),
        }
    }

    fn push_entry(
        &mut self,
        uri: String,
        source: Arc<dyn Source>,
        dest: &Path,
        path: EntryPath,
        entry: &Entry,
        unpack: Option<ArchiveKind>,
    ) -> Result<(), FetchError> {
        let mode = entry.mode.map_or(DEFAULT_MODE, |m| m & 0o777);
        self.push_fetch(
            uri,
            source,
            dest,
            path,
            (Some(entry.digest), Some(entry.size), mode),
            unpack,
        )
    }

    /// `expected` is the digest, size and mode the file must have.
    fn push_fetch(
        &mut self,
        uri: String,
        source: Arc<dyn Source>,
        dest: &Path,
        path: EntryPath,
        expected: (Option<Digest>, Option<u64>, u32),
        unpack: Option<ArchiveKind>,
    ) -> Result<(), FetchError> {
        let (digest, size, mode) = expected;
        let final_path = dest.join(path.as_str());
        if let Some((other, other_digest)) = self.landed.get(&final_path) {
            if digest.is_some() && *other_digest == digest {
                return Ok(());
            }
            return Err(FetchError::Invalid(format!(
                "{} is also the destination of {other}",
                final_path.display()
            )));
        }
        self.landed
            .insert(final_path.clone(), (uri.clone(), digest));
        let dest_dir = match self.dests.get(dest) {
            Some(dir) => dir.clone(),
            None => {
                let dir = Arc::new(DestDir::open(dest)?);
                self.dests.insert(dest.to_path_buf(), dir.clone());
                dir
            }
        };
        self.tasks.push(Task {
            uri,
            dest: final_path.display().to_string(),
            action: Action::Fetch(Target {
                source,
                dest: dest_dir,
                path,
                digest,
                size,
                mode,
                unpack,
            }),
        });
        Ok(())
    }
}

fn required_dest(item: &Item) -> Result<PathBuf, FetchError> {
    item.dest.clone().ok_or_else(|| {
        FetchError::Invalid(format!(
            "no destination for {}: pass --into DIR (or give it a dest in the plan)",
            item.uri
        ))
    })
}

fn file_name_of(path: &EntryPath) -> EntryPath {
    EntryPath::parse(path.file_name()).unwrap_or_else(|_| path.clone())
}
