//! ferry-init unpacking an environment-like archive (Spark `--archives`,
//! `"unpack": true`) from a local file, against `tar xzf` of the same file
//! in the same run.
//!
//! The archive is generated once: ~10,000 files of mixed sizes (most small,
//! a few large, like a conda environment's `.py` files and `.so`s) in
//! nested folders, ~300 MiB unpacked, with symlinks, packed by the system
//! `tar czf` so both sides read one file. Half of each file is
//! pseudo-random and half repeats, so gzip has work to do either way.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, ensure};

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

/// ferry-init unpacking the archive into `dest/env`.
fn ferry_init(archive: &Path, dest: &Path) -> anyhow::Result<Command> {
    let plan = serde_json::json!({
        "version": 1,
        "items": [{
            "uri": format!("file://{}", archive.display()),
            "dest": dest.display().to_string(),
            "name": "env",
            "unpack": true,
        }],
    });
    let mut command = Command::new(release_bin("ferry-init")?);
    command
        .arg("--quiet")
        .arg("--plan-json")
        .arg(plan.to_string());
    Ok(command)
}

/// Unpack from a local file: ferry-init vs `tar xzf`.
pub fn run(bench: &Bench) -> anyhow::Result<Vec<Row>> {
    let archive = environment_archive(bench)?;
    let (ferry, reference) = bench.side_by_side(
        "unpack env",
        || {
            let dest = bench.fresh_dir("unpack-ferry")?;
            let run = timed(&ferry_init(&archive, &dest)?, &bench.log("unpack-ferry"))?;
            check(&dest.join("env"))?;
            Ok(run.wall.as_secs_f64())
        },
        || {
            let dest = bench.fresh_dir("unpack-tar")?;
            let mut tar = Command::new("tar");
            tar.arg("xzf").arg(&archive).arg("-C").arg(&dest);
            let run = timed(&tar, &bench.log("unpack-tar"))?;
            check(&dest)?;
            Ok(run.wall.as_secs_f64())
        },
    )?;
    for dir in ["unpack-ferry", "unpack-tar"] {
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
    ])
}
