//! Entry paths: where a file of a bundle lands, relative to its destination.
//!
//! The server refuses a manifest with a bad path and `ferry-init` checks
//! again before it writes, so both use this one parser.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use unicode_normalization::{IsNormalized, is_nfc_quick};

/// Longest entry path accepted, in bytes (Linux `PATH_MAX` is 4096 for the
/// whole path; leave room for the destination directory).
pub const MAX_PATH_BYTES: usize = 1024;
/// Longest single segment, in bytes (`NAME_MAX` on Linux file systems).
pub const MAX_SEGMENT_BYTES: usize = 255;
/// Deepest nesting accepted.
pub const MAX_DEPTH: usize = 32;

/// A relative, `/`-separated, NFC-normalised UTF-8 path with no empty, `.`
/// or `..` segments, no leading `/`, no `\`, no NUL or other control
/// characters, no Windows drive prefix, and bounded length.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryPath(String);

/// Why a string is not a safe entry path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path is empty")]
    Empty,
    #[error("path is {0} bytes long; at most {MAX_PATH_BYTES} are allowed")]
    TooLong(usize),
    #[error("path has more than {MAX_DEPTH} segments")]
    TooDeep,
    #[error("path segment is {0} bytes long; at most {MAX_SEGMENT_BYTES} are allowed")]
    SegmentTooLong(usize),
    #[error("path must be relative (it starts with '/')")]
    Absolute,
    #[error("path has an empty segment ('//' or a trailing '/')")]
    EmptySegment,
    #[error("path has a '.' or '..' segment")]
    DotSegment,
    #[error("path contains a backslash")]
    Backslash,
    #[error("path contains a NUL or control character")]
    ControlCharacter,
    #[error("path starts with a Windows drive or device prefix")]
    DrivePrefix,
    #[error("path is not in Unicode normal form C")]
    NotNormalized,
    #[error(
        "path has a character that compatibility folding turns into '/', '\\' or a '.'/'..' segment"
    )]
    LookAlike,
}

impl EntryPath {
    pub fn parse(text: &str) -> Result<Self, PathError> {
        if text.is_empty() {
            return Err(PathError::Empty);
        }
        if text.len() > MAX_PATH_BYTES {
            return Err(PathError::TooLong(text.len()));
        }
        if text.starts_with('/') {
            return Err(PathError::Absolute);
        }
        if text.contains('\\') {
            return Err(PathError::Backslash);
        }
        if text.chars().any(char::is_control) {
            return Err(PathError::ControlCharacter);
        }
        if is_nfc_quick(text.chars()) != IsNormalized::Yes && !unicode_normalization::is_nfc(text) {
            return Err(PathError::NotNormalized);
        }
        let mut depth = 0;
        for (index, segment) in text.split('/').enumerate() {
            depth += 1;
            if depth > MAX_DEPTH {
                return Err(PathError::TooDeep);
            }
            match segment {
                "" => return Err(PathError::EmptySegment),
                "." | ".." => return Err(PathError::DotSegment),
                s if s.len() > MAX_SEGMENT_BYTES => {
                    return Err(PathError::SegmentTooLong(s.len()));
                }
                s if index == 0 && is_drive_prefix(s) => return Err(PathError::DrivePrefix),
                s if !s.is_ascii() && folds_into_traversal(s) => return Err(PathError::LookAlike),
                _ => {}
            }
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The segments, first to last.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The first segment: the group a whole-bundle fetch sorts this entry into.
    pub fn top_level(&self) -> &str {
        self.segments().next().unwrap_or_default()
    }

    /// The path below the first segment, if there is one.
    pub fn below_top_level(&self) -> Option<EntryPath> {
        self.0
            .split_once('/')
            .map(|(_, rest)| EntryPath(rest.to_owned()))
    }

    /// The last segment.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or_default()
    }

    /// `self/other`, checked as a whole.
    pub fn join(&self, other: &EntryPath) -> Result<EntryPath, PathError> {
        EntryPath::parse(&format!("{}/{}", self.0, other.0))
    }
}

/// Why a set of entry paths cannot all be files of one tree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    #[error("path {0} appears twice")]
    Duplicate(String),
    #[error("{file} is a file, so {path} cannot be under it")]
    UnderFile { file: String, path: String },
}

/// Checks that `paths` can all be files of one tree: none repeats and none
/// lies under another (`a` and `a/b`). The server checks this when a bundle
/// is created, and `ferry-init` again before it writes.
pub fn check_tree<'a>(paths: impl IntoIterator<Item = &'a EntryPath>) -> Result<(), TreeError> {
    let paths: Vec<&EntryPath> = paths.into_iter().collect();
    let mut seen = std::collections::HashSet::with_capacity(paths.len());
    for path in &paths {
        if !seen.insert(path.as_str()) {
            return Err(TreeError::Duplicate(path.to_string()));
        }
    }
    for path in &paths {
        let text = path.as_str();
        for (index, _) in text.match_indices('/') {
            if seen.contains(&text[..index]) {
                return Err(TreeError::UnderFile {
                    file: text[..index].to_owned(),
                    path: text.to_owned(),
                });
            }
        }
    }
    Ok(())
}

/// Whether a segment becomes a separator or a dot segment under NFKC, as
/// some archivers and file systems fold it (`．．`, `a／b`, `a＼b`).
fn folds_into_traversal(segment: &str) -> bool {
    use unicode_normalization::UnicodeNormalization as _;
    let folded: String = segment.nfkc().collect();
    folded == "." || folded == ".." || folded.contains(['/', '\\']) || is_drive_prefix(&folded)
}

/// `C:`, `c:foo`, and reserved DOS device names are refused so that a
/// manifest means the same thing whatever system unpacks it.
fn is_drive_prefix(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
        return true;
    }
    let stem = segment.split('.').next().unwrap_or_default();
    let upper = stem.to_ascii_uppercase();
    matches!(upper.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || ((upper.starts_with("COM") || upper.starts_with("LPT"))
            && upper.len() == 4
            && upper.as_bytes()[3].is_ascii_digit())
}

impl FromStr for EntryPath {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for EntryPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EntryPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl AsRef<str> for EntryPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for EntryPath {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EntryPath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        EntryPath::parse(&text).map_err(|e| serde::de::Error::custom(format!("{e}: {text:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ordinary_paths_are_accepted() {
        for ok in [
            "a.jar",
            "jars/a.jar",
            "files/conf/app.yaml",
            "x y/ü.txt",
            "a..b",
            ".hidden",
        ] {
            assert_eq!(EntryPath::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn evil_paths_are_refused_with_the_right_reason() {
        let cases: &[(&str, PathError)] = &[
            ("", PathError::Empty),
            ("/etc/passwd", PathError::Absolute),
            ("../x", PathError::DotSegment),
            ("a/../../x", PathError::DotSegment),
            ("a/./x", PathError::DotSegment),
            ("a//x", PathError::EmptySegment),
            ("a/", PathError::EmptySegment),
            ("a\\..\\x", PathError::Backslash),
            ("a\0b", PathError::ControlCharacter),
            ("a\nb", PathError::ControlCharacter),
            ("C:/windows", PathError::DrivePrefix),
            ("c:x", PathError::DrivePrefix),
            ("NUL.txt", PathError::DrivePrefix),
            ("com1", PathError::DrivePrefix),
            ("e\u{301}", PathError::NotNormalized),
            ("\u{ff0e}\u{ff0e}/x", PathError::LookAlike),
            ("a/\u{ff0e}", PathError::LookAlike),
            ("a\u{ff0f}..\u{ff0f}x", PathError::LookAlike),
            ("a\u{ff3c}b", PathError::LookAlike),
            ("\u{ff23}\u{ff1a}x", PathError::LookAlike),
        ];
        for (text, want) in cases {
            assert_eq!(
                EntryPath::parse(text).as_ref().err(),
                Some(want),
                "{text:?}"
            );
        }
        // Non-ASCII names that fold to nothing dangerous stay allowed.
        for fine in ["données/été.csv", "日本語/ファイル.jar", "a\u{2024}b"] {
            assert!(EntryPath::parse(fine).is_ok(), "{fine:?}");
        }
        assert!(matches!(
            EntryPath::parse(&"a".repeat(256)),
            Err(PathError::SegmentTooLong(256))
        ));
        assert!(matches!(
            EntryPath::parse(&"ab/".repeat(400)),
            Err(PathError::TooLong(_))
        ));
        assert_eq!(
            EntryPath::parse("a/".repeat(33).trim_end_matches('/')),
            Err(PathError::TooDeep)
        );
    }

    #[test]
    fn a_tree_has_no_repeated_path_and_no_file_above_another() {
        let p = |t: &str| EntryPath::parse(t).unwrap();
        let ok = [p("jars/a.jar"), p("jars/b.jar"), p("files/a.jar")];
        assert_eq!(check_tree(&ok), Ok(()));
        assert_eq!(
            check_tree(&[p("a.jar"), p("a.jar")]),
            Err(TreeError::Duplicate("a.jar".into()))
        );
        assert_eq!(
            check_tree(&[p("a/b/c"), p("a/b")]),
            Err(TreeError::UnderFile {
                file: "a/b".into(),
                path: "a/b/c".into()
            })
        );
        assert_eq!(check_tree(&[p("ab/c"), p("a")]), Ok(()));
    }

    #[test]
    fn top_level_and_rest_split_at_the_first_slash() {
        let p = EntryPath::parse("jars/lib/a.jar").unwrap();
        assert_eq!(p.top_level(), "jars");
        assert_eq!(p.below_top_level().unwrap().as_str(), "lib/a.jar");
        assert_eq!(p.file_name(), "a.jar");
        assert!(
            EntryPath::parse("a.jar")
                .unwrap()
                .below_top_level()
                .is_none()
        );
    }

    #[test]
    fn deserialising_checks_the_path() {
        assert!(serde_json::from_str::<EntryPath>("\"../x\"").is_err());
        assert!(serde_json::from_str::<EntryPath>("\"ok/x\"").is_ok());
    }

    proptest! {
        #[test]
        fn accepted_paths_never_escape_their_root(s in "[a-z./\\\\\0]{0,40}") {
            if let Ok(p) = EntryPath::parse(&s) {
                prop_assert!(!p.as_str().starts_with('/'));
                for seg in p.segments() {
                    prop_assert!(!seg.is_empty() && seg != "." && seg != "..");
                    prop_assert!(!seg.contains('\\') && !seg.contains('\0'));
                }
            }
        }

        #[test]
        fn arbitrary_unicode_never_panics(s in "\\PC{0,64}") {
            let _ = EntryPath::parse(&s);
        }

        #[test]
        fn safe_segments_joined_are_accepted(segs in proptest::collection::vec("[a-z0-9_][a-z0-9_.-]{0,20}", 1..6)) {
            let text = segs.join("/");
            let ok = segs.iter().all(|s| s != "." && s != ".." && !is_drive_prefix(s));
            prop_assert_eq!(EntryPath::parse(&text).is_ok(), ok);
        }
    }
}
