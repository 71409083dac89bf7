//! The package flags `ferry submit` and `ferry apply` share, and the one
//! resolution step both run: Spark's Ivy on this machine (or the lock file),
//! once per submission, off the async runtime.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::packages::cache::JarCache;
use crate::packages::ivy::IvyEnvironment;
use crate::packages::{self, PackageRequest, Provenance, ResolveOptions};

#[derive(Debug, Clone, clap::Args)]
pub struct PackageFlags {
    /// Lock file for the packages (e.g. ferry.lock): written after each
    /// resolution; while it matches the requested packages, their jars are
    /// staged from it without resolving.
    #[arg(long, env = "FERRY_LOCK", help_heading = "Packages")]
    pub lock: Option<PathBuf>,
    /// Fail unless the --lock file exists and matches the requested
    /// packages (CI: never resolve anything new).
    #[arg(
        long,
        env = "FERRY_LOCKED",
        requires = "lock",
        help_heading = "Packages"
    )]
    pub locked: bool,
    /// ferry's jar cache, where resolved jars are kept by digest (default:
    /// $XDG_CACHE_HOME/ferry/jars, else ~/.cache/ferry/jars).
    #[arg(long, env = "FERRY_JAR_CACHE", help_heading = "Packages")]
    pub jar_cache: Option<PathBuf>,
}

impl PackageFlags {
    /// The jars `request` resolves to (nothing asked, nothing resolved).
    /// `spark_submit` names the Spark distribution whose Ivy resolves
    /// (`SPARK_HOME` wins); `what` names the request in the one-line report.
    pub async fn resolve(
        &self,
        request: PackageRequest,
        spark_submit: &str,
        what: &str,
        quiet: bool,
    ) -> anyhow::Result<Vec<PathBuf>> {
        if request.is_empty() {
            return Ok(Vec::new());
        }
        let cache = self
            .jar_cache
            .clone()
            .or_else(JarCache::default_dir)
            .context("no home folder for ferry's jar cache: pass --jar-cache DIR")?;
        let options = ResolveOptions {
            lock: self.lock.clone(),
            locked: self.locked,
            cache: JarCache::new(cache),
            environment: IvyEnvironment::from_env(spark_submit),
        };
        let asked = request.packages.len();
        let resolution = tokio::task::spawn_blocking(move || packages::resolve(&request, &options))
            .await
            .context("the package resolution thread failed")??;
        if !quiet {
            let how = match resolution.provenance {
                Provenance::Locked { fetched: 0 } => "from the lock".to_owned(),
                Provenance::Locked { fetched } => {
                    format!("from the lock ({fetched} fetched again)")
                }
                Provenance::Resolved | Provenance::Nothing => {
                    "resolved with Spark's Ivy".to_owned()
                }
            };
            eprintln!(
                "ferry: {what}{asked} packages: {} jars {how}",
                resolution.jars.len()
            );
        }
        Ok(resolution.jars.into_iter().map(|j| j.path).collect())
    }
}
