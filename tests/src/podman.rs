//! Podman as this machine can run it: as root, without a daemon, a registry
//! or cgroup delegation (`--storage-driver vfs --runtime runc
//! --cgroup-manager cgroupfs`, plus the two `--ulimit`s without which the
//! start fails on setrlimit here).
//!
//! The images live in their own container storage under the target dir
//! ([`storage_dir`], `$FERRY_TEST_CONTAINERS`), where `tests/run.sh` builds
//! them with `deploy/images/build.sh --root ... --runroot ...` before the
//! tests run; nothing here touches the machine's default storage.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::{in_ci, require_tool, target_dir};

/// Where the tests' container storage lives: `$FERRY_TEST_CONTAINERS`, by
/// default `target/containers` (`storage/` and `run/` below it).
pub fn storage_dir() -> PathBuf {
    std::env::var_os("FERRY_TEST_CONTAINERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("containers"))
}

/// The name the manifests and `ferry submit` give one of our images, at
/// the workspace version (what `deploy/images/build.sh` tags).
pub fn ferry_image(name: &str) -> String {
    format!("ghcr.io/ferry-dev/{name}:{}", env!("CARGO_PKG_VERSION"))
}

/// Whether `image` names one of ours (built here, never pulled).
pub fn is_ferry_image(image: &str) -> bool {
    image.starts_with("ghcr.io/ferry-dev/")
}

/// The podman command line with this machine's global flags.
#[derive(Debug, Clone)]
pub struct Podman {
    program: PathBuf,
    global: Vec<String>,
}

impl Podman {
    /// Finds podman and runc, or returns `None` outside CI (where a missing
    /// tool fails the test instead): tests/install-deps.sh installs both.
    pub fn find() -> Option<Self> {
        let program = require_tool("podman", "FERRY_TEST_PODMAN", &["podman"])?;
        require_tool("runc", "FERRY_TEST_RUNC", &["runc", "/usr/sbin/runc"])?;
        let dir = storage_dir();
        let global = [
            "--root".to_owned(),
            dir.join("storage").display().to_string(),
            "--runroot".to_owned(),
            dir.join("run").display().to_string(),
            "--storage-driver=vfs".to_owned(),
            "--runtime=runc".to_owned(),
            "--cgroup-manager=cgroupfs".to_owned(),
            "--events-backend=file".to_owned(),
        ]
        .into();
        Some(Self { program, global })
    }

    /// Like [`Podman::find`], and also requires our images to be built:
    /// without them a test prints how to build them and does nothing, or
    /// fails under CI.
    pub fn with_ferry_images(names: &[&str]) -> Option<Self> {
        let podman = Self::find()?;
        let missing: Vec<String> = names
            .iter()
            .map(|n| ferry_image(n))
            .filter(|image| !podman.image_exists(image))
            .collect();
        if missing.is_empty() {
            return Some(podman);
        }
        let msg = format!(
            "images {missing:?} are not in {}; build them with `deploy/images/build.sh --root {0}/storage --runroot {0}/run` (tests/run.sh does)",
            storage_dir().display()
        );
        assert!(!in_ci(), "CI=true and a test dependency is missing: {msg}");
        eprintln!("NOT RUN: {msg}");
        None
    }

    /// `podman <global flags>`, ready for a subcommand.
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.global);
        command
    }

    /// `podman <global flags> <args>`, run to completion; panics when podman
    /// itself fails, with its stderr.
    pub fn run(&self, args: &[&str]) -> Output {
        let output = self
            .command()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run podman {args:?}: {e}"));
        assert!(
            output.status.success(),
            "podman {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    pub fn image_exists(&self, image: &str) -> bool {
        self.command()
            .args(["image", "exists", image])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// `podman image inspect`: the image's config (User, Entrypoint, Env,
    /// WorkingDir, Labels, ExposedPorts under `Config`).
    pub fn inspect_image(&self, image: &str) -> Value {
        let output = self.run(&["image", "inspect", image]);
        let list: Value = serde_json::from_slice(&output.stdout).expect("inspect JSON");
        list[0].clone()
    }

    /// Mounts the image's root file system read-only and returns where it
    /// is; [`Podman::unmount_image`] undoes it.
    pub fn mount_image(&self, image: &str) -> PathBuf {
        let output = self.run(&["image", "mount", image]);
        PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
    }

    pub fn unmount_image(&self, image: &str) {
        let _ = self.command().args(["image", "unmount", image]).output();
    }

    /// Sends `signal` ("TERM", "KILL", ...) to a running container.
    pub fn signal(&self, container: &str, signal: &str) {
        let _ = self
            .command()
            .args(["kill", "--signal", signal, container])
            .output();
    }

    /// Removes a container (running or not) and its writable layer.
    pub fn remove(&self, container: &str) {
        let _ = self
            .command()
            .args(["rm", "--force", "--time", "0", container])
            .output();
    }

    /// The path podman runs (for messages).
    pub fn program(&self) -> &Path {
        &self.program
    }
}
