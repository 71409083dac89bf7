//! moto's S3 server (PyPI `moto[server]`) on a free loopback port.

use std::process::Command;
use std::time::Duration;

use crate::{Child, free_port, require_tool, wait_for_port};

/// Credentials moto accepts (it accepts any; these are the conventional ones).
pub const ACCESS_KEY: &str = "testing";
pub const SECRET_KEY: &str = "testing";
pub const REGION: &str = "us-east-1";

pub struct Moto {
    pub child: Child,
    pub port: u16,
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

/// moto's own `moto_server` entry point with its WSGI app behind one lock.
const SERIALIZED_MOTO: &str = r#"
import sys, threading
import moto.server as server
lock = threading.Lock()
real_run_simple = server.run_simple
def run_simple(host, port, app, **options):
    def one_at_a_time(environ, start_response):
        with lock:
            return list(app(environ, start_response))
    real_run_simple(host, port, one_at_a_time, **options)
server.run_simple = run_simple
server.main(sys.argv[1:])
"#;

impl Moto {
    /// Starts moto, or returns `None` outside CI when it is not installed.
    pub fn start() -> Option<Self> {
        Self::start_on(free_port())
    }

    /// Starts moto on a given port (to bring a stopped one back).
    pub fn start_on(port: u16) -> Option<Self> {
        let exe = require_tool(
            "moto_server (pip install 'moto[server]')",
            "FERRY_TEST_MOTO",
            &["moto_server"],
        )?;
        let mut command = Command::new(exe);
        command.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        Some(Self::spawn(command, port))
    }

    /// Starts moto handling one request at a time. moto checks a
    /// conditional PUT's precondition (`If-None-Match: *`, `If-Match`) and
    /// then writes in separate steps, so two racing PUTs on its threaded
    /// server can both pass the check; S3 decides them atomically. For a
    /// test of racing conditional writes, this is the S3 behaviour.
    pub fn start_atomic() -> Option<Self> {
        require_tool(
            "moto_server (pip install 'moto[server]')",
            "FERRY_TEST_MOTO",
            &["moto_server"],
        )?;
        let port = free_port();
        let python = std::env::var("FERRY_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let mut command = Command::new(python);
        command.args([
            "-c",
            SERIALIZED_MOTO,
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ]);
        Some(Self::spawn(command, port))
    }

    fn spawn(command: Command, port: u16) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let child = Child::spawn("moto_server", command, dir.path().join("moto.log"));
        assert!(
            wait_for_port(port, Duration::from_secs(30)),
            "moto_server did not listen on {port}: {}",
            child.log_text()
        );
        Self {
            child,
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    /// Creates a bucket with boto3 (installed alongside moto).
    pub fn create_bucket(&self, bucket: &str) {
        let python = std::env::var("FERRY_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = format!(
            "import boto3; boto3.client('s3', endpoint_url='{}', aws_access_key_id='{ACCESS_KEY}', \
             aws_secret_access_key='{SECRET_KEY}', region_name='{REGION}').create_bucket(Bucket='{bucket}')",
            self.endpoint
        );
        let status = Command::new(python)
            .args(["-c", &script])
            .status()
            .expect("run python3 to create a bucket");
        assert!(status.success(), "creating bucket {bucket} on moto failed");
    }

    /// Uploads the file at `path` as `bucket/key` with boto3.
    pub fn put_object(&self, bucket: &str, key: &str, path: &std::path::Path) {
        let python = std::env::var("FERRY_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = format!(
            "import boto3; boto3.client('s3', endpoint_url='{}', aws_access_key_id='{ACCESS_KEY}', \
             aws_secret_access_key='{SECRET_KEY}', region_name='{REGION}').upload_file('{}', '{bucket}', '{key}')",
            self.endpoint,
            path.display()
        );
        let status = Command::new(python)
            .args(["-c", &script])
            .status()
            .expect("run python3 to upload an object");
        assert!(status.success(), "upload of {bucket}/{key} to moto failed");
    }

    /// The standard AWS environment that points an S3 client at this server.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
            ("AWS_REGION".into(), REGION.into()),
            ("AWS_DEFAULT_REGION".into(), REGION.into()),
            ("AWS_ENDPOINT_URL".into(), self.endpoint.clone()),
            ("AWS_ENDPOINT".into(), self.endpoint.clone()),
            ("AWS_ALLOW_HTTP".into(), "true".into()),
        ]
    }
}
