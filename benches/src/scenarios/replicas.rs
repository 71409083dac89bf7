//! Several replicas on one bucket: three ferry-servers on a moto (S3)
//! bucket serve 200 clients a 16 MiB blob, once proxied (`--redirect=false`:
//! each replica streams the store's bytes) and once redirected (the
//! default: a `307` to a signed store URL, the client fetches the bytes
//! from the store). Reported: the replicas' CPU seconds per GiB delivered
//! (summed over the three, from `/proc/<pid>/stat`), and the latency a
//! redirect adds per blob (the `307` round trip, p50 of sequential GETs).
//!
//! moto is a Python emulator and serves the bytes in both modes (the
//! proxying replicas read from it too), so the wall time of a run says
//! more about moto than about ferry; the CPU figures are ferry's own.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context;
use ferry_tests::moto::Moto;

use crate::Bench;
use crate::data::{self, Input};
use crate::measure::{ProcessPeak, Stats, timed};
use crate::report::{Row, Target};
use crate::servers::Ferry;

const CLIENTS: usize = 200;
const REPLICAS: usize = 3;
const LATENCY_SAMPLES: usize = 200;
const BUCKET: &str = "ferry-bench";
/// Shared by every replica of the run.
const TOKEN: &str = "bench-replicas-upload-token-0123456789";

fn start_replicas(
    bench: &Bench,
    env: &[(String, String)],
    args: &[&str],
    tag: &str,
) -> anyhow::Result<Vec<Ferry>> {
    let token_file = bench.scratch.join("replicas-upload-token");
    std::fs::write(&token_file, TOKEN)?;
    (0..REPLICAS)
        .map(|i| {
            Ferry::replica(
                &format!("s3://{BUCKET}/ferry"),
                &token_file,
                env,
                args,
                &bench.log(&format!("replica-{tag}-{i}")),
            )
        })
        .collect()
}

/// CPU time of all `replicas` so far, in seconds.
fn cpu_seconds(replicas: &[Ferry]) -> anyhow::Result<f64> {
    replicas
        .iter()
        .map(|r| Ok(ProcessPeak::new(r.child.id()).cpu_time()?.as_secs_f64()))
        .sum()
}

/// A curl config: `CLIENTS` transfers of the blob, spread over the replicas.
fn curl_config(replicas: &[Ferry], input: &Input) -> String {
    let mut text = String::new();
    for i in 0..CLIENTS {
        let url = format!(
            "{}/v1/blobs/{}",
            replicas[i % replicas.len()].url,
            input.digest
        );
        let _ = writeln!(text, "url = \"{url}\"\noutput = \"/dev/null\"");
    }
    text
}

pub fn run(bench: &Bench) -> anyhow::Result<Vec<Row>> {
    let moto = Moto::start().context("moto_server is not installed (tests/install-deps.sh)")?;
    moto.create_bucket(BUCKET);
    let mut env = moto.env();
    env.push(("AWS_METADATA_ENDPOINT".into(), "http://127.0.0.1:9".into()));
    env.push(("AWS_EC2_METADATA_DISABLED".into(), "true".into()));
    let redirected = start_replicas(bench, &env, &[], "redirect")?;
    let proxied = start_replicas(bench, &env, &["--redirect=false"], "proxy")?;
    let input = data::file(&bench.inputs.join("fanout.bin"), 16, 16 << 20)?;
    data::upload(&redirected[0], &[&input])?;
    let bundle = data::bundle(&redirected[0], &[("fanout.bin".into(), &input)])?;
    let auth = format!("Authorization: Bearer {}", bundle.token);
    let gib = (input.size * CLIENTS as u64) as f64 / f64::from(1u32 << 30);

    // One run: every client GETs the blob (following a redirect to the
    // store, without the bearer token, which curl keeps for the replica's
    // host); returns the replicas' CPU seconds per GiB.
    let fan_out = |replicas: &[Ferry], tag: &str| -> anyhow::Result<f64> {
        let config = bench.scratch.join(format!("replicas-{tag}.curl"));
        std::fs::write(&config, curl_config(replicas, &input))?;
        let curl = super::load::parallel_curl(&config, &auth, CLIENTS);
        let before = cpu_seconds(replicas)?;
        timed(&curl, &bench.log(&format!("replicas-{tag}")))?;
        Ok((cpu_seconds(replicas)? - before) / gib)
    };
    let (redirect_cpu, proxy_cpu) = bench.side_by_side(
        "3 replicas, 200 x 16 MiB",
        || fan_out(&redirected, "redirect"),
        || fan_out(&proxied, "proxy"),
    )?;

    // The redirect's own cost per blob: the time to the 307 (token check,
    // blob lookup in the store, URL signing), which a client pays before
    // its first byte from the store.
    let http = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()?;
    let url = format!("{}/v1/blobs/{}", redirected[0].url, input.digest);
    let mut latencies = Vec::with_capacity(LATENCY_SAMPLES);
    for _ in 0..LATENCY_SAMPLES {
        let started = Instant::now();
        let response = http.get(&url).bearer_auth(&bundle.token).send()?;
        let elapsed = started.elapsed();
        anyhow::ensure!(
            response.status() == reqwest::StatusCode::TEMPORARY_REDIRECT,
            "a replica on a bucket answered {} instead of a redirect",
            response.status()
        );
        latencies.push(elapsed.as_secs_f64() * 1000.0);
    }
    drop(moto);
    Ok(vec![
        Row::compare(
            "replicas",
            "3 replicas on one S3 bucket (moto), 200 clients x 16 MiB: replica CPU per GiB, redirected vs proxied",
            "proxied (--redirect=false)",
            "CPU s/GiB",
            redirect_cpu,
            proxy_cpu,
            Some(Target::ratio_at_most(0.02)),
        )
        .note("summed over the three replicas; moto serves the bytes either way"),
        Row::alone(
            "replicas",
            "time to a blob GET's 307 redirect (p50 of 200 sequential, one connection)",
            "ms",
            Stats::of(&latencies),
            Target::value_at_most(2.0),
        ),
    ])
}
