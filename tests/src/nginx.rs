//! nginx (Debian package) serving a directory on a loopback port, from a
//! config file written per test: optional TLS, WebDAV uploads, a bandwidth
//! limit, and extra `location` blocks (e.g. redirects or fake API answers).
//!
//! It runs with `master_process off`, one process, so [`Nginx::kill`] stops
//! it at once (a killed master would leave serving workers behind), and
//! [`Nginx::restart`] brings it back on the same port.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{Child, free_port, require_tool, wait_for_port};

/// Options for starting nginx.
pub struct NginxBuilder {
    root: PathBuf,
    tls: Option<(PathBuf, PathBuf)>,
    webdav: bool,
    limit_rate: Option<String>,
    locations: Vec<String>,
}

/// A running nginx; killed when dropped.
pub struct Nginx {
    pub child: Child,
    pub port: u16,
    /// `http://127.0.0.1:<port>` or `https://localhost:<port>`.
    pub url: String,
    /// The directory served at `/`.
    pub root: PathBuf,
    exe: PathBuf,
    dir: tempfile::TempDir,
}

impl NginxBuilder {
    /// Serve HTTPS with this PEM certificate and key (see `tls::self_signed`).
    pub fn tls(mut self, cert: &Path, key: &Path) -> Self {
        self.tls = Some((cert.to_path_buf(), key.to_path_buf()));
        self
    }

    /// Accept `PUT` and `DELETE` (WebDAV) under `/`.
    pub fn webdav(mut self) -> Self {
        self.webdav = true;
        self
    }

    /// Limit each response to this rate (nginx `limit_rate`, e.g. `"64k"`).
    pub fn limit_rate(mut self, rate: &str) -> Self {
        self.limit_rate = Some(rate.to_owned());
        self
    }

    /// Adds a raw `location ... { ... }` block inside the server.
    pub fn location(mut self, block: &str) -> Self {
        self.locations.push(block.to_owned());
        self
    }

    /// Starts nginx, or returns `None` outside CI when it is not installed.
    pub fn start(self) -> Option<Nginx> {
        let exe = require_tool(
            "nginx (apt-get install nginx-light or nginx)",
            "FERRY_TEST_NGINX",
            &["/usr/sbin/nginx", "nginx"],
        )?;
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("temp")).expect("nginx temp dir");
        let port = free_port();
        let config = self.config(dir.path(), port);
        std::fs::write(dir.path().join("nginx.conf"), config).expect("write nginx.conf");
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let host = if self.tls.is_some() {
            "localhost"
        } else {
            "127.0.0.1"
        };
        let child = Child::spawn("nginx", Command::new("true"), dir.path().join("unused.log"));
        let mut nginx = Nginx {
            child,
            port,
            url: format!("{scheme}://{host}:{port}"),
            root: self.root,
            exe,
            dir,
        };
        nginx.launch();
        Some(nginx)
    }

    fn config(&self, dir: &Path, port: u16) -> String {
        let d = dir.display();
        let user = if is_root() { "user root;" } else { "" };
        let (listen, tls) = match &self.tls {
            Some((cert, key)) => (
                format!("listen 127.0.0.1:{port} ssl;"),
                format!(
                    "ssl_certificate {}; ssl_certificate_key {};",
                    cert.display(),
                    key.display()
                ),
            ),
            None => (format!("listen 127.0.0.1:{port};"), String::new()),
        };
        let dav = if self.webdav {
            "dav_methods PUT DELETE; create_full_put_path on; dav_access user:rw group:r all:r;"
        } else {
            ""
        };
        let rate = self
            .limit_rate
            .as_ref()
            .map(|r| format!("limit_rate {r};"))
            .unwrap_or_default();
        format!(
            r#"{user}
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
    log_format ferry '$status "$request" range="$http_range" bytes=$body_bytes_sent';
    access_log {d}/access.log ferry;
    client_body_temp_path {d}/temp/body;
    proxy_temp_path {d}/temp/proxy;
    fastcgi_temp_path {d}/temp/fastcgi;
    uwsgi_temp_path {d}/temp/uwsgi;
    scgi_temp_path {d}/temp/scgi;
    client_max_body_size 0;
    default_type application/octet-stream;
    types {{ application/json json; }}
    server {{
        {listen}
        {tls}
        root {root};
        {}
        location / {{ {dav} {rate} }}
    }}
}}
"#,
            self.locations.join("\n        "),
            root = self.root.display(),
        )
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Nginx {
    pub fn builder(root: &Path) -> NginxBuilder {
        NginxBuilder {
            root: root.to_path_buf(),
            tls: None,
            webdav: false,
            limit_rate: None,
            locations: Vec::new(),
        }
    }

    /// Serves `root` over plain HTTP.
    pub fn start(root: &Path) -> Option<Self> {
        Self::builder(root).start()
    }

    fn launch(&mut self) {
        let mut command = Command::new(&self.exe);
        command
            .arg("-p")
            .arg(self.dir.path())
            .arg("-e")
            .arg(self.dir.path().join("error.log"))
            .arg("-c")
            .arg(self.dir.path().join("nginx.conf"));
        self.child = Child::spawn("nginx", command, self.dir.path().join("nginx.log"));
        if !wait_for_port(self.port, Duration::from_secs(20)) {
            panic!(
                "nginx did not listen on {} within 20 s; log:\n{}\n{}",
                self.port,
                self.child.log_text(),
                std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
            );
        }
    }

    /// `url` + `path`.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// SIGKILL: open connections break mid-transfer.
    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// Starts it again on the same port and configuration.
    pub fn restart(&mut self) {
        self.child.kill();
        self.launch();
    }

    /// The access log: one line per request,
    /// `<status> "<request line>" range="<Range header>" bytes=<sent>`.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }
}
