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
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Pod, Secret};

use super::Output;
use super::pods::PodFlags;
use crate::api::ApiClient;
use crate::k8s;
use crate::spark::render::{Rendered, render};
use crate::spark::submission::{PlanOptions, Role, SparkPlan};
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
    let plan = SparkPlan::new(
        submit,
        properties,
        &PlanOptions {
            namespace: args.namespace.clone(),
            deps_dir: args.pods.deps_dir.clone(),
            template_dir: args.template_dir.clone(),
        },
        SubmissionId::generate(),
        k8s::kubeconfig_namespace,
    )?;
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

fn read_properties(submit: &SparkSubmit) -> anyhow::Result<BTreeMap<String, String>> {
    Ok(match submit.value("--properties-file") {
        Some(path) => spark::properties::parse(
            &std::fs::read_to_string(path)
                .with_context(|| format!("reading --properties-file {path}"))?,
        ),
        None => BTreeMap::new(),
    })
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
    let (program, args) = rendered
        .command
        .split_first()
        .context("the rewritten command is empty")?;
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
