//! `ferry submit [options] -- spark-submit ARGS...`: stage every local
//! dependency as one bundle owned by the application's pods, hand the token
//! to the pods as a Secret, add ferry-init to the pod templates, and run
//! spark-submit with every dependency rewritten to a `local://` path.
//!
//! Four steps, each its own library function so each is tested without a
//! server: *plan* ([`SparkPlan::new`]: what is staged, fetched, rewritten,
//! owned), *stage* ([`crate::staging::stage`]), *render*
//! ([`crate::spark::render::render`]: Secret, templates with the fetch
//! plan, command, dry-run output) and *launch* (here: create or write the
//! Secret, run spark-submit, pass on its exit code). This file is the edge:
//! it reads the files the command names and does the I/O.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Pod, Secret};

use super::Output;
use super::packages::PackageFlags;
use super::pods::PodFlags;
use crate::api::ApiClient;
use crate::k8s;
use crate::spark::mode::{Mode, mode};
use crate::spark::render::{Rendered, redact_command, render, shell_quote};
use crate::spark::submission::{PlanOptions, Role, SparkPlan, client_mode_jars, spark_conf};
use crate::spark::{self, SparkSubmit};
use crate::staging::{StageOutcome, stage};
use crate::submission::SubmissionId;

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
    #[command(flatten)]
    pub pods: PodFlags,
    /// Namespace of the Secret and the pods (default: spark.kubernetes.namespace,
    /// else the kubeconfig context's, else "default").
    #[arg(long, env = "FERRY_NAMESPACE")]
    pub namespace: Option<String>,
    /// Where the generated pod templates are written (default: a new folder
    /// under the system temp directory).
    #[arg(long, env = "FERRY_TEMPLATE_DIR")]
    pub template_dir: Option<PathBuf>,
    #[command(flatten)]
    pub packages: PackageFlags,
    /// With --dry-run: print text (YAML and the command) or one JSON object.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// spark-submit and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "SPARK_SUBMIT_ARGS")]
    pub spark_submit: Vec<String>,
}

pub async fn run(client: &ApiClient, args: SubmitArgs, quiet: bool) -> anyhow::Result<u8> {
    let submit = SparkSubmit::parse(&args.spark_submit)?;
    let properties = read_properties(&submit)?;
    let mode = match mode(&spark_conf(&submit, &properties)) {
        // Packages become local jars; without any, ferry has nothing for
        // the executors.
        Mode::Executors
            if client_mode_jars(&submit, &properties) == 0
                && spark::packages::request(&submit, &properties)?.is_empty() =>
        {
            Mode::Unchanged {
                notice: "ferry: client mode with no local jars: nothing for ferry to deliver to the executor pods, running spark-submit unchanged".into(),
            }
        }
        mode => mode,
    };
    if let Mode::Unchanged { notice } = mode {
        eprintln!("{notice}");
        let command = submit.to_argv();
        if args.dry_run {
            let quoted: Vec<String> = redact_command(&command)
                .iter()
                .map(|a| shell_quote(a))
                .collect();
            println!(
                "# spark-submit command (unchanged):\n# {}",
                quoted.join(" ")
            );
            return Ok(0);
        }
        return run_spark(&command);
    }
    // Packages are resolved only for a submission ferry delivers.
    let submit = resolve_packages(submit, &properties, &args, quiet).await?;
    let plan = SparkPlan::new(
        submit,
        properties,
        &PlanOptions {
            namespace: args.namespace.clone(),
            deps_dir: args.pods.deps_dir.clone(),
            template_dir: args.template_dir.clone(),
            executors_only: mode == Mode::Executors,
        },
        SubmissionId::generate(),
        k8s::kubeconfig_namespace,
    )?;
    if mode == Mode::Executors && !quiet {
        eprintln!(
            "ferry: client mode: the driver runs here with your paths; ferry delivers the {} local jars to the executor pods (the driver serves the application, --files, --py-files and --archives as without ferry)",
            plan.submission.deliveries.staged().len()
        );
    }
    for notice in &plan.notices {
        eprintln!("{notice}");
    }
    // Read before staging, so a wrong template path stages nothing.
    let bases = read_base_templates(&plan)?;
    let staged = stage(client, plan.submission.stage_request(args.pods.ttl, quiet)).await?;
    let options = args.pods.pod_options(client);
    let rendered = render(&plan, &staged.id, &staged.token, &options, &bases)?;
    write_templates(&plan.template_dir, &rendered)?;
    if args.dry_run {
        match args.output {
            Output::Json => println!("{}", rendered.dry_run_json()?),
            Output::Text => print!("{}", rendered.dry_run_text()?),
        }
        return Ok(0);
    }
    launch(
        &rendered,
        &staged,
        &plan,
        args.secret_file.as_deref(),
        quiet,
    )
    .await
}

/// The `--properties-file`, or else (as spark-submit does) the
/// `spark-defaults.conf` of `SPARK_CONF_DIR` or `SPARK_HOME/conf`, if any.
fn read_properties(submit: &SparkSubmit) -> anyhow::Result<BTreeMap<String, String>> {
    if let Some(path) = submit.value("--properties-file") {
        return Ok(spark::properties::parse(
            &std::fs::read_to_string(path)
                .with_context(|| format!("reading --properties-file {path}"))?,
        ));
    }
    let Some(path) = spark_defaults(
        std::env::var_os("SPARK_CONF_DIR"),
        std::env::var_os("SPARK_HOME"),
    ) else {
        return Ok(BTreeMap::new());
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(spark::properties::parse(&text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Where spark-submit looks for its defaults.
fn spark_defaults(conf_dir: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    let dir = match (conf_dir, home) {
        (Some(dir), _) if !dir.is_empty() => PathBuf::from(dir),
        (_, Some(home)) if !home.is_empty() => PathBuf::from(home).join("conf"),
        _ => return None,
    };
    Some(dir.join("spark-defaults.conf"))
}

/// Resolves `--packages` (or stages them from the lock) and returns the
/// command with the resolved jars in its jar list and no package options.
async fn resolve_packages(
    submit: SparkSubmit,
    properties: &BTreeMap<String, String>,
    args: &SubmitArgs,
    quiet: bool,
) -> anyhow::Result<SparkSubmit> {
    let request = spark::packages::request(&submit, properties)?;
    if request.is_empty() {
        return Ok(submit);
    }
    let jars = args
        .packages
        .resolve(request, &submit.program, "", quiet)
        .await?;
    Ok(spark::packages::replace_packages(
        &submit, properties, &jars,
    ))
}

/// The user's own templates (`spark.kubernetes.<role>.podTemplateFile`).
fn read_base_templates(plan: &SparkPlan) -> anyhow::Result<BTreeMap<Role, Pod>> {
    let mut bases = BTreeMap::new();
    for template in &plan.templates {
        if let Some(path) = &template.base {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading pod template {}", path.display()))?;
            let pod = serde_yaml::from_str(&text)
                .with_context(|| format!("pod template {} is not a Pod", path.display()))?;
            bases.insert(template.role, pod);
        }
    }
    Ok(bases)
}

fn write_templates(dir: &Path, rendered: &Rendered) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for template in &rendered.templates {
        std::fs::write(&template.path, &template.yaml)
            .with_context(|| format!("writing {}", template.path.display()))?;
    }
    Ok(())
}

/// Creates the Secret (or writes `secret_file`), runs spark-submit and
/// returns its exit code.
async fn launch(
    rendered: &Rendered,
    staged: &StageOutcome,
    plan: &SparkPlan,
    secret_file: Option<&Path>,
    quiet: bool,
) -> anyhow::Result<u8> {
    let secret_note = deliver_secret(&rendered.secret, secret_file).await?;
    if !quiet {
        eprintln!(
            "ferry: staged bundle {} ({} files, {} bytes uploaded); {secret_note}; templates in {}",
            staged.id,
            staged.entries.len(),
            staged.uploaded.bytes,
            plan.template_dir.display()
        );
    }
    run_spark(&rendered.command)
}

/// Runs spark-submit and returns its exit code.
fn run_spark(command: &[String]) -> anyhow::Result<u8> {
    let (program, args) = command
        .split_first()
        .context("the spark-submit command is empty")?;
    let status = std::process::Command::new(program)
        .args(args)
        .status()
        .with_context(|| format!("running {program}"))?;
    Ok(status.code().map_or(1, |c| u8::try_from(c).unwrap_or(1)))
}

/// Creates the Secret through the Kubernetes API, or writes it to
/// `secret_file`; says which for the progress note.
async fn deliver_secret(secret: &Secret, secret_file: Option<&Path>) -> anyhow::Result<String> {
    let name = format!(
        "{}/{}",
        secret.metadata.namespace.as_deref().unwrap_or_default(),
        secret.metadata.name.as_deref().unwrap_or_default()
    );
    match secret_file {
        Some(path) => {
            write_private(path, serde_yaml::to_string(secret)?.as_bytes())?;
            Ok(format!("Secret {name} written to {}", path.display()))
        }
        None => {
            k8s::apply_secret(secret).await?;
            Ok(format!("Secret {name} created"))
        }
    }
}

/// Writes `bytes` to a new file only its owner can read.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spark_defaults_come_from_the_conf_dir_then_spark_home() {
        let some = |s: &str| Some(OsString::from(s));
        assert_eq!(
            spark_defaults(some("/etc/spark"), some("/opt/spark")),
            Some(PathBuf::from("/etc/spark/spark-defaults.conf"))
        );
        assert_eq!(
            spark_defaults(some(""), some("/opt/spark")),
            Some(PathBuf::from("/opt/spark/conf/spark-defaults.conf"))
        );
        assert_eq!(spark_defaults(None, None), None);
    }
}
