//! A self-signed certificate for `localhost` and `127.0.0.1`, made per test.

use std::path::{Path, PathBuf};

pub struct TestCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The certificate in PEM: trust it as a CA to reach the server.
    pub cert_pem: String,
}

/// Writes `cert.pem` and `key.pem` into `dir`.
pub fn self_signed(dir: &Path) -> TestCert {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let certified = rcgen::generate_simple_self_signed(names).expect("generate certificate");
    let cert_pem = certified.cert.pem();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, &cert_pem).expect("write cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
    TestCert {
        cert,
        key,
        cert_pem,
    }
}
