//! `ferry stage` (the client): hashing and uploading a new 1 GiB file,
//! re-staging it unchanged, staging 500 small jars (new, then unchanged),
//! and staging many small files, against curl -T to nginx WebDAV,
//! `openssl dgst -sha256`, and a 100-file baseline.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, ensure};

use super::large_input;
use crate::Bench;
use crate::data::{self, Input};
use crate::measure::{Run, Stats, timed};
use crate::report::{Row, Target};
use crate::servers::{Ferry, release_bin};

/// `ferry stage` against `server`, or an error when the client is not built
/// or has no working `stage` yet.
fn ferry_stage(bench: &Bench, server: &Ferry, paths: &[&Path]) -> anyhow::Result<Command> {
    let exe = release_bin("ferry")?;
    let help = Command::new(&exe)
        .args(["stage", "--help"])
        .output()
        .context("run ferry stage --help")?;
    // A placeholder binary exits 0 on anything; a real one documents --server.
    ensure!(
        help.status.success() && String::from_utf8_lossy(&help.stdout).contains("--server"),
        "`ferry stage` is not available yet in {}",
        exe.display()
    );
    let token_file = bench.scratch.join("upload.token");
    std::fs::write(&token_file, &server.token)?;
    let mut command = Command::new(exe);
    command
        .arg("stage")
        .arg("--server")
        .arg(&server.url)
        .arg("--token-file")
        .arg(&token_file)
        .arg("--output")
        .arg("json")
        .args(paths)
        // New files are new to the digest cache too: each timed run reads
        // them. The unchanged-file scenarios turn it on (`with_digest_cache`).
        .env("FERRY_CACHE_DIR", bench.scratch.join("ferry-cache"))
        .env("FERRY_NO_DIGEST_CACHE", "1");
    Ok(command)
}

/// `command` with the digest cache on, as a user's `ferry stage` has it.
fn with_digest_cache(mut command: Command) -> Command {
    command.env_remove("FERRY_NO_DIGEST_CACHE");
    command
}

/// Bundles the server stores: each `ferry stage` must add one.
fn bundle_count(server: &Ferry) -> usize {
    std::fs::read_dir(server.data.join("bundles")).map_or(0, |d| d.count())
}

/// Runs `ferry stage` and checks it created a bundle.
fn stage_once(command: &Command, server: &Ferry, log: &Path) -> anyhow::Result<Run> {
    let before = bundle_count(server);
    let run = timed(command, log)?;
    ensure!(
        bundle_count(server) > before,
        "ferry stage exited 0 but created no bundle; log: {}",
        log.display()
    );
    Ok(run)
}

fn peak_mib(runs: &[Run]) -> f64 {
    runs.iter().map(|r| r.max_rss_kib).max().unwrap_or(0) as f64 / 1024.0
}

/// Stage one new 1 GiB file (hash + upload); reference: curl -T to nginx.
pub fn new_large(bench: &Bench) -> anyhow::Result<Vec<Row>> {
    let input = large_input(bench)?;
    let blob_file = bench.ferry.blob_file(&input.digest.hex());
    let nginx_file = bench.nginx.root.join("put/stage.bin");
    let nginx_url = format!("{}/put/stage.bin", bench.nginx.url);
    let command = ferry_stage(bench, &bench.ferry, &[&input.path])?;
    let peak = bench.ferry.peak();
    peak.reset()?;
    let mut ferry_runs = Vec::new();
    // ferry-server makes the blob durable before it answers; nginx does
    // not. So each curl run is also timed with `sync FILE` (an fsync of
    // what nginx stored) after it: the same upload with the same promise.
    let mut durable = Vec::new();
    let (ferry, reference) = bench.side_by_side(
        "stage 1 GiB",
        || {
            crate::remove(&blob_file)?;
            let run = stage_once(&command, &bench.ferry, &bench.log("stage-ferry"))?;
            ensure!(blob_file.is_file(), "ferry stage did not upload the blob");
            ferry_runs.push(run);
            Ok(run.wall.as_secs_f64())
        },
        || {
            crate::remove(&nginx_file)?;
            let run = timed(&curl_put(&input.path, &nginx_url), &bench.log("stage-curl"))?;
            let mut sync = Command::new("sync");
            sync.arg(&nginx_file);
            let synced = timed(&sync, &bench.log("stage-curl-sync"))?;
            durable.push(run.wall.as_secs_f64() + synced.wall.as_secs_f64());
            Ok(run.wall.as_secs_f64())
        },
    )?;
    let server_peak = peak.peak_kib()? as f64 / 1024.0;
    crate::remove(&nginx_file)?;
    Ok(vec![
        Row::compare(
            "stage",
            "stage one new 1 GiB file (hash + upload)",
            "curl -T to nginx WebDAV",
            "s",
            ferry,
            reference,
            Some(Target::ratio_at_most(1.1)),
        )
        .rss(peak_mib(&ferry_runs))
        .note(format!(
            "RSS: ferry client; ferry-server peak {server_peak:.0} MiB"
        )),
        Row::compare(
            "stage",
            "stage one new 1 GiB file (vs a durable upload)",
            "curl -T to nginx WebDAV, then `sync` of the stored file",
            "s",
            ferry,
            Stats::of(&durable),
            None,
        )
        .note("the same ferry runs; the reference made as durable as ferry's 201; reported, no target"),
        Row::alone(
            "stage",
            "server peak RSS during `ferry stage` of 1 GiB",
            "MiB",
            Stats::of(&[server_peak]),
            Target::value_at_most(64.0),
        ),
    ])
}

/// Re-stage the unchanged 1 GiB file; reference: `openssl dgst -sha256`.
pub fn unchanged_large(bench: &Bench) -> anyhow::Result<Vec<Row>> {
    let input = large_input(bench)?;
    let command = with_digest_cache(ferry_stage(bench, &bench.ferry, &[&input.path])?);
    // Staged once, untimed, so every timed run finds the blob present.
    stage_once(&command, &bench.ferry, &bench.log("restage-first"))?;
    let mut ferry_runs = Vec::new();
    let (ferry, reference) = bench.side_by_side(
        "re-stage 1 GiB",
        || {
            let run = stage_once(&command, &bench.ferry, &bench.log("restage-ferry"))?;
            ferry_runs.push(run);
            Ok(run.wall.as_secs_f64())
        },
        || {
            let mut openssl = Command::new("openssl");
            openssl.args(["dgst", "-sha256"]).arg(&input.path);
            Ok(timed(&openssl, &bench.log("restage-openssl"))?
                .wall
                .as_secs_f64())
        },
    )?;
    // The unchanged stage is also set against an upload of the same bytes.
    let nginx_file = bench.nginx.root.join("put/restage.bin");
    let nginx_url = format!("{}/put/restage.bin", bench.nginx.url);
    let (ferry_again, curl) = bench.side_by_side(
        "re-stage 1 GiB vs curl -T",
        || {
            let run = stage_once(&command, &bench.ferry, &bench.log("restage-ferry"))?;
            Ok(run.wall.as_secs_f64())
        },
        || {
            crate::remove(&nginx_file)?;
            Ok(timed(
                &curl_put(&input.path, &nginx_url),
                &bench.log("restage-curl"),
            )?
            .wall
            .as_secs_f64())
        },
    )?;
    crate::remove(&nginx_file)?;
    Ok(vec![
        Row::compare(
            "restage",
            "re-stage the unchanged 1 GiB file",
            "openssl dgst -sha256",
            "s",
            ferry,
            reference,
            // The digest cache: a stat, not a read (issue 12).
            Some(Target::ratio_at_most(0.05)),
        )
        .rss(peak_mib(&ferry_runs))
        .note("RSS: ferry client"),
        Row::compare(
            "restage",
            "re-stage the unchanged 1 GiB file (vs uploading it)",
            "curl -T to nginx WebDAV",
            "s",
            ferry_again,
            curl,
            None,
        )
        .note("issue 5: nothing is uploaded the second time; reported, no target"),
    ])
}

/// `curl -T file url`: one upload to nginx WebDAV.
fn curl_put(file: &Path, url: &str) -> Command {
    let mut curl = Command::new("curl");
    curl.args(["-sS", "-f", "-o", "/dev/null", "-T"])
        .arg(file)
        .arg(url);
    curl
}

/// Staging 500 small jars into a server without them, and again unchanged,
/// against uploading the same files to nginx WebDAV with curl -T (one curl,
/// 8 uploads at once, as `ferry stage` uploads 8 at once).
pub fn jars(bench: &Bench) -> anyhow::Result<Vec<Row>> {
    let inputs = data::files(
        &bench.inputs.join("jars"),
        "lib",
        "jar",
        JARS,
        (10 << 10, 200 << 10),
        500,
    )?;
    // Only the jars, not their digest sidecars.
    let src = bench.fresh_dir("stage-jars-src")?;
    let mut config = String::new();
    for input in &inputs {
        let name = input.path.file_name().unwrap_or_default();
        let link = src.join(name);
        std::fs::hard_link(&input.path, &link)?;
        let _ = writeln!(
            config,
            "upload-file = \"{}\"\nurl = \"{}/put/jars/{}\"\noutput = \"/dev/null\"",
            link.display(),
            bench.nginx.url,
            name.to_string_lossy()
        );
    }
    let config_file = bench.scratch.join("stage-jars.curl");
    std::fs::write(&config_file, config)?;
    let nginx_dir = bench.nginx.root.join("put/jars");
    std::fs::create_dir_all(&nginx_dir)?;
    let curl = || -> anyhow::Result<f64> {
        let mut curl = Command::new("curl");
        curl.args(["-sS", "-f", "--parallel", "--parallel-max", "8", "-K"])
            .arg(&config_file);
        let run = timed(&curl, &bench.log("stage-jars-curl"))?;
        let uploaded = std::fs::read_dir(&nginx_dir)?.count();
        ensure!(uploaded == JARS, "curl uploaded {uploaded} of {JARS} jars");
        for entry in std::fs::read_dir(&nginx_dir)? {
            std::fs::remove_file(entry?.path())?;
        }
        Ok(run.wall.as_secs_f64())
    };
    let command = ferry_stage(bench, &bench.ferry, &[&src])?;
    let mut first_runs = Vec::new();
    let (first, curl_first) = bench.side_by_side(
        "stage 500 jars",
        || {
            for input in &inputs {
                crate::remove(&bench.ferry.blob_file(&input.digest.hex()))?;
            }
            let run = stage_once(&command, &bench.ferry, &bench.log("stage-jars-ferry"))?;
            let stored = inputs
                .iter()
                .filter(|i| bench.ferry.blob_file(&i.digest.hex()).is_file())
                .count();
            ensure!(stored == JARS, "ferry stage stored {stored} of {JARS} jars");
            first_runs.push(run);
            Ok(run.wall.as_secs_f64())
        },
        curl,
    )?;
    let mut again_runs = Vec::new();
    let command = with_digest_cache(command);
    let (again, curl_again) = bench.side_by_side(
        "re-stage 500 jars",
        || {
            let run = stage_once(&command, &bench.ferry, &bench.log("restage-jars-ferry"))?;
            again_runs.push(run);
            Ok(run.wall.as_secs_f64())
        },
        curl,
    )?;
    crate::remove(&src)?;
    crate::remove(&nginx_dir)?;
    let reference = "curl -T of the same files to nginx WebDAV (8 at once)";
    Ok(vec![
        Row::compare(
            "stage-jars",
            "stage 500 new small jars (10-200 KiB)",
            reference,
            "s",
            first,
            curl_first,
            Some(Target::ratio_at_most(1.5)),
        )
        .rss(peak_mib(&first_runs))
        .note("issue 5; RSS: ferry client; reported, no target"),
        Row::compare(
            "stage-jars",
            "re-stage the 500 unchanged jars",
            reference,
            "s",
            again,
            curl_again,
            None,
        )
        .rss(peak_mib(&again_runs))
        .note("issue 5: nothing is uploaded the second time; reported, no target"),
    ])
}

const JARS: usize = 500;

/// Client wall time and server CPU time of staging `inputs`' folder into a
/// fresh server, per file, in milliseconds.
fn stage_folder(bench: &Bench, dir: &Path, count: usize, tag: &str) -> anyhow::Result<(f64, f64)> {
    let data_dir = bench.scratch.join(format!("stage-many-{tag}"));
    crate::remove(&data_dir)?;
    let server = Ferry::start(&data_dir, &bench.log(&format!("stage-many-server-{tag}")))?;
    let command = ferry_stage(bench, &server, &[dir])?;
    let peak = server.peak();
    let cpu_before = peak.thread_cpu_time()?;
    let run = stage_once(&command, &server, &bench.log(&format!("stage-many-{tag}")))?;
    let cpu = peak.thread_cpu_time()?.saturating_sub(cpu_before);
    let stored = std::fs::read_dir(server.data.join("blobs/sha256"))?
        .filter_map(Result::ok)
        .map(|d| std::fs::read_dir(d.path()).map_or(0, |f| f.count()))
        .sum::<usize>();
    ensure!(
        stored == count,
        "staged {count} files but the server stores {stored} blobs"
    );
    drop(server);
    crate::remove(&data_dir)?;
    let per_file = |seconds: f64| seconds * 1000.0 / count as f64;
    Ok((
        per_file(run.wall.as_secs_f64()),
        per_file(cpu.as_secs_f64()),
    ))
}

/// Staging many small files scales linearly: time per file at N files
/// against time per file at 100.
pub fn many_small(bench: &Bench) -> anyhow::Result<Vec<Row>> {
    let (many, few) = (bench.config.many_files, bench.config.few_files);
    let small = (1 << 10, 8 << 10);
    let many_dir = bench.inputs.join(format!("many-{many}"));
    let few_dir = bench.inputs.join(format!("few-{few}"));
    let _: Vec<Input> = data::files(&many_dir.join("files"), "f", "dat", many, small, 10_000)?;
    let _: Vec<Input> = data::files(&few_dir.join("files"), "f", "dat", few, small, 100)?;
    // Only the files, not the digest sidecars, are staged.
    let staged_dir = |dir: &Path, tag: &str| -> anyhow::Result<std::path::PathBuf> {
        let out = bench.scratch.join(format!("stage-many-src-{tag}"));
        crate::remove(&out)?;
        std::fs::create_dir_all(&out)?;
        for entry in std::fs::read_dir(dir.join("files"))? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "dat") {
                let target = out.join(path.file_name().unwrap_or_default());
                std::fs::hard_link(&path, &target)?;
            }
        }
        Ok(out)
    };
    let many_src = staged_dir(&many_dir, "many")?;
    let few_src = staged_dir(&few_dir, "few")?;
    ferry_stage(bench, &bench.ferry, &[])?;
    let (mut server_many, mut server_few) = (Vec::new(), Vec::new());
    let (client_many, client_few) = bench.side_by_side(
        &format!("stage {many} vs {few} files"),
        || {
            let (client, server) = stage_folder(bench, &many_src, many, "many")?;
            server_many.push(server);
            Ok(client)
        },
        || {
            let (client, server) = stage_folder(bench, &few_src, few, "few")?;
            server_few.push(server);
            Ok(client)
        },
    )?;
    crate::remove(&many_src)?;
    crate::remove(&few_src)?;
    Ok(vec![
        Row::compare(
            "stage-many",
            &format!("stage {many} small files: client time per file"),
            &format!("{few} files, per file"),
            "ms/file",
            client_many,
            client_few,
            Some(Target::ratio_at_most(1.1)),
        )
        .note("linear scaling: ratio 1.0 means equal cost per file (1.1 allows noise)"),
        Row::compare(
            "stage-many",
            &format!("stage {many} small files: server CPU per file"),
            &format!("{few} files, per file"),
            "ms/file",
            Stats::of(&server_many),
            Stats::of(&server_few),
            Some(Target::ratio_at_most(1.1)),
        )
        .note("ferry-server CPU of its threads (schedstat, ns)"),
    ])
}
