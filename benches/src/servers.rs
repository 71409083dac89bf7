//! The two servers under comparison, started from release builds on
//! loopback ports with their data on the benchmark's disk.
//!
//! nginx is configured the way a team would run it as a dependency server
//! (one worker per core, no access log, WebDAV PUT), not the test harness's
//! single-process debugging setup: a reference tuned down would flatter
//! ferry. `sendfile` is off because on loopback it makes nginx *slower*
//! (measured here: 1 GiB GET 0.92 s with it, 0.65 s without; 200 x 16 MiB
//! fan-out 1.9 s vs 1.25 s; 4 KiB GETs 140k vs 170k req/s), so the stronger
//! reference is the one without. ferry-server runs with its defaults and warnings-only logs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use ferry_tests::{Child, free_port, wait_for_port};

use crate::measure::ProcessPeak;

/// A running `ferry-server` (release build); killed when dropped.
pub struct Ferry {
    pub child: Child,
    pub url: String,
    pub token: String,
    pub data: PathBuf,
}

impl Ferry {
    /// Starts `target/release/ferry-server` serving `data` (created if absent).
    pub fn start(data: &Path, log: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data).with_context(|| format!("create {}", data.display()))?;
        let mut command = Command::new(release_bin("ferry-server")?);
        command.arg("--data").arg(data);
        let token_path = data.join("upload-token");
        Self::launch(command, &token_path, data, log)
    }

    /// Starts a replica on the bucket `data` (`s3://...`), with the shared
    /// upload token in `token_file`, `env` pointing it at the store, and
    /// `args`.
    pub fn replica(
        data: &str,
        token_file: &Path,
        env: &[(String, String)],
        args: &[&str],
        log: &Path,
    ) -> anyhow::Result<Self> {
        let mut command = Command::new(release_bin("ferry-server")?);
        command
            .args(["--data", data, "--upload-token-file"])
            .arg(token_file)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)));
        Self::launch(command, token_file, Path::new(data), log)
    }

    fn launch(
        mut command: Command,
        token_path: &Path,
        data: &Path,
        log: &Path,
    ) -> anyhow::Result<Self> {
        let port = free_port();
        command
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn");
        let child = Child::spawn("ferry-server", command, log.to_path_buf());
        if !wait_for_port(port, Duration::from_secs(20)) {
            bail!(
                "ferry-server did not listen on {port} within 20 s; log:\n{}",
                child.log_text()
            );
        }
        let token = std::fs::read_to_string(token_path)
            .with_context(|| format!("read {}", token_path.display()))?
            .trim()
            .to_owned();
        Ok(Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            token,
            data: data.to_path_buf(),
        })
    }

    pub fn peak(&self) -> ProcessPeak {
        ProcessPeak::new(self.child.id())
    }

    /// Where the server keeps blob `hex` on disk.
    pub fn blob_file(&self, hex: &str) -> PathBuf {
        self.data.join("blobs/sha256").join(&hex[..2]).join(hex)
    }
}

/// `target/release/<name>`, or an error saying how to build it.
pub fn release_bin(name: &str) -> anyhow::Result<PathBuf> {
    let path = ferry_tests::target_dir().join("release").join(name);
    if !path.is_file() {
        bail!(
            "{} is not built; run `cargo build --release -p ferry-server -p ferry-client -p ferry-init` (benches/run.sh does)",
            path.display()
        );
    }
    Ok(path)
}

/// A running nginx with master and worker processes; stopped when dropped.
pub struct Nginx {
    child: Child,
    pub url: String,
    pub root: PathBuf,
    pid_file: PathBuf,
}

impl Nginx {
    /// Serves `root` (and accepts WebDAV PUT into it); `dir` holds the config,
    /// logs and temp files and must be on the same disk as `root`, so a PUT
    /// is a rename as it is for ferry-server.
    pub fn start(root: &Path, dir: &Path) -> anyhow::Result<Self> {
        let exe =
            ferry_tests::require_tool("nginx", "FERRY_TEST_NGINX", &["/usr/sbin/nginx", "nginx"])
                .context("nginx is required (tests/install-deps.sh installs it)")?;
        std::fs::create_dir_all(root)?;
        std::fs::create_dir_all(dir.join("temp"))?;
        let port = free_port();
        let d = dir.display();
        let user = if is_root() { "user root;" } else { "" };
        let config = format!(
            r#"{user}
daemon off;
worker_processes 2;
worker_rlimit_nofile 8192;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 2048; }}
http {{
    access_log off;
    sendfile off;
    tcp_nodelay on;
    keepalive_requests 1000000;
    client_max_body_size 0;
    client_body_temp_path {d}/temp/body;
    proxy_temp_path {d}/temp/proxy;
    fastcgi_temp_path {d}/temp/fastcgi;
    uwsgi_temp_path {d}/temp/uwsgi;
    scgi_temp_path {d}/temp/scgi;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {root};
        location / {{
            dav_methods PUT DELETE;
            create_full_put_path on;
            dav_access user:rw group:r all:r;
        }}
    }}
}}
"#,
            root = root.display()
        );
        let config_path = dir.join("nginx.conf");
        std::fs::write(&config_path, config)?;
        let mut command = Command::new(exe);
        command
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&config_path);
        let child = Child::spawn("nginx", command, dir.join("nginx.log"));
        if !wait_for_port(port, Duration::from_secs(20)) {
            bail!(
                "nginx did not listen on {port} within 20 s:\n{}\n{}",
                child.log_text(),
                std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
            );
        }
        Ok(Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            root: root.to_path_buf(),
            pid_file: dir.join("nginx.pid"),
        })
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM to the master stops its workers too; a SIGKILLed master
        // would leave them serving.
        self.child.signal(15);
        if self.child.wait_timeout(Duration::from_secs(10)).is_none() {
            eprintln!(
                "nginx did not stop on SIGTERM within 10 s (pid file {})",
                self.pid_file.display()
            );
        }
    }
}

fn is_root() -> bool {
    crate::measure::output(Command::new("id").arg("-u")).is_ok_and(|o| o.trim() == "0")
}
