//! ferry's jar cache: every resolved jar, copied once under its sha256
//! and with Spark's name for it (`<dir>/sha256/<hex>/<name>.jar`), so a
//! locked submission finds its bytes by digest whatever Ivy's cache layout
//! or settings, and without Java; the file name is the one staged.
//!
//! A copy, not a link: Ivy may rewrite its cache in place, and a file here
//! must keep the bytes its name promises. A cached file is hashed again
//! before it is used (it is about to be uploaded anyway), so a damaged one
//! is dropped, never staged.

use std::path::{Path, PathBuf};

use ferry_core::{Digest, EntryPath};

use super::PackagesError;
use crate::hash::hash_file;

/// The cache folder, e.g. `~/.cache/ferry/jars`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JarCache {
    dir: PathBuf,
}

impl JarCache {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// `$XDG_CACHE_HOME/ferry/jars`, else `~/.cache/ferry/jars`.
    pub fn default_dir() -> Option<PathBuf> {
        std::env::var_os("XDG_CACHE_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::home_dir().map(|h| h.join(".cache")))
            .map(|d| d.join("ferry").join("jars"))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_of(&self, digest: &Digest, name: &EntryPath) -> PathBuf {
        self.dir
            .join("sha256")
            .join(digest.hex())
            .join(name.as_str())
    }

    /// Hashes `source` and keeps a copy under its digest and `name`
    /// (unless one is there already); returns the digest, the size and the
    /// cached path.
    pub fn insert(
        &self,
        source: &Path,
        name: &EntryPath,
    ) -> Result<(Digest, u64, PathBuf), PackagesError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| PackagesError::Cache { path, source }
        };
        let (digest, size) = hash_file(source, &|_| {}).map_err(io(source))?;
        let target = self.path_of(&digest, name);
        if std::fs::metadata(&target).is_ok_and(|m| m.len() == size) {
            return Ok((digest, size, target));
        }
        let folder = target.parent().unwrap_or(&self.dir);
        std::fs::create_dir_all(folder).map_err(io(folder))?;
        let temporary = folder.join(format!(".{}.{}.part", digest.hex(), std::process::id()));
        std::fs::copy(source, &temporary)
            .and_then(|_| std::fs::rename(&temporary, &target))
            .map_err(|error| {
                let _ = std::fs::remove_file(&temporary);
                io(&target)(error)
            })?;
        Ok((digest, size, target))
    }

    /// The cached copy of `digest`, if there is one with those bytes; a
    /// copy whose bytes differ is removed.
    pub fn get(&self, digest: &Digest, name: &EntryPath) -> Result<Option<PathBuf>, PackagesError> {
        let path = self.path_of(digest, name);
        match hash_file(&path, &|_| {}) {
            Ok((actual, _)) if actual == *digest => Ok(Some(path)),
            Ok(_) => {
                self.remove(digest, name);
                Ok(None)
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(PackagesError::Cache { path, source }),
        }
    }

    /// Drops the copy of `digest` (a jar that failed its lock check).
    pub fn remove(&self, digest: &Digest, name: &EntryPath) {
        let _ = std::fs::remove_file(self.path_of(digest, name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jars_are_kept_by_digest_and_a_damaged_copy_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let cache = JarCache::new(dir.path().join("cache"));
        let jar = dir.path().join("a.jar");
        std::fs::write(&jar, b"jar bytes").unwrap();
        let name = EntryPath::parse("com.ex_a-1.jar").unwrap();
        let (digest, size, cached) = cache.insert(&jar, &name).unwrap();
        assert_eq!(digest, Digest::of(b"jar bytes"));
        assert_eq!(size, 9);
        assert_eq!(std::fs::read(&cached).unwrap(), b"jar bytes");
        assert!(cached.ends_with("com.ex_a-1.jar"), "{}", cached.display());
        // The original may go; the copy stays.
        std::fs::remove_file(&jar).unwrap();
        assert_eq!(cache.get(&digest, &name).unwrap(), Some(cached.clone()));
        std::fs::write(&cached, b"jar bytez").unwrap();
        assert_eq!(cache.get(&digest, &name).unwrap(), None);
        assert!(!cached.exists(), "a damaged copy is removed");
        assert_eq!(cache.get(&Digest::of(b"other"), &name).unwrap(), None);
    }
}
