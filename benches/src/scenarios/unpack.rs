//! ferry-init unpacking an environment-like archive (Spark `--archives`,
//! `"unpack": true`) from a local file, and placing the same tree from a
//! warm node cache (hard links on the same file system), each against
//! `tar xzf` of the same file in the same run.
//!
//! The archive is generated once: ~10,000 files of mixed sizes (most small,
//! a few large, like a conda environment's `.py` files and `.so`s) in
//! nested folders, ~300 MiB unpacked, with symlinks, packed by the system
//! `tar czf` so both sides read one file. Half of each file is
//! pseudo-random and half repeats, so gzip has work to do either way.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, ensure};
use ferry_core::Digest;

use crate::Bench;
use crate::measure::timed;
use crate::report::{Row, Target};
use crate::servers::release_bin;

const FILES: usize = 10_000;
const LINKS: usize = 200;

/// Builds (or reuses) the archive.
fn environment_archive(bench: &Bench) -> anyhow::Result<std::path::PathBuf> {
    let archive = bench.inputs.join("env.tar.gz");
    if archive.is_file() {
        return Ok(archive);
    }
    let tree = bench.inputs.join("env-tree");
    crate::remove(&tree)?;
    let sizes = ferry_tests::pseudo_random_bytes(0xe9, FILES * 8);
    for i in 0..FILES {
        let word = u64::from_le_bytes(sizes[i * 8..i * 8 + 8].try_into()?);
        // 1 in 100 files is 1-3 MiB (a shared library), the rest 1-20 KiB.
        let size = if i % 100 == 0 {
            (1 << 20) + word % (2 << 20)
        } else {
            1024 + word % (19 << 10)
        };
        let dir = tree.join(format!(
            "lib/python3.11/site-packages/pkg{:03}/sub{}",
            i % 250,
            i % 4
        ));
        std::fs::create_dir_all(&dir)?;
        let half = ferry_tests::pseudo_random_bytes(i as u64, (size / 2) as usize);
        let mut body = half;
        body.extend(std::iter::repeat_n(
            b'a' + (i % 26) as u8,
            (size - size / 2) as usize,
        ));
        std::fs::write(dir.join(format!("m{i:05}.py")), body)?;
    }
    std::fs::create_dir_all(tree.join("bin"))?;
    for i in 0..LINKS {
        let target = format!(
            "../lib/python3.11/site-packages/pkg{:03}/sub{}/m{:05}.py",
            (i * 50) % 250,
            (i * 50) % 4,
            i * 50
        );
        std::os::unix::fs::symlink(target, tree.join(format!("bin/tool{i:03}")))?;
    }
    std::os::unix::fs::symlink("/usr/bin/python3", tree.join("bin/python"))?;
    let status = Command::new("tar")
        .arg("czf")
        .arg(&archive)
        .arg("-C")
        .arg(&tree)
        .arg(".")
        .status()
        .context("tar czf")?;
    ensure!(status.success(), "tar czf failed");
    crate::remove(&tree)?;
    Ok(archive)
}

fn check(dir: &Path) -> anyhow::Result<()> {
    let python = dir.join("bin/python");
    ensure!(
        std::fs::symlink_metadata(&python).is_ok_and(|m| m.is_symlink()),
        "{} was not unpacked",
        python.display()
    );
    let sample = dir.join(format!(
        "lib/python3.11/site-packages/pkg{:03}/sub{}/m{:05}.py",
        9999 % 250,
        9999 % 4,
        9999
    ));
    ensure!(sample.is_file(), "{} was not unpacked", sample.display());
    Ok(())
}

/// A node cache for ferry-init: its directory and the archive's digest,
/// which the plan pins (cached trees are keyed by it).
struct NodeCache<'a> {
    dir: &'a Path,
    digest: &'a Digest,
}

/// ferry-init unpacking the archive into `dest/env`, through `cache` when
/// given.
fn ferry_init(archive: &Path, dest: &Path, cache: Option<&NodeCache>) -> anyhow::Result<Command> {
    let mut uri = format!("file://{}", archive.display());
    if let Some(cache) = cache {
        uri = format!("{uri}#sha256={}", cache.digest.hex());
    }
    let plan = serde_json::json!({
        "version": 1,
        "items": [{
            "uri": uri,
            "dest": dest.display().to_string(),
            "name": "env",
            "unpack": true,
        }],
    });
    let mut command = Command::new(release_bin("ferry-init")?);
    command.arg("--quiet");
    if let Some(cache) = cache {
        command.arg("--cache-dir").arg(cache.dir);
    }
    command.arg("--plan-json").arg(plan.to_string());
    Ok(command)
}

/// One timed ferry-init run into the fresh scratch directory `name`,
/// checked; seconds.
fn ferry_side(
    bench: &Bench,
    archive: &Path,
    name: &str,
    cache: Option<&NodeCache>,
) -> anyhow::Result<f64> {
    let dest = bench.fresh_dir(name)?;
    let run = timed(&ferry_init(archive, &dest, cache)?, &bench.log(name))?;
    check(&dest.join("env"))?;
    Ok(run.wall.as_secs_f64())
}

/// One timed `tar xzf` of the archive, checked; seconds.
fn tar_side(bench: &Bench, archive: &Path) -> anyhow::Result<f64> {
    let dest = bench.fresh_dir("unpack-tar")?;
    let mut tar = Command::new("tar");
    tar.arg("xzf").arg(archive).arg("-C").arg(&dest);
    let run = timed(&tar, &bench.log("unpack-tar"))?;
    check(&dest)?;
    Ok(run.wall.as_secs_f64())
}

/// Unpack from a local file, then from a warm node cache: ferry-init vs
/// `tar xzf`.
pub fn run(bench: &Bench) -> anyhow::Result<Vec<Row>> {
    let archive = environment_archive(bench)?;
    let (ferry, reference) = bench.side_by_side(
        "unpack env",
        || ferry_side(bench, &archive, "unpack-ferry", None),
        || tar_side(bench, &archive),
    )?;

    // The cache is warmed by one untimed run; every timed run then only
    // checks the sealed tree and links it into a fresh directory.
    let digest = Digest::of(&std::fs::read(&archive).context("read the archive")?);
    let cache_dir = bench.fresh_dir("unpack-cache")?;
    let cache = NodeCache {
        dir: &cache_dir,
        digest: &digest,
    };
    ferry_side(bench, &archive, "unpack-warm", Some(&cache))?;
    let (cached, cached_reference) = bench.side_by_side(
        "unpack env from a warm node cache",
        || ferry_side(bench, &archive, "unpack-cached", Some(&cache)),
        || tar_side(bench, &archive),
    )?;
    for dir in [
        "unpack-ferry",
        "unpack-tar",
        "unpack-warm",
        "unpack-cached",
        "unpack-cache",
    ] {
        crate::remove(&bench.scratch.join(dir))?;
    }
    Ok(vec![
        Row::compare(
            "unpack",
            "unpack a ~300 MiB, 10,000-file environment archive from a local file",
            "tar xzf of the same file",
            "s",
            ferry,
            reference,
            Some(Target::ratio_at_most(1.2)),
        )
        .note("ferry-init syncs the tree (syncfs) before its rename, tar does not"),
        Row::compare(
            "unpack-cached",
            "place the same environment from a warm node cache (hard links, same file system)",
            "tar xzf of the same file",
            "s",
            cached,
            cached_reference,
            Some(Target::ratio_at_most(0.1)),
        )
        .note("ferry-init checks the cached tree against its seal, then links it"),
    ])
}
