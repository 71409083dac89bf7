//! deploy/ checked against the code it deploys.
//!
//! - Dockerfiles, read statically (no container engine runs here): pinned
//!   base images, a numeric non-root `USER`, an exec-form `ENTRYPOINT`, and
//!   every binary built and copied is a `[[bin]]` the workspace has
//!   (`cargo metadata`).
//! - Kustomize overlays, rendered with the real `kubectl kustomize` and
//!   parsed into k8s-openapi types: security context, probes against the
//!   server's routes and listen port, least-privilege RBAC, every flag and
//!   `FERRY_*` variable one that `ferry-server --help` documents; then the
//!   rendered container command is *run* (paths mapped into a temp dir,
//!   Kubernetes API played by kmock, S3 by moto) until its probes pass.
//! - Spark pod templates: parsed as Pods, compared with what `ferry submit`
//!   generates, and their ferry-init arguments run against a real server.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ferry_core::SourceUri;
use ferry_core::plan::FetchPlan;
use ferry_tests::api::ApiClient;
use ferry_tests::dockerfile::parse_dockerfile;
use ferry_tests::kube_mock::KubeMock;
use ferry_tests::moto::Moto;
use ferry_tests::{
    Child, FerryServer, bin, free_port, require_tool, wait_for_port, workspace_root,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, PersistentVolumeClaim, Pod, PodSpec, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};

const NAMESPACE: &str = "ferry-system";
const OVERLAYS: [&str; 2] = ["local-disk", "s3"];

fn deploy_dir() -> PathBuf {
    workspace_root().join("deploy")
}

/// Workspace facts from `cargo metadata --no-deps`.
struct Workspace {
    version: String,
    /// Package name → its binary targets.
    bins: BTreeMap<String, BTreeSet<String>>,
    /// Member folders, relative to the workspace root.
    member_dirs: BTreeSet<String>,
}

fn workspace() -> Workspace {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(workspace_root())
        .output()
        .expect("run cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let meta: Value = serde_json::from_slice(&output.stdout).expect("metadata JSON");
    let root = workspace_root();
    let mut bins = BTreeMap::new();
    let mut member_dirs = BTreeSet::new();
    let mut version = String::new();
    for package in meta["packages"].as_array().expect("packages") {
        let name = package["name"].as_str().unwrap().to_owned();
        if name == "ferry-server" {
            version = package["version"].as_str().unwrap().to_owned();
        }
        let manifest = Path::new(package["manifest_path"].as_str().unwrap());
        if let Ok(dir) = manifest.parent().unwrap().strip_prefix(&root) {
            member_dirs.insert(dir.display().to_string());
        }
        let targets: BTreeSet<String> = package["targets"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "bin"))
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect();
        bins.insert(name, targets);
    }
    assert!(!version.is_empty(), "ferry-server is a workspace package");
    Workspace {
        version,
        bins,
        member_dirs,
    }
}

// ---------------------------------------------------------------------------
// Dockerfiles

/// `name:tag` with a tag that is not `latest`, or a digest.
fn image_is_pinned(image: &str) -> bool {
    if image.contains("@sha256:") {
        return true;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    last.split_once(':')
        .is_some_and(|(_, tag)| !tag.is_empty() && tag != "latest")
}

fn words_after<'a>(words: &'a [&'a str], flag: &str) -> Option<&'a str> {
    words.windows(2).find(|w| w[0] == flag).map(|w| w[1])
}

#[test]
fn dockerfiles_pin_their_bases_run_as_non_root_and_ship_workspace_binaries() {
    let ws = workspace();
    let docker = deploy_dir().join("docker");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&docker)
        .expect("deploy/docker")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "Dockerfile"))
        .collect();
    files.sort();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for required in ["ferry-server.Dockerfile", "ferry-init.Dockerfile"] {
        assert!(
            names.iter().any(|n| n == required),
            "{required} missing: {names:?}"
        );
    }
    for file in &files {
        let what = file.display();
        let stages = parse_dockerfile(&std::fs::read_to_string(file).unwrap());
        assert!(stages.len() >= 2, "{what}: multi-stage build expected");
        for stage in &stages {
            assert!(
                image_is_pinned(&stage.image),
                "{what}: {} is not pinned",
                stage.image
            );
        }
        let builder = &stages[0];
        let tag = builder.image.rsplit(':').next().unwrap();
        assert!(
            builder.image.contains("rust:")
                && tag.split('-').next().unwrap().split('.').count() == 3,
            "{what}: the Rust builder is pinned to an exact version (x.y.z): {}",
            builder.image
        );

        // Binaries the build stage makes: `cargo build ... -p PKG --bin BIN`.
        let mut built = BTreeSet::new();
        for (keyword, rest) in &builder.instructions {
            if keyword != "RUN" || !rest.contains("cargo build") {
                continue;
            }
            let words: Vec<&str> = rest.split_whitespace().collect();
            assert!(words.contains(&"--release"), "{what}: release build");
            assert!(words.contains(&"--locked"), "{what}: --locked build");
            let package = words_after(&words, "-p").expect("cargo build -p PKG");
            let binary = words_after(&words, "--bin").expect("cargo build --bin BIN");
            let bins = ws
                .bins
                .get(package)
                .unwrap_or_else(|| panic!("{what}: -p {package} is not a workspace package"));
            assert!(
                bins.contains(binary),
                "{what}: {package} has no [[bin]] {binary} (it has {bins:?})"
            );
            assert!(
                rest.contains(&format!("target/release/{binary} ")),
                "{what}: copies target/release/{binary} out of the cache mount"
            );
            built.insert(binary.to_owned());
        }
        assert!(!built.is_empty(), "{what}: no cargo build");

        let last = stages.last().unwrap();
        let builder_name = builder.name.as_deref().expect("the build stage is named");
        let mut copied = BTreeMap::new();
        for (keyword, rest) in &last.instructions {
            if keyword != "COPY" {
                continue;
            }
            let words: Vec<&str> = rest.split_whitespace().collect();
            let from = words
                .iter()
                .find_map(|w| w.strip_prefix("--from="))
                .expect("the runtime stage copies from the build stage only");
            assert_eq!(from, builder_name, "{what}");
            let paths: Vec<&str> = words
                .iter()
                .copied()
                .filter(|w| !w.starts_with("--"))
                .collect();
            let (source, dest) = (paths[0], paths[paths.len() - 1]);
            copied.insert(dest.to_owned(), source.to_owned());
        }
        let user = last
            .instructions
            .iter()
            .rev()
            .find(|(k, _)| k == "USER")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{what}: no USER in the runtime stage"));
        let ids: Vec<u32> = user
            .split(':')
            .map(|id| {
                id.parse()
                    .unwrap_or_else(|_| panic!("{what}: USER {user} is not numeric"))
            })
            .collect();
        assert!(ids.iter().all(|&id| id != 0), "{what}: USER {user} is root");

        let entrypoint = last
            .instructions
            .iter()
            .find(|(k, _)| k == "ENTRYPOINT")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{what}: no ENTRYPOINT"));
        let entrypoint: Vec<String> = serde_json::from_str(&entrypoint)
            .unwrap_or_else(|_| panic!("{what}: ENTRYPOINT is not exec form: {entrypoint}"));
        let program = &entrypoint[0];
        let source = copied
            .get(program)
            .unwrap_or_else(|| panic!("{what}: ENTRYPOINT {program} is not a copied file"));
        let binary = Path::new(source).file_name().unwrap().to_string_lossy();
        assert!(
            built.contains(binary.as_ref()),
            "{what}: {program} is not a built binary"
        );
        assert_eq!(
            Path::new(program).file_name().unwrap().to_string_lossy(),
            binary,
            "{what}"
        );

        // The Dockerfile's own ignore file keeps target/ and .git out but
        // every workspace member (and the manifests) in.
        let ignore_path = PathBuf::from(format!("{}.dockerignore", file.display()));
        let ignore = std::fs::read_to_string(&ignore_path)
            .unwrap_or_else(|e| panic!("{}: {e}", ignore_path.display()));
        let patterns: BTreeSet<&str> = ignore
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| l.trim_matches('/'))
            .collect();
        for needed in ["target", ".git"] {
            assert!(
                patterns.contains(needed),
                "{}: ignore {needed}",
                ignore_path.display()
            );
        }
        for member in ws
            .member_dirs
            .iter()
            .map(String::as_str)
            .chain(["Cargo.toml", "Cargo.lock"])
        {
            let top = member.split('/').next().unwrap();
            assert!(
                !patterns.contains(member) && !patterns.contains(top),
                "{}: ignores {member}, which the build needs",
                ignore_path.display()
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Kustomize

#[derive(Default)]
struct Rendered {
    kinds: Vec<String>,
    namespaces: Vec<Namespace>,
    service_accounts: Vec<ServiceAccount>,
    cluster_roles: Vec<ClusterRole>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    deployments: Vec<Deployment>,
    services: Vec<Service>,
    pdbs: Vec<PodDisruptionBudget>,
    config_maps: Vec<ConfigMap>,
    pvcs: Vec<PersistentVolumeClaim>,
}

impl Rendered {
    fn deployment(&self) -> &Deployment {
        assert_eq!(self.deployments.len(), 1, "one Deployment");
        &self.deployments[0]
    }

    fn pod_spec(&self) -> &PodSpec {
        self.deployment()
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod spec")
    }

    fn server(&self) -> &Container {
        let spec = self.pod_spec();
        assert_eq!(spec.containers.len(), 1, "one container");
        &spec.containers[0]
    }

    fn config_map(&self, name: &str) -> &ConfigMap {
        self.config_maps
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("ConfigMap {name} is referenced but not rendered"))
    }

    /// The server's environment as Kubernetes would give it: literal `env`
    /// values and the keys of `envFrom` ConfigMaps (Secret refs are listed
    /// by name only: their keys are not in the manifests).
    fn server_env(&self) -> (BTreeMap<String, String>, Vec<(String, bool)>) {
        let container = self.server();
        let mut env = BTreeMap::new();
        let mut secrets = Vec::new();
        for from in container.env_from.iter().flatten() {
            if let Some(cm) = &from.config_map_ref {
                let data = self.config_map(&cm.name).data.clone().unwrap_or_default();
                env.extend(data);
            }
            if let Some(secret) = &from.secret_ref {
                secrets.push((secret.name.clone(), secret.optional.unwrap_or(false)));
            }
        }
        for var in container.env.iter().flatten() {
            let value = var
                .value
                .clone()
                .unwrap_or_else(|| panic!("env {} is not a literal value", var.name));
            env.insert(var.name.clone(), value);
        }
        (env, secrets)
    }
}

fn kubectl() -> Option<PathBuf> {
    require_tool(
        "kubectl (with kustomize)",
        "FERRY_TEST_KUBECTL",
        &["kubectl", "/usr/bin/kubectl"],
    )
}

fn render(kubectl: &Path, overlay: &str) -> Rendered {
    let dir = deploy_dir().join("kubernetes/overlays").join(overlay);
    let output = Command::new(kubectl)
        .arg("kustomize")
        .arg(&dir)
        .output()
        .expect("run kubectl kustomize");
    assert!(
        output.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let mut rendered = Rendered::default();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value: serde_yaml::Value = serde::Deserialize::deserialize(document).unwrap();
        let kind = value["kind"].as_str().expect("kind").to_owned();
        let namespaced = !matches!(
            kind.as_str(),
            "Namespace" | "ClusterRole" | "ClusterRoleBinding"
        );
        let namespace = value["metadata"]["namespace"].as_str();
        if namespaced {
            assert_eq!(namespace, Some(NAMESPACE), "{overlay}: {kind} namespace");
        }
        macro_rules! push {
            ($field:ident) => {
                rendered.$field.push(
                    serde_yaml::from_value(value.clone())
                        .unwrap_or_else(|e| panic!("{overlay}: {kind} does not parse: {e}")),
                )
            };
        }
        match kind.as_str() {
            "Namespace" => push!(namespaces),
            "ServiceAccount" => push!(service_accounts),
            "ClusterRole" => push!(cluster_roles),
            "ClusterRoleBinding" => push!(cluster_role_bindings),
            "Role" => push!(roles),
            "RoleBinding" => push!(role_bindings),
            "Deployment" => push!(deployments),
            "Service" => push!(services),
            "PodDisruptionBudget" => push!(pdbs),
            "ConfigMap" => push!(config_maps),
            "PersistentVolumeClaim" => push!(pvcs),
            other => panic!("{overlay}: {other} has no check in this test; add one"),
        }
        rendered.kinds.push(kind);
    }
    rendered
}

/// `--name=value`, `--name value` or `--name` → (name, value).
fn parse_flags(args: &[String]) -> BTreeMap<String, Option<String>> {
    let mut flags = BTreeMap::new();
    let mut i = 0;
    while i < args.len() {
        let arg = args[i]
            .strip_prefix("--")
            .unwrap_or_else(|| panic!("not a flag: {}", args[i]));
        if let Some((name, value)) = arg.split_once('=') {
            flags.insert(name.to_owned(), Some(value.to_owned()));
        } else if args.get(i + 1).is_some_and(|next| !next.starts_with("--")) {
            flags.insert(arg.to_owned(), Some(args[i + 1].clone()));
            i += 1;
        } else {
            flags.insert(arg.to_owned(), None);
        }
        i += 1;
    }
    flags
}

/// The flags (`--name`) and environment twins (`FERRY_*`) that
/// `ferry-server --help` documents.
struct ServerHelp {
    flags: BTreeSet<String>,
    env: BTreeSet<String>,
}

fn server_help() -> ServerHelp {
    let output = Command::new(bin("ferry-server"))
        .arg("--help")
        .output()
        .expect("ferry-server --help");
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    let flags = text
        .split(|c: char| c.is_whitespace() || ",=[]<>".contains(c))
        .filter_map(|w| w.strip_prefix("--"))
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect();
    let env = text
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split(['=', ']']).next())
        .map(str::to_owned)
        .collect();
    ServerHelp { flags, env }
}

fn selector_matches(
    selector: Option<&BTreeMap<String, String>>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// The port number a probe or Service names, resolved against the container.
fn resolve_port(port: &IntOrString, container: &Container) -> i32 {
    match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => {
            container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("port {name} is not a container port"))
                .container_port
        }
    }
}

fn check_common(overlay: &str, r: &Rendered, ws: &Workspace, help: &ServerHelp) {
    assert_eq!(r.namespaces.len(), 1);
    assert_eq!(r.namespaces[0].metadata.name.as_deref(), Some(NAMESPACE));

    let deployment = r.deployment();
    let template = &deployment.spec.as_ref().unwrap().template;
    let pod_labels = template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap_or_default();
    let spec = r.pod_spec();
    let container = r.server();

    assert_eq!(
        container.image.as_deref(),
        Some(format!("ghcr.io/ferry-dev/ferry-server:{}", ws.version).as_str()),
        "{overlay}: the image tag follows the workspace version"
    );

    // Runs as non-root with nothing extra.
    let pod_security = spec.security_context.as_ref().expect("pod securityContext");
    assert_eq!(pod_security.run_as_non_root, Some(true), "{overlay}");
    assert!(
        pod_security.run_as_user.is_some_and(|u| u != 0),
        "{overlay}: runAsUser"
    );
    assert_eq!(
        pod_security
            .seccomp_profile
            .as_ref()
            .map(|p| p.type_.as_str()),
        Some("RuntimeDefault")
    );
    let security = container
        .security_context
        .as_ref()
        .expect("container securityContext");
    assert_eq!(
        security.allow_privilege_escalation,
        Some(false),
        "{overlay}"
    );
    assert_eq!(security.read_only_root_filesystem, Some(true), "{overlay}");
    assert_ne!(security.privileged, Some(true));
    assert!(
        security
            .capabilities
            .as_ref()
            .and_then(|c| c.drop.as_ref())
            .is_some_and(|d| d.iter().any(|c| c == "ALL")),
        "{overlay}: drops ALL capabilities"
    );
    assert!(security.capabilities.as_ref().unwrap().add.is_none());
    assert_ne!(spec.host_network, Some(true));
    let volumes = spec.volumes.clone().unwrap_or_default();
    assert!(
        volumes.iter().all(|v| v.host_path.is_none()),
        "{overlay}: no hostPath"
    );

    let resources = container.resources.as_ref().expect("resources");
    let requests = resources.requests.clone().unwrap_or_default();
    let limits = resources.limits.clone().unwrap_or_default();
    assert!(
        requests.contains_key("cpu") && requests.contains_key("memory"),
        "{overlay}: requests"
    );
    assert!(limits.contains_key("memory"), "{overlay}: memory limit");

    // Every flag and FERRY_* variable is one the server documents.
    let args = container.args.clone().unwrap_or_default();
    assert!(
        container.command.is_none(),
        "{overlay}: the image's ENTRYPOINT runs"
    );
    let flags = parse_flags(&args);
    for name in flags.keys() {
        assert!(
            help.flags.contains(name),
            "{overlay}: ferry-server has no flag --{name}"
        );
    }
    let (env, _) = r.server_env();
    for name in env.keys() {
        if name.starts_with("FERRY_") {
            assert!(
                help.env.contains(name),
                "{overlay}: ferry-server reads no {name}"
            );
        } else {
            assert!(
                name == "RUST_LOG" || name.starts_with("AWS_"),
                "{overlay}: {name} is not read by ferry-server"
            );
        }
    }

    // Probes hit the server's health routes on the port it listens on.
    let listen = flags
        .get("listen")
        .cloned()
        .flatten()
        .or_else(|| env.get("FERRY_LISTEN").cloned())
        .expect("--listen");
    assert!(
        listen.starts_with("0.0.0.0:"),
        "{overlay}: listen on all pod addresses"
    );
    let port: i32 = listen.rsplit(':').next().unwrap().parse().unwrap();
    for (probe, path) in [
        (container.liveness_probe.as_ref(), "/healthz"),
        (container.readiness_probe.as_ref(), "/readyz"),
    ] {
        let get = probe
            .and_then(|p| p.http_get.as_ref())
            .unwrap_or_else(|| panic!("{overlay}: {path} probe"));
        assert_eq!(get.path.as_deref(), Some(path), "{overlay}");
        assert_eq!(
            resolve_port(&get.port, container),
            port,
            "{overlay}: {path} port"
        );
    }

    // The Service, the Deployment and the PDB select these pods.
    assert_eq!(r.services.len(), 1);
    let service = r.services[0].spec.as_ref().unwrap();
    assert!(
        selector_matches(service.selector.as_ref(), &pod_labels),
        "{overlay}: Service selector"
    );
    for service_port in service.ports.iter().flatten() {
        let target = service_port.target_port.as_ref().expect("targetPort");
        assert_eq!(
            resolve_port(target, container),
            port,
            "{overlay}: Service targetPort"
        );
    }
    assert!(selector_matches(
        deployment
            .spec
            .as_ref()
            .unwrap()
            .selector
            .match_labels
            .as_ref(),
        &pod_labels
    ));
    assert_eq!(r.pdbs.len(), 1);
    let pdb = r.pdbs[0].spec.as_ref().unwrap();
    assert!(selector_matches(
        pdb.selector.as_ref().and_then(|s| s.match_labels.as_ref()),
        &pod_labels
    ));
    assert!(
        pdb.min_available.is_none(),
        "{overlay}: minAvailable would block drains of a single replica"
    );

    // Mounts: every one names a volume; the upload token sits in a Secret
    // volume the non-root user can read; the root filesystem is read-only,
    // so a local data directory must be a writable mount.
    let mounts = container.volume_mounts.clone().unwrap_or_default();
    for mount in &mounts {
        assert!(
            volumes.iter().any(|v| v.name == mount.name),
            "{overlay}: volume {}",
            mount.name
        );
    }
    let token_file = flags
        .get("upload-token-file")
        .cloned()
        .flatten()
        .expect("--upload-token-file (replicas share one token)");
    let token_mount = mounts
        .iter()
        .find(|m| token_file.starts_with(&format!("{}/", m.mount_path)))
        .expect("the token file is on a mount");
    let token_volume = volumes.iter().find(|v| v.name == token_mount.name).unwrap();
    let secret = token_volume
        .secret
        .as_ref()
        .expect("the token comes from a Secret");
    assert_eq!(secret.secret_name.as_deref(), Some("ferry-upload-token"));
    assert!(
        secret.default_mode.is_some_and(|m| m & 0o040 != 0),
        "{overlay}: group-readable token"
    );
    assert!(
        pod_security.fs_group.is_some(),
        "{overlay}: fsGroup makes the token readable"
    );
    if let Some(data) = env.get("FERRY_DATA").filter(|d| d.starts_with('/')) {
        assert!(
            mounts
                .iter()
                .any(|m| data.starts_with(&m.mount_path) && m.read_only != Some(true)),
            "{overlay}: FERRY_DATA {data} is not on a writable mount"
        );
    }

    // RBAC: pods get/list/watch and tokenreviews create, nothing else.
    let mut granted = BTreeSet::new();
    let rules = r
        .cluster_roles
        .iter()
        .flat_map(|c| c.rules.clone().unwrap_or_default())
        .chain(
            r.roles
                .iter()
                .flat_map(|c| c.rules.clone().unwrap_or_default()),
        );
    for rule in rules {
        assert!(
            rule.non_resource_urls.is_none(),
            "{overlay}: non-resource URLs"
        );
        for group in rule.api_groups.clone().unwrap_or_default() {
            for resource in rule.resources.clone().unwrap_or_default() {
                for verb in &rule.verbs {
                    granted.insert(format!("{group}/{resource}:{verb}"));
                }
            }
        }
    }
    let expected: BTreeSet<String> = [
        "/pods:get",
        "/pods:list",
        "/pods:watch",
        "authentication.k8s.io/tokenreviews:create",
    ]
    .map(String::from)
    .into();
    assert_eq!(
        granted, expected,
        "{overlay}: RBAC is exactly what the server uses"
    );
    let account = spec
        .service_account_name
        .as_deref()
        .expect("serviceAccountName");
    assert!(
        r.service_accounts
            .iter()
            .any(|s| s.metadata.name.as_deref() == Some(account))
    );
    let role_names: BTreeSet<String> = r
        .cluster_roles
        .iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .chain(r.roles.iter().map(|c| c.metadata.name.clone().unwrap()))
        .collect();
    let bindings = r
        .cluster_role_bindings
        .iter()
        .map(|b| (&b.role_ref, &b.subjects))
        .chain(r.role_bindings.iter().map(|b| (&b.role_ref, &b.subjects)));
    let mut bound = 0;
    for (role_ref, subjects) in bindings {
        assert!(
            role_names.contains(&role_ref.name),
            "{overlay}: binding to {}",
            role_ref.name
        );
        for subject in subjects.iter().flatten() {
            assert_eq!(subject.kind, "ServiceAccount");
            assert_eq!(subject.name, account);
            assert_eq!(subject.namespace.as_deref(), Some(NAMESPACE));
        }
        bound += 1;
    }
    assert!(bound > 0, "{overlay}: the role is bound");
    // Owner tracking and TokenReview use the pod's service-account token.
    assert_ne!(spec.automount_service_account_token, Some(false));
    if flags.contains_key("kubernetes") || env.contains_key("FERRY_KUBERNETES") {
        assert!(granted.contains("/pods:watch"));
    }
}

#[test]
fn kustomize_overlays_render_to_least_privilege_non_root_objects_the_server_accepts() {
    let Some(kubectl) = kubectl() else {
        return;
    };
    let ws = workspace();
    let help = server_help();
    for known in ["listen", "upload-token-file", "kubernetes"] {
        assert!(
            help.flags.contains(known),
            "help parsing: --{known} in {:?}",
            help.flags
        );
    }
    assert!(
        help.env.contains("FERRY_DATA"),
        "help parsing: {:?}",
        help.env
    );
    // The image's own user and environment agree with the Deployment's.
    let image = parse_dockerfile(
        &std::fs::read_to_string(deploy_dir().join("docker/ferry-server.Dockerfile")).unwrap(),
    );
    let runtime = image.last().unwrap();
    let image_user = runtime
        .instructions
        .iter()
        .rfind(|(k, _)| k == "USER")
        .map(|(_, v)| v.split(':').next().unwrap().parse::<i64>().unwrap())
        .expect("USER");
    for (_, env) in runtime.instructions.iter().filter(|(k, _)| k == "ENV") {
        for pair in env.split_whitespace() {
            let name = pair.split('=').next().unwrap();
            assert!(
                help.env.contains(name),
                "the image sets {name}, which ferry-server does not read"
            );
        }
    }
    for overlay in OVERLAYS {
        let r = render(&kubectl, overlay);
        check_common(overlay, &r, &ws, &help);
        let pod_security = r.pod_spec().security_context.as_ref().unwrap();
        assert_eq!(
            pod_security.run_as_user,
            Some(image_user),
            "{overlay}: the image's USER"
        );
        let spec = r.deployment().spec.as_ref().unwrap();
        let strategy = spec.strategy.as_ref().expect("strategy");
        let (env, secrets) = r.server_env();
        let data = env.get("FERRY_DATA").expect("FERRY_DATA").clone();
        match overlay {
            "local-disk" => {
                assert_eq!(
                    spec.replicas,
                    Some(1),
                    "one writer of a ReadWriteOnce volume"
                );
                assert_eq!(strategy.type_.as_deref(), Some("Recreate"));
                assert!(
                    strategy.rolling_update.is_none(),
                    "Recreate takes no rollingUpdate"
                );
                assert_eq!(r.pvcs.len(), 1);
                let pvc = &r.pvcs[0];
                let claim = pvc.metadata.name.clone().unwrap();
                let volume = r
                    .pod_spec()
                    .volumes
                    .iter()
                    .flatten()
                    .find(|v| {
                        v.persistent_volume_claim.as_ref().map(|c| &c.claim_name) == Some(&claim)
                    })
                    .expect("the PVC is a pod volume");
                let mount = r
                    .server()
                    .volume_mounts
                    .iter()
                    .flatten()
                    .find(|m| m.name == volume.name)
                    .expect("the PVC is mounted");
                assert_eq!(data, mount.mount_path, "data lives on the PVC");
                assert_eq!(
                    pvc.spec.as_ref().unwrap().access_modes.as_deref(),
                    Some(&["ReadWriteOnce".to_owned()][..])
                );
                assert!(secrets.is_empty());
            }
            "s3" => {
                assert!(spec.replicas.is_some_and(|n| n >= 2), "stateless replicas");
                assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
                assert!(data.starts_with("s3://"), "{data}");
                assert!(r.pvcs.is_empty());
                assert_eq!(
                    secrets,
                    [("ferry-s3-credentials".to_owned(), true)],
                    "credentials Secret, optional for IRSA"
                );
            }
            _ => unreachable!(),
        }
    }
}

/// Runs the rendered container command for real: mount paths become folders
/// of a temp dir, the Kubernetes API is kmock (a fake; see `kube_mock`), S3
/// is moto, and the Secret's token is a file at the mounted path.
#[test]
fn rendered_deployments_start_ferry_server_and_pass_their_probes() {
    let Some(kubectl) = kubectl() else {
        return;
    };
    let Some(kube) = KubeMock::start() else {
        return;
    };
    let Some(moto) = Moto::start() else {
        return;
    };
    for overlay in OVERLAYS {
        let r = render(&kubectl, overlay);
        let container = r.server();
        let root = tempfile::tempdir().unwrap();
        let mounts: Vec<String> = container
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.mount_path.clone())
            .collect();
        let map = |text: &str| -> String {
            match mounts.iter().find(|m| text.starts_with(m.as_str())) {
                Some(_) => format!("{}{text}", root.path().display()),
                None => text.to_owned(),
            }
        };
        for mount in &mounts {
            std::fs::create_dir_all(root.path().join(mount.trim_start_matches('/'))).unwrap();
        }
        let token = "deploy-test-upload-token-0123456789abcdef";
        let port = free_port();
        let mut args = Vec::new();
        for arg in container.args.iter().flatten() {
            if let Some(token_file) = arg.strip_prefix("--upload-token-file=") {
                std::fs::write(map(token_file), token).unwrap();
            }
            let arg = if arg.starts_with("--listen=") {
                format!("--listen=127.0.0.1:{port}")
            } else {
                match arg.split_once('=') {
                    Some((flag, value)) => format!("{flag}={}", map(value)),
                    None => arg.clone(),
                }
            };
            args.push(arg);
        }
        let (env, secrets) = r.server_env();
        let mut command = Command::new(bin("ferry-server"));
        command
            .args(&args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("KUBECONFIG", &kube.kubeconfig)
            .envs(env.iter().map(|(k, v)| (k.clone(), map(v))));
        if let Some(bucket) = env.get("FERRY_DATA").and_then(|d| d.strip_prefix("s3://")) {
            moto.create_bucket(bucket.split('/').next().unwrap());
            // What the optional credentials Secret would hold.
            assert_eq!(secrets.len(), 1);
            command.envs(moto.env().into_iter().filter(|(k, _)| !env.contains_key(k)));
        }
        let mut server = Child::spawn("ferry-server", command, root.path().join("server.log"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !wait_for_port(port, Duration::from_millis(100)) {
            let exited = server.try_wait();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "{overlay}: ferry-server {args:?} did not listen ({exited:?}): {}",
                server.log_text()
            );
        }
        let base = format!("http://127.0.0.1:{port}");
        for probe in [&container.liveness_probe, &container.readiness_probe] {
            let path = probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .path
                .clone()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(15);
            let mut status = 0;
            while Instant::now() < deadline {
                status = reqwest::blocking::get(format!("{base}{path}"))
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                if status == 200 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            assert_eq!(status, 200, "{overlay}: {path}: {}", server.log_text());
        }
        // The mounted token is the upload credential, and storage works.
        let api = ApiClient::new(&base, Some(token));
        let staged = api.stage(&[("jars/x.jar", b"x")], json!({}));
        assert!(staged["id"].is_string(), "{overlay}");
        assert_eq!(
            api.as_token(Some("wrong"))
                .request(reqwest::Method::GET, "/v1/bundles")
                .send()
                .unwrap()
                .status(),
            401,
            "{overlay}"
        );
        assert!(
            server.log_text().contains("pod watch is receiving events")
                || wait_for_log(&server, "pod watch is receiving events"),
            "{overlay}: the pod watch did not reach the API server: {}",
            server.log_text()
        );
        server.kill();
    }
}

fn wait_for_log(child: &Child, needle: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if child.log_text().contains(needle) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

// ---------------------------------------------------------------------------
// Spark pod templates

fn read_pod(path: &Path) -> Pod {
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{} is not a Pod: {e}", path.display()))
}

fn mounts_of(container: &Container) -> Vec<(String, String, bool)> {
    container
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| {
            (
                m.name.clone(),
                m.mount_path.clone(),
                m.read_only == Some(true),
            )
        })
        .collect()
}

/// The driver template `ferry submit --dry-run` writes for a one-jar job.
fn client_generated_template(server: &FerryServer, dir: &Path) -> Pod {
    std::fs::write(dir.join("dep.jar"), b"dep").unwrap();
    let token = dir.join("upload-token");
    std::fs::write(&token, &server.token).unwrap();
    let templates = dir.join("templates");
    let output = Command::new(bin("ferry"))
        .args(["--server", &server.url, "--token-file"])
        .arg(&token)
        .args([
            "submit",
            "--dry-run",
            "--output",
            "json",
            "--pod-server",
            "http://ferry.ferry-system.svc:7070",
            "--template-dir",
        ])
        .arg(&templates)
        .args([
            "--",
            "spark-submit",
            "--master",
            "k8s://https://127.0.0.1:6443",
            "--deploy-mode",
            "cluster",
            "--jars",
            "dep.jar",
            "local:///opt/app.jar",
        ])
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("XDG_CONFIG_HOME", dir.join("no-config"))
        .env("KUBECONFIG", dir.join("no-kubeconfig"))
        .output()
        .expect("run ferry submit");
    assert!(
        output.status.success(),
        "ferry submit: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    read_pod(&templates.join("driver-pod-template.yaml"))
}

#[test]
fn spark_templates_match_the_clients_and_their_init_args_fetch_a_staged_bundle() {
    let ws = workspace();
    let server = FerryServer::start();
    let dir = tempfile::tempdir().unwrap();
    let generated = client_generated_template(&server, dir.path());
    let generated_spec = generated.spec.unwrap();
    let generated_init = &generated_spec.init_containers.as_ref().unwrap()[0];

    let mut init_args = None;
    for role in ["driver", "executor"] {
        let path = deploy_dir().join(format!("spark/{role}-template.yaml"));
        let pod = read_pod(&path);
        let spec = pod.spec.expect("spec");
        let inits = spec.init_containers.as_ref().expect("initContainers");
        let init = &inits[0];
        assert_eq!(init.name, generated_init.name, "{role}");
        assert_eq!(
            init.termination_message_policy.as_deref(),
            Some("FallbackToLogsOnError"),
            "{role}: kubectl describe shows why ferry-init failed"
        );
        assert_eq!(
            init.termination_message_policy, generated_init.termination_message_policy,
            "{role}"
        );
        assert_eq!(
            init.image, generated_init.image,
            "{role}: the client's default image"
        );
        assert_eq!(
            init.image.as_deref(),
            Some(format!("ghcr.io/ferry-dev/ferry-init:{}", ws.version).as_str())
        );
        let args = init.args.clone().unwrap();
        let generated_args = generated_init.args.as_ref().unwrap();
        // Same options and the same fetch plan (the last argument); only the
        // bundle differs (a named one here).
        assert_eq!(
            args[..args.len() - 1],
            generated_args[..generated_args.len() - 1],
            "{role}: ferry-init options differ from the client's"
        );
        let plan = FetchPlan::from_json(args.last().unwrap())
            .unwrap_or_else(|e| panic!("{role}: the template's plan: {e}"));
        let mut generated_plan = FetchPlan::from_json(generated_args.last().unwrap()).unwrap();
        generated_plan.items[0].uri = SourceUri::parse("ferry://my-job-deps").unwrap();
        assert_eq!(
            plan, generated_plan,
            "{role}: the template fetches what the client's does"
        );
        assert_eq!(
            mounts_of(init),
            mounts_of(generated_init),
            "{role}: init mounts"
        );
        let main = &spec.containers[0];
        assert_eq!(main.name, format!("spark-kubernetes-{role}"));
        assert_eq!(
            mounts_of(main),
            mounts_of(&generated_spec.containers[0]),
            "{role}"
        );
        let volumes = spec.volumes.as_ref().unwrap();
        let names: Vec<&str> = volumes.iter().map(|v| v.name.as_str()).collect();
        let generated_names: Vec<&str> = generated_spec
            .volumes
            .iter()
            .flatten()
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(names, generated_names, "{role}: volumes");
        // The init image runs as uid 65532: the token must be group-readable
        // and the pod must give its containers the Secret's group.
        let secret = volumes
            .iter()
            .find_map(|v| v.secret.as_ref())
            .expect("token Secret volume");
        assert_eq!(secret.secret_name.as_deref(), Some("ferry-my-job-deps"));
        assert!(secret.default_mode.is_some_and(|m| m & 0o040 != 0));
        assert!(
            spec.security_context
                .as_ref()
                .and_then(|s| s.fs_group)
                .is_some()
        );
        let security = init
            .security_context
            .as_ref()
            .expect("init securityContext");
        assert_eq!(security.run_as_non_root, Some(true));
        assert_eq!(security.read_only_root_filesystem, Some(true));
        match &init_args {
            None => init_args = Some(args),
            Some(previous) => assert_eq!(previous, &args, "driver and executor fetch the same"),
        }
    }

    // Stage as deploy/README.md says (`ferry stage --name my-job-deps --ttl
    // never deps/jars deps/files deps/app --output json`), then run
    // ferry-init with the template's arguments.
    let files: [(&str, &[u8]); 3] = [
        ("jars/job-lib.jar", b"jar bytes"),
        ("files/app.conf", b"answer = 42\n"),
        ("app/etl.jar", b"application jar"),
    ];
    for (path, bytes) in files {
        let path = dir.path().join("deps").join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    let upload_token = dir.path().join("upload-token");
    let output = Command::new(bin("ferry"))
        .args(["--server", &server.url, "--token-file"])
        .arg(&upload_token)
        .args([
            "stage",
            "--name",
            "my-job-deps",
            "--ttl",
            "never",
            "deps/jars",
            "deps/files",
            "deps/app",
            "--output",
            "json",
        ])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path().join("no-config"))
        .output()
        .expect("run ferry stage");
    assert!(
        output.status.success(),
        "ferry stage: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let staged: Value = serde_json::from_slice(&output.stdout).expect("stage JSON");
    let token = staged["token"].as_str().expect("token in stage JSON");
    let pod_root = dir.path().join("pod");
    let token_file = dir.path().join("secret-token");
    std::fs::write(&token_file, token).unwrap();
    let init_args = init_args.unwrap();
    let mapped: Vec<String> = init_args
        .iter()
        .enumerate()
        .map(|(i, arg)| {
            if i > 0 && init_args[i - 1] == "--server" {
                server.url.clone()
            } else {
                arg.replace("/var/run/secrets/ferry/token", token_file.to_str().unwrap())
                    .replace("/var/ferry", pod_root.to_str().unwrap())
            }
        })
        .collect();
    let output = Command::new(bin("ferry-init"))
        .args(&mapped)
        .env_remove("FERRY_SERVER")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "ferry-init {mapped:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    for (path, bytes) in files {
        assert_eq!(std::fs::read(pod_root.join(path)).unwrap(), bytes, "{path}");
    }
}

#[test]
fn readme_names_only_files_that_exist() {
    let readme = std::fs::read_to_string(deploy_dir().join("README.md")).expect("deploy/README.md");
    let mut named = 0;
    for word in readme.split(|c: char| c.is_whitespace() || "`()[],".contains(c)) {
        let word = word.trim_end_matches(['.', ':']);
        if let Some(rest) = word.strip_prefix("deploy/") {
            if rest.is_empty() || rest.contains('<') {
                continue;
            }
            assert!(
                deploy_dir().join(rest).exists(),
                "deploy/README.md names {word}, which is missing"
            );
            named += 1;
        }
    }
    assert!(
        named >= 4,
        "the README points at the manifests and templates"
    );
}
