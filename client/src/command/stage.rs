//! `ferry stage PATH...`: collect the files, stage them as one bundle
//! ([`crate::staging`]), print its id and read token.

use std::path::PathBuf;

use ferry_core::{BundleName, Ttl};

use super::{Output, parse_label};
use crate::api::ApiClient;
use crate::files::collect;
use crate::staging::{StageRequest, stage};

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
            let reference = outcome.name.as_deref().unwrap_or(outcome.id.as_str());
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
