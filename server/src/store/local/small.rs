//! Recently read small local blobs, kept in memory.
//!
//! A blob never changes once published, but its file can still go (GC,
//! `fsck --quarantine`) or be replaced behind the server's back. So every
//! hit is checked against a fresh `stat` of the file: the cached bytes are
//! served only while the file is the same one they were read from (device,
//! inode, size, modification time). A hit thus costs one `stat` instead of
//! open, stat, read and close.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use ferry_core::Digest;

/// Bytes of blobs held at most; past it the cache starts over.
const CAPACITY: usize = 8 << 20;

/// Which file the bytes came from: nothing should touch a published
/// blob, so any change of identity (ctime included) is a miss.
pub(super) type FileId = ferry_io::FileIdentity;

#[derive(Debug, Default)]
pub(super) struct SmallBlobs {
    entries: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<Digest, (FileId, Bytes)>,
    bytes: usize,
}

impl SmallBlobs {
    /// The cached bytes of `digest`, if they came from the file `file` is.
    pub(super) fn get(&self, digest: &Digest, file: FileId) -> Option<Bytes> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .map
            .get(digest)
            .filter(|(id, _)| *id == file)
            .map(|(_, bytes)| bytes.clone())
    }

    pub(super) fn insert(&self, digest: Digest, file: FileId, bytes: Bytes) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.bytes + bytes.len() > CAPACITY {
            entries.map.clear();
            entries.bytes = 0;
        }
        entries.bytes += bytes.len();
        if let Some((_, old)) = entries.map.insert(digest, (file, bytes)) {
            entries.bytes -= old.len();
        }
    }

    pub(super) fn forget(&self, digest: &Digest) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, old)) = entries.map.remove(digest) {
            entries.bytes -= old.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hit_needs_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, b"abc").unwrap();
        let digest = Digest::of(b"abc");
        let cache = SmallBlobs::default();
        let id = FileId::of(&std::fs::metadata(&path).unwrap());
        cache.insert(digest, id, Bytes::from_static(b"abc"));
        assert_eq!(cache.get(&digest, id).as_deref(), Some(&b"abc"[..]));
        // Replaced behind the server's back: another file, no hit.
        std::fs::remove_file(&path).unwrap();
        std::fs::write(dir.path().join("other"), b"xyz1").unwrap();
        std::fs::rename(dir.path().join("other"), &path).unwrap();
        let now = FileId::of(&std::fs::metadata(&path).unwrap());
        assert_eq!(cache.get(&digest, now), None);
        cache.forget(&digest);
        assert_eq!(cache.get(&digest, id), None);
    }
}
