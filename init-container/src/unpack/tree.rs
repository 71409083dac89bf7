//! Creating an archive's entries under one directory without ever
//! following a link.
//!
//! Every entry is created relative to a directory fd reached by
//! `openat(O_NOFOLLOW | O_DIRECTORY)` from the tree's root, one component at
//! a time (as [`crate::write::DestDir`] does for single files), so a symlink
//! planted by an earlier entry of the same archive (`lib -> /etc`, then
//! `lib/passwd`) is refused instead of written through; files are opened
//! `O_CREAT | O_EXCL | O_NOFOLLOW`; hard links are made with `linkat`
//! without `AT_SYMLINK_FOLLOW`, only to regular files already in the tree.
//! A directory is never replaced by anything else, so the one cached parent
//! fd stays valid. Directories are not fsynced one by one: the caller
//! `syncfs`es the tree once before publishing it; each file's disk writes
//! are started as soon as it is written ([`ferry_io::writeback`]), so that
//! syncfs finds little left to write instead of the whole tree.

use std::ffi::CStr;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::rc::Rc;

use ferry_core::EntryPath;
use ferry_io::durable::errno_io;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;

use super::UnpackError;

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// A directory being filled with an archive's entries.
pub struct Tree {
    root: PathBuf,
    fd: OwnedFd,
    /// The parent directory of the last entry, reused for its siblings.
    last_parent: Option<(String, Rc<OwnedFd>)>,
    /// Directories and the modes the archive gave them, applied at the end
    /// (a read-only directory would refuse its own entries).
    dir_modes: Vec<(EntryPath, u32)>,
}

impl Tree {
    /// `fd` is the (new, empty) directory the tree is built in; `root` its
    /// path, for messages.
    pub fn new(root: PathBuf, fd: OwnedFd) -> Self {
        Self {
            root,
            fd,
            last_parent: None,
            dir_modes: Vec::new(),
        }
    }

    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    fn shown(&self, path: &EntryPath) -> String {
        self.root.join(path.as_str()).display().to_string()
    }

    /// The directory holding `path`, created as needed, never through a link.
    fn parent(&mut self, path: &EntryPath) -> Result<Rc<OwnedFd>, UnpackError> {
        let parent = match path.as_str().rsplit_once('/') {
            Some((parent, _)) => parent.to_owned(),
            None => String::new(),
        };
        if let Some((cached, fd)) = &self.last_parent
            && *cached == parent
        {
            return Ok(fd.clone());
        }
        let mut current = self
            .fd
            .try_clone()
            .map_err(|e| self.io(path, "opening", e))?;
        if !parent.is_empty() {
            for segment in parent.split('/') {
                current = open_or_make_dir(&current, segment).map_err(|e| match e {
                    Errno::LOOP | Errno::NOTDIR => UnpackError::Unsafe {
                        entry: path.to_string(),
                        reason: format!(
                            "{segment:?} on its way is a link or a file; extraction never follows links"
                        ),
                    },
                    other => self.io(path, "creating the folder of", errno_io(other)),
                })?;
            }
        }
        let current = Rc::new(current);
        self.last_parent = Some((parent, current.clone()));
        Ok(current)
    }

    fn io(&self, path: &EntryPath, what: &str, source: std::io::Error) -> UnpackError {
        UnpackError::Io {
            context: format!("{what} {}", self.shown(path)),
            source,
        }
    }

    /// Creates a new non-directory entry at `path` in `dir` with `create`;
    /// when a file or link an earlier entry left is there (`EEXIST`), it is
    /// cleared ([`Self::clear`]) and `create` runs once more. Returns
    /// `create`'s own result.
    fn create<T>(
        &self,
        dir: &OwnedFd,
        path: &EntryPath,
        mut create: impl FnMut() -> Result<T, Errno>,
    ) -> Result<Result<T, Errno>, UnpackError> {
        match create() {
            Err(Errno::EXIST) => {
                self.clear(dir, path)?;
                Ok(create())
            }
            other => Ok(other),
        }
    }

    /// Makes room for a new non-directory entry at `name`: a file or link
    /// an earlier entry left there is replaced (tar's rule for a repeated
    /// name); a directory is not.
    fn clear(&self, dir: &OwnedFd, path: &EntryPath) -> Result<(), UnpackError> {
        match rustix::fs::unlinkat(dir, path.file_name(), AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(Errno::ISDIR | Errno::PERM) => Err(UnpackError::Unsafe {
                entry: path.to_string(),
                reason: "an earlier entry made it a folder".into(),
            }),
            Err(e) => Err(self.io(path, "replacing", errno_io(e))),
        }
    }

    pub fn dir(&mut self, path: &EntryPath, mode: u32) -> Result<(), UnpackError> {
        let parent = self.parent(path)?;
        open_or_make_dir(&parent, path.file_name()).map_err(|e| match e {
            Errno::LOOP | Errno::NOTDIR => UnpackError::Unsafe {
                entry: path.to_string(),
                reason: "an earlier entry made it a link or a file".into(),
            },
            other => self.io(path, "creating", errno_io(other)),
        })?;
        self.dir_modes.push((path.clone(), mode));
        Ok(())
    }

    /// Creates a regular file from `body`, at most `limit` bytes of it.
    /// Returns the bytes written.
    pub fn file(
        &mut self,
        path: &EntryPath,
        mode: u32,
        mtime: Option<i64>,
        body: &mut dyn Read,
        limit: u64,
    ) -> Result<u64, UnpackError> {
        let parent = self.parent(path)?;
        let fd = self
            .create(&parent, path, || {
                rustix::fs::openat(
                    &*parent,
                    path.file_name(),
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
            })?
            .map_err(|e| self.io(path, "creating", errno_io(e)))?;
        let mut file = std::fs::File::from(fd);
        let mut bounded = body.take(limit.saturating_add(1));
        let written =
            std::io::copy(&mut bounded, &mut file).map_err(|e| self.io(path, "writing", e))?;
        if written > limit {
            return Err(UnpackError::TooBig {
                entry: path.to_string(),
                limit,
            });
        }
        ferry_io::writeback::start(&file, 0, written);
        rustix::fs::fchmod(&file, Mode::from_raw_mode(pod_readable(mode)))
            .map_err(|e| self.io(path, "setting the mode of", errno_io(e)))?;
        if let Some(seconds) = mtime {
            let time = Timespec {
                tv_sec: seconds,
                tv_nsec: 0,
            };
            let _ = rustix::fs::futimens(
                &file,
                &Timestamps {
                    last_access: time,
                    last_modification: time,
                },
            );
        }
        Ok(written)
    }

    /// A symlink, kept as written: it is never followed here.
    pub fn symlink(&mut self, path: &EntryPath, target: &str) -> Result<(), UnpackError> {
        let parent = self.parent(path)?;
        self.create(&parent, path, || {
            rustix::fs::symlinkat(target, &*parent, path.file_name())
        })?
        .map_err(|e| self.io(path, "creating the link", errno_io(e)))
    }

    /// A hard link to `target`, a regular file an earlier entry created.
    pub fn hard_link(&mut self, path: &EntryPath, target: &EntryPath) -> Result<(), UnpackError> {
        let refused = |reason: &str| UnpackError::Unsafe {
            entry: path.to_string(),
            reason: format!("hard link to {target}: {reason}"),
        };
        let target_parent = self.parent(target)?;
        match rustix::fs::statat(
            &*target_parent,
            target.file_name(),
            AtFlags::SYMLINK_NOFOLLOW,
        ) {
            Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile => {}
            Ok(_) => return Err(refused("not a regular file of this archive")),
            Err(Errno::NOENT) => return Err(refused("no earlier entry of this archive")),
            Err(e) => return Err(self.io(target, "reading", errno_io(e))),
        }
        let parent = self.parent(path)?;
        self.create(&parent, path, || {
            rustix::fs::linkat(
                &*target_parent,
                target.file_name(),
                &*parent,
                path.file_name(),
                AtFlags::empty(),
            )
        })?
        .map_err(|e| self.io(path, "linking", errno_io(e)))
    }

    /// Applies the directories' own modes, deepest first. Owner rwx is
    /// kept so the tree can be replaced later.
    pub fn finish(mut self) -> Result<OwnedFd, UnpackError> {
        self.last_parent = None;
        let mut modes = std::mem::take(&mut self.dir_modes);
        modes.sort_by_key(|(path, _)| std::cmp::Reverse(path.segments().count()));
        for (path, mode) in modes {
            let parent = self.parent(&path)?;
            let dir = rustix::fs::openat(&*parent, path.file_name(), DIR_FLAGS, Mode::empty())
                .map_err(|e| self.io(&path, "opening", errno_io(e)))?;
            rustix::fs::fchmod(&dir, Mode::from_raw_mode(pod_readable(mode) | 0o700))
                .map_err(|e| self.io(&path, "setting the mode of", errno_io(e)))?;
        }
        // The root was made owner-only while it filled; the pod's other
        // users read it once it is whole.
        rustix::fs::fchmod(&self.fd, Mode::from_raw_mode(0o755))
            .map_err(|e| UnpackError::io("setting the mode of the unpacked tree", errno_io(e)))?;
        Ok(self.fd)
    }
}

/// The mode an entry gets: its permission bits (setuid, setgid and sticky
/// dropped), readable by everyone, and executable by everyone where anyone
/// could execute it. ferry-init runs as its own user and the pod's main
/// container as another (Spark's 185), so an archive's owner-only bits
/// would lock the job out of its own environment; the tree reaches the job
/// through a read-only mount, so nobody there can write it either way.
fn pod_readable(mode: u32) -> u32 {
    let mode = (mode & 0o777) | 0o444;
    if mode & 0o111 != 0 {
        mode | 0o111
    } else {
        mode
    }
}

/// Opens directory `dir/name`, creating it (0755) if absent, never
/// following a link.
fn open_or_make_dir(dir: &OwnedFd, name: &str) -> Result<OwnedFd, Errno> {
    match rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty()) {
        Err(Errno::NOENT) => {
            match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(e),
            }
            rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty())
        }
        other => other,
    }
}

/// Removes `dir/name` and everything under it, never following a link
/// (links are unlinked, not entered). Read-only directories are made
/// writable first. Absent is fine.
pub fn remove_tree_at(dir: &OwnedFd, name: &CStr) -> std::io::Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ISDIR | Errno::PERM) => {}
        Err(e) => return Err(errno_io(e)),
    }
    let child = match rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(errno_io(e)),
    };
    let _ = rustix::fs::fchmod(&child, Mode::from_raw_mode(0o700));
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(&child).map_err(errno_io)? {
        let entry = entry.map_err(errno_io)?;
        let bytes = entry.file_name().to_bytes();
        if bytes != b"." && bytes != b".." {
            names.push(entry.file_name().to_owned());
        }
    }
    for child_name in names {
        remove_tree_at(&child, child_name.as_c_str())?;
    }
    match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(errno_io(e)),
    }
}
