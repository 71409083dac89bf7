//! A throwaway "cluster" for tests of pods: kmock (a **fake** API server,
//! see [`crate::kube_mock`]), a ferry-server on loopback, the kubelet
//! stand-in ([`crate::kubelet`]) reporting to that API, and a work folder
//! holding the upload token; plus `ferry submit` run against them.
//!
//! ```text
//! let cluster = Cluster::start(&["ferry-init"])?;        // None: not installed (outside CI)
//! let submit = cluster.ferry_submit(&["--namespace", "spark", "--pod-server", &cluster.server.url],
//!                                   &spark_submit_args, Some(&spark));
//! let driver = cluster.wait_for_pods("spark", "spark-role=driver", 1, limit).remove(0);
//! let outcome = cluster.kubelet.run_pod(&driver, limit);
//! ```

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

use crate::kube_mock::KubeMock;
use crate::kubelet::Kubelet;
use crate::podman::Podman;
use crate::spark_image::SparkHome;
use crate::{FerryServer, bin, wait_until};

pub struct Cluster {
    pub kube: KubeMock,
    pub kubelet: Kubelet,
    pub server: FerryServer,
    pub work: tempfile::TempDir,
    /// A file holding the server's upload token.
    pub upload_token: PathBuf,
}

/// `ferry --server ... --token-file UPLOAD_TOKEN`, to which a test adds the
/// subcommand: run in `work`, with `kube`'s kubeconfig and nothing of the
/// caller's shell.
pub fn ferry_in(
    server: &FerryServer,
    upload_token: &std::path::Path,
    work: &std::path::Path,
    kube: &KubeMock,
) -> Command {
    let mut command = Command::new(bin("ferry"));
    command
        .args(["--server", &server.url, "--token-file"])
        .arg(upload_token)
        .current_dir(work)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", work)
        .env("XDG_CONFIG_HOME", work.join("no-config"))
        .env("KUBECONFIG", &kube.kubeconfig)
        // The JVM's and kube-rs' credential chains stay on loopback.
        .env("AWS_METADATA_ENDPOINT", "http://127.0.0.1:9")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    command
}

impl Cluster {
    /// Starts the fake API server and ferry-server; `None` (outside CI)
    /// when podman, kmock or one of our `images` is missing.
    pub fn start(images: &[&str]) -> Option<Self> {
        let podman = Podman::with_ferry_images(images)?;
        let kube = KubeMock::start()?;
        let kubelet = Kubelet::new(kube.client(), podman);
        let server = FerryServer::start();
        let work = tempfile::tempdir().expect("work dir");
        let upload_token = work.path().join("upload-token");
        std::fs::write(&upload_token, &server.token).expect("write the upload token");
        Some(Self {
            kube,
            kubelet,
            server,
            work,
            upload_token,
        })
    }

    /// A path in the work folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    /// `ferry --server ... --token-file ... submit SUBMIT -- SPARK_SUBMIT`
    /// in the work folder, with the fake's kubeconfig (and `spark`'s
    /// environment when given) and nothing of the caller's shell.
    pub fn ferry_submit(
        &self,
        submit: &[&str],
        spark_submit: &[String],
        spark: Option<&SparkHome>,
    ) -> Command {
        let mut command = ferry_in(
            &self.server,
            &self.upload_token,
            self.work.path(),
            &self.kube,
        );
        command
            .arg("submit")
            .args(submit)
            .arg("--")
            .args(spark_submit);
        for (key, value) in spark.map(SparkHome::submit_env).unwrap_or_default() {
            command.env(key, value);
        }
        command
    }

    /// The pods of `namespace` matching `selector`, once there are `count`
    /// (panics after `limit`).
    pub fn wait_for_pods(
        &self,
        namespace: &str,
        selector: &str,
        count: usize,
        limit: Duration,
    ) -> Vec<Pod> {
        let mut found = Vec::new();
        let appeared = wait_until(limit, || {
            found = self.kube.client().list(namespace, "pods", Some(selector));
            found.len() >= count
        });
        assert!(
            appeared,
            "no {count} pods {selector} in {namespace} after {limit:?}"
        );
        found
            .into_iter()
            .map(|p| serde_json::from_value(p).expect("pod parses"))
            .collect()
    }
}
