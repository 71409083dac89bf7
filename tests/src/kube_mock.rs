//! kmock (PyPI) as a stand-in Kubernetes API server on loopback.
//!
//! kmock is a *fake*: an in-memory store of JSON objects behind the
//! Kubernetes REST paths, with list and watch. It has no admission, no RBAC,
//! no authentication, no defaulting beyond a new pod's `Pending` status, and
//! no controllers, so a pass against it shows a client's wiring against the
//! wire protocol, not against a real cluster. `kube_mock.py` (next to this
//! file) teaches it what real clients need: TokenReview answers from a fixed
//! table, 410 Gone for a watch resumed from a resourceVersion it never
//! issued, server-assigned resourceVersion/uid/creationTimestamp, Secrets'
//! `stringData` folded into `data`, server-side apply creating objects,
//! JSON patch and PUT, label and field selectors on list, watch and
//! delete-collection, and watches over WebSocket (what Spark's fabric8
//! client uses). Nothing runs pods: [`crate::kubelet`] does, writing pod
//! status back through this API.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::{Child, free_port, in_ci, require_tool, wait_for_port};
use serde_json::{Value, json};

/// The server: kmock plus what the tests need of a real API server (see
/// the script's header for the list).
const SERVER: &str = include_str!("kube_mock.py");

/// Service-account tokens the fake's TokenReview accepts, with the user each
/// one is (JWT-shaped, as ferry-server only reviews those).
pub const SPARK_SUBMITTER_TOKEN: &str = "eyJhbGciOiJub25lIn0.spark-submitter.sig";
pub const CI_PUBLISHER_TOKEN: &str = "eyJhbGciOiJub25lIn0.ci-publisher.sig";
/// Authenticated, but a person rather than a service account.
pub const HUMAN_TOKEN: &str = "eyJhbGciOiJub25lIn0.human.sig";
/// Not authenticated.
pub const UNKNOWN_TOKEN: &str = "eyJhbGciOiJub25lIn0.nobody.sig";

pub struct KubeMock {
    pub child: Child,
    python: PathBuf,
    script: PathBuf,
    pub port: u16,
    pub url: String,
    /// A kubeconfig whose current context is this server.
    pub kubeconfig: PathBuf,
    http: reqwest::blocking::Client,
    version: AtomicU64,
    _dir: tempfile::TempDir,
}

impl KubeMock {
    /// Starts kmock, or returns `None` outside CI when it is not installed
    /// (tests/install-deps.sh puts it in the emulator venv).
    pub fn start() -> Option<Self> {
        let python = require_tool(
            "python with kmock (pip install kmock)",
            "FERRY_TEST_PYTHON",
            &[],
        )?;
        let importable = Command::new(&python)
            .args(["-c", "import kmock"])
            .status()
            .is_ok_and(|s| s.success());
        if !importable {
            let msg = format!(
                "{} cannot import kmock; run tests/install-deps.sh",
                python.display()
            );
            assert!(!in_ci(), "CI=true and a test dependency is missing: {msg}");
            eprintln!("NOT RUN: {msg}");
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let script = dir.path().join("kmock_server.py");
        std::fs::write(&script, SERVER).expect("write kmock script");
        let port = free_port();
        let child = spawn(&python, &script, port, dir.path());
        let url = format!("http://127.0.0.1:{port}");
        let kubeconfig = dir.path().join("kubeconfig");
        write_kubeconfig(&kubeconfig, &url, "not-checked-by-kmock");
        Some(Self {
            child,
            python,
            script,
            port,
            url,
            kubeconfig,
            http: reqwest::blocking::Client::new(),
            version: AtomicU64::new(1),
            _dir: dir,
        })
    }

    /// Stops the API server: open watches break, requests are refused.
    pub fn stop(&mut self) {
        self.child.kill();
    }

    /// Starts a fresh, empty API server on the same port (after `stop`), as
    /// if every pod had gone while it was down.
    pub fn start_empty(&mut self) {
        self.child = spawn(&self.python, &self.script, self.port, self._dir.path());
    }

    /// A kubeconfig for this server whose user presents `token` (as a
    /// submitter's would).
    pub fn kubeconfig_with_token(&self, token: &str) -> PathBuf {
        let path = self
            ._dir
            .path()
            .join(format!("kubeconfig-{}", self.next_version()));
        write_kubeconfig(&path, &self.url, token);
        path
    }

    /// kube-rs' watcher refuses objects without a resourceVersion; kmock
    /// keeps whatever the object says, so each write carries a fresh one.
    fn next_version(&self) -> String {
        self.version.fetch_add(1, Ordering::Relaxed).to_string()
    }

    /// Creates a pod with these labels and `status.phase`.
    pub fn create_pod(&self, namespace: &str, name: &str, labels: &[(&str, &str)], phase: &str) {
        let labels: serde_json::Map<String, Value> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": labels,
                "resourceVersion": self.next_version(),
            },
            "spec": {"containers": [{"name": "main", "image": "example"}]},
            "status": {"phase": phase},
        });
        self.client().create(namespace, "pods", &pod);
    }

    /// Changes a pod's `status.phase` (a MODIFIED event).
    pub fn set_phase(&self, namespace: &str, name: &str, phase: &str) {
        let patch = json!({
            "metadata": {"resourceVersion": self.next_version()},
            "status": {"phase": phase},
        });
        let path = Self::path(namespace, "pods", name);
        assert!(self.client().merge_patch(&path, &patch), "no pod {path}");
    }

    /// Deletes a pod (a DELETED event).
    pub fn delete_pod(&self, namespace: &str, name: &str) {
        let path = Self::path(namespace, "pods", name);
        assert!(self.client().delete(&path), "no pod {path}");
    }

    /// A client for this server's REST API (cheap to clone, for threads).
    pub fn client(&self) -> KubeClient {
        KubeClient {
            url: self.url.clone(),
            http: self.http.clone(),
        }
    }

    /// See [`KubeClient::path`].
    pub fn path(namespace: &str, plural: &str, name: &str) -> String {
        KubeClient::path(namespace, plural, name)
    }

    /// The pods kmock lists in `namespace` (to check the fake itself).
    pub fn pod_names(&self, namespace: &str) -> Vec<String> {
        self.client()
            .list(namespace, "pods", None)
            .iter()
            .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
            .collect()
    }
}

/// Plain REST calls on a kmock server, as `kubectl` or a kubelet make them.
#[derive(Clone)]
pub struct KubeClient {
    pub url: String,
    http: reqwest::blocking::Client,
}

impl KubeClient {
    /// The API path of a namespaced core (v1) object, or of the collection
    /// when `name` is empty: `/api/v1/namespaces/{namespace}/{plural}/{name}`.
    pub fn path(namespace: &str, plural: &str, name: &str) -> String {
        let collection = format!("/api/v1/namespaces/{namespace}/{plural}");
        if name.is_empty() {
            collection
        } else {
            format!("{collection}/{name}")
        }
    }

    /// Sends `request` (`what` names it in messages): the answer's JSON, or
    /// `None` for 404; any other failure panics with the fake's answer.
    fn send(&self, what: &str, request: reqwest::blocking::RequestBuilder) -> Option<Value> {
        let response = request
            .send()
            .unwrap_or_else(|e| panic!("{what} on kmock: {e}"));
        let status = response.status();
        if status == 404 {
            return None;
        }
        let body = response.text().unwrap_or_default();
        assert!(status.is_success(), "kmock {what}: {status} {body}");
        Some(serde_json::from_str(&body).unwrap_or_else(|e| panic!("kmock {what}: {e}: {body}")))
    }

    /// GETs an API path; `None` when the object does not exist.
    pub fn get(&self, path: &str) -> Option<Value> {
        let url = format!("{}{path}", self.url);
        self.send(&format!("GET {path}"), self.http.get(url))
    }

    /// The objects of a namespaced core collection, optionally by label
    /// selector (as `kubectl get -l` sends it).
    pub fn list(&self, namespace: &str, plural: &str, selector: Option<&str>) -> Vec<Value> {
        let path = Self::path(namespace, plural, "");
        let mut request = self.http.get(format!("{}{path}", self.url));
        if let Some(selector) = selector {
            request = request.query(&[("labelSelector", selector)]);
        }
        let list = self
            .send(&format!("list {path}"), request)
            .unwrap_or_default();
        list["items"].as_array().cloned().unwrap_or_default()
    }

    /// Creates an object in a namespaced core collection and returns it as
    /// stored (with the version, uid and timestamp the fake assigns).
    pub fn create(&self, namespace: &str, plural: &str, object: &Value) -> Value {
        let path = Self::path(namespace, plural, "");
        let request = self.http.post(format!("{}{path}", self.url)).json(object);
        self.send(&format!("POST {path}"), request)
            .unwrap_or_else(|| panic!("kmock POST {path}: 404"))
    }

    /// Applies a JSON merge patch to the object at `path`, as a kubelet
    /// patches pod status; false when the object is gone.
    pub fn merge_patch(&self, path: &str, patch: &Value) -> bool {
        let request = self
            .http
            .patch(format!("{}{path}", self.url))
            .header("content-type", "application/merge-patch+json")
            .body(patch.to_string());
        self.send(&format!("PATCH {path}"), request).is_some()
    }

    /// Deletes the object at `path`; false when it was not there.
    pub fn delete(&self, path: &str) -> bool {
        let request = self.http.delete(format!("{}{path}", self.url));
        self.send(&format!("DELETE {path}"), request).is_some()
    }
}

fn write_kubeconfig(path: &std::path::Path, url: &str, token: &str) {
    std::fs::write(
        path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kmock\n  cluster:\n    server: {url}\n\
             users:\n- name: kmock\n  user:\n    token: {token}\n\
             contexts:\n- name: kmock\n  context:\n    cluster: kmock\n    user: kmock\n\
             current-context: kmock\n"
        ),
    )
    .expect("write kubeconfig");
}

fn spawn(
    python: &std::path::Path,
    script: &std::path::Path,
    port: u16,
    dir: &std::path::Path,
) -> Child {
    let mut command = Command::new(python);
    command.arg(script).arg(port.to_string());
    let child = Child::spawn("kmock", command, dir.join("kmock.log"));
    assert!(
        wait_for_port(port, Duration::from_secs(20)),
        "kmock did not listen on {port}: {}",
        child.log_text()
    );
    child
}
