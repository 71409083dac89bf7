//! ferry-init fetching staged files, against curl and aria2c fetching the
//! same bytes from nginx, and against itself with a warm node cache.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, ensure};

use super::{ensure_uploaded, large_input};
use crate::Bench;
use crate::data::{self, Bundle, Input};
use crate::measure::{Run, timed};
use crate::report::{Row, Target};
use crate::servers::release_bin;

/// `ferry-init` fetching `uri` into `into` with the bundle's token.
fn ferry_init(bench: &Bench, bundle: &Bundle, uri: &str, into: &Path) -> anyhow::Result<Command> {
    let token_file = bench.scratch.join(format!("{}.token", bundle.id));
    std::fs::write(&token_file, &bundle.token)?;
    let mut command = Command::new(release_bin("ferry-init")?);
    command
        .arg("--server")
        .arg(&bench.ferry.url)
        .arg("--token-file")
        .arg(&token_file)
        .arg("--into")
        .arg(into)
        .arg("--quiet")
        .arg(uri);
    Ok(command)
}

fn check_size(path: &Path, input: &Input) -> anyhow::Result<()> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("{} was not written", path.display()))?
        .len();
    ensure!(
        len == input.size,
        "{} has {len} bytes, expected {}",
        path.display(),
        input.size
    );
    Ok(())
}

fn staged_large(bench: &Bench) -> anyhow::Result<(Input, Bundle)> {
    let input = large_input(bench)?;
    ensure_uploaded(bench, &[&input])?;
    let bundle = data::bundle(&bench.ferry, &[("large.bin".into(), &input)])?;
    Ok((input, bundle))
}

fn peak_mib(runs: &[Run]) -> f64 {
    runs.iter().map(|r| r.max_rss_kib).max().unwrap_or(0) as f64 / 1024.0
}

/// Fetch one staged 1 GiB file, verified, to disk; reference: curl from nginx.
pub fn large(bench: &Bench) -> anyhow::Result<Vec<Row>> {
    let (input, bundle) = staged_large(bench)?;
    let nginx_url = data::serve_from_nginx(&bench.nginx, &input, "large.bin")?;
    let uri = format!("ferry://{}/large.bin", bundle.id);
    let mut ferry_runs = Vec::new();
    let (ferry, reference) = bench.side_by_side(
        "fetch 1 GiB",
        || {
            let into = bench.fresh_dir("fetch-1g-ferry")?;
            let run = timed(
                &ferry_init(bench, &bundle, &uri, &into)?,
                &bench.log("fetch-1g-ferry"),
            )?;
            check_size(&into.join("large.bin"), &input)?;
            ferry_runs.push(run);
            Ok(run.wall.as_secs_f64())
        },
        || {
            let into = bench.fresh_dir("fetch-1g-curl")?;
            let mut curl = Command::new("curl");
            curl.args(["-sS", "-f", "-o"])
                .arg(into.join("large.bin"))
                .arg(&nginx_url);
            let run = timed(&curl, &bench.log("fetch-1g-curl"))?;
            check_size(&into.join("large.bin"), &input)?;
            Ok(run.wall.as_secs_f64())
        },
    )?;
    bench.fresh_dir("fetch-1g-ferry")?;
    bench.fresh_dir("fetch-1g-curl")?;
    Ok(vec![
        Row::compare(
            "fetch-1g",
            "fetch a staged 1 GiB file, verified, to disk",
            "curl from nginx to disk",
            "s",
            ferry,
            reference,
            Some(Target::ratio_at_most(1.1)),
        )
        .rss(peak_mib(&ferry_runs))
        .note("RSS: ferry-init; ferry-init fsyncs before its rename, curl does not"),
    ])
}

/// The same 1 GiB fetch with a warm `--cache-dir`, against no cache.
pub fn cached(bench: &Bench) -> anyhow::Result<Vec<Row>> {
    let (input, bundle) = staged_large(bench)?;
    let uri = format!("ferry://{}/large.bin", bundle.id);
    let cache = bench.fresh_dir("node-cache")?;
    // Warm the cache once, untimed.
    let into = bench.fresh_dir("cache-warm")?;
    let mut warm = ferry_init(bench, &bundle, &uri, &into)?;
    warm.arg("--cache-dir").arg(&cache);
    timed(&warm, &bench.log("cache-warm"))?;
    let mut ferry_runs = Vec::new();
    let (ferry, reference) = bench.side_by_side(
        "cached 1 GiB",
        || {
            let into = bench.fresh_dir("cache-hit")?;
            let mut command = ferry_init(bench, &bundle, &uri, &into)?;
            command.arg("--cache-dir").arg(&cache);
            let run = timed(&command, &bench.log("cache-hit"))?;
            check_size(&into.join("large.bin"), &input)?;
            ferry_runs.push(run);
            Ok(run.wall.as_secs_f64())
        },
        || {
            let into = bench.fresh_dir("cache-network")?;
            let run = timed(
                &ferry_init(bench, &bundle, &uri, &into)?,
                &bench.log("cache-network"),
            )?;
            check_size(&into.join("large.bin"), &input)?;
            Ok(run.wall.as_secs_f64())
        },
    )?;
    for dir in ["node-cache", "cache-warm", "cache-hit", "cache-network"] {
        crate::remove(&bench.scratch.join(dir))?;
    }
    Ok(vec![
        Row::compare(
            "cache",
            "fetch a 1 GiB file already in the node cache",
            "the same ferry-init fetch over the network",
            "s",
            ferry,
            reference,
            Some(Target::ratio_at_most(0.1)),
        )
        .rss(peak_mib(&ferry_runs))
        .note("RSS: ferry-init"),
    ])
}

/// 500 small jars (10-200 KiB): ferry-init of the whole bundle against
/// `aria2c -j16` of the same files from nginx.
pub fn jars(bench: &Bench) -> anyhow::Result<Vec<Row>> {
    let inputs = data::files(
        &bench.inputs.join("jars"),
        "lib",
        "jar",
        500,
        (10 << 10, 200 << 10),
        500,
    )?;
    let refs: Vec<&Input> = inputs.iter().collect();
    ensure_uploaded(bench, &refs)?;
    let entries: Vec<(String, &Input)> = inputs
        .iter()
        .map(|i| (format!("jars/{}", file_name(i)), i))
        .collect();
    let bundle = data::bundle(&bench.ferry, &entries)?;
    let mut list = String::new();
    for input in &inputs {
        let url =
            data::serve_from_nginx(&bench.nginx, input, &format!("jars/{}", file_name(input)))?;
        list.push_str(&url);
        list.push('\n');
    }
    let list_file = bench.scratch.join("jars.list");
    std::fs::write(&list_file, list)?;
    let uri = format!("ferry://{}", bundle.id);
    let check = |dir: &Path| -> anyhow::Result<()> {
        for input in &inputs {
            check_size(&dir.join(file_name(input)), input)?;
        }
        Ok(())
    };
    let mut ferry_runs = Vec::new();
    let (ferry, reference) = bench.side_by_side(
        "500 jars",
        || {
            let into = bench.fresh_dir("jars-ferry")?;
            let run = timed(
                &ferry_init(bench, &bundle, &uri, &into)?,
                &bench.log("jars-ferry"),
            )?;
            check(&into.join("jars"))?;
            ferry_runs.push(run);
            Ok(run.wall.as_secs_f64())
        },
        || {
            let into = bench.fresh_dir("jars-aria2c")?;
            let mut aria = Command::new("aria2c");
            aria.args([
                "-j16",
                "--console-log-level=warn",
                "--summary-interval=0",
                "--download-result=hide",
                "--auto-file-renaming=false",
                "-d",
            ])
            .arg(&into)
            .arg("-i")
            .arg(&list_file);
            let run = timed(&aria, &bench.log("jars-aria2c"))?;
            check(&into)?;
            Ok(run.wall.as_secs_f64())
        },
    )?;
    crate::remove(&bench.scratch.join("jars-ferry"))?;
    crate::remove(&bench.scratch.join("jars-aria2c"))?;
    Ok(vec![
        Row::compare(
            "fetch-jars",
            "fetch 500 small jars (10-200 KiB)",
            "aria2c -j16 from nginx",
            "s",
            ferry,
            reference,
            Some(Target::ratio_at_most(0.5)),
        )
        .rss(peak_mib(&ferry_runs))
        .note("RSS: ferry-init (default --jobs)"),
    ])
}

fn file_name(input: &Input) -> String {
    input
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
