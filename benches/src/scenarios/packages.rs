//! `ferry submit --packages` with 20 packages: the time ferry adds before
//! spark-submit starts (`--dry-run`: parse, resolve or read the lock,
//! stage, render), with the lock and every jar already on the server (no
//! resolution: goal <= 0.3 s), and the same without the lock (Spark's Ivy
//! resolves again from its warm cache; dominated by the JVM's start, no
//! target).
//!
//! The 20 packages are Maven-layout modules (a POM and a 64 KiB jar each)
//! in the bench's nginx root; the chain's default repository points there
//! (`DEFAULT_ARTIFACT_REPOSITORY`) and `HOME` is a scratch folder, so
//! nothing leaves the machine. Needs pyspark's Spark (`FERRY_TEST_SPARK_SUBMIT`,
//! `SPARK_HOME` derived from it) and `java`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, ensure};

use crate::Bench;
use crate::measure::timed;
use crate::report::{Row, Target};
use crate::servers::release_bin;

const PACKAGES: usize = 20;

/// Writes the modules under `<nginx root>/m2`; returns the `--packages` list.
fn repository(root: &Path) -> anyhow::Result<String> {
    let mut list = Vec::new();
    for index in 0..PACKAGES {
        let artifact = format!("lib-{index:02}");
        let dir = root.join("m2/com/bench").join(&artifact).join("1.0");
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        std::fs::write(
            dir.join(format!("{artifact}-1.0.pom")),
            format!(
                "<project><modelVersion>4.0.0</modelVersion><groupId>com.bench</groupId><artifactId>{artifact}</artifactId><version>1.0</version></project>\n"
            ),
        )?;
        let bytes: Vec<u8> = (0..64 * 1024u32)
            .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(index as u32) >> 13) as u8)
            .collect();
        std::fs::write(dir.join(format!("{artifact}-1.0.jar")), bytes)?;
        list.push(format!("com.bench:{artifact}:1.0"));
    }
    Ok(list.join(","))
}

/// pyspark's distribution: the folder above its `bin/spark-submit`.
fn spark_home() -> anyhow::Result<(PathBuf, PathBuf)> {
    let submit = std::env::var_os("FERRY_TEST_SPARK_SUBMIT")
        .map(PathBuf::from)
        .context("FERRY_TEST_SPARK_SUBMIT is not set (source target/emulators/env.sh)")?;
    let python = std::env::var_os("FERRY_TEST_PYTHON")
        .map(PathBuf::from)
        .context("FERRY_TEST_PYTHON is not set")?;
    let output = Command::new(&python)
        .args([
            "-c",
            "import os, pyspark; print(os.path.dirname(pyspark.__file__))",
        ])
        .output()
        .context("ask python where pyspark is")?;
    ensure!(
        output.status.success(),
        "{} cannot import pyspark",
        python.display()
    );
    let home = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    Ok((home, submit))
}

pub fn run(bench: &Bench) -> anyhow::Result<Vec<Row>> {
    let (spark_home, spark_submit) = spark_home()?;
    let packages = repository(&bench.nginx.root)?;
    let home = bench.fresh_dir("packages-home")?;
    let lock = home.join("ferry.lock");
    let token_file = bench.scratch.join("packages-upload.token");
    std::fs::write(&token_file, &bench.ferry.token)?;
    let app = home.join("app.py");
    std::fs::write(&app, "print('never run')\n")?;
    let mut command = Command::new(release_bin("ferry")?);
    command
        .arg("--server")
        .arg(&bench.ferry.url)
        .arg("--token-file")
        .arg(&token_file)
        .args([
            "--quiet",
            "submit",
            "--dry-run",
            "--output",
            "json",
            "--lock",
        ])
        .arg(&lock)
        .arg("--template-dir")
        .arg(home.join("templates"))
        .arg("--")
        .arg(&spark_submit)
        // ferry delivers (and so resolves) only for a Kubernetes master;
        // nothing listens there, and a dry run never reaches it.
        .args([
            "--master",
            "k8s://https://127.0.0.1:9",
            "--deploy-mode",
            "cluster",
        ])
        .args(["--packages", &packages])
        .arg(&app)
        .env("HOME", &home)
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("XDG_CONFIG_HOME", home.join("no-config"))
        .env("KUBECONFIG", home.join("no-kubeconfig"))
        .env("SPARK_HOME", &spark_home)
        .env(
            "DEFAULT_ARTIFACT_REPOSITORY",
            format!("{}/m2/", bench.nginx.url),
        );
    // The first run resolves, writes the lock and uploads the jars.
    let first = timed(&command, &bench.log("packages-first"))?;
    ensure!(lock.is_file(), "ferry submit --packages wrote no lock");
    bench.progress(&format!(
        "packages: first resolution and upload {:.2} s",
        first.wall.as_secs_f64()
    ));
    let (locked, resolved) = bench.side_by_side(
        "submit 20 packages",
        || {
            Ok(timed(&command, &bench.log("packages-locked"))?
                .wall
                .as_secs_f64())
        },
        || {
            crate::remove(&lock)?;
            let run = timed(&command, &bench.log("packages-resolved"))?;
            ensure!(lock.is_file(), "the resolution wrote no lock");
            Ok(run.wall.as_secs_f64())
        },
    )?;
    Ok(vec![
        Row::alone(
            "packages",
            "submit with 20 locked packages on the server: time before spark-submit",
            "s",
            locked,
            Target::value_at_most(0.3),
        ),
        Row::compare(
            "packages",
            "submit with 20 packages: lock vs resolving with Spark's Ivy",
            "the same without the lock (Ivy, warm cache)",
            "s",
            locked,
            resolved,
            None,
        )
        .note("without the lock: dominated by the JVM's start; no target"),
    ])
}
