//! The node-local, content-addressed cache (`--cache-dir`, a hostPath).
//!
//! Layout: `sha256/<2 hex>/<64 hex>` holds verified files (read-only),
//! `locks/<64 hex>` are lock files. A fetch of a known digest holds an
//! exclusive `flock` on its lock file while it looks, downloads and inserts,
//! so init containers of several pods on one node never download the same
//! blob twice at once nor see a half-written cache file; the second waits,
//! then finds it. The lock is released when the process dies, so a crashed
//! pod never wedges the node; its partial download is resumed by the next.
//!
//! Trust model: a file enters the cache only through a temp file that was
//! hashed while it was written, matched its digest, was fsynced, made
//! read-only (0444) and renamed into place; then its lock file records a
//! seal: the entry's inode, size and modification time. A hit whose seal
//! still matches is used as it is, with no re-hash: linking a 1 GiB jar
//! costs a `stat`, not a read of 1 GiB. Anything else (no seal, another
//! inode, size or mtime, write permission) is hashed again before use and
//! removed if it does not match. Writing through a hard link given to a pod
//! changes the mtime, so an accidental write is caught; the cache directory
//! itself must be writable only by ferry-init (like any hostPath, whoever
//! can write it can plant files), and a deliberate forger with that access
//! is outside what the seal defends against.

use std::io::{Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ferry_core::{Digest, EntryPath};
use rustix::fs::FlockOperation;
use rustix::io::Errno;

use crate::error::FetchError;
use crate::write::{DestDir, hash_reader};

/// How often a waiting fetch retries a held lock.
const LOCK_POLL: Duration = Duration::from_millis(50);
/// Permissions of cache files: read-only, since destinations may be hard
/// links to them.
pub const CACHE_MODE: u32 = 0o444;

/// An open cache directory.
pub struct Cache {
    root: PathBuf,
    objects: DestDir,
}

/// An exclusive hold on one digest; released when the last clone drops.
/// Its file holds the entry's seal.
#[derive(Clone)]
pub struct CacheLock {
    file: Arc<std::fs::File>,
}

/// How a lookup found an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hit {
    /// The seal matched: used without reading it.
    Sealed,
    /// Hashed again (no seal, or it no longer matched), and intact.
    Rehashed,
}

impl Cache {
    pub fn open(root: &Path) -> Result<Self, FetchError> {
        let objects = DestDir::open(root)?;
        std::fs::create_dir_all(root.join("locks"))
            .map_err(|e| FetchError::io(format!("creating {}/locks", root.display()), e))?;
        Ok(Self {
            root: root.to_path_buf(),
            objects,
        })
    }

    /// The cache's place for `digest`, relative to its root.
    pub fn entry_path(digest: &Digest) -> EntryPath {
        let hex = digest.hex();
        // 2 + 64 hex digits under a fixed prefix: always a valid entry path.
        EntryPath::parse(&format!("sha256/{}/{hex}", &hex[..2]))
            .unwrap_or_else(|_| unreachable!("hex digest paths are valid"))
    }

    pub fn objects(&self) -> &DestDir {
        &self.objects
    }

    /// Waits for the exclusive lock on `digest` (cancellable: the caller's
    /// timeout drops this future between polls).
    pub async fn lock(&self, digest: &Digest) -> Result<CacheLock, FetchError> {
        let path = self.root.join("locks").join(digest.hex());
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| FetchError::io(format!("opening lock {}", path.display()), e))?;
        loop {
            match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {
                    return Ok(CacheLock {
                        file: Arc::new(file),
                    });
                }
                Err(Errno::WOULDBLOCK | Errno::INTR) => tokio::time::sleep(LOCK_POLL).await,
                Err(e) => {
                    return Err(FetchError::io(
                        format!("locking {}", path.display()),
                        std::io::Error::from_raw_os_error(e.raw_os_error()),
                    ));
                }
            }
        }
    }

    /// The verified cache file for `digest`, if present and intact: trusted
    /// as it is when its seal matches, else hashed (and sealed again, or
    /// removed when it no longer hashes to its name, so it is re-fetched).
    /// Call with the digest's lock held. Blocking: run off the runtime.
    pub fn lookup(
        &self,
        lock: &CacheLock,
        digest: &Digest,
    ) -> Result<Option<(PathBuf, Hit)>, FetchError> {
        let entry = Self::entry_path(digest);
        let Some(mut file) = self.objects.existing(&entry)? else {
            return Ok(None);
        };
        let path = self.root.join(entry.as_str());
        let meta = file
            .metadata()
            .map_err(|e| FetchError::io(format!("reading {}", path.display()), e))?;
        if meta.mode() & 0o7777 == CACHE_MODE && read_seal(lock) == Some(seal_of(&meta)) {
            return Ok(Some((path, Hit::Sealed)));
        }
        let actual = hash_reader(&mut file)
            .map_err(|e| FetchError::io(format!("reading {}", path.display()), e))?
            .finish();
        if actual == *digest {
            tracing::info!(path = %path.display(), "unsealed cache file verified");
            rustix::fs::fchmod(&file, rustix::fs::Mode::from_raw_mode(CACHE_MODE)).map_err(
                |e| {
                    FetchError::io(
                        format!("making {} read-only", path.display()),
                        std::io::Error::from_raw_os_error(e.raw_os_error()),
                    )
                },
            )?;
            self.seal(lock, digest)?;
            return Ok(Some((path, Hit::Rehashed)));
        }
        tracing::warn!(path = %path.display(), %actual, "corrupt cache file removed");
        let _ = std::fs::remove_file(&path);
        Ok(None)
    }

    /// Records the seal of the (just verified, committed) entry for
    /// `digest` in its lock file. Call with the lock held.
    pub fn seal(&self, lock: &CacheLock, digest: &Digest) -> Result<(), FetchError> {
        let path = self.root.join(Self::entry_path(digest).as_str());
        let meta = std::fs::symlink_metadata(&path)
            .map_err(|e| FetchError::io(format!("reading {}", path.display()), e))?;
        let mut file: &std::fs::File = &lock.file;
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(seal_of(&meta).as_bytes()))
            .map_err(|e| FetchError::io(format!("sealing {}", path.display()), e))
    }
}

/// The seal of a cache file: what a write or a replacement would change.
fn seal_of(meta: &std::fs::Metadata) -> String {
    format!(
        "ferry-cache-seal v1 dev={} ino={} size={} mtime={}.{:09}\n",
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec()
    )
}

fn read_seal(lock: &CacheLock) -> Option<String> {
    let mut file: &std::fs::File = &lock.file;
    let mut text = String::new();
    file.rewind().ok()?;
    file.take(256).read_to_string(&mut text).ok()?;
    Some(text)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn concurrent_holders_of_one_digest_take_turns() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(Cache::open(dir.path()).unwrap());
        let digest = Digest::of(b"x");
        let inside = Arc::new(AtomicU32::new(0));
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (cache, inside) = (cache.clone(), inside.clone());
            tasks.push(tokio::spawn(async move {
                let _lock = cache.lock(&digest).await.unwrap();
                assert_eq!(
                    inside.fetch_add(1, Ordering::SeqCst),
                    0,
                    "two holders at once"
                );
                tokio::time::sleep(Duration::from_millis(30)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    }

    #[tokio::test]
    async fn sealed_entries_are_trusted_and_anything_else_is_hashed_again() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let digest = Digest::of(b"content");
        let lock = cache.lock(&digest).await.unwrap();
        assert!(cache.lookup(&lock, &digest).unwrap().is_none());
        let entry = Cache::entry_path(&digest);
        let mut partial = cache.objects().partial(&entry).unwrap();
        partial.file.write_all(b"content").unwrap();
        partial.commit(CACHE_MODE).unwrap();
        cache.seal(&lock, &digest).unwrap();
        let (found, hit) = cache.lookup(&lock, &digest).unwrap().unwrap();
        assert_eq!(hit, Hit::Sealed);
        assert_eq!(std::fs::read(&found).unwrap(), b"content");

        // A seal from another version of the file (here: none) means a hash.
        std::fs::write(dir.path().join("locks").join(digest.hex()), b"").unwrap();
        let (_, hit) = cache.lookup(&lock, &digest).unwrap().unwrap();
        assert_eq!(hit, Hit::Rehashed);
        assert_eq!(
            cache.lookup(&lock, &digest).unwrap().unwrap().1,
            Hit::Sealed
        );

        // A write through a link (mtime and size change) is caught.
        let mut perms = std::fs::metadata(&found).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
        std::fs::set_permissions(&found, perms).unwrap();
        std::fs::write(&found, b"tampered").unwrap();
        assert!(cache.lookup(&lock, &digest).unwrap().is_none());
        assert!(!found.exists());
    }
}
