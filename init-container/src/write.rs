//! Safe writes under a destination directory.
//!
//! Every file lands through a temp file beside its final name
//! (`.ferry-partial-<hash of the name>`) and is published from it with the
//! shared durable rename ([`ferry_io::durable`]: fsync, rename, fsync the
//! directory): a reader (or a restarted init container) sees a complete
//! file or none. The temp name is the same on every run, so a rerun after a
//! crash resumes the partial download.
//!
//! Paths below the destination are walked one component at a time with
//! `openat(O_NOFOLLOW | O_DIRECTORY)`, so a symlink planted in the
//! destination (`jars -> /etc`) is refused instead of followed, and nothing
//! is ever written outside the destination. The destination directory itself
//! is configuration and may be a symlink. Directories created on the way
//! are made durable in their parents.

use std::io::{Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use ferry_core::{Digest, EntryPath, Sha256Hasher};
use ferry_io::durable::{errno_io, mkdir_at, publish_at, rename_at};
use ferry_io::hash_reader;
use rustix::fs::{AtFlags, CWD, Mode, OFlags};
use rustix::io::Errno;

use crate::error::FetchError;

/// Permission bits of a file whose entry gives none.
pub const DEFAULT_MODE: u32 = 0o644;

/// An open destination directory.
pub struct DestDir {
    root: PathBuf,
    fd: OwnedFd,
}

/// A temp file beside a final name, ready to be written and committed.
pub struct Partial {
    dir: OwnedFd,
    temp_name: String,
    final_name: String,
    pub file: std::fs::File,
}

impl DestDir {
    /// Opens `root`, creating it (and its parents) first.
    pub fn open(root: &Path) -> Result<Self, FetchError> {
        std::fs::create_dir_all(root)
            .map_err(|e| FetchError::io(format!("creating {}", root.display()), e))?;
        let fd = rustix::fs::openat(
            CWD,
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| FetchError::io(format!("opening {}", root.display()), errno_io(e)))?;
        Ok(Self {
            root: root.to_path_buf(),
            fd,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The final path of `path`, for messages.
    pub fn display(&self, path: &EntryPath) -> String {
        self.root.join(path.as_str()).display().to_string()
    }

    /// The path of the directory that holds `path`, for messages.
    pub fn parent_path(&self, path: &EntryPath) -> PathBuf {
        match path.as_str().rsplit_once('/') {
            Some((above, _)) => self.root.join(above),
            None => self.root.clone(),
        }
    }

    /// Opens the directory that holds `path`, creating missing components,
    /// refusing any component that is a symlink or not a directory.
    fn parent_of(&self, path: &EntryPath) -> Result<OwnedFd, FetchError> {
        self.parent_dir(path)
    }

    /// The directory that will hold `path` (created as needed, never
    /// through a symlink), for callers that create entries themselves.
    pub fn parent_dir(&self, path: &EntryPath) -> Result<OwnedFd, FetchError> {
        let segments: Vec<&str> = path.segments().collect();
        let mut current = self
            .fd
            .try_clone()
            .map_err(|e| FetchError::io(format!("opening {}", self.root.display()), e))?;
        let mut walked = PathBuf::new();
        for segment in &segments[..segments.len().saturating_sub(1)] {
            walked.push(segment);
            mkdir_at(&current, segment, 0o755).map_err(|e| {
                FetchError::io(format!("creating {}", self.root.join(&walked).display()), e)
            })?;
            current = rustix::fs::openat(
                &current,
                *segment,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| match e {
                Errno::LOOP | Errno::NOTDIR => FetchError::UnsafePath {
                    path: self.display(path),
                    reason: format!(
                        "{} is a symlink or not a directory",
                        self.root.join(&walked).display()
                    ),
                },
                other => FetchError::io(
                    format!("opening {}", self.root.join(&walked).display()),
                    errno_io(other),
                ),
            })?;
        }
        Ok(current)
    }

    /// The file at `path` if it is a regular file (a symlink there does not
    /// count: it will be replaced, never followed).
    pub fn existing(&self, path: &EntryPath) -> Result<Option<std::fs::File>, FetchError> {
        let dir = self.parent_of(path)?;
        match rustix::fs::openat(
            &dir,
            path.file_name(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::empty(),
        ) {
            Ok(fd) => {
                let file = std::fs::File::from(fd);
                let is_file = file.metadata().is_ok_and(|m| m.is_file());
                Ok(is_file.then_some(file))
            }
            Err(Errno::NOENT | Errno::LOOP) => Ok(None),
            Err(e) => Err(FetchError::io(
                format!("opening {}", self.display(path)),
                errno_io(e),
            )),
        }
    }

    /// Opens (or reopens, to resume) the temp file for `path`.
    pub fn partial(&self, path: &EntryPath) -> Result<Partial, FetchError> {
        let dir = self.parent_of(path)?;
        let final_name = path.file_name().to_owned();
        let temp_name = temp_name_for(&final_name);
        let fd = rustix::fs::openat(
            &dir,
            temp_name.as_str(),
            OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| match e {
            Errno::LOOP => FetchError::UnsafePath {
                path: self.display(path),
                reason: format!("a symlink was planted at its temp file {temp_name}"),
            },
            other => FetchError::io(
                format!("creating a temp file for {}", self.display(path)),
                errno_io(other),
            ),
        })?;
        Ok(Partial {
            dir,
            temp_name,
            final_name,
            file: std::fs::File::from(fd),
        })
    }

    /// Hard-links `source` (a verified cache file) to `path`. Returns false
    /// when the file systems differ or links are not allowed, so the caller
    /// copies instead.
    pub fn link_from(&self, path: &EntryPath, source: &Path) -> Result<bool, FetchError> {
        let dir = self.parent_of(path)?;
        let final_name = path.file_name();
        let temp_name = temp_name_for(final_name);
        let _ = rustix::fs::unlinkat(&dir, temp_name.as_str(), AtFlags::empty());
        match rustix::fs::linkat(CWD, source, &dir, temp_name.as_str(), AtFlags::empty()) {
            Ok(()) => {}
            Err(Errno::XDEV | Errno::PERM | Errno::MLINK | Errno::ACCESS) => return Ok(false),
            Err(e) => {
                return Err(FetchError::io(
                    format!("linking {} to {}", source.display(), self.display(path)),
                    errno_io(e),
                ));
            }
        }
        // The link shares the verified cache file's inode, durable already.
        rename_at(&dir, &temp_name, final_name)
            .map_err(|e| FetchError::io(format!("renaming into {}", self.display(path)), e))?;
        Ok(true)
    }
}

/// A fixed-length temp name, so long final names stay under `NAME_MAX`.
fn temp_name_for(final_name: &str) -> String {
    let digest = Digest::of(final_name.as_bytes()).hex();
    format!(".ferry-partial-{}", &digest[..16])
}

impl Partial {
    /// Bytes already in the temp file (from an earlier attempt or run).
    pub fn bytes_written(&self) -> std::io::Result<u64> {
        self.file.metadata().map(|m| m.len())
    }

    /// Empties the temp file to start again.
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0)).map(|_| ())
    }

    /// Hashes what is already in the temp file, leaving the cursor at its end.
    pub fn hash_existing(&mut self) -> std::io::Result<Sha256Hasher> {
        self.file.seek(SeekFrom::Start(0))?;
        let hasher = hash_reader(&self.file)?;
        self.file.seek(SeekFrom::End(0))?;
        Ok(hasher)
    }

    /// Sets permissions and publishes the file under its final name
    /// (the mode first, so the fsync covers it too).
    pub fn commit(self, mode: u32) -> std::io::Result<()> {
        rustix::fs::fchmod(&self.file, Mode::from_raw_mode(mode & 0o777)).map_err(errno_io)?;
        publish_at(&self.file, &self.dir, &self.temp_name, &self.final_name)
    }

    /// Removes the temp file (after a digest mismatch: its bytes are wrong).
    pub fn discard(self) {
        let _ = rustix::fs::unlinkat(&self.dir, self.temp_name.as_str(), AtFlags::empty());
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn entry(text: &str) -> EntryPath {
        EntryPath::parse(text).unwrap()
    }

    #[test]
    fn a_committed_file_appears_only_after_commit() {
        let dir = tempfile::tempdir().unwrap();
        let dest = DestDir::open(&dir.path().join("dest")).unwrap();
        let path = entry("jars/lib/a.jar");
        let mut partial = dest.partial(&path).unwrap();
        partial.file.write_all(b"hello").unwrap();
        assert!(!dir.path().join("dest/jars/lib/a.jar").exists());
        assert!(dest.existing(&path).unwrap().is_none());
        partial.commit(0o755).unwrap();
        let final_path = dir.path().join("dest/jars/lib/a.jar");
        assert_eq!(std::fs::read(&final_path).unwrap(), b"hello");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&final_path).unwrap().permissions().mode() & 0o777,
            0o755
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("dest/jars/lib"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("a.jar")]);
    }

    #[test]
    fn a_reopened_partial_keeps_its_bytes_for_resume() {
        let dir = tempfile::tempdir().unwrap();
        let dest = DestDir::open(dir.path()).unwrap();
        let path = entry("a.bin");
        dest.partial(&path).unwrap().file.write_all(b"abc").unwrap();
        let mut again = dest.partial(&path).unwrap();
        assert_eq!(again.bytes_written().unwrap(), 3);
        assert_eq!(again.hash_existing().unwrap().finish(), Digest::of(b"abc"));
        again.restart().unwrap();
        assert_eq!(again.bytes_written().unwrap(), 0);
    }

    #[test]
    fn a_symlinked_directory_in_the_destination_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let root = dir.path().join("dest");
        std::fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("jars")).unwrap();
        let dest = DestDir::open(&root).unwrap();
        let error = dest.partial(&entry("jars/a.jar")).err().unwrap();
        assert!(matches!(error, FetchError::UnsafePath { .. }), "{error}");
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    }

    #[test]
    fn a_symlink_at_the_final_name_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let root = dir.path().join("dest");
        std::fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink(&victim, root.join("a.jar")).unwrap();
        let dest = DestDir::open(&root).unwrap();
        assert!(dest.existing(&entry("a.jar")).unwrap().is_none());
        let mut partial = dest.partial(&entry("a.jar")).unwrap();
        partial.file.write_all(b"new").unwrap();
        partial.commit(DEFAULT_MODE).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert!(
            !std::fs::symlink_metadata(root.join("a.jar"))
                .unwrap()
                .is_symlink()
        );
    }

    #[test]
    fn a_file_where_a_directory_should_be_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("jars"), b"x").unwrap();
        let dest = DestDir::open(dir.path()).unwrap();
        assert!(matches!(
            dest.partial(&entry("jars/a.jar")),
            Err(FetchError::UnsafePath { .. })
        ));
    }
}
