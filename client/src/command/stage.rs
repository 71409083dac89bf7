//! `ferry stage PATH...`: hash, upload what the server lacks, create the bundle.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use ferry_core::api::{CreateBundleRequest, Entry, Owner};
use ferry_core::{BundleName, Digest, Ttl};
use futures::StreamExt as _;
use serde::Serialize;

use crate::api::ApiClient;
use crate::files::{LocalFile, collect};
use crate::progress::bytes_bar;

/// Uploads at once.
const UPLOAD_CONCURRENCY: usize = 8;

/// What to stage and how the bundle is made.
#[derive(Debug, Clone, Default)]
pub struct StageRequest {
    pub files: Vec<LocalFile>,
    pub name: Option<BundleName>,
    pub ttl: Option<Ttl>,
    pub labels: BTreeMap<String, String>,
    pub owner: Option<Owner>,
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Count {
    pub files: u64,
    pub bytes: u64,
}

/// The `--output json` object (schema in the README).
#[derive(Debug, Clone, Serialize)]
pub struct StageOutcome {
    pub id: String,
    pub name: Option<String>,
    pub token: String,
    pub expires_at: Option<String>,
    pub entries: Vec<Entry>,
    pub uploaded: Count,
    pub skipped: Count,
}

/// Stages `request.files` as one bundle.
pub async fn stage(client: &ApiClient, request: StageRequest) -> anyhow::Result<StageOutcome> {
    let files = request.files;
    anyhow::ensure!(!files.is_empty(), "nothing to stage: no files found");
    let sources: Vec<PathBuf> = files.iter().map(|f| f.source.clone()).collect();
    let total: u64 = sources
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();

    let bar = bytes_bar(total, "hashing", request.quiet);
    let hashes = {
        let bar = bar.clone();
        tokio::task::spawn_blocking(move || crate::hash::hash_all(&sources, &|n| bar.inc(n)))
            .await
            .context("hashing thread failed")?
            .map_err(|(path, e)| anyhow::anyhow!("cannot read {}: {e}", path.display()))?
    };
    bar.finish_and_clear();

    let entries: Vec<Entry> = files
        .iter()
        .zip(&hashes)
        .map(|(file, (digest, size))| Entry {
            path: file.path.clone(),
            digest: *digest,
            size: *size,
            mode: file.executable.then_some(0o755),
        })
        .collect();
    // One upload per distinct digest, from the first file that has it.
    let mut by_digest: HashMap<Digest, (PathBuf, u64)> = HashMap::new();
    for (file, (digest, size)) in files.iter().zip(&hashes) {
        by_digest
            .entry(*digest)
            .or_insert((file.source.clone(), *size));
    }
    let unique: Vec<Digest> = by_digest.keys().copied().collect();
    let missing: HashSet<Digest> = client
        .missing(&unique)
        .await
        .with_context(|| format!("asking {} which blobs it lacks", client.server()))?
        .into_iter()
        .collect();
    let upload_total: u64 = missing.iter().map(|d| by_digest[d].1).sum();
    let mut uploaded = Count::default();
    let mut skipped = Count::default();
    for (digest, (_, size)) in &by_digest {
        let count = if missing.contains(digest) {
            &mut uploaded
        } else {
            &mut skipped
        };
        count.files += 1;
        count.bytes += size;
    }

    let bar = bytes_bar(upload_total, "uploading", request.quiet);
    let jobs = missing.iter().map(|digest| {
        let (path, size) = by_digest[digest].clone();
        let bar = bar.clone();
        let client = client.clone();
        let digest = *digest;
        async move {
            let on_bytes = Arc::new(move |n| bar.inc(n));
            client
                .upload(&path, &digest, size, move |n| on_bytes(n))
                .await
                .with_context(|| format!("uploading {}", path.display()))
        }
    });
    let mut results = futures::stream::iter(jobs).buffer_unordered(UPLOAD_CONCURRENCY);
    while let Some(result) = results.next().await {
        result?;
    }
    bar.finish_and_clear();

    let created = match client
        .create_bundle(&CreateBundleRequest {
            name: request.name.clone(),
            entries: entries.clone(),
            labels: request.labels,
            owner: request.owner,
            ttl_seconds: request.ttl,
        })
        .await
    {
        Ok(created) => created,
        Err(crate::api::ApiError::Server {
            code: ferry_core::api::ErrorCode::NameTaken,
            ..
        }) => {
            let name = request
                .name
                .as_ref()
                .map(|n| n.as_str())
                .unwrap_or_default();
            anyhow::bail!(
                "bundle name {name} is taken; remove it first with `ferry bundles rm {name}` or choose another name"
            );
        }
        Err(e) => return Err(e).context("creating the bundle"),
    };
    Ok(StageOutcome {
        id: created.id.to_string(),
        name: created.name.map(|n| n.to_string()),
        token: created.token,
        expires_at: created
            .expires_at
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        entries,
        uploaded,
        skipped,
    })
}

/// Arguments of `ferry stage`.
#[derive(Debug, clap::Args)]
pub struct StageArgs {
    /// Name the bundle (1-128 of A-Z a-z 0-9 . _ -) so jobs can use
    /// ferry://NAME/<path>; named bundles never expire unless --ttl says so.
    #[arg(long, env = "FERRY_BUNDLE_NAME")]
    pub name: Option<String>,
    /// Lifetime: a duration (90m, 12h, 7d) or "never". Default: the server's
    /// (24h for unnamed bundles, never for named ones).
    #[arg(long, env = "FERRY_TTL")]
    pub ttl: Option<Ttl>,
    /// Label the bundle (repeatable): K=V.
    #[arg(long = "label", value_name = "K=V", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Output format on stdout.
    #[arg(long, env = "FERRY_OUTPUT", value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Files and folders to stage: a file lands at its base name, a folder
    /// with its contents under its own name.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

pub fn parse_label(text: &str) -> Result<(String, String), String> {
    let (k, v) = text
        .split_once('=')
        .ok_or_else(|| format!("label {text:?} is not K=V"))?;
    if k.is_empty() {
        return Err(format!("label {text:?} has an empty key"));
    }
    Ok((k.to_owned(), v.to_owned()))
}

pub async fn run(client: &ApiClient, args: StageArgs, quiet: bool) -> anyhow::Result<()> {
    let name = args.name.as_deref().map(BundleName::parse).transpose()?;
    let files = collect(&args.paths, None)?;
    let outcome = stage(
        client,
        StageRequest {
            files,
            name,
            ttl: args.ttl,
            labels: args.labels.into_iter().collect(),
            owner: None,
            quiet,
        },
    )
    .await?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&outcome)?),
        Output::Text => {
            let reference = outcome.name.as_deref().unwrap_or(&outcome.id);
            println!("bundle   {}", outcome.id);
            if let Some(name) = &outcome.name {
                println!("name     {name}");
            }
            println!("token    {}", outcome.token);
            println!(
                "expires  {}",
                outcome.expires_at.as_deref().unwrap_or("never")
            );
            println!(
                "files    {} staged: {} uploaded ({} bytes), {} already on the server ({} bytes)",
                outcome.entries.len(),
                outcome.uploaded.files,
                outcome.uploaded.bytes,
                outcome.skipped.files,
                outcome.skipped.bytes
            );
            for entry in &outcome.entries {
                println!("  ferry://{reference}/{}", entry.path);
            }
        }
    }
    Ok(())
}
