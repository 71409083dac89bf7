//! Unpacking an archive item (Spark's `archives`) into its target
//! directory, safely and all-or-nothing.
//!
//! The archive is verified before this runs (downloaded through the same
//! digest-checked path as any file). Its entries are created in a temp
//! directory beside the target (`.ferry-unpack-<hash of the name>`) through
//! [`tree::Tree`], which never follows a link; the whole tree is made
//! durable with one `syncfs` and swapped in by rename (`RENAME_EXCHANGE`
//! over an older tree), so a restarted init container finds a whole tree or
//! none. A marker beside it (`.ferry-unpacked-<hash>`) records the digest
//! it came from, so a rerun with the same archive does nothing.
//!
//! Kept: permission bits (setuid, setgid and sticky dropped), modification
//! times of files, symlinks as links (absolute ones too: venv-pack and
//! conda-pack point at the image's Python), hard links to earlier regular
//! files of the same archive. Refused, naming the entry: names that leave
//! the target (`..`, absolute, drive or UNC forms, backslashes; see
//! [`ferry_core::archive`]), anything written through a link, hard links
//! elsewhere, device nodes, FIFOs and sockets. Bounded ([`Limits`]): total
//! unpacked bytes, entry count, compression ratio (a zip's sizes are
//! checked from its central directory before anything is written, so a zip
//! bomb fails fast and leaves nothing), and path length and depth (those of
//! an [`EntryPath`]). A failed unpack removes its temp directory.

pub mod cached;
pub mod tree;

use std::cell::Cell;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::mpsc;

use ferry_core::archive::{self, ArchiveKind, ArchiveNameError};
use ferry_core::{Digest, EntryPath};
use ferry_io::durable::errno_io;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

use self::tree::{Tree, remove_tree_at};

/// Bounds on what one archive may unpack to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Total bytes of all files.
    pub max_bytes: u64,
    /// Entries of every kind.
    pub max_entries: u64,
    /// Unpacked bytes per compressed byte (after the first
    /// [`RATIO_FLOOR`] bytes, which any archive may reach).
    pub max_ratio: u64,
}

/// Unpacked bytes allowed whatever the ratio, so tiny archives of
/// repetitive text are not refused.
pub const RATIO_FLOOR: u64 = 1 << 20;

impl Default for Limits {
    /// Roomy for conda environments (a few GiB, a few 100k files), tight
    /// for bombs: real environments compress 3-10x, bombs 1000x and more.
    fn default() -> Self {
        Self {
            max_bytes: 32 << 30,
            max_entries: 1_000_000,
            max_ratio: 200,
        }
    }
}

/// What an unpack produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Unpacked {
    pub entries: u64,
    pub bytes: u64,
}

/// Why an archive was not unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("entry {entry:?} refused: {source}")]
    Name {
        entry: String,
        #[source]
        source: ArchiveNameError,
    },
    #[error("entry {entry:?} refused: {reason}")]
    Unsafe { entry: String, reason: String },
    #[error("entry {entry:?} refused: it is a {what}; archives may hold files, folders and links")]
    Special { entry: String, what: &'static str },
    #[error("entry {entry:?}: the archive unpacks to more than {limit} bytes")]
    TooBig { entry: String, limit: u64 },
    #[error("the archive has more than {0} entries")]
    TooManyEntries(u64),
    #[error(
        "entry {entry:?}: unpacked bytes exceed {limit} times the compressed size (a zip bomb?)"
    )]
    Ratio { entry: String, limit: u64 },
    #[error("not a readable {kind} archive: {detail}")]
    Corrupt { kind: ArchiveKind, detail: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl UnpackError {
    fn name(entry: &[u8], source: ArchiveNameError) -> Self {
        Self::Name {
            entry: String::from_utf8_lossy(entry).into_owned(),
            source,
        }
    }

    fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// The fixed-length names of the temp tree, the replaced tree and the
/// marker for target `name`, so long names stay under `NAME_MAX`.
fn side_names(name: &str) -> [String; 3] {
    let hash = Digest::of(name.as_bytes()).hex();
    let hash = &hash[..16];
    [
        format!(".ferry-unpack-{hash}"),
        format!(".ferry-replaced-{hash}"),
        format!(".ferry-unpacked-{hash}"),
    ]
}

fn c_name(name: &str) -> Result<std::ffi::CString, UnpackError> {
    std::ffi::CString::new(name).map_err(|_| {
        UnpackError::io(
            format!("name {name:?}"),
            std::io::Error::from(std::io::ErrorKind::InvalidInput),
        )
    })
}

/// Whether `parent/name` already holds the tree unpacked from `digest`
/// (its marker says so and it is a directory). Returns what it held.
pub fn already_unpacked(
    parent: &OwnedFd,
    name: &str,
    digest: &Digest,
) -> Result<Option<Unpacked>, UnpackError> {
    let [_, _, marker] = side_names(name);
    let text = match rustix::fs::openat(
        parent,
        marker.as_str(),
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => {
            let mut text = String::new();
            File::from(fd)
                .take(256)
                .read_to_string(&mut text)
                .map_err(|e| UnpackError::io("reading an unpack marker", e))?;
            text
        }
        Err(Errno::NOENT | Errno::LOOP) => return Ok(None),
        Err(e) => return Err(UnpackError::io("opening an unpack marker", errno_io(e))),
    };
    let mut words = text.split_whitespace();
    if words.next() != Some(digest.hex().as_str()) {
        return Ok(None);
    }
    let entries = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
    let bytes = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
    match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Directory => {
            Ok(Some(Unpacked { entries, bytes }))
        }
        _ => Ok(None),
    }
}

/// Unpacks `archive` (read from its start) into directory `parent/name`,
/// replacing whatever tree was there. `parent_path` is `parent`'s path, for
/// messages; `digest`, when known, is recorded for [`already_unpacked`].
/// Blocking.
pub fn unpack(
    archive: &mut File,
    kind: ArchiveKind,
    parent: &OwnedFd,
    parent_path: &Path,
    name: &str,
    digest: Option<&Digest>,
    limits: &Limits,
) -> Result<Unpacked, UnpackError> {
    archive
        .seek(SeekFrom::Start(0))
        .map_err(|e| UnpackError::io("reading the archive", e))?;
    // A zip is checked whole, from its central directory, before anything
    // is written.
    enum Source<'a> {
        Zip(zip::ZipArchive<&'a mut File>),
        Tar(&'a mut File),
    }
    let mut source = if kind.is_zip() {
        Source::Zip(open_zip(archive, kind, limits)?)
    } else {
        Source::Tar(archive)
    };
    publish(parent, parent_path, name, digest, |temp, fd| {
        let mut tree = Tree::new(parent_path.join(temp), fd);
        let unpacked = match &mut source {
            Source::Zip(zip) => unzip(zip, kind, &mut tree, limits)?,
            Source::Tar(file) => untar(file, kind, &mut tree, limits)?,
        };
        let fd = tree.finish()?;
        rustix::fs::syncfs(&fd).map_err(|e| io_in(parent_path, "syncing the unpacked tree", e))?;
        Ok(unpacked)
    })
}

fn io_in(parent_path: &Path, what: &str, e: Errno) -> UnpackError {
    UnpackError::io(format!("{what} in {}", parent_path.display()), errno_io(e))
}

/// The steps every tree takes to `parent/name`, fresh from an archive or
/// placed from the node cache: the leftovers of a killed run removed, an
/// empty temp tree beside the target (owner-only until filled) that `fill`
/// fills and makes durable (given the temp's name and an open descriptor),
/// published by one atomic swap, the replaced tree removed, then the
/// marker, when the digest is known. A failed fill removes the temp tree.
fn publish(
    parent: &OwnedFd,
    parent_path: &Path,
    name: &str,
    digest: Option<&Digest>,
    fill: impl FnOnce(&str, OwnedFd) -> Result<Unpacked, UnpackError>,
) -> Result<Unpacked, UnpackError> {
    let [temp, replaced, marker] = side_names(name);
    let (temp_c, replaced_c) = (c_name(&temp)?, c_name(&replaced)?);
    remove_tree_at(parent, &temp_c)
        .map_err(|e| UnpackError::io("removing a stale temp tree", e))?;
    remove_tree_at(parent, &replaced_c)
        .map_err(|e| UnpackError::io("removing a replaced tree", e))?;
    let _ = rustix::fs::unlinkat(parent, marker.as_str(), AtFlags::empty());
    rustix::fs::mkdirat(parent, temp.as_str(), Mode::from_raw_mode(0o700))
        .map_err(|e| io_in(parent_path, "creating a temp tree", e))?;
    let result = rustix::fs::openat(parent, temp.as_str(), DIR_FLAGS, Mode::empty())
        .map_err(|e| io_in(parent_path, "opening a temp tree", e))
        .and_then(|fd| fill(&temp, fd))
        .and_then(|unpacked| {
            swap_in(parent, &temp, &replaced, name)
                .map_err(|e| io_in(parent_path, "publishing the tree", e))?;
            Ok(unpacked)
        });
    let unpacked = match result {
        Ok(unpacked) => unpacked,
        Err(error) => {
            let _ = remove_tree_at(parent, &temp_c);
            return Err(error);
        }
    };
    remove_tree_at(parent, &replaced_c)
        .map_err(|e| UnpackError::io("removing the replaced tree", e))?;
    if let Some(digest) = digest {
        write_marker(parent, &marker, digest, &unpacked)
            .map_err(|e| UnpackError::io("writing an unpack marker", e))?;
    }
    Ok(unpacked)
}

/// Renames `temp` to `name` atomically: exchanged with an older tree (then
/// at `temp`, renamed to `replaced` for removal), or plainly when there is
/// none.
fn swap_in(parent: &OwnedFd, temp: &str, replaced: &str, name: &str) -> Result<(), Errno> {
    match rustix::fs::renameat_with(parent, temp, parent, name, RenameFlags::EXCHANGE) {
        Ok(()) => rustix::fs::renameat(parent, temp, parent, replaced)?,
        Err(Errno::NOENT) => rustix::fs::renameat(parent, temp, parent, name)?,
        // No RENAME_EXCHANGE here: two steps (a crash between leaves none).
        Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
            match rustix::fs::renameat(parent, name, parent, replaced) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(e),
            }
            rustix::fs::renameat(parent, temp, parent, name)?;
        }
        Err(e) => return Err(e),
    }
    rustix::fs::fsync(parent)
}

fn write_marker(
    parent: &OwnedFd,
    marker: &str,
    digest: &Digest,
    unpacked: &Unpacked,
) -> std::io::Result<()> {
    let temp = format!("{marker}.tmp");
    let fd = rustix::fs::openat(
        parent,
        temp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .map_err(errno_io)?;
    let mut file = File::from(fd);
    use std::io::Write as _;
    writeln!(
        file,
        "{} {} {}",
        digest.hex(),
        unpacked.entries,
        unpacked.bytes
    )?;
    ferry_io::durable::publish_at(&file, parent, &temp, marker)
}

/// Counts unpacked bytes against the limits as they are read.
struct Meter<'a, R> {
    inner: R,
    /// Compressed bytes consumed so far (shared with the counting reader
    /// under the decompressor), or the entry's compressed size.
    compressed: &'a dyn Fn() -> u64,
    /// Unpacked bytes before this entry.
    before: u64,
    read: u64,
    limits: &'a Limits,
}

impl<R: Read> Read for Meter<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        let total = self.before + self.read;
        let allowed = (self.compressed)()
            .saturating_mul(self.limits.max_ratio)
            .max(RATIO_FLOOR);
        if total > allowed {
            return Err(std::io::Error::other(RatioExceeded));
        }
        Ok(n)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("compression ratio bound exceeded")]
struct RatioExceeded;

/// Maps a write error that was really the meter stopping.
fn metered(error: UnpackError, entry: &EntryPath, limits: &Limits) -> UnpackError {
    if let UnpackError::Io { source, .. } = &error
        && source
            .get_ref()
            .is_some_and(|inner| inner.is::<RatioExceeded>())
    {
        return UnpackError::Ratio {
            entry: entry.to_string(),
            limit: limits.max_ratio,
        };
    }
    error
}

/// Counts the bytes read from the compressed file.
struct Counting<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// Inflated bytes handed from the inflating thread to the writing one at a
/// time, and how many such chunks may wait (what inflating runs ahead of
/// the meter, so a bomb is still stopped within a few MiB).
const INFLATED_CHUNK: usize = 256 << 10;
const INFLATED_QUEUE: usize = 4;

/// A chunk of inflated bytes, with the compressed bytes consumed to make
/// everything up to its end.
type Inflated = std::io::Result<(Vec<u8>, u64)>;

/// Inflates a gzip stream (members one after another, as `gzip -d`
/// does) into `to` until its end, an error, or the reader is gone.
fn inflate(file: &mut File, to: mpsc::SyncSender<Inflated>) {
    let mut decoder = flate2::read::MultiGzDecoder::new(Counting {
        inner: BufReader::with_capacity(64 << 10, file),
        count: 0,
    });
    loop {
        let mut chunk = vec![0; INFLATED_CHUNK];
        let mut filled = 0;
        let result = loop {
            match decoder.read(&mut chunk[filled..]) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    filled += n;
                    if filled == chunk.len() {
                        break Ok(());
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        if filled > 0 {
            chunk.truncate(filled);
            if to.send(Ok((chunk, decoder.get_ref().count))).is_err() {
                return;
            }
        }
        match result {
            Ok(()) if filled == INFLATED_CHUNK => {}
            Ok(()) => return,
            Err(e) => {
                let _ = to.send(Err(e));
                return;
            }
        }
    }
}

/// The reading end of [`inflate`]: the inflated stream, and in
/// `compressed` the compressed bytes behind what was handed out so far.
struct InflatedReader<'a> {
    from: mpsc::Receiver<Inflated>,
    chunk: Vec<u8>,
    at: usize,
    compressed: &'a Cell<u64>,
}

impl Read for InflatedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.chunk.len() {
            match self.from.recv() {
                Ok(Ok((chunk, compressed))) => {
                    self.chunk = chunk;
                    self.at = 0;
                    self.compressed.set(compressed);
                }
                Ok(Err(e)) => return Err(e),
                // The stream ended.
                Err(mpsc::RecvError) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Unpacks a tar or tar.gz. A gzip stream is inflated on a thread of its
/// own while this one creates the entries, as `tar xzf` runs `gzip -d`
/// beside it.
fn untar(
    file: &mut File,
    kind: ArchiveKind,
    tree: &mut Tree,
    limits: &Limits,
) -> Result<Unpacked, UnpackError> {
    if kind != ArchiveKind::TarGz {
        // A plain tar holds its bytes as they are: nothing to bound.
        let reader = BufReader::with_capacity(64 << 10, file);
        return untar_from(reader, &|| u64::MAX / 2, kind, tree, limits);
    }
    let compressed = Cell::new(0);
    std::thread::scope(|scope| {
        let (to, from) = mpsc::sync_channel(INFLATED_QUEUE);
        std::thread::Builder::new()
            .name("ferry-inflate".into())
            .spawn_scoped(scope, move || inflate(file, to))
            .map_err(|e| UnpackError::io("starting the inflating thread", e))?;
        let reader = InflatedReader {
            from,
            chunk: Vec::new(),
            at: 0,
            compressed: &compressed,
        };
        // Returning drops the reader, which stops the thread.
        untar_from(reader, &|| compressed.get(), kind, tree, limits)
    })
}

/// Creates the entries of the tar stream `reader`; `ratio` gives the
/// compressed bytes behind what was read, for the ratio bound.
fn untar_from(
    reader: impl Read,
    ratio: &dyn Fn() -> u64,
    kind: ArchiveKind,
    tree: &mut Tree,
    limits: &Limits,
) -> Result<Unpacked, UnpackError> {
    let mut archive = tar::Archive::new(reader);
    let corrupt = |e: std::io::Error| UnpackError::Corrupt {
        kind,
        detail: e.to_string(),
    };
    let mut done = Unpacked::default();
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        done.entries += 1;
        if done.entries > limits.max_entries {
            return Err(UnpackError::TooManyEntries(limits.max_entries));
        }
        let raw = entry.path_bytes().into_owned();
        let Some(path) = archive::entry_name(&raw).map_err(|e| UnpackError::name(&raw, e))? else {
            continue;
        };
        let header = entry.header();
        let mode = header.mode().unwrap_or(0o644);
        let mtime = header.mtime().ok().and_then(|t| i64::try_from(t).ok());
        use tar::EntryType as T;
        match header.entry_type() {
            T::Regular | T::Continuous => {
                let limit = limits.max_bytes.saturating_sub(done.bytes);
                let mut body = Meter {
                    inner: &mut entry,
                    compressed: ratio,
                    before: done.bytes,
                    read: 0,
                    limits,
                };
                let written = tree
                    .file(&path, mode, mtime, &mut body, limit)
                    .map_err(|e| metered(e, &path, limits))?;
                done.bytes += written;
            }
            T::Directory => tree.dir(&path, mode)?,
            T::Symlink => {
                let target = entry.link_name_bytes().unwrap_or_default().into_owned();
                let target =
                    archive::symlink_target(&target).map_err(|e| UnpackError::name(&raw, e))?;
                tree.symlink(&path, target)?;
            }
            T::Link => {
                let target = entry.link_name_bytes().unwrap_or_default().into_owned();
                let target =
                    archive::hard_link_target(&target).map_err(|e| UnpackError::Unsafe {
                        entry: path.to_string(),
                        reason: format!("hard link to {:?}: {e}", String::from_utf8_lossy(&target)),
                    })?;
                tree.hard_link(&path, &target)?;
            }
            T::Char | T::Block => {
                return Err(UnpackError::Special {
                    entry: path.to_string(),
                    what: "device node",
                });
            }
            T::Fifo => {
                return Err(UnpackError::Special {
                    entry: path.to_string(),
                    what: "FIFO",
                });
            }
            // Metadata entries the tar crate has already applied to the
            // next entry (long names, pax headers) never reach here; any
            // other kind (GNU sparse, volume labels) is refused.
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => {}
            _ => {
                return Err(UnpackError::Special {
                    entry: path.to_string(),
                    what: "tar entry of an unsupported kind",
                });
            }
        }
    }
    Ok(done)
}

fn open_zip<'a>(
    file: &'a mut File,
    kind: ArchiveKind,
    limits: &Limits,
) -> Result<zip::ZipArchive<&'a mut File>, UnpackError> {
    let corrupt = |e: zip::result::ZipError| UnpackError::Corrupt {
        kind,
        detail: e.to_string(),
    };
    let mut zip = zip::ZipArchive::new(file).map_err(corrupt)?;
    if zip.len() as u64 > limits.max_entries {
        return Err(UnpackError::TooManyEntries(limits.max_entries));
    }
    let mut total: u64 = 0;
    for index in 0..zip.len() {
        let entry = zip.by_index_raw(index).map_err(corrupt)?;
        let name = String::from_utf8_lossy(entry.name_raw()).into_owned();
        total = total.saturating_add(entry.size());
        if total > limits.max_bytes {
            return Err(UnpackError::TooBig {
                entry: name,
                limit: limits.max_bytes,
            });
        }
        if entry.size() > entry_allowance(entry.compressed_size(), limits) {
            return Err(UnpackError::Ratio {
                entry: name,
                limit: limits.max_ratio,
            });
        }
    }
    Ok(zip)
}

fn entry_allowance(compressed: u64, limits: &Limits) -> u64 {
    compressed.saturating_mul(limits.max_ratio).max(RATIO_FLOOR)
}

/// Unix file-type bits of a zip entry's mode.
const S_IFMT: u32 = 0o170000;
const S_IFREG: u32 = 0o100000;
const S_IFDIR: u32 = 0o040000;
const S_IFLNK: u32 = 0o120000;

fn unzip(
    zip: &mut zip::ZipArchive<&mut File>,
    kind: ArchiveKind,
    tree: &mut Tree,
    limits: &Limits,
) -> Result<Unpacked, UnpackError> {
    let corrupt = |e: zip::result::ZipError| UnpackError::Corrupt {
        kind,
        detail: e.to_string(),
    };
    let mut done = Unpacked::default();
    for index in 0..zip.len() {
        let mut entry = zip.by_index(index).map_err(corrupt)?;
        done.entries += 1;
        let raw = entry.name_raw().to_vec();
        let Some(path) = archive::entry_name(&raw).map_err(|e| UnpackError::name(&raw, e))? else {
            continue;
        };
        let unix = entry.unix_mode();
        let file_type = unix.map_or(0, |m| m & S_IFMT);
        let is_dir = file_type == S_IFDIR || (file_type == 0 && entry.is_dir());
        let compressed = entry.compressed_size();
        if file_type == S_IFLNK {
            let mut target = Vec::new();
            (&mut entry)
                .take(archive::MAX_LINK_TARGET_BYTES as u64 + 1)
                .read_to_end(&mut target)
                .map_err(|e| UnpackError::Corrupt {
                    kind,
                    detail: format!("{path}: {e}"),
                })?;
            let target =
                archive::symlink_target(&target).map_err(|e| UnpackError::name(&raw, e))?;
            tree.symlink(&path, target)?;
        } else if is_dir {
            tree.dir(&path, unix.map_or(0o755, |m| m & 0o7777))?;
        } else if file_type == 0 || file_type == S_IFREG {
            // Zips written without Unix attributes record no mode.
            let mode = match unix.map(|m| m & 0o777) {
                Some(0) | None => 0o644,
                Some(mode) => mode,
            };
            let limit = limits.max_bytes.saturating_sub(done.bytes);
            let allowance = || compressed;
            let mut body = Meter {
                inner: &mut entry,
                compressed: &allowance,
                before: 0,
                read: 0,
                limits,
            };
            let written = tree
                .file(&path, mode, None, &mut body, limit)
                .map_err(|e| metered(e, &path, limits))?;
            done.bytes += written;
        } else {
            return Err(UnpackError::Special {
                entry: path.to_string(),
                what: match file_type {
                    0o010000 => "FIFO",
                    0o140000 => "socket",
                    _ => "device node",
                },
            });
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests;
