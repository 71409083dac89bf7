//! deploy/monitoring/ (dashboard, rules) and the kustomize component, checked
//! against the server they watch and a real Prometheus.
//!
//! - Both rule files pass `promtool check rules`; `ferry-rules.test.yml`
//!   passes `promtool test rules` (the real `for:` durations); the
//!   PrometheusRule's groups are the plain file's, so they cannot drift.
//! - The component renders with `kubectl kustomize` over each overlay, and
//!   its ServiceMonitor selects the Service and its port.
//! - The dashboard imports anywhere (`${DS_PROMETHEUS}` input) and names only
//!   metrics a running server exports.
//! - Then Prometheus scrapes two ferry-servers (one on moto's S3, one on a
//!   small tmpfs) under a fixed load; every dashboard query and template
//!   variable must return data, every alert must stay quiet; then moto is
//!   killed and the tmpfs filled, and every alert must fire (from a copy of
//!   the rules whose `for:` is 2s instead of 5m).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ferry_core::Digest;
use ferry_tests::api::ApiClient;
use ferry_tests::disk::SmallDisk;
use ferry_tests::moto::Moto;
use ferry_tests::prometheus::{Prometheus, promtool, run_promtool};
use ferry_tests::{FerryServer, pseudo_random_bytes, require_tool, wait_until, workspace_root};
use serde_json::{Value, json};

const TOKEN: &str = "monitoring-upload-token-0123456789";
const ALERTS: [&str; 4] = [
    "FerryServerNotReady",
    "FerryGcNotSucceeding",
    "FerryHighErrorRate",
    "FerryStorageFull",
];
/// Fixed windows for Grafana's variables, long enough to span the test.
const RATE_INTERVAL: &str = "1m";
const RANGE: &str = "10m";

fn monitoring_dir() -> PathBuf {
    workspace_root().join("deploy/monitoring")
}

fn component_dir() -> PathBuf {
    workspace_root().join("deploy/kubernetes/components/monitoring")
}

fn read_yaml(path: &Path) -> serde_yaml::Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

fn plain_rules() -> serde_yaml::Value {
    read_yaml(&monitoring_dir().join("ferry-rules.yml"))
}

fn prometheus_rule() -> serde_yaml::Value {
    read_yaml(&component_dir().join("prometheusrule.yaml"))
}

/// Every rule of a rules file: (alert name, expression).
fn alert_rules(rules: &serde_yaml::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            out.push((
                rule["alert"].as_str().expect("alert name").to_owned(),
                rule["expr"].as_str().expect("expr").to_owned(),
            ));
        }
    }
    out
}

fn dashboard() -> Value {
    let path = monitoring_dir().join("ferry-dashboard.json");
    let text = std::fs::read_to_string(&path).expect("read the dashboard");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every panel's (title, expr) pairs.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().expect("panel title");
        for target in panel["targets"].as_array().expect("targets") {
            out.push((
                title.to_owned(),
                target["expr"].as_str().expect("expr").to_owned(),
            ));
        }
    }
    out
}

/// A dashboard query as Prometheus can run it: Grafana's variables replaced
/// with fixed windows, every job and every instance.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", RATE_INTERVAL)
        .replace("$__range", RANGE)
        .replace("$job", ".+")
        .replace("$instance", ".+")
}

/// The metric names an expression mentions (`ferry_*` and `process_*`).
fn metric_names(expr: &str) -> BTreeSet<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("ferry_") || w.starts_with("process_"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn rule_files_pass_promtool_check_and_their_unit_tests() {
    let Some(promtool) = promtool() else { return };
    let plain = monitoring_dir().join("ferry-rules.yml");
    let (ok, out) = run_promtool(&promtool, &["check", "rules", plain.to_str().unwrap()]);
    assert!(ok, "promtool check rules {}: {out}", plain.display());
    assert!(out.contains("SUCCESS: 4 rules found"), "{out}");

    // promtool reads plain rule files only: check the PrometheusRule's spec.
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("prometheusrule-spec.yml");
    std::fs::write(
        &spec,
        serde_yaml::to_string(&prometheus_rule()["spec"]).unwrap(),
    )
    .unwrap();
    let (ok, out) = run_promtool(&promtool, &["check", "rules", spec.to_str().unwrap()]);
    assert!(ok, "promtool check rules (PrometheusRule spec): {out}");

    let tests = monitoring_dir().join("ferry-rules.test.yml");
    let (ok, out) = run_promtool(&promtool, &["test", "rules", tests.to_str().unwrap()]);
    assert!(ok, "promtool test rules: {out}");
    assert!(out.contains("SUCCESS"), "{out}");
    // Every alert has a unit test.
    let test_text = std::fs::read_to_string(&tests).unwrap();
    for alert in ALERTS {
        assert!(
            test_text.contains(&format!("alertname: {alert}")),
            "{alert} has no promtool unit test"
        );
    }
}

#[test]
fn prometheus_rule_has_exactly_the_groups_of_the_plain_rules_file() {
    let plain = plain_rules();
    let rule = prometheus_rule();
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["kind"], "PrometheusRule");
    assert_eq!(
        rule["spec"]["groups"], plain["groups"],
        "deploy/kubernetes/components/monitoring/prometheusrule.yaml drifted from deploy/monitoring/ferry-rules.yml"
    );
    let names: Vec<String> = alert_rules(&plain).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ALERTS);
    for group in plain["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let name = rule["alert"].as_str().unwrap();
            assert!(
                matches!(
                    rule["labels"]["severity"].as_str(),
                    Some("critical" | "warning")
                ),
                "{name}: severity"
            );
            for annotation in ["summary", "description"] {
                assert!(
                    rule["annotations"][annotation]
                        .as_str()
                        .is_some_and(|t| !t.is_empty()),
                    "{name}: {annotation}"
                );
            }
        }
    }
}

#[test]
fn monitoring_component_renders_over_each_overlay_and_selects_the_metrics_port() {
    let Some(kubectl) = require_tool(
        "kubectl (with kustomize)",
        "FERRY_TEST_KUBECTL",
        &["kubectl", "/usr/bin/kubectl"],
    ) else {
        return;
    };
    for overlay in ["local-disk", "s3"] {
        // An overlay of the user's own. kustomize refuses absolute paths, so
        // the repository is reached from the temp dir by `..` up to `/`.
        let dir = tempfile::tempdir().unwrap();
        let up = dir
            .path()
            .components()
            .skip(1)
            .map(|_| "..")
            .collect::<Vec<_>>()
            .join("/");
        let kubernetes = format!(
            "{up}{}",
            workspace_root().join("deploy/kubernetes").display()
        );
        std::fs::write(
            dir.path().join("kustomization.yaml"),
            format!(
                "resources:\n  - {kubernetes}/overlays/{overlay}\ncomponents:\n  - {kubernetes}/components/monitoring\n"
            ),
        )
        .unwrap();
        let output = Command::new(&kubectl)
            .arg("kustomize")
            .arg(dir.path())
            .output()
            .expect("run kubectl kustomize");
        assert!(
            output.status.success(),
            "{overlay} + monitoring: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8(output.stdout).unwrap();
        let objects: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        let find = |kind: &str| {
            let found: Vec<_> = objects.iter().filter(|o| o["kind"] == kind).collect();
            assert_eq!(found.len(), 1, "{overlay}: one {kind}");
            found[0]
        };
        let service = find("Service");
        let monitor = find("ServiceMonitor");
        let rule = find("PrometheusRule");
        assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
        for object in [monitor, rule] {
            assert_eq!(
                object["metadata"]["namespace"], service["metadata"]["namespace"],
                "{overlay}: a ServiceMonitor selects Services of its own namespace"
            );
        }
        let wanted = monitor["spec"]["selector"]["matchLabels"]
            .as_mapping()
            .expect("matchLabels");
        assert!(!wanted.is_empty());
        for (key, value) in wanted {
            assert_eq!(
                &service["metadata"]["labels"][key], value,
                "{overlay}: the Service lacks the label {key:?} the ServiceMonitor selects"
            );
        }
        let ports: Vec<&str> = service["spec"]["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        let endpoints = monitor["spec"]["endpoints"].as_sequence().unwrap();
        assert!(!endpoints.is_empty());
        for endpoint in endpoints {
            let port = endpoint["port"].as_str().unwrap();
            assert!(ports.contains(&port), "{overlay}: no Service port {port}");
            assert_eq!(endpoint["path"], "/metrics");
        }
        assert_eq!(rule["spec"]["groups"], plain_rules()["groups"]);
    }
}

#[test]
fn dashboard_imports_anywhere_and_names_only_metrics_the_server_exports() {
    let dashboard = dashboard();
    let inputs = dashboard["__inputs"].as_array().expect("__inputs");
    assert!(
        inputs
            .iter()
            .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
        "the datasource is an import input"
    );
    let datasource = json!({"type": "prometheus", "uid": "${DS_PROMETHEUS}"});
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap();
        assert!(
            ids.insert(panel["id"].as_u64().expect("panel id")),
            "{title}: id repeats"
        );
        assert_eq!(panel["datasource"], datasource, "{title}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            assert_eq!(target["datasource"], datasource, "{title}");
        }
        assert!(
            panel["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{title}: description"
        );
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        assert_eq!(variable["datasource"], datasource);
    }
    let description = dashboard["description"].as_str().unwrap();
    assert!(
        description.contains("Bytes staged:") && description.contains("Bytes skipped ="),
        "the dashboard defines its dedupe terms"
    );

    let server = FerryServer::start();
    let exported: BTreeSet<String> = server
        .metrics()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect();
    let exprs = dashboard_queries(&dashboard)
        .into_iter()
        .chain(alert_rules(&plain_rules()));
    for (what, expr) in exprs {
        let names = metric_names(&expr);
        assert!(!names.is_empty(), "{what}: {expr} names no metric");
        for name in names {
            assert!(
                exported.contains(&name),
                "{what}: {name} is not on /metrics ({exported:?})"
            );
        }
    }
}

/// Server flags that make the alerts' conditions reachable in seconds (the
/// GC alert: 15s without a completed run), with room for a slow machine.
const FAST: [&str; 6] = [
    "--gc-interval",
    "5s",
    "--gc-grace",
    "2s",
    "--readiness-probe-interval",
    "1s",
];

/// What [`healthy_load`] leaves behind on one server.
const BUNDLE_BYTES: u64 = 1_400_000;
const BLOB_BYTES_STORED: u64 = 650_000;
const ORPHAN_BYTES: u64 = 50_000;

/// A fixed load as `ferry stage` makes it (ask what is missing, upload only
/// that, create the bundle), with one refused upload and a few 4xx answers.
/// Returns a bundle token and a digest it reads.
fn healthy_load(api: &ApiClient) -> (String, Digest) {
    let a = pseudo_random_bytes(1, 300_000);
    let b = pseudo_random_bytes(2, 200_000);
    let c = pseudo_random_bytes(3, 100_000);
    let orphan = pseudo_random_bytes(4, ORPHAN_BYTES as usize);
    let mut tokens = Vec::new();
    // Bundles {a,b}, {a,c}, {a,b}: staged 500k + 300k... = 1.4M, stored
    // 500k + 100k + 0, plus the orphan's 50k that no bundle lists.
    for files in [[&a, &b], [&a, &c], [&a, &b]] {
        let digests: Vec<Digest> = files.iter().map(|f| Digest::of(f)).collect();
        let missing = api.missing(&digests);
        for file in files {
            if missing.contains(&Digest::of(file)) {
                assert_eq!(api.put_blob(file).status(), 201);
            }
        }
        let entries: Vec<Value> = files
            .iter()
            .enumerate()
            .map(|(i, f)| json!({"path": format!("jars/{i}.jar"), "digest": Digest::of(f), "size": f.len()}))
            .collect();
        let response = api.create_bundle(&json!({ "entries": entries }));
        assert_eq!(response.status(), 201);
        let body: Value = response.json().unwrap();
        tokens.push(body["token"].as_str().unwrap().to_owned());
    }
    assert_eq!(api.put_blob(&orphan).status(), 201);
    let reader = api.as_token(Some(&tokens[0]));
    let response = reader.get_blob(&Digest::of(&a));
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().unwrap().len(), a.len());
    // Refused and failed requests: a wrong digest, no token, no such bundle.
    assert_eq!(
        api.put_blob_as(&Digest::of(b"other"), b"bytes").status(),
        400
    );
    assert_eq!(api.as_token(None).get_blob(&Digest::of(&a)).status(), 401);
    let unknown = api
        .request(reqwest::Method::GET, "/v1/bundles/no-such-bundle")
        .send()
        .unwrap();
    assert_eq!(unknown.status(), 404);
    (tokens[0].clone(), Digest::of(&a))
}

fn firing(prometheus: &Prometheus, alert: &str, job: &str) -> bool {
    prometheus
        .alerts()
        .iter()
        .any(|(name, j, state)| name == alert && j == job && state == "firing")
}

#[test]
fn every_dashboard_query_and_alert_works_against_a_real_prometheus() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("monitoring");
    let mut builder = FerryServer::builder()
        .data("s3://monitoring")
        .token(TOKEN)
        .args(FAST)
        // Nothing may ask a cloud metadata service for credentials.
        .env("AWS_METADATA_ENDPOINT", "http://127.0.0.1:9");
    for (k, v) in moto.env() {
        builder = builder.env(k, v);
    }
    let s3 = builder.start();
    let disk = SmallDisk::mount(8);
    let mut builder = FerryServer::builder().token(TOKEN).args(FAST);
    if let Some(disk) = &disk {
        builder = builder.data(disk.path().join("data").display().to_string());
    }
    let local = builder.start();

    // Prometheus with the alerts as shipped, but `for: 2s` instead of 5m.
    let shipped = std::fs::read_to_string(monitoring_dir().join("ferry-rules.yml")).unwrap();
    assert_eq!(shipped.matches("for: 5m").count(), 2);
    let test_rules = shipped.replace("for: 5m", "for: 2s");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files: [ferry-rules.yml]\n\
         scrape_configs:\n\
         \x20 - job_name: ferry-s3\n    static_configs: [{{targets: ['127.0.0.1:{}']}}]\n\
         \x20 - job_name: ferry-disk\n    static_configs: [{{targets: ['127.0.0.1:{}']}}]\n",
        s3.port, local.port
    );
    let Some(prometheus) = Prometheus::start(&config, &[("ferry-rules.yml", &test_rules)]) else {
        return;
    };
    let log = || prometheus.log();
    assert!(
        wait_until(Duration::from_secs(30), || {
            let targets = prometheus.targets();
            targets.len() == 2 && targets.iter().all(|(_, health)| health == "up")
        }),
        "targets: {:?}; {}",
        prometheus.targets(),
        log()
    );

    // Healthy: a fixed load on both servers, then wait until Prometheus has
    // scraped its effect and GC has swept the orphan blob.
    let mut readers = Vec::new();
    for server in [&s3, &local] {
        let api = ApiClient::new(&server.url, Some(TOKEN));
        readers.push(healthy_load(&api));
    }
    // Then reads spread over a few scrapes: a series that first appears
    // already at its final value has no rate in Prometheus.
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(1100));
        for (server, (token, digest)) in [&s3, &local].into_iter().zip(&readers) {
            let api = ApiClient::new(&server.url, Some(TOKEN));
            assert_eq!(api.missing(&[*digest]), []);
            let reader = api.as_token(Some(token));
            assert_eq!(reader.get_blob(digest).status(), 200);
        }
    }
    let scraped = |expr: &str, want: f64| {
        wait_until(Duration::from_secs(30), || {
            prometheus.values(expr) == [want]
        })
    };
    for job in ["ferry-s3", "ferry-disk"] {
        for (metric, want) in [
            ("ferry_bundle_bytes_total", BUNDLE_BYTES),
            ("ferry_blob_bytes_stored_total", BLOB_BYTES_STORED),
            ("ferry_gc_bytes_deleted_total", ORPHAN_BYTES),
            ("ferry_bundles", 3),
            ("ferry_ready", 1),
        ] {
            let expr = format!("{metric}{{job=\"{job}\"}}");
            assert!(
                scraped(&expr, want as f64),
                "{expr} = {:?}, want {want}",
                prometheus.values(&expr)
            );
        }
    }

    // A query over a metric that does not exist returns nothing: that is
    // what the checks below refuse.
    assert!(
        prometheus
            .query("sum(rate(ferry_no_such_metric_total[1m]))")
            .is_empty()
    );
    let dashboard = dashboard();
    for (title, expr) in dashboard_queries(&dashboard) {
        let expr = substitute(&expr);
        let values = prometheus.values(&expr);
        assert!(
            !values.is_empty(),
            "panel {title:?}: {expr} returned no data"
        );
        assert!(
            values.iter().all(|v| v.is_finite()),
            "panel {title:?}: {expr} = {values:?}"
        );
    }
    // The dedupe ratio: 1 - 650k stored / 1.4M staged on both servers.
    let (_, ratio) = dashboard_queries(&dashboard)
        .into_iter()
        .find(|(title, _)| title == "Dedupe ratio")
        .expect("a dedupe ratio panel");
    let ratio = prometheus.values(&substitute(&ratio));
    let want = 1.0 - BLOB_BYTES_STORED as f64 / BUNDLE_BYTES as f64;
    assert!(
        ratio.len() == 1 && (ratio[0] - want).abs() < 0.01,
        "dedupe ratio {ratio:?}, want {want}"
    );
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        let query = variable["query"].as_str().expect("variable query");
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .expect("label_values(selector, label)");
        let (selector, label) = inner.rsplit_once(',').unwrap();
        let values = prometheus.label_values(label.trim(), &substitute(selector.trim()));
        assert!(!values.is_empty(), "variable {query} has no values");
    }
    let jobs = prometheus.label_values("job", "ferry_http_requests_total");
    assert_eq!(jobs, ["ferry-disk", "ferry-s3"]);

    // No alert condition holds while all is well.
    let rules = plain_rules();
    for (alert, expr) in alert_rules(&rules) {
        let values = prometheus.values(&expr);
        assert!(
            values.is_empty(),
            "{alert} holds while healthy: {expr} = {values:?}"
        );
    }
    assert!(prometheus.alerts().is_empty(), "{:?}", prometheus.alerts());

    // S3 gone: the readiness probe fails with no /readyz caller, GC fails,
    // API requests answer 503 (a dozen, over several scrapes, so the 5xx
    // series has a rate).
    drop(moto);
    let (token, digest) = &readers[0];
    let reader = ApiClient::new(&s3.url, Some(token));
    // `?redirect=false`: the server reads the store itself (a redirect
    // would send the reader to the dead store, past the server).
    for _ in 0..12 {
        let response = reader
            .request(
                reqwest::Method::GET,
                &format!("/v1/blobs/{digest}?redirect=false"),
            )
            .send()
            .expect("GET blob");
        assert_eq!(response.status(), 503);
        std::thread::sleep(Duration::from_millis(300));
    }
    for alert in [
        "FerryServerNotReady",
        "FerryGcNotSucceeding",
        "FerryHighErrorRate",
    ] {
        assert!(
            wait_until(Duration::from_secs(60), || firing(
                &prometheus,
                alert,
                "ferry-s3"
            )),
            "{alert} did not fire for ferry-s3; alerts {:?}; server log:\n{}",
            prometheus.alerts(),
            s3.log()
        );
    }
    for (operation, expr) in [
        (
            "readiness",
            "ferry_storage_errors_total{job=\"ferry-s3\",operation=\"readiness\",kind=\"unavailable\"}",
        ),
        (
            "gc",
            "ferry_storage_errors_total{job=\"ferry-s3\",operation=\"gc\",kind=\"unavailable\"}",
        ),
        (
            "blob_read",
            "ferry_storage_errors_total{job=\"ferry-s3\",operation=\"blob_read\",kind=\"unavailable\"}",
        ),
    ] {
        let values = prometheus.values(expr);
        assert!(
            values.len() == 1 && values[0] >= 1.0,
            "{operation}: {values:?}"
        );
    }
    let flaps = prometheus.values("ferry_readiness_changes_total{job=\"ferry-s3\"}");
    assert_eq!(flaps, [1.0], "one change, ready to not ready");
    // The other server is still fine.
    for alert in ["FerryServerNotReady", "FerryGcNotSucceeding"] {
        assert!(
            !firing(&prometheus, alert, "ferry-disk"),
            "{alert} fired for ferry-disk"
        );
    }

    // The tmpfs full: one upload that does not fit gets 507, and the
    // storage-full alert fires from a counter that was at 0.
    if disk.is_none() {
        eprintln!("NOT RUN: FerryStorageFull firing (no tmpfs)");
        return;
    }
    let api = ApiClient::new(&local.url, Some(TOKEN));
    assert_eq!(
        api.put_blob(&pseudo_random_bytes(5, 12 << 20)).status(),
        507
    );
    assert!(
        wait_until(Duration::from_secs(30), || firing(
            &prometheus,
            "FerryStorageFull",
            "ferry-disk"
        )),
        "FerryStorageFull did not fire; alerts {:?}",
        prometheus.alerts()
    );
    assert_eq!(
        prometheus.values(
            "ferry_storage_errors_total{job=\"ferry-disk\",operation=\"blob_write\",kind=\"full\"}"
        ),
        [1.0]
    );
    let every: BTreeSet<String> = prometheus
        .alerts()
        .into_iter()
        .map(|(name, _, _)| name)
        .collect();
    assert_eq!(every, ALERTS.iter().map(|a| a.to_string()).collect());
}
