//! spark-submit as a front end of [`crate::submission`]: from a parsed
//! command line and its properties file to a [`SparkPlan`], the submission
//! (what is staged, fetched and rewritten; namespace; owner) plus what only
//! spark-submit has: the pod templates it names and the command to rewrite.
//!
//! Pure but for a `stat` of each local dependency: the properties file and
//! the user's templates are read by the caller.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{SparkSubmit, dependencies};
use crate::submission::remote::{self, RemoteAccess, Side};
use crate::submission::{
    Deliveries, Dependency, DepsDir, Kind, Origin, Submission, SubmissionError, SubmissionId,
};

/// Namespace when neither the flag, Spark nor the kubeconfig names one.
const DEFAULT_NAMESPACE: &str = "default";

/// The two kinds of pod Spark starts from a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Driver,
    Executor,
}

impl Role {
    pub const ALL: [Role; 2] = [Role::Driver, Role::Executor];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Driver => "driver",
            Self::Executor => "executor",
        }
    }

    /// `spark.kubernetes.<role>.<suffix>`.
    pub fn setting(self, suffix: &str) -> String {
        format!("spark.kubernetes.{}.{suffix}", self.as_str())
    }

    /// Which pods' store references this role's ferry-init gets.
    pub fn side(self) -> Side {
        match self {
            Self::Driver => Side::Driver,
            Self::Executor => Side::Executor,
        }
    }
}

/// One role's pod template: the user's (if any), its main container, and
/// where ferry writes the merged one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplatePlan {
    pub role: Role,
    /// `spark.kubernetes.<role>.podTemplateFile`, as the user gave it.
    pub base: Option<PathBuf>,
    /// The container that gets the dependency volume.
    pub container: String,
    /// Where the merged template is written.
    pub path: PathBuf,
}

/// What `ferry submit` takes from its own flags for planning.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// `--namespace`, which wins over Spark's setting.
    pub namespace: Option<String>,
    pub deps_dir: DepsDir,
    /// `--template-dir`; default: `ferry-<submission>` in the temp directory.
    pub template_dir: Option<PathBuf>,
    /// Client mode ([`super::mode::Mode::Executors`]): only the local jars
    /// are delivered, to the executor pods; the driver keeps every path.
    pub executors_only: bool,
}

/// A spark-submit invocation, planned.
#[derive(Debug, Clone)]
pub struct SparkPlan {
    pub submit: SparkSubmit,
    /// From `--properties-file`, if any.
    pub properties: BTreeMap<String, String>,
    pub submission: Submission,
    pub template_dir: PathBuf,
    /// Driver, then executor (the executor's alone in client mode).
    pub templates: Vec<TemplatePlan>,
    /// One line per remote dependency left to Spark, and why.
    pub notices: Vec<String>,
    /// Client mode: the local jars as given, for the driver's class path
    /// (the command's jar list names the executors' copies instead).
    /// `None` in cluster mode.
    pub driver_class_path: Option<Vec<String>>,
}

impl SparkPlan {
    /// Plans `submit`. `context_namespace` is asked only when neither
    /// `--namespace` nor `spark.kubernetes.namespace` says (it reads the
    /// kubeconfig in `ferry submit`).
    pub fn new(
        submit: SparkSubmit,
        properties: BTreeMap<String, String>,
        options: &PlanOptions,
        id: SubmissionId,
        context_namespace: impl FnOnce() -> Option<String>,
    ) -> Result<Self, SubmissionError> {
        let setting = |key: &str| setting(&submit, &properties, key).map(str::to_owned);
        let conf = spark_conf(&submit, &properties);
        let all = dependencies(&submit, &properties);
        let (deps, notices, driver_class_path) = if options.executors_only {
            let (jars, paths) = local_jars(all).into_iter().unzip();
            (jars, Vec::new(), Some(paths))
        } else {
            let (deps, notices) = remote::keep_carriable(&conf, all);
            (deps, notices, None)
        };
        let deliveries = Deliveries::plan(&deps, &options.deps_dir)?;
        let access = RemoteAccess::new(&conf, deliveries.fetched().iter().map(|f| &f.uri));
        let namespace = options
            .namespace
            .clone()
            .or_else(|| setting("spark.kubernetes.namespace"))
            .or_else(context_namespace)
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        let app_name = submit
            .value("--name")
            .map(str::to_owned)
            .or_else(|| setting("spark.app.name"));
        let template_dir = options
            .template_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join(format!("ferry-{id}")));
        let roles: &[Role] = if options.executors_only {
            &[Role::Executor]
        } else {
            &Role::ALL
        };
        let templates = roles
            .iter()
            .map(|&role| TemplatePlan {
                role,
                base: setting(&role.setting("podTemplateFile")).map(PathBuf::from),
                container: setting(&role.setting("podTemplateContainerName"))
                    .unwrap_or_else(|| format!("spark-kubernetes-{}", role.as_str())),
                path: template_dir.join(format!("{}-pod-template.yaml", role.as_str())),
            })
            .collect();
        let submission = Submission::new(id, namespace, app_name, deliveries)?.with_remote(access);
        Ok(Self {
            submit,
            properties,
            submission,
            template_dir,
            templates,
            notices,
            driver_class_path,
        })
    }

    /// A Spark setting: the last `--conf`, else the properties file.
    pub fn setting(&self, key: &str) -> Option<&str> {
        setting(&self.submit, &self.properties, key)
    }
}

/// How many local jars a client-mode submission delivers to its executors.
pub fn client_mode_jars(submit: &SparkSubmit, properties: &BTreeMap<String, String>) -> usize {
    local_jars(dependencies(submit, properties)).len()
}

/// The local jars among `deps` (`--jars`, `spark.jars`; not the primary
/// resource, which the driver runs and Spark serves), each with its path.
fn local_jars(deps: Vec<Dependency>) -> Vec<(Dependency, String)> {
    deps.into_iter()
        .filter(|dep| dep.kind == Kind::Jar)
        .filter_map(|dep| match dep.origin() {
            Ok(Origin::Local(path)) => Some((dep, path.display().to_string())),
            _ => None,
        })
        .collect()
}

/// Every Spark setting of the command: the properties file (or
/// `spark-defaults.conf`), then each `--conf` (the last one wins), with
/// `--master` and `--deploy-mode` as `spark.master` and
/// `spark.submit.deployMode`.
pub fn spark_conf(
    submit: &SparkSubmit,
    properties: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut conf = properties.clone();
    for option in &submit.options {
        if let super::SparkOption::Value { name, value, .. } = option {
            match name.as_str() {
                "--conf" | "-c" => {
                    if let Some((key, value)) = value.split_once('=') {
                        conf.insert(key.to_owned(), value.to_owned());
                    }
                }
                "--master" => {
                    conf.insert("spark.master".into(), value.clone());
                }
                "--deploy-mode" => {
                    conf.insert("spark.submit.deployMode".into(), value.clone());
                }
                _ => {}
            }
        }
    }
    conf
}

fn setting<'a>(
    submit: &'a SparkSubmit,
    properties: &'a BTreeMap<String, String>,
    key: &str,
) -> Option<&'a str> {
    submit
        .conf(key)
        .or_else(|| properties.get(key).map(String::as_str))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::submission::{Dependency, Kind};

    fn argv(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    fn options() -> PlanOptions {
        PlanOptions {
            namespace: None,
            deps_dir: crate::k8s::DEPS_DIR.parse().unwrap(),
            template_dir: Some("/t".into()),
            executors_only: false,
        }
    }

    /// A project folder with `app.jar` and `dep.jar`.
    fn project() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for name in ["app.jar", "dep.jar"] {
            std::fs::write(dir.path().join(name), name).unwrap();
        }
        dir
    }

    #[test]
    fn a_command_line_becomes_a_submission_with_its_templates() {
        let dir = project();
        let path = |n: &str| dir.path().join(n).display().to_string();
        let submit = SparkSubmit::parse(&argv(&[
            "spark-submit",
            "--name",
            "etl",
            "--jars",
            &format!("{},s3a://b/x.jar", path("dep.jar")),
            "--conf",
            "spark.kubernetes.driver.podTemplateFile=/mine/driver.yaml",
            "--conf",
            "spark.kubernetes.executor.podTemplateContainerName=main",
            &path("app.jar"),
        ]))
        .unwrap();
        let properties = BTreeMap::from([(
            "spark.kubernetes.namespace".to_owned(),
            "from-props".to_owned(),
        )]);
        let id = SubmissionId::generate();
        let plan = SparkPlan::new(submit, properties, &options(), id.clone(), || {
            panic!("Spark named the namespace; the kubeconfig is not read")
        })
        .unwrap();
        let submission = &plan.submission;
        assert_eq!(submission.namespace, "from-props");
        assert_eq!(submission.app_name.as_deref(), Some("etl"));
        assert_eq!(submission.id, id);
        let staged: Vec<&str> = submission
            .deliveries
            .staged()
            .iter()
            .map(|f| f.path.as_str())
            .collect();
        assert_eq!(staged, ["jars/dep.jar", "app/app.jar"]);
        assert_eq!(submission.deliveries.fetched().len(), 1);
        assert_eq!(
            submission
                .deliveries
                .rewrite(&Dependency::parse(Kind::Jar, "s3a://b/x.jar")),
            Some("local:///var/ferry/jars/x.jar")
        );
        assert_eq!(
            plan.templates,
            [
                TemplatePlan {
                    role: Role::Driver,
                    base: Some("/mine/driver.yaml".into()),
                    container: "spark-kubernetes-driver".into(),
                    path: "/t/driver-pod-template.yaml".into(),
                },
                TemplatePlan {
                    role: Role::Executor,
                    base: None,
                    container: "main".into(),
                    path: "/t/executor-pod-template.yaml".into(),
                },
            ]
        );
    }

    #[test]
    fn the_namespace_comes_from_the_flag_then_spark_then_the_kubeconfig() {
        let dir = project();
        let jar = dir.path().join("app.jar").display().to_string();
        let plan = |namespace: Option<&str>, conf: Option<&str>, context: Option<&str>| {
            let mut args = vec!["spark-submit".to_owned()];
            if let Some(ns) = conf {
                args.extend(["--conf".into(), format!("spark.kubernetes.namespace={ns}")]);
            }
            args.push(jar.clone());
            let options = PlanOptions {
                namespace: namespace.map(str::to_owned),
                ..options()
            };
            let context = context.map(str::to_owned);
            SparkPlan::new(
                SparkSubmit::parse(&args).unwrap(),
                BTreeMap::new(),
                &options,
                SubmissionId::generate(),
                move || context,
            )
            .unwrap()
            .submission
            .namespace
        };
        assert_eq!(plan(Some("flag"), Some("conf"), Some("ctx")), "flag");
        assert_eq!(plan(None, Some("conf"), Some("ctx")), "conf");
        assert_eq!(plan(None, None, Some("ctx")), "ctx");
        assert_eq!(plan(None, None, None), "default");
    }

    #[test]
    fn a_command_without_local_dependencies_is_refused_before_staging() {
        let submit = SparkSubmit::parse(&argv(&[
            "spark-submit",
            "--jars",
            "s3a://b/x.jar",
            "local:///opt/app.jar",
        ]))
        .unwrap();
        let error = SparkPlan::new(
            submit,
            BTreeMap::new(),
            &options(),
            SubmissionId::generate(),
            || None,
        )
        .unwrap_err();
        assert!(matches!(error, SubmissionError::OnlyRemote), "{error}");
    }
}
