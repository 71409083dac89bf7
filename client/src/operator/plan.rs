//! A SparkApplication as a front end of [`crate::submission`]: its
//! application file and `spec.deps` become [`Dependency`] values planned
//! by [`Deliveries::plan`], the planner `ferry submit` uses, so the two
//! commands stage, fetch and rewrite a dependency the same way.
//!
//! What Spark would use to reach a remote dependency is carried over to
//! ferry-init from `spec.sparkConf` and `spec.hadoopConf` by
//! [`crate::submission::remote`], as `ferry submit` carries it from its
//! `--conf`s.
//!
//! Pure but for a `stat` of each local dependency.

use std::collections::BTreeMap;

use crate::spark::submission::Role;
use crate::submission::remote::{self, RemoteAccess};
use crate::submission::{
    Deliveries, Dependency, DepsDir, Kind, Submission, SubmissionError, SubmissionId,
};

use super::app::{SparkApplication, SparkPodSpec};

/// Namespace when neither the object, the flag nor the kubeconfig names one.
const DEFAULT_NAMESPACE: &str = "default";

/// How ferry-init is added to the driver and executor pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Inject {
    /// Merged into `spec.driver.template` / `spec.executor.template`
    /// (operator 2.1 and later with Spark 3 and later; no webhook needed).
    Template,
    /// As `initContainers` and `volumeMounts` on `spec.driver` /
    /// `spec.executor` and `spec.volumes` (older operators; needs the
    /// operator's mutating webhook).
    InitContainers,
}

/// What `ferry apply` takes from its own flags for planning.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// `--namespace`, for objects that name none.
    pub namespace: Option<String>,
    pub deps_dir: DepsDir,
    pub inject: Inject,
}

/// Why an application cannot be planned.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("SparkApplication {name}")]
    Submission {
        name: String,
        #[source]
        source: SubmissionError,
    },
    #[error("SparkApplication {name} is in namespace {object}, but --namespace says {flag}")]
    Namespace {
        name: String,
        object: String,
        flag: String,
    },
}

/// One SparkApplication, planned.
#[derive(Debug, Clone)]
pub struct AppPlan {
    /// The object as read, with its namespace filled in and the fields the
    /// API server sets removed.
    pub app: SparkApplication,
    pub submission: Submission,
    pub inject: Inject,
    /// One line per remote dependency left to Spark (see
    /// [`remote::keep_carriable`]).
    pub notices: Vec<String>,
}

impl AppPlan {
    /// Plans `app`. `context_namespace` is asked only when neither the
    /// object nor `--namespace` names one.
    pub fn new(
        app: SparkApplication,
        options: &ApplyOptions,
        id: SubmissionId,
        context_namespace: impl FnOnce() -> Option<String>,
    ) -> Result<Self, PlanError> {
        let mut app = app.without_server_fields();
        let name = app.name().to_owned();
        let namespace = match (&app.metadata.namespace, &options.namespace) {
            (Some(object), Some(flag)) if object != flag => {
                return Err(PlanError::Namespace {
                    name,
                    object: object.clone(),
                    flag: flag.clone(),
                });
            }
            (Some(namespace), _) => namespace.clone(),
            (None, Some(flag)) => flag.clone(),
            (None, None) => context_namespace().unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned()),
        };
        app.metadata.namespace = Some(namespace.clone());
        let conf = spark_conf(&app);
        let (deps, notices) = remote::keep_carriable(&conf, dependencies(&app));
        let submission = Deliveries::plan(&deps, &options.deps_dir)
            .and_then(|deliveries| {
                let access = RemoteAccess::new(&conf, deliveries.fetched().iter().map(|f| &f.uri));
                // With nothing staged the pods need no token, so an
                // application whose dependencies are all remote is fine
                // here (ferry submit refuses it: there the token is how
                // its templates are tied to the run).
                Submission::without_token_check(id, namespace, Some(name.clone()), deliveries)
                    .map(|submission| submission.with_remote(access))
            })
            .map_err(|source| PlanError::Submission {
                name: name.clone(),
                source,
            })?;
        Ok(Self {
            app,
            submission,
            inject: options.inject,
            notices,
        })
    }

    /// Whether there are local files to stage as a bundle.
    pub fn stages(&self) -> bool {
        !self.submission.deliveries.staged().is_empty()
    }

    /// Whether ferry delivers anything at all (else the object is applied
    /// as written).
    pub fn delivers(&self) -> bool {
        self.stages() || !self.submission.deliveries.fetched().is_empty()
    }

    /// The container of `role` that gets the dependency volume in its pod
    /// template: the one Spark picks by
    /// `spark.kubernetes.<role>.podTemplateContainerName`, by default
    /// Spark's own name for it.
    pub fn container(&self, role: Role) -> String {
        self.app
            .spec
            .spark_conf
            .as_ref()
            .and_then(|conf| conf.get(&role.setting("podTemplateContainerName")))
            .cloned()
            .unwrap_or_else(|| format!("spark-kubernetes-{}", role.as_str()))
    }
}

/// The Spark configuration the operator's spark-submit gets:
/// `spec.sparkConf`, then `spec.hadoopConf` as `spark.hadoop.*` (passed
/// after it, so it wins, as with the operator).
pub fn spark_conf(app: &SparkApplication) -> BTreeMap<String, String> {
    let mut conf = app.spec.spark_conf.clone().unwrap_or_default();
    for (key, value) in app.spec.hadoop_conf.iter().flatten() {
        conf.insert(format!("spark.hadoop.{key}"), value.clone());
    }
    conf
}

/// The role's pod settings in `app`.
pub fn pod_spec(app: &mut SparkApplication, role: Role) -> &mut SparkPodSpec {
    match role {
        Role::Driver => app.spec.driver.get_or_insert_with(Default::default),
        Role::Executor => app.spec.executor.get_or_insert_with(Default::default),
    }
}

/// Every dependency the object names: `spec.deps.{jars,files,pyFiles,archives}`
/// then `mainApplicationFile`, each element as a Spark list element
/// (`location[#alias]`).
pub fn dependencies(app: &SparkApplication) -> Vec<Dependency> {
    let mut deps = Vec::new();
    for (kind, list) in lists(app) {
        deps.extend(list.iter().map(|d| Dependency::parse(kind, d)));
    }
    if let Some(primary) = &app.spec.main_application_file {
        deps.push(Dependency::parse(Kind::Primary, primary));
    }
    deps
}

/// The dependency lists of `spec.deps` with the kind of each.
fn lists(app: &SparkApplication) -> Vec<(Kind, &Vec<String>)> {
    let Some(deps) = &app.spec.deps else {
        return Vec::new();
    };
    [
        (Kind::Jar, &deps.jars),
        (Kind::File, &deps.files),
        (Kind::PyFile, &deps.py_files),
        (Kind::Archive, &deps.archives),
    ]
    .into_iter()
    .filter_map(|(kind, list)| list.as_ref().map(|l| (kind, l)))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::app::parse_documents;

    fn options(namespace: Option<&str>) -> ApplyOptions {
        ApplyOptions {
            namespace: namespace.map(str::to_owned),
            deps_dir: crate::k8s::DEPS_DIR.parse().unwrap(),
            inject: Inject::Template,
        }
    }

    fn app(namespace: &str, deps: &str) -> SparkApplication {
        parse_documents(&format!(
            "apiVersion: sparkoperator.k8s.io/v1beta2\nkind: SparkApplication\nmetadata:\n  name: etl\n{namespace}spec:\n  {deps}\n"
        ))
        .unwrap()
        .remove(0)
    }

    #[test]
    fn the_objects_dependencies_go_through_the_shared_planner() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.py"), "py").unwrap();
        std::fs::write(dir.path().join("a.jar"), "jar").unwrap();
        let path = |n: &str| dir.path().join(n).display().to_string();
        let deps = format!(
            "mainApplicationFile: file://{}\n  deps:\n    jars: [{}, 'local:///opt/in-image.jar']\n    archives: ['s3a://b/env.tar.gz#env']",
            path("app.py"),
            path("a.jar")
        );
        let plan = AppPlan::new(
            app("", &deps),
            &options(Some("jobs")),
            SubmissionId::generate(),
            || panic!("--namespace named it"),
        )
        .unwrap();
        assert_eq!(plan.submission.namespace, "jobs");
        assert_eq!(plan.app.metadata.namespace.as_deref(), Some("jobs"));
        assert_eq!(plan.submission.app_name.as_deref(), Some("etl"));
        let staged: Vec<&str> = plan
            .submission
            .deliveries
            .staged()
            .iter()
            .map(|f| f.path.as_str())
            .collect();
        assert_eq!(staged, ["jars/a.jar", "app/app.py"]);
        let listed = dependencies(&plan.app);
        assert_eq!(listed[2].alias.as_deref(), Some("env"));
        // Unpacked by ferry-init into archives/env: out of Spark's lists.
        assert_eq!(
            plan.submission.deliveries.rewrite(&listed[2]),
            Some(crate::submission::deliveries::REMOVED)
        );
        assert_eq!(
            plan.submission.deliveries.archives()[0].alias.as_str(),
            "env"
        );
        assert_eq!(plan.submission.deliveries.rewrite(&listed[1]), None);
        assert!(plan.stages() && plan.delivers());
        assert_eq!(plan.container(Role::Executor), "spark-kubernetes-executor");
    }

    #[test]
    fn all_remote_is_planned_without_a_bundle_and_only_local_delivers_nothing() {
        let remote = AppPlan::new(
            app("", "mainApplicationFile: https://h/app.jar"),
            &options(None),
            SubmissionId::generate(),
            || Some("ctx".into()),
        )
        .unwrap();
        assert_eq!(remote.submission.namespace, "ctx");
        assert!(!remote.stages() && remote.delivers());
        let local = AppPlan::new(
            app("", "mainApplicationFile: local:///opt/app.jar"),
            &options(None),
            SubmissionId::generate(),
            || None,
        )
        .unwrap();
        assert_eq!(local.submission.namespace, "default");
        assert!(!local.delivers());
    }

    #[test]
    fn the_objects_namespace_wins_but_must_agree_with_the_flag() {
        let named = || {
            app(
                "  namespace: team\n",
                "mainApplicationFile: https://h/a.jar",
            )
        };
        let plan = AppPlan::new(named(), &options(None), SubmissionId::generate(), || {
            panic!("the object named it")
        })
        .unwrap();
        assert_eq!(plan.submission.namespace, "team");
        let clash = AppPlan::new(
            named(),
            &options(Some("other")),
            SubmissionId::generate(),
            || None,
        )
        .unwrap_err();
        assert!(matches!(clash, PlanError::Namespace { .. }), "{clash}");
    }

    #[test]
    fn a_missing_local_file_is_refused_with_the_applications_name() {
        let error = AppPlan::new(
            app("", "deps:\n    jars: [/no/such.jar]"),
            &options(None),
            SubmissionId::generate(),
            || None,
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("SparkApplication etl"),
            "{error}"
        );
        assert!(matches!(
            error,
            PlanError::Submission {
                source: SubmissionError::Stat { .. },
                ..
            }
        ));
    }
}
