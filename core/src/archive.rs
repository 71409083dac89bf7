//! Archives as Spark sees them (`--archives`, `spark.archives`): which kind
//! a file name means, and which entry names and link targets inside one are
//! safe to create under the target directory.
//!
//! The kind follows Spark's `Utils.unpack`: the lower-cased file name's
//! suffix (`.jar`, `.zip`, `.tar.gz` / `.tgz`, `.tar`); anything else is
//! delivered as a file. The checks here are pure so the client (choosing
//! what to unpack), ferry-init (before it creates an entry) and the fuzz
//! target share them. They are the first line only: ferry-init also creates
//! every entry through an `O_NOFOLLOW` directory walk, so a name that passes
//! here still cannot reach outside the target through a symlink.

use std::fmt;

use crate::{EntryPath, PathError};

/// Longest symlink target kept (Linux `PATH_MAX` less the NUL).
pub const MAX_LINK_TARGET_BYTES: usize = 4095;

/// How an archive is unpacked, chosen by its file name as Spark does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArchiveKind {
    /// `.jar`: a zip (Spark's "unjar").
    Jar,
    Zip,
    /// `.tar.gz` or `.tgz`.
    TarGz,
    Tar,
}

impl ArchiveKind {
    /// The kind Spark would pick for `file_name`, or `None` when Spark
    /// delivers it as a plain file.
    pub fn from_name(file_name: &str) -> Option<Self> {
        let lower = file_name.to_ascii_lowercase();
        if lower.ends_with(".jar") {
            Some(Self::Jar)
        } else if lower.ends_with(".zip") {
            Some(Self::Zip)
        } else if lower.ends_with(".tar.gz") || lower.ends_with(".tgz") {
            Some(Self::TarGz)
        } else if lower.ends_with(".tar") {
            Some(Self::Tar)
        } else {
            None
        }
    }

    /// Whether entries come from the zip format (central directory).
    pub fn is_zip(self) -> bool {
        matches!(self, Self::Jar | Self::Zip)
    }
}

impl fmt::Display for ArchiveKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Jar => "jar",
            Self::Zip => "zip",
            Self::TarGz => "tar.gz",
            Self::Tar => "tar",
        })
    }
}

/// Why an entry name or link target is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveNameError {
    #[error("name is not UTF-8")]
    NotUtf8,
    #[error("name is absolute")]
    Absolute,
    #[error("name has a '..' segment")]
    Traversal,
    #[error("name has a backslash (a Windows separator or UNC form)")]
    Backslash,
    #[error("name has a NUL byte")]
    Nul,
    #[error("link target is empty")]
    EmptyTarget,
    #[error("link target is {0} bytes long; at most {MAX_LINK_TARGET_BYTES} are allowed")]
    TargetTooLong(usize),
    #[error(transparent)]
    Path(#[from] PathError),
}

/// The path an archive entry named `raw` lands at under the target, or
/// `None` for the archive's root itself (`./`, `.`). Leading `./` segments
/// and a trailing `/` (directories) are dropped, as tar and unzip do; the
/// rest must be an [`EntryPath`]: relative, no `..`, no backslash, no drive
/// prefix, bounded in length and depth.
pub fn entry_name(raw: &[u8]) -> Result<Option<EntryPath>, ArchiveNameError> {
    let text = std::str::from_utf8(raw).map_err(|_| ArchiveNameError::NotUtf8)?;
    if text.contains('\0') {
        return Err(ArchiveNameError::Nul);
    }
    // Checked before EntryPath so the error says what the attack is.
    if text.starts_with('/') {
        return Err(ArchiveNameError::Absolute);
    }
    if text.contains('\\') {
        return Err(ArchiveNameError::Backslash);
    }
    if text.split('/').any(|segment| segment == "..") {
        return Err(ArchiveNameError::Traversal);
    }
    let mut rest = text;
    while let Some(stripped) = rest.strip_prefix("./") {
        rest = stripped.trim_start_matches('/');
    }
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest == "." {
        return Ok(None);
    }
    Ok(Some(EntryPath::parse(rest)?))
}

/// The entry a hard link points at: a name of the same archive, checked
/// like any entry name (it may not be the root).
pub fn hard_link_target(raw: &[u8]) -> Result<EntryPath, ArchiveNameError> {
    entry_name(raw)?.ok_or(ArchiveNameError::EmptyTarget)
}

/// A symlink's target, kept as written. It may be absolute or climb with
/// `..` (venv-pack and conda-pack archives link to the image's Python):
/// extraction never follows a link, so the target only matters to whoever
/// later reads through it in the pod. Refused: empty, NUL, over
/// [`MAX_LINK_TARGET_BYTES`], not UTF-8.
pub fn symlink_target(raw: &[u8]) -> Result<&str, ArchiveNameError> {
    let text = std::str::from_utf8(raw).map_err(|_| ArchiveNameError::NotUtf8)?;
    if text.is_empty() {
        return Err(ArchiveNameError::EmptyTarget);
    }
    if text.contains('\0') {
        return Err(ArchiveNameError::Nul);
    }
    if text.len() > MAX_LINK_TARGET_BYTES {
        return Err(ArchiveNameError::TargetTooLong(text.len()));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kind_follows_sparks_suffix_rule() {
        for (name, kind) in [
            ("env.tar.gz", Some(ArchiveKind::TarGz)),
            ("ENV.TGZ", Some(ArchiveKind::TarGz)),
            ("env.tar", Some(ArchiveKind::Tar)),
            ("env.zip", Some(ArchiveKind::Zip)),
            ("lib.Jar", Some(ArchiveKind::Jar)),
            ("env.tar.xz", None),
            ("data.gz", None),
        ] {
            assert_eq!(ArchiveKind::from_name(name), kind, "{name}");
        }
    }

    #[test]
    fn entry_names_stay_inside_the_target() {
        let ok = |raw: &str| entry_name(raw.as_bytes()).unwrap().map(|p| p.to_string());
        assert_eq!(ok("./bin/python").as_deref(), Some("bin/python"));
        assert_eq!(ok("lib/").as_deref(), Some("lib"));
        assert_eq!(ok("./"), None);
        assert_eq!(ok("."), None);
        let refused = |raw: &[u8]| entry_name(raw).unwrap_err();
        assert_eq!(refused(b"../x"), ArchiveNameError::Traversal);
        assert_eq!(refused(b"a/../../x"), ArchiveNameError::Traversal);
        assert_eq!(refused(b"/abs/x"), ArchiveNameError::Absolute);
        assert_eq!(refused(b"..\\..\\x"), ArchiveNameError::Backslash);
        assert_eq!(
            refused(b"\\\\server\\share\\x"),
            ArchiveNameError::Backslash
        );
        assert_eq!(
            refused(b"C:/x"),
            ArchiveNameError::Path(PathError::DrivePrefix)
        );
        assert_eq!(refused(b"a\0b"), ArchiveNameError::Nul);
        assert_eq!(refused(b"\xff"), ArchiveNameError::NotUtf8);
        assert!(hard_link_target(b"./").is_err());
    }

    #[test]
    fn symlink_targets_are_kept_as_written_but_bounded() {
        assert_eq!(
            symlink_target(b"/usr/bin/python3").unwrap(),
            "/usr/bin/python3"
        );
        assert_eq!(symlink_target(b"../lib").unwrap(), "../lib");
        assert!(symlink_target(b"").is_err());
        assert!(symlink_target(&vec![b'a'; 5000]).is_err());
    }
}
