//! The flags `ferry submit` and `ferry apply` share: how the pods run
//! ferry-init and reach the server, where dependencies land, and how long
//! an unclaimed bundle lives.

use ferry_core::Ttl;

use crate::api::ApiClient;
use crate::k8s;
use crate::submission::DepsDir;
use crate::submission::render::PodOptions;

#[derive(Debug, Clone, clap::Args)]
pub struct PodFlags {
    /// ferry-init image for the init container.
    #[arg(long, env = "FERRY_INIT_IMAGE", default_value = concat!("ghcr.io/ferry-dev/ferry-init:", env!("CARGO_PKG_VERSION")))]
    pub init_image: String,
    /// Server URL as pods reach it (default: --server), e.g.
    /// http://ferry.ferry-system.svc:7070.
    #[arg(long, env = "FERRY_POD_SERVER")]
    pub pod_server: Option<String>,
    /// Folder inside the pods where dependencies land (the shared volume's
    /// mount path); rewritten dependencies point there.
    #[arg(long, env = "FERRY_DEPS_DIR", default_value = k8s::DEPS_DIR)]
    pub deps_dir: DepsDir,
    /// hostPath of a node-local cache shared by ferry-init containers.
    #[arg(long, env = "FERRY_NODE_CACHE")]
    pub node_cache: Option<String>,
    /// Working directory of the Spark containers, where each unpacked
    /// archive is mounted as <DIR>/<alias> for Spark's ./<alias> (default:
    /// the container's workingDir in your pod template, else
    /// /opt/spark/work-dir, the Spark images' WORKDIR). Given, it wins over
    /// the template and becomes the container's workingDir.
    #[arg(long, env = "FERRY_WORK_DIR", value_name = "DIR", value_parser = work_dir)]
    pub work_dir: Option<String>,
    /// Bundle lifetime if its pods are never seen (default: the server's).
    #[arg(long, env = "FERRY_TTL")]
    pub ttl: Option<Ttl>,
}

impl PodFlags {
    /// The pods' ferry-init settings; the server is `client`'s unless
    /// `--pod-server` says otherwise.
    pub fn pod_options(&self, client: &ApiClient) -> PodOptions {
        PodOptions {
            image: self.init_image.clone(),
            server: self
                .pod_server
                .clone()
                .unwrap_or_else(|| client.server().to_owned()),
            node_cache: self.node_cache.clone(),
            work_dir: self.work_dir.clone(),
        }
    }
}

/// `--work-dir`: an absolute folder, without trailing `/` (but `/` itself).
fn work_dir(text: &str) -> Result<String, String> {
    if !text.starts_with('/') || text.chars().any(char::is_control) {
        return Err(format!("{text:?} is not an absolute folder"));
    }
    let trimmed = text.trim_end_matches('/');
    Ok(if trimmed.is_empty() { "/" } else { trimmed }.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_dirs_are_absolute_folders() {
        assert_eq!(work_dir("/app/").unwrap(), "/app");
        assert_eq!(work_dir("/").unwrap(), "/");
        assert!(work_dir("app").is_err());
        assert!(work_dir("").is_err());
        assert!(work_dir("/a\nb").is_err());
    }
}
