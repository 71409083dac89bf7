//! Turning the paths a user names into bundle entries: a file lands at its
//! base name (or under a given folder), a folder with its relative contents
//! under its own name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ferry_core::EntryPath;

/// One local file and the entry path it gets in the bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalFile {
    pub source: PathBuf,
    pub path: EntryPath,
    /// Whether any execute bit is set (kept as mode 0755 in the bundle).
    pub executable: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("{path}: {reason}")]
    Io {
        path: String,
        reason: std::io::Error,
    },
    #[error("{path}: symlink loop (it leads back to {ancestor})")]
    Loop { path: String, ancestor: String },
    #[error("{path}: cannot be a bundle entry: {reason}")]
    BadName { path: String, reason: String },
    #[error("both {first} and {second} would land at {entry}; rename one or stage them separately")]
    Collision {
        entry: String,
        first: String,
        second: String,
    },
    #[error("{0}: not a regular file or folder")]
    Special(String),
}

/// Collects `paths` (files and folders) under `prefix` (an entry folder, or
/// none), following symlinks to files and folders.
pub fn collect(paths: &[PathBuf], prefix: Option<&str>) -> Result<Vec<LocalFile>, CollectError> {
    let mut found: BTreeMap<String, LocalFile> = BTreeMap::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|reason| CollectError::Io {
            path: path.display().to_string(),
            reason,
        })?;
        let base = base_name(path)?;
        let entry_base = match prefix {
            Some(prefix) => format!("{prefix}/{base}"),
            None => base,
        };
        if meta.is_dir() {
            use std::os::unix::fs::MetadataExt as _;
            let mut ancestors = vec![((meta.dev(), meta.ino()), path.clone())];
            walk(path, &entry_base, &mut found, &mut ancestors)?;
        } else if meta.is_file() {
            add(&mut found, path, &entry_base, &meta)?;
        } else {
            return Err(CollectError::Special(path.display().to_string()));
        }
    }
    Ok(found.into_values().collect())
}

fn base_name(path: &Path) -> Result<String, CollectError> {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let name = absolute
        .components()
        .next_back()
        .and_then(|c| c.as_os_str().to_str())
        .filter(|n| *n != "/" && *n != "." && *n != "..")
        .ok_or_else(|| CollectError::BadName {
            path: path.display().to_string(),
            reason: "no usable file name (name a file or folder, not / or ..)".into(),
        })?;
    Ok(name.to_owned())
}

fn add(
    found: &mut BTreeMap<String, LocalFile>,
    source: &Path,
    entry: &str,
    meta: &std::fs::Metadata,
) -> Result<(), CollectError> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = EntryPath::parse(entry).map_err(|e| CollectError::BadName {
        path: source.display().to_string(),
        reason: e.to_string(),
    })?;
    if let Some(existing) = found.get(entry) {
        return Err(CollectError::Collision {
            entry: entry.to_owned(),
            first: existing.source.display().to_string(),
            second: source.display().to_string(),
        });
    }
    found.insert(
        entry.to_owned(),
        LocalFile {
            source: source.to_path_buf(),
            path,
            executable: meta.permissions().mode() & 0o111 != 0,
        },
    );
    Ok(())
}

fn walk(
    dir: &Path,
    entry: &str,
    found: &mut BTreeMap<String, LocalFile>,
    ancestors: &mut Vec<((u64, u64), PathBuf)>,
) -> Result<(), CollectError> {
    let io = |reason| CollectError::Io {
        path: dir.display().to_string(),
        reason,
    };
    let mut children: Vec<_> = std::fs::read_dir(dir)
        .map_err(io)?
        .collect::<Result<_, _>>()
        .map_err(io)?;
    children.sort_by_key(|c| c.file_name());
    for child in children {
        let path = child.path();
        let name = child.file_name();
        let name = name.to_str().ok_or_else(|| CollectError::BadName {
            path: path.display().to_string(),
            reason: "file name is not UTF-8".into(),
        })?;
        let meta = std::fs::metadata(&path).map_err(|reason| CollectError::Io {
            path: path.display().to_string(),
            reason,
        })?;
        let child_entry = format!("{entry}/{name}");
        if meta.is_dir() {
            use std::os::unix::fs::MetadataExt as _;
            let id = (meta.dev(), meta.ino());
            if let Some((_, ancestor)) = ancestors.iter().find(|(a, _)| *a == id) {
                return Err(CollectError::Loop {
                    path: path.display().to_string(),
                    ancestor: ancestor.display().to_string(),
                });
            }
            ancestors.push((id, path.clone()));
            walk(&path, &child_entry, found, ancestors)?;
            ancestors.pop();
        } else if meta.is_file() {
            add(found, &path, &child_entry, &meta)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_land_at_base_name_and_folders_under_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let libs = dir.path().join("libs");
        std::fs::create_dir_all(libs.join("sub")).unwrap();
        std::fs::write(libs.join("a.jar"), b"a").unwrap();
        std::fs::write(libs.join("sub/b.jar"), b"b").unwrap();
        std::fs::write(dir.path().join("conf.yaml"), b"c").unwrap();
        let got = collect(&[libs, dir.path().join("conf.yaml")], None).unwrap();
        let paths: Vec<&str> = got.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["conf.yaml", "libs/a.jar", "libs/sub/b.jar"]);
        let got = collect(&[dir.path().join("conf.yaml")], Some("files")).unwrap();
        assert_eq!(got[0].path.as_str(), "files/conf.yaml");
    }

    #[test]
    fn a_symlink_loop_is_named_not_followed_forever() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/a"), b"a").unwrap();
        std::os::unix::fs::symlink("..", root.join("sub/up")).unwrap();
        let err = collect(&[root], None).unwrap_err().to_string();
        assert!(
            err.contains("symlink loop") && err.contains("sub/up"),
            "{err}"
        );
    }

    #[test]
    fn two_files_with_one_name_are_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["x", "y"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
            std::fs::write(dir.path().join(d).join("a.jar"), d).unwrap();
        }
        let err = collect(
            &[dir.path().join("x/a.jar"), dir.path().join("y/a.jar")],
            None,
        )
        .unwrap_err();
        assert!(matches!(err, CollectError::Collision { .. }), "{err}");
    }
}
