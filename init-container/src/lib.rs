//! `ferry-init`: fetches a pod's dependencies into its volumes.
//!
//! [`run`] takes a validated [`Config`]: it resolves every item into files
//! (reading bundle manifests), then fetches them with bounded parallelism,
//! each under its own timeout and all under the run's, and returns a
//! [`Report`]. `main.rs` only parses flags, sets up logging, calls `run`
//! and maps the report to an exit code.

pub mod cache;
pub mod config;
pub mod error;
pub mod fetch;
pub mod report;
pub mod resolve;
pub mod source;
pub mod unpack;
pub mod write;

use std::sync::Arc;
use std::time::Duration;

use ferry_io::{HttpOptions, RetryPolicy, http_client, render_chain};
use futures::StreamExt;
use tokio::time::Instant;

pub use config::{Cli, Config, LogFormat};
pub use report::Report;

use crate::cache::Cache;
use crate::error::FetchError;
use crate::fetch::Done;
use crate::resolve::{Action, Failure, Task};
use crate::source::ferry::{FerryServer, TokenSource};
use crate::source::object_store::Stores;

/// Clients and settings shared by every item of a run.
pub struct Context {
    pub http: reqwest::Client,
    pub ferry: Option<FerryServer>,
    pub tokens: TokenSource,
    pub stores: Stores,
    pub retry: RetryPolicy,
    pub cache: Option<Arc<Cache>>,
    /// Bounds on every archive item's unpacked tree.
    pub unpack_limits: unpack::Limits,
}

impl Context {
    pub fn new(config: &Config) -> Result<Self, FetchError> {
        let options = HttpOptions {
            connect_timeout: config.connect_timeout,
            read_timeout: config.read_timeout,
            ca_file: config.ca_file.clone(),
            ..HttpOptions::new(concat!("ferry-init/", env!("CARGO_PKG_VERSION")))
        };
        let client = |options: &HttpOptions| {
            http_client(options)
                .map_err(|e| FetchError::Invalid(format!("setting up HTTP: {}", render_chain(&e))))
        };
        let http = client(&options)?;
        let cache = match &config.cache_dir {
            Some(dir) => Some(Arc::new(Cache::open(dir)?)),
            None => None,
        };
        Ok(Self {
            // Its own client, which follows no redirect: a blob redirect
            // is followed by `FerryBlob`, without the bundle token.
            ferry: match config.server.clone() {
                Some(url) => Some(FerryServer::new(
                    client(&HttpOptions {
                        max_redirects: 0,
                        ..options
                    })?,
                    url,
                )),
                None => None,
            },
            http,
            tokens: config.tokens.clone(),
            stores: Stores::default(),
            retry: config.retry,
            cache,
            unpack_limits: unpack::Limits::default(),
        })
    }
}

/// Fetches everything `config` names.
pub async fn run(config: &Config) -> Report {
    let started = Instant::now();
    let deadline = started + config.timeout;
    let ctx = match Context::new(config) {
        Ok(ctx) => ctx,
        Err(error) => {
            return Report {
                failures: vec![Failure {
                    uri: "(setup)".into(),
                    dest: None,
                    error,
                }],
                elapsed: started.elapsed(),
                ..Report::default()
            };
        }
    };
    let (tasks, mut failures) =
        match tokio::time::timeout_at(deadline, resolve::resolve(&ctx, &config.items)).await {
            Ok(resolved) => resolved,
            Err(_) => (
                Vec::new(),
                vec![Failure {
                    uri: "(reading bundle manifests)".into(),
                    dest: None,
                    error: FetchError::Timeout(format!(
                        "{} (--timeout)",
                        humantime::format_duration(config.timeout)
                    )),
                }],
            ),
        };
    let ctx = &ctx;
    let results: Vec<(Task, Result<Done, FetchError>)> = futures::stream::iter(tasks)
        .map(|task| async move {
            let result = execute(ctx, &task, config, deadline).await;
            (task, result)
        })
        .buffer_unordered(config.jobs)
        .collect()
        .await;
    let mut report = Report::default();
    for (task, result) in results {
        match result {
            Ok(done) => {
                tracing::info!(uri = task.uri, dest = task.dest, outcome = ?done.outcome, bytes = done.bytes, received = done.received, "in place");
                report.succeeded.push(report::Success {
                    uri: task.uri,
                    dest: task.dest,
                    done,
                });
            }
            Err(error) => failures.push(Failure {
                uri: task.uri,
                dest: Some(task.dest),
                error,
            }),
        }
    }
    report.failures = failures;
    report.elapsed = started.elapsed();
    report
}

/// One task under the shorter of its own time limit and what is left of
/// the run's.
async fn execute(
    ctx: &Context,
    task: &Task,
    config: &Config,
    deadline: Instant,
) -> Result<Done, FetchError> {
    let left = deadline.saturating_duration_since(Instant::now());
    let (limit, which) = if left < config.item_timeout {
        (left, "--timeout, the whole run's limit")
    } else {
        (config.item_timeout, "--item-timeout")
    };
    let work = async {
        match &task.action {
            Action::Fetch(target) => fetch::fetch(ctx, target).await,
            Action::CheckLocal { path, pin } => fetch::check(path.clone(), *pin).await,
        }
    };
    tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
        Err(FetchError::Timeout(format!(
            "{} ({which})",
            humantime::format_duration(round(limit))
        )))
    })
}

fn round(duration: Duration) -> Duration {
    Duration::from_millis(duration.as_millis().try_into().unwrap_or(u64::MAX))
}

/// Sets up `tracing` on stderr: text or JSON, `RUST_LOG` overriding the
/// default level (info for ferry-init and its I/O crate, or errors only
/// with `--quiet`).
pub fn init_tracing(format: LogFormat, quiet: bool) {
    let default = if quiet {
        "error"
    } else {
        "ferry_init=info,ferry_io=info,warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
