//! The SparkApplication side of rendering a planned (and, if it has local
//! files, staged) application: every delivered dependency rewritten to
//! where it lands, ferry-init added to the driver and the executors (pod
//! template or operator fields, see [`Inject`]), the pods labelled so they
//! own the bundle, and the token Secret. Pure: applying the object and
//! creating the Secret are the caller's.
//!
//! The pod parts come from [`crate::k8s::merge_template`], the function
//! `ferry submit`'s templates come from; for [`Inject::InitContainers`] the
//! operator's fields are gathered into a pod for it and put back.

use ferry_core::BundleId;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, PodTemplateSpec, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::app::{API_VERSION, KIND, SparkApplication};
use super::plan::{AppPlan, Inject, pod_spec};
use crate::k8s::{self, InitSpec};
use crate::spark::render::{AVOID_DOWNLOAD, avoid_download_schemes};
use crate::spark::submission::Role;
use crate::spark::with_alias;
use crate::submission::remote::{self, REDACTED};
use crate::submission::render::{PodDelivery, PodOptions};
use crate::submission::{Dependency, Kind};

/// What `ferry apply` applies for one SparkApplication.
#[derive(Debug, Clone)]
pub struct RenderedApp {
    pub app: SparkApplication,
    /// The bundle's token, for the pods; `None` when nothing was staged.
    /// Its ownerReference is added once the application has a uid
    /// ([`owned_by`]).
    pub secret: Option<Secret>,
    pub bundle: Option<BundleId>,
}

impl RenderedApp {
    /// The object as a dry run shows it: secret settings in
    /// `spec.sparkConf` and `spec.hadoopConf` redacted (as `ferry submit
    /// --dry-run` redacts them on the command). The applied object keeps
    /// them as written.
    pub fn shown_app(&self) -> SparkApplication {
        let mut app = self.app.clone();
        let spec = &mut app.spec;
        for (prefix, conf) in [
            ("", &mut spec.spark_conf),
            ("spark.hadoop.", &mut spec.hadoop_conf),
        ] {
            for (key, value) in conf.iter_mut().flatten() {
                if remote::is_secret_setting(&format!("{prefix}{key}")) {
                    *value = REDACTED.into();
                }
            }
        }
        app
    }

    /// The Secret as a dry run shows it: the store secrets carried in it
    /// redacted.
    pub fn shown_secret(&self, plan: &AppPlan) -> Option<Secret> {
        let secret = self.secret.as_ref()?;
        Some(plan.submission.remote.shown(secret))
    }
}

/// Renders `plan`; `staged` is the bundle holding its local files and the
/// bundle's read token (`None` when [`AppPlan::stages`] is false).
pub fn render(
    plan: &AppPlan,
    staged: Option<(&BundleId, &str)>,
    options: &PodOptions,
) -> RenderedApp {
    let mut app = plan.app.clone();
    if !plan.delivers() {
        return RenderedApp {
            app,
            secret: None,
            bundle: None,
        };
    }
    rewrite(&mut app, plan);
    let (secret, init) = match staged {
        Some((bundle, token)) => {
            let delivery = PodDelivery::new(&plan.submission, bundle, token, options);
            (Some(delivery.secret), delivery.init)
        }
        None => (None, PodDelivery::remote_only(&plan.submission, options)),
    };
    // The store references each side's ferry-init needs (see
    // crate::submission::remote), added to the merged pod.
    let remote = |pod: &mut Pod, role: Role, container: &str| {
        plan.submission
            .remote
            .add_to_pod(pod, role.side(), init.secret_name.as_deref(), container);
    };
    for role in Role::ALL {
        let container = plan.container(role);
        match plan.inject {
            Inject::Template => into_template(&mut app, role, &init, &container, remote),
            Inject::InitContainers => into_fields(&mut app, role, &init, &container, remote),
        }
        let labels = pod_spec(&mut app, role)
            .labels
            .get_or_insert_with(Default::default);
        labels.extend(plan.submission.pod_labels().clone());
    }
    // As `ferry submit` does: executors use the jars their own ferry-init
    // delivered instead of fetching the driver's copies.
    let conf = app.spec.spark_conf.get_or_insert_with(Default::default);
    if let Some(schemes) = avoid_download_schemes(conf.get(AVOID_DOWNLOAD).map(String::as_str)) {
        conf.insert(AVOID_DOWNLOAD.to_owned(), schemes);
    }
    RenderedApp {
        app,
        secret,
        bundle: staged.map(|(bundle, _)| bundle.clone()),
    }
}

/// `secret` owned by the applied application `app` (named `name`, with
/// `uid`), so Kubernetes deletes it with the application.
pub fn owned_by(mut secret: Secret, name: &str, uid: &str) -> Secret {
    secret.metadata.owner_references = Some(vec![OwnerReference {
        api_version: API_VERSION.to_owned(),
        kind: KIND.to_owned(),
        name: name.to_owned(),
        uid: uid.to_owned(),
        ..Default::default()
    }]);
    secret
}

/// Every delivered dependency in `spec.mainApplicationFile` and
/// `spec.deps` becomes its `local://` path; aliases are kept. Archives
/// ferry-init unpacks (rewritten to nothing) leave `spec.deps.archives`.
fn rewrite(app: &mut SparkApplication, plan: &AppPlan) {
    let deliveries = &plan.submission.deliveries;
    let replace = |kind: Kind, text: &mut String| {
        let dep = Dependency::parse(kind, text);
        if let Some(new) = deliveries.rewrite(&dep) {
            *text = with_alias(new.to_owned(), &dep);
        }
    };
    if let Some(primary) = &mut app.spec.main_application_file {
        replace(Kind::Primary, primary);
    }
    if let Some(deps) = &mut app.spec.deps {
        for (kind, list) in [
            (Kind::Jar, &mut deps.jars),
            (Kind::File, &mut deps.files),
            (Kind::PyFile, &mut deps.py_files),
            (Kind::Archive, &mut deps.archives),
        ] {
            if let Some(items) = list.as_mut() {
                items.retain(|text| {
                    deliveries.rewrite(&Dependency::parse(kind, text))
                        != Some(crate::submission::deliveries::REMOVED)
                });
                if items.is_empty() {
                    *list = None;
                }
            }
            for text in list.iter_mut().flatten() {
                replace(kind, text);
            }
        }
    }
}

/// ferry merged into the role's pod template, as into `ferry submit`'s.
fn into_template(
    app: &mut SparkApplication,
    role: Role,
    init: &InitSpec,
    container: &str,
    remote: impl Fn(&mut Pod, Role, &str),
) {
    let spec = pod_spec(app, role);
    let template = spec.template.take().unwrap_or_default();
    let pod = Pod {
        metadata: template.metadata.unwrap_or_default(),
        spec: template.spec,
        ..Default::default()
    };
    let mut merged = k8s::merge_template(Some(pod), init, container);
    remote(&mut merged, role, container);
    spec.template = Some(PodTemplateSpec {
        metadata: Some(merged.metadata).filter(|m| *m != ObjectMeta::default()),
        spec: merged.spec,
    });
}

/// ferry added through the operator's own fields: init containers and the
/// Spark container's mounts on the role, volumes on `spec.volumes` (shared
/// by both roles; merging twice does not duplicate them), fsGroup on the
/// role's `podSecurityContext`.
fn into_fields(
    app: &mut SparkApplication,
    role: Role,
    init: &InitSpec,
    container: &str,
    remote: impl Fn(&mut Pod, Role, &str),
) {
    let volumes = app.spec.volumes.take();
    let spec = pod_spec(app, role);
    let pod = Pod {
        spec: Some(PodSpec {
            init_containers: spec.init_containers.take(),
            volumes,
            security_context: spec.pod_security_context.take(),
            containers: vec![Container {
                name: container.to_owned(),
                volume_mounts: spec.volume_mounts.take(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut merged = k8s::merge_template(Some(pod), init, container);
    remote(&mut merged, role, container);
    let mut merged = merged.spec.unwrap_or_default();
    spec.init_containers = merged.init_containers;
    spec.pod_security_context = merged.security_context;
    spec.volume_mounts = merged.containers.pop().and_then(|c| c.volume_mounts);
    app.spec.volumes = merged.volumes;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::app::parse_documents;
    use crate::operator::plan::ApplyOptions;
    use crate::submission::SubmissionId;

    const OPTIONS: fn() -> PodOptions = || PodOptions {
        image: "ferry-init:test".into(),
        server: "http://ferry:7070".into(),
        node_cache: None,
        work_dir: None,
    };

    fn plan(dir: &std::path::Path, inject: Inject, extra: &str) -> AppPlan {
        std::fs::write(dir.join("app.jar"), "app").unwrap();
        let text = format!(
            "apiVersion: sparkoperator.k8s.io/v1beta2\nkind: SparkApplication\nmetadata:\n  name: etl\nspec:\n  mainApplicationFile: {}/app.jar\n  deps:\n    files: ['https://h/conf/app.conf#conf', 'local:///etc/x']\n{extra}",
            dir.display()
        );
        let options = ApplyOptions {
            namespace: Some("jobs".into()),
            deps_dir: crate::k8s::DEPS_DIR.parse().unwrap(),
            inject,
        };
        AppPlan::new(
            parse_documents(&text).unwrap().remove(0),
            &options,
            SubmissionId::generate(),
            || None,
        )
        .unwrap()
    }

    fn bundle() -> BundleId {
        BundleId::parse("id-0000000000000000000000000c").unwrap()
    }

    /// One text field of each item of an optional list.
    fn listed<T>(items: &Option<Vec<T>>, field: impl Fn(&T) -> &str) -> Vec<&str> {
        items.iter().flatten().map(field).collect()
    }

    fn names(containers: &Option<Vec<Container>>) -> Vec<&str> {
        listed(containers, |c| c.name.as_str())
    }

    #[test]
    fn store_settings_reach_both_roles_and_a_dry_run_hides_inline_keys() {
        let dir = tempfile::tempdir().unwrap();
        let extra = "    jars: ['s3a://b/lib.jar']\n  hadoopConf:\n    fs.s3a.endpoint: http://127.0.0.1:9000\n    fs.s3a.secret.key: inline-secret\n    fs.s3a.access.key: AKID\n  sparkConf:\n    spark.kubernetes.driver.secrets.aws-d: /etc/aws-d\n    spark.kubernetes.executor.secrets.aws-e: /etc/aws-e\n";
        let plan = plan(dir.path(), Inject::InitContainers, extra);
        let rendered = render(&plan, Some((&bundle(), "read-token")), &OPTIONS());
        // Where the two roles share spec.volumes, neither's Secret mount is lost.
        let volumes = listed(&rendered.app.spec.volumes, |v| v.name.as_str());
        for secret in ["aws-d", "aws-e"] {
            assert!(
                volumes.iter().any(|v| v.ends_with(secret)),
                "{secret} in {volumes:?}"
            );
        }
        let driver = rendered.app.spec.driver.as_ref().unwrap();
        let init = &driver.init_containers.as_ref().unwrap()[0];
        let plan_json = k8s::plan_of(init).expect("a plan");
        let store = plan_json
            .items
            .iter()
            .find_map(|i| i.store.as_ref())
            .expect("store settings");
        // s3a's default virtual-hosted style, the key by env var only.
        assert_eq!(store.options["aws_endpoint"], "http://b.127.0.0.1:9000");
        assert!(store.env.contains_key("aws_secret_access_key"), "{store:?}");
        let env: Vec<&str> = listed(&init.env, |e| e.name.as_str());
        assert!(
            !env.is_empty(),
            "the inline key reaches ferry-init by reference"
        );
        assert!(
            !serde_json::to_string(&rendered.app.spec.driver)
                .unwrap()
                .contains("inline-secret")
        );
        let shown = rendered.shown_app();
        assert_eq!(
            shown.spec.hadoop_conf.as_ref().unwrap()["fs.s3a.secret.key"],
            REDACTED
        );
        assert_eq!(
            shown.spec.hadoop_conf.as_ref().unwrap()["fs.s3a.endpoint"],
            "http://127.0.0.1:9000"
        );
        let secret = rendered.shown_secret(&plan).unwrap();
        assert!(
            secret.string_data.unwrap().values().any(|v| v == REDACTED),
            "the carried key is redacted in the shown Secret"
        );
    }

    #[test]
    fn templates_get_ferry_init_and_dependencies_their_landing_paths() {
        let dir = tempfile::tempdir().unwrap();
        let plan = plan(dir.path(), Inject::Template, "");
        let rendered = render(&plan, Some((&bundle(), "read-token")), &OPTIONS());
        let spec = &rendered.app.spec;
        assert_eq!(
            spec.main_application_file.as_deref(),
            Some("local:///var/ferry/app/app.jar")
        );
        assert_eq!(
            spec.deps.as_ref().unwrap().files.as_deref().unwrap(),
            ["local:///var/ferry/files/app.conf#conf", "local:///etc/x"]
        );
        let secret = rendered.secret.as_ref().unwrap();
        assert_eq!(secret.string_data.as_ref().unwrap()["token"], "read-token");
        for role in Role::ALL {
            let pod = match role {
                Role::Driver => spec.driver.as_ref(),
                Role::Executor => spec.executor.as_ref(),
            }
            .unwrap();
            let template = pod.template.as_ref().unwrap().spec.as_ref().unwrap();
            let init = &template.init_containers.as_ref().unwrap()[0];
            assert_eq!(init.name, "ferry-init");
            let fetch = k8s::plan_of(init).unwrap();
            assert_eq!(fetch.items.len(), 2, "the bundle, then the remote file");
            assert_eq!(template.containers[0].name, plan.container(role));
            assert_eq!(
                pod.labels.as_ref().unwrap(),
                plan.submission.pod_labels(),
                "the pods own the bundle"
            );
            assert!(pod.init_containers.is_none(), "template mode only");
        }
        assert_eq!(spec.spark_conf.as_ref().unwrap()[AVOID_DOWNLOAD], "local");
        assert!(spec.volumes.is_none());
    }

    #[test]
    fn operator_fields_keep_the_users_init_containers_and_volumes() {
        let dir = tempfile::tempdir().unwrap();
        let extra = "  volumes:\n  - {name: data, emptyDir: {}}\n  driver:\n    labels: {team: data}\n    initContainers:\n    - {name: setup, image: busybox}\n    volumeMounts:\n    - {name: data, mountPath: /data}\n";
        let plan = plan(dir.path(), Inject::InitContainers, extra);
        let rendered = render(&plan, Some((&bundle(), "t")), &OPTIONS());
        let spec = &rendered.app.spec;
        assert_eq!(
            listed(&spec.volumes, |v| v.name.as_str()),
            ["data", "ferry-deps", "ferry-token"]
        );
        let driver = spec.driver.as_ref().unwrap();
        assert_eq!(names(&driver.init_containers), ["ferry-init", "setup"]);
        assert_eq!(
            listed(&driver.volume_mounts, |m| m.mount_path.as_str()),
            ["/data", "/var/ferry"]
        );
        assert_eq!(driver.labels.as_ref().unwrap()["team"], "data");
        assert_eq!(
            driver.pod_security_context.as_ref().unwrap().fs_group,
            Some(185)
        );
        let executor = spec.executor.as_ref().unwrap();
        assert_eq!(names(&executor.init_containers), ["ferry-init"]);
        assert!(driver.template.is_none() && executor.template.is_none());
    }

    #[test]
    fn all_remote_gets_ferry_init_without_a_token() {
        let dir = tempfile::tempdir().unwrap();
        let mut plan = plan(dir.path(), Inject::Template, "");
        plan.app.spec.main_application_file = Some("https://h/app.jar".into());
        let plan = AppPlan::new(
            plan.app,
            &ApplyOptions {
                namespace: None,
                deps_dir: crate::k8s::DEPS_DIR.parse().unwrap(),
                inject: Inject::Template,
            },
            SubmissionId::generate(),
            || None,
        )
        .unwrap();
        assert!(!plan.stages());
        let rendered = render(&plan, None, &OPTIONS());
        assert!(rendered.secret.is_none() && rendered.bundle.is_none());
        let driver = rendered.app.spec.driver.unwrap();
        let template = driver.template.unwrap().spec.unwrap();
        let init = &template.init_containers.unwrap()[0];
        let args = init.args.as_ref().unwrap();
        assert!(!args.iter().any(|a| a == "--token-file"), "{args:?}");
        let fetch = k8s::plan_of(init).unwrap();
        assert_eq!(fetch.items.len(), 2, "no bundle, two remote files");
        assert_eq!(
            listed(&template.volumes, |v| v.name.as_str()),
            ["ferry-deps"]
        );
    }

    #[test]
    fn the_secret_is_owned_by_the_application() {
        let secret = owned_by(Secret::default(), "etl", "uid-1");
        let owner = &secret.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.api_version.as_str(), owner.kind.as_str()),
            (API_VERSION, KIND)
        );
        assert_eq!((owner.name.as_str(), owner.uid.as_str()), ("etl", "uid-1"));
    }
}
