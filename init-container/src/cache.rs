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
//! seal: the entry's [`FileIdentity`] (device, inode, size, modification
//! and change times). A hit whose seal still matches is used as it is, with
//! no re-hash: linking a 1 GiB jar costs a `stat`, not a read of 1 GiB.
//! Anything else (no seal, a seal of an older format, another device, inode,
//! size or mtime, write permission) is hashed again before use and removed
//! if it does not match. The change time is recorded but not compared
//! ([`FileIdentity::unchanged_since`]): every hard link handed to a pod
//! moves it, so comparing it would re-hash on every hit. Writing through a
//! hard link given to a pod changes the mtime, so an accidental write is
//! caught; the cache directory
//! itself must be writable only by ferry-init (like any hostPath, whoever
//! can write it can plant files), and a deliberate forger with that access
//! is outside what the seal defends against.

use std::io::{Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ferry_core::{Digest, EntryPath};
use ferry_io::durable::errno_io;
use ferry_io::{FileIdentity, hash_reader};
use rustix::fs::FlockOperation;
use rustix::io::Errno;

use crate::error::FetchError;
use crate::write::DestDir;

/// How often a waiting fetch retries a held lock.
const LOCK_POLL: Duration = Duration::from_millis(50);
/// Permissions of cache files: read-only, since destinations may be hard
/// links to them.
pub const CACHE_MODE: u32 = 0o444;
/// The first word of a seal; a seal of another format reads as none.
const SEAL_PREFIX: &str = "ferry-cache-seal v2 ";

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
        self.lock_file(self.root.join("locks").join(digest.hex()))
            .await
    }

    /// The lock on the unpacked tree of archive `digest` (a lock of its
    /// own: building a tree takes the archive's lock too).
    pub async fn lock_tree(&self, digest: &Digest) -> Result<CacheLock, FetchError> {
        self.lock_file(
            self.root
                .join("locks")
                .join(format!("tree-{}", digest.hex())),
        )
        .await
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    async fn lock_file(&self, path: PathBuf) -> Result<CacheLock, FetchError> {
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
                        errno_io(e),
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
        let Some(file) = self.objects.existing(&entry)? else {
            return Ok(None);
        };
        let path = self.root.join(entry.as_str());
        let meta = file
            .metadata()
            .map_err(|e| FetchError::io(format!("reading {}", path.display()), e))?;
        let sealed =
            read_seal(lock).is_some_and(|seal| FileIdentity::of(&meta).unchanged_since(&seal));
        if meta.mode() & 0o7777 == CACHE_MODE && sealed {
            return Ok(Some((path, Hit::Sealed)));
        }
        let actual = hash_reader(&file)
            .map_err(|e| FetchError::io(format!("reading {}", path.display()), e))?
            .finish();
        if actual == *digest {
            tracing::info!(path = %path.display(), "unsealed cache file verified");
            rustix::fs::fchmod(&file, rustix::fs::Mode::from_raw_mode(CACHE_MODE)).map_err(
                |e| FetchError::io(format!("making {} read-only", path.display()), errno_io(e)),
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
            .and_then(|()| {
                let seal = format!("{SEAL_PREFIX}{}\n", FileIdentity::of(&meta));
                file.write_all(seal.as_bytes())
            })
            .map_err(|e| FetchError::io(format!("sealing {}", path.display()), e))
    }
}

/// The identity a lock file's seal records, if it holds one in the current
/// format. An older seal (`v1`, before the change time was kept) reads as
/// none, so its entry is hashed once more and sealed again: the safe path.
fn read_seal(lock: &CacheLock) -> Option<FileIdentity> {
    let mut file: &std::fs::File = &lock.file;
    let mut text = String::new();
    file.rewind().ok()?;
    file.take(256).read_to_string(&mut text).ok()?;
    text.strip_prefix(SEAL_PREFIX)?.trim_end().parse().ok()
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

        // A seal of the first format (no change time) is read as none:
        // hashed once more, then sealed in the current format.
        let meta = std::fs::metadata(&found).unwrap();
        let v1 = format!(
            "ferry-cache-seal v1 dev={} ino={} size={} mtime={}.{:09}\n",
            meta.dev(),
            meta.ino(),
            meta.size(),
            meta.mtime(),
            meta.mtime_nsec()
        );
        std::fs::write(dir.path().join("locks").join(digest.hex()), v1).unwrap();
        let (_, hit) = cache.lookup(&lock, &digest).unwrap().unwrap();
        assert_eq!(hit, Hit::Rehashed);
        let seal = std::fs::read_to_string(dir.path().join("locks").join(digest.hex())).unwrap();
        assert!(seal.starts_with(SEAL_PREFIX), "{seal}");

        // Linking the entry into a destination moves its change time, and
        // the seal still holds (the pause lets the change time move).
        std::thread::sleep(Duration::from_millis(20));
        std::fs::hard_link(&found, dir.path().join("linked")).unwrap();
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
