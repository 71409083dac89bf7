//! Command-line flags (each with a `FERRY_*` environment twin) and the
//! validated configuration they become before anything starts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::api::Limits;

/// ferry-server: the content-addressed staging server for ferry.
///
/// With no arguments it serves ./ferry-data on 127.0.0.1:7070 and writes a
/// generated upload token to ./ferry-data/upload-token.
#[derive(Debug, Parser)]
#[command(name = "ferry-server", version, about, long_about = None)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address to listen on (use 0.0.0.0:7070 in a pod).
    #[arg(long, env = "FERRY_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,

    /// Where blobs and bundles live: a directory, or s3://bucket[/prefix],
    /// gs://bucket[/prefix], az://container[/prefix] (credentials and
    /// endpoints from each cloud's standard environment variables).
    #[arg(
        long,
        env = "FERRY_DATA",
        default_value = "./ferry-data",
        global = true
    )]
    pub data: String,

    /// File holding the upload token. Without it (and with local data) a
    /// token is generated at <data>/upload-token, mode 0600.
    #[arg(long, env = "FERRY_UPLOAD_TOKEN_FILE")]
    pub upload_token_file: Option<PathBuf>,

    /// PEM certificate chain; serve HTTPS (needs --tls-key).
    #[arg(long, env = "FERRY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, env = "FERRY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Let anyone upload, list and delete. Only for throwaway local use.
    #[arg(long, env = "FERRY_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,

    /// Largest blob accepted (e.g. 512MiB, 64GiB).
    #[arg(long, env = "FERRY_MAX_BLOB_SIZE", default_value = "64GiB", value_parser = parse_size)]
    pub max_blob_size: u64,

    /// Largest chunk of an upload session (`PATCH /v1/uploads/{id}`):
    /// advertised to clients, held in memory while it is hashed and stored.
    #[arg(long, env = "FERRY_MAX_CHUNK_SIZE", default_value = "32MiB", value_parser = parse_size)]
    pub max_chunk_size: u64,

    /// Largest batch upload (`POST /v1/blobs`, several small blobs in one
    /// body): held in memory while it is hashed and stored, at most four
    /// batches at once.
    #[arg(long, env = "FERRY_MAX_BATCH_SIZE", default_value = "8MiB", value_parser = parse_size)]
    pub max_batch_size: u64,

    /// An upload session idle for this long is dropped (and swept by GC).
    #[arg(long, env = "FERRY_UPLOAD_SESSION_TTL", default_value = "24h", value_parser = humantime::parse_duration)]
    pub upload_session_ttl: Duration,

    /// Most entries in one bundle.
    #[arg(long, env = "FERRY_MAX_ENTRIES", default_value_t = 100_000)]
    pub max_entries: usize,

    /// Largest JSON request body (bundle manifests).
    #[arg(long, env = "FERRY_MAX_JSON_SIZE", default_value = "32MiB", value_parser = parse_size)]
    pub max_json_size: u64,

    /// Cut off an upload that sends no bytes for this long.
    #[arg(long, env = "FERRY_BODY_IDLE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub body_idle_timeout: Duration,

    /// Close a connection whose request headers (or TLS handshake) take longer.
    #[arg(long, env = "FERRY_HEADER_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,

    /// Close a connection whose response could not be written for this long
    /// (a reader that stopped reading).
    #[arg(long, env = "FERRY_IO_IDLE_TIMEOUT", default_value = "120s", value_parser = humantime::parse_duration)]
    pub io_idle_timeout: Duration,

    /// Most connections served at once.
    #[arg(long, env = "FERRY_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,

    /// On SIGTERM/SIGINT, wait this long for in-flight transfers.
    #[arg(long, env = "FERRY_SHUTDOWN_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// TTL of an unnamed bundle that asks for none (named bundles default to never).
    #[arg(long, env = "FERRY_DEFAULT_TTL", default_value = "24h", value_parser = humantime::parse_duration)]
    pub default_ttl: Duration,

    /// How often storage is probed for `ferry_ready` (also probed on each
    /// GET /readyz).
    #[arg(long, env = "FERRY_READINESS_PROBE_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub readiness_probe_interval: Duration,

    /// Log format.
    #[arg(long, env = "FERRY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Answer blob GETs with a `307` to a short-lived URL signed by the
    /// bucket, so blob bytes go from the store to the reader, not through
    /// this server. On by default for a bucket; `--redirect=false` proxies.
    /// A directory cannot sign URLs.
    #[arg(long, env = "FERRY_REDIRECT", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub redirect: Option<bool>,

    /// How long a redirect's signed URL is valid: readers use it at once,
    /// so the margin is for clock skew between this server and the store
    /// (and a reader asks again for an expired one). At most 4m: cloud
    /// clients renew temporary credentials once fewer than 5 (AWS) or 4
    /// (GCS) minutes remain, so a URL signed with them never outlives them.
    #[arg(long, env = "FERRY_REDIRECT_EXPIRY", default_value = "2m", value_parser = humantime::parse_duration)]
    pub redirect_expiry: Duration,

    /// A deleted or expired bundle's token stops working on every replica
    /// within this time: a replica that did not delete it checks that the
    /// bundle's record still exists (one HEAD per token) once its cached
    /// answer is older than this.
    #[arg(long, env = "FERRY_REVOCATION_BOUND", default_value = "1s", value_parser = humantime::parse_duration)]
    pub revocation_bound: Duration,

    /// This server is the only one on its bucket. Without it a server on a
    /// bucket assumes replicas share it: it checks at start that the store
    /// keeps conditional writes (refusing to start on one that does not)
    /// and runs GC only while it holds the GC lease.
    #[arg(long, env = "FERRY_SINGLE_REPLICA")]
    pub single_replica: bool,

    #[command(flatten)]
    pub gc: crate::gc::GcArgs,

    #[command(flatten)]
    pub kubernetes: crate::kube::KubeArgs,
}

/// Subcommands; without one, the server serves.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Verify every blob against its digest and every bundle against its
    /// blobs; exit 0 when clean, 1 when damage was found. Safe while serving.
    Fsck {
        /// Move blobs whose bytes do not match their digest to quarantine/
        /// (readers then see them as missing; a re-upload repairs them).
        #[arg(long)]
        quarantine: bool,
        /// Blobs verified at once.
        #[arg(long, default_value_t = 4)]
        jobs: usize,
        /// Print the report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where the upload credential comes from.
#[derive(Debug, Clone)]
pub enum UploadCredential {
    Disabled,
    File(PathBuf),
    /// Generate at this path if absent, then read it.
    Generated(PathBuf),
}

/// Everything `run` needs, checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data: String,
    pub credential: UploadCredential,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub limits: Limits,
    pub header_timeout: Duration,
    pub io_idle_timeout: Duration,
    pub max_connections: usize,
    pub shutdown_grace: Duration,
    pub readiness_probe_interval: Duration,
    pub log_format: LogFormat,
    /// Blob GETs answered with signed URLs valid this long, or proxied.
    pub redirect: Option<Duration>,
    pub revocation_bound: Duration,
    /// Other replicas may share the store (a bucket without
    /// `--single-replica`).
    pub shared_store: bool,
    pub gc: crate::gc::GcConfig,
    pub kubernetes: crate::kube::KubeConfig,
}

/// The longest `--redirect-expiry` (see its help).
pub const MAX_REDIRECT_EXPIRY: Duration = Duration::from_secs(4 * 60);

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "--data {0} is a bucket: give --upload-token-file (a generated token would not be shared by replicas), or --insecure-no-auth"
    )]
    TokenNeededForBucket(String),
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Kubernetes(String),
}

impl Config {
    pub fn from_args(args: Args) -> Result<Self, ConfigError> {
        let gc = crate::gc::GcConfig::from_args(&args.gc)?;
        let kubernetes = crate::kube::KubeConfig::from_args(&args.kubernetes)?;
        let is_bucket = args.data.contains("://") && !args.data.starts_with("file://");
        let credential = if args.insecure_no_auth {
            UploadCredential::Disabled
        } else if let Some(file) = args.upload_token_file {
            UploadCredential::File(file)
        } else if is_bucket {
            return Err(ConfigError::TokenNeededForBucket(args.data));
        } else {
            let dir = args.data.strip_prefix("file://").unwrap_or(&args.data);
            UploadCredential::Generated(PathBuf::from(dir).join("upload-token"))
        };
        let redirect = match args.redirect {
            Some(true) if !is_bucket => {
                return Err(ConfigError::Invalid(format!(
                    "--redirect needs a bucket: {} is a directory, whose blobs only this server can serve",
                    args.data
                )));
            }
            Some(false) => None,
            _ if !is_bucket => None,
            _ => Some(redirect_expiry(args.redirect_expiry)?),
        };
        for (name, value) in [
            ("--max-blob-size", args.max_blob_size),
            ("--max-entries", args.max_entries as u64),
            ("--max-chunk-size", args.max_chunk_size),
            ("--max-batch-size", args.max_batch_size),
            ("--upload-session-ttl", args.upload_session_ttl.as_secs()),
            ("--max-json-size", args.max_json_size),
            ("--max-connections", args.max_connections as u64),
            (
                "--body-idle-timeout",
                args.body_idle_timeout.as_millis() as u64,
            ),
            ("--default-ttl", args.default_ttl.as_secs()),
            (
                "--readiness-probe-interval",
                args.readiness_probe_interval.as_millis() as u64,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        Ok(Self {
            listen: args.listen,
            data: args.data,
            credential,
            tls: args.tls_cert.zip(args.tls_key),
            limits: Limits {
                max_blob_size: args.max_blob_size,
                max_entries: args.max_entries,
                max_json_bytes: usize::try_from(args.max_json_size).unwrap_or(usize::MAX),
                body_idle_timeout: args.body_idle_timeout,
                default_ttl: args.default_ttl,
                max_chunk_size: args.max_chunk_size,
                max_batch_bytes: args.max_batch_size,
                session_ttl: args.upload_session_ttl,
            },
            header_timeout: args.header_timeout,
            io_idle_timeout: args.io_idle_timeout,
            max_connections: args.max_connections,
            shutdown_grace: args.shutdown_grace,
            readiness_probe_interval: args.readiness_probe_interval,
            log_format: args.log_format,
            redirect,
            revocation_bound: args.revocation_bound,
            shared_store: is_bucket && !args.single_replica,
            gc,
            kubernetes,
        })
    }
}

/// `--redirect-expiry`, clamped to [`MAX_REDIRECT_EXPIRY`].
fn redirect_expiry(asked: Duration) -> Result<Duration, ConfigError> {
    if asked < Duration::from_secs(1) {
        return Err(ConfigError::Invalid(
            "--redirect-expiry must be at least 1s".into(),
        ));
    }
    if asked > MAX_REDIRECT_EXPIRY {
        tracing::warn!(
            asked = %humantime::format_duration(asked),
            used = %humantime::format_duration(MAX_REDIRECT_EXPIRY),
            "--redirect-expiry clamped: a signed URL must not outlive the temporary credentials that sign it"
        );
        return Ok(MAX_REDIRECT_EXPIRY);
    }
    Ok(asked)
}

/// Parses sizes such as `1048576`, `512KiB`, `64MiB`, `10GB`, `1T`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size such as 512MiB or 64GiB"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "kb" => 1_000,
        "m" | "mib" => 1 << 20,
        "mb" => 1_000_000,
        "g" | "gib" => 1 << 30,
        "gb" => 1_000_000_000,
        "t" | "tib" => 1 << 40,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use KiB, MiB, GiB, TiB)"
            ));
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_size("10").unwrap(), 10);
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("1GB").unwrap(), 1_000_000_000);
        assert_eq!(parse_size("2g").unwrap(), 2 << 30);
        assert!(parse_size("ten").is_err());
        assert!(parse_size("1XB").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn a_bucket_without_a_token_file_is_refused() {
        let args = Args::parse_from(["ferry-server", "--data", "s3://b/p"]);
        assert!(matches!(
            Config::from_args(args),
            Err(ConfigError::TokenNeededForBucket(_))
        ));
        let args = Args::parse_from(["ferry-server"]);
        let config = Config::from_args(args).unwrap();
        assert!(
            matches!(config.credential, UploadCredential::Generated(p) if p.ends_with("ferry-data/upload-token"))
        );
    }

    #[test]
    fn a_bucket_redirects_and_is_shared_by_default_and_a_directory_never() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["ferry-server", "--upload-token-file", "/t"];
            argv.extend_from_slice(extra);
            Config::from_args(Args::parse_from(argv))
        };
        let bucket = parse(&["--data", "s3://b/p"]).unwrap();
        assert_eq!(bucket.redirect, Some(Duration::from_secs(120)));
        assert!(bucket.shared_store);
        assert_eq!(bucket.revocation_bound, Duration::from_secs(1));
        let proxied = parse(&["--data", "s3://b", "--redirect=false", "--single-replica"]).unwrap();
        assert_eq!(proxied.redirect, None);
        assert!(!proxied.shared_store);
        let clamped =
            parse(&["--data", "gs://b", "--redirect", "--redirect-expiry", "1h"]).unwrap();
        assert_eq!(clamped.redirect, Some(MAX_REDIRECT_EXPIRY));
        let local = parse(&["--data", "/srv/ferry"]).unwrap();
        assert_eq!(local.redirect, None);
        assert!(!local.shared_store);
        assert!(matches!(
            parse(&["--data", "/srv/ferry", "--redirect"]),
            Err(ConfigError::Invalid(m)) if m.contains("needs a bucket")
        ));
    }
}
