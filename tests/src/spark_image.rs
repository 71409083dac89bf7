//! The Spark image, played by pyspark's distribution on this machine.
//!
//! No Spark image can be pulled here, so [`stand_in`] describes one for the
//! [`crate::kubelet`] stand-in: the host's file system as the root (Java 17
//! and pyspark's `SPARK_HOME` from the emulator venv), user 185:185 and
//! `WORKDIR /opt/spark/work-dir` as in apache/spark, and an entrypoint
//! script of our own ([`ENTRYPOINT`]) that does what the image's
//! `/opt/entrypoint.sh` does with the pod's arguments: `driver ...` runs
//! `spark-submit --deploy-mode client` with the pod's properties file and
//! bind address, `executor` runs `KubernetesExecutorBackend` with the
//! executor pod's environment. Python is the system's `python3` with
//! pyspark's site-packages on `PYTHONPATH` (as the Spark Python image puts
//! pyspark on it), because the venv's interpreter may live below a folder
//! that uid 185 cannot enter.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::kube_mock::KubeMock;
use crate::kubelet::StandInImage;
use crate::require_tool;

/// A `k8s://` master nothing listens on: dry runs name it (ferry delivers
/// only for a cluster-mode `k8s://` submission), and [`on_local_master`]
/// turns the rewritten command into one Spark runs here.
pub const UNREACHABLE_K8S_MASTER: &str = "k8s://https://127.0.0.1:9";

/// `command` (a rewritten `--master UNREACHABLE_K8S_MASTER --deploy-mode
/// cluster` submission) on the local master in client mode; ferry's k8s
/// settings are then unused.
pub fn on_local_master(command: &[String]) -> Vec<String> {
    command
        .iter()
        .map(|a| match a.as_str() {
            UNREACHABLE_K8S_MASTER => "local[1]".to_owned(),
            "cluster" => "client".to_owned(),
            _ => a.clone(),
        })
        .collect()
}

/// The start of a `ferry submit --dry-run --output json` that a test later
/// runs with [`on_local_master`]: `ferry` against `server_url` with the
/// upload token in `token`, namespace `spark`, the pod's dependency folder
/// `pod_dir` and templates in `templates`, then `spark_submit` in cluster
/// mode on [`UNREACHABLE_K8S_MASTER`] with the UI off and the driver on
/// 127.0.0.1. The caller adds the job's own options, primary resource,
/// arguments and environment.
pub fn dry_run_submit(
    server_url: &str,
    token: &Path,
    pod_dir: &Path,
    templates: &Path,
    spark_submit: &Path,
) -> Command {
    let mut command = Command::new(crate::bin("ferry"));
    command
        .args(["--server", server_url, "--token-file"])
        .arg(token)
        .args(["submit", "--dry-run", "--output", "json"])
        .args(["--namespace", "spark", "--deps-dir"])
        .arg(pod_dir)
        .arg("--template-dir")
        .arg(templates)
        .arg("--")
        .arg(spark_submit)
        .args([
            "--master",
            UNREACHABLE_K8S_MASTER,
            "--deploy-mode",
            "cluster",
        ])
        .args(["--conf", "spark.ui.enabled=false"])
        .args(["--conf", "spark.driver.host=127.0.0.1"])
        .args(["--conf", "spark.driver.bindAddress=127.0.0.1"]);
    command
}

/// The image name the tests give `spark.kubernetes.container.image`.
pub const IMAGE: &str = "apache/spark:4.0.1";

/// The Spark image's entrypoint, reduced to what Spark's Kubernetes
/// backend passes it (`driver ARGS...`, `executor`).
pub const ENTRYPOINT: &str = r#"#!/bin/bash
# Stand-in for the Spark image's /opt/entrypoint.sh (see
# tests/src/spark_image.rs): same commands for the same pod arguments.
set -eo pipefail
classpath="${SPARK_CONF_DIR:-$SPARK_HOME/conf}:$SPARK_HOME/jars/*:$PWD"
case "$1" in
  driver)
    shift
    # STAND_IN_DRIVER_ARGS: extra spark-submit arguments a test adds (e.g.
    # --master local[1] when no executor pods are wanted).
    # shellcheck disable=SC2086
    exec "$SPARK_HOME/bin/spark-submit" \
      --conf "spark.driver.bindAddress=$SPARK_DRIVER_BIND_ADDRESS" \
      --conf "spark.executorEnv.SPARK_DRIVER_POD_IP=$SPARK_DRIVER_BIND_ADDRESS" \
      --deploy-mode client $STAND_IN_DRIVER_ARGS "$@"
    ;;
  executor)
    shift
    java_opts=()
    for name in "${!SPARK_JAVA_OPT_@}"; do java_opts+=("${!name}"); done
    exec "$JAVA_HOME/bin/java" "${java_opts[@]}" \
      -Xms"$SPARK_EXECUTOR_MEMORY" -Xmx"$SPARK_EXECUTOR_MEMORY" -cp "$classpath" \
      org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
      --driver-url "$SPARK_DRIVER_URL" --executor-id "$SPARK_EXECUTOR_ID" \
      --cores "$SPARK_EXECUTOR_CORES" --app-id "$SPARK_APPLICATION_ID" \
      --hostname "$SPARK_EXECUTOR_POD_IP" \
      --resourceProfileId "$SPARK_RESOURCE_PROFILE_ID" \
      --podName "$SPARK_EXECUTOR_POD_NAME"
    ;;
  *)
    exec "$@"
    ;;
esac
"#;

/// What the stand-in is made of on this machine.
#[derive(Debug, Clone)]
pub struct SparkHome {
    /// pyspark's package folder, which is a Spark distribution.
    pub spark_home: PathBuf,
    /// The site-packages folder holding pyspark and py4j.
    pub site_packages: PathBuf,
    pub java_home: PathBuf,
    /// `spark-submit` of the distribution, for the submitting side.
    pub spark_submit: PathBuf,
}

impl SparkHome {
    /// Finds pyspark (via `FERRY_TEST_PYTHON`) and Java, or `None` outside
    /// CI when they are missing.
    pub fn find() -> Option<Self> {
        let python = require_tool("python with pyspark", "FERRY_TEST_PYTHON", &["python3"])?;
        let spark_submit = require_tool(
            "pyspark's spark-submit",
            "FERRY_TEST_SPARK_SUBMIT",
            &["spark-submit"],
        )?;
        let java = require_tool("java", "FERRY_TEST_JAVA", &["java"])?;
        let output = Command::new(&python)
            .args([
                "-c",
                "import os, pyspark; print(os.path.dirname(pyspark.__file__))",
            ])
            .output()
            .expect("ask python where pyspark is");
        assert!(
            output.status.success(),
            "{} cannot import pyspark",
            python.display()
        );
        let spark_home = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        let site_packages = spark_home.parent().expect("site-packages").to_path_buf();
        let java = std::fs::canonicalize(&java).expect("resolve java");
        let java_home = java
            .parent()
            .and_then(Path::parent)
            .expect("java lives in JAVA_HOME/bin")
            .to_path_buf();
        Some(Self {
            spark_home,
            site_packages,
            java_home,
            spark_submit,
        })
    }

    /// The start of a cluster-mode `spark-submit` against `kube` (the fake
    /// API server): master, deploy mode, app name, the [`IMAGE`] the
    /// stand-in plays, namespace, no UI, and a small CPU request. Add
    /// options and the application after it.
    pub fn cluster_mode_args(&self, kube: &KubeMock, namespace: &str, name: &str) -> Vec<String> {
        let conf = |setting: String| ["--conf".to_owned(), setting];
        let mut args = vec![
            self.spark_submit.display().to_string(),
            "--master".into(),
            format!("k8s://{}", kube.url),
            "--deploy-mode".into(),
            "cluster".into(),
            "--name".into(),
            name.into(),
        ];
        args.extend(conf(format!("spark.kubernetes.container.image={IMAGE}")));
        args.extend(conf(format!("spark.kubernetes.namespace={namespace}")));
        args.extend(conf("spark.ui.enabled=false".into()));
        args.extend(conf("spark.kubernetes.driver.request.cores=0.1".into()));
        args
    }

    /// The environment `spark-submit` needs on the submitting side.
    pub fn submit_env(&self) -> Vec<(String, String)> {
        vec![
            ("SPARK_HOME".into(), self.spark_home.display().to_string()),
            ("JAVA_HOME".into(), self.java_home.display().to_string()),
        ]
    }
}

/// The Spark image stand-in; writes its entrypoint into `dir`.
/// `driver_args` go to the driver's spark-submit (word-split).
pub fn stand_in(home: &SparkHome, dir: &Path, driver_args: &str) -> StandInImage {
    let entrypoint = dir.join("spark-entrypoint.sh");
    std::fs::write(&entrypoint, ENTRYPOINT).expect("write the entrypoint");
    std::fs::set_permissions(&entrypoint, std::fs::Permissions::from_mode(0o755))
        .expect("chmod the entrypoint");
    let python = ["/usr/bin/python3", "/usr/local/bin/python3"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .unwrap_or("python3");
    StandInImage {
        entrypoint: vec!["/opt/entrypoint.sh".into()],
        user: Some("185:185".into()),
        working_dir: Some("/opt/spark/work-dir".into()),
        env: vec![
            ("SPARK_HOME".into(), home.spark_home.display().to_string()),
            ("JAVA_HOME".into(), home.java_home.display().to_string()),
            (
                "PATH".into(),
                format!(
                    "{}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    home.java_home.display()
                ),
            ),
            ("PYSPARK_PYTHON".into(), python.into()),
            ("PYSPARK_DRIVER_PYTHON".into(), python.into()),
            (
                "PYTHONPATH".into(),
                home.site_packages.display().to_string(),
            ),
            ("STAND_IN_DRIVER_ARGS".into(), driver_args.into()),
        ],
        dirs: vec![("/opt/spark/work-dir".into(), 185, 185, 0o775)],
        files: vec![(entrypoint, "/opt/entrypoint.sh".into())],
    }
}
