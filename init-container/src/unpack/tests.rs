//! The evil-archive corpus and the shapes real environments have, built
//! byte by byte here (the tar and zip writers refuse to write the names an
//! attacker would), unpacked into a temp root whose whole contents are
//! checked afterwards.

use std::io::{Cursor, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ferry_core::Digest;
use ferry_core::archive::ArchiveKind;
use rustix::fs::{CWD, Mode, OFlags};
use zip::write::SimpleFileOptions;

use super::*;

/// A tar entry as raw header fields.
struct Raw<'a> {
    name: &'a [u8],
    kind: tar::EntryType,
    mode: u32,
    link: &'a [u8],
    data: &'a [u8],
}

fn file<'a>(name: &'a str, mode: u32, data: &'a [u8]) -> Raw<'a> {
    Raw {
        name: name.as_bytes(),
        kind: tar::EntryType::Regular,
        mode,
        link: b"",
        data,
    }
}

fn link<'a>(name: &'a str, kind: tar::EntryType, target: &'a str) -> Raw<'a> {
    Raw {
        name: name.as_bytes(),
        kind,
        mode: 0o777,
        link: target.as_bytes(),
        data: b"",
    }
}

fn tar_bytes(entries: &[Raw]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        let gnu = header.as_gnu_mut().unwrap();
        gnu.name[..entry.name.len()].copy_from_slice(entry.name);
        gnu.linkname[..entry.link.len()].copy_from_slice(entry.link);
        header.set_entry_type(entry.kind);
        header.set_mode(entry.mode);
        header.set_size(entry.data.len() as u64);
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        builder.append(&header, entry.data).unwrap();
    }
    builder.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// A temp root holding `outside/` (must stay empty) and `dest/` (the
/// parent of the target `env`).
struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("outside")).unwrap();
        std::fs::create_dir(dir.path().join("dest")).unwrap();
        Self { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn parent(&self) -> OwnedFd {
        rustix::fs::openat(
            CWD,
            self.path("dest"),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap()
    }

    fn unpack(
        &self,
        bytes: &[u8],
        kind: ArchiveKind,
        limits: &Limits,
    ) -> Result<Unpacked, UnpackError> {
        let archive_path = self.path("archive");
        std::fs::write(&archive_path, bytes).unwrap();
        let mut archive = File::open(&archive_path).unwrap();
        let result = unpack(
            &mut archive,
            kind,
            &self.parent(),
            &self.path("dest"),
            "env",
            Some(&Digest::of(bytes)),
            limits,
        );
        std::fs::remove_file(&archive_path).unwrap();
        result
    }

    /// Every path under the root, relative, sorted.
    fn listing(&self) -> Vec<String> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let entry = entry.unwrap();
                let path = entry.path();
                out.push(path.strip_prefix(base).unwrap().display().to_string());
                if entry.file_type().unwrap().is_dir() {
                    walk(base, &path, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(self.dir.path(), self.dir.path(), &mut out);
        out.sort();
        out
    }

    /// The refusal left nothing: no target, no temp tree, nothing outside.
    fn assert_nothing_written(&self) {
        assert_eq!(self.listing(), ["dest", "outside"], "leftovers");
    }
}

fn refused_tar(entries: &[Raw], expect: &str) {
    let root = Root::new();
    let outside = root.path("outside").display().to_string();
    let bytes = tar_bytes(entries);
    let error = root
        .unpack(&bytes, ArchiveKind::Tar, &Limits::default())
        .unwrap_err();
    let message = ferry_io::render_chain(&error);
    assert!(message.contains(expect), "{message}");
    root.assert_nothing_written();
    assert!(!outside.is_empty());
}

#[test]
fn tar_entries_that_leave_the_target_are_refused_by_name() {
    refused_tar(&[file("../x", 0o644, b"x")], "entry \"../x\" refused");
    refused_tar(
        &[file("/abs/x", 0o644, b"x")],
        "entry \"/abs/x\" refused: name is absolute",
    );
    refused_tar(
        &[
            file("ok", 0o644, b"x"),
            link("h", tar::EntryType::Link, "../outside/x"),
        ],
        "entry \"h\" refused: hard link to \"../outside/x\"",
    );
    refused_tar(
        &[link("h", tar::EntryType::Link, "/etc/passwd")],
        "hard link to \"/etc/passwd\"",
    );
}

#[test]
fn nothing_is_written_through_a_link_planted_by_the_archive() {
    let root = Root::new();
    let outside = root.path("outside").display().to_string();
    for entries in [
        // A symlink to outside, then a file "through" it.
        vec![
            link("lib", tar::EntryType::Symlink, &outside),
            file("lib/x", 0o644, b"pwned"),
        ],
        // A chain: b -> a -> outside.
        vec![
            link("a", tar::EntryType::Symlink, &outside),
            link("b", tar::EntryType::Symlink, "a"),
            file("b/x", 0o644, b"pwned"),
        ],
        // A relative climb.
        vec![
            link("up", tar::EntryType::Symlink, "../../outside"),
            file("up/x", 0o644, b"pwned"),
        ],
    ] {
        let error = root
            .unpack(&tar_bytes(&entries), ArchiveKind::Tar, &Limits::default())
            .unwrap_err();
        let message = ferry_io::render_chain(&error);
        assert!(
            message.contains("extraction never follows links"),
            "{message}"
        );
        assert!(message.contains("/x\" refused"), "{message}");
        root.assert_nothing_written();
    }
    // A hard link to a symlink of the archive is no way out either.
    let error = root
        .unpack(
            &tar_bytes(&[
                link("s", tar::EntryType::Symlink, &format!("{outside}/victim")),
                link("h", tar::EntryType::Link, "s"),
            ]),
            ArchiveKind::Tar,
            &Limits::default(),
        )
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("not a regular file of this archive"),
        "{error}"
    );
    root.assert_nothing_written();
}

#[test]
fn device_nodes_and_fifos_are_refused() {
    refused_tar(
        &[Raw {
            kind: tar::EntryType::Char,
            ..file("dev/null", 0o666, b"")
        }],
        "entry \"dev/null\" refused: it is a device node",
    );
    refused_tar(
        &[Raw {
            kind: tar::EntryType::Fifo,
            ..file("pipe", 0o666, b"")
        }],
        "entry \"pipe\" refused: it is a FIFO",
    );
}

#[test]
fn a_truncated_gzip_stream_leaves_nothing() {
    let root = Root::new();
    let big: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let whole = gzip(&tar_bytes(&[
        file("a", 0o644, b"a"),
        file("big", 0o644, &big),
    ]));
    let cut = &whole[..whole.len() / 2];
    let error = root
        .unpack(cut, ArchiveKind::TarGz, &Limits::default())
        .unwrap_err();
    assert!(
        matches!(error, UnpackError::Corrupt { .. } | UnpackError::Io { .. }),
        "{error}"
    );
    root.assert_nothing_written();
}

#[test]
fn a_gzip_bomb_stops_at_the_ratio_bound() {
    let root = Root::new();
    let zeros = vec![0u8; 64 << 20];
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder
        .write_all(&tar_bytes(&[file("zeros", 0o644, &zeros)]))
        .unwrap();
    let bytes = encoder.finish().unwrap();
    assert!(bytes.len() < (64 << 20) / 500, "{} bytes", bytes.len());
    let error = root
        .unpack(&bytes, ArchiveKind::TarGz, &Limits::default())
        .unwrap_err();
    assert!(matches!(error, UnpackError::Ratio { .. }), "{error}");
    assert!(error.to_string().contains("\"zeros\""), "{error}");
    root.assert_nothing_written();
}

fn zip_bytes(build: impl FnOnce(&mut zip::ZipWriter<Cursor<Vec<u8>>>)) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    build(&mut writer);
    writer.finish().unwrap().into_inner()
}

fn refused_zip(bytes: &[u8], limits: &Limits, expect: &str) {
    let root = Root::new();
    let error = root.unpack(bytes, ArchiveKind::Zip, limits).unwrap_err();
    let message = ferry_io::render_chain(&error);
    assert!(message.contains(expect), "{message}");
    root.assert_nothing_written();
}

#[test]
fn zip_slip_absolute_and_backslash_names_are_refused() {
    let options = SimpleFileOptions::default();
    for (name, expect) in [
        (
            "../../x",
            "entry \"../../x\" refused: name has a '..' segment",
        ),
        ("/abs/x", "entry \"/abs/x\" refused: name is absolute"),
        (
            "..\\..\\x",
            "entry \"..\\\\..\\\\x\" refused: name has a backslash",
        ),
        ("C:/x", "entry \"C:/x\" refused"),
    ] {
        let bytes = zip_bytes(|w| {
            w.start_file("ok", options).unwrap();
            w.write_all(b"fine").unwrap();
            w.start_file(name, options).unwrap();
            w.write_all(b"x").unwrap();
        });
        refused_zip(&bytes, &Limits::default(), expect);
    }
}

#[test]
fn zip_bombs_and_too_many_entries_fail_before_anything_is_written() {
    let options = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    let bomb = zip_bytes(|w| {
        w.start_file("small", options).unwrap();
        w.write_all(b"first").unwrap();
        w.start_file("bomb", options).unwrap();
        w.write_all(&vec![0u8; 64 << 20]).unwrap();
    });
    refused_zip(
        &bomb,
        &Limits::default(),
        "entry \"bomb\": unpacked bytes exceed 200 times",
    );
    let many = zip_bytes(|w| {
        for i in 0..11 {
            w.start_file(format!("f{i}"), options).unwrap();
        }
    });
    let limits = Limits {
        max_entries: 10,
        ..Limits::default()
    };
    refused_zip(&many, &limits, "more than 10 entries");
    let big = zip_bytes(|w| {
        w.start_file("a", options).unwrap();
        w.write_all(&[7u8; 4096]).unwrap();
    });
    let limits = Limits {
        max_bytes: 1000,
        ..Limits::default()
    };
    refused_zip(&big, &limits, "more than 1000 bytes");
}

#[test]
fn an_environment_tree_keeps_modes_links_and_times() {
    let root = Root::new();
    let entries = [
        Raw {
            kind: tar::EntryType::Directory,
            ..file("./", 0o755, b"")
        },
        Raw {
            kind: tar::EntryType::Directory,
            ..file("./bin/", 0o755, b"")
        },
        file("./bin/python3.11", 0o4755, b"#!elf"),
        link("./bin/python", tar::EntryType::Symlink, "python3.11"),
        link("./bin/python3", tar::EntryType::Symlink, "/usr/bin/python3"),
        file("./lib/pkg/__init__.py", 0o644, b"X = 1\n"),
        link(
            "./lib/pkg/same.py",
            tar::EntryType::Link,
            "lib/pkg/__init__.py",
        ),
        Raw {
            kind: tar::EntryType::Directory,
            ..file("./ro/", 0o555, b"")
        },
    ];
    let bytes = gzip(&tar_bytes(&entries));
    let unpacked = root
        .unpack(&bytes, ArchiveKind::TarGz, &Limits::default())
        .unwrap();
    assert_eq!(unpacked.bytes, 5 + 6, "python3.11 and __init__.py");
    let env = root.path("dest/env");
    let python = std::fs::metadata(env.join("bin/python3.11")).unwrap();
    assert_eq!(
        python.permissions().mode() & 0o7777,
        0o755,
        "setuid dropped"
    );
    assert_eq!(python.mtime(), 1_700_000_000);
    assert_eq!(
        std::fs::read_link(env.join("bin/python")).unwrap(),
        Path::new("python3.11")
    );
    assert_eq!(
        std::fs::read_link(env.join("bin/python3")).unwrap(),
        Path::new("/usr/bin/python3")
    );
    let first = std::fs::metadata(env.join("lib/pkg/__init__.py")).unwrap();
    let second = std::fs::metadata(env.join("lib/pkg/same.py")).unwrap();
    assert_eq!(first.ino(), second.ino(), "a hard link stays one");
    assert_eq!(
        std::fs::metadata(env.join("ro"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o755,
        "owner keeps rwx so the tree can be replaced"
    );
    // Whole tree published, a marker beside it, no temp tree left.
    let digest = Digest::of(&bytes);
    assert_eq!(
        already_unpacked(&root.parent(), "env", &digest).unwrap(),
        Some(unpacked)
    );
    assert_eq!(
        already_unpacked(&root.parent(), "env", &Digest::of(b"other")).unwrap(),
        None
    );
    let top: Vec<String> = root
        .listing()
        .into_iter()
        .filter(|p| p.starts_with("dest/") && p.matches('/').count() == 1)
        .collect();
    assert_eq!(top.len(), 2, "{top:?}");
    assert!(top.contains(&"dest/env".to_owned()));

    // A second archive replaces the tree whole.
    let again = gzip(&tar_bytes(&[file("only", 0o600, b"new")]));
    root.unpack(&again, ArchiveKind::TarGz, &Limits::default())
        .unwrap();
    let names: Vec<String> = std::fs::read_dir(&env)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["only"]);
    assert!(
        root.listing()
            .iter()
            .all(|p| !p.contains(".ferry-unpack-") && !p.contains(".ferry-replaced-")),
        "{:?}",
        root.listing()
    );
}

#[test]
fn zip_keeps_the_executable_bit_and_symlinks_it_recorded() {
    let root = Root::new();
    let bytes = zip_bytes(|w| {
        let exe = SimpleFileOptions::default().unix_permissions(0o755);
        w.add_directory("bin/", SimpleFileOptions::default())
            .unwrap();
        w.start_file("bin/python", exe).unwrap();
        w.write_all(b"#!/bin/sh\n").unwrap();
        w.start_file(
            "lib/a.py",
            SimpleFileOptions::default().unix_permissions(0o644),
        )
        .unwrap();
        w.write_all(b"A = 1\n").unwrap();
        w.add_symlink("bin/python3", "python", SimpleFileOptions::default())
            .unwrap();
    });
    root.unpack(&bytes, ArchiveKind::Zip, &Limits::default())
        .unwrap();
    let env = root.path("dest/env");
    let mode = |p: &str| std::fs::metadata(env.join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("bin/python"), 0o755);
    assert_eq!(mode("lib/a.py"), 0o644);
    assert_eq!(
        std::fs::read_link(env.join("bin/python3")).unwrap(),
        Path::new("python")
    );
}
