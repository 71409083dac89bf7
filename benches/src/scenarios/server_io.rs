//! The server alone, driven by curl. A 1 GiB
//! file is PUT to `/v1/blobs/sha256:<hex>` and to nginx WebDAV, then GET to
//! disk from each; throughputs, ratios, and ferry-server's peak RSS.

use std::process::Command;

use anyhow::ensure;

use super::{large_input, mib};
use crate::Bench;
use crate::measure::{Stats, timed};
use crate::report::{Row, Target};

pub fn run(bench: &Bench) -> anyhow::Result<Vec<Row>> {
    let input = large_input(bench)?;
    let hex = input.digest.hex();
    let blob_url = format!("{}/v1/blobs/{}", bench.ferry.url, input.digest);
    let nginx_url = format!("{}/put/large.bin", bench.nginx.url);
    let auth = format!("Authorization: Bearer {}", bench.ferry.token);
    let size = mib(input.size);
    let peak = bench.ferry.peak();

    peak.reset()?;
    let blob_file = bench.ferry.blob_file(&hex);
    let nginx_file = bench.nginx.root.join("put/large.bin");
    let (put_ferry, put_nginx) = bench.side_by_side(
        "PUT 1 GiB",
        || {
            // A new blob every time: the server would otherwise still read
            // the body but skip the rename.
            crate::remove(&blob_file)?;
            let mut curl = Command::new("curl");
            curl.args(["-sS", "-f", "-o", "/dev/null", "-H", &auth, "-T"])
                .arg(&input.path)
                .arg(&blob_url);
            let run = timed(&curl, &bench.log("server-io-put-ferry"))?;
            ensure!(blob_file.is_file(), "ferry-server did not store the blob");
            Ok(size / run.wall.as_secs_f64())
        },
        || {
            crate::remove(&nginx_file)?;
            let mut curl = Command::new("curl");
            curl.args(["-sS", "-f", "-o", "/dev/null", "-T"])
                .arg(&input.path)
                .arg(&nginx_url);
            let run = timed(&curl, &bench.log("server-io-put-nginx"))?;
            ensure!(nginx_file.is_file(), "nginx did not store the file");
            Ok(size / run.wall.as_secs_f64())
        },
    )?;
    let put_peak = peak.peak_kib()? as f64 / 1024.0;

    peak.reset()?;
    let out = bench.scratch.join("server-io.out");
    let (get_ferry, get_nginx) = bench.side_by_side(
        "GET 1 GiB",
        || {
            crate::remove(&out)?;
            let mut curl = Command::new("curl");
            curl.args(["-sS", "-f", "-H", &auth, "-o"])
                .arg(&out)
                .arg(&blob_url);
            let run = timed(&curl, &bench.log("server-io-get-ferry"))?;
            ensure!(std::fs::metadata(&out)?.len() == input.size, "short GET");
            Ok(size / run.wall.as_secs_f64())
        },
        || {
            crate::remove(&out)?;
            let mut curl = Command::new("curl");
            curl.args(["-sS", "-f", "-o"]).arg(&out).arg(&nginx_url);
            let run = timed(&curl, &bench.log("server-io-get-nginx"))?;
            ensure!(std::fs::metadata(&out)?.len() == input.size, "short GET");
            Ok(size / run.wall.as_secs_f64())
        },
    )?;
    let get_peak = peak.peak_kib()? as f64 / 1024.0;
    crate::remove(&out)?;
    crate::remove(&nginx_file)?;

    Ok(vec![
        Row::compare(
            "server-io",
            "server PUT 1 GiB, curl -T (throughput)",
            "nginx WebDAV PUT, curl -T",
            "MiB/s",
            put_ferry,
            put_nginx,
            None,
        )
        .rss(put_peak)
        .note("RSS: ferry-server"),
        Row::compare(
            "server-io",
            "server GET 1 GiB to disk, curl -o (throughput)",
            "nginx GET, curl -o",
            "MiB/s",
            get_ferry,
            get_nginx,
            None,
        )
        .rss(get_peak)
        .note("RSS: ferry-server"),
        Row::alone(
            "server-io",
            "server peak RSS during the 1 GiB upload",
            "MiB",
            Stats::of(&[put_peak]),
            Target::value_at_most(64.0),
        ),
    ])
}
