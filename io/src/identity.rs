//! Which file a path is, from one `stat`: to trust what was read or checked
//! from it earlier without reading it again.
//!
//! A [`FileIdentity`] holds the device, inode, size, modification time and
//! status-change time (both to the nanosecond). A file replaced under the
//! same name has another inode; a write through any link changes the
//! modification time; a `touch -d` or `cp -p` that puts an old modification
//! time back still moves the change time, which no user can set.
//!
//! Two comparisons, for two kinds of trust:
//! - `==` compares everything, change time included: the strict check, for
//!   a file whose metadata nothing is expected to touch.
//! - [`FileIdentity::unchanged_since`] leaves the change time out. Hard
//!   links (`link`, `unlink` of another name), `chmod` and `chown` all move
//!   the change time without touching a byte, so a file that is linked into
//!   place over and over, like an entry of ferry-init's node cache, would
//!   never look unchanged by `==`.
//!
//! The text form (`Display`, `FromStr`, and serde through it) is stable:
//! `dev=64769 ino=1234 size=42 mtime=1700000000.000000001 ctime=…`.

use std::fmt;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt as _;
use std::str::FromStr;

/// A point in time as the file system keeps it: seconds since the epoch
/// (negative before 1970) and nanoseconds within that second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileTime {
    pub seconds: i64,
    pub nanos: u32,
}

impl FileTime {
    fn new(seconds: i64, nanos: i64) -> Self {
        Self {
            seconds,
            // The kernel keeps it in 0..1e9; clamp rather than trust a cast.
            nanos: u32::try_from(nanos.clamp(0, 999_999_999)).unwrap_or(0),
        }
    }
}

impl fmt::Display for FileTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:09}", self.seconds, self.nanos)
    }
}

impl FromStr for FileTime {
    type Err = IdentityParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || IdentityParseError(format!("bad time {text:?}"));
        let (seconds, nanos) = text.split_once('.').ok_or_else(bad)?;
        if nanos.len() != 9 || !nanos.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let nanos: u32 = nanos.parse().map_err(|_| bad())?;
        Ok(Self {
            seconds: seconds.parse().map_err(|_| bad())?,
            nanos,
        })
    }
}

/// Which file, and which version of it: see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct FileIdentity {
    pub device: u64,
    pub inode: u64,
    pub size: u64,
    /// Last change of the contents (`st_mtime`).
    pub modified: FileTime,
    /// Last change of the contents or the metadata (`st_ctime`).
    pub changed: FileTime,
}

/// A text that is not a [`FileIdentity`]'s text form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a file identity: {0}")]
pub struct IdentityParseError(String);

impl FileIdentity {
    /// The identity `meta` (from `stat`, `fstat` or `lstat`) describes.
    pub fn of(meta: &Metadata) -> Self {
        Self {
            device: meta.dev(),
            inode: meta.ino(),
            size: meta.size(),
            modified: FileTime::new(meta.mtime(), meta.mtime_nsec()),
            changed: FileTime::new(meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// Whether this is the file `earlier` described with its contents
    /// unchanged: device, inode, size and modification time agree. The
    /// change time is left out on purpose (see the module docs).
    pub fn unchanged_since(&self, earlier: &FileIdentity) -> bool {
        self.device == earlier.device
            && self.inode == earlier.inode
            && self.size == earlier.size
            && self.modified == earlier.modified
    }
}

impl fmt::Display for FileIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "dev={} ino={} size={} mtime={} ctime={}",
            self.device, self.inode, self.size, self.modified, self.changed
        )
    }
}

impl FromStr for FileIdentity {
    type Err = IdentityParseError;

    /// Reads exactly the [`Display`](fmt::Display) form: these five fields
    /// in this order, separated by single spaces.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut fields = text.split(' ');
        let mut field = |key: &str| {
            fields
                .next()
                .and_then(|field| field.strip_prefix(key))
                .and_then(|rest| rest.strip_prefix('='))
                .ok_or_else(|| IdentityParseError(format!("{text:?} lacks {key}= in its place")))
        };
        let number = |value: &str| {
            let bad = || IdentityParseError(format!("bad number {value:?} in {text:?}"));
            if !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            value.parse::<u64>().map_err(|_| bad())
        };
        let identity = Self {
            device: number(field("dev")?)?,
            inode: number(field("ino")?)?,
            size: number(field("size")?)?,
            modified: field("mtime")?.parse()?,
            changed: field("ctime")?.parse()?,
        };
        if fields.next().is_some() {
            return Err(IdentityParseError(format!(
                "{text:?} has more than five fields"
            )));
        }
        Ok(identity)
    }
}

impl From<FileIdentity> for String {
    fn from(identity: FileIdentity) -> Self {
        identity.to_string()
    }
}

impl TryFrom<String> for FileIdentity {
    type Error = IdentityParseError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity_of(path: &std::path::Path) -> FileIdentity {
        FileIdentity::of(&std::fs::symlink_metadata(path).unwrap())
    }

    #[test]
    fn the_text_form_round_trips_and_is_stable() {
        let identity = FileIdentity {
            device: 64769,
            inode: 1234,
            size: 42,
            modified: FileTime {
                seconds: 1_700_000_000,
                nanos: 1,
            },
            changed: FileTime {
                seconds: -5,
                nanos: 999_999_999,
            },
        };
        let text = "dev=64769 ino=1234 size=42 mtime=1700000000.000000001 ctime=-5.999999999";
        assert_eq!(identity.to_string(), text);
        assert_eq!(text.parse::<FileIdentity>(), Ok(identity));
        let json = serde_json::to_string(&identity).unwrap();
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(
            serde_json::from_str::<FileIdentity>(&json).unwrap(),
            identity
        );
    }

    #[test]
    fn other_texts_are_refused() {
        for text in [
            "",
            "dev=1 ino=2 size=3 mtime=4.000000005",
            "ino=2 dev=1 size=3 mtime=4.000000005 ctime=6.000000007",
            "dev=1 ino=2 size=3 mtime=4.5 ctime=6.000000007",
            "dev=1 ino=2 size=-3 mtime=4.000000005 ctime=6.000000007",
            "dev=1 ino=2 size=3 mtime=4.000000005 ctime=6.000000007 extra=1",
            "dev=1  ino=2 size=3 mtime=4.000000005 ctime=6.000000007",
        ] {
            assert!(text.parse::<FileIdentity>().is_err(), "{text:?}");
        }
    }

    #[test]
    fn a_hard_link_changes_ctime_but_not_the_content_identity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        let before = identity_of(&path);
        // Make sure a ctime change is visible at the file system's resolution.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::hard_link(&path, dir.path().join("link")).unwrap();
        let after = identity_of(&path);
        assert!(after.unchanged_since(&before));
        assert_ne!(after.changed, before.changed, "linking moved ctime");
        assert_ne!(after, before, "== sees the link");
    }

    #[test]
    fn a_write_or_a_replacement_is_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        let before = identity_of(&path);
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&path, b"abd").unwrap();
        assert!(
            !identity_of(&path).unchanged_since(&before),
            "same size, new mtime"
        );
        let replacement = dir.path().join("g");
        std::fs::write(&replacement, b"abc").unwrap();
        std::fs::rename(&replacement, &path).unwrap();
        let replaced = identity_of(&path);
        assert_ne!(replaced.inode, before.inode);
        assert!(!replaced.unchanged_since(&before));
    }
}
