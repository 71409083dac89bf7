//! A real Spark job (pyspark's `spark-submit --master local[1]`, Java 17)
//! run with the command `ferry submit` rewrote, after the real ferry-init
//! fetched the bundle with the arguments of the generated pod template.
//!
//! This checks what the unit tests cannot: that Spark itself accepts the
//! rewritten `local://` URIs (the dependency folder has a space, so every
//! URI carries `%20`), imports the staged `--py-files` and runs the staged
//! primary resource, which reads a staged `--files` entry at its pod path.
//! (Spark does not copy `local://` files into `SparkFiles`, so jobs open
//! them where ferry-init put them; the README says so.) Kubernetes is replaced by the local master: the
//! dependency folder is pointed at a temp dir with `--deps-dir`, the
//! init container's work is done by running ferry-init by hand, and the
//! command ferry wrote for a `k8s://` cluster-mode submission (ferry runs
//! any other master unchanged) is run with `--master local[1]` instead.
//!
//! Needs `FERRY_TEST_SPARK_SUBMIT` (pyspark's spark-submit, set by
//! `target/emulators/env.sh`) and `java` on `PATH`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ferry_tests::spark_image::{self, on_local_master};
use ferry_tests::{Child, FerryServer, bin, require_tool};
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

const JOB: &str = r#"
import sys
from pyspark.sql import SparkSession
import scoring

spark = SparkSession.builder.getOrCreate()
with open(sys.argv[2]) as f:
    lines = [l for l in f.read().splitlines() if l]
total = spark.sparkContext.parallelize(lines, 2).map(scoring.score).sum()
with open(sys.argv[1], "w") as out:
    out.write("%d rows, score %d\n" % (len(lines), total))
spark.stop()
"#;

const SCORING: &str = "def score(line):\n    return int(line.split(',')[1]) * 2\n";

#[test]
fn spark_runs_the_rewritten_command_with_dependencies_ferry_init_fetched() {
    let Some(spark_submit) = require_tool(
        "pyspark's spark-submit",
        "FERRY_TEST_SPARK_SUBMIT",
        &["spark-submit"],
    ) else {
        return;
    };
    let Some(python) = require_tool("python with pyspark", "FERRY_TEST_PYTHON", &["python3"])
    else {
        return;
    };
    if require_tool("java", "FERRY_TEST_JAVA", &["java"]).is_none() {
        return;
    }

    let server = FerryServer::start();
    let work = tempfile::tempdir().unwrap();
    let deps = work.path().join("my deps");
    std::fs::create_dir_all(&deps).unwrap();
    std::fs::write(deps.join("job.py"), JOB).unwrap();
    std::fs::write(deps.join("scoring.py"), SCORING).unwrap();
    let rows: Vec<String> = (1..=50).map(|i| format!("row{i},{i}")).collect();
    std::fs::write(deps.join("data 1.csv"), rows.join("\n") + "\n").unwrap();
    let pod_dir = work.path().join("pod dir");
    let templates = work.path().join("templates");
    let output = work.path().join("result.txt");
    let token = work.path().join("upload-token");
    std::fs::write(&token, &server.token).unwrap();

    let path = |p: &Path| p.display().to_string();
    let submit =
        spark_image::dry_run_submit(&server.url, &token, &pod_dir, &templates, &spark_submit)
            .args(["--name", "ferry-e2e"])
            .args(["--py-files", &path(&deps.join("scoring.py"))])
            .args(["--files", &path(&deps.join("data 1.csv"))])
            .arg(deps.join("job.py"))
            .arg(&output)
            .arg(pod_dir.join("files/data 1.csv"))
            .env("XDG_CONFIG_HOME", work.path().join("no-config"))
            .env("KUBECONFIG", work.path().join("no-kubeconfig"))
            .output()
            .unwrap();
    assert!(
        submit.status.success(),
        "ferry submit: {}",
        String::from_utf8_lossy(&submit.stderr)
    );
    let dry: Value = serde_json::from_slice(&submit.stdout).unwrap();
    let command: Vec<String> = serde_json::from_value(dry["command"].clone()).unwrap();
    let secret: k8s_openapi::api::core::v1::Secret =
        serde_json::from_value(dry["secret"].clone()).unwrap();
    let bundle_token = secret.string_data.unwrap()["token"].clone();
    assert!(
        command
            .iter()
            .any(|a| a.ends_with("/pod%20dir/files/data%201.csv")),
        "{command:?}"
    );

    // The init container's part, with its own arguments from the template.
    let pod: Pod = serde_yaml::from_str(
        &std::fs::read_to_string(templates.join("driver-pod-template.yaml")).unwrap(),
    )
    .unwrap();
    let init_args = pod.spec.unwrap().init_containers.unwrap()[0]
        .args
        .clone()
        .unwrap();
    let pod_token = work.path().join("pod-token");
    std::fs::write(&pod_token, &bundle_token).unwrap();
    let init_args: Vec<String> = init_args
        .iter()
        .map(|a| a.replace("/var/run/secrets/ferry/token", &path(&pod_token)))
        .collect();
    let init = Command::new(bin("ferry-init"))
        .args(&init_args)
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "ferry-init {init_args:?}: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    assert!(pod_dir.join("files/data 1.csv").is_file());

    // The staged copies are what Spark must use: the originals go away.
    std::fs::remove_dir_all(&deps).unwrap();

    // The same command on the local master: ferry's k8s settings are unused.
    let command = on_local_master(&command);
    let log = work.path().join("spark.log");
    let mut spark = Command::new(&command[0]);
    spark
        .args(&command[1..])
        .current_dir(work.path())
        .env("PYSPARK_PYTHON", &python)
        .env("PYSPARK_DRIVER_PYTHON", &python)
        .env("SPARK_LOCAL_IP", "127.0.0.1")
        .env("SPARK_LOCAL_DIRS", work.path().join("spark-local"));
    let mut child = Child::spawn("spark-submit", spark, log);
    let status = child.wait_timeout(Duration::from_secs(240));
    let spark_log = child.log_text();
    assert!(
        status.is_some_and(|s| s.success()),
        "spark-submit {command:?} ({status:?}, killed after 240 s if None):\n{spark_log}"
    );
    let expected_score: i64 = (1..=50).map(|i| i * 2).sum();
    assert_eq!(
        std::fs::read_to_string(&output)
            .unwrap_or_else(|e| panic!("no result ({e}):\n{spark_log}")),
        format!("50 rows, score {expected_score}\n")
    );
}
