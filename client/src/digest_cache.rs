//! The digest cache: which digest a local file had when ferry last read
//! it, so an unchanged file is never read again.
//!
//! Kept in `<cache dir>/digests.json` (`$FERRY_CACHE_DIR`, else
//! `$XDG_CACHE_HOME/ferry`, else `~/.cache/ferry`), keyed by the file's
//! absolute path and holding its [`FileIdentity`] (device, inode, size,
//! modification and change time, to the nanosecond) when it was hashed. A
//! file is taken as unchanged only if all of them still match.
//!
//! How it can be wrong: a write keeps the size and lands within the file
//! system's timestamp granularity of the write the cache saw, so the
//! modification time does not move (a "racily clean" file, as git calls
//! it). ferry guards the way git does: it records a digest only for a file
//! whose modification time is at least [`RACY_WINDOW`] older than the
//! moment it started reading it, and only if the file's identity is the
//! same after the read as before. A later write then always lands in a
//! newer timestamp and shows. What the cache cannot see is a tool that
//! rewrites a file and then resets both times (only root can set the
//! change time, by setting the clock); `FERRY_NO_DIGEST_CACHE=1` (or
//! removing the file) is for that. A wrong cached digest never stores wrong bytes
//! under a digest: the server hashes everything it is sent.
//!
//! Concurrent `ferry` runs each write the whole file (atomically, by
//! rename): the last one wins, and an entry lost that way is a cache miss.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ferry_core::Digest;
use ferry_io::identity::FileIdentity;
use serde::{Deserialize, Serialize};

/// How much older than the start of its read a file's modification time
/// must be for its digest to be recorded: 2 s, the coarsest timestamp
/// granularity in use (FAT, some network file systems).
pub const RACY_WINDOW: Duration = Duration::from_secs(2);
/// Entries kept at most; beyond, the oldest recorded go.
const MAX_ENTRIES: usize = 20_000;
const FILE_NAME: &str = "digests.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CachedDigest {
    identity: FileIdentity,
    digest: Digest,
    /// When it was recorded (seconds since the epoch), for eviction.
    recorded: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CacheFile {
    files: HashMap<PathBuf, CachedDigest>,
}

/// The digest cache of this run: loaded at the start, saved at the end.
#[derive(Debug, Default)]
pub struct DigestCache {
    /// `None`: no cache (no cache directory, or turned off).
    dir: Option<PathBuf>,
    entries: CacheFile,
    changed: bool,
}

/// The user's cache directory for ferry, if there is one.
pub fn default_dir() -> Option<PathBuf> {
    let from_env = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    from_env("FERRY_CACHE_DIR")
        .or_else(|| from_env("XDG_CACHE_HOME").map(|d| d.join("ferry")))
        .or_else(|| from_env("HOME").map(|d| d.join(".cache").join("ferry")))
}

impl DigestCache {
    /// No cache: every file is read.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// The cache in `dir`; an unreadable or damaged file is an empty cache
    /// (it is only a cache).
    pub fn load(dir: PathBuf) -> Self {
        let entries = std::fs::read(dir.join(FILE_NAME))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        Self {
            dir: Some(dir),
            entries,
            changed: false,
        }
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The digest of the file at `path` (absolute), if it is unchanged
    /// since it was recorded.
    pub fn lookup(&self, path: &Path, now: &FileIdentity) -> Option<Digest> {
        let cached = self.entries.files.get(path)?;
        (cached.identity == *now).then_some(cached.digest)
    }

    /// Whether a file of this size was recorded at `path` before: then a
    /// changed identity is most likely a `touch` or a copy of the same
    /// bytes, and hashing before uploading is the better bet.
    pub fn knew_size(&self, path: &Path, size: u64) -> bool {
        self.entries
            .files
            .get(path)
            .is_some_and(|c| c.identity.size == size)
    }

    /// Records that the file at `path` hashed to `digest`, read from
    /// `read_started` on, with identity `before` then and `after` once read:
    /// only if the guard in the module docs lets it.
    pub fn record(
        &mut self,
        path: &Path,
        before: FileIdentity,
        after: FileIdentity,
        read_started: SystemTime,
        digest: Digest,
    ) {
        if self.dir.is_none() || !trustworthy(&before, &after, read_started) {
            self.forget(path);
            return;
        }
        let recorded = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.entries.files.insert(
            path.to_owned(),
            CachedDigest {
                identity: before,
                digest,
                recorded,
            },
        );
        self.changed = true;
    }

    fn forget(&mut self, path: &Path) {
        if self.entries.files.remove(path).is_some() {
            self.changed = true;
        }
    }

    /// Writes the cache back if it changed (atomically: a temporary file
    /// renamed over the old one). A failure costs only re-reading files
    /// next time, so it is reported, not fatal.
    pub fn save(mut self) -> std::io::Result<()> {
        let Some(dir) = self.dir.take().filter(|_| self.changed) else {
            return Ok(());
        };
        let files = &mut self.entries.files;
        if files.len() > MAX_ENTRIES {
            let mut ages: Vec<u64> = files.values().map(|c| c.recorded).collect();
            ages.sort_unstable_by(|a, b| b.cmp(a));
            let cutoff = ages[MAX_ENTRIES - 1];
            files.retain(|_, c| c.recorded >= cutoff);
        }
        std::fs::create_dir_all(&dir)?;
        let bytes = serde_json::to_vec(&self.entries).map_err(std::io::Error::other)?;
        let temp = dir.join(format!("{FILE_NAME}.{}.tmp", std::process::id()));
        std::fs::write(&temp, bytes)?;
        std::fs::rename(&temp, dir.join(FILE_NAME))
    }
}

/// The guard: unchanged while read, and last modified well before the read
/// began (see the module docs).
fn trustworthy(before: &FileIdentity, after: &FileIdentity, read_started: SystemTime) -> bool {
    let Ok(started) = read_started.duration_since(SystemTime::UNIX_EPOCH) else {
        return false;
    };
    let modified = &before.modified;
    let modified = Duration::from_secs(u64::try_from(modified.seconds).unwrap_or(0))
        + Duration::from_nanos(u64::from(modified.nanos));
    before == after && modified + RACY_WINDOW <= started
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity_of(path: &Path) -> FileIdentity {
        FileIdentity::of(&std::fs::metadata(path).unwrap())
    }

    fn aged(path: &Path) {
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(3600))
            .unwrap();
    }

    #[test]
    fn an_old_unchanged_file_is_found_again_after_a_save() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.jar");
        std::fs::write(&file, b"jar").unwrap();
        aged(&file);
        let id = identity_of(&file);
        let mut cache = DigestCache::load(dir.path().join("cache"));
        cache.record(&file, id, id, SystemTime::now(), Digest::of(b"jar"));
        cache.save().unwrap();
        let cache = DigestCache::load(dir.path().join("cache"));
        assert_eq!(cache.lookup(&file, &id), Some(Digest::of(b"jar")));
        // Written again: another identity, no answer.
        std::fs::write(&file, b"JAR").unwrap();
        assert_eq!(cache.lookup(&file, &identity_of(&file)), None);
        assert!(cache.knew_size(&file, 3));
    }

    #[test]
    fn a_file_modified_just_before_its_read_or_during_it_is_not_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fresh.jar");
        std::fs::write(&file, b"fresh").unwrap();
        let fresh = identity_of(&file);
        let mut cache = DigestCache::load(dir.path().join("cache"));
        cache.record(&file, fresh, fresh, SystemTime::now(), Digest::of(b"x"));
        assert_eq!(cache.lookup(&file, &fresh), None, "racily clean");
        aged(&file);
        let before = identity_of(&file);
        std::fs::write(&file, b"other").unwrap();
        let after = identity_of(&file);
        cache.record(&file, before, after, SystemTime::now(), Digest::of(b"x"));
        assert_eq!(cache.lookup(&file, &before), None, "changed while read");
    }

    #[test]
    fn a_damaged_cache_file_is_an_empty_cache() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), b"{not json").unwrap();
        let cache = DigestCache::load(dir.path().to_owned());
        let file = dir.path().join(FILE_NAME);
        assert_eq!(cache.lookup(&file, &identity_of(&file)), None);
    }
}
