//! Command line of `ferry-bench`, parsed then validated into a [`Config`].
//!
//! The two modes differ only in sizes and repetitions: `--quick` keeps every
//! scenario (so a quick run still says whether each target holds) but with
//! fewer runs and shorter load windows, to finish in under 5 minutes.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Benchmarks ferry against what teams use today (nginx + curl/aria2c,
/// openssl), side by side in one run, and writes a table (stdout, JSON, SVG).
#[derive(Debug, Parser)]
#[command(name = "ferry-bench", version)]
pub struct Cli {
    /// Fewer runs and shorter load windows (under 5 minutes).
    #[arg(long, env = "FERRY_BENCH_QUICK")]
    pub quick: bool,

    /// Runs per scenario and side (default: 3 with --quick, 5 otherwise).
    #[arg(long, env = "FERRY_BENCH_RUNS")]
    pub runs: Option<usize>,

    /// Only these scenarios (comma-separated ids), e.g. `server-io,wrk`. Ids: server-io, stage, restage, fetch-1g,
    /// fetch-jars, fanout, wrk, cache, stage-jars, stage-many.
    #[arg(long, env = "FERRY_BENCH_ONLY", value_delimiter = ',')]
    pub only: Vec<String>,

    /// Where generated data goes (same disk as the servers' data).
    #[arg(long, env = "FERRY_BENCH_DATA", default_value = "target/bench-data")]
    pub data_dir: PathBuf,

    /// Where the JSON and SVG results are written.
    #[arg(long, env = "FERRY_BENCH_OUT", default_value = "benches/results")]
    pub out_dir: PathBuf,

    /// Keep generated data after the run (it is reused by the next run).
    #[arg(long, env = "FERRY_BENCH_KEEP_DATA")]
    pub keep_data: bool,

    /// Do not run tests/install-deps.sh (the tools must already be installed).
    #[arg(long, env = "FERRY_BENCH_SKIP_INSTALL")]
    pub skip_install: bool,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub quick: bool,
    pub runs: usize,
    pub only: Vec<String>,
    pub data_dir: PathBuf,
    pub out_dir: PathBuf,
    pub keep_data: bool,
    pub skip_install: bool,
    /// Size of the "large file" of the 1 GiB scenarios.
    pub large_size: u64,
    /// Length of each wrk window.
    pub wrk_duration: Duration,
    /// Small files staged in the "many files" scenario (and its baseline).
    pub many_files: usize,
    pub few_files: usize,
}

const GIB: u64 = 1 << 30;

impl Config {
    pub fn from_cli(cli: Cli) -> anyhow::Result<Self> {
        let root = ferry_tests::workspace_root();
        let absolute = |p: PathBuf| if p.is_absolute() { p } else { root.join(p) };
        let runs = cli.runs.unwrap_or(if cli.quick { 3 } else { 5 });
        anyhow::ensure!(
            (1..=50).contains(&runs),
            "--runs must be 1..=50, got {runs}"
        );
        Ok(Self {
            quick: cli.quick,
            runs,
            only: cli.only,
            data_dir: absolute(cli.data_dir),
            out_dir: absolute(cli.out_dir),
            keep_data: cli.keep_data,
            skip_install: cli.skip_install,
            // The targets are stated for 1 GiB; quick mode keeps the size and
            // trims repetitions instead, so its ratios mean the same thing.
            large_size: GIB,
            wrk_duration: Duration::from_secs(if cli.quick { 4 } else { 10 }),
            many_files: if cli.quick { 2_000 } else { 10_000 },
            few_files: 100,
        })
    }

    /// Whether scenario `id` was selected with `--only`.
    pub fn wants(&self, id: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|w| w == id)
    }
}
