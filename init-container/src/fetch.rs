//! Putting one resolved item in place: skip what is already complete, use
//! the node cache, otherwise download with resume, verify, and commit.

use std::path::PathBuf;
use std::sync::Arc;

use ferry_core::archive::ArchiveKind;
use ferry_core::{Digest, EntryPath, Sha256Hasher};
use ferry_io::{RetryPolicy, Sink, Transient, hash_file, hash_reader};
use futures::StreamExt;

use crate::Context;
use crate::cache::{CACHE_MODE, Cache};
use crate::error::FetchError;
use crate::source::Source;
use crate::source::file::check_local;
use crate::unpack::{self, Unpacked};
use crate::write::{DestDir, Partial};

/// How an item came to be in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Downloaded (into the cache first, when there is one).
    Fetched,
    /// Copied or linked from the node cache, no network.
    FromCache,
    /// A complete, verified file was already there (a rerun).
    AlreadyPresent,
    /// A `local://` file that exists in the image.
    Checked,
}

/// A finished item.
#[derive(Debug, Clone, Copy)]
pub struct Done {
    pub outcome: Outcome,
    /// Size of the file in place.
    pub bytes: u64,
    /// Bytes received over the network for it.
    pub received: u64,
}

/// One file to fetch and where it lands.
pub struct Target {
    pub source: Arc<dyn Source>,
    pub dest: Arc<DestDir>,
    pub path: EntryPath,
    pub digest: Option<Digest>,
    pub size: Option<u64>,
    pub mode: u32,
    /// Unpack it into the directory `dest/path` (a Spark archive).
    pub unpack: Option<ArchiveKind>,
}

/// Runs blocking file work off the async runtime.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, FetchError> + Send + 'static,
) -> Result<T, FetchError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| FetchError::Invalid(format!("file task failed: {e}")))?
}

/// Checks a `local://` file, and its pin if it has one.
pub async fn check(path: PathBuf, pin: Option<Digest>) -> Result<Done, FetchError> {
    blocking(move || {
        let size = check_local(&path)?;
        if let Some(expected) = pin {
            let actual = hash_file(&path)
                .map_err(|e| FetchError::io(format!("reading {}", path.display()), e))?
                .finish();
            if actual != expected {
                return Err(FetchError::DigestMismatch { expected, actual });
            }
        }
        Ok(Done {
            outcome: Outcome::Checked,
            bytes: size,
            received: 0,
        })
    })
    .await
}

/// Puts `target` in place.
pub async fn fetch(ctx: &Context, target: &Target) -> Result<Done, FetchError> {
    if let Some(kind) = target.unpack {
        return fetch_archive(ctx, target, kind).await;
    }
    if let Some(digest) = target.digest
        && let Some(bytes) =
            already_present(target.dest.clone(), target.path.clone(), digest).await?
    {
        return Ok(Done {
            outcome: Outcome::AlreadyPresent,
            bytes,
            received: 0,
        });
    }
    if let (Some(cache), Some(digest)) = (&ctx.cache, target.digest) {
        return fetch_through_cache(ctx, cache.clone(), digest, target).await;
    }
    let (dest, path) = (target.dest.clone(), target.path.clone());
    let partial = blocking(move || dest.partial(&path)).await?;
    let (partial, received, bytes) = download(
        target.source.as_ref(),
        partial,
        target.digest,
        target.size,
        &ctx.retry,
    )
    .await?;
    let (mode, shown) = (target.mode, target.dest.display(&target.path));
    blocking(move || {
        partial
            .commit(mode)
            .map_err(|e| FetchError::io(format!("committing {shown}"), e))
    })
    .await?;
    Ok(Done {
        outcome: Outcome::Fetched,
        bytes,
        received,
    })
}

/// The size of the file at `path` if it is complete (hashes to `digest`).
async fn already_present(
    dest: Arc<DestDir>,
    path: EntryPath,
    digest: Digest,
) -> Result<Option<u64>, FetchError> {
    blocking(move || {
        let Some(file) = dest.existing(&path)? else {
            return Ok(None);
        };
        let hasher = hash_reader(file)
            .map_err(|e| FetchError::io(format!("reading {}", dest.display(&path)), e))?;
        let bytes = hasher.len();
        Ok((hasher.finish() == digest).then_some(bytes))
    })
    .await
}

async fn fetch_through_cache(
    ctx: &Context,
    cache: Arc<Cache>,
    digest: Digest,
    target: &Target,
) -> Result<Done, FetchError> {
    let (cache_file, outcome, received, lock) = cached_file(ctx, cache, digest, target).await?;
    let (dest, path, mode) = (target.dest.clone(), target.path.clone(), target.mode);
    let bytes = blocking(move || place_from_cache(&dest, &path, &cache_file, mode)).await?;
    drop(lock);
    Ok(Done {
        outcome,
        bytes,
        received,
    })
}

/// The verified cache file for `digest`, downloaded into the cache first
/// when it is not there, with the digest's lock (held until dropped).
async fn cached_file(
    ctx: &Context,
    cache: Arc<Cache>,
    digest: Digest,
    target: &Target,
) -> Result<(PathBuf, Outcome, u64, crate::cache::CacheLock), FetchError> {
    let lock = cache.lock(&digest).await?;
    let found = {
        let (cache, lock) = (cache.clone(), lock.clone());
        blocking(move || cache.lookup(&lock, &digest)).await?
    };
    match found {
        Some((path, hit)) => {
            tracing::debug!(path = %path.display(), ?hit, "cache hit");
            Ok((path, Outcome::FromCache, 0, lock))
        }
        None => {
            let entry = Cache::entry_path(&digest);
            let partial = {
                let (cache, entry) = (cache.clone(), entry.clone());
                blocking(move || cache.objects().partial(&entry)).await?
            };
            let (partial, received, _) = download(
                target.source.as_ref(),
                partial,
                Some(digest),
                target.size,
                &ctx.retry,
            )
            .await?;
            let (cache, held) = (cache.clone(), lock.clone());
            let path = blocking(move || {
                partial
                    .commit(CACHE_MODE)
                    .map_err(|e| FetchError::io("committing a cache file", e))?;
                cache.seal(&held, &digest)?;
                Ok(cache.objects().root().join(entry.as_str()))
            })
            .await?;
            Ok((path, Outcome::Fetched, received, lock))
        }
    }
}

/// Puts an archive item in place: the verified archive (from the node
/// cache, or downloaded to a temp file beside the target) unpacked into the
/// directory `dest/path` (see [`crate::unpack`]). With a digest, a tree
/// already unpacked from it is kept as it is.
async fn fetch_archive(
    ctx: &Context,
    target: &Target,
    kind: ArchiveKind,
) -> Result<Done, FetchError> {
    let digest = target.digest;
    if let Some(digest) = digest {
        let (dest, path) = (target.dest.clone(), target.path.clone());
        let found = blocking(move || {
            let parent = dest.parent_dir(&path)?;
            unpack::already_unpacked(&parent, path.file_name(), &digest).map_err(FetchError::Unpack)
        })
        .await?;
        if let Some(Unpacked { bytes, .. }) = found {
            return Ok(Done {
                outcome: Outcome::AlreadyPresent,
                bytes,
                received: 0,
            });
        }
    }
    let (file, partial, outcome, received) = match (&ctx.cache, digest) {
        (Some(cache), Some(digest)) => {
            return fetch_archive_cached(ctx, cache.clone(), digest, target, kind).await;
        }
        _ => {
            let (dest, temp) = (target.dest.clone(), archive_temp_path(&target.path));
            let partial = blocking(move || dest.partial(&temp)).await?;
            let (partial, received, _) = download(
                target.source.as_ref(),
                partial,
                digest,
                target.size,
                &ctx.retry,
            )
            .await?;
            let file = partial
                .file
                .try_clone()
                .map_err(|e| FetchError::io("opening a downloaded archive", e))?;
            (file, Some(partial), Outcome::Fetched, received)
        }
    };
    let (dest, path, limits) = (target.dest.clone(), target.path.clone(), ctx.unpack_limits);
    let unpacked = blocking(move || {
        let mut file = file;
        let parent = dest.parent_dir(&path)?;
        let parent_path = dest.parent_path(&path);
        let result = unpack::unpack(
            &mut file,
            kind,
            &parent,
            &parent_path,
            path.file_name(),
            digest.as_ref(),
            &limits,
        );
        // The archive is not kept beside its tree, unpacked or not: a
        // failure to unpack a verified archive is the same on a rerun.
        if let Some(partial) = partial {
            partial.discard();
        }
        result.map_err(FetchError::Unpack)
    })
    .await?;
    tracing::info!(
        dest = target.dest.display(&target.path),
        entries = unpacked.entries,
        bytes = unpacked.bytes,
        %kind,
        "unpacked"
    );
    Ok(Done {
        outcome,
        bytes: unpacked.bytes,
        received,
    })
}

/// An archive item with a node cache: the tree unpacked once per node
/// into the cache (from the cached archive), then placed by hard links
/// (see [`crate::unpack::cached`]).
async fn fetch_archive_cached(
    ctx: &Context,
    cache: Arc<Cache>,
    digest: Digest,
    target: &Target,
    kind: ArchiveKind,
) -> Result<Done, FetchError> {
    use crate::unpack::cached;
    let lock = cache.lock_tree(&digest).await?;
    let root = cache.root().to_path_buf();
    let found = {
        let root = root.clone();
        blocking(move || {
            let (shard, _) = cached::shard(&root, &digest).map_err(FetchError::Unpack)?;
            cached::lookup(&shard, &digest).map_err(FetchError::Unpack)
        })
        .await?
    };
    let (outcome, received) = if found {
        (Outcome::FromCache, 0)
    } else {
        let (path, outcome, received, blob_lock) =
            cached_file(ctx, cache.clone(), digest, target).await?;
        // An open file outlives the lock (and the entry's removal).
        let file = std::fs::File::open(&path)
            .map_err(|e| FetchError::io(format!("opening {}", path.display()), e))?;
        drop(blob_lock);
        let (root, limits) = (root.clone(), ctx.unpack_limits);
        let built = blocking(move || {
            let mut file = file;
            let (shard, shard_path) = cached::shard(&root, &digest).map_err(FetchError::Unpack)?;
            let (_, name) = cached::tree_place(&digest);
            let built = unpack::unpack(&mut file, kind, &shard, &shard_path, &name, None, &limits)
                .and_then(|built| cached::seal(&shard, &digest).map(|()| built))
                .map_err(FetchError::Unpack)?;
            Ok(built)
        })
        .await?;
        tracing::info!(%digest, entries = built.entries, bytes = built.bytes, %kind, "unpacked into the node cache");
        (outcome, received)
    };
    let (dest, path) = (target.dest.clone(), target.path.clone());
    let placed = blocking(move || {
        let parent = dest.parent_dir(&path)?;
        let (shard, _) = cached::shard(&root, &digest).map_err(FetchError::Unpack)?;
        cached::place(
            &shard,
            &digest,
            &parent,
            &dest.parent_path(&path),
            path.file_name(),
        )
        .map_err(FetchError::Unpack)
    })
    .await?;
    drop(lock);
    tracing::info!(
        dest = target.dest.display(&target.path),
        entries = placed.entries,
        bytes = placed.bytes,
        "placed from the node cache"
    );
    Ok(Done {
        outcome,
        bytes: placed.bytes,
        received,
    })
}

/// Where an archive is downloaded before it is unpacked: beside its
/// target, under a fixed-length hidden name.
fn archive_temp_path(path: &EntryPath) -> EntryPath {
    let hash = Digest::of(path.as_str().as_bytes()).hex();
    let name = format!(".ferry-archive-{}", &hash[..16]);
    let text = match path.as_str().rsplit_once('/') {
        Some((above, _)) => format!("{above}/{name}"),
        None => name,
    };
    // A valid path's parent plus a short ASCII name is valid.
    EntryPath::parse(&text).unwrap_or_else(|_| path.clone())
}

/// Hard-links (files without execute bits) or copies a verified cache file
/// to its destination. A copy is not hashed again: the entry was verified
/// when it was inserted (see the trust model in `cache.rs`), and the kernel
/// copies it (`copy_file_range`, a reflink where the file system has them).
fn place_from_cache(
    dest: &DestDir,
    path: &EntryPath,
    cache_file: &std::path::Path,
    mode: u32,
) -> Result<u64, FetchError> {
    let shown = dest.display(path);
    let size = std::fs::metadata(cache_file)
        .map_err(|e| FetchError::io(format!("reading {}", cache_file.display()), e))?
        .len();
    if mode & 0o111 == 0 && dest.link_from(path, cache_file)? {
        return Ok(size);
    }
    let mut partial = dest.partial(path)?;
    let mut source = std::fs::File::open(cache_file)
        .map_err(|e| FetchError::io(format!("opening {}", cache_file.display()), e))?;
    partial
        .restart()
        .map_err(|e| FetchError::io(format!("truncating a temp file for {shown}"), e))?;
    let copied = std::io::copy(&mut source, &mut partial.file)
        .map_err(|e| FetchError::io(format!("copying {} to {shown}", cache_file.display()), e))?;
    if copied != size {
        partial.discard();
        return Err(FetchError::Truncated {
            got: copied,
            expected: size,
        });
    }
    partial
        .commit(mode)
        .map_err(|e| FetchError::io(format!("committing {shown}"), e))?;
    Ok(size)
}

/// State of one download across attempts: what is in the temp file.
struct Progress {
    sink: Sink,
    /// Bytes in the temp file (all queued to be hashed).
    len: u64,
    /// Bytes received over the network, all attempts.
    received: u64,
}

impl Progress {
    async fn restart(&mut self) -> Result<(), FetchError> {
        self.sink.restart().await?;
        self.len = 0;
        Ok(())
    }
}

/// Downloads `source` into `partial`, resuming from what it holds, retrying
/// transient failures with `Range` from the last byte written, and checks the
/// digest. Returns the partial (ready to commit), bytes received, file size.
pub async fn download(
    source: &dyn Source,
    partial: Partial,
    expected: Option<Digest>,
    expected_size: Option<u64>,
    retry: &RetryPolicy,
) -> Result<(Partial, u64, u64), FetchError> {
    // Bytes from an earlier run are kept only when a digest will check them.
    let (partial, hasher, len) = blocking(move || {
        let mut partial = partial;
        let io = |e| FetchError::io("reading a partial download", e);
        let len = partial.bytes_written().map_err(io)?;
        if expected.is_none() || expected_size.is_some_and(|size| len > size) {
            partial.restart().map_err(io)?;
            return Ok((partial, Sha256Hasher::new(), 0));
        }
        let hasher = partial.hash_existing().map_err(io)?;
        Ok((partial, hasher, len))
    })
    .await?;
    let file = partial
        .file
        .try_clone()
        .map_err(|e| FetchError::io("opening a temp file", e))?;
    let mut progress = Progress {
        sink: Sink::new(file, hasher, expected_size)?,
        len,
        received: 0,
    };
    let mut resumed_from_disk = len > 0;
    if resumed_from_disk {
        tracing::info!(
            source = source.describe(),
            bytes = len,
            "resuming a partial download"
        );
    }
    let mut backoff = retry.backoff();
    loop {
        let attempt = attempt(source, &mut progress, expected_size).await;
        // Everything received is on disk and hashed before going on.
        let hasher = progress.sink.checkpoint().await?;
        match attempt {
            Ok(()) => {}
            Err(error) => {
                if backoff.wait_to_retry(&source.describe(), &error).await {
                    tracing::debug!(
                        source = source.describe(),
                        resume_at = progress.len,
                        "resuming after a transient failure"
                    );
                    continue;
                }
                // Bytes cut off by a transient failure are kept for a rerun
                // to resume; otherwise no temp file is left behind.
                if !error.is_transient() || progress.len == 0 {
                    drop(progress);
                    partial.discard();
                }
                return Err(error);
            }
        }
        let actual = hasher.finish();
        match expected {
            Some(expected) if actual != expected => {
                if resumed_from_disk {
                    // The earlier run's bytes may be from another version:
                    // start once more from nothing before giving up.
                    resumed_from_disk = false;
                    progress.restart().await?;
                    continue;
                }
                drop(progress);
                partial.discard();
                return Err(FetchError::DigestMismatch { expected, actual });
            }
            _ => return Ok((partial, progress.received, progress.len)),
        }
    }
}

/// One request: open from `progress.len`, append until the body ends.
async fn attempt(
    source: &dyn Source,
    progress: &mut Progress,
    expected_size: Option<u64>,
) -> Result<(), FetchError> {
    let opened = source.open(progress.len).await?;
    if opened.start != progress.len {
        if opened.start != 0 {
            return Err(FetchError::Invalid(format!(
                "{} resumed at byte {} instead of {}",
                source.describe(),
                opened.start,
                progress.len
            )));
        }
        tracing::debug!(
            source = source.describe(),
            "source ignored the range; starting again"
        );
        progress.restart().await?;
    }
    if let (Some(announced), Some(expected)) = (opened.size, expected_size)
        && announced != expected
    {
        return Err(FetchError::Invalid(format!(
            "{} has {announced} bytes, the manifest says {expected}",
            source.describe()
        )));
    }
    let total = opened.size.or(expected_size);
    let mut body = opened.body;
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        let n = chunk.len() as u64;
        if let Some(total) = total
            && progress.len + n > total
        {
            return Err(FetchError::TooLong { expected: total });
        }
        progress.sink.push(chunk).await?;
        progress.len += n;
        progress.received += n;
    }
    match total {
        Some(total) if progress.len < total => Err(FetchError::Truncated {
            got: progress.len,
            expected: total,
        }),
        _ => Ok(()),
    }
}
