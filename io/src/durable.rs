//! Publishing a file so that it survives a crash and is never seen half
//! written: write it under a temp name, fsync it, rename it to its final
//! name, fsync the directory.
//!
//! `rename` replaces a name atomically, so a reader sees the old file (or
//! none) until the new one is complete. The first fsync makes the bytes
//! durable before the name points at them (else a crash could leave the
//! final name on an empty or torn file); the directory fsync makes the new
//! name itself durable. A directory created on the way is only durable once
//! its parent is fsynced too, so [`create_dir_all_durably`] does that for
//! each directory it creates.
//!
//! Two forms: by path ([`publish`]), and relative to an open directory
//! ([`publish_at`], [`rename_at`], [`mkdir_at`]) for callers that walk
//! directories by file descriptor so a planted symlink cannot redirect them
//! (ferry-init's destination walk is such a caller, and keeps that rule).

use std::fs::File;
use std::io::ErrorKind;
use std::os::fd::AsFd;
use std::path::Path;

use rustix::fs::Mode;
use rustix::io::Errno;

/// An `Errno` as the `std::io::Error` callers handle.
pub fn errno_io(e: Errno) -> std::io::Error {
    std::io::Error::from_raw_os_error(e.raw_os_error())
}

/// fsyncs the directory at `dir`, making the names in it durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Makes `file` durable, renames `from` to `to` (creating `to`'s missing
/// directories durably), and makes the new name durable.
///
/// Nothing is said about `from`'s directory: a crash may leave the old name
/// in it too, which for a temp name is an abandoned temp file to clean up.
pub fn publish(file: &File, from: &Path, to: &Path) -> std::io::Result<()> {
    file.sync_all()?;
    let dir = parent_of(to);
    match std::fs::rename(from, to) {
        Err(e) if e.kind() == ErrorKind::NotFound && from.exists() => {
            create_dir_all_durably(dir)?;
            std::fs::rename(from, to)?;
        }
        other => other?,
    }
    sync_dir(dir)
}

/// Writes everything cached for the file system that `fd` is on to disk
/// (`syncfs`): one sync for many files written together, where a sync per
/// file and per directory would cost a disk flush each.
pub fn sync_filesystem(fd: impl AsFd) -> std::io::Result<()> {
    rustix::fs::syncfs(fd).map_err(errno_io)
}

/// Creates `dir` and its missing ancestors, fsyncing the parent of each
/// directory created so its entry survives a crash. An existing `dir` costs
/// one `stat`. A directory that another process creates meanwhile is fine.
pub fn create_dir_all_durably(dir: &Path) -> std::io::Result<()> {
    let mut missing = Vec::new();
    let mut at = dir;
    loop {
        match std::fs::metadata(at) {
            Ok(meta) if meta.is_dir() => break,
            Ok(_) => {
                return Err(std::io::Error::new(
                    ErrorKind::NotADirectory,
                    format!("{} is not a directory", at.display()),
                ));
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                missing.push(at);
                match at.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => at = parent,
                    // A relative path's first component: its parent is ".".
                    _ => break,
                }
            }
            Err(e) => return Err(e),
        }
    }
    for created in missing.into_iter().rev() {
        match std::fs::create_dir(created) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        sync_dir(parent_of(created))?;
    }
    Ok(())
}

/// The directory holding `path` (`.` for a bare relative name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Makes `file` durable and renames `dir/temp_name` (which it is) to
/// `dir/final_name`, durably.
pub fn publish_at(
    file: &File,
    dir: impl AsFd,
    temp_name: &str,
    final_name: &str,
) -> std::io::Result<()> {
    file.sync_all()?;
    rename_at(dir, temp_name, final_name)
}

/// Renames `dir/from` to `dir/to` and fsyncs `dir`: for a file that is
/// already durable (a hard link to one, or [`publish_at`]'s last step).
pub fn rename_at(dir: impl AsFd, from: &str, to: &str) -> std::io::Result<()> {
    let dir = dir.as_fd();
    rustix::fs::renameat(dir, from, dir, to).map_err(errno_io)?;
    rustix::fs::fsync(dir).map_err(errno_io)
}

/// Creates directory `dir/name` with `mode` unless it exists, fsyncing
/// `dir` when it created it. Returns whether it did. An entry of another
/// kind under `name` is left for the caller's next `openat` to refuse.
pub fn mkdir_at(dir: impl AsFd, name: &str, mode: u32) -> std::io::Result<bool> {
    let dir = dir.as_fd();
    match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(mode)) {
        Ok(()) => {
            rustix::fs::fsync(dir).map_err(errno_io)?;
            Ok(true)
        }
        Err(Errno::EXIST) => Ok(false),
        Err(e) => Err(errno_io(e)),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[test]
    fn publish_creates_missing_directories_and_leaves_only_the_final_name() {
        let dir = tempfile::tempdir().unwrap();
        let temp = dir.path().join("upload.tmp");
        let target = dir.path().join("blobs/sha256/ab/abcdef");
        let mut file = File::create(&temp).unwrap();
        file.write_all(b"content").unwrap();
        publish(&file, &temp, &target).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"content");
        assert!(!temp.exists());

        // A second file into the same, now existing, directory.
        let temp = dir.path().join("second.tmp");
        let mut file = File::create(&temp).unwrap();
        file.write_all(b"more").unwrap();
        publish(&file, &temp, &dir.path().join("blobs/sha256/ab/cd")).unwrap();
        let mut names: Vec<_> = std::fs::read_dir(dir.path().join("blobs/sha256/ab"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["abcdef", "cd"]);
    }

    #[test]
    fn publish_of_a_vanished_temp_file_fails_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let temp = dir.path().join("upload.tmp");
        let file = File::create(&temp).unwrap();
        std::fs::remove_file(&temp).unwrap();
        let error = publish(&file, &temp, &dir.path().join("new/blob")).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::NotFound);
        assert!(!dir.path().join("new").exists());
    }

    #[test]
    fn creating_directories_refuses_a_file_in_the_way() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        let error = create_dir_all_durably(&dir.path().join("file/sub")).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::NotADirectory);
        create_dir_all_durably(&dir.path().join("a/b/c")).unwrap();
        assert!(dir.path().join("a/b/c").is_dir());
        create_dir_all_durably(&dir.path().join("a/b/c")).unwrap();
    }

    #[test]
    fn mkdir_at_says_whether_it_created() {
        let dir = tempfile::tempdir().unwrap();
        let fd = File::open(dir.path()).unwrap();
        assert!(mkdir_at(&fd, "sub", 0o755).unwrap());
        assert!(!mkdir_at(&fd, "sub", 0o755).unwrap());
        assert!(dir.path().join("sub").is_dir());
    }

    /// The crash-safety property, watched from outside: a reader polling
    /// the final name while files are written and published under it sees
    /// no file or a whole one, never the temp file's partial bytes.
    #[test]
    fn the_final_name_never_shows_a_partial_file() {
        const ROUNDS: usize = 20;
        const CHUNK: usize = 64 * 1024;
        const CHUNKS: usize = 16;
        let dir = tempfile::tempdir().unwrap();
        let fd = File::open(dir.path()).unwrap();
        let target = dir.path().join("final");
        let done = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let watcher = scope.spawn(|| {
                let mut seen_whole = 0;
                // Until the writer is done, and at least once after a
                // publish (the final name exists from the first on).
                while !done.load(Ordering::SeqCst) || seen_whole == 0 {
                    if let Ok(bytes) = std::fs::read(&target) {
                        assert_eq!(bytes.len(), CHUNK * CHUNKS, "a partial file was visible");
                        assert!(
                            bytes.iter().all(|&b| b == bytes[0]),
                            "a torn file was visible"
                        );
                        seen_whole += 1;
                    }
                }
                seen_whole
            });
            for round in 0..ROUNDS {
                let mut temp = File::create(dir.path().join("temp")).unwrap();
                for _ in 0..CHUNKS {
                    temp.write_all(&[round as u8; CHUNK]).unwrap();
                    std::thread::yield_now();
                }
                publish_at(&temp, &fd, "temp", "final").unwrap();
            }
            done.store(true, Ordering::SeqCst);
            assert!(watcher.join().unwrap() > 0);
        });
        assert!(!dir.path().join("temp").exists());
    }
}
