//! Azurite's blob service (npm `azurite`) on a loopback port, with the
//! well-known development account, and blob uploads signed with Shared Key
//! (by the venv's Python, whose standard library has HMAC) so tests need no
//! Azure SDK.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::{Child, free_port, require_tool, wait_for_port};

/// Azurite's fixed development account and key.
pub const ACCOUNT: &str = "devstoreaccount1";
pub const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A running Azurite blob service; killed when dropped.
pub struct Azurite {
    pub child: Child,
    pub port: u16,
    /// `http://127.0.0.1:<port>` (blobs are at `<endpoint>/devstoreaccount1/...`).
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

const PUT_SCRIPT: &str = r#"
import base64, email.utils, hashlib, hmac, sys, urllib.error, urllib.request
endpoint, account, key, resource, path = sys.argv[1:6]
body = open(path, 'rb').read() if path != '-' else b''
headers = {'x-ms-date': email.utils.formatdate(usegmt=True), 'x-ms-version': '2021-08-06',
           'Content-Type': 'application/octet-stream'}
if path != '-':
    headers['x-ms-blob-type'] = 'BlockBlob'
canon_headers = ''.join(f'{k}:{v}\n' for k, v in sorted(headers.items()) if k.startswith('x-ms-'))
res_path, _, query = resource.partition('?')
params = sorted(p.split('=', 1) for p in query.split('&') if p)
canon_res = f'/{account}/{account}/{res_path}' + ''.join(f'\n{k}:{v}' for k, v in params)
length = str(len(body)) if body else ''
to_sign = '\n'.join(['PUT', '', '', length, '', headers['Content-Type'], '', '', '', '', '', '']) \
    + '\n' + canon_headers + canon_res
signature = base64.b64encode(hmac.new(base64.b64decode(key), to_sign.encode(), hashlib.sha256).digest()).decode()
headers['Authorization'] = f'SharedKey {account}:{signature}'
request = urllib.request.Request(f'{endpoint}/{account}/{resource}', data=body, method='PUT', headers=headers)
try:
    urllib.request.urlopen(request)
except urllib.error.HTTPError as e:
    if e.code != 409:
        sys.exit(f'PUT {resource}: {e.code} {e.read()[:500]!r}')
"#;

impl Azurite {
    /// Starts Azurite, or returns `None` outside CI when it is not installed.
    pub fn start() -> Option<Self> {
        let exe = require_tool(
            "azurite-blob (npm install azurite)",
            "FERRY_TEST_AZURITE",
            &["azurite-blob"],
        )?;
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let mut command = Command::new(exe);
        command
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .arg("--location")
            .arg(dir.path())
            .args(["--skipApiVersionCheck", "--loose", "--silent"]);
        let child = Child::spawn("azurite", command, dir.path().join("azurite.log"));
        assert!(
            wait_for_port(port, Duration::from_secs(30)),
            "azurite did not listen on {port}: {}",
            child.log_text()
        );
        Some(Self {
            child,
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        })
    }

    fn put(&self, resource: &str, file: &str) {
        let python = std::env::var("FERRY_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let output = Command::new(python)
            .args([
                "-c",
                PUT_SCRIPT,
                &self.endpoint,
                ACCOUNT,
                KEY,
                resource,
                file,
            ])
            .output()
            .expect("run python3 to talk to azurite");
        assert!(
            output.status.success(),
            "azurite PUT {resource} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Creates a container (no error if it exists).
    pub fn create_container(&self, container: &str) {
        self.put(&format!("{container}?restype=container"), "-");
    }

    /// Uploads the file at `path` as a block blob `container/name`.
    pub fn put_blob(&self, container: &str, name: &str, path: &Path) {
        self.put(&format!("{container}/{name}"), &path.display().to_string());
    }

    /// The standard Azure environment that points a client here.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AZURE_STORAGE_USE_EMULATOR".into(), "true".into()),
            ("AZURITE_BLOB_STORAGE_URL".into(), self.endpoint.clone()),
            ("AZURE_STORAGE_ACCOUNT_NAME".into(), ACCOUNT.into()),
            ("AZURE_STORAGE_ACCOUNT_KEY".into(), KEY.into()),
        ]
    }
}
