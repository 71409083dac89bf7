//! Staging: find each local file's digest (the digest cache, or one read),
//! upload what the server lacks, create the bundle. `ferry stage` and
//! `ferry submit` both stage through [`stage`].
//!
//! A file the digest cache knows is not read at all. A small unknown file
//! is hashed, then sent only if `POST /v1/blobs/missing` says the server
//! lacks it. A large unknown file ([`STREAM_THRESHOLD`]) is streamed
//! through an upload session and hashed as it is sent, so it is read once;
//! if the server had it after all, the commit says so and the bytes are
//! dropped. A large file the cache knew at the same path and size (most
//! likely touched or copied, not edited) is hashed first instead.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use ferry_core::api::{CreateBundleRequest, Entry, ErrorCode, Owner};
use ferry_core::{BundleId, BundleName, Digest, Ttl};
use futures::{FutureExt as _, StreamExt as _};
use serde::Serialize;

use ferry_io::identity::FileIdentity;

use crate::api::{ApiClient, ApiError};
use crate::digest_cache::{self, DigestCache};
use crate::files::LocalFile;
use crate::progress::bytes_bar;
use crate::session_upload::{self, ResumeBook, SessionUploadError};

/// Why staging failed.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("nothing to stage: no files found")]
    Nothing,
    #[error("hashing thread failed")]
    HashThread(#[source] tokio::task::JoinError),
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("asking {server} which blobs it lacks")]
    Missing {
        server: String,
        #[source]
        source: ApiError,
    },
    #[error("uploading {}", path.display())]
    Upload {
        path: PathBuf,
        #[source]
        source: ApiError,
    },
    #[error("uploading a batch of {count} small files (the first {})", first.display())]
    Batch {
        count: usize,
        first: PathBuf,
        #[source]
        source: ApiError,
    },
    #[error("uploading {} through an upload session", path.display())]
    Stream {
        path: PathBuf,
        #[source]
        source: SessionUploadError,
    },
    #[error(
        "bundle name {0} is taken; remove it first with `ferry bundles rm {0}` or choose another name"
    )]
    NameTaken(String),
    #[error("creating the bundle")]
    Create(#[source] ApiError),
}

/// Uploads at once.
const UPLOAD_CONCURRENCY: usize = 8;

/// What to stage and how the bundle is made.
#[derive(Debug, Clone, Default)]
pub struct StageRequest {
    pub files: Vec<LocalFile>,
    pub name: Option<BundleName>,
    pub ttl: Option<Ttl>,
    pub labels: BTreeMap<String, String>,
    pub owner: Option<Owner>,
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Count {
    pub files: u64,
    pub bytes: u64,
}

/// The `--output json` object (schema in the README).
#[derive(Debug, Clone, Serialize)]
pub struct StageOutcome {
    pub id: BundleId,
    pub name: Option<String>,
    pub token: String,
    pub expires_at: Option<String>,
    pub entries: Vec<Entry>,
    pub uploaded: Count,
    pub skipped: Count,
}

/// Files at least this large that the digest cache does not know stream
/// through an upload session, hashed as they are sent; smaller ones are
/// hashed first and sent only if the server lacks them. At 16 MiB, one
/// `missing` round trip costs about what sending the file costs.
pub const STREAM_THRESHOLD: u64 = 16 << 20;
/// Large files streamed at once.
const STREAM_CONCURRENCY: usize = 2;

/// How each file's digest is found.
enum Way {
    /// The digest cache knows it.
    Known(Digest),
    /// Read and hash it, then ask the server.
    Hash,
    /// Stream it through a session, hashing as it goes.
    Stream,
}

/// One file to stage, as first seen.
struct Seen {
    /// Absolute: the digest cache's key.
    path: PathBuf,
    identity: FileIdentity,
    way: Way,
}

/// Stages `request.files` as one bundle: digests from the cache, small
/// files hashed and uploaded if the server lacks them, large new ones
/// streamed through upload sessions; then the bundle is created.
pub async fn stage(client: &ApiClient, request: StageRequest) -> Result<StageOutcome, StageError> {
    if request.files.is_empty() {
        return Err(StageError::Nothing);
    }
    let mut cache = open_cache();
    let seen = look(&request.files, &cache)?;
    let mut digests: Vec<Option<(Digest, u64)>> = seen
        .iter()
        .map(|s| match s.way {
            Way::Known(digest) => Some((digest, s.identity.size)),
            _ => None,
        })
        .collect();
    hash_unknown(&seen, &mut digests, &mut cache, request.quiet).await?;
    let (mut uploaded, mut skipped) =
        stream_large(client, &seen, &mut digests, &mut cache, request.quiet).await?;
    let entries: Vec<Entry> = request
        .files
        .iter()
        .zip(&digests)
        .map(|(file, found)| {
            let (digest, size) = found.unwrap_or((Digest::of(b""), 0));
            Entry {
                path: file.path.clone(),
                digest,
                size,
                mode: file.executable.then_some(0o755),
            }
        })
        .collect();
    if let Err(error) = cache.save() {
        eprintln!("ferry: could not save the digest cache: {error}");
    }
    let streamed: HashSet<usize> = seen
        .iter()
        .enumerate()
        .filter_map(|(i, s)| matches!(s.way, Way::Stream).then_some(i))
        .collect();
    let (rest_files, rest_entries): (Vec<LocalFile>, Vec<Entry>) = request
        .files
        .iter()
        .zip(&entries)
        .enumerate()
        .filter(|(i, _)| !streamed.contains(i))
        .map(|(_, (f, e))| (f.clone(), e.clone()))
        .unzip();
    if !rest_files.is_empty() {
        let (up, skip) = upload_missing(client, &rest_files, &rest_entries, request.quiet).await?;
        uploaded.files += up.files;
        uploaded.bytes += up.bytes;
        skipped.files += skip.files;
        skipped.bytes += skip.bytes;
    }
    let created = match client
        .create_bundle(&CreateBundleRequest {
            name: request.name.clone(),
            entries: entries.clone(),
            labels: request.labels,
            owner: request.owner,
            ttl_seconds: request.ttl,
        })
        .await
    {
        Ok(created) => created,
        Err(ApiError::Server {
            code: ErrorCode::NameTaken,
            ..
        }) => {
            let name = request.name.as_ref().map(BundleName::as_str);
            return Err(StageError::NameTaken(name.unwrap_or_default().to_owned()));
        }
        Err(e) => return Err(StageError::Create(e)),
    };
    Ok(StageOutcome {
        id: created.id,
        name: created.name.map(|n| n.to_string()),
        token: created.token,
        expires_at: created
            .expires_at
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        entries,
        uploaded,
        skipped,
    })
}

/// The digest cache, unless `FERRY_NO_DIGEST_CACHE` is set or there is no
/// cache directory.
fn open_cache() -> DigestCache {
    let off = std::env::var_os("FERRY_NO_DIGEST_CACHE").is_some_and(|v| !v.is_empty());
    match digest_cache::default_dir() {
        Some(dir) if !off => DigestCache::load(dir),
        _ => DigestCache::disabled(),
    }
}

fn identity_of(path: &Path) -> Result<FileIdentity, StageError> {
    std::fs::metadata(path)
        .map(|meta| FileIdentity::of(&meta))
        .map_err(|source| StageError::Read {
            path: path.to_owned(),
            source,
        })
}

/// One `stat` per file, and the way its digest will be found.
fn look(files: &[LocalFile], cache: &DigestCache) -> Result<Vec<Seen>, StageError> {
    files
        .iter()
        .map(|file| {
            let path = std::path::absolute(&file.source).unwrap_or_else(|_| file.source.clone());
            let identity = identity_of(&path)?;
            let way = match cache.lookup(&path, &identity) {
                Some(digest) => Way::Known(digest),
                None if identity.size >= STREAM_THRESHOLD
                    && !cache.knew_size(&path, identity.size) =>
                {
                    Way::Stream
                }
                None => Way::Hash,
            };
            Ok(Seen {
                path,
                identity,
                way,
            })
        })
        .collect()
}

/// Hashes the files the cache does not know and that are not streamed,
/// off the async runtime, and records them in the cache.
async fn hash_unknown(
    seen: &[Seen],
    digests: &mut [Option<(Digest, u64)>],
    cache: &mut DigestCache,
    quiet: bool,
) -> Result<(), StageError> {
    let wanted: Vec<usize> = (0..seen.len())
        .filter(|&i| matches!(seen[i].way, Way::Hash))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let sources: Vec<PathBuf> = wanted.iter().map(|&i| seen[i].path.clone()).collect();
    let total: u64 = wanted.iter().map(|&i| seen[i].identity.size).sum();
    let bar = bytes_bar(total, "hashing", quiet);
    let started = SystemTime::now();
    let hashes = {
        let bar = bar.clone();
        tokio::task::spawn_blocking(move || crate::hash::hash_all(&sources, &|n| bar.inc(n)))
            .await
            .map_err(StageError::HashThread)?
            .map_err(|(path, source)| StageError::Read { path, source })?
    };
    bar.finish_and_clear();
    for (&i, (digest, size)) in wanted.iter().zip(hashes) {
        let after = identity_of(&seen[i].path)?;
        cache.record(&seen[i].path, seen[i].identity, after, started, digest);
        digests[i] = Some((digest, size));
    }
    Ok(())
}

/// Streams the large new files through upload sessions (resuming what an
/// earlier run left), records their digests; returns what was uploaded
/// and what the server turned out to have.
async fn stream_large(
    client: &ApiClient,
    seen: &[Seen],
    digests: &mut [Option<(Digest, u64)>],
    cache: &mut DigestCache,
    quiet: bool,
) -> Result<(Count, Count), StageError> {
    let wanted: Vec<usize> = (0..seen.len())
        .filter(|&i| matches!(seen[i].way, Way::Stream))
        .collect();
    let (mut uploaded, mut skipped) = (Count::default(), Count::default());
    if wanted.is_empty() {
        return Ok((uploaded, skipped));
    }
    let book = ResumeBook::load(cache.dir());
    let total: u64 = wanted.iter().map(|&i| seen[i].identity.size).sum();
    let bar = bytes_bar(total, "uploading", quiet);
    let jobs = wanted.iter().map(|&i| {
        let (book, bar) = (book.clone(), bar.clone());
        async move {
            let started = SystemTime::now();
            let file = &seen[i];
            let on_bytes = move |n| bar.inc(n);
            let streamed =
                session_upload::stream_file(client, &book, &file.path, file.identity, &on_bytes)
                    .await
                    .map_err(|source| StageError::Stream {
                        path: file.path.clone(),
                        source,
                    })?;
            Ok::<_, StageError>((i, started, streamed))
        }
    });
    let mut results = futures::stream::iter(jobs).buffer_unordered(STREAM_CONCURRENCY);
    while let Some(result) = results.next().await {
        let (i, started, streamed) = result?;
        let after = identity_of(&seen[i].path)?;
        cache.record(
            &seen[i].path,
            seen[i].identity,
            after,
            started,
            streamed.digest,
        );
        digests[i] = Some((streamed.digest, streamed.size));
        let count = if streamed.created {
            &mut uploaded
        } else {
            &mut skipped
        };
        count.files += 1;
        count.bytes += streamed.size;
    }
    bar.finish_and_clear();
    Ok((uploaded, skipped))
}

/// Uploads the blobs the server lacks, one per distinct digest from the
/// first file that has it; returns what was uploaded and what was skipped.
async fn upload_missing(
    client: &ApiClient,
    files: &[LocalFile],
    entries: &[Entry],
    quiet: bool,
) -> Result<(Count, Count), StageError> {
    let mut by_digest: HashMap<Digest, (PathBuf, u64)> = HashMap::new();
    for (file, entry) in files.iter().zip(entries) {
        by_digest
            .entry(entry.digest)
            .or_insert((file.source.clone(), entry.size));
    }
    let unique: Vec<Digest> = by_digest.keys().copied().collect();
    let missing: HashSet<Digest> = client
        .missing(&unique)
        .await
        .map_err(|source| StageError::Missing {
            server: client.server().to_owned(),
            source,
        })?
        .into_iter()
        .collect();
    let upload_total: u64 = missing.iter().map(|d| by_digest[d].1).sum();
    let mut uploaded = Count::default();
    let mut skipped = Count::default();
    for (digest, (_, size)) in &by_digest {
        let count = if missing.contains(digest) {
            &mut uploaded
        } else {
            &mut skipped
        };
        count.files += 1;
        count.bytes += size;
    }

    let bar = bytes_bar(upload_total, "uploading", quiet);
    let (small, large): (Vec<Digest>, Vec<Digest>) = missing
        .iter()
        .partition(|d| by_digest[*d].1 <= BATCH_FILE_MAX);
    let batches = batches_of(small, &by_digest).into_iter().map(|batch| {
        let (client, bar, by_digest) = (client.clone(), bar.clone(), &by_digest);
        async move { upload_batch(&client, batch, by_digest, &bar).await }.boxed()
    });
    let singles = large.into_iter().map(|digest| {
        let (path, size) = by_digest[&digest].clone();
        let (client, bar) = (client.clone(), bar.clone());
        async move { upload_one(&client, path, digest, size, &bar).await }.boxed()
    });
    let jobs: Vec<_> = batches.chain(singles).collect();
    let mut results = futures::stream::iter(jobs).buffer_unordered(UPLOAD_CONCURRENCY);
    while let Some(result) = results.next().await {
        result?;
    }
    bar.finish_and_clear();
    Ok((uploaded, skipped))
}

/// Files at most this large that the server lacks go up in batches
/// (`POST /v1/blobs`): for them a request and two fsyncs each would cost
/// more than sending the bytes.
const BATCH_FILE_MAX: u64 = 1 << 20;
/// The most bytes and files in one batch (the server takes 8 MiB by
/// default).
const BATCH_BYTES: u64 = 4 << 20;
const BATCH_FILES: usize = 256;

/// Groups digests into batches of at most [`BATCH_BYTES`] and
/// [`BATCH_FILES`].
fn batches_of(
    digests: Vec<Digest>,
    by_digest: &HashMap<Digest, (PathBuf, u64)>,
) -> Vec<Vec<Digest>> {
    let mut batches: Vec<Vec<Digest>> = Vec::new();
    let mut bytes = 0;
    for digest in digests {
        let size = by_digest[&digest].1;
        match batches.last_mut() {
            Some(last) if last.len() < BATCH_FILES && bytes + size <= BATCH_BYTES => {
                last.push(digest);
                bytes += size;
            }
            _ => {
                batches.push(vec![digest]);
                bytes = size;
            }
        }
    }
    batches
}

async fn upload_one(
    client: &ApiClient,
    path: PathBuf,
    digest: Digest,
    size: u64,
    bar: &indicatif::ProgressBar,
) -> Result<(), StageError> {
    let bar = bar.clone();
    let on_bytes = Arc::new(move |n| bar.inc(n));
    client
        .upload(&path, &digest, size, move |n| on_bytes(n))
        .await
        .map_err(|source| StageError::Upload { path, source })
}

/// Sends one batch; a server without batches (an older one: `404`/`405`)
/// or a proxy or server that refuses the body (`413`) gets the files one
/// by one. A server that refuses a body as too large without reading it
/// closes the connection, which a client still sending may see as a broken
/// connection rather than the `413`: that too falls back (if the server is
/// really gone, the single uploads say so).
async fn upload_batch(
    client: &ApiClient,
    batch: Vec<Digest>,
    by_digest: &HashMap<Digest, (PathBuf, u64)>,
    bar: &indicatif::ProgressBar,
) -> Result<(), StageError> {
    let files: Vec<(Digest, PathBuf, u64)> = batch
        .iter()
        .map(|d| (*d, by_digest[d].0.clone(), by_digest[d].1))
        .collect();
    let read = {
        let files = files.clone();
        tokio::task::spawn_blocking(move || {
            files
                .into_iter()
                .map(|(digest, path, size)| match std::fs::read(&path) {
                    Ok(bytes) if bytes.len() as u64 == size => Ok((digest, Bytes::from(bytes))),
                    Ok(_) => Err(StageError::Read {
                        path,
                        source: std::io::Error::other("the file changed size since it was hashed"),
                    }),
                    Err(source) => Err(StageError::Read { path, source }),
                })
                .collect::<Result<Vec<_>, StageError>>()
        })
        .await
        .map_err(StageError::HashThread)??
    };
    let total: u64 = files.iter().map(|f| f.2).sum();
    match client.upload_batch(&read).await {
        Ok(_) => {
            bar.inc(total);
            Ok(())
        }
        Err(
            ApiError::Server {
                status: 404 | 405 | 413,
                ..
            }
            | ApiError::Unreachable { .. },
        ) => {
            for (digest, path, size) in files {
                upload_one(client, path, digest, size, bar).await?;
            }
            Ok(())
        }
        Err(source) => Err(StageError::Batch {
            count: files.len(),
            first: files[0].1.clone(),
            source,
        }),
    }
}
