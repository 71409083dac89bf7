//! Command line and environment, parsed then validated into a [`Config`].
//!
//! Items come from three places that can be combined: a fetch plan
//! (`ferry_core::plan`), inline with `--plan-json` as `ferry submit` writes
//! it into pod templates or from a `--plan` file; positional URIs (landing
//! in `--into`, whole bundles split by `--dest GROUP=DIR`); and Spark-style
//! comma lists (`--spark-jars`, `--spark-files`) so a Spark user can pass
//! what they already write in `spark.jars` / `spark.files`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use ferry_core::plan::{FetchPlan, PlanItem, StoreSettings};
use ferry_core::{EntryPath, SourceUri};
use ferry_io::RetryPolicy;
use url::Url;

use crate::source::ferry::TokenSource;

/// Fetches a pod's dependencies (ferry bundles, HTTP(S), S3, GCS, Azure,
/// HDFS, mounted files) into its volumes, verified, in parallel, with
/// retries and a node-local cache. Exits 0 only when every item is in place.
#[derive(Debug, Parser)]
#[command(name = "ferry-init", version)]
pub struct Cli {
    /// Staging server for ferry:// URIs, e.g. http://ferry.ferry-system:7070.
    #[arg(long, env = "FERRY_SERVER")]
    pub server: Option<Url>,

    /// Bundle token: a file holding the token, or a directory (a mounted
    /// Secret) holding a file named after the bundle, or else a file `token`.
    #[arg(long, env = "FERRY_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,

    /// JSON fetch plan file (schema version 1: {"version":1,"items":[{"uri","dest","name"?,"groups"?,"unpack"?}]}).
    #[arg(long, env = "FERRY_PLAN", value_name = "FILE")]
    pub plan: Option<PathBuf>,

    /// The fetch plan itself, inline (same schema as --plan); `ferry submit`
    /// writes it into the pod templates this way.
    #[arg(
        long,
        env = "FERRY_PLAN_JSON",
        value_name = "JSON",
        conflicts_with = "plan"
    )]
    pub plan_json: Option<String>,

    /// Directory that positional URIs land in (and whole-bundle entries
    /// outside every --dest group).
    #[arg(long, env = "FERRY_INTO", value_name = "DIR")]
    pub into: Option<PathBuf>,

    /// For whole bundles: entries under top-level folder GROUP land in DIR,
    /// with the folder stripped (e.g. --dest jars=/var/ferry/jars). Repeatable;
    /// comma-separated in the environment.
    #[arg(
        long = "dest",
        env = "FERRY_DEST",
        value_name = "GROUP=DIR",
        value_delimiter = ','
    )]
    pub dest: Vec<String>,

    /// Spark-style comma list of URIs (as in spark.jars) landing in --jars-dir.
    #[arg(long, env = "FERRY_SPARK_JARS", value_name = "URI,...")]
    pub spark_jars: Option<String>,

    /// Spark-style comma list of URIs (as in spark.files) landing in --files-dir.
    #[arg(long, env = "FERRY_SPARK_FILES", value_name = "URI,...")]
    pub spark_files: Option<String>,

    /// Where --spark-jars land (default: --into).
    #[arg(long, env = "FERRY_JARS_DIR", value_name = "DIR")]
    pub jars_dir: Option<PathBuf>,

    /// Where --spark-files land (default: --into).
    #[arg(long, env = "FERRY_FILES_DIR", value_name = "DIR")]
    pub files_dir: Option<PathBuf>,

    /// Node-local content-addressed cache (a hostPath): verified files are
    /// shared between pods on the node by hard link or copy.
    #[arg(long, env = "FERRY_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Files fetched at the same time.
    #[arg(long, env = "FERRY_JOBS", default_value_t = 8)]
    pub jobs: usize,

    /// Retries per item after a transient failure (connection error, 5xx,
    /// 429, truncated body), with exponential backoff and jitter.
    #[arg(long, env = "FERRY_RETRIES", default_value_t = 5)]
    pub retries: u32,

    /// Delay before the first retry; it doubles per retry, up to 10 s.
    #[arg(long, env = "FERRY_RETRY_DELAY", default_value = "250ms")]
    pub retry_delay: humantime::Duration,

    /// Extra PEM CA certificates to trust for https://, swebhdfs:// and
    /// the staging server (added to the system's roots).
    #[arg(long, env = "FERRY_CA_FILE", value_name = "PEM")]
    pub ca_file: Option<PathBuf>,

    /// Time limit for the whole run.
    #[arg(long, env = "FERRY_TIMEOUT", default_value = "30m")]
    pub timeout: humantime::Duration,

    /// Time limit per file, retries included.
    #[arg(long, env = "FERRY_ITEM_TIMEOUT", default_value = "10m")]
    pub item_timeout: humantime::Duration,

    /// Time limit to establish a connection.
    #[arg(long, env = "FERRY_CONNECT_TIMEOUT", default_value = "10s")]
    pub connect_timeout: humantime::Duration,

    /// A connection that delivers nothing for this long is dropped and the
    /// transfer resumed on a new one.
    #[arg(long, env = "FERRY_READ_TIMEOUT", default_value = "60s")]
    pub read_timeout: humantime::Duration,

    /// Log and report format.
    #[arg(long, env = "FERRY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Print only failures (no progress logs, no summary).
    #[arg(long, short, env = "FERRY_QUIET")]
    pub quiet: bool,

    /// Instead of fetching: make --cache-dir and everything in it belong to
    /// UID:GID (folders mode 0700), then exit. For the init step that runs
    /// as root before ferry-init when the node cache is a hostPath the
    /// kubelet created root-owned.
    #[arg(
        long,
        env = "FERRY_PREPARE_CACHE_FOR",
        value_name = "UID:GID",
        requires = "cache_dir"
    )]
    pub prepare_cache_for: Option<String>,

    /// On failure, the failed items are also written here, where Kubernetes
    /// reads a container's termination message (its
    /// terminationMessagePath), so `kubectl describe pod` shows why. Written
    /// only when the file already exists, as the kubelet makes it; never
    /// created.
    #[arg(
        long,
        env = "FERRY_TERMINATION_LOG",
        value_name = "FILE",
        default_value = "/dev/termination-log"
    )]
    pub termination_log: PathBuf,

    /// URIs to fetch into --into; any may end in #sha256=<hex>.
    #[arg(value_name = "URI")]
    pub uris: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Why the command line does not make a runnable configuration.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

/// One URI and where it lands; absolute directories.
#[derive(Debug, Clone)]
pub struct Item {
    pub uri: SourceUri,
    pub dest: Option<PathBuf>,
    pub name: Option<EntryPath>,
    pub groups: BTreeMap<String, PathBuf>,
    /// How to reach the item's object store, from the plan; `None`: the
    /// store's standard environment.
    pub store: Option<StoreSettings>,
    /// Unpack the archive into the directory `dest/name`.
    pub unpack: bool,
}

impl From<PlanItem> for Item {
    fn from(item: PlanItem) -> Self {
        Self {
            uri: item.uri,
            dest: Some(PathBuf::from(item.dest)),
            name: item.name,
            groups: item
                .groups
                .into_iter()
                .map(|(group, dir)| (group, PathBuf::from(dir)))
                .collect(),
            store: item.store.filter(|s| !s.is_empty()),
            unpack: item.unpack,
        }
    }
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: Option<Url>,
    pub tokens: TokenSource,
    pub items: Vec<Item>,
    pub cache_dir: Option<PathBuf>,
    pub jobs: usize,
    pub retry: RetryPolicy,
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
    pub item_timeout: Duration,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub log_format: LogFormat,
    pub quiet: bool,
}

impl Config {
    pub fn from_cli(cli: Cli) -> Result<Self, ConfigError> {
        let cwd = std::env::current_dir()
            .map_err(|e| ConfigError(format!("cannot read the current directory: {e}")))?;
        let mut items = plan_items(&cli)?;
        items.extend(command_line_items(&cli, &cwd)?);
        if items.is_empty() {
            return Err(ConfigError(
                "nothing to fetch: give URIs, --plan FILE, --plan-json JSON, or --spark-jars/--spark-files".into(),
            ));
        }
        if cli.jobs == 0 {
            return Err(ConfigError("--jobs must be at least 1".into()));
        }
        Ok(Self {
            server: cli.server,
            tokens: TokenSource::from_path(cli.token_file.as_deref()),
            items,
            cache_dir: cli.cache_dir.as_deref().map(|dir| cwd.join(dir)),
            jobs: cli.jobs,
            retry: RetryPolicy {
                retries: cli.retries,
                base: cli.retry_delay.into(),
                max: Duration::from_secs(10).max(cli.retry_delay.into()),
            },
            ca_file: cli.ca_file,
            timeout: cli.timeout.into(),
            item_timeout: cli.item_timeout.into(),
            connect_timeout: cli.connect_timeout.into(),
            read_timeout: cli.read_timeout.into(),
            log_format: cli.log_format,
            quiet: cli.quiet,
        })
    }
}

/// The items of the fetch plan, from `--plan FILE` or `--plan-json`.
fn plan_items(cli: &Cli) -> Result<Vec<Item>, ConfigError> {
    let plan = match (&cli.plan, &cli.plan_json) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError(format!("cannot read --plan {}: {e}", path.display())))?;
            FetchPlan::from_json(&text)
                .map_err(|e| ConfigError(format!("--plan {}: {e}", path.display())))?
        }
        (None, Some(json)) => {
            FetchPlan::from_json(json).map_err(|e| ConfigError(format!("--plan-json: {e}")))?
        }
        (None, None) => return Ok(Vec::new()),
    };
    Ok(plan.items.into_iter().map(Item::from).collect())
}

/// The items of positional URIs and the Spark-style lists, placed by
/// `--into`, `--dest`, `--jars-dir` and `--files-dir` (relative to `cwd`).
fn command_line_items(cli: &Cli, cwd: &Path) -> Result<Vec<Item>, ConfigError> {
    let absolute = |p: &Path| cwd.join(p);
    let into = cli.into.as_deref().map(absolute);
    let groups = dest_groups(&cli.dest, cwd)?;
    let mut items = Vec::new();
    for text in &cli.uris {
        let uri = parse_uri(text)?;
        let groups_place_it = uri.is_many() && !groups.is_empty();
        if into.is_none() && !groups_place_it {
            return Err(ConfigError(format!(
                "{uri}: pass --into DIR to say where positional URIs land"
            )));
        }
        items.push(Item {
            uri,
            dest: into.clone(),
            name: None,
            groups: groups.clone(),
            store: None,
            unpack: false,
        });
    }
    for (list, dir, flag, dir_flag) in [
        (&cli.spark_jars, &cli.jars_dir, "--spark-jars", "--jars-dir"),
        (
            &cli.spark_files,
            &cli.files_dir,
            "--spark-files",
            "--files-dir",
        ),
    ] {
        let Some(list) = list else { continue };
        let dest = dir.as_deref().map(absolute).or_else(|| into.clone());
        for text in spark_list(list) {
            let uri = parse_uri(text)?;
            if dest.is_none() {
                return Err(ConfigError(format!(
                    "{flag} {uri}: pass {dir_flag} or --into"
                )));
            }
            items.push(Item {
                uri,
                dest: dest.clone(),
                name: None,
                groups: groups.clone(),
                store: None,
                unpack: false,
            });
        }
    }
    Ok(items)
}

/// `--dest GROUP=DIR` flags as group → absolute directory.
fn dest_groups(specs: &[String], cwd: &Path) -> Result<BTreeMap<String, PathBuf>, ConfigError> {
    let mut groups = BTreeMap::new();
    for spec in specs {
        let (group, dir) = spec.split_once('=').ok_or_else(|| {
            ConfigError(format!(
                "--dest {spec:?}: expected GROUP=DIR, e.g. jars=/var/ferry/jars"
            ))
        })?;
        if group.is_empty() || group.contains('/') || dir.is_empty() {
            return Err(ConfigError(format!(
                "--dest {spec:?}: GROUP is one top-level folder name and DIR a directory"
            )));
        }
        groups.insert(group.to_owned(), cwd.join(dir));
    }
    Ok(groups)
}

fn parse_uri(text: &str) -> Result<SourceUri, ConfigError> {
    SourceUri::parse(text).map_err(|e| ConfigError(format!("{text}: {e}")))
}

/// Splits a `spark.jars`-style list: comma-separated, blanks ignored.
pub fn spark_list(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["ferry-init"];
        argv.extend_from_slice(args);
        Config::from_cli(Cli::try_parse_from(argv).expect("parses"))
    }

    #[test]
    fn spark_lists_land_in_their_directories() {
        let config = config(&[
            "--spark-jars",
            " s3a://b/a.jar, https://h/b.jar ,",
            "--spark-files",
            "gs://b/conf.yaml",
            "--jars-dir",
            "/j",
            "--into",
            "/f",
        ])
        .unwrap();
        let dests: Vec<_> = config
            .items
            .iter()
            .map(|i| (i.uri.to_string(), i.dest.clone().unwrap()))
            .collect();
        assert_eq!(
            dests,
            vec![
                ("s3a://b/a.jar".to_owned(), PathBuf::from("/j")),
                ("https://h/b.jar".to_owned(), PathBuf::from("/j")),
                ("gs://b/conf.yaml".to_owned(), PathBuf::from("/f")),
            ]
        );
    }

    #[test]
    fn a_whole_bundle_may_go_by_groups_alone_but_files_need_into() {
        let ok = config(&["--dest", "jars=/j", "--dest", "files=/f", "ferry://libs"]).unwrap();
        assert_eq!(ok.items[0].groups.len(), 2);
        assert!(ok.items[0].dest.is_none());
        let error = config(&["https://h/a.jar"]).unwrap_err().to_string();
        assert!(error.contains("--into"), "{error}");
        assert!(config(&["--dest", "jars", "ferry://libs"]).is_err());
        assert!(config(&[]).is_err());
        assert!(config(&["--into", "/x", "/relative/no/scheme"]).is_err());
    }

    #[test]
    fn a_plan_file_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let plan = dir.path().join("plan.json");
        std::fs::write(
            &plan,
            r#"{"version":1,"items":[{"uri":"ferry://libs","dest":"/var/ferry","groups":{"jars":"/var/ferry/jars"}}]}"#,
        )
        .unwrap();
        let config = config(&["--plan", plan.to_str().unwrap()]).unwrap();
        assert_eq!(
            config.items[0].groups["jars"],
            PathBuf::from("/var/ferry/jars")
        );
        std::fs::write(
            &plan,
            r#"{"version":1,"items":[{"uri":"ferry://libs","dest":"rel"}]}"#,
        )
        .unwrap();
        let error = Config::from_cli(
            Cli::try_parse_from(["ferry-init", "--plan", plan.to_str().unwrap()]).unwrap(),
        )
        .unwrap_err();
        assert!(error.to_string().contains("absolute"), "{error}");
    }

    #[test]
    fn an_inline_plan_is_the_same_plan_as_a_file() {
        let json = r#"{"version":1,"items":[
            {"uri":"ferry://libs","dest":"/var/ferry/other","groups":{"jars":"/var/ferry/jars"}},
            {"uri":"s3a://b/x.jar","dest":"/var/ferry/jars","name":"x.jar"}]}"#;
        let inline = config(&["--plan-json", json]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plan.json");
        std::fs::write(&file, json).unwrap();
        let from_file = config(&["--plan", file.to_str().unwrap()]).unwrap();
        let facts = |c: &Config| -> Vec<_> {
            c.items
                .iter()
                .map(|i| {
                    (
                        i.uri.to_string(),
                        i.dest.clone(),
                        i.name.clone(),
                        i.groups.clone(),
                    )
                })
                .collect()
        };
        assert_eq!(facts(&inline), facts(&from_file));
        assert_eq!(inline.items.len(), 2);
        assert_eq!(inline.items[1].name.as_ref().unwrap().as_str(), "x.jar");
        let error = config(&["--plan-json", "{\"version\":1}"]).unwrap_err();
        assert!(error.to_string().starts_with("--plan-json:"), "{error}");
        assert!(
            Cli::try_parse_from(["ferry-init", "--plan", "p", "--plan-json", json]).is_err(),
            "one plan per run"
        );
    }
}
