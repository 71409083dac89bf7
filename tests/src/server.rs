//! `ferry-server` as a spawned binary on a free loopback port.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{Child, bin, free_port, wait_for_port};

/// Options for starting a `ferry-server`.
pub struct FerryServerBuilder {
    data: Option<String>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    tls: Option<(PathBuf, PathBuf)>,
    token: Option<String>,
}

/// A running `ferry-server`; killed when dropped.
pub struct FerryServer {
    pub child: Child,
    pub port: u16,
    /// `http://127.0.0.1:<port>` (or `https://localhost:<port>` with TLS).
    pub url: String,
    /// `--data` as given (a directory, or an `s3://` URL).
    pub data: String,
    /// The upload token.
    pub token: String,
    /// Holds the temporary data directory and logs alive.
    pub dir: tempfile::TempDir,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl FerryServerBuilder {
    /// Serve from this data location instead of a fresh temporary directory.
    pub fn data(mut self, data: impl Into<String>) -> Self {
        self.data = Some(data.into());
        self
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Serve TLS with this PEM certificate and key.
    pub fn tls(mut self, cert: &Path, key: &Path) -> Self {
        self.tls = Some((cert.to_path_buf(), key.to_path_buf()));
        self
    }

    /// Use this upload token (written to a token file) instead of the one the
    /// server generates.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    pub fn start(self) -> FerryServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = self
            .data
            .unwrap_or_else(|| dir.path().join("data").display().to_string());
        let mut args = self.args;
        if let Some((cert, key)) = &self.tls {
            args.extend([
                "--tls-cert".into(),
                cert.display().to_string(),
                "--tls-key".into(),
                key.display().to_string(),
            ]);
        }
        let mut token_file = None;
        if let Some(token) = &self.token {
            let path = dir.path().join("upload-token");
            std::fs::write(&path, token).expect("write token file");
            args.extend(["--upload-token-file".into(), path.display().to_string()]);
            token_file = Some(path);
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut server = FerryServer {
            child: Child::spawn(
                "ferry-server",
                Command::new("true"),
                dir.path().join("unused.log"),
            ),
            port: 0,
            url: String::new(),
            data,
            token: String::new(),
            dir,
            args,
            env: self.env,
        };
        server.launch(scheme);
        server.token = match token_file {
            Some(path) => std::fs::read_to_string(path).expect("read token file"),
            None => server.read_generated_token(),
        };
        server
    }
}

impl FerryServer {
    pub fn builder() -> FerryServerBuilder {
        FerryServerBuilder {
            data: None,
            args: Vec::new(),
            env: Vec::new(),
            tls: None,
            token: None,
        }
    }

    /// A server on a fresh local data directory with a generated token.
    pub fn start() -> Self {
        Self::builder().start()
    }

    fn launch(&mut self, scheme: &str) {
        let port = free_port();
        let mut command = Command::new(bin("ferry-server"));
        command
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data")
            .arg(&self.data)
            .args(&self.args)
            .env("RUST_LOG", "ferry_server=debug,info")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        let log = self.dir.path().join("server.log");
        self.child = Child::spawn("ferry-server", command, log);
        self.port = port;
        let host = if scheme == "https" {
            "localhost"
        } else {
            "127.0.0.1"
        };
        self.url = format!("{scheme}://{host}:{port}");
        if !wait_for_port(port, Duration::from_secs(20)) {
            panic!(
                "ferry-server did not listen on {port} within 20 s; log:\n{}",
                self.child.log_text()
            );
        }
    }

    fn read_generated_token(&self) -> String {
        let path = Path::new(&self.data).join("upload-token");
        std::fs::read_to_string(&path)
            .map(|t| t.trim().to_owned())
            .unwrap_or_else(|e| {
                panic!(
                    "read generated token {}: {e}; log:\n{}",
                    path.display(),
                    self.child.log_text()
                )
            })
    }

    /// `url` + `path`.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// The `/metrics` page.
    pub fn metrics(&self) -> String {
        reqwest::blocking::get(self.at("/metrics"))
            .and_then(|r| r.text())
            .expect("GET /metrics")
    }

    /// The value of the sample printed as `name` (labels included, e.g.
    /// `ferry_bundles_deleted_total{reason="expired"}`); 0 when absent, as
    /// a counter nothing has touched yet.
    pub fn metric(&self, name: &str) -> u64 {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        self.child.log_text()
    }

    /// Kills the server with SIGKILL (no chance to clean up).
    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// Starts it again on the same data and a new port, keeping the token.
    pub fn restart(&mut self) {
        self.child.kill();
        let scheme = if self.url.starts_with("https") {
            "https"
        } else {
            "http"
        };
        self.launch(scheme);
    }
}
