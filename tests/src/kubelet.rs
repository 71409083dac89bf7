//! A kubelet stand-in: runs pod objects from the (fake) API server the way
//! a kubelet would, through podman.
//!
//! ```text
//! let kubelet = Kubelet::new(kube.client(), podman);
//! let outcome = kubelet.run_pod(&pod, Duration::from_secs(120));
//! assert!(outcome.succeeded(), "{}", outcome.describe());
//! ```
//!
//! For one pod ([`Kubelet::start_pod`] / [`Kubelet::run_pod`]) it:
//!
//! 1. makes each volume under its node folder: `emptyDir` as a folder (mode
//!    0777), `secret` and `configMap` from the API's objects (waiting up to
//!    20 s for them, as a kubelet retries a mount) with their `items`,
//!    `defaultMode` and per-item modes, `hostPath` below
//!    [`Kubelet::host_path`] (`DirectoryOrCreate` creates it root-owned
//!    0755, as a kubelet does), `persistentVolumeClaim` as a folder per claim.
//!    With a pod `fsGroup`, volumes get that group the way the kubelet's
//!    ownership pass gives it (files `|= 0440` read-only or `0660`, folders
//!    setgid);
//! 2. runs the init containers one after another, each to completion, and
//!    stops at the first that fails: the pod is `Failed` with that
//!    container's exit code and termination message;
//! 3. then runs every main container at once, with httpGet/tcpSocket
//!    readiness probes deciding the pod's `Ready` condition.
//!
//! Each container gets the pod's command and args (`$(VAR)` expanded), its
//! env (`value`, `fieldRef`, `secretKeyRef`, `configMapKeyRef`, `envFrom`),
//! its mounts (with `subPath` and `readOnly`), `runAsUser`/`runAsGroup`,
//! `fsGroup` and supplemental groups as extra groups, `runAsNonRoot`
//! (refused like a kubelet when the user would be root),
//! `readOnlyRootFilesystem` (without podman's extra tmpfs mounts: a real
//! pod has none), dropped/added capabilities, `allowPrivilegeEscalation:
//! false`, and a fresh file at `terminationMessagePath` whose contents
//! become the container's termination message (`FallbackToLogsOnError`
//! takes the log's tail when a failed container wrote none). Every
//! Service of the pod's namespace resolves to 127.0.0.1 (`--add-host`),
//! standing in for cluster DNS: all pods share the host's network here.
//!
//! Images: ours (`ghcr.io/ferry-dev/*`, built by `deploy/images/build.sh`)
//! run from podman's local storage. Any other image must be registered as a
//! [`StandInImage`]: the host's own file system as the container's root
//! (`podman --rootfs /:O`, an overlay whose writes vanish with the
//! container) with the entrypoint, user, working dir and env the real image
//! would have. That is how the Spark image is played (see
//! [`crate::spark_image`]); say so in any test that relies on it.
//!
//! Status goes back to the API as a kubelet reports it (a merge patch of
//! `status`: phase, podIP 127.0.0.1, conditions, init and container
//! statuses with exit codes, reasons and messages). A pod deleted from the
//! API (or given a `deletionTimestamp`) has its containers stopped: SIGTERM,
//! then SIGKILL after `terminationGracePeriodSeconds`. [`Kubelet::serve`]
//! watches a namespace and runs every pod that matches a label selector,
//! as Spark's executor pods appear.
//!
//! Not a kubelet: no restarts (`restartPolicy` is read only for phases), no
//! resource limits, no sidecars, no exec probes, no image pulls, no
//! projected or downward-API volumes, no service-account token
//! injection (there is no admission controller either), one shared network.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::core::v1::{
    Container, EnvVar, HostPathVolumeSource, KeyToPath, Pod, PodSpec, Probe, Volume,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};

use crate::kube_mock::{KubeClient, KubeMock};
use crate::podman::{Podman, is_ferry_image};

/// How long a volume waits for its Secret or ConfigMap to appear.
const MOUNT_WAIT: Duration = Duration::from_secs(20);
/// Kubernetes keeps at most this much of a termination message file.
const MESSAGE_LIMIT: usize = 4096;
/// `FallbackToLogsOnError` takes at most this many lines and bytes of log.
const FALLBACK_LINES: usize = 80;
const FALLBACK_BYTES: usize = 2048;

/// An image this machine cannot pull, played by the host's file system
/// (`podman --rootfs /:O`) with what the real image would set.
#[derive(Debug, Clone, Default)]
pub struct StandInImage {
    /// The image's ENTRYPOINT (a pod's `command` replaces it).
    pub entrypoint: Vec<String>,
    /// The image's USER, `uid[:gid]`.
    pub user: Option<String>,
    /// The image's WORKDIR.
    pub working_dir: Option<String>,
    /// The image's ENV (the pod's env is added after it).
    pub env: Vec<(String, String)>,
    /// Folders the image has and the host lacks (its WORKDIR, say): each
    /// becomes a fresh folder per container, `(path, uid, gid, mode)`.
    pub dirs: Vec<(String, u32, u32, u32)>,
    /// Host files the image carries (an entrypoint script, say), mounted
    /// read-only: `(host file, path in the container)`.
    pub files: Vec<(PathBuf, String)>,
}

/// How one container ended.
#[derive(Debug, Clone)]
pub struct ContainerOutcome {
    pub name: String,
    /// The process's exit code; `None` when it never started (bad config,
    /// unknown image, a volume that could not be made).
    pub exit_code: Option<i32>,
    /// `Completed`, `Error`, `CreateContainerConfigError`, `ErrImageNeverPull`,
    /// `FailedMount` or `Killed`.
    pub reason: String,
    /// The termination message, as `kubectl describe pod` shows it.
    pub message: String,
    /// stdout and stderr, interleaved.
    pub log: String,
}

impl ContainerOutcome {
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0)
    }
}

/// How a pod ended.
#[derive(Debug, Clone)]
pub struct PodOutcome {
    pub namespace: String,
    pub name: String,
    /// `Succeeded` or `Failed`.
    pub phase: String,
    /// The init containers that ran, in order (the last one failed if the
    /// pod failed during init).
    pub init: Vec<ContainerOutcome>,
    /// The main containers, empty when an init container failed.
    pub containers: Vec<ContainerOutcome>,
    /// Whether the pod was ever Ready (probes passed, or none).
    pub was_ready: bool,
}

impl PodOutcome {
    pub fn succeeded(&self) -> bool {
        self.phase == "Succeeded"
    }

    /// The init container `name`; panics when it did not run.
    pub fn init(&self, name: &str) -> &ContainerOutcome {
        self.init
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("init container {name} did not run:\n{}", self.describe()))
    }

    /// The main container `name`; panics when it did not run.
    pub fn container(&self, name: &str) -> &ContainerOutcome {
        self.containers
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("container {name} did not run:\n{}", self.describe()))
    }

    /// Every container's end and log, for assertion messages.
    pub fn describe(&self) -> String {
        let mut text = format!("pod {}/{}: {}\n", self.namespace, self.name, self.phase);
        for (kind, list) in [("init", &self.init), ("container", &self.containers)] {
            for c in list {
                text.push_str(&format!(
                    "--- {kind} {}: exit {:?}, {}\n    message: {}\n{}\n",
                    c.name, c.exit_code, c.reason, c.message, c.log
                ));
            }
        }
        text
    }
}

/// The kubelet stand-in; cheap to clone (shared state).
#[derive(Clone)]
pub struct Kubelet {
    inner: Arc<Inner>,
}

struct Inner {
    api: KubeClient,
    podman: Podman,
    node: tempfile::TempDir,
    images: Mutex<BTreeMap<String, StandInImage>>,
    /// Service names that resolve somewhere other than 127.0.0.1.
    routes: Mutex<BTreeMap<String, String>>,
    /// Containers that may still run, killed on drop.
    live: Mutex<BTreeSet<String>>,
    next: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let live = std::mem::take(&mut *self.live.lock().unwrap_or_else(|e| e.into_inner()));
        for name in live {
            self.podman.remove(&name);
        }
    }
}

/// A pod being run; [`RunningPod::wait`] gives its outcome.
pub struct RunningPod {
    pub namespace: String,
    pub name: String,
    state: Arc<PodState>,
    thread: Option<JoinHandle<PodOutcome>>,
    kubelet: Kubelet,
}

#[derive(Default)]
struct PodState {
    ready: AtomicBool,
    /// Set to stop the main containers (SIGTERM, then SIGKILL after grace).
    terminate: AtomicBool,
    /// Podman names of the main containers started so far.
    containers: Mutex<Vec<String>>,
    /// The init container running now, if any.
    init: Mutex<Option<String>>,
}

impl PodState {
    /// Sends `signal` to the running init container and every main one.
    fn signal_all(&self, podman: &Podman, signal: &str) {
        let init = self.init.lock().unwrap().clone();
        for name in init.iter().chain(self.containers.lock().unwrap().iter()) {
            podman.signal(name, signal);
        }
    }
}

impl RunningPod {
    /// Whether the pod is Ready now (its main containers run and their
    /// readiness probes pass).
    pub fn is_ready(&self) -> bool {
        self.state.ready.load(Ordering::SeqCst)
    }

    /// Waits up to `limit` for the pod to be Ready.
    pub fn wait_ready(&self, limit: Duration) -> bool {
        crate::wait_until(limit, || self.is_ready() || self.is_finished()) && self.is_ready()
    }

    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops the pod as a deletion would: SIGTERM to every main container,
    /// SIGKILL after the pod's `terminationGracePeriodSeconds`.
    pub fn terminate(&self) {
        self.state.terminate.store(true, Ordering::SeqCst);
    }

    /// The podman names of the main containers started so far (for
    /// `podman container inspect`).
    pub fn containers(&self) -> Vec<String> {
        self.state.containers.lock().unwrap().clone()
    }

    /// Sends `signal` ("TERM", "KILL", ...) to every running container.
    pub fn signal(&self, signal: &str) {
        self.state.signal_all(&self.kubelet.inner.podman, signal);
    }

    /// Waits for the pod to end; after `limit` it is killed and the outcome
    /// says so (reason `Killed`).
    pub fn wait(mut self, limit: Duration) -> PodOutcome {
        let deadline = Instant::now() + limit;
        while !self.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if !self.is_finished() {
            self.state.terminate.store(true, Ordering::SeqCst);
            self.signal("KILL");
        }
        let thread = self.thread.take().expect("waited once");
        thread.join().unwrap_or_else(|panic| {
            std::panic::resume_unwind(panic);
        })
    }
}

impl Drop for RunningPod {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.state.terminate.store(true, Ordering::SeqCst);
            self.signal("KILL");
        }
    }
}

/// Pods [`Kubelet::serve`] runs as they appear.
pub struct Serving {
    /// Set by [`Serving::stop`]: how long the started pods may still run,
    /// in milliseconds (`u64::MAX` while serving).
    grace: Arc<AtomicU64>,
    thread: Option<JoinHandle<Vec<PodOutcome>>>,
}

impl Serving {
    /// Stops watching, waits up to `limit` for the pods it started (they end
    /// when their containers do, or when they are deleted), kills the rest,
    /// and returns every outcome.
    pub fn stop(mut self, limit: Duration) -> Vec<PodOutcome> {
        let millis = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX - 1);
        self.grace.store(millis, Ordering::SeqCst);
        let thread = self.thread.take().expect("stopped once");
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        // Dropped without stop(): the pods are killed right away.
        self.grace.store(0, Ordering::SeqCst);
    }
}

impl Kubelet {
    pub fn new(api: KubeClient, podman: Podman) -> Self {
        remove_orphans(&podman);
        Self {
            inner: Arc::new(Inner {
                api,
                podman,
                node: tempfile::tempdir().expect("node folder"),
                images: Mutex::new(BTreeMap::new()),
                routes: Mutex::new(BTreeMap::new()),
                live: Mutex::new(BTreeSet::new()),
                next: AtomicU64::new(1),
            }),
        }
    }

    /// Registers how to run `image`, which cannot be pulled here.
    pub fn with_image(self, image: &str, stand_in: StandInImage) -> Self {
        self.inner
            .images
            .lock()
            .unwrap()
            .insert(image.to_owned(), stand_in);
        self
    }

    /// Makes Service `name` resolve to `ip` in containers started from now
    /// on (all Services resolve to 127.0.0.1 otherwise), as a Service's
    /// address leads to a proxy: e.g. another loopback address where a
    /// [`crate::relay::CountingRelay`] listens.
    pub fn route_service(&self, name: &str, ip: &str) {
        self.inner
            .routes
            .lock()
            .unwrap()
            .insert(name.to_owned(), ip.to_owned());
    }

    /// Where a `hostPath` volume's `path` lives on this stand-in node.
    pub fn host_path(&self, path: &str) -> PathBuf {
        self.inner
            .node
            .path()
            .join("host")
            .join(path.trim_start_matches('/'))
    }

    /// Where a `persistentVolumeClaim` volume's claim keeps its files.
    pub fn claim_path(&self, claim: &str) -> PathBuf {
        self.inner.node.path().join("claims").join(claim)
    }

    /// The API client this kubelet reports to.
    pub fn api(&self) -> &KubeClient {
        &self.inner.api
    }

    pub fn podman(&self) -> &Podman {
        &self.inner.podman
    }

    /// Starts running `pod` (as stored in the API: namespace and name set).
    pub fn start_pod(&self, pod: &Pod) -> RunningPod {
        let namespace = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = pod.metadata.name.clone().expect("a pod has a name");
        let state = Arc::new(PodState::default());
        let kubelet = self.clone();
        let run = Run {
            kubelet: self.clone(),
            pod: pod.clone(),
            namespace: namespace.clone(),
            name: name.clone(),
            dir: self.inner.node.path().join("pods").join(format!(
                "{namespace}_{name}_{}",
                self.inner.next.fetch_add(1, Ordering::Relaxed)
            )),
            state: state.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("kubelet-{name}"))
            .spawn(move || run.run())
            .expect("spawn the pod's thread");
        RunningPod {
            namespace,
            name,
            state,
            thread: Some(thread),
            kubelet,
        }
    }

    /// Runs `pod` to its end (killed after `limit`).
    pub fn run_pod(&self, pod: &Pod, limit: Duration) -> PodOutcome {
        self.start_pod(pod).wait(limit)
    }

    /// Fetches the pod `namespace/name` from the API and runs it.
    pub fn run_stored_pod(&self, namespace: &str, name: &str, limit: Duration) -> PodOutcome {
        let pod = self
            .stored_pod(namespace, name)
            .unwrap_or_else(|| panic!("pod {namespace}/{name} is not in the API server"));
        self.run_pod(&pod, limit)
    }

    /// The pod as the API has it now.
    pub fn stored_pod(&self, namespace: &str, name: &str) -> Option<Pod> {
        self.inner
            .api
            .get(&KubeMock::path(namespace, "pods", name))
            .map(|v| serde_json::from_value(v).expect("the API's pod parses as a Pod"))
    }

    /// Watches `namespace` (every 200 ms) and runs each new pod whose labels
    /// match `selector` (`k=v,...`), until [`Serving::stop`].
    pub fn serve(&self, namespace: &str, selector: &str) -> Serving {
        let grace = Arc::new(AtomicU64::new(u64::MAX));
        let kubelet = self.clone();
        let (namespace, selector) = (namespace.to_owned(), selector.to_owned());
        let stopping = grace.clone();
        let thread = std::thread::spawn(move || {
            let mut seen = BTreeSet::new();
            let mut running: Vec<RunningPod> = Vec::new();
            while stopping.load(Ordering::SeqCst) == u64::MAX {
                for value in kubelet.inner.api.list(&namespace, "pods", Some(&selector)) {
                    let pod: Pod = serde_json::from_value(value).expect("pod parses");
                    let Some(uid) = pod.metadata.uid.clone() else {
                        continue;
                    };
                    if seen.insert(uid) {
                        running.push(kubelet.start_pod(&pod));
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            let deadline = Instant::now() + Duration::from_millis(stopping.load(Ordering::SeqCst));
            running
                .into_iter()
                .map(|pod| pod.wait(deadline.saturating_duration_since(Instant::now())))
                .collect()
        });
        Serving {
            grace,
            thread: Some(thread),
        }
    }
}

/// One pod's run, on its own thread.
struct Run {
    kubelet: Kubelet,
    pod: Pod,
    namespace: String,
    name: String,
    dir: PathBuf,
    state: Arc<PodState>,
}

/// A made volume: its host folder (or file) and whether Kubernetes mounts
/// it read-only whatever the mount says.
#[derive(Clone)]
struct MadeVolume {
    path: PathBuf,
    always_read_only: bool,
}

impl Run {
    fn api(&self) -> &KubeClient {
        &self.kubelet.inner.api
    }

    fn pod_path(&self) -> String {
        KubeMock::path(&self.namespace, "pods", &self.name)
    }

    fn report(&self, status: Value) {
        // The pod may be gone already (deleted by its owner); a kubelet's
        // status write then fails the same way and is dropped.
        let _ = self.api().merge_patch(
            &format!("{}/status", self.pod_path()),
            &json!({ "status": status }),
        );
    }

    fn run(self) -> PodOutcome {
        std::fs::create_dir_all(&self.dir).expect("pod folder");
        let spec = self.pod.spec.clone().unwrap_or_default();
        let mut outcome = PodOutcome {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            phase: "Failed".into(),
            init: Vec::new(),
            containers: Vec::new(),
            was_ready: false,
        };
        let inits = spec.init_containers.clone().unwrap_or_default();
        self.report(json!({
            "phase": "Pending", "hostIP": "127.0.0.1", "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}], "startTime": now(),
            "conditions": conditions(false, false),
            "initContainerStatuses": waiting("PodInitializing", &inits),
            "containerStatuses": waiting("PodInitializing", &spec.containers),
        }));
        let volumes = match self.make_volumes(spec.volumes.as_deref().unwrap_or_default()) {
            Ok(volumes) => volumes,
            Err(message) => {
                outcome.containers.push(ContainerOutcome {
                    name: spec
                        .containers
                        .first()
                        .map(|c| c.name.clone())
                        .unwrap_or_default(),
                    exit_code: None,
                    reason: "FailedMount".into(),
                    message: message.clone(),
                    log: String::new(),
                });
                self.report(
                    json!({"phase": "Failed", "reason": "FailedMount", "message": message}),
                );
                return outcome;
            }
        };
        if self.run_inits(&spec, &inits, &volumes, &mut outcome) {
            self.run_mains(&spec, &volumes, &mut outcome);
        }
        outcome
    }

    /// Runs the init containers in order; false (the pod `Failed`, as
    /// reported) at the first that fails.
    fn run_inits(
        &self,
        spec: &PodSpec,
        inits: &[Container],
        volumes: &BTreeMap<String, MadeVolume>,
        outcome: &mut PodOutcome,
    ) -> bool {
        let mut statuses = Vec::new();
        for (i, container) in inits.iter().enumerate() {
            let result = self.run_container(container, spec, volumes, "init");
            statuses.push(terminated_status(container, &result));
            let failed = !result.succeeded();
            outcome.init.push(result);
            let mut all = statuses.clone();
            all.extend(waiting("PodInitializing", &inits[i + 1..]));
            if failed {
                self.report(json!({
                    "phase": "Failed", "conditions": conditions(false, false),
                    "initContainerStatuses": all,
                    "containerStatuses": waiting("PodInitializing", &spec.containers),
                }));
                return false;
            }
            self.report(json!({"initContainerStatuses": all}));
        }
        true
    }

    /// Runs every main container at once until all have ended, reporting
    /// readiness and stopping them when the pod is deleted.
    fn run_mains(
        &self,
        spec: &PodSpec,
        volumes: &BTreeMap<String, MadeVolume>,
        outcome: &mut PodOutcome,
    ) {
        let mains: Vec<(Container, JoinHandle<ContainerOutcome>)> = spec
            .containers
            .iter()
            .map(|container| {
                let run = self.clone_for_thread();
                let (c, s, v) = (container.clone(), spec.clone(), volumes.clone());
                let handle = std::thread::spawn(move || run.run_container(&c, &s, &v, "main"));
                (container.clone(), handle)
            })
            .collect();
        self.supervise(spec, &mains, outcome);
        self.state.ready.store(false, Ordering::SeqCst);
        let mut statuses = Vec::new();
        for (container, handle) in mains {
            let result = handle
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p));
            statuses.push(terminated_status(&container, &result));
            outcome.containers.push(result);
        }
        let all_ok = outcome.containers.iter().all(ContainerOutcome::succeeded);
        outcome.phase = if all_ok { "Succeeded" } else { "Failed" }.into();
        self.report(json!({
            "phase": outcome.phase, "conditions": conditions(true, false),
            "containerStatuses": statuses,
        }));
    }

    /// While the main containers run: Ready once every one has started and
    /// every readiness probe answers (or there are none); a pod deleted
    /// from the API (or terminated by the test) gets SIGTERM, then SIGKILL
    /// after its `terminationGracePeriodSeconds`.
    fn supervise(
        &self,
        spec: &PodSpec,
        mains: &[(Container, JoinHandle<ContainerOutcome>)],
        outcome: &mut PodOutcome,
    ) {
        let running: Vec<Value> = spec
            .containers
            .iter()
            .map(|c| {
                json!({"name": c.name, "image": c.image, "imageID": "", "ready": true,
                       "restartCount": 0, "started": true,
                       "state": {"running": {"startedAt": now()}}})
            })
            .collect();
        let probes: Vec<(&Probe, &Container)> = spec
            .containers
            .iter()
            .filter_map(|c| c.readiness_probe.as_ref().map(|p| (p, c)))
            .collect();
        let grace_seconds = spec.termination_grace_period_seconds.unwrap_or(30);
        let grace = Duration::from_secs(grace_seconds.try_into().unwrap_or(30));
        let (mut ready, mut reported) = (false, false);
        let mut terminating_since: Option<Instant> = None;
        let mut last_api_check = Instant::now();
        while mains.iter().any(|(_, h)| !h.is_finished()) {
            let started = self.state.containers.lock().unwrap().len() == spec.containers.len();
            let now_ready = started && probes.iter().all(|(p, c)| probe_passes(p, c));
            if now_ready != ready || (started && !reported) {
                ready = now_ready;
                reported = started;
                outcome.was_ready |= ready;
                self.state.ready.store(ready, Ordering::SeqCst);
                self.report(json!({
                    "phase": "Running", "conditions": conditions(true, ready),
                    "containerStatuses": running,
                }));
            }
            if last_api_check.elapsed() > Duration::from_millis(500) {
                last_api_check = Instant::now();
                let deleted = self
                    .api()
                    .get(&self.pod_path())
                    .is_none_or(|pod| !pod["metadata"]["deletionTimestamp"].is_null());
                if deleted {
                    self.state.terminate.store(true, Ordering::SeqCst);
                }
            }
            if self.state.terminate.load(Ordering::SeqCst) {
                let since = *terminating_since.get_or_insert_with(|| {
                    self.signal_mains("TERM");
                    Instant::now()
                });
                if since.elapsed() > grace {
                    self.signal_mains("KILL");
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn signal_mains(&self, signal: &str) {
        self.state.signal_all(&self.kubelet.inner.podman, signal);
    }

    fn clone_for_thread(&self) -> Run {
        Run {
            kubelet: self.kubelet.clone(),
            pod: self.pod.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            dir: self.dir.clone(),
            state: self.state.clone(),
        }
    }

    fn fs_group(&self) -> Option<u32> {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.as_ref())
            .and_then(|s| s.fs_group)
            .and_then(|g| u32::try_from(g).ok())
    }

    fn make_volumes(&self, volumes: &[Volume]) -> Result<BTreeMap<String, MadeVolume>, String> {
        volumes
            .iter()
            .map(|volume| Ok((volume.name.clone(), self.make_volume(volume)?)))
            .collect()
    }

    fn make_volume(&self, volume: &Volume) -> Result<MadeVolume, String> {
        let folder = self.dir.join("volumes").join(&volume.name);
        let fs_group = self.fs_group();
        let made = |path: PathBuf, always_read_only: bool| {
            Ok(MadeVolume {
                path,
                always_read_only,
            })
        };
        if volume.empty_dir.is_some() {
            make_dir(&folder, 0o777);
            apply_fs_group(&folder, fs_group, false);
            return made(folder, false);
        }
        if let Some(secret) = &volume.secret {
            let name = secret.secret_name.as_deref().unwrap_or_default();
            let object = self.wait_for("secrets", name, secret.optional == Some(true))?;
            let data = decode_all(object.as_ref().and_then(|o| o["data"].as_object()));
            let items = key_paths(secret.items.as_deref());
            write_projection(&folder, &data, items, secret.default_mode)?;
            apply_fs_group(&folder, fs_group, true);
            return made(folder, true);
        }
        if let Some(config_map) = &volume.config_map {
            let optional = config_map.optional == Some(true);
            let object = self.wait_for("configmaps", &config_map.name, optional)?;
            let text = object.as_ref().and_then(|o| o["data"].as_object());
            let mut data: BTreeMap<String, Vec<u8>> = text
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().into()))
                .collect();
            data.extend(decode_all(
                object.as_ref().and_then(|o| o["binaryData"].as_object()),
            ));
            let items = key_paths(config_map.items.as_deref());
            write_projection(&folder, &data, items, config_map.default_mode)?;
            apply_fs_group(&folder, fs_group, true);
            return made(folder, true);
        }
        if let Some(host) = &volume.host_path {
            return made(self.make_host_path(host)?, false);
        }
        if let Some(claim) = &volume.persistent_volume_claim {
            let path = self.kubelet.claim_path(&claim.claim_name);
            if !path.exists() {
                make_dir(&path, 0o755);
            }
            apply_fs_group(&path, fs_group, false);
            return made(path, false);
        }
        Err(format!(
            "volume {}: only emptyDir, secret, configMap, hostPath and persistentVolumeClaim are made by this stand-in",
            volume.name
        ))
    }

    /// A hostPath on this node, checked or created by its `type` as a
    /// kubelet does (creating as itself: root, 0755 for a folder).
    fn make_host_path(&self, host: &HostPathVolumeSource) -> Result<PathBuf, String> {
        let on_node = self.kubelet.host_path(&host.path);
        let exists = on_node.exists();
        match host.type_.as_deref().unwrap_or("") {
            "DirectoryOrCreate" | "" if !exists => make_dir(&on_node, 0o755),
            "FileOrCreate" if !exists => {
                std::fs::create_dir_all(on_node.parent().expect("parent")).expect("mkdir");
                std::fs::write(&on_node, b"").expect("create hostPath file");
                set_mode(&on_node, 0o644);
            }
            "Directory" if !on_node.is_dir() => {
                return Err(format!(
                    "hostPath type check failed: {} is not a directory",
                    host.path
                ));
            }
            "File" if !on_node.is_file() => {
                return Err(format!(
                    "hostPath type check failed: {} is not a file",
                    host.path
                ));
            }
            _ => {}
        }
        Ok(on_node)
    }

    /// The API's `plural/name` in the pod's namespace, waited for as a
    /// kubelet retries a mount; `Ok(None)` for a missing optional one.
    fn wait_for(&self, plural: &str, name: &str, optional: bool) -> Result<Option<Value>, String> {
        let path = KubeMock::path(&self.namespace, plural, name);
        let deadline = Instant::now() + if optional { Duration::ZERO } else { MOUNT_WAIT };
        loop {
            if let Some(object) = self.api().get(&path) {
                return Ok(Some(object));
            }
            if optional {
                return Ok(None);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "MountVolume.SetUp failed: {plural} \"{name}\" not found (after {MOUNT_WAIT:?})"
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs one container to its end through podman.
    fn run_container(
        &self,
        container: &Container,
        spec: &PodSpec,
        volumes: &BTreeMap<String, MadeVolume>,
        kind: &str,
    ) -> ContainerOutcome {
        let not_started = |reason: &str, message: String| ContainerOutcome {
            name: container.name.clone(),
            exit_code: None,
            reason: reason.into(),
            message,
            log: String::new(),
        };
        let image = container.image.clone().unwrap_or_default();
        let inner = &self.kubelet.inner;
        let stand_in = inner.images.lock().unwrap().get(&image).cloned();
        if stand_in.is_none() && !(is_ferry_image(&image) && inner.podman.image_exists(&image)) {
            return not_started(
                "ErrImageNeverPull",
                format!("image {image:?} is neither built here nor registered as a stand-in"),
            );
        }
        let env = match self.container_env(container, stand_in.as_ref()) {
            Ok(env) => env,
            Err(message) => return not_started("CreateContainerConfigError", message),
        };
        let podman_name = format!(
            "{}{}-{}-{}",
            name_prefix(),
            self.name.chars().take(40).collect::<String>(),
            container.name,
            inner.next.fetch_add(1, Ordering::Relaxed)
        );
        let dir = self.dir.join("containers").join(&podman_name);
        make_dir(&dir, 0o755);

        let mut args = self.pod_args(&podman_name);
        let configured = self
            .security_args(container, spec, &image, stand_in.as_ref())
            .and_then(|security| {
                args.extend(security);
                mount_args(container, volumes)
            });
        match configured {
            Ok(mounts) => args.extend(mounts),
            Err(message) => return not_started("CreateContainerConfigError", message),
        }
        args.extend(
            env.iter()
                .map(|(key, value)| format!("--env={key}={value}")),
        );
        // The termination message file, fresh and writable by any user of
        // the container, as on a node.
        let message_file = dir.join("termination-log");
        std::fs::write(&message_file, b"").expect("create termination-log");
        set_mode(&message_file, 0o666);
        let message_path = container
            .termination_message_path
            .as_deref()
            .unwrap_or("/dev/termination-log");
        args.push(format!(
            "--volume={}:{message_path}",
            message_file.display()
        ));
        args.extend(image_args(container, &image, stand_in.as_ref(), &env, &dir));

        let log_path = dir.join("log");
        let log = std::fs::File::create(&log_path).expect("container log");
        let mut child = inner
            .podman
            .command()
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start podman for {}: {e}", container.name));
        inner.live.lock().unwrap().insert(podman_name.clone());
        if kind == "main" {
            let mut mains = self.state.containers.lock().unwrap();
            mains.push(podman_name.clone());
        } else {
            *self.state.init.lock().unwrap() = Some(podman_name.clone());
        }
        let status = child.wait().expect("wait for podman");
        inner.live.lock().unwrap().remove(&podman_name);
        self.state.init.lock().unwrap().take();

        let mut outcome = not_started("", String::new());
        outcome.log = std::fs::read_to_string(&log_path).unwrap_or_default();
        // No code: killed by a signal (SIGKILL after the grace period).
        outcome.exit_code = Some(status.code().unwrap_or(137));
        let killed = self.state.terminate.load(Ordering::SeqCst);
        outcome.reason = match status.code() {
            Some(0) => "Completed".into(),
            _ if killed => "Killed".into(),
            _ => "Error".into(),
        };
        let mut message = std::fs::read(&message_file).unwrap_or_default();
        message.truncate(MESSAGE_LIMIT);
        outcome.message = String::from_utf8_lossy(&message).into_owned();
        let fallback =
            container.termination_message_policy.as_deref() == Some("FallbackToLogsOnError");
        if outcome.message.is_empty() && fallback && !outcome.succeeded() {
            outcome.message = log_tail(&outcome.log);
        }
        outcome
    }

    /// What every container of the pod shares: the host's network with the
    /// pod's host name, and cluster DNS as /etc/hosts entries.
    fn pod_args(&self, podman_name: &str) -> Vec<String> {
        let hostname: String = self.name.chars().take(63).collect();
        let mut args: Vec<String> = vec![
            "run".into(),
            "--rm".into(),
            format!("--name={podman_name}"),
            "--network=host".into(),
            format!("--hostname={hostname}"),
            // A kubelet's /etc/hosts names the pod itself (Java looks its
            // host name up).
            format!("--add-host={hostname}:127.0.0.1"),
            // Without both, runc's setrlimit fails here; neither may exceed
            // what this process holds.
            format!("--ulimit=nofile={0}:{0}", open_files_limit()),
            "--ulimit=nproc=4096:4096".into(),
            "--log-driver=none".into(),
        ];
        let routes = self.kubelet.inner.routes.lock().unwrap().clone();
        let ns = &self.namespace;
        for service in self.api().list(ns, "services", None) {
            let Some(svc) = service["metadata"]["name"].as_str() else {
                continue;
            };
            let ip = routes.get(svc).map_or("127.0.0.1", String::as_str);
            for host in [
                svc.to_owned(),
                format!("{svc}.{ns}"),
                format!("{svc}.{ns}.svc"),
                format!("{svc}.{ns}.svc.cluster.local"),
            ] {
                args.push(format!("--add-host={host}:{ip}"));
            }
        }
        args
    }

    /// User, groups, read-only root and capabilities from the pod's and the
    /// container's security contexts; refuses a root user under
    /// `runAsNonRoot` as a kubelet does.
    fn security_args(
        &self,
        container: &Container,
        spec: &PodSpec,
        image: &str,
        stand_in: Option<&StandInImage>,
    ) -> Result<Vec<String>, String> {
        let pod = spec.security_context.clone().unwrap_or_default();
        let security = container.security_context.clone().unwrap_or_default();
        let image_user = match stand_in {
            Some(s) => s.user.clone().unwrap_or_default(),
            None => self.kubelet.inner.podman.inspect_image(image)["Config"]["User"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        };
        let image_uid = image_user.split(':').next().unwrap_or_default();
        let run_as_user = security.run_as_user.or(pod.run_as_user);
        let run_as_group = security.run_as_group.or(pod.run_as_group);
        let uid = run_as_user.map_or_else(|| image_uid.to_owned(), |u| u.to_string());
        let non_root = security.run_as_non_root.or(pod.run_as_non_root) == Some(true);
        if non_root && matches!(uid.as_str(), "" | "0" | "root") {
            return Err("container has runAsNonRoot and image will run as root".into());
        }
        let mut args = Vec::new();
        match (run_as_user, run_as_group) {
            (Some(u), Some(g)) => args.push(format!("--user={u}:{g}")),
            (Some(u), None) => args.push(format!("--user={u}")),
            (None, Some(g)) => {
                let uid = Some(image_uid).filter(|u| !u.is_empty()).unwrap_or("0");
                args.push(format!("--user={uid}:{g}"));
            }
            (None, None) if !image_user.is_empty() => args.push(format!("--user={image_user}")),
            (None, None) => {}
        }
        let groups = pod
            .fs_group
            .into_iter()
            .chain(pod.supplemental_groups.into_iter().flatten());
        args.extend(groups.map(|group| format!("--group-add={group}")));
        if security.read_only_root_filesystem == Some(true) {
            args.push("--read-only".into());
            // A pod's read-only root has no writable /tmp or /run unless a
            // volume is mounted there; podman would add tmpfs mounts.
            args.push("--read-only-tmpfs=false".into());
        }
        if security.allow_privilege_escalation == Some(false) {
            args.push("--security-opt=no-new-privileges".into());
        }
        if let Some(capabilities) = &security.capabilities {
            let drop = capabilities.drop.iter().flatten();
            args.extend(drop.map(|cap| format!("--cap-drop={cap}")));
            let add = capabilities.add.iter().flatten();
            args.extend(add.map(|cap| format!("--cap-add={cap}")));
        }
        Ok(args)
    }

    /// The container's environment: the stand-in image's, then the pod's
    /// (`value` with `$(VAR)` expanded, `valueFrom`, `envFrom`).
    fn container_env(
        &self,
        container: &Container,
        stand_in: Option<&StandInImage>,
    ) -> Result<Vec<(String, String)>, String> {
        let mut env: Vec<(String, String)> = stand_in.map(|s| s.env.clone()).unwrap_or_default();
        let set = |env: &mut Vec<(String, String)>, key: String, value: String| {
            env.retain(|(k, _)| *k != key);
            env.push((key, value));
        };
        for from in container.env_from.iter().flatten() {
            let prefix = from.prefix.clone().unwrap_or_default();
            let (plural, name, optional, binary) = if let Some(r) = &from.config_map_ref {
                (
                    "configmaps",
                    r.name.clone(),
                    r.optional == Some(true),
                    false,
                )
            } else if let Some(r) = &from.secret_ref {
                ("secrets", r.name.clone(), r.optional == Some(true), true)
            } else {
                continue;
            };
            let object = self.wait_for(plural, &name, optional)?;
            let data = object.as_ref().and_then(|o| o["data"].as_object()).cloned();
            for (key, value) in data.into_iter().flatten() {
                let value = if binary {
                    decode(value.as_str().unwrap_or_default())
                } else {
                    value.as_str().unwrap_or_default().to_owned()
                };
                set(&mut env, format!("{prefix}{key}"), value);
            }
        }
        for var in container.env.iter().flatten() {
            let value = self.env_value(var, &env)?;
            set(&mut env, var.name.clone(), value);
        }
        Ok(env)
    }

    fn env_value(&self, var: &EnvVar, env: &[(String, String)]) -> Result<String, String> {
        if let Some(value) = &var.value {
            return Ok(expand_vars(value, env));
        }
        let Some(from) = &var.value_from else {
            return Ok(String::new());
        };
        if let Some(field) = &from.field_ref {
            let meta = &self.pod.metadata;
            let value = match field.field_path.as_str() {
                "metadata.name" => self.name.clone(),
                "metadata.namespace" => self.namespace.clone(),
                "metadata.uid" => meta.uid.clone().unwrap_or_default(),
                "status.podIP" | "status.hostIP" => "127.0.0.1".into(),
                "status.podIPs" | "status.hostIPs" => "127.0.0.1".into(),
                "spec.nodeName" => "stand-in-node".into(),
                "spec.serviceAccountName" => self
                    .pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.service_account_name.clone())
                    .unwrap_or_else(|| "default".into()),
                other => {
                    let label = other
                        .strip_prefix("metadata.labels['")
                        .and_then(|l| l.strip_suffix("']"));
                    match label {
                        Some(key) => meta
                            .labels
                            .as_ref()
                            .and_then(|l| l.get(key).cloned())
                            .unwrap_or_default(),
                        None => {
                            return Err(format!(
                                "env {}: fieldRef {other} is not supported here",
                                var.name
                            ));
                        }
                    }
                }
            };
            return Ok(value);
        }
        let (plural, name, key, optional, binary) = if let Some(r) = &from.secret_key_ref {
            (
                "secrets",
                r.name.clone(),
                r.key.clone(),
                r.optional == Some(true),
                true,
            )
        } else if let Some(r) = &from.config_map_key_ref {
            (
                "configmaps",
                r.name.clone(),
                r.key.clone(),
                r.optional == Some(true),
                false,
            )
        } else {
            return Err(format!(
                "env {}: only fieldRef, secretKeyRef and configMapKeyRef are supported here",
                var.name
            ));
        };
        let object = self.wait_for(plural, &name, optional)?;
        let raw = object
            .as_ref()
            .and_then(|o| o["data"][key.as_str()].as_str().map(str::to_owned));
        match raw {
            Some(raw) if binary => Ok(decode(&raw)),
            Some(raw) => Ok(raw),
            None if optional => Ok(String::new()),
            None => Err(format!(
                "couldn't find key {key} in {plural} {}/{name}",
                self.namespace
            )),
        }
    }
}

/// The container's volume mounts (`subPath` and `readOnly` honoured;
/// Secrets and ConfigMaps always read-only).
fn mount_args(
    container: &Container,
    volumes: &BTreeMap<String, MadeVolume>,
) -> Result<Vec<String>, String> {
    let mut args = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let volume = volumes
            .get(&mount.name)
            .ok_or_else(|| format!("volume mount {} names no volume", mount.name))?;
        let mut source = volume.path.clone();
        if let Some(sub) = mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
            source = source.join(sub);
            if !source.exists() {
                make_dir(&source, 0o755);
            }
        }
        let read_only = volume.always_read_only || mount.read_only == Some(true);
        args.push(format!(
            "--volume={}:{}{}",
            source.display(),
            mount.mount_path,
            if read_only { ":ro" } else { "" }
        ));
    }
    Ok(args)
}

/// The image and what to run in it: the pod's command (else the image's
/// entrypoint) and args, `$(VAR)` expanded, its working dir; a stand-in
/// image becomes the host's root as an overlay with the stand-in's folders,
/// files and defaults. `dir` is the container's folder on the node.
fn image_args(
    container: &Container,
    image: &str,
    stand_in: Option<&StandInImage>,
    env: &[(String, String)],
    dir: &Path,
) -> Vec<String> {
    let expand =
        |list: &[String]| -> Vec<String> { list.iter().map(|a| expand_vars(a, env)).collect() };
    let command = container.command.as_deref().map(expand);
    let mut args = Vec::new();
    let working_dir = container
        .working_dir
        .clone()
        .or_else(|| stand_in.and_then(|s| s.working_dir.clone()));
    if let Some(dir) = working_dir {
        args.push(format!("--workdir={dir}"));
    }
    let entrypoint = command.or_else(|| stand_in.map(|s| s.entrypoint.clone()));
    if let Some(entrypoint) = entrypoint {
        let json = serde_json::to_string(&entrypoint).expect("a list of strings is JSON");
        args.push(format!("--entrypoint={json}"));
    }
    match stand_in {
        Some(stand_in) => {
            for (path, uid, gid, mode) in &stand_in.dirs {
                let host = dir.join("image").join(path.trim_start_matches('/'));
                make_dir(&host, *mode);
                chown(&host, Some(*uid), Some(*gid)).expect("chown image folder");
                args.push(format!("--volume={}:{path}", host.display()));
            }
            for (host, path) in &stand_in.files {
                args.push(format!("--volume={}:{path}:ro", host.display()));
            }
            args.extend(["--rootfs".to_owned(), "/:O".to_owned()]);
        }
        None => args.push(image.to_owned()),
    }
    args.extend(expand(container.args.as_deref().unwrap_or_default()));
    args
}

/// Container names start with `kubelet-<pid of this test process>-`.
fn name_prefix() -> String {
    format!("kubelet-{}-", std::process::id())
}

/// Removes containers a test process that is gone left running (killed by
/// a test timeout before it could stop them): their names carry its pid.
fn remove_orphans(podman: &Podman) {
    let Ok(output) = podman
        .command()
        .args(["ps", "--all", "--format", "{{.Names}}"])
        .output()
    else {
        return;
    };
    for name in String::from_utf8_lossy(&output.stdout).lines() {
        let owner = name
            .strip_prefix("kubelet-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = owner
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            podman.remove(name);
        }
    }
}

/// `$(VAR)` → its value when `VAR` is defined; `$$(VAR)` → `$(VAR)`.
fn expand_vars(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(escaped) = after.strip_prefix("$(") {
            out.push_str("$(");
            rest = escaped;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
            && let Some((_, value)) = env.iter().rev().find(|(k, _)| *k == inner[..end])
        {
            out.push_str(value);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn decode(text: &str) -> String {
    String::from_utf8_lossy(&decode_bytes(text)).into_owned()
}

fn decode_bytes(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap_or_else(|e| panic!("the API holds invalid base64 ({e}): {text:?}"))
}

fn decode_all(data: Option<&serde_json::Map<String, Value>>) -> BTreeMap<String, Vec<u8>> {
    data.into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), decode_bytes(v.as_str().unwrap_or_default())))
        .collect()
}

/// A volume's `items` as (key, path, mode).
fn key_paths(items: Option<&[KeyToPath]>) -> Vec<(String, String, Option<i32>)> {
    items
        .unwrap_or_default()
        .iter()
        .map(|i| (i.key.clone(), i.path.clone(), i.mode))
        .collect()
}

/// Writes a Secret's or ConfigMap's keys as files (all of them, or the
/// listed `items` at their paths), each with its mode (default 0644).
fn write_projection(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Vec<(String, String, Option<i32>)>,
    default_mode: Option<i32>,
) -> Result<(), String> {
    let default_mode = default_mode.unwrap_or(0o644);
    make_dir(dir, 0o755);
    let files: Vec<(String, String, i32)> = if items.is_empty() {
        data.keys()
            .map(|k| (k.clone(), k.clone(), default_mode))
            .collect()
    } else {
        items
            .into_iter()
            .map(|(key, path, mode)| (key, path, mode.unwrap_or(default_mode)))
            .collect()
    };
    for (key, path, mode) in files {
        let bytes = data
            .get(&key)
            .ok_or_else(|| format!("MountVolume.SetUp failed: key {key} not found"))?;
        let file = dir.join(&path);
        std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
        std::fs::write(&file, bytes).expect("write projected file");
        set_mode(&file, u32::try_from(mode).unwrap_or(0o644));
    }
    Ok(())
}

/// The kubelet's ownership pass for a pod `fsGroup`: group set on
/// everything, files `|= 0440` (read-only volumes) or `0660`, folders also
/// setgid and searchable.
fn apply_fs_group(path: &Path, fs_group: Option<u32>, read_only: bool) {
    let Some(group) = fs_group else { return };
    let mask = if read_only { 0o440 } else { 0o660 };
    let mut stack = vec![path.to_path_buf()];
    while let Some(at) = stack.pop() {
        let meta = std::fs::symlink_metadata(&at).expect("stat volume entry");
        chown(&at, None, Some(group)).expect("chown to fsGroup");
        let mut mode = meta.permissions().mode() & 0o7777 | mask;
        if meta.is_dir() {
            mode |= 0o2000 | 0o111;
            for entry in std::fs::read_dir(&at)
                .expect("read volume folder")
                .flatten()
            {
                stack.push(entry.path());
            }
        }
        set_mode(&at, mode);
    }
}

fn make_dir(path: &Path, mode: u32) {
    std::fs::create_dir_all(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
    set_mode(path, mode);
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// What `FallbackToLogsOnError` keeps of a log: its last 80 lines, at most
/// 2048 bytes.
fn log_tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let mut tail = lines[lines.len().saturating_sub(FALLBACK_LINES)..].join("\n");
    if tail.len() > FALLBACK_BYTES {
        let mut cut = tail.len() - FALLBACK_BYTES;
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        tail = tail[cut..].to_owned();
    }
    tail
}

/// Whether a probe of `container` answers now (httpGet on 127.0.0.1: any
/// 2xx/3xx; tcpSocket: a connection). Other probe kinds never pass.
pub fn probe_passes(probe: &Probe, container: &Container) -> bool {
    let port = |port: &IntOrString| match port {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    };
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).try_into().unwrap_or(1));
    if let Some(http) = &probe.http_get {
        let Some(port) = port(&http.port) else {
            return false;
        };
        let url = format!(
            "http://127.0.0.1:{port}{}",
            http.path.as_deref().unwrap_or("/")
        );
        return reqwest::blocking::Client::builder()
            .timeout(timeout)
            .build()
            .ok()
            .and_then(|c| c.get(url).send().ok())
            .is_some_and(|r| r.status().is_success() || r.status().is_redirection());
    }
    if let Some(tcp) = &probe.tcp_socket {
        return port(&tcp.port).is_some_and(|p| {
            std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], p).into(), timeout).is_ok()
        });
    }
    false
}

/// This process's hard limit on open files (what a container may get).
fn open_files_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
            line.split_whitespace().nth(4)?.parse().ok()
        })
        .unwrap_or(1024)
}

/// Container statuses waiting for `reason`.
fn waiting(reason: &str, list: &[Container]) -> Vec<Value> {
    list.iter()
        .map(|c| {
            json!({"name": c.name, "image": c.image, "imageID": "", "ready": false,
                   "restartCount": 0, "state": {"waiting": {"reason": reason}}})
        })
        .collect()
}

fn conditions(initialized: bool, ready: bool) -> Value {
    let status = |b: bool| if b { "True" } else { "False" };
    json!([
        {"type": "PodScheduled", "status": "True"},
        {"type": "Initialized", "status": status(initialized)},
        {"type": "ContainersReady", "status": status(ready)},
        {"type": "Ready", "status": status(ready)},
    ])
}

fn terminated_status(container: &Container, outcome: &ContainerOutcome) -> Value {
    json!({
        "name": container.name, "image": container.image, "imageID": "",
        "ready": false, "restartCount": 0,
        "state": {"terminated": {
            "exitCode": outcome.exit_code.unwrap_or(128),
            "reason": outcome.reason,
            "message": outcome.message,
            "finishedAt": now(),
        }},
    })
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollar_parens_expand_defined_variables_only() {
        let env = vec![
            ("A".to_owned(), "1".to_owned()),
            ("B".to_owned(), "two".to_owned()),
        ];
        assert_eq!(expand_vars("x$(A)y$(B)", &env), "x1ytwo");
        assert_eq!(expand_vars("$(C) $$(A) $A", &env), "$(C) $(A) $A");
    }

    #[test]
    fn fallback_message_is_the_logs_tail() {
        let log: String = (0..200).map(|i| format!("line {i}\n")).collect();
        let tail = log_tail(&log);
        assert!(tail.ends_with("line 199"));
        assert!(!tail.contains("line 119\n"));
        assert!(tail.len() <= FALLBACK_BYTES);
    }
}
