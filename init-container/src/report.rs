//! What a run did: one line per failed item, then a summary line with
//! counts, bytes, time and cache hits; as text or as JSON lines on stderr.

use std::time::Duration;

use serde_json::json;

use crate::config::LogFormat;
use crate::fetch::{Done, Outcome};
use crate::resolve::Failure;

/// One item in place.
#[derive(Debug)]
pub struct Success {
    pub uri: String,
    pub dest: String,
    pub done: Done,
}

/// The result of a run.
#[derive(Debug, Default)]
pub struct Report {
    pub succeeded: Vec<Success>,
    pub failures: Vec<Failure>,
    pub elapsed: Duration,
}

/// The summary's numbers.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub ok: usize,
    pub failed: usize,
    pub fetched: usize,
    pub cache_hits: usize,
    pub already_present: usize,
    pub checked: usize,
    /// Size of every file in place.
    pub bytes: u64,
    /// Bytes received over the network.
    pub received: u64,
}

impl Report {
    /// Exit code 0 only when every item is in place.
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }

    pub fn counts(&self) -> Counts {
        let mut counts = Counts {
            ok: self.succeeded.len(),
            failed: self.failures.len(),
            ..Counts::default()
        };
        for success in &self.succeeded {
            match success.done.outcome {
                Outcome::Fetched => counts.fetched += 1,
                Outcome::FromCache => counts.cache_hits += 1,
                Outcome::AlreadyPresent => counts.already_present += 1,
                Outcome::Checked => counts.checked += 1,
            }
            counts.bytes += success.done.bytes;
            counts.received += success.done.received;
        }
        counts
    }

    /// Writes failures (always) and the summary (unless quiet) to stderr.
    pub fn print(&self, format: LogFormat, quiet: bool) {
        for line in self.lines(format, quiet) {
            eprintln!("{line}");
        }
    }

    /// The lines [`Report::print`] writes.
    pub fn lines(&self, format: LogFormat, quiet: bool) -> Vec<String> {
        let mut lines = Vec::new();
        for failure in &self.failures {
            let error = ferry_io::render_chain(&failure.error);
            lines.push(match format {
                LogFormat::Text => match &failure.dest {
                    Some(dest) => format!("ferry-init: FAILED {} -> {dest}: {error}", failure.uri),
                    None => format!("ferry-init: FAILED {}: {error}", failure.uri),
                },
                LogFormat::Json => json!({
                    "level": "ERROR",
                    "event": "item_failed",
                    "uri": failure.uri,
                    "dest": failure.dest,
                    "error": error,
                })
                .to_string(),
            });
        }
        if quiet && self.ok() {
            return lines;
        }
        let counts = self.counts();
        let seconds = self.elapsed.as_secs_f64();
        lines.push(match format {
            LogFormat::Text => format!(
                "ferry-init: {} of {} items in place ({} fetched, {} from cache, {} already present, {} checked), {} failed; {} in place, {} received in {seconds:.2}s",
                counts.ok,
                counts.ok + counts.failed,
                counts.fetched,
                counts.cache_hits,
                counts.already_present,
                counts.checked,
                counts.failed,
                human_bytes(counts.bytes),
                human_bytes(counts.received),
            ),
            LogFormat::Json => {
                let mut value = serde_json::to_value(counts).unwrap_or_default();
                value["level"] = json!(if self.ok() { "INFO" } else { "ERROR" });
                value["event"] = json!("summary");
                value["seconds"] = json!(seconds);
                value.to_string()
            }
        });
        lines
    }
}

/// Kubernetes keeps at most this many bytes of a termination message.
pub const TERMINATION_MESSAGE_LIMIT: usize = 4096;

impl Report {
    /// What `kubectl describe pod` should show for a failed run: the
    /// summary, then one line per failed item, within
    /// [`TERMINATION_MESSAGE_LIMIT`] bytes (failures that do not fit are
    /// counted instead).
    pub fn termination_message(&self) -> String {
        let mut lines = self.lines(LogFormat::Text, false);
        let summary = lines.pop().unwrap_or_default();
        fit_lines(&summary, &lines, TERMINATION_MESSAGE_LIMIT)
    }
}

/// `first`, then as many of `lines` as fit in `limit` bytes with room left
/// for a closing "... and N more" line when some do not.
pub fn fit_lines(first: &str, lines: &[String], limit: usize) -> String {
    let mut message = first.to_owned();
    for (i, line) in lines.iter().enumerate() {
        let left = lines.len() - i - 1;
        let more = if left == 0 {
            String::new()
        } else {
            format!("\nferry-init: ... and {left} more failed items (see the container log)")
        };
        if message.len() + 1 + line.len() + more.len() > limit {
            message.push_str(&format!(
                "\nferry-init: ... and {} more failed items (see the container log)",
                lines.len() - i
            ));
            break;
        }
        message.push('\n');
        message.push_str(line);
    }
    if message.len() > limit {
        let mut cut = limit;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    message
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::FetchError;

    fn report() -> Report {
        Report {
            succeeded: vec![Success {
                uri: "https://h/a.jar".into(),
                dest: "/d/a.jar".into(),
                done: Done {
                    outcome: Outcome::FromCache,
                    bytes: 2048,
                    received: 0,
                },
            }],
            failures: vec![Failure {
                uri: "s3://b/x.jar".into(),
                dest: Some("/d/x.jar".into()),
                error: FetchError::NotFound("s3://b/x.jar".into()),
            }],
            elapsed: Duration::from_millis(1500),
        }
    }

    #[test]
    fn text_report_names_each_failure_then_sums_up() {
        let lines = report().lines(LogFormat::Text, false);
        assert_eq!(
            lines[0],
            "ferry-init: FAILED s3://b/x.jar -> /d/x.jar: not found: s3://b/x.jar"
        );
        assert!(lines[1].contains("1 of 2 items in place"), "{}", lines[1]);
        assert!(lines[1].contains("1 from cache") && lines[1].contains("2.0 KiB in place"));
    }

    #[test]
    fn termination_message_sums_up_then_names_failures_within_the_limit() {
        let message = report().termination_message();
        let lines: Vec<&str> = message.lines().collect();
        assert!(lines[0].contains("1 of 2 items in place"), "{message}");
        assert_eq!(
            lines[1],
            "ferry-init: FAILED s3://b/x.jar -> /d/x.jar: not found: s3://b/x.jar"
        );

        let failures: Vec<String> = (0..500)
            .map(|i| format!("ferry-init: FAILED https://h/{i}.jar: connection refused"))
            .collect();
        let long = fit_lines("summary", &failures, TERMINATION_MESSAGE_LIMIT);
        assert!(long.len() <= TERMINATION_MESSAGE_LIMIT, "{}", long.len());
        assert!(long.starts_with("summary\nferry-init: FAILED https://h/0.jar"));
        let shown = long.lines().filter(|l| l.contains("FAILED")).count();
        assert!(
            long.ends_with(&format!(
                "... and {} more failed items (see the container log)",
                500 - shown
            )),
            "{long}"
        );
    }

    #[test]
    fn json_report_is_one_object_per_line() {
        let lines = report().lines(LogFormat::Json, true);
        let failure: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(failure["event"], "item_failed");
        let summary: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(summary["cache_hits"], 1);
        assert_eq!(summary["failed"], 1);
    }
}
