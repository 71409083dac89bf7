//! kmock (PyPI) as a stand-in Kubernetes API server on loopback.
//!
//! kmock is a *fake*: an in-memory store of JSON objects behind the
//! Kubernetes REST paths, with list and watch (it replays the current objects
//! as ADDED, then streams ADDED/MODIFIED/DELETED). It has no admission, no
//! RBAC, no authentication and no controllers, so a pass here shows
//! ferry-server's kube-rs wiring against the wire protocol, not against a
//! real cluster. Pods are created, patched and deleted through its REST API,
//! the way a kubelet's changes reach a watcher. The script below adds two
//! things kmock lacks: TokenReview answers from a fixed table, and 410 Gone
//! for a watch resumed from a resourceVersion this process never issued.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ferry_tests::{Child, free_port, in_ci, require_tool, wait_for_port};
use serde_json::{Value, json};

const SERVER: &str = r#"
import asyncio, json, os, sys
import aiohttp.web
import kmock

# TokenReview: the emulator would store each review as an object (and refuse
# the second one as a duplicate), so reviews are answered here from a fixed
# table of tokens instead.
ACCOUNTS = {
    'eyJhbGciOiJub25lIn0.spark-submitter.sig': 'system:serviceaccount:spark:submitter',
    'eyJhbGciOiJub25lIn0.ci-publisher.sig': 'system:serviceaccount:ci:publisher',
    'eyJhbGciOiJub25lIn0.human.sig': 'alice@example.com',
}

# resourceVersions: kmock keeps whatever objects say and ignores the one a
# watch asks to resume from. A real API server answers a watch from a version
# it does not know (or no longer keeps) with 410 Gone, which makes a client
# list again. This instance does the same for versions it never issued, so a
# watcher that outlives one kmock process re-lists on the next.
EPOCH = 'epoch-%d' % os.getpid()

class Api(kmock.KubernetesEmulator):
    known_versions = {EPOCH}

    async def _handle(self, request):
        if request.resource is not None and request.resource.plural == 'tokenreviews':
            spec = (request.data or {}).get('spec', {})
            user = ACCOUNTS.get(spec.get('token'))
            status = ({'authenticated': True, 'user': {'username': user}} if user
                      else {'authenticated': False, 'error': 'invalid bearer token'})
            return aiohttp.web.json_response({
                'apiVersion': 'authentication.k8s.io/v1', 'kind': 'TokenReview',
                'metadata': {}, 'spec': spec, 'status': status}, status=201)
        if isinstance(request.data, dict):
            version = request.data.get('metadata', {}).get('resourceVersion')
            if version:
                self.known_versions.add(version)
        if request.action == kmock.action.WATCH:
            since = request.params.get('resourceVersion')
            if since and since not in self.known_versions:
                gone = {'type': 'ERROR', 'object': {
                    'apiVersion': 'v1', 'kind': 'Status', 'metadata': {}, 'status': 'Failure',
                    'message': 'too old resource version: %s' % since,
                    'reason': 'Expired', 'code': 410}}
                return aiohttp.web.Response(text=json.dumps(gone) + '\n',
                                            content_type='application/json')
        return await super()._handle(request)

    async def _serve_list(self, request):
        listed = await super()._serve_list(request)
        listed['metadata']['resourceVersion'] = EPOCH
        return listed

async def main(port):
    async with Api() as api, kmock.Server(api, port=port):
        api.resources['v1/pods'] = kmock.ResourceInfo(
            kind='Pod', namespaced=True,
            verbs={'get', 'list', 'watch', 'create', 'update', 'patch', 'delete'})
        print('kmock listening on', port, flush=True)
        await asyncio.Event().wait()

asyncio.run(main(int(sys.argv[1])))
"#;

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

    fn pods_url(&self, namespace: &str) -> String {
        format!("{}/api/v1/namespaces/{namespace}/pods", self.url)
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
        let response = self
            .http
            .post(self.pods_url(namespace))
            .json(&pod)
            .send()
            .expect("POST pod to kmock");
        assert!(
            response.status().is_success(),
            "kmock create pod: {} {:?}",
            response.status(),
            response.text()
        );
    }

    /// Changes a pod's `status.phase` (a MODIFIED event).
    pub fn set_phase(&self, namespace: &str, name: &str, phase: &str) {
        let patch = json!({
            "metadata": {"resourceVersion": self.next_version()},
            "status": {"phase": phase},
        });
        let response = self
            .http
            .patch(format!("{}/{name}", self.pods_url(namespace)))
            .header("content-type", "application/merge-patch+json")
            .body(patch.to_string())
            .send()
            .expect("PATCH pod on kmock");
        assert!(
            response.status().is_success(),
            "kmock patch pod: {} {:?}",
            response.status(),
            response.text()
        );
    }

    /// Deletes a pod (a DELETED event).
    pub fn delete_pod(&self, namespace: &str, name: &str) {
        let response = self
            .http
            .delete(format!("{}/{name}", self.pods_url(namespace)))
            .send()
            .expect("DELETE pod on kmock");
        assert!(
            response.status().is_success(),
            "kmock delete pod: {} {:?}",
            response.status(),
            response.text()
        );
    }

    /// The pods kmock lists in `namespace` (to check the fake itself).
    pub fn pod_names(&self, namespace: &str) -> Vec<String> {
        let list: Value = self
            .http
            .get(self.pods_url(namespace))
            .send()
            .and_then(|r| r.json())
            .expect("list pods on kmock");
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
            .collect()
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
