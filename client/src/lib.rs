//! `ferry`, the submit client: stages local files on ferry-server, manages
//! bundles, and wraps spark-submit so dependencies reach the pods through
//! the `ferry-init` init container.
//!
//! The subcommands (`command/`) are thin edges over libraries:
//! [`staging`] (digests from the [`digest_cache`] or one read, uploads
//! small files whole and large ones through [`session_upload`], creates a
//! bundle), [`submission`] (what a
//! Spark submission stages, fetches, rewrites and who owns it, whatever
//! its front end), [`spark`] (the spark-submit front end), [`operator`]
//! (the SparkApplication front end) and [`k8s`] (the Secret and pod
//! templates).

pub mod api;
pub mod command;
pub mod config;
pub mod digest_cache;
pub mod files;
pub mod hash;
pub mod k8s;
pub mod operator;
pub mod progress;
pub mod session_upload;
pub mod spark;
pub mod staging;
pub mod submission;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{Connection, ConnectionFlags};

/// ferry: get a job's local jars and files into its Kubernetes pods.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about, long_about = None)]
pub struct Cli {
    /// ferry-server URL (default: the config file's, else http://127.0.0.1:7070).
    #[arg(long, global = true, help_heading = "Connection", env = "FERRY_SERVER")]
    pub server: Option<String>,
    /// The upload token itself (prefer --token-file: arguments are visible to other users).
    #[arg(
        long,
        global = true,
        help_heading = "Connection",
        env = "FERRY_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// File holding the upload token (default: the config file's, else
    /// ./ferry-data/upload-token for a server on this machine).
    #[arg(
        long,
        global = true,
        help_heading = "Connection",
        env = "FERRY_TOKEN_FILE"
    )]
    pub token_file: Option<PathBuf>,
    /// Extra PEM CA certificates to trust for an https:// server.
    #[arg(
        long,
        global = true,
        help_heading = "Connection",
        env = "FERRY_CA_FILE"
    )]
    pub ca_file: Option<PathBuf>,
    /// Config file (default: $XDG_CONFIG_HOME/ferry/config.toml).
    #[arg(long, global = true, help_heading = "Connection", env = "FERRY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Use the current kubeconfig user's bearer token as the upload token
    /// (for a ferry-server started with --kubernetes-auth).
    #[arg(long, global = true, help_heading = "Connection", env = "FERRY_KUBE_TOKEN", conflicts_with_all = ["token", "token_file"])]
    pub kube_token: bool,
    /// Retries of a request after a transient failure.
    #[arg(
        long,
        global = true,
        help_heading = "Connection",
        env = "FERRY_RETRIES",
        default_value_t = 4
    )]
    pub retries: u32,
    /// No progress bars or notes on stderr (errors still go there).
    #[arg(
        long,
        short,
        global = true,
        help_heading = "Connection",
        env = "FERRY_QUIET"
    )]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stage files and folders as one bundle; prints its id and read token.
    Stage(command::stage::StageArgs),
    /// List, show and delete bundles.
    #[command(subcommand)]
    Bundles(command::bundles::BundlesCommand),
    /// Stage a spark-submit's local dependencies and run it with them
    /// delivered by ferry-init: ferry submit -- spark-submit ARGS...
    Submit(command::submit::SubmitArgs),
    /// Stage the local dependencies of Kubeflow spark-operator
    /// SparkApplications and apply them with ferry-init added:
    /// ferry apply -f app.yaml
    Apply(command::apply::ApplyArgs),
}

/// Runs the command; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<u8> {
    let connection = Connection::resolve(&ConnectionFlags {
        server: cli.server,
        token: cli.token,
        token_file: cli.token_file,
        ca_file: cli.ca_file,
        config: cli.config,
        kube_token: cli.kube_token,
        retries: cli.retries,
    })?;
    let client = connection.client()?;
    match cli.command {
        Command::Stage(args) => command::stage::run(&client, args, cli.quiet)
            .await
            .map(|()| 0),
        Command::Bundles(command) => command::bundles::run(&client, command).await.map(|()| 0),
        Command::Submit(args) => command::submit::run(&client, args, cli.quiet).await,
        Command::Apply(args) => command::apply::run(&client, args, cli.quiet)
            .await
            .map(|()| 0),
    }
}
