//! The Kubernetes objects `ferry submit` makes: the Secret holding the
//! bundle token, and driver/executor pod templates that add the ferry-init
//! init container, merged into templates the user already has.
//!
//! The init container gets its connection settings as flags and what to
//! fetch as one fetch plan, inline: `ferry-init --server URL --token-file F
//! [--cache-dir D] --plan-json '<plan>'`. Inline, the plan needs no extra
//! Kubernetes object to create, clean up or keep in step with the pods,
//! it cannot be missing when the pod starts, and `kubectl describe pod` and
//! `kubectl get pod -o yaml` show exactly what the pod fetches.

use std::collections::BTreeMap;

use ferry_core::plan::FetchPlan;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, HostPathVolumeSource, Pod, PodSecurityContext,
    PodSpec, Secret, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Where staged files land in every pod (an emptyDir), unless
/// `ferry submit --deps-dir` says otherwise.
pub const DEPS_DIR: &str = "/var/ferry";
/// Where the bundle token Secret is mounted.
pub const SECRET_DIR: &str = "/var/run/secrets/ferry";
const DEPS_VOLUME: &str = "ferry-deps";
const SECRET_VOLUME: &str = "ferry-token";
const CACHE_VOLUME: &str = "ferry-cache";
const CACHE_DIR: &str = "/var/cache/ferry";
pub const INIT_CONTAINER: &str = "ferry-init";
/// The ferry-init flag that carries the plan.
const PLAN_FLAG: &str = "--plan-json";
/// Runs before ferry-init when there is a node cache (see `cache_setup`).
pub const CACHE_SETUP_CONTAINER: &str = "ferry-cache-setup";
/// The ferry-init image's user (distroless "nonroot").
const INIT_USER: &str = "65532:65532";
/// `kubectl describe pod` shows ferry-init's termination message (the failed
/// items), or its log's tail if it died before writing one.
const MESSAGE_POLICY: &str = "FallbackToLogsOnError";
/// The Apache Spark images' working directory (their `WORKDIR`), where
/// Spark looks up `./<alias>` of an archive; a main container's own
/// `workingDir` in the user's template wins, and `--work-dir` over both.
pub const SPARK_WORK_DIR: &str = "/opt/spark/work-dir";
/// Group of the `spark` user in the Apache Spark images.
const SPARK_FS_GROUP: i64 = 185;

/// Everything the init container needs to know.
#[derive(Debug, Clone)]
pub struct InitSpec {
    pub image: String,
    pub server: String,
    /// The Secret holding the bundle token; `None` when nothing was staged
    /// (every dependency is remote), so there is no token to mount.
    pub secret_name: Option<String>,
    /// hostPath for the node-local cache, if any.
    pub node_cache: Option<String>,
    /// The main container's working directory, where archives are
    /// mounted, when a flag chose it: it then replaces the template's
    /// `workingDir`. `None`: the template's, else [`SPARK_WORK_DIR`].
    pub work_dir: Option<String>,
    /// Mount path of the dependency volume in every container.
    pub deps_dir: String,
    /// What ferry-init fetches and where it lands.
    pub plan: FetchPlan,
    /// Unpacked archives: directory names under `<deps dir>/archives`,
    /// each mounted at `<working dir>/<name>` in the main container.
    pub archive_dirs: Vec<String>,
}

impl InitSpec {
    /// The full `ferry-init` command line; the plan is last.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec!["--server".to_owned(), self.server.clone()];
        if self.secret_name.is_some() {
            args.extend(["--token-file".to_owned(), format!("{SECRET_DIR}/token")]);
        }
        if self.node_cache.is_some() {
            args.extend(["--cache-dir".to_owned(), CACHE_DIR.to_owned()]);
        }
        args.extend([PLAN_FLAG.to_owned(), self.plan.to_json()]);
        args
    }

    /// The init container: ferry-init with the dependency volume, the token
    /// and the node cache mounted.
    pub fn container(&self) -> Container {
        let mut mounts = vec![VolumeMount {
            name: DEPS_VOLUME.into(),
            mount_path: self.deps_dir.clone(),
            ..Default::default()
        }];
        if self.secret_name.is_some() {
            mounts.push(VolumeMount {
                name: SECRET_VOLUME.into(),
                mount_path: SECRET_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            });
        }
        if self.node_cache.is_some() {
            mounts.push(VolumeMount {
                name: CACHE_VOLUME.into(),
                mount_path: CACHE_DIR.into(),
                ..Default::default()
            });
        }
        Container {
            name: INIT_CONTAINER.into(),
            image: Some(self.image.clone()),
            args: Some(self.args()),
            volume_mounts: Some(mounts),
            termination_message_policy: Some(MESSAGE_POLICY.into()),
            ..Default::default()
        }
    }
}

/// The fetch plan a ferry-init container was given with `--plan-json`, if
/// it was and it parses.
pub fn plan_of(container: &Container) -> Option<FetchPlan> {
    let args = container.args.as_deref()?;
    let index = args.iter().position(|a| a == PLAN_FLAG)?;
    FetchPlan::from_json(args.get(index + 1)?).ok()
}

/// The Secret holding a bundle's read token, under key `token`.
pub fn secret(name: &str, namespace: &str, bundle_id: &str, token: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/managed-by".to_owned(),
                    "ferry".to_owned(),
                ),
                ("ferry.dev/bundle".to_owned(), bundle_id.to_owned()),
            ])),
            ..Default::default()
        },
        type_: Some("Opaque".to_owned()),
        string_data: Some(BTreeMap::from([("token".to_owned(), token.to_owned())])),
        ..Default::default()
    }
}

/// Adds ferry to `base` (the user's template, or an empty pod): the init
/// container first among init containers, the token and dependency volumes,
/// and the dependency mount on the main container — the one named
/// `container_name`, else the first, else a new one with that name.
pub fn merge_template(base: Option<Pod>, init: &InitSpec, container_name: &str) -> Pod {
    let mut pod = base.unwrap_or_default();
    let spec = pod.spec.get_or_insert_with(PodSpec::default);
    // The Secret's files belong to root; ferry-init runs as a non-root user
    // and reads the token through the pod's fsGroup (mode 0440). A user's
    // own fsGroup is kept; otherwise Spark images' group (185) is used.
    let security = spec
        .security_context
        .get_or_insert_with(PodSecurityContext::default);
    security.fs_group.get_or_insert(SPARK_FS_GROUP);
    add_volumes(spec, init);
    let init_containers = spec.init_containers.get_or_insert_with(Vec::new);
    init_containers.retain(|c| c.name != INIT_CONTAINER && c.name != CACHE_SETUP_CONTAINER);
    init_containers.insert(0, init.container());
    if init.node_cache.is_some() {
        init_containers.insert(0, cache_setup(init));
    }
    mount_deps(&mut spec.containers, container_name, init);
    pod
}

/// The dependency emptyDir, the token Secret and the node cache, replacing
/// any of ferry's from an earlier merge.
fn add_volumes(spec: &mut PodSpec, init: &InitSpec) {
    let volumes = spec.volumes.get_or_insert_with(Vec::new);
    volumes.retain(|v| v.name != DEPS_VOLUME && v.name != SECRET_VOLUME && v.name != CACHE_VOLUME);
    volumes.push(Volume {
        name: DEPS_VOLUME.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    });
    if let Some(secret_name) = &init.secret_name {
        volumes.push(Volume {
            name: SECRET_VOLUME.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret_name.clone()),
                default_mode: Some(0o440),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    if let Some(host_path) = &init.node_cache {
        volumes.push(Volume {
            name: CACHE_VOLUME.into(),
            host_path: Some(HostPathVolumeSource {
                path: host_path.clone(),
                type_: Some("DirectoryOrCreate".into()),
            }),
            ..Default::default()
        });
    }
}

/// Mounts the dependency volume read-only on the container named
/// `container_name`, else the first, else a new one with that name, and
/// each unpacked archive's directory at `<working dir>/<name>`, where
/// Spark's `./<alias>` finds it. A chosen [`InitSpec::work_dir`] becomes
/// the container's `workingDir`, so `./` is where the mounts are.
fn mount_deps(containers: &mut Vec<Container>, container_name: &str, init: &InitSpec) {
    let deps_dir = &init.deps_dir;
    let index = containers
        .iter()
        .position(|c| c.name == container_name)
        .unwrap_or(0);
    if containers.is_empty() {
        containers.push(Container {
            name: container_name.to_owned(),
            ..Default::default()
        });
    }
    let mounts = containers[index].volume_mounts.get_or_insert_with(Vec::new);
    mounts.retain(|m| m.name != DEPS_VOLUME);
    mounts.push(VolumeMount {
        name: DEPS_VOLUME.into(),
        mount_path: deps_dir.to_owned(),
        read_only: Some(true),
        ..Default::default()
    });
    if let Some(dir) = &init.work_dir {
        containers[index].working_dir = Some(dir.clone());
    }
    let work_dir = containers[index]
        .working_dir
        .clone()
        .unwrap_or_else(|| SPARK_WORK_DIR.to_owned());
    let mounts = containers[index].volume_mounts.get_or_insert_with(Vec::new);
    for name in &init.archive_dirs {
        mounts.push(VolumeMount {
            name: DEPS_VOLUME.into(),
            mount_path: format!("{}/{name}", work_dir.trim_end_matches('/')),
            sub_path: Some(format!(
                "{}/{name}",
                crate::submission::Kind::Archive.group()
            )),
            read_only: Some(true),
            ..Default::default()
        });
    }
}

/// The init step that hands the node cache to ferry-init's user: a kubelet
/// creates a `DirectoryOrCreate` hostPath as root, mode 0755, where uid
/// 65532 cannot write. It runs ferry-init's own `--prepare-cache-for` as
/// root with only CAP_CHOWN and CAP_FOWNER, no network use and a read-only
/// root; a hostPath already needs the "privileged" Pod Security level,
/// which allows a root init container.
fn cache_setup(init: &InitSpec) -> Container {
    Container {
        name: CACHE_SETUP_CONTAINER.into(),
        image: Some(init.image.clone()),
        args: Some(vec![
            "--cache-dir".into(),
            CACHE_DIR.into(),
            "--prepare-cache-for".into(),
            INIT_USER.into(),
        ]),
        security_context: Some(SecurityContext {
            run_as_user: Some(0),
            run_as_non_root: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: Some(vec!["CHOWN".into(), "FOWNER".into()]),
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: CACHE_VOLUME.into(),
            mount_path: CACHE_DIR.into(),
            ..Default::default()
        }]),
        termination_message_policy: Some(MESSAGE_POLICY.into()),
        ..Default::default()
    }
}

/// Creates (or replaces) the Secret through the API server of the current
/// kubeconfig context.
pub async fn apply_secret(secret: &Secret) -> anyhow::Result<()> {
    use kube::api::{Api, PostParams};
    let client = kube::Client::try_default()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach Kubernetes with the current kubeconfig: {e}"))?;
    let namespace = secret
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let api: Api<Secret> = Api::namespaced(client, &namespace);
    api.create(&PostParams::default(), secret)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot create Secret {}/{}: {e}",
                namespace,
                secret.metadata.name.as_deref().unwrap_or_default()
            )
        })?;
    Ok(())
}

/// The namespace of the current kubeconfig context, if one is configured.
pub fn kubeconfig_namespace() -> Option<String> {
    let config = kube::config::Kubeconfig::read().ok()?;
    let current = config.current_context.as_deref()?;
    config
        .contexts
        .iter()
        .find(|c| c.name == current)
        .and_then(|c| c.context.as_ref())
        .and_then(|c| c.namespace.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init() -> InitSpec {
        let bundle = ferry_core::BundleRef::parse("id-0000000000000000000000000x").unwrap();
        InitSpec {
            image: "ferry-init:test".into(),
            server: "http://ferry:7070".into(),
            secret_name: Some("ferry-id-x".into()),
            node_cache: Some("/var/cache/ferry".into()),
            work_dir: None,
            deps_dir: DEPS_DIR.into(),
            plan: FetchPlan::new(vec![ferry_core::plan::PlanItem::bundle(
                &bundle,
                "/var/ferry/other".into(),
                BTreeMap::from([("jars".to_owned(), "/var/ferry/jars".to_owned())]),
            )]),
            archive_dirs: Vec::new(),
        }
    }

    #[test]
    fn user_template_keeps_its_parts_and_gains_ferry() {
        let user: Pod = serde_yaml::from_str(
            "spec:\n  initContainers:\n  - name: setup\n    image: busybox\n  containers:\n  - name: sidecar\n    image: s\n  - name: main\n    image: m\n    volumeMounts:\n    - name: data\n      mountPath: /data\n  volumes:\n  - name: data\n    emptyDir: {}\n",
        )
        .unwrap();
        let pod = merge_template(Some(user), &init(), "main");
        let spec = pod.spec.unwrap();
        let inits: Vec<&str> = spec
            .init_containers
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(inits, ["ferry-cache-setup", "ferry-init", "setup"]);
        let main = spec.containers.iter().find(|c| c.name == "main").unwrap();
        let mounts: Vec<&str> = main
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m.mount_path.as_str())
            .collect();
        assert_eq!(mounts, ["/data", "/var/ferry"]);
        assert!(
            spec.containers[0].volume_mounts.is_none(),
            "the sidecar is left alone"
        );
        let volumes: Vec<&str> = spec
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(
            volumes,
            ["data", "ferry-deps", "ferry-token", "ferry-cache"]
        );
    }

    #[test]
    fn archives_are_mounted_in_the_flags_work_dir_then_the_templates_then_sparks() {
        let archive_mounts = |template: &str, work_dir: Option<&str>| {
            let init = InitSpec {
                archive_dirs: vec!["environment".into()],
                work_dir: work_dir.map(str::to_owned),
                ..init()
            };
            let base: Option<Pod> = (!template.is_empty()).then(|| {
                serde_yaml::from_str(&format!("spec:\n  containers:\n  - name: main\n{template}"))
                    .unwrap()
            });
            let pod = merge_template(base, &init, "main");
            let main = pod.spec.unwrap().containers.remove(0);
            let mounts: Vec<(String, Option<String>)> = main
                .volume_mounts
                .unwrap()
                .into_iter()
                .filter(|m| m.sub_path.is_some())
                .map(|m| (m.mount_path, m.sub_path))
                .collect();
            (main.working_dir, mounts)
        };
        let at = |dir: &str| {
            vec![(
                format!("{dir}/environment"),
                Some("archives/environment".to_owned()),
            )]
        };
        assert_eq!(archive_mounts("", None), (None, at(SPARK_WORK_DIR)));
        let own = "    workingDir: /app\n";
        assert_eq!(archive_mounts(own, None), (Some("/app".into()), at("/app")));
        // The flag wins, and is where the container starts, so that
        // `./environment` is the mount.
        assert_eq!(
            archive_mounts(own, Some("/job")),
            (Some("/job".into()), at("/job"))
        );
        assert_eq!(
            archive_mounts("", Some("/job")),
            (Some("/job".into()), at("/job"))
        );
    }

    #[test]
    fn merging_twice_does_not_duplicate() {
        let once = merge_template(None, &init(), "spark-kubernetes-driver");
        let twice = merge_template(Some(once.clone()), &init(), "spark-kubernetes-driver");
        assert_eq!(once, twice);
        assert_eq!(
            twice.spec.unwrap().containers[0].name,
            "spark-kubernetes-driver"
        );
    }

    #[test]
    fn init_arguments_are_connection_flags_then_the_plan() {
        let spec = init();
        let args = spec.args();
        assert_eq!(
            args[..6],
            [
                "--server",
                "http://ferry:7070",
                "--token-file",
                "/var/run/secrets/ferry/token",
                "--cache-dir",
                "/var/cache/ferry"
            ]
        );
        assert_eq!(args[6], "--plan-json");
        assert_eq!(FetchPlan::from_json(&args[7]).unwrap(), spec.plan);
        assert_eq!(args.len(), 8);
        let pod = merge_template(None, &spec, "main");
        let inits = pod.spec.unwrap().init_containers.unwrap();
        let container = inits.iter().find(|c| c.name == INIT_CONTAINER).unwrap();
        assert_eq!(plan_of(container), Some(spec.plan));
    }
}
