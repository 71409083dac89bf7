//! Unpacked trees in the node cache: `trees/<2 hex>/<64 hex>/`, one per
//! archive digest, so the pods of one node unpack an archive once.
//!
//! The discipline is the cache's for files (see `crate::cache`): a tree is
//! built (by [`super::unpack`], from the verified archive) and changed only
//! under the exclusive lock `locks/tree-<hex>`; its files are made
//! read-only (pods get hard links to them); then a seal beside it
//! (`<hex>.seal`) records every entry: kind, mode, inode, size and
//! modification time of each file, each link's target. A hit whose
//! listing still equals its seal is used without reading a byte; anything
//! else (no seal, a file written through a pod's hard link, a mode
//! changed, an entry added or removed) removes the tree, which is then
//! built again. Change times are not compared: every hard link moves them.
//!
//! Placing a tree in a pod's volume builds a temp tree beside the target
//! (directories created, files hard-linked, or copied when the volume is
//! another file system, links re-created) and swaps it in like a fresh
//! unpack, with the same marker.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use ferry_core::Digest;
use ferry_io::durable::errno_io;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::tree::remove_tree_at;
use super::{DIR_FLAGS, UnpackError, Unpacked};

/// Where the tree of `digest` lives, relative to the cache root: the
/// shard directory and the tree's name in it.
pub fn tree_place(digest: &Digest) -> (String, String) {
    let hex = digest.hex();
    (format!("trees/{}", &hex[..2]), hex)
}

fn io(what: String, e: Errno) -> UnpackError {
    UnpackError::io(what, errno_io(e))
}

/// Opens (creating) the shard directory of `digest` under `root`.
pub fn shard(root: &Path, digest: &Digest) -> Result<(OwnedFd, PathBuf), UnpackError> {
    let (dir, _) = tree_place(digest);
    let path = root.join(dir);
    std::fs::create_dir_all(&path)
        .map_err(|e| UnpackError::io(format!("creating {}", path.display()), e))?;
    let fd = rustix::fs::openat(rustix::fs::CWD, &path, DIR_FLAGS, Mode::empty())
        .map_err(|e| io(format!("opening {}", path.display()), e))?;
    Ok((fd, path))
}

/// Whether the sealed tree of `digest` is there and unchanged. A tree that
/// no longer matches its seal is removed. Call with the tree lock held.
pub fn lookup(shard: &OwnedFd, digest: &Digest) -> Result<bool, UnpackError> {
    let (_, name) = tree_place(digest);
    let Some(seal) = read_seal(shard, &format!("{name}.seal")) else {
        discard(shard, &name)?;
        return Ok(false);
    };
    let Ok(tree) = rustix::fs::openat(shard, name.as_str(), DIR_FLAGS, Mode::empty()) else {
        discard(shard, &name)?;
        return Ok(false);
    };
    let mut now = String::new();
    listing(&tree, "", &mut now)?;
    if now == seal {
        return Ok(true);
    }
    tracing::warn!(digest = %digest, "cached tree changed since it was sealed; unpacking it again");
    discard(shard, &name)?;
    Ok(false)
}

/// Removes a tree and its seal.
fn discard(shard: &OwnedFd, name: &str) -> Result<(), UnpackError> {
    let _ = rustix::fs::unlinkat(shard, format!("{name}.seal").as_str(), AtFlags::empty());
    let c = CString::new(name).unwrap_or_default();
    remove_tree_at(shard, &c).map_err(|e| UnpackError::io("removing a cached tree", e))
}

/// A seal's text, if there is one (never through a link).
fn read_seal(shard: &OwnedFd, name: &str) -> Option<String> {
    let fd = rustix::fs::openat(
        shard,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut File::from(fd), &mut text).ok()?;
    Some(text)
}

/// Makes every file of the freshly built tree read-only, then seals it.
/// Call with the tree lock held.
pub fn seal(shard: &OwnedFd, digest: &Digest) -> Result<(), UnpackError> {
    let (_, name) = tree_place(digest);
    let tree = rustix::fs::openat(shard, name.as_str(), DIR_FLAGS, Mode::empty())
        .map_err(|e| io("opening a cached tree".into(), e))?;
    freeze(&tree)?;
    let mut text = String::new();
    listing(&tree, "", &mut text)?;
    let temp = format!("{name}.seal.tmp");
    let fd = rustix::fs::openat(
        shard,
        temp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o444),
    )
    .map_err(|e| io("writing a tree seal".into(), e))?;
    let mut file = File::from(fd);
    use std::io::Write as _;
    file.write_all(text.as_bytes())
        .and_then(|()| ferry_io::durable::publish_at(&file, shard, &temp, &format!("{name}.seal")))
        .map_err(|e| UnpackError::io("writing a tree seal", e))
}

/// The names in `dir`, sorted, without `.` and `..`.
fn names(dir: &OwnedFd) -> Result<Vec<CString>, UnpackError> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir).map_err(|e| io("listing a tree".into(), e))? {
        let entry = entry.map_err(|e| io("listing a tree".into(), e))?;
        let bytes = entry.file_name().to_bytes();
        if bytes != b"." && bytes != b".." {
            names.push(entry.file_name().to_owned());
        }
    }
    names.sort();
    Ok(names)
}

fn stat(dir: &OwnedFd, name: &CStr) -> Result<rustix::fs::Stat, UnpackError> {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| io(format!("reading {name:?}"), e))
}

fn open_dir(dir: &OwnedFd, name: &CStr) -> Result<OwnedFd, UnpackError> {
    rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty())
        .map_err(|e| io(format!("opening {name:?}"), e))
}

/// Removes the write bits of every file below `dir`.
fn freeze(dir: &OwnedFd) -> Result<(), UnpackError> {
    for name in names(dir)? {
        let st = stat(dir, &name)?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => freeze(&open_dir(dir, &name)?)?,
            FileType::RegularFile => {
                let fd = rustix::fs::openat(
                    dir,
                    name.as_c_str(),
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| io(format!("opening {name:?}"), e))?;
                rustix::fs::fchmod(&fd, Mode::from_raw_mode(st.st_mode & 0o555))
                    .map_err(|e| io(format!("making {name:?} read-only"), e))?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// One line per entry below `dir` (`prefix` is its path), depth first in
/// name order: what a seal records and a lookup compares.
fn listing(dir: &OwnedFd, prefix: &str, out: &mut String) -> Result<(), UnpackError> {
    use std::fmt::Write as _;
    for name in names(dir)? {
        let path = format!("{prefix}{}", name.to_string_lossy());
        let st = stat(dir, &name)?;
        let mode = st.st_mode & 0o7777;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                let _ = writeln!(out, "d {mode:o} {path}");
                listing(&open_dir(dir, &name)?, &format!("{path}/"), out)?;
            }
            FileType::RegularFile => {
                let _ = writeln!(
                    out,
                    "f {mode:o} {} {} {}.{} {path}",
                    st.st_ino, st.st_size, st.st_mtime, st.st_mtime_nsec
                );
            }
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(dir, name.as_c_str(), Vec::new())
                    .map_err(|e| io(format!("reading link {path}"), e))?;
                let _ = writeln!(out, "l {path} -> {}", target.to_string_lossy());
            }
            _ => {
                let _ = writeln!(out, "? {path}");
            }
        }
    }
    Ok(())
}

/// Places the sealed tree of `digest` at `parent/name`: a temp tree of
/// hard links (copies across file systems) swapped in, then the marker.
pub fn place(
    shard: &OwnedFd,
    digest: &Digest,
    parent: &OwnedFd,
    parent_path: &Path,
    name: &str,
) -> Result<Unpacked, UnpackError> {
    let (_, tree_name) = tree_place(digest);
    let tree = rustix::fs::openat(shard, tree_name.as_str(), DIR_FLAGS, Mode::empty())
        .map_err(|e| io("opening a cached tree".into(), e))?;
    super::publish(parent, parent_path, name, Some(digest), |_, target| {
        let mut done = Unpacked::default();
        let mut linking = true;
        copy_tree(&tree, &target, &mut done, &mut linking)?;
        let mode = stat(shard, &super::c_name(&tree_name)?)?.st_mode & 0o777;
        rustix::fs::fchmod(&target, Mode::from_raw_mode(mode | 0o700))
            .map_err(|e| io("setting a tree's mode".into(), e))?;
        if !linking {
            // Copies are new data: make them durable like a fresh unpack.
            rustix::fs::syncfs(&target).map_err(|e| io("syncing a tree".into(), e))?;
        }
        Ok(done)
    })
}

/// Recreates `from` in `to`: directories with their modes (owner rwx
/// kept), files hard-linked while `linking` holds (copied once a link
/// fails across file systems), links re-created.
fn copy_tree(
    from: &OwnedFd,
    to: &OwnedFd,
    done: &mut Unpacked,
    linking: &mut bool,
) -> Result<(), UnpackError> {
    for name in names(from)? {
        let st = stat(from, &name)?;
        done.entries += 1;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                rustix::fs::mkdirat(to, name.as_c_str(), Mode::from_raw_mode(0o700))
                    .map_err(|e| io(format!("creating {name:?}"), e))?;
                let child = open_dir(to, &name)?;
                copy_tree(&open_dir(from, &name)?, &child, done, linking)?;
                rustix::fs::fchmod(&child, Mode::from_raw_mode((st.st_mode & 0o777) | 0o700))
                    .map_err(|e| io(format!("setting the mode of {name:?}"), e))?;
            }
            FileType::RegularFile => {
                done.bytes += st.st_size as u64;
                if *linking {
                    match rustix::fs::linkat(
                        from,
                        name.as_c_str(),
                        to,
                        name.as_c_str(),
                        AtFlags::empty(),
                    ) {
                        Ok(()) => continue,
                        Err(Errno::XDEV | Errno::PERM | Errno::MLINK | Errno::ACCESS) => {
                            *linking = false;
                        }
                        Err(e) => return Err(io(format!("linking {name:?}"), e)),
                    }
                }
                copy_file(from, to, &name, st.st_mode & 0o777)?;
            }
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(from, name.as_c_str(), Vec::new())
                    .map_err(|e| io(format!("reading link {name:?}"), e))?;
                rustix::fs::symlinkat(target.as_c_str(), to, name.as_c_str())
                    .map_err(|e| io(format!("creating link {name:?}"), e))?;
            }
            _ => {}
        }
    }
    Ok(())
}

fn copy_file(from: &OwnedFd, to: &OwnedFd, name: &CStr, mode: u32) -> Result<(), UnpackError> {
    let source = rustix::fs::openat(
        from,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io(format!("opening {name:?}"), e))?;
    let target = rustix::fs::openat(
        to,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| io(format!("creating {name:?}"), e))?;
    let (mut source, mut target) = (File::from(source), File::from(target));
    std::io::copy(&mut source, &mut target)
        .map_err(|e| UnpackError::io(format!("copying {name:?}"), e))?;
    rustix::fs::fchmod(&target, Mode::from_raw_mode(mode))
        .map_err(|e| io(format!("setting the mode of {name:?}"), e))
}
