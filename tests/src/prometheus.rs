//! Prometheus (Debian's `prometheus` package) on a free loopback port, with
//! a temporary TSDB, and `promtool` from the same package.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::{Child, free_port, require_tool, wait_until};

/// `promtool`, or `None` outside CI when it is not installed.
pub fn promtool() -> Option<PathBuf> {
    require_tool(
        "promtool (apt-get install prometheus)",
        "FERRY_TEST_PROMTOOL",
        &["promtool", "/usr/bin/promtool"],
    )
}

/// Runs `promtool` with `args`; returns whether it succeeded and what it
/// printed (stdout and stderr).
pub fn run_promtool(promtool: &Path, args: &[&str]) -> (bool, String) {
    let output = Command::new(promtool)
        .args(args)
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// A running Prometheus; killed when dropped.
pub struct Prometheus {
    pub child: Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    http: reqwest::blocking::Client,
    /// Holds the configuration, rule files and TSDB.
    pub dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus with `config` (a prometheus.yml) and the rule files
    /// `rules` (name, text) written beside it, so `config` can list them by
    /// name under `rule_files:`. `None` outside CI when it is not installed.
    pub fn start(config: &str, rules: &[(&str, &str)]) -> Option<Self> {
        let exe = require_tool(
            "prometheus (apt-get install prometheus)",
            "FERRY_TEST_PROMETHEUS",
            &["prometheus", "/usr/bin/prometheus"],
        )?;
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, text) in rules {
            std::fs::write(dir.path().join(name), text).expect("write rule file");
        }
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let port = free_port();
        let mut command = Command::new(exe);
        command
            .current_dir(dir.path())
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn");
        let child = Child::spawn("prometheus", command, dir.path().join("prometheus.log"));
        let prometheus = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("http client"),
            dir,
        };
        let ready = wait_until(Duration::from_secs(30), || {
            prometheus
                .http
                .get(format!("{}/-/ready", prometheus.url))
                .send()
                .is_ok_and(|r| r.status().is_success())
        });
        assert!(
            ready,
            "prometheus was not ready within 30 s; log:\n{}",
            prometheus.child.log_text()
        );
        Some(prometheus)
    }

    fn api(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let response = self
            .http
            .get(format!("{}/api/v1/{path}", self.url))
            .query(query)
            .send()
            .unwrap_or_else(|e| panic!("GET /api/v1/{path}: {e}"));
        let status = response.status();
        let body: Value = response
            .json()
            .unwrap_or_else(|e| panic!("/api/v1/{path} answered {status} without JSON: {e}"));
        assert_eq!(
            body["status"], "success",
            "/api/v1/{path} {query:?} answered {status}: {body}"
        );
        body["data"].clone()
    }

    /// Evaluates a PromQL expression now; panics on a PromQL error. Returns
    /// the result's samples (a scalar becomes one sample without labels).
    pub fn query(&self, expr: &str) -> Vec<Value> {
        let data = self.api("query", &[("query", expr)]);
        match data["resultType"].as_str() {
            Some("vector" | "matrix") => data["result"].as_array().cloned().unwrap_or_default(),
            Some("scalar" | "string") => {
                vec![serde_json::json!({"metric": {}, "value": data["result"]})]
            }
            other => panic!("{expr}: unexpected result type {other:?}"),
        }
    }

    /// The value of each sample of `query(expr)`.
    pub fn values(&self, expr: &str) -> Vec<f64> {
        self.query(expr)
            .iter()
            .filter_map(|s| s["value"][1].as_str()?.parse().ok())
            .collect()
    }

    /// `/api/v1/label/<label>/values?match[]=<selector>`.
    pub fn label_values(&self, label: &str, selector: &str) -> Vec<String> {
        let data = self.api(&format!("label/{label}/values"), &[("match[]", selector)]);
        serde_json::from_value(data).expect("label values")
    }

    /// The scrape targets' health by job (`up`, `down`, `unknown`).
    pub fn targets(&self) -> Vec<(String, String)> {
        let data = self.api("targets", &[]);
        data["activeTargets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                (
                    t["labels"]["job"].as_str().unwrap_or_default().to_owned(),
                    t["health"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// Active alerts: (alert name, job label, state `pending`/`firing`).
    pub fn alerts(&self) -> Vec<(String, String, String)> {
        let data = self.api("alerts", &[]);
        data["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                let label = |name: &str| a["labels"][name].as_str().unwrap_or_default().to_owned();
                (
                    label("alertname"),
                    label("job"),
                    a["state"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// The log so far, for assertion messages.
    pub fn log(&self) -> String {
        self.child.log_text()
    }
}
