//! Timing and memory of one run, and the statistics of several.
//!
//! Every timed command runs under `/usr/bin/time -f %M`, ferry and reference
//! alike, so both pay the same (tiny) wrapper cost and the peak RSS of the
//! command comes for free. A long-running server's peak is read from
//! `/proc/<pid>/status` (`VmHWM`) after resetting it through `clear_refs`,
//! which scopes the peak to one scenario.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

/// The result of one timed command.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub wall: Duration,
    /// Peak resident set of the command, in KiB.
    pub max_rss_kib: u64,
}

/// Runs `command` to completion, timed, with its output appended to `log`.
/// Fails (naming the command and showing the log's tail) on a non-zero exit.
pub fn timed(command: &Command, log: &Path) -> anyhow::Result<Run> {
    let rss_file = log.with_extension("rss");
    let mut wrapped = Command::new("/usr/bin/time");
    wrapped
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss_file)
        .arg(command.get_program())
        .args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(v) => wrapped.env(key, v),
            None => wrapped.env_remove(key),
        };
    }
    if let Some(dir) = command.get_current_dir() {
        wrapped.current_dir(dir);
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open log {}", log.display()))?;
    let err = out.try_clone()?;
    wrapped.stdin(Stdio::null()).stdout(out).stderr(err);
    let start = Instant::now();
    let status = wrapped
        .status()
        .with_context(|| format!("start {command:?}"))?;
    let wall = start.elapsed();
    if !status.success() {
        bail!(
            "{command:?} failed ({status}); last log lines:\n{}",
            tail(log, 15)
        );
    }
    let max_rss_kib = std::fs::read_to_string(&rss_file)
        .ok()
        .and_then(|t| t.lines().last().and_then(|l| l.trim().parse().ok()))
        .unwrap_or(0);
    Ok(Run { wall, max_rss_kib })
}

/// Runs `command` and returns its stdout; fails on a non-zero exit.
pub fn output(command: &mut Command) -> anyhow::Result<String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("start {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The last `lines` lines of a log file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Median, minimum and maximum of a set of samples.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: usize,
}

impl Stats {
    pub fn of(samples: &[f64]) -> Self {
        let mut sorted: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = match n {
            0 => f64::NAN,
            _ if n % 2 == 1 => sorted[n / 2],
            _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        };
        Self {
            median,
            min: sorted.first().copied().unwrap_or(f64::NAN),
            max: sorted.last().copied().unwrap_or(f64::NAN),
            runs: n,
        }
    }
}

/// Peak memory of a long-running process, scoped by [`ProcessPeak::reset`].
pub struct ProcessPeak {
    pid: u32,
}

impl ProcessPeak {
    pub fn new(pid: u32) -> Self {
        Self { pid }
    }

    fn proc_path(&self, file: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/{file}", self.pid))
    }

    /// Resets the peak to the current RSS (`clear_refs` value 5), so the
    /// next [`ProcessPeak::peak_kib`] covers only what happens after now.
    pub fn reset(&self) -> anyhow::Result<()> {
        std::fs::write(self.proc_path("clear_refs"), "5")
            .with_context(|| format!("reset peak RSS of pid {}", self.pid))
    }

    /// `VmHWM`: the peak resident set since start or the last reset, in KiB.
    pub fn peak_kib(&self) -> anyhow::Result<u64> {
        self.status_field("VmHWM:")
    }

    /// `VmRSS`: the current resident set, in KiB.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        self.status_field("VmRSS:")
    }

    fn status_field(&self, field: &str) -> anyhow::Result<u64> {
        let path = self.proc_path("status");
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        text.lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {field} in {}", path.display()))
    }

    /// CPU time the process's live threads have used so far, to the
    /// nanosecond (`/proc/<pid>/task/*/schedstat`): the clock ticks of
    /// [`ProcessPeak::cpu_time`] are 10 ms, as much as a whole run of a
    /// small scenario. Threads that ended are not counted, so this is for
    /// a server whose threads live through the measurement (tokio's keep
    /// theirs for seconds).
    pub fn thread_cpu_time(&self) -> anyhow::Result<Duration> {
        let tasks = self.proc_path("task");
        let mut total = 0u64;
        for task in
            std::fs::read_dir(&tasks).with_context(|| format!("read {}", tasks.display()))?
        {
            let Ok(text) = std::fs::read_to_string(task?.path().join("schedstat")) else {
                continue; // the thread ended meanwhile
            };
            total += text
                .split_whitespace()
                .next()
                .and_then(|ns| ns.parse::<u64>().ok())
                .context("malformed schedstat")?;
        }
        Ok(Duration::from_nanos(total))
    }

    /// CPU time (user + system) the process has used so far.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        let path = self.proc_path("stat");
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        // Fields after the parenthesised command name; utime and stime are
        // the 14th and 15th fields overall, in clock ticks (100 per second
        // on Linux, which `getconf CLK_TCK` confirms everywhere we run).
        let rest = text
            .rsplit_once(')')
            .map(|(_, r)| r)
            .context("malformed /proc stat")?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| -> anyhow::Result<u64> {
            fields
                .get(i)
                .and_then(|f| f.parse().ok())
                .context("malformed /proc stat")
        };
        let total = ticks(11)? + ticks(12)?;
        Ok(Duration::from_millis(total * 10))
    }
}

pub const MIB: f64 = 1024.0 * 1024.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_odd_and_even_sample_counts() {
        let odd = Stats::of(&[3.0, 1.0, 2.0]);
        assert_eq!((odd.median, odd.min, odd.max, odd.runs), (2.0, 1.0, 3.0, 3));
        let even = Stats::of(&[4.0, 1.0, 2.0, 3.0]);
        assert_eq!(even.median, 2.5);
    }

    #[test]
    fn own_process_peak_and_cpu_time_are_readable() {
        let me = ProcessPeak::new(std::process::id());
        assert!(me.peak_kib().expect("VmHWM") >= me.rss_kib().expect("VmRSS") / 2);
        me.cpu_time().expect("cpu time");
        assert!(me.thread_cpu_time().expect("thread cpu time") > Duration::ZERO);
    }

    #[test]
    fn timed_reports_failure_with_the_log_tail() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("x.log");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo boom >&2; exit 3"]);
        let error = timed(&cmd, &log).expect_err("non-zero exit fails");
        assert!(format!("{error:#}").contains("boom"));
        let ok = timed(&Command::new("true"), &log).expect("true succeeds");
        assert!(ok.max_rss_kib > 0);
    }
}
