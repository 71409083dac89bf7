//! The spark-submit side of rendering a staged submission: the merged pod
//! templates at the paths the command names, the `--conf`s that point Spark
//! at them and label the pods, the rewritten command, and what `--dry-run`
//! prints (text, or one JSON object). Pure: writing the templates, creating
//! the Secret and running the command are the caller's.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ferry_core::BundleId;
use k8s_openapi::api::core::v1::{Pod, Secret};
use serde::Serialize;

use super::submission::{Role, SparkPlan};
use super::{append_driver_class_path, rewrite};
use crate::submission::remote::{self, REDACTED};
use crate::submission::render::{PodDelivery, PodOptions};

/// One merged pod template and where it goes.
#[derive(Debug, Clone)]
pub struct RenderedTemplate {
    pub role: Role,
    pub path: PathBuf,
    pub pod: Pod,
    /// The pod as written to `path`.
    pub yaml: String,
}

/// Everything `ferry submit` writes, creates or runs.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub bundle: BundleId,
    pub secret: Secret,
    /// Driver, then executor (the executor's alone in client mode).
    pub templates: Vec<RenderedTemplate>,
    /// spark-submit with every dependency rewritten, program first.
    pub command: Vec<String>,
    /// The Secret as a dry run shows it (carried store secrets redacted).
    pub shown_secret: Secret,
}

/// What a dry run prints with `--output json`.
#[derive(Debug, Serialize)]
struct DryRun<'a> {
    bundle: &'a BundleId,
    secret: &'a Secret,
    /// `null` in client mode, where Spark starts no driver pod.
    driver_template: Option<String>,
    executor_template: Option<String>,
    command: &'a [String],
}

/// Renders `plan` once its files are staged as `bundle` (read `token`).
/// `bases` holds the user's own templates, read from the paths the plan
/// names.
pub fn render(
    plan: &SparkPlan,
    bundle: &BundleId,
    token: &str,
    options: &PodOptions,
    bases: &BTreeMap<Role, Pod>,
) -> Result<Rendered, serde_yaml::Error> {
    let delivery = PodDelivery::new(&plan.submission, bundle, token, options);
    let templates = plan
        .templates
        .iter()
        .map(|template| {
            let pod = delivery.template_for(
                bases.get(&template.role).cloned(),
                &template.container,
                template.role.side(),
            );
            Ok(RenderedTemplate {
                role: template.role,
                path: template.path.clone(),
                yaml: serde_yaml::to_string(&pod)?,
                pod,
            })
        })
        .collect::<Result<Vec<_>, serde_yaml::Error>>()?;
    let deliveries = &plan.submission.deliveries;
    let replace = |dep: &crate::submission::Dependency| deliveries.rewrite(dep).map(str::to_owned);
    let mut command = rewrite(&plan.submit, &plan.properties, &replace, &confs(plan));
    // Client mode: the jar list now names the executors' copies; the
    // driver, here, loads the files as given.
    if let Some(jars) = &plan.driver_class_path {
        append_driver_class_path(&mut command, &plan.properties, jars);
    }
    let command = command.to_argv();
    Ok(Rendered {
        bundle: bundle.clone(),
        shown_secret: plan.submission.remote.shown(&delivery.secret),
        secret: delivery.secret,
        templates,
        command,
    })
}

/// The settings ferry adds: each role's template and main container, the
/// labels that make the pods own the bundle, and the namespace if Spark
/// had none.
fn confs(plan: &SparkPlan) -> Vec<(String, String)> {
    let mut confs = Vec::new();
    for template in &plan.templates {
        let role = template.role;
        confs.push((
            role.setting("podTemplateFile"),
            template.path.display().to_string(),
        ));
        confs.push((
            role.setting("podTemplateContainerName"),
            template.container.clone(),
        ));
        for (key, value) in plan.submission.pod_labels() {
            confs.push((role.setting(&format!("label.{key}")), value.clone()));
        }
    }
    if plan.setting("spark.kubernetes.namespace").is_none() {
        confs.push((
            "spark.kubernetes.namespace".into(),
            plan.submission.namespace.clone(),
        ));
    }
    // Spark 4's driver copies every `local://` jar into its working
    // directory and serves that copy to each executor (spark://.../jars/),
    // which makes the driver the fan-out point ferry-init exists to remove.
    // Jars of a scheme listed here stay `local://`, so each executor uses
    // the copy its own ferry-init delivered. (Spark has no such switch for
    // --files, --py-files or --archives; see the README.)
    if let Some(schemes) = avoid_download_schemes(plan.setting(AVOID_DOWNLOAD)) {
        confs.push((AVOID_DOWNLOAD.into(), schemes));
    }
    confs
}

/// Spark 4: schemes whose jars the driver neither downloads nor serves.
pub(crate) const AVOID_DOWNLOAD: &str = "spark.kubernetes.jars.avoidDownloadSchemes";

/// The user's `spark.kubernetes.jars.avoidDownloadSchemes` with `local`
/// added; `None` when it already covers `local` (listed, or `*`).
pub(crate) fn avoid_download_schemes(user: Option<&str>) -> Option<String> {
    let mut schemes: Vec<&str> = user
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if schemes.iter().any(|s| *s == "local" || *s == "*") {
        return None;
    }
    schemes.push("local");
    Some(schemes.join(","))
}

impl Rendered {
    /// `--dry-run --output json`: bundle, Secret, template paths, command.
    pub fn dry_run_json(&self) -> Result<String, serde_json::Error> {
        let path_of = |role: Role| {
            self.templates
                .iter()
                .find(|t| t.role == role)
                .map(|t| t.path.display().to_string())
        };
        serde_json::to_string_pretty(&DryRun {
            bundle: &self.bundle,
            secret: &self.shown_secret,
            driver_template: path_of(Role::Driver),
            executor_template: path_of(Role::Executor),
            command: &self.shown_command(),
        })
    }

    /// `--dry-run`: the Secret, each template under its path, and the
    /// command as a shell line, as one YAML stream.
    pub fn dry_run_text(&self) -> Result<String, serde_yaml::Error> {
        let mut text = serde_yaml::to_string(&self.shown_secret)?;
        for template in &self.templates {
            text.push_str(&format!("---\n# {}\n", template.path.display()));
            text.push_str(&template.yaml);
        }
        let quoted: Vec<String> = self
            .shown_command()
            .iter()
            .map(|a| shell_quote(a))
            .collect();
        text.push_str(&format!(
            "---\n# spark-submit command:\n# {}\n",
            quoted.join(" ")
        ));
        Ok(text)
    }
}

impl Rendered {
    /// The command as a dry run shows it: secret settings redacted.
    pub fn shown_command(&self) -> Vec<String> {
        redact_command(&self.command)
    }
}

/// `command` with the value of every secret `--conf key=value` (see
/// [`remote::is_secret_setting`]) replaced.
pub fn redact_command(command: &[String]) -> Vec<String> {
    let redact = |setting: &str| match setting.split_once('=') {
        Some((key, _)) if remote::is_secret_setting(key) => Some(format!("{key}={REDACTED}")),
        _ => None,
    };
    let mut out = Vec::with_capacity(command.len());
    let mut after_conf = false;
    for arg in command {
        let shown = if after_conf {
            redact(arg)
        } else if let Some(setting) = arg.strip_prefix("--conf=") {
            redact(setting).map(|s| format!("--conf={s}"))
        } else {
            None
        };
        after_conf = arg == "--conf" || arg == "-c";
        out.push(shown.unwrap_or_else(|| arg.clone()));
    }
    out
}

/// Quotes one argument for a POSIX shell.
pub fn shell_quote(arg: &str) -> String {
    let safe = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,@%+[]".contains(&b));
    if safe {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spark::SparkSubmit;
    use crate::spark::submission::PlanOptions;
    use crate::submission::SubmissionId;

    fn argv(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        plan: SparkPlan,
    }

    /// `spark-submit --jars <dep.jar>,s3a://b/x.jar --files 'conf dir/a.conf#cfg' <app.jar> arg`.
    fn fixture(extra: &[&str]) -> Fixture {
        planned(extra, false)
    }

    /// The same, planned for cluster mode or (`executors_only`) client mode.
    fn planned(extra: &[&str], executors_only: bool) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("conf dir")).unwrap();
        for name in ["app.jar", "dep.jar", "conf dir/a.conf"] {
            std::fs::write(dir.path().join(name), name).unwrap();
        }
        let path = |n: &str| dir.path().join(n).display().to_string();
        let mut args = argv(&["spark-submit", "--master", "k8s://https://k:6443"]);
        args.extend(extra.iter().map(|a| a.to_string()));
        args.extend([
            "--jars".into(),
            format!("{},s3a://b/x.jar", path("dep.jar")),
            "--files".into(),
            format!("{}#cfg", path("conf dir/a.conf")),
            path("app.jar"),
            "arg".into(),
        ]);
        let plan = SparkPlan::new(
            SparkSubmit::parse(&args).unwrap(),
            BTreeMap::new(),
            &PlanOptions {
                namespace: Some("jobs".into()),
                deps_dir: crate::k8s::DEPS_DIR.parse().unwrap(),
                template_dir: Some("/t".into()),
                executors_only,
            },
            SubmissionId::generate(),
            || None,
        )
        .unwrap();
        Fixture { _dir: dir, plan }
    }

    fn options() -> PodOptions {
        PodOptions {
            image: "ferry-init:test".into(),
            server: "http://ferry.ferry-system.svc:7070".into(),
            node_cache: None,
            work_dir: None,
        }
    }

    /// `fixture` rendered with the default pod options and no user templates.
    fn rendered(fixture: &Fixture) -> Rendered {
        render(
            &fixture.plan,
            &bundle(),
            "tok",
            &options(),
            &BTreeMap::new(),
        )
        .unwrap()
    }

    fn bundle() -> BundleId {
        BundleId::parse("id-0000000000000000000000000c").unwrap()
    }

    #[test]
    fn client_mode_gives_executors_the_jars_and_the_driver_its_own_paths() {
        let fixture = planned(&["--driver-class-path", "/opt/mine.jar"], true);
        let plan = &fixture.plan;
        let dep = fixture._dir.path().join("dep.jar").display().to_string();
        let staged: Vec<&str> = plan
            .submission
            .deliveries
            .staged()
            .iter()
            .map(|f| f.path.as_str())
            .collect();
        assert_eq!(staged, ["jars/dep.jar"], "only the local jar");
        assert!(plan.submission.deliveries.fetched().is_empty());
        let client = rendered(&fixture);
        let command = &client.command;
        let after = |option: &str| {
            let at = command.iter().position(|a| a == option).unwrap();
            command[at + 1].clone()
        };
        // Executors load their own copy; the remote jar stays Spark's.
        assert_eq!(
            after("--jars"),
            "local:///var/ferry/jars/dep.jar,s3a://b/x.jar"
        );
        assert_eq!(after("--driver-class-path"), format!("/opt/mine.jar:{dep}"));
        let files = fixture
            ._dir
            .path()
            .join("conf dir/a.conf")
            .display()
            .to_string();
        assert_eq!(after("--files"), format!("{files}#cfg"));
        let app = fixture._dir.path().join("app.jar").display().to_string();
        assert_eq!(&command[command.len() - 2..], [app, "arg".to_owned()]);
        assert!(
            command
                .iter()
                .all(|a| !a.starts_with("spark.kubernetes.driver.")),
            "{command:?}"
        );
        assert!(command.iter().any(
            |a| a == "spark.kubernetes.executor.podTemplateFile=/t/executor-pod-template.yaml"
        ));
        let roles: Vec<Role> = client.templates.iter().map(|t| t.role).collect();
        assert_eq!(roles, [Role::Executor]);
        let json: serde_json::Value =
            serde_json::from_str(&client.dry_run_json().unwrap()).unwrap();
        assert!(json["driver_template"].is_null());
        // Without --driver-class-path, the setting (after the user's) does it.
        let fixture = planned(&["--conf", "spark.driver.extraClassPath=/a.jar"], true);
        let command = rendered(&fixture).command;
        let dep = fixture._dir.path().join("dep.jar").display().to_string();
        let set: Vec<&String> = command
            .iter()
            .filter(|a| a.starts_with("spark.driver.extraClassPath="))
            .collect();
        assert_eq!(set, [&format!("spark.driver.extraClassPath=/a.jar:{dep}")]);
    }

    #[test]
    fn the_command_points_at_the_pods_copies_templates_and_labels() {
        let fixture = fixture(&[]);
        let plan = &fixture.plan;
        let rendered = render(plan, &bundle(), "tok", &options(), &BTreeMap::new()).unwrap();
        let id = plan.submission.id.as_str();
        let expected: Vec<String> = [
            "spark-submit",
            "--master",
            "k8s://https://k:6443",
            "--jars",
            "local:///var/ferry/jars/dep.jar,local:///var/ferry/jars/x.jar",
            "--files",
            "local:///var/ferry/files/a.conf#cfg",
            "--conf",
            "spark.kubernetes.driver.podTemplateFile=/t/driver-pod-template.yaml",
            "--conf",
            "spark.kubernetes.driver.podTemplateContainerName=spark-kubernetes-driver",
            "--conf",
            &format!("spark.kubernetes.driver.label.ferry.dev/submission={id}"),
            "--conf",
            "spark.kubernetes.executor.podTemplateFile=/t/executor-pod-template.yaml",
            "--conf",
            "spark.kubernetes.executor.podTemplateContainerName=spark-kubernetes-executor",
            "--conf",
            &format!("spark.kubernetes.executor.label.ferry.dev/submission={id}"),
            "--conf",
            "spark.kubernetes.namespace=jobs",
            "--conf",
            "spark.kubernetes.jars.avoidDownloadSchemes=local",
            "local:///var/ferry/app/app.jar",
            "arg",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(rendered.command, expected);
        let paths: Vec<&str> = rendered
            .templates
            .iter()
            .map(|t| t.path.to_str().unwrap())
            .collect();
        assert_eq!(
            paths,
            [
                "/t/driver-pod-template.yaml",
                "/t/executor-pod-template.yaml"
            ]
        );
        // Each template's ferry-init fetches the bundle and the remote jar.
        for template in &rendered.templates {
            let reread: Pod = serde_yaml::from_str(&template.yaml).unwrap();
            assert_eq!(reread, template.pod);
            let spec = template.pod.spec.as_ref().unwrap();
            let init = &spec.init_containers.as_ref().unwrap()[0];
            let plan = crate::k8s::plan_of(init).unwrap();
            let items: Vec<(String, &str)> = plan
                .items
                .iter()
                .map(|i| (i.uri.to_string(), i.dest.as_str()))
                .collect();
            assert_eq!(
                items,
                [
                    (format!("ferry://{}", bundle()), "/var/ferry/other"),
                    ("s3a://b/x.jar".to_owned(), "/var/ferry/jars"),
                ]
            );
        }
    }

    #[test]
    fn a_namespace_spark_already_has_is_not_repeated_and_user_templates_are_merged() {
        let fixture = fixture(&["--conf", "spark.kubernetes.namespace=jobs"]);
        let base: Pod =
            serde_yaml::from_str("metadata:\n  labels: {team: data}\nspec:\n  containers: []\n")
                .unwrap();
        let bases = BTreeMap::from([(Role::Executor, base)]);
        let rendered = render(&fixture.plan, &bundle(), "tok", &options(), &bases).unwrap();
        let namespaces = rendered
            .command
            .iter()
            .filter(|a| a.starts_with("spark.kubernetes.namespace="))
            .count();
        assert_eq!(namespaces, 1);
        let labels = |i: usize| rendered.templates[i].pod.metadata.labels.clone();
        assert_eq!(labels(0), None);
        assert_eq!(labels(1).unwrap()["team"], "data");
    }

    #[test]
    fn dry_runs_print_the_same_facts_as_text_and_json() {
        let fixture = fixture(&[]);
        let rendered = rendered(&fixture);
        let json: serde_json::Value =
            serde_json::from_str(&rendered.dry_run_json().unwrap()).unwrap();
        assert_eq!(json["bundle"], bundle().as_str());
        assert_eq!(json["secret"]["stringData"]["token"], "tok");
        assert_eq!(json["driver_template"], "/t/driver-pod-template.yaml");
        assert_eq!(json["executor_template"], "/t/executor-pod-template.yaml");
        assert_eq!(json["command"], serde_json::json!(rendered.command));

        let text = rendered.dry_run_text().unwrap();
        let documents: Vec<&str> = text.split("---\n").collect();
        assert_eq!(documents.len(), 4, "{text}");
        let secret: Secret = serde_yaml::from_str(documents[0]).unwrap();
        assert_eq!(secret, rendered.secret);
        assert!(documents[1].starts_with("# /t/driver-pod-template.yaml\n"));
        assert!(documents[1].ends_with(&rendered.templates[0].yaml));
        assert!(documents[3].contains("local:///var/ferry/files/a.conf#cfg"));
    }

    #[test]
    fn with_an_upload_path_no_dependency_is_left_for_spark_to_upload() {
        // Spark uploads each local path and file:// URI to the upload path;
        // ferry rewrites every one to local://, which Spark never uploads.
        let fixture = fixture(&["--conf", "spark.kubernetes.file.upload.path=s3a://b/up"]);
        let rendered = rendered(&fixture);
        let command = &rendered.command;
        let mut uploaded = Vec::new();
        for (i, arg) in command.iter().enumerate() {
            if ["--jars", "--files", "--py-files", "--archives"].contains(&arg.as_str()) {
                uploaded.extend(command[i + 1].split(',').map(str::to_owned));
            }
        }
        uploaded.push(command[command.len() - 2].clone());
        assert_eq!(uploaded.len(), 4, "{command:?}");
        for dep in &uploaded {
            assert!(
                dep.starts_with("local://") || dep.starts_with("s3a://"),
                "{dep} would be uploaded by Spark too"
            );
            assert!(!dep.starts_with('/') && !dep.starts_with("file:"), "{dep}");
        }
        assert!(command.contains(&"spark.kubernetes.file.upload.path=s3a://b/up".to_owned()));
    }

    #[test]
    fn dry_runs_redact_carried_store_secrets() {
        let fixture = fixture(&[
            "--conf",
            "spark.hadoop.fs.s3a.secret.key=very-secret",
            "--conf=spark.hadoop.fs.s3a.access.key=AKIDX",
            "--conf",
            "spark.hadoop.fs.s3a.endpoint=http://minio:9000",
        ]);
        let rendered = rendered(&fixture);
        let data = rendered.secret.string_data.as_ref().unwrap();
        assert_eq!(data["spark.hadoop.fs.s3a.secret.key"], "very-secret");
        let text = rendered.dry_run_text().unwrap();
        let json = rendered.dry_run_json().unwrap();
        for shown in [&text, &json] {
            assert!(
                !shown.contains("very-secret") && !shown.contains("AKIDX"),
                "{shown}"
            );
            assert!(shown.contains("spark.hadoop.fs.s3a.endpoint=http://minio:9000"));
        }
        let json: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            json["secret"]["stringData"]["token"], "tok",
            "the bundle token stays"
        );
        assert_eq!(
            json["secret"]["stringData"]["spark.hadoop.fs.s3a.secret.key"],
            REDACTED
        );
        assert!(
            text.contains("--conf=spark.hadoop.fs.s3a.access.key=<redacted>"),
            "{text}"
        );
    }

    #[test]
    fn shell_quoting_round_trips_awkward_arguments() {
        assert_eq!(shell_quote("--conf"), "--conf");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn local_jars_are_kept_from_the_drivers_file_server() {
        assert_eq!(avoid_download_schemes(None).as_deref(), Some("local"));
        assert_eq!(
            avoid_download_schemes(Some("s3a, gs")).as_deref(),
            Some("s3a,gs,local")
        );
        assert_eq!(avoid_download_schemes(Some("local,s3a")), None);
        assert_eq!(avoid_download_schemes(Some("*")), None);
    }

    #[test]
    fn archives_leave_sparks_lists_and_are_mounted_in_the_working_directory() {
        let fixture = fixture(&[
            "--archives",
            "s3a://b/envs/pyspark_venv.tar.gz#environment",
            "--conf",
            "spark.archives=https://h/more.zip",
            "--conf",
            "spark.pyspark.python=./environment/bin/python",
        ]);
        let base: Pod = serde_yaml::from_str(
            "spec:\n  containers:\n  - name: spark-kubernetes-executor\n    workingDir: /app\n",
        )
        .unwrap();
        let bases = BTreeMap::from([(Role::Executor, base)]);
        let rendered = render(&fixture.plan, &bundle(), "tok", &options(), &bases).unwrap();
        let command = rendered.command.join(" ");
        assert!(!command.contains("--archives"), "{command}");
        assert!(!command.contains("spark.archives"), "{command}");
        assert!(!command.contains("pyspark_venv"), "{command}");
        assert!(
            command.contains("spark.pyspark.python=./environment/bin/python"),
            "left as written: {command}"
        );
        for (template, work_dir) in rendered
            .templates
            .iter()
            .zip(["/opt/spark/work-dir", "/app"])
        {
            let spec = template.pod.spec.as_ref().unwrap();
            let plan = crate::k8s::plan_of(&spec.init_containers.as_ref().unwrap()[0]).unwrap();
            let archives: Vec<(String, &str, &str, bool)> = plan
                .items
                .iter()
                .filter(|i| i.dest == "/var/ferry/archives")
                .map(|i| {
                    (
                        i.uri.to_string(),
                        i.dest.as_str(),
                        i.name.as_ref().unwrap().as_str(),
                        i.unpack,
                    )
                })
                .collect();
            assert_eq!(
                archives,
                [
                    (
                        "s3a://b/envs/pyspark_venv.tar.gz".to_owned(),
                        "/var/ferry/archives",
                        "environment",
                        true
                    ),
                    (
                        "https://h/more.zip".to_owned(),
                        "/var/ferry/archives",
                        "more.zip",
                        true
                    ),
                ]
            );
            let mounts: Vec<(String, Option<String>)> = spec.containers[0]
                .volume_mounts
                .as_ref()
                .unwrap()
                .iter()
                .filter(|m| m.sub_path.is_some())
                .map(|m| (m.mount_path.clone(), m.sub_path.clone()))
                .collect();
            assert_eq!(
                mounts,
                [
                    (
                        format!("{work_dir}/environment"),
                        Some("archives/environment".to_owned())
                    ),
                    (
                        format!("{work_dir}/more.zip"),
                        Some("archives/more.zip".to_owned())
                    ),
                ]
            );
        }
        assert!(
            rendered
                .dry_run_text()
                .unwrap()
                .contains("subPath: archives/environment")
        );
    }
}
