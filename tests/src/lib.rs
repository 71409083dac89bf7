//! Harness shared by the end-to-end tests and the benchmarks.
//!
//! Everything here starts *real* processes on loopback: the workspace's own
//! binaries (built by `cargo build --workspace --bins` before the tests run,
//! which `tests/run.sh` does) and the emulators that `tests/install-deps.sh`
//! installs. Each started process is killed when its handle drops.
//!
//! A missing external server is never a silent skip: under `CI=true` it is a
//! test failure, elsewhere the test prints why it did nothing and returns.

pub mod api;
pub mod azurite;
pub mod cluster;
pub mod disk;
pub mod dockerfile;
pub mod gcs;
pub mod init;
pub mod java;
pub mod kube_mock;
pub mod kubelet;
pub mod moto;
pub mod nginx;
pub mod podman;
pub mod process;
pub mod prometheus;
pub mod relay;
pub mod server;
pub mod spark_image;
pub mod tls;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use process::Child;
pub use server::{FerryServer, FerryServerBuilder};

/// The workspace root (the folder holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The target directory cargo builds into.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Where emulators and other test-only tools are installed and cached.
pub fn emulator_dir() -> PathBuf {
    target_dir().join("emulators")
}

/// Path of a workspace binary (`ferry-server`, `ferry`, `ferry-init`).
///
/// Uses the profile named by `FERRY_TEST_PROFILE` (default `debug`). Panics
/// with the command to run when the binary has not been built.
pub fn bin(name: &str) -> PathBuf {
    let profile = std::env::var("FERRY_TEST_PROFILE").unwrap_or_else(|_| "debug".into());
    let path = target_dir().join(profile).join(name);
    assert!(
        path.is_file(),
        "{} is not built; run `cargo build --workspace --bins` (tests/run.sh does)",
        path.display()
    );
    path
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port on 127.0.0.1")
}

/// Polls `done` every 25 ms until it holds (true) or `limit` passes (false,
/// after one last look).
pub fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    done()
}

/// Waits until something accepts TCP connections on `127.0.0.1:port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    wait_until(timeout, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
}

/// Whether this run is CI, where a missing dependency must fail the test.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Finds an external tool: the environment variable `env_var` if set, then
/// each of `candidates` (absolute paths, or names looked up on `PATH`).
///
/// Returns `None` only outside CI, after printing why the calling test does
/// nothing; under `CI=true` it panics, so a missing server fails the run.
pub fn require_tool(what: &str, env_var: &str, candidates: &[&str]) -> Option<PathBuf> {
    let from_env = std::env::var_os(env_var).map(PathBuf::from);
    let found = from_env.filter(|p| p.is_file()).or_else(|| {
        candidates.iter().find_map(|c| {
            let p = Path::new(c);
            if p.is_absolute() {
                p.is_file().then(|| p.to_path_buf())
            } else {
                which(c)
            }
        })
    });
    if found.is_none() {
        let msg = format!(
            "{what} not found (set {env_var}, or run tests/install-deps.sh); tried {candidates:?}"
        );
        assert!(!in_ci(), "CI=true and a test dependency is missing: {msg}");
        eprintln!("NOT RUN: {msg}");
    }
    found
}

/// Looks `name` up on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// Deterministic pseudo-random bytes (xorshift), so tests need no data files
/// and a failure can be reproduced from the seed.
pub fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes `len` pseudo-random bytes to `path` in 1 MiB pieces (large test
/// files never sit whole in memory) and returns their sha256 digest.
pub fn write_pseudo_random_file(path: &Path, seed: u64, len: u64) -> ferry_core::Digest {
    use std::io::Write;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("create test file"));
    let mut hasher = ferry_core::Sha256Hasher::new();
    let mut written = 0u64;
    let mut piece_seed = seed;
    while written < len {
        let n = (len - written).min(1 << 20) as usize;
        let piece = pseudo_random_bytes(piece_seed, n);
        hasher.update(&piece);
        file.write_all(&piece).expect("write test file");
        written += n as u64;
        piece_seed = piece_seed.wrapping_add(1);
    }
    file.flush().expect("flush test file");
    hasher.finish()
}

/// Environment that points every cloud credential chain's metadata service
/// at a closed loopback port, so a missing credential fails fast here
/// instead of asking 169.254.169.254 (AWS IMDS, GCE metadata, Azure IMDS).
pub fn metadata_on_loopback() -> Vec<(String, String)> {
    [
        ("AWS_METADATA_ENDPOINT", "http://127.0.0.1:9"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("GCE_METADATA_HOST", "127.0.0.1:9"),
        ("GCE_METADATA_IP", "127.0.0.1:9"),
        (
            "AZURE_MSI_ENDPOINT",
            "http://127.0.0.1:9/metadata/identity/oauth2/token",
        ),
        (
            "IDENTITY_ENDPOINT",
            "http://127.0.0.1:9/metadata/identity/oauth2/token",
        ),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .to_vec()
}
