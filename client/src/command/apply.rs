//! `ferry apply -f app.yaml`: for each Kubeflow spark-operator
//! SparkApplication in the file, stage its local dependencies as one
//! bundle owned by the application's pods, rewrite every delivered
//! dependency to where it lands, add ferry-init to the driver and the
//! executors, and create or update the object by server-side apply, then
//! the token Secret owned by it.
//!
//! The steps are the libraries `ferry submit` uses: *plan*
//! ([`AppPlan::new`], through the shared submission planner), *stage*
//! ([`crate::staging::stage`]), *render* ([`crate::operator::render`]);
//! this file is the edge: it reads the input and talks to the API server.
//!
//! Order of the API calls: the application first (the Secret's
//! ownerReference needs its uid, which exists only once it is stored),
//! then the Secret. If the Secret cannot be created after the application
//! was applied, the driver pod the operator starts waits in
//! `ContainerCreating` for its token volume (the kubelet keeps retrying
//! the mount), nothing runs without its dependencies, and the error says
//! so: running `ferry apply` again stages (uploading nothing new) and
//! applies both again.

use std::io::Read as _;
use std::path::PathBuf;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};

use super::packages::PackageFlags;
use super::pods::PodFlags;
use crate::api::ApiClient;
use crate::k8s;
use crate::operator::app::{GROUP, KIND, PLURAL, VERSION};
use crate::operator::{AppPlan, ApplyOptions, Inject, RenderedApp, owned_by, render};
use crate::staging::{StageOutcome, stage};
use crate::submission::SubmissionId;

/// Server-side apply's field manager for what ferry writes.
const FIELD_MANAGER: &str = "ferry";

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// YAML file with one or more SparkApplication documents (`---`
    /// between them); `-` reads standard input.
    #[arg(long = "filename", short = 'f', env = "FERRY_APPLY_FILE")]
    pub file: PathBuf,
    /// Stage and print the rewritten objects and their Secrets instead of
    /// applying them.
    #[arg(long, env = "FERRY_DRY_RUN")]
    pub dry_run: bool,
    /// How ferry-init is added to the driver and executor pods.
    #[arg(long, env = "FERRY_INJECT", value_enum, default_value_t = Inject::Template)]
    pub inject: Inject,
    /// Namespace for objects whose metadata names none (default: the
    /// kubeconfig context's, else "default"); an object naming another is
    /// refused.
    #[arg(long, env = "FERRY_NAMESPACE")]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub pods: PodFlags,
    #[command(flatten)]
    pub packages: PackageFlags,
}

pub async fn run(client: &ApiClient, args: ApplyArgs, quiet: bool) -> anyhow::Result<()> {
    let text = read_input(&args.file)?;
    let apps = crate::operator::parse_documents(&text)?;
    anyhow::ensure!(
        !apps.is_empty(),
        "{} holds no SparkApplication",
        args.file.display()
    );
    let options = ApplyOptions {
        namespace: args.namespace.clone(),
        deps_dir: args.pods.deps_dir.clone(),
        inject: args.inject,
    };
    // Every object is planned before anything is staged, so one bad
    // document stages nothing.
    let mut plans = Vec::with_capacity(apps.len());
    for mut app in apps {
        resolve_packages(&mut app, &args.packages, quiet).await?;
        let plan = AppPlan::new(
            app,
            &options,
            SubmissionId::generate(),
            k8s::kubeconfig_namespace,
        )?;
        for notice in &plan.notices {
            eprintln!("{notice}");
        }
        plans.push(plan);
    }
    let pod_options = args.pods.pod_options(client);
    let mut rendered = Vec::new();
    for plan in &plans {
        let staged = if plan.stages() {
            Some(stage(client, plan.submission.stage_request(args.pods.ttl, quiet)).await?)
        } else {
            None
        };
        let app = render(
            plan,
            staged.as_ref().map(|s| (&s.id, s.token.as_str())),
            &pod_options,
        );
        rendered.push((app, staged));
    }
    if args.dry_run {
        print!("{}", dry_run_text(&plans, &rendered)?);
        return Ok(());
    }
    let kube = kube::Client::try_default()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach Kubernetes with the current kubeconfig: {e}"))?;
    for (app, staged) in &rendered {
        let note = apply(&kube, app).await?;
        println!("{}", summary(app, staged.as_ref(), &note));
    }
    Ok(())
}

fn read_input(file: &std::path::Path) -> anyhow::Result<String> {
    if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading SparkApplications from standard input")?;
        return Ok(text);
    }
    std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))
}

/// `spec.deps.packages` (and the package lists of `spec.sparkConf`)
/// resolved once, here, as `ferry submit --packages` resolves them, and
/// replaced in `app` by the jars, which are then staged like any local jar.
async fn resolve_packages(
    app: &mut crate::operator::SparkApplication,
    flags: &PackageFlags,
    quiet: bool,
) -> anyhow::Result<()> {
    let request = crate::operator::packages::request(app)
        .with_context(|| format!("SparkApplication {}", app.name()))?;
    if request.is_empty() {
        return Ok(());
    }
    let what = format!("SparkApplication {}: ", app.name());
    let jars = flags
        .resolve(request, "spark-submit", &what, quiet)
        .await
        .with_context(|| format!("resolving the packages of SparkApplication {}", app.name()))?;
    crate::operator::packages::replace_packages(app, &jars);
    Ok(())
}

/// `--dry-run`: each object, then its Secret, as one YAML stream, store
/// secrets redacted in both.
fn dry_run_text(
    plans: &[AppPlan],
    rendered: &[(RenderedApp, Option<StageOutcome>)],
) -> anyhow::Result<String> {
    let mut text = String::new();
    for (plan, (app, _)) in plans.iter().zip(rendered) {
        text.push_str("---\n");
        text.push_str(&serde_yaml::to_string(&app.shown_app())?);
        if let Some(secret) = &app.shown_secret(plan) {
            text.push_str(
                "---\n# ownerReferences (the SparkApplication's uid) are added when applied\n",
            );
            text.push_str(&serde_yaml::to_string(secret)?);
        }
    }
    Ok(text)
}

/// Applies the object, then its Secret owned by it; says what was done.
async fn apply(kube: &kube::Client, rendered: &RenderedApp) -> anyhow::Result<String> {
    let app = &rendered.app;
    let name = app.name();
    let namespace = app.metadata.namespace.as_deref().unwrap_or("default");
    let gvk = GroupVersionKind::gvk(GROUP, VERSION, KIND);
    let resource = ApiResource::from_gvk_with_plural(&gvk, PLURAL);
    let api: Api<DynamicObject> = Api::namespaced_with(kube.clone(), namespace, &resource);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let applied = api
        .patch(name, &params, &Patch::Apply(app))
        .await
        .with_context(|| format!("applying SparkApplication {namespace}/{name}"))?;
    let Some(secret) = &rendered.secret else {
        return Ok("no local files, so no bundle or Secret".to_owned());
    };
    let secret_name = secret.metadata.name.clone().unwrap_or_default();
    let uid = applied.metadata.uid.as_deref().with_context(|| {
        format!("the API server returned SparkApplication {namespace}/{name} without a uid")
    })?;
    let secret = owned_by(secret.clone(), name, uid);
    let secrets: Api<Secret> = Api::namespaced(kube.clone(), namespace);
    secrets
        .patch(&secret_name, &params, &Patch::Apply(&secret))
        .await
        .with_context(|| {
            format!(
                "SparkApplication {namespace}/{name} was applied, but its token Secret {secret_name} could not be created: its pods wait for the Secret and run nothing; run ferry apply again (or kubectl delete sparkapplication {name} -n {namespace})"
            )
        })?;
    Ok(format!("Secret {secret_name}"))
}

fn summary(app: &RenderedApp, staged: Option<&StageOutcome>, note: &str) -> String {
    let object = format!(
        "sparkapplication.{GROUP}/{} applied in {}",
        app.app.name(),
        app.app.metadata.namespace.as_deref().unwrap_or_default()
    );
    match staged {
        Some(staged) => format!(
            "{object}: bundle {} ({} files, {} bytes uploaded), {note}",
            staged.id,
            staged.entries.len(),
            staged.uploaded.bytes
        ),
        None => format!("{object}: {note}"),
    }
}
