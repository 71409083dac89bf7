//! ferry-server: stores blobs by sha256, groups them into bundles, hands out
//! a read token per bundle, and serves them to `ferry-init`.
//!
//! `main.rs` parses flags into a [`Config`] and calls [`run`]; tests and
//! embedders build an [`api::AppState`] and call [`router`] and
//! [`serve::serve`] on a listener they bound themselves.

pub mod api;
pub mod auth;
pub mod config;
pub mod fsck;
pub mod gc;
pub mod kube;
pub mod lease;
pub mod metrics;
pub mod readiness;
pub mod replicas;
pub mod serve;
pub mod store;
pub mod tls;

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;

pub use api::{AppState, router};
pub use config::{Args, Config, LogFormat, UploadCredential};

use auth::{Authenticator, UploadAuth};

/// Reads the upload credential, generating it first if that is the setting.
pub fn load_upload_auth(credential: &UploadCredential) -> anyhow::Result<UploadAuth> {
    match credential {
        UploadCredential::Disabled => {
            tracing::warn!(
                "--insecure-no-auth: anyone who can reach this server may upload and delete"
            );
            Ok(UploadAuth::Disabled)
        }
        UploadCredential::File(path) => read_token(path),
        UploadCredential::Generated(path) => {
            if !path.exists() {
                write_new_token(path)?;
                tracing::info!(path = %path.display(), "generated an upload token");
            } else {
                tracing::info!(path = %path.display(), "using the upload token generated earlier");
            }
            read_token(path)
        }
    }
}

fn read_token(path: &Path) -> anyhow::Result<UploadAuth> {
    use secrecy::ExposeSecret as _;
    let token = ferry_io::read_token_file(path)?;
    let token = token.expose_secret();
    anyhow::ensure!(
        token.len() >= 16,
        "upload token in {} is shorter than 16 characters",
        path.display()
    );
    Ok(UploadAuth::from_token(token))
}

fn write_new_token(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create upload token file {}", path.display()))?;
    writeln!(file, "{}", auth::generate_token())?;
    file.sync_all()?;
    Ok(())
}

/// Opens storage, binds, and serves until SIGTERM or SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let store = store::open(&config.data)?;
    let upload = load_upload_auth(&config.credential)?;
    let tls = match &config.tls {
        Some((cert, key)) => Some(tls::acceptor(cert, key)?),
        None => None,
    };
    if config.redirect.is_some() && !store.can_sign() {
        anyhow::bail!(
            "--redirect: {} cannot sign URLs; pass --redirect=false",
            store.description()
        );
    }
    let state = Arc::new(AppState {
        store,
        auth: Authenticator::new(upload).with_revocation_bound(config.revocation_bound),
        metrics: Arc::new(metrics::Metrics::default()),
        limits: config.limits.clone(),
        redirect: config.redirect,
    });
    if let Err(error) = state.store.is_reachable().await {
        tracing::warn!(%error, data = state.store.description(), "storage is not reachable yet; /readyz will say so");
    }
    let shared = match config.shared_store {
        true => Some(
            replicas::prepare(
                &state.store,
                config.gc.lease_ttl,
                config.readiness_probe_interval,
            )
            .await?,
        ),
        false => None,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        data = state.store.description(),
        tls = config.tls.is_some(),
        redirect = ?config.redirect,
        shared_store = config.shared_store,
        "ferry-server ready"
    );
    // Background work (GC, owner tracking) stops when serving stops.
    let (stop_background, background) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut background = background.clone();
        async move {
            let _ = background.wait_for(|stop| *stop).await;
        }
    };
    state.metrics.set_gc_interval(config.gc.interval);
    let (lease, refused) = match shared {
        Some(shared) => (Some(shared.lease), Some(shared.refused)),
        None => (None, None),
    };
    tokio::spawn(gc::run_loop(state.clone(), config.gc, lease, stopped()));
    tokio::spawn(readiness::run_loop(
        state.clone(),
        config.readiness_probe_interval,
        stopped(),
    ));
    let app = kube::start(
        &config.kubernetes,
        &config.credential,
        state.clone(),
        router(state),
        stopped(),
    )
    .await?;
    let options = serve::ServeOptions {
        max_connections: config.max_connections,
        header_timeout: config.header_timeout,
        io_idle_timeout: config.io_idle_timeout,
        shutdown_grace: config.shutdown_grace,
        tls,
    };
    // A shared store found lacking conditional writes after all stops the
    // server like a signal, and makes it exit with the reason.
    let fatal = std::sync::Mutex::new(None);
    let shutdown = async {
        let refused = async {
            match refused {
                Some(refused) => refused.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = serve::shutdown_signal() => {}
            error = refused => {
                tracing::error!(%error, "stopping");
                *fatal.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
            }
        }
    };
    serve::serve(listener, app, options, shutdown).await?;
    let _ = stop_background.send(true);
    match fatal.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// Runs `ferry-server fsck` and returns the process exit code: 0 clean,
/// 1 damage found.
pub async fn run_fsck(data: &str, quarantine: bool, jobs: usize, json: bool) -> anyhow::Result<u8> {
    let store = store::open(data)?;
    let report = fsck::fsck(&store, quarantine, jobs).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for problem in &report.problems {
            println!("{}", serde_json::to_string(problem)?);
        }
        println!(
            "fsck {}: {} blobs ({} bytes), {} bundles, {} indexes checked; {} problems; {} uploads in flight; {} dangling indexes; {} names released",
            store.description(),
            report.blobs_checked,
            report.bytes_checked,
            report.bundles_checked,
            report.indexes_checked,
            report.problems.len(),
            report.uploads_in_flight,
            report.dangling_indexes,
            report.names_released,
        );
    }
    Ok(if report.is_clean() { 0 } else { 1 })
}

/// Sets up `tracing`: text or JSON on stderr, level from `RUST_LOG` (default info).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
