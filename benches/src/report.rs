//! The result table: one row per scenario, printed, written as JSON and
//! drawn as an SVG bar chart of each ratio against its target.
//!
//! The SVG is written by hand (a few rectangles and labels) rather than with
//! a plotting crate: it needs no fonts and costs no compile time.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use crate::measure::Stats;

/// Which way a target points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Bound {
    /// The value must be at most the target.
    #[serde(rename = "<=")]
    AtMost,
    /// The value must be at least the target.
    #[serde(rename = ">=")]
    AtLeast,
}

/// A goal on the ratio or (for memory rows) on ferry's value.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Target {
    pub bound: Bound,
    pub value: f64,
    /// Whether the target applies to the ratio (else to ferry's median).
    pub on_ratio: bool,
}

impl Target {
    pub fn ratio_at_most(value: f64) -> Self {
        Self {
            bound: Bound::AtMost,
            value,
            on_ratio: true,
        }
    }

    pub fn ratio_at_least(value: f64) -> Self {
        Self {
            bound: Bound::AtLeast,
            value,
            on_ratio: true,
        }
    }

    pub fn value_at_most(value: f64) -> Self {
        Self {
            bound: Bound::AtMost,
            value,
            on_ratio: false,
        }
    }

    fn met(&self, x: f64) -> bool {
        match self.bound {
            Bound::AtMost => x <= self.value,
            Bound::AtLeast => x >= self.value,
        }
    }

    fn describe(&self) -> String {
        let op = match self.bound {
            Bound::AtMost => "<=",
            Bound::AtLeast => ">=",
        };
        if self.on_ratio {
            format!("{op} {}x", self.value)
        } else {
            format!("{op} {}", self.value)
        }
    }
}

/// One scenario's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub id: String,
    pub scenario: String,
    pub reference: String,
    /// Unit of the medians: "s", "MiB/s", "req/s", "MiB", "ms/file".
    pub unit: String,
    pub ferry: Stats,
    pub reference_stats: Option<Stats>,
    /// ferry median / reference median.
    pub ratio: Option<f64>,
    pub target: Option<Target>,
    pub met: Option<bool>,
    /// Peak RSS of the ferry process measured in this scenario, MiB.
    pub ferry_peak_rss_mib: Option<f64>,
    /// Which ferry process the RSS belongs to, and anything else to know.
    pub note: String,
}

impl Row {
    /// A row comparing ferry to a reference.
    pub fn compare(
        id: &str,
        scenario: &str,
        reference: &str,
        unit: &str,
        ferry: Stats,
        reference_stats: Stats,
        target: Option<Target>,
    ) -> Self {
        let ratio = ferry.median / reference_stats.median;
        let value = |t: &Target| if t.on_ratio { ratio } else { ferry.median };
        // A zero or missing reference gives no ratio, and so no verdict.
        let judged = ratio.is_finite();
        Self {
            id: id.into(),
            scenario: scenario.into(),
            reference: reference.into(),
            unit: unit.into(),
            ferry,
            reference_stats: Some(reference_stats),
            ratio: judged.then_some(ratio),
            met: target.as_ref().filter(|_| judged).map(|t| t.met(value(t))),
            target,
            ferry_peak_rss_mib: None,
            note: String::new(),
        }
    }

    /// A row with no reference (a memory ceiling).
    pub fn alone(id: &str, scenario: &str, unit: &str, ferry: Stats, target: Target) -> Self {
        Self {
            id: id.into(),
            scenario: scenario.into(),
            reference: "-".into(),
            unit: unit.into(),
            ferry,
            reference_stats: None,
            ratio: None,
            met: Some(target.met(ferry.median)),
            target: Some(target),
            ferry_peak_rss_mib: None,
            note: String::new(),
        }
    }

    pub fn rss(mut self, mib: f64) -> Self {
        self.ferry_peak_rss_mib = Some(mib);
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }
}

/// Everything a run produced, as written to JSON.
#[derive(Debug, Serialize)]
pub struct Report {
    pub mode: String,
    pub runs: usize,
    pub started_at: String,
    pub machine: String,
    pub rows: Vec<Row>,
    /// Scenarios that could not run, and why.
    pub skipped: Vec<(String, String)>,
}

fn figure(stats: &Stats, unit: &str) -> String {
    let digits = if stats.median >= 100.0 {
        0
    } else if stats.median >= 10.0 {
        1
    } else {
        2
    };
    format!(
        "{:.d$} {unit} ({:.d$}-{:.d$})",
        stats.median,
        stats.min,
        stats.max,
        d = digits
    )
}

/// The table as Markdown (readable in a terminal and pasteable in the README).
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| scenario | reference | ferry median (min-max) | reference median (min-max) | ratio | target | met | ferry peak RSS |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for row in &report.rows {
        let reference = row
            .reference_stats
            .as_ref()
            .map_or("-".into(), |s| figure(s, &row.unit));
        let ratio = row.ratio.map_or("-".into(), |r| format!("{r:.2}x"));
        let target = row.target.as_ref().map_or("-".into(), Target::describe);
        let met = match row.met {
            Some(true) => "yes",
            Some(false) => "**NO**",
            None => "-",
        };
        let rss = row
            .ferry_peak_rss_mib
            .map_or("-".into(), |m| format!("{m:.0} MiB"));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            row.scenario,
            row.reference,
            figure(&row.ferry, &row.unit),
            reference,
            ratio,
            target,
            met,
            rss
        );
    }
    for (id, why) in &report.skipped {
        let _ = writeln!(out, "| {id} | not run: {why} | | | | | | |");
    }
    out
}

/// Writes `<dir>/<stem>.json` and `<dir>/<stem>.svg`.
pub fn write(report: &Report, dir: &Path, stem: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let json = serde_json::to_string_pretty(report)?;
    std::fs::write(dir.join(format!("{stem}.json")), json + "\n")?;
    std::fs::write(dir.join(format!("{stem}.svg")), svg(report))?;
    std::fs::write(dir.join(format!("{stem}.md")), table(report))?;
    Ok(())
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A horizontal bar per row: ferry's ratio (or value / target for memory
/// rows) on a log scale around 1, with the target drawn as a tick; green
/// when the target is met, red when it is not.
pub fn svg(report: &Report) -> String {
    let rows: Vec<&Row> = report.rows.iter().filter(|r| r.target.is_some()).collect();
    let (label_w, plot_w, row_h, top) = (430.0, 420.0, 26.0, 50.0);
    let width = label_w + plot_w + 120.0;
    let height = top + row_h * rows.len() as f64 + 50.0;
    // Log scale from 1/32 to 32.
    let (lo, hi) = (-5.0f64, 5.0f64);
    let x = |v: f64| label_w + (v.max(1e-9).log2().clamp(lo, hi) - lo) / (hi - lo) * plot_w;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r#"<rect width="100%" height="100%" fill="white"/><text x="10" y="20" font-size="14" font-weight="bold">ferry : reference ({} mode, median of {} runs; log scale; tick = target)</text>"#,
        escape(&report.mode),
        report.runs
    );
    for v in [1.0 / 16.0, 0.25, 0.5, 1.0, 2.0, 4.0, 16.0] {
        let _ = writeln!(
            out,
            r##"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{2}" stroke="#ddd"/><text x="{0:.1}" y="{3}" text-anchor="middle" fill="#666">{4}</text>"##,
            x(v),
            top - 8.0,
            height - 40.0,
            height - 25.0,
            if v < 1.0 {
                format!("1/{}", 1.0 / v)
            } else {
                format!("{v}")
            }
        );
    }
    for (i, row) in rows.iter().enumerate() {
        let Some(target) = row.target else { continue };
        let y = top + row_h * i as f64;
        let value = if target.on_ratio {
            row.ratio.unwrap_or(f64::NAN)
        } else {
            row.ferry.median / target.value
        };
        let tick = if target.on_ratio { target.value } else { 1.0 };
        let colour = if row.met == Some(true) {
            "#3a3"
        } else {
            "#d33"
        };
        let (a, b) = (x(1.0), x(value));
        let _ = writeln!(
            out,
            r##"<text x="{lx}" y="{ty:.1}" text-anchor="end">{label}</text><rect x="{rx:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="{colour}"/><line x1="{tx:.1}" y1="{y:.1}" x2="{tx:.1}" y2="{y2:.1}" stroke="black" stroke-width="2"/><text x="{vx:.1}" y="{ty:.1}">{shown}</text>"##,
            lx = label_w - 8.0,
            ty = y + row_h * 0.6,
            label = escape(&row.scenario),
            rx = a.min(b),
            w = (a - b).abs().max(1.0),
            h = row_h - 8.0,
            tx = x(tick),
            y2 = y + row_h - 8.0,
            vx = label_w + plot_w + 8.0,
            shown = if target.on_ratio {
                format!("{value:.2}x")
            } else {
                format!("{:.0} {}", row.ferry.median, escape(&row.unit))
            },
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(x: f64) -> Stats {
        Stats::of(&[x])
    }

    #[test]
    fn ratio_targets_are_judged_in_their_direction() {
        let slower = Row::compare(
            "a",
            "a",
            "r",
            "s",
            stats(2.0),
            stats(1.0),
            Some(Target::ratio_at_most(1.1)),
        );
        assert_eq!(slower.met, Some(false));
        let faster = Row::compare(
            "b",
            "b",
            "r",
            "req/s",
            stats(2.0),
            stats(1.0),
            Some(Target::ratio_at_least(0.5)),
        );
        assert_eq!(faster.met, Some(true));
        let memory = Row::alone("c", "c", "MiB", stats(70.0), Target::value_at_most(64.0));
        assert_eq!(memory.met, Some(false));
    }

    #[test]
    fn table_and_svg_show_every_row() {
        let report = Report {
            mode: "quick".into(),
            runs: 1,
            started_at: String::new(),
            machine: String::new(),
            rows: vec![
                Row::compare(
                    "a",
                    "fetch <1 GiB>",
                    "curl",
                    "s",
                    stats(1.0),
                    stats(1.0),
                    Some(Target::ratio_at_most(1.1)),
                ),
                Row::alone(
                    "c",
                    "server RSS",
                    "MiB",
                    stats(30.0),
                    Target::value_at_most(64.0),
                ),
            ],
            skipped: vec![("stage".into(), "no client".into())],
        };
        let text = table(&report);
        assert!(text.contains("fetch <1 GiB>") && text.contains("not run: no client"));
        let svg = svg(&report);
        assert!(svg.contains("fetch &lt;1 GiB&gt;") && svg.ends_with("</svg>\n"));
    }
}
