//! ferry's benchmark harness: every figure is a ratio of ferry to
//! what teams use today (nginx + curl/aria2c, openssl), measured side by side
//! in the same run on the same machine.
//!
//! [`run`] installs nothing itself beyond calling `tests/install-deps.sh`,
//! starts one release `ferry-server` and one nginx on loopback, generates the
//! data under `target/bench-data`, runs each scenario (`scenarios/`) with
//! ferry and reference runs interleaved, and hands the rows to `report`.

pub mod config;
pub mod data;
pub mod measure;
pub mod report;
pub mod scenarios;
pub mod servers;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::Context;

use crate::config::Config;
use crate::measure::Stats;
use crate::report::{Report, Row};
use crate::servers::{Ferry, Nginx};

/// What every scenario gets: the configuration, the two servers and places
/// for data, outputs and logs.
pub struct Bench {
    pub config: Config,
    pub ferry: Ferry,
    pub nginx: Nginx,
    /// Generated inputs.
    pub inputs: PathBuf,
    /// Scratch space for downloads; emptied between runs.
    pub scratch: PathBuf,
    pub logs: PathBuf,
    started: Instant,
}

impl Bench {
    /// Prints a progress line (long runs must show they are alive).
    pub fn progress(&self, message: &str) {
        eprintln!("[{:>5.0}s] {message}", self.started.elapsed().as_secs_f64());
    }

    /// A log file for one side of one scenario.
    pub fn log(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }

    /// An empty scratch directory `name` (removed and recreated).
    pub fn fresh_dir(&self, name: &str) -> anyhow::Result<PathBuf> {
        let dir = self.scratch.join(name);
        remove(&dir)?;
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(dir)
    }

    /// Runs ferry and the reference `runs` times each, interleaved, the order
    /// flipping every round so neither side always runs on a cooler machine.
    /// Each closure does one run (its cleanup untimed inside) and returns its
    /// sample; dirty pages are flushed before every run.
    pub fn side_by_side(
        &self,
        label: &str,
        mut ferry: impl FnMut() -> anyhow::Result<f64>,
        mut reference: impl FnMut() -> anyhow::Result<f64>,
    ) -> anyhow::Result<(Stats, Stats)> {
        let runs = self.config.runs;
        let (mut f, mut r) = (Vec::new(), Vec::new());
        for round in 0..runs {
            let ferry_first = round % 2 == 0;
            for side in 0..2 {
                if (side == 0) == ferry_first {
                    flush_page_cache_writes();
                    f.push(ferry().with_context(|| format!("{label}: ferry run"))?);
                } else {
                    flush_page_cache_writes();
                    r.push(reference().with_context(|| format!("{label}: reference run"))?);
                }
            }
            self.progress(&format!(
                "{label}: round {}/{runs}: ferry {:.3}, reference {:.3}",
                round + 1,
                f.last().copied().unwrap_or(f64::NAN),
                r.last().copied().unwrap_or(f64::NAN)
            ));
        }
        Ok((Stats::of(&f), Stats::of(&r)))
    }
}

/// Writes dirty pages out before a timed run, so one run's writeback does
/// not land in the next run's time.
pub fn flush_page_cache_writes() {
    let _ = Command::new("sync").status();
}

/// Removes a file or directory tree if it exists.
pub fn remove(path: &Path) -> anyhow::Result<()> {
    let result = match std::fs::symlink_metadata(path) {
        Err(_) => return Ok(()),
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
    };
    result.with_context(|| format!("remove {}", path.display()))
}

/// Runs the whole benchmark and writes the results; returns the report.
pub fn run(config: Config) -> anyhow::Result<Report> {
    let started = Instant::now();
    if !config.skip_install {
        let script = ferry_tests::workspace_root().join("tests/install-deps.sh");
        eprintln!("installing references with {}", script.display());
        let status = Command::new("bash")
            .arg(&script)
            .status()
            .with_context(|| format!("run {}", script.display()))?;
        anyhow::ensure!(status.success(), "{} failed ({status})", script.display());
    }
    for tool in ["curl", "aria2c", "wrk", "openssl"] {
        ferry_tests::which(tool).with_context(|| {
            format!("{tool} is not installed (tests/install-deps.sh installs it)")
        })?;
    }
    anyhow::ensure!(
        Path::new("/usr/bin/time").is_file(),
        "/usr/bin/time is needed to measure peak RSS (apt-get install time)"
    );
    let data_dir = config.data_dir.clone();
    let logs = data_dir.join("logs");
    let scratch = data_dir.join("scratch");
    // Server state from an earlier run would turn "new" uploads into re-uploads.
    for dir in [
        &logs,
        &scratch,
        &data_dir.join("ferry-data"),
        &data_dir.join("nginx"),
    ] {
        remove(dir)?;
    }
    std::fs::create_dir_all(&logs)?;
    std::fs::create_dir_all(&scratch)?;
    let ferry = Ferry::start(&data_dir.join("ferry-data"), &logs.join("ferry-server.log"))?;
    let nginx = Nginx::start(&data_dir.join("nginx/root"), &data_dir.join("nginx"))?;
    let bench = Bench {
        inputs: data_dir.join("inputs"),
        config: config.clone(),
        ferry,
        nginx,
        scratch,
        logs,
        started,
    };
    std::fs::create_dir_all(&bench.inputs)?;
    bench.progress(&format!(
        "ferry-server at {}, nginx at {}; {} runs per side",
        bench.ferry.url, bench.nginx.url, config.runs
    ));

    let mut rows: Vec<Row> = Vec::new();
    let mut skipped: Vec<(String, String)> = Vec::new();
    for scenario in scenarios::all() {
        if !config.wants(scenario.id) {
            continue;
        }
        bench.progress(&format!("scenario {}: {}", scenario.id, scenario.title));
        match (scenario.run)(&bench) {
            Ok(mut new_rows) => {
                for row in &new_rows {
                    bench.progress(&format!(
                        "  {}: ferry {:.3} {}, ratio {}",
                        row.scenario,
                        row.ferry.median,
                        row.unit,
                        row.ratio.map_or("-".into(), |r| format!("{r:.2}x"))
                    ));
                }
                rows.append(&mut new_rows);
            }
            Err(error) => {
                let why = format!("{error:#}");
                bench.progress(&format!("scenario {} not run: {why}", scenario.id));
                skipped.push((
                    scenario.id.to_owned(),
                    why.lines().next().unwrap_or("").to_owned(),
                ));
            }
        }
    }
    drop(bench);

    let report = Report {
        mode: if config.quick { "quick" } else { "full" }.into(),
        runs: config.runs,
        started_at: measure::output(Command::new("date").arg("-u").arg("+%Y-%m-%dT%H:%M:%SZ"))
            .map(|d| d.trim().to_owned())
            .unwrap_or_default(),
        machine: machine(),
        rows,
        skipped,
    };
    let stem = if config.quick {
        "latest-quick"
    } else {
        "latest-full"
    };
    report::write(&report, &config.out_dir, stem)?;
    println!("{}", report::table(&report));
    eprintln!(
        "wrote {}/{stem}.{{json,svg,md}} in {:.0} s",
        config.out_dir.display(),
        started.elapsed().as_secs_f64()
    );
    if !config.keep_data {
        remove(&data_dir)?;
    }
    Ok(report)
}

/// CPU model and count, for the JSON (figures from different machines are
/// not comparable).
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    format!("{model}, {cores} cores")
}
