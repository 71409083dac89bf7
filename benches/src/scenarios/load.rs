//! Many clients at once: 200 concurrent 16 MiB downloads (one curl process
//! with 200 parallel transfers, each on its own connection) and 4 KiB GETs
//! over 64 connections with wrk. Both sides are read with a bundle token on
//! ferry, as executors read.

use std::fmt::Write as _;
use std::process::Command;

use anyhow::Context;

use super::{ensure_uploaded, mib};
use crate::Bench;
use crate::data::{self, Input};
use crate::measure::{Stats, output, timed};
use crate::report::{Row, Target};

const CLIENTS: usize = 200;
const CONNECTIONS: usize = 64;

/// One curl process running every transfer of `config` at once (up to
/// `clients`), each on its own connection, with header `auth`; redirects
/// are followed (curl keeps `auth` for the first host only).
pub fn parallel_curl(config: &std::path::Path, auth: &str, clients: usize) -> Command {
    let mut curl = Command::new("curl");
    curl.args([
        "-sS",
        "-f",
        "-L",
        "--parallel",
        "--parallel-immediate",
        "--parallel-max",
        &clients.to_string(),
        "-H",
        auth,
        "-K",
    ])
    .arg(config);
    curl
}

/// A curl config with `CLIENTS` transfers of `url` to /dev/null.
fn curl_config(url: &str) -> String {
    let mut text = String::new();
    for _ in 0..CLIENTS {
        let _ = writeln!(text, "url = \"{url}\"\noutput = \"/dev/null\"");
    }
    text
}

pub fn fanout(bench: &Bench) -> anyhow::Result<Vec<Row>> {
    let input = data::file(&bench.inputs.join("fanout.bin"), 16, 16 << 20)?;
    ensure_uploaded(bench, &[&input])?;
    let bundle = data::bundle(&bench.ferry, &[("fanout.bin".into(), &input)])?;
    let nginx_url = data::serve_from_nginx(&bench.nginx, &input, "fanout.bin")?;
    let ferry_config = bench.scratch.join("fanout-ferry.curl");
    let nginx_config = bench.scratch.join("fanout-nginx.curl");
    std::fs::write(
        &ferry_config,
        curl_config(&format!("{}/v1/blobs/{}", bench.ferry.url, input.digest)),
    )?;
    std::fs::write(&nginx_config, curl_config(&nginx_url))?;
    let auth = format!("Authorization: Bearer {}", bundle.token);
    let total = mib(input.size) * CLIENTS as f64;
    let curl = |config: &std::path::Path| parallel_curl(config, &auth, CLIENTS);
    let peak = bench.ferry.peak();
    peak.reset()?;
    let (ferry, reference) = bench.side_by_side(
        "200 x 16 MiB",
        || {
            let run = timed(&curl(&ferry_config), &bench.log("fanout-ferry"))?;
            Ok(total / run.wall.as_secs_f64())
        },
        || {
            let run = timed(&curl(&nginx_config), &bench.log("fanout-nginx"))?;
            Ok(total / run.wall.as_secs_f64())
        },
    )?;
    let server_peak = peak.peak_kib()? as f64 / 1024.0;
    Ok(vec![
        Row::compare(
            "fanout",
            "200 concurrent clients each GET a 16 MiB blob (aggregate)",
            "same from nginx",
            "MiB/s",
            ferry,
            reference,
            Some(Target::ratio_at_least(0.9)),
        )
        .rss(server_peak)
        .note("RSS: ferry-server; one curl process, 200 parallel connections"),
        Row::alone(
            "fanout",
            "server peak RSS during the 200-client fan-out",
            "MiB",
            Stats::of(&[server_peak]),
            Target::value_at_most(64.0),
        ),
    ])
}

/// `Requests/sec:` from wrk's summary.
fn requests_per_second(text: &str) -> anyhow::Result<f64> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk output:\n{text}"))
}

/// Non-2xx answers would make a fast-failing server look fast.
fn check_no_errors(text: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !text.contains("Non-2xx or 3xx responses") && !text.contains("Socket errors"),
        "wrk saw errors:\n{text}"
    );
    Ok(())
}

pub fn small_gets(bench: &Bench) -> anyhow::Result<Vec<Row>> {
    let input: Input = data::file(&bench.inputs.join("small.bin"), 4, 4 << 10)?;
    ensure_uploaded(bench, &[&input])?;
    let bundle = data::bundle(&bench.ferry, &[("small.bin".into(), &input)])?;
    let nginx_url = data::serve_from_nginx(&bench.nginx, &input, "small.bin")?;
    let ferry_url = format!("{}/v1/blobs/{}", bench.ferry.url, input.digest);
    let auth = format!("Authorization: Bearer {}", bundle.token);
    let seconds = format!("{}s", bench.config.wrk_duration.as_secs());
    let wrk = |url: &str| -> anyhow::Result<f64> {
        let text = output(Command::new("wrk").args([
            "-t2",
            &format!("-c{CONNECTIONS}"),
            &format!("-d{seconds}"),
            "--timeout",
            "5s",
            "-H",
            &auth,
            url,
        ]))?;
        check_no_errors(&text)?;
        requests_per_second(&text)
    };
    let peak = bench.ferry.peak();
    peak.reset()?;
    let (ferry, reference) =
        bench.side_by_side("4 KiB GETs", || wrk(&ferry_url), || wrk(&nginx_url))?;
    Ok(vec![
        Row::compare(
            "wrk",
            "4 KiB blob GETs, 64 connections (wrk)",
            "nginx static file",
            "req/s",
            ferry,
            reference,
            Some(Target::ratio_at_least(0.5)),
        )
        .rss(peak.peak_kib()? as f64 / 1024.0)
        .note("RSS: ferry-server; bundle token auth on every request"),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_summary_is_parsed() {
        let text = "Running 4s test\n  2 threads and 64 connections\nRequests/sec:  12345.67\nTransfer/sec: 50MB\n";
        assert_eq!(requests_per_second(text).expect("parsed"), 12345.67);
        assert!(check_no_errors(text).is_ok());
        assert!(check_no_errors("  Non-2xx or 3xx responses: 5\n").is_err());
    }
}
