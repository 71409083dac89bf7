//! `ferry submit [options] -- spark-submit ARGS...`: stage every local
//! dependency as one bundle owned by the application's pods, hand the token
//! to the pods as a Secret, add ferry-init to the pod templates, and run
//! spark-submit with every dependency rewritten to a `local://` path.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context as _;
use ferry_core::Ttl;
use ferry_core::api::Owner;
use k8s_openapi::api::core::v1::Pod;
use serde::Serialize;

use crate::api::ApiClient;
use crate::command::stage::{Output, StageRequest, stage};
use crate::files::LocalFile;
use crate::k8s::{self, InitSpec};
use crate::spark::{self, Dependency, Kind, Origin, SparkSubmit, encode_path};

/// Label put on driver and executor pods; the bundle lives while a pod has it.
pub const SUBMISSION_LABEL: &str = "ferry.dev/submission";

#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    /// Stage and print the Secret, pod templates and command instead of
    /// creating the Secret and running spark-submit.
    #[arg(long, env = "FERRY_DRY_RUN")]
    pub dry_run: bool,
    /// Write the token's Secret manifest to this file (mode 0600) instead of
    /// creating it through the Kubernetes API; apply it yourself before the
    /// pods start (e.g. GitOps, or no API access from this machine).
    #[arg(long, env = "FERRY_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
    /// ferry-init image for the init container.
    #[arg(long, env = "FERRY_INIT_IMAGE", default_value = concat!("ghcr.io/ferry-dev/ferry-init:", env!("CARGO_PKG_VERSION")))]
    pub init_image: String,
    /// Server URL as pods reach it (default: --server), e.g.
    /// http://ferry.ferry-system.svc:7070.
    #[arg(long, env = "FERRY_POD_SERVER")]
    pub pod_server: Option<String>,
    /// Namespace of the Secret and the pods (default: spark.kubernetes.namespace,
    /// else the kubeconfig context's, else "default").
    #[arg(long, env = "FERRY_NAMESPACE")]
    pub namespace: Option<String>,
    /// Where the generated pod templates are written (default: a new folder
    /// under the system temp directory).
    #[arg(long, env = "FERRY_TEMPLATE_DIR")]
    pub template_dir: Option<PathBuf>,
    /// Folder inside the pods where dependencies land (the shared volume's
    /// mount path); the rewritten command points there.
    #[arg(long, env = "FERRY_DEPS_DIR", default_value = k8s::DEPS_DIR, value_parser = parse_deps_dir)]
    pub deps_dir: String,
    /// hostPath of a node-local cache shared by ferry-init containers.
    #[arg(long, env = "FERRY_NODE_CACHE")]
    pub node_cache: Option<String>,
    /// Bundle lifetime if its pods are never seen (default: the server's).
    #[arg(long, env = "FERRY_TTL")]
    pub ttl: Option<Ttl>,
    /// With --dry-run: print text (YAML and the command) or one JSON object.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// spark-submit and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "SPARK_SUBMIT_ARGS")]
    pub spark_submit: Vec<String>,
}

/// What a dry run prints with `--output json`.
#[derive(Debug, Serialize)]
struct DryRun {
    bundle: String,
    secret: k8s_openapi::api::core::v1::Secret,
    driver_template: String,
    executor_template: String,
    command: Vec<String>,
}

/// Local files to stage and remote URIs to fetch, with what each becomes.
#[derive(Debug, Default)]
pub struct Plan {
    pub files: Vec<LocalFile>,
    pub remote_jars: Vec<String>,
    pub remote_files: Vec<String>,
    /// Dependency as written (without alias) → its `local://` replacement.
    pub replacements: BTreeMap<(Kind, String), String>,
}

fn parse_deps_dir(text: &str) -> Result<String, String> {
    let trimmed = text.trim_end_matches('/');
    if !text.starts_with('/') || trimmed.is_empty() {
        return Err(format!("{text:?} is not an absolute folder other than /"));
    }
    if trimmed
        .chars()
        .any(|c| c.is_control() || matches!(c, ',' | '#' | '?' | '%'))
    {
        return Err(format!(
            "{text:?} has a character Spark URI lists cannot carry"
        ));
    }
    Ok(trimmed.to_owned())
}

/// Decides where every dependency goes, under `deps_dir` in the pods.
pub fn plan(deps: &[Dependency], deps_dir: &str) -> anyhow::Result<Plan> {
    let mut plan = Plan::default();
    let mut landing: BTreeMap<String, String> = BTreeMap::new();
    for dep in deps {
        let key = (dep.kind, dep.location.clone());
        if plan.replacements.contains_key(&key) {
            continue;
        }
        let (group, name, origin) = match dep.origin() {
            Origin::Untouched => continue,
            Origin::Local(path) => {
                let meta = std::fs::metadata(&path).with_context(|| {
                    format!("{} dependency {}", dep.kind.group(), path.display())
                })?;
                anyhow::ensure!(
                    meta.is_file(),
                    "{} is a folder; spark-submit takes files (zip it, or stage it with `ferry stage`)",
                    path.display()
                );
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .with_context(|| format!("{} has no UTF-8 file name", path.display()))?
                    .to_owned();
                use std::os::unix::fs::PermissionsExt as _;
                let executable = meta.permissions().mode() & 0o111 != 0;
                (dep.kind.group(), name, Some((path, executable)))
            }
            Origin::Remote(uri) => {
                // ferry-init fetches remote jars into jars/, everything else into files/.
                let group = if dep.kind == Kind::Jar {
                    plan.remote_jars.push(uri);
                    "jars"
                } else {
                    plan.remote_files.push(uri);
                    "files"
                };
                (group, dep.file_name(), None)
            }
        };
        anyhow::ensure!(!name.is_empty(), "{} has no file name", dep.location);
        let target = format!("{group}/{name}");
        if let Some(previous) = landing.insert(target.clone(), dep.location.clone())
            && previous != dep.location
        {
            anyhow::bail!(
                "{previous} and {} would both land at {deps_dir}/{target}; rename one",
                dep.location
            );
        }
        if let Some((source, executable)) = origin {
            let path = ferry_core::EntryPath::parse(&target)
                .with_context(|| format!("{} cannot be staged", source.display()))?;
            plan.files.push(LocalFile {
                source,
                path,
                executable,
            });
        }
        plan.replacements.insert(
            key,
            format!(
                "local://{}/{group}/{}",
                encode_path(deps_dir),
                encode_path(&name)
            ),
        );
    }
    Ok(plan)
}

/// Spark 4: schemes whose jars the driver neither downloads nor serves.
const AVOID_DOWNLOAD: &str = "spark.kubernetes.jars.avoidDownloadSchemes";

/// The user's `spark.kubernetes.jars.avoidDownloadSchemes` with `local`
/// added; `None` when it already covers `local` (listed, or `*`).
fn avoid_download_schemes(user: Option<&str>) -> Option<String> {
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

/// A short random id for this submission (a valid label value).
fn submission_id() -> String {
    let seed = format!(
        "{:?}-{}-{:?}",
        std::time::SystemTime::now(),
        std::process::id(),
        std::thread::current().id()
    );
    format!("s-{}", &ferry_core::Digest::of(seed.as_bytes()).hex()[..12])
}

fn read_template(path: &str) -> anyhow::Result<Pod> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading pod template {path}"))?;
    serde_yaml::from_str(&text).with_context(|| format!("pod template {path} is not a Pod"))
}

/// Writes `bytes` to a new file only its owner can read.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
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

pub async fn run(client: &ApiClient, args: SubmitArgs, quiet: bool) -> anyhow::Result<u8> {
    let submit = SparkSubmit::parse(&args.spark_submit)?;
    let properties = match submit.value("--properties-file") {
        Some(path) => spark::properties::parse(
            &std::fs::read_to_string(path)
                .with_context(|| format!("reading --properties-file {path}"))?,
        ),
        None => BTreeMap::new(),
    };
    let setting = |key: &str| {
        submit
            .conf(key)
            .map(str::to_owned)
            .or_else(|| properties.get(key).cloned())
    };
    let deps = spark::dependencies(&submit, &properties);
    let plan = plan(&deps, &args.deps_dir)?;
    let namespace = args
        .namespace
        .clone()
        .or_else(|| setting("spark.kubernetes.namespace"))
        .or_else(k8s::kubeconfig_namespace)
        .unwrap_or_else(|| "default".to_owned());
    let submission = submission_id();

    let mut labels = BTreeMap::from([(SUBMISSION_LABEL.to_owned(), submission.clone())]);
    if let Some(app) = submit
        .value("--name")
        .map(str::to_owned)
        .or_else(|| setting("spark.app.name"))
    {
        labels.insert("spark-app-name".into(), app);
    }
    let staged = if plan.files.is_empty()
        && plan.remote_jars.is_empty()
        && plan.remote_files.is_empty()
    {
        anyhow::bail!(
            "no local or remote dependencies to hand to the pods; run spark-submit directly"
        );
    } else if plan.files.is_empty() {
        anyhow::bail!(
            "only remote dependencies: ferry submit needs at least one local file to stage (the bundle carries the pods' token)"
        );
    } else {
        stage(
            client,
            StageRequest {
                files: plan.files.clone(),
                name: None,
                ttl: args.ttl,
                labels,
                owner: Some(Owner {
                    namespace: namespace.clone(),
                    selector: format!("{SUBMISSION_LABEL}={submission}"),
                }),
                quiet,
            },
        )
        .await?
    };

    let secret_name = format!("ferry-{}", staged.id.to_ascii_lowercase());
    let secret = k8s::secret(&secret_name, &namespace, &staged.id, &staged.token);
    let mut extra_args = Vec::new();
    if !plan.remote_jars.is_empty() {
        extra_args.extend([
            "--spark-jars".to_owned(),
            plan.remote_jars.join(","),
            "--jars-dir".to_owned(),
            format!("{}/jars", args.deps_dir),
        ]);
    }
    if !plan.remote_files.is_empty() {
        extra_args.extend([
            "--spark-files".to_owned(),
            plan.remote_files.join(","),
            "--files-dir".to_owned(),
            format!("{}/files", args.deps_dir),
        ]);
    }
    let init = InitSpec {
        image: args.init_image.clone(),
        server: args
            .pod_server
            .clone()
            .unwrap_or_else(|| client.server().to_owned()),
        bundle_id: staged.id.clone(),
        secret_name: secret_name.clone(),
        extra_args,
        node_cache: args.node_cache.clone(),
        deps_dir: args.deps_dir.clone(),
    };

    let template_dir = args
        .template_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("ferry-{submission}")));
    std::fs::create_dir_all(&template_dir)
        .with_context(|| format!("creating {}", template_dir.display()))?;
    let mut confs: Vec<(String, String)> = Vec::new();
    let mut written = Vec::new();
    for role in ["driver", "executor"] {
        let base = setting(&format!("spark.kubernetes.{role}.podTemplateFile"))
            .map(|p| read_template(&p))
            .transpose()?;
        let container = setting(&format!("spark.kubernetes.{role}.podTemplateContainerName"))
            .unwrap_or_else(|| format!("spark-kubernetes-{role}"));
        let pod = k8s::merge_template(base, &init, &container);
        let path = template_dir.join(format!("{role}-pod-template.yaml"));
        std::fs::write(&path, serde_yaml::to_string(&pod)?)
            .with_context(|| format!("writing {}", path.display()))?;
        confs.push((
            format!("spark.kubernetes.{role}.podTemplateFile"),
            path.display().to_string(),
        ));
        confs.push((
            format!("spark.kubernetes.{role}.podTemplateContainerName"),
            container,
        ));
        confs.push((
            format!("spark.kubernetes.{role}.label.{SUBMISSION_LABEL}"),
            submission.clone(),
        ));
        written.push(path);
    }
    if setting("spark.kubernetes.namespace").is_none() {
        confs.push(("spark.kubernetes.namespace".into(), namespace.clone()));
    }
    // Spark 4's driver copies every `local://` jar into its working
    // directory and serves that copy to each executor (spark://.../jars/),
    // which makes the driver the fan-out point ferry-init exists to remove.
    // Jars of a scheme listed here stay `local://`, so each executor uses
    // the copy its own ferry-init delivered. (Spark has no such switch for
    // --files, --py-files or --archives; see the README.)
    if let Some(schemes) = avoid_download_schemes(setting(AVOID_DOWNLOAD).as_deref()) {
        confs.push((AVOID_DOWNLOAD.into(), schemes));
    }
    let replace = |dep: &Dependency| {
        plan.replacements
            .get(&(dep.kind, dep.location.clone()))
            .cloned()
    };
    let rewritten = spark::rewrite(&submit, &properties, &replace, &confs);
    let command = rewritten.to_argv();

    if args.dry_run {
        match args.output {
            Output::Json => println!(
                "{}",
                serde_json::to_string_pretty(&DryRun {
                    bundle: staged.id.clone(),
                    secret,
                    driver_template: written[0].display().to_string(),
                    executor_template: written[1].display().to_string(),
                    command,
                })?
            ),
            Output::Text => {
                print!("{}", serde_yaml::to_string(&secret)?);
                for path in &written {
                    println!("---\n# {}", path.display());
                    print!("{}", std::fs::read_to_string(path)?);
                }
                let quoted: Vec<String> = command.iter().map(|a| shell_quote(a)).collect();
                println!("---\n# spark-submit command:\n# {}", quoted.join(" "));
            }
        }
        return Ok(0);
    }

    let secret_note = match &args.secret_file {
        Some(path) => {
            write_private(path, serde_yaml::to_string(&secret)?.as_bytes())?;
            format!(
                "Secret {namespace}/{secret_name} written to {}",
                path.display()
            )
        }
        None => {
            k8s::apply_secret(&secret).await?;
            format!("Secret {namespace}/{secret_name} created")
        }
    };
    if !quiet {
        eprintln!(
            "ferry: staged bundle {} ({} files, {} bytes uploaded); {secret_note}; templates in {}",
            staged.id,
            staged.entries.len(),
            staged.uploaded.bytes,
            template_dir.display()
        );
    }
    let status = std::process::Command::new(&command[0])
        .args(&command[1..])
        .status()
        .with_context(|| format!("running {}", command[0]))?;
    Ok(status.code().map_or(1, |c| u8::try_from(c).unwrap_or(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn plan_refuses_two_files_landing_in_one_place() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["x", "y"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
            std::fs::write(dir.path().join(d).join("a.jar"), d).unwrap();
        }
        let deps = vec![
            Dependency {
                kind: Kind::Jar,
                location: dir.path().join("x/a.jar").display().to_string(),
                alias: None,
            },
            Dependency {
                kind: Kind::Jar,
                location: dir.path().join("y/a.jar").display().to_string(),
                alias: None,
            },
        ];
        let err = plan(&deps, crate::k8s::DEPS_DIR).unwrap_err().to_string();
        assert!(
            err.contains("would both land at /var/ferry/jars/a.jar"),
            "{err}"
        );
    }
}
