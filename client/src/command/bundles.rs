//! `ferry bundles ls|show|rm`: manage staged bundles (the upload token can
//! see them all).

use super::{Output, parse_label};
use crate::api::ApiClient;

#[derive(Debug, clap::Subcommand)]
pub enum BundlesCommand {
    /// List live bundles.
    Ls {
        /// Only bundles whose name starts with this.
        #[arg(long)]
        name: Option<String>,
        /// Only bundles with this label (repeatable): K=V.
        #[arg(long = "label", value_name = "K=V", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Output format on stdout.
        #[arg(long, env = "FERRY_OUTPUT", value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Print a bundle's manifest.
    Show {
        /// Bundle id or name.
        bundle: String,
        /// Output format on stdout.
        #[arg(long, env = "FERRY_OUTPUT", value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Delete bundles now (their blobs go at the next garbage collection).
    Rm {
        /// Bundle ids or names.
        #[arg(required = true)]
        bundles: Vec<String>,
    },
}

pub async fn run(client: &ApiClient, command: BundlesCommand) -> anyhow::Result<()> {
    match command {
        BundlesCommand::Ls {
            name,
            labels,
            output,
        } => {
            let list = client.list_bundles(name.as_deref(), &labels).await?;
            if output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            println!(
                "{:<30} {:<28} {:>7} {:>14}  {:<25}",
                "ID", "NAME", "FILES", "BYTES", "EXPIRES"
            );
            for b in list.bundles {
                println!(
                    "{:<30} {:<28} {:>7} {:>14}  {:<25}",
                    b.id.as_str(),
                    b.name.as_ref().map_or("-", |n| n.as_str()),
                    b.files,
                    b.bytes,
                    b.expires_at
                        .map_or_else(|| "never".to_owned(), |t| t.to_rfc3339())
                );
            }
        }
        BundlesCommand::Show { bundle, output } => {
            let manifest = client.get_bundle(&bundle).await?;
            if output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&manifest)?);
                return Ok(());
            }
            println!("bundle   {}", manifest.id);
            if let Some(name) = &manifest.name {
                println!("name     {name}");
            }
            println!("created  {}", manifest.created_at.to_rfc3339());
            println!(
                "expires  {}",
                manifest
                    .expires_at
                    .map_or_else(|| "never".to_owned(), |t| t.to_rfc3339())
            );
            for (k, v) in &manifest.labels {
                println!("label    {k}={v}");
            }
            if let Some(owner) = &manifest.owner {
                println!("owner    {} / {}", owner.namespace, owner.selector);
            }
            for e in &manifest.entries {
                println!("{:>12}  {}  {}", e.size, e.digest, e.path);
            }
        }
        BundlesCommand::Rm { bundles } => {
            for bundle in bundles {
                client.delete_bundle(&bundle).await?;
                eprintln!("deleted {bundle}");
            }
        }
    }
    Ok(())
}
