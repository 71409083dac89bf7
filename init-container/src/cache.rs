//! The node-local, content-addressed cache (`--cache-dir`, a hostPath).
//!
//! Layout: `sha256/<2 hex>/<64 hex>` holds verified files (read-only),
//! `locks/<64 hex>` are lock files. A fetch of a known digest holds an
//! exclusive `flock` on its lock file while it looks, downloads and inserts,
//! so init containers of several pods on one node never download the same
//! blob twice at once nor see a half-written cache file; the second waits,
//! then finds it. The lock is released when the process dies, so a crashed
//! pod never wedges the node; its partial download is resumed by the next.

use std::path::{Path, PathBuf};
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

/// An exclusive hold on one digest; released on drop.
pub struct CacheLock {
    _file: std::fs::File,
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
            .write(true)
            .open(&path)
            .map_err(|e| FetchError::io(format!("opening lock {}", path.display()), e))?;
        loop {
            match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(CacheLock { _file: file }),
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

    /// The verified cache file for `digest`, if present and intact. A file
    /// that no longer hashes to its name is removed (and so re-fetched).
    /// Call with the digest's lock held. Blocking: run off the runtime.
    pub fn lookup(&self, digest: &Digest) -> Result<Option<PathBuf>, FetchError> {
        let entry = Self::entry_path(digest);
        let Some(mut file) = self.objects.existing(&entry)? else {
            return Ok(None);
        };
        let path = self.root.join(entry.as_str());
        let actual = hash_reader(&mut file)
            .map_err(|e| FetchError::io(format!("reading {}", path.display()), e))?
            .finish();
        if actual == *digest {
            return Ok(Some(path));
        }
        tracing::warn!(path = %path.display(), %actual, "corrupt cache file removed");
        let _ = std::fs::remove_file(&path);
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::write::DEFAULT_MODE;

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

    #[test]
    fn lookup_finds_intact_files_and_drops_corrupt_ones() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let digest = Digest::of(b"content");
        assert!(cache.lookup(&digest).unwrap().is_none());
        let entry = Cache::entry_path(&digest);
        let mut partial = cache.objects().partial(&entry).unwrap();
        partial.file.write_all(b"content").unwrap();
        partial.commit(DEFAULT_MODE).unwrap();
        let found = cache.lookup(&digest).unwrap().unwrap();
        assert_eq!(std::fs::read(&found).unwrap(), b"content");
        std::fs::write(&found, b"tampered").unwrap();
        assert!(cache.lookup(&digest).unwrap().is_none());
        assert!(!found.exists());
    }
}
