//! The `ferry` client against a real `ferry-server` on loopback: staging,
//! re-staging (zero bytes, read off the server's metrics), named bundles,
//! bad credentials, a server that is down, no system CA store (plain HTTP,
//! and HTTPS with `--ca-file`), an upload cut mid-body by a TCP
//! relay and retried, the kubeconfig token, and `ferry submit` end to end:
//! the rewritten spark-submit command compared argument by argument, the
//! Secret and pod templates parsed with `k8s-openapi`, a stand-in
//! spark-submit that records what it was run with, and the real ferry-init
//! run with the init container's own arguments.
//!
//! Build first: `cargo build -p ferry-server -p ferry-client -p ferry-init --bins`.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use ferry_core::Digest;
use ferry_core::plan::FetchPlan;
use ferry_tests::api::ApiClient;
use ferry_tests::{FerryServer, bin, free_port, pseudo_random_bytes};
use k8s_openapi::api::core::v1::{Pod, Secret};
use serde_json::Value;

/// Runs `ferry` against `server` with a token file and no config file or
/// kubeconfig from the caller's environment.
fn ferry(server: &FerryServer, dir: &Path, args: &[&str]) -> Output {
    let token = dir.join("upload-token");
    std::fs::write(&token, &server.token).unwrap();
    ferry_raw(
        dir,
        &[
            "--server",
            &server.url,
            "--token-file",
            token.to_str().unwrap(),
        ],
        args,
    )
}

fn ferry_raw(dir: &Path, global: &[&str], args: &[&str]) -> Output {
    ferry_command(dir, global, args)
        .output()
        .expect("run ferry")
}

/// The `ferry` command [`ferry_raw`] runs, for a test to add to.
fn ferry_command(dir: &Path, global: &[&str], args: &[&str]) -> Command {
    let mut command = Command::new(bin("ferry"));
    command
        .args(global)
        .args(args)
        .current_dir(dir)
        .env_remove("FERRY_SERVER")
        .env_remove("FERRY_TOKEN")
        .env_remove("FERRY_TOKEN_FILE")
        .env("XDG_CONFIG_HOME", dir.join("no-config"))
        .env("KUBECONFIG", dir.join("no-kubeconfig"));
    command
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// stdout parsed as JSON; panics with stderr when the command failed.
fn json(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "ferry failed ({}): {}",
        output.status,
        stderr(output)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// A folder of files to stage: `lib/` with two jars, one of them large
/// enough to span many body chunks, and a top-level config file.
fn project(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let files = vec![
        ("lib/core.jar".to_owned(), pseudo_random_bytes(11, 3 << 20)),
        ("lib/util.jar".to_owned(), pseudo_random_bytes(12, 70_000)),
        ("app.conf".to_owned(), b"threads = 4\n".to_vec()),
    ];
    for (path, bytes) in &files {
        let path = dir.join("src").join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    files
}

#[test]
fn stage_uploads_once_and_restage_sends_zero_bytes() {
    let server = FerryServer::start();
    let dir = tempfile::tempdir().unwrap();
    let files = project(dir.path());
    let src = dir.path().join("src");
    let lib = src.join("lib");
    let conf = src.join("app.conf");
    let stage_args = [
        "stage",
        "--output",
        "json",
        "--label",
        "team=data",
        lib.to_str().unwrap(),
        conf.to_str().unwrap(),
    ];

    let received_before = server.metric("ferry_bytes_received_total");
    let first = json(&ferry(&server, dir.path(), &stage_args));
    let total: u64 = files.iter().map(|(_, b)| b.len() as u64).sum();
    assert_eq!(first["uploaded"]["files"], 3);
    assert_eq!(first["uploaded"]["bytes"], total);
    assert_eq!(first["skipped"]["files"], 0);
    let received = server.metric("ferry_bytes_received_total") - received_before;
    assert!(
        received >= total,
        "server received {received} bytes for {total} bytes of files"
    );

    // Each file is in the bundle under its expected path, readable with the
    // bundle's own token and identical to the source.
    let id = first["id"].as_str().unwrap();
    let reader = ApiClient::new(&server.url, first["token"].as_str());
    let manifest: Value = reader
        .request(reqwest::Method::GET, &format!("/v1/bundles/{id}"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(manifest["labels"]["team"], "data");
    let mut paths: Vec<&str> = manifest["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    paths.sort();
    assert_eq!(paths, ["app.conf", "lib/core.jar", "lib/util.jar"]);
    for (path, bytes) in &files {
        let response = reader.get_blob(&Digest::of(bytes));
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(
            response.bytes().unwrap().as_ref(),
            bytes.as_slice(),
            "{path}"
        );
    }

    // Unchanged files: a new bundle, and not one body byte on the wire.
    let received_before = server.metric("ferry_bytes_received_total");
    let second = json(&ferry(&server, dir.path(), &stage_args));
    assert_eq!(
        server.metric("ferry_bytes_received_total"),
        received_before,
        "a re-stage of unchanged files sent bytes"
    );
    assert_eq!(second["uploaded"]["bytes"], 0);
    assert_eq!(second["skipped"]["files"], 3);
    assert_eq!(second["skipped"]["bytes"], total);
    assert_ne!(second["id"], first["id"]);
    assert_ne!(second["token"], first["token"]);

    // One changed file: only it travels.
    std::fs::write(src.join("app.conf"), b"threads = 8\n").unwrap();
    let third = json(&ferry(&server, dir.path(), &stage_args));
    assert_eq!(third["uploaded"]["files"], 1);
    assert_eq!(third["uploaded"]["bytes"], 12);
}

#[test]
fn text_output_names_every_entry_and_json_output_has_the_documented_fields() {
    let server = FerryServer::start();
    let dir = tempfile::tempdir().unwrap();
    project(dir.path());
    let conf = dir.path().join("src/app.conf");
    let text = ferry(&server, dir.path(), &["stage", conf.to_str().unwrap()]);
    assert!(text.status.success(), "{}", stderr(&text));
    let stdout = String::from_utf8(text.stdout).unwrap();
    assert!(stdout.starts_with("bundle   id-"), "{stdout}");
    assert!(stdout.contains("token    "), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.trim().starts_with("ferry://id-") && l.ends_with("/app.conf")),
        "{stdout}"
    );

    let json = json(&ferry(
        &server,
        dir.path(),
        &[
            "stage",
            "--output",
            "json",
            "--ttl",
            "2h",
            conf.to_str().unwrap(),
        ],
    ));
    for field in [
        "id",
        "name",
        "token",
        "expires_at",
        "entries",
        "uploaded",
        "skipped",
    ] {
        assert!(json.get(field).is_some(), "missing {field}: {json}");
    }
    let expires = chrono::DateTime::parse_from_rfc3339(json["expires_at"].as_str().unwrap())
        .expect("expires_at is RFC 3339");
    let left = expires.signed_duration_since(chrono::Utc::now());
    assert!(
        left > chrono::TimeDelta::minutes(110) && left <= chrono::TimeDelta::minutes(120),
        "--ttl 2h gave {left}"
    );
}

#[test]
fn named_bundles_are_listed_shown_protected_and_removed() {
    let server = FerryServer::start();
    let dir = tempfile::tempdir().unwrap();
    project(dir.path());
    let lib = dir.path().join("src/lib");
    let lib = lib.to_str().unwrap();

    let staged = json(&ferry(
        &server,
        dir.path(),
        &[
            "stage",
            "--name",
            "team-libs-2026.11",
            "--output",
            "json",
            lib,
        ],
    ));
    assert_eq!(staged["name"], "team-libs-2026.11");
    assert!(
        staged["expires_at"].is_null(),
        "named bundles default to never"
    );

    // The name is taken: a clear error, exit non-zero, the first bundle intact.
    let again = ferry(
        &server,
        dir.path(),
        &["stage", "--name", "team-libs-2026.11", lib],
    );
    assert!(!again.status.success());
    let message = stderr(&again);
    assert!(
        message.contains("team-libs-2026.11 is taken") && message.contains("ferry bundles rm"),
        "{message}"
    );

    let listed = json(&ferry(
        &server,
        dir.path(),
        &["bundles", "ls", "--output", "json"],
    ));
    let bundles = listed["bundles"].as_array().expect("bundles array");
    assert!(
        bundles
            .iter()
            .any(|b| b["name"] == "team-libs-2026.11" && b["id"] == staged["id"]),
        "{listed}"
    );

    let shown = json(&ferry(
        &server,
        dir.path(),
        &["bundles", "show", "team-libs-2026.11", "--output", "json"],
    ));
    assert_eq!(shown["id"], staged["id"]);
    assert_eq!(shown["entries"].as_array().unwrap().len(), 2);
    assert!(
        shown.get("token").is_none()
            && !shown
                .to_string()
                .contains(staged["token"].as_str().unwrap()),
        "show must not print the read token"
    );

    let removed = ferry(&server, dir.path(), &["bundles", "rm", "team-libs-2026.11"]);
    assert!(removed.status.success(), "{}", stderr(&removed));
    let gone = ferry(
        &server,
        dir.path(),
        &["bundles", "show", "team-libs-2026.11"],
    );
    assert!(!gone.status.success());
    assert!(
        stderr(&gone).contains("no bundle team-libs-2026.11"),
        "{}",
        stderr(&gone)
    );
    // The name is free again.
    json(&ferry(
        &server,
        dir.path(),
        &[
            "stage",
            "--name",
            "team-libs-2026.11",
            "--output",
            "json",
            lib,
        ],
    ));
}

#[test]
fn wrong_token_and_missing_token_are_clear_errors_that_do_not_echo_the_secret() {
    let server = FerryServer::start();
    let dir = tempfile::tempdir().unwrap();
    project(dir.path());
    let conf = dir.path().join("src/app.conf");
    let wrong = "wrong-token-0123456789abcdef";
    let output = ferry_raw(
        dir.path(),
        &["--server", &server.url, "--token", wrong, "--retries", "0"],
        &["stage", conf.to_str().unwrap()],
    );
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains("unauthorized") || message.contains("token"),
        "{message}"
    );
    assert!(!message.contains(wrong), "the token leaked into: {message}");
    assert!(output.stdout.is_empty());

    // No token at all (a remote server, so no local fallback either).
    let output = ferry_raw(
        dir.path(),
        &["--server", &server.url.replace("127.0.0.1", "localhost")],
        &["stage", conf.to_str().unwrap()],
    );
    assert!(!output.status.success());
    assert!(stderr(&output).contains("token"), "{}", stderr(&output));

    // A token file that does not exist is named.
    let output = ferry_raw(
        dir.path(),
        &[
            "--server",
            &server.url,
            "--token-file",
            "/nonexistent/ferry-token",
        ],
        &["bundles", "ls"],
    );
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("/nonexistent/ferry-token"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn server_down_is_a_clear_error_and_a_nonzero_exit() {
    let dir = tempfile::tempdir().unwrap();
    project(dir.path());
    let conf = dir.path().join("src/app.conf");
    let url = format!("http://127.0.0.1:{}", free_port());
    let output = ferry_raw(
        dir.path(),
        &["--server", &url, "--token", "t", "--retries", "1"],
        &["stage", conf.to_str().unwrap()],
    );
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains(&url) || message.contains("connect"),
        "error does not say what failed: {message}"
    );
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn without_a_system_ca_store_http_works_and_https_trusts_the_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    // SSL_CERT_FILE and SSL_CERT_DIR pointing at nothing, as in a minimal
    // container image.
    let store = dir.path().join("no-ca-store");
    std::fs::create_dir(&store).unwrap();
    std::fs::write(store.join("ca-certificates.crt"), "").unwrap();
    let run = |server: &FerryServer, extra: &[&str]| {
        let token = dir.path().join("upload-token");
        std::fs::write(&token, &server.token).unwrap();
        let mut global = vec![
            "--server",
            server.url.as_str(),
            "--token-file",
            token.to_str().unwrap(),
            "--retries",
            "0",
        ];
        global.extend_from_slice(extra);
        ferry_command(dir.path(), &global, &["bundles", "ls"])
            .env("SSL_CERT_FILE", store.join("ca-certificates.crt"))
            .env("SSL_CERT_DIR", &store)
            .output()
            .expect("run ferry")
    };

    let plain = FerryServer::start();
    let output = run(&plain, &[]);
    assert!(output.status.success(), "{}", stderr(&output));

    let certs = tempfile::tempdir().unwrap();
    let cert = ferry_tests::tls::self_signed(certs.path());
    let secure = FerryServer::builder().tls(&cert.cert, &cert.key).start();
    let output = run(&secure, &[]);
    assert!(
        !output.status.success(),
        "a self-signed certificate was trusted"
    );
    let message = stderr(&output);
    assert!(
        message.to_lowercase().contains("certificate") && !message.contains("No CA"),
        "{message}"
    );
    let output = run(&secure, &["--ca-file", cert.cert.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
}

/// A TCP relay from a local port to `upstream` that resets the first
/// connection after it has carried `cut_after` bytes upstream, once.
struct CuttingRelay {
    port: u16,
    connections: Arc<AtomicUsize>,
    cuts: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl CuttingRelay {
    fn start(upstream: u16, cut_after: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let cuts = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, k, s) = (connections.clone(), cuts.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let client = match listener.accept() {
                    Ok((client, _)) => client,
                    Err(_) => {
                        std::thread::sleep(std::time::Duration::from_millis(5));
                        continue;
                    }
                };
                client.set_nonblocking(false).unwrap();
                c.fetch_add(1, Ordering::Relaxed);
                let server = TcpStream::connect(("127.0.0.1", upstream)).unwrap();
                let (client2, server2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let cuts = k.clone();
                std::thread::spawn(move || {
                    let sent = AtomicU64::new(0);
                    let mut buf = vec![0u8; 64 << 10];
                    let (mut from, mut to) = (client, server);
                    loop {
                        let n = match from.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let total = sent.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
                        if total > cut_after
                            && cuts
                                .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
                                .is_ok()
                        {
                            // Reset both sides mid-body.
                            let _ = from.shutdown(Shutdown::Both);
                            let _ = to.shutdown(Shutdown::Both);
                            break;
                        }
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let (mut from, mut to) = (server2, client2);
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(Shutdown::Write);
                });
            }
        });
        Self {
            port,
            connections,
            cuts,
            stop,
        }
    }
}

impl Drop for CuttingRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn upload_cut_mid_body_is_retried_and_the_server_keeps_no_partial_blob() {
    let server = FerryServer::start();
    let dir = tempfile::tempdir().unwrap();
    let big = pseudo_random_bytes(21, 8 << 20);
    std::fs::write(dir.path().join("big.jar"), &big).unwrap();
    // Cut once the relay has carried 2 MiB of the 8 MiB body.
    let relay = CuttingRelay::start(server.port, 2 << 20);
    let token = dir.path().join("upload-token");
    std::fs::write(&token, &server.token).unwrap();
    let url = format!("http://127.0.0.1:{}", relay.port);
    let output = ferry_raw(
        dir.path(),
        &[
            "--server",
            &url,
            "--token-file",
            token.to_str().unwrap(),
            "--retries",
            "3",
        ],
        &["stage", "--output", "json", "big.jar"],
    );
    let staged = json(&output);
    assert_eq!(
        relay.cuts.load(Ordering::SeqCst),
        1,
        "the relay never cut an upload"
    );
    assert!(relay.connections.load(Ordering::SeqCst) >= 2);
    assert!(stderr(&output).contains("retrying"), "{}", stderr(&output));
    assert_eq!(staged["uploaded"]["bytes"], big.len() as u64);

    // The blob is whole and stored once; the cut attempt left nothing behind.
    let reader = ApiClient::new(&server.url, staged["token"].as_str());
    let body = reader.get_blob(&Digest::of(&big)).bytes().unwrap();
    assert!(body.as_ref() == big.as_slice(), "retried blob differs");
    assert_eq!(server.metric("ferry_blobs_stored_total"), 1);
    let uploads = Path::new(&server.data).join("uploads");
    let leftovers: Vec<PathBuf> = std::fs::read_dir(&uploads)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "partial uploads left: {leftovers:?}");
}

#[test]
fn kill_9_of_the_client_mid_upload_then_rerun_completes() {
    let server = FerryServer::start();
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<Vec<u8>> = (0..4)
        .map(|i| pseudo_random_bytes(30 + i, 16 << 20))
        .collect();
    for (i, bytes) in files.iter().enumerate() {
        std::fs::write(dir.path().join(format!("part-{i}.jar")), bytes).unwrap();
    }
    let token = dir.path().join("upload-token");
    std::fs::write(&token, &server.token).unwrap();
    let mut child = Command::new(bin("ferry"))
        .args([
            "--server",
            &server.url,
            "--token-file",
            token.to_str().unwrap(),
        ])
        .args([
            "stage",
            "part-0.jar",
            "part-1.jar",
            "part-2.jar",
            "part-3.jar",
        ])
        .current_dir(dir.path())
        .env("XDG_CONFIG_HOME", dir.path().join("no-config"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill as soon as the server has started receiving bodies.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while server.metric("ferry_bytes_received_total") == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let stored_before = server.metric("ferry_blobs_stored_total");

    let rerun = json(&ferry(
        &server,
        dir.path(),
        &[
            "stage",
            "--output",
            "json",
            "part-0.jar",
            "part-1.jar",
            "part-2.jar",
            "part-3.jar",
        ],
    ));
    assert_eq!(
        rerun["uploaded"]["files"].as_u64().unwrap() + rerun["skipped"]["files"].as_u64().unwrap(),
        4
    );
    assert_eq!(rerun["skipped"]["files"].as_u64().unwrap(), stored_before);
    let reader = ApiClient::new(&server.url, rerun["token"].as_str());
    for bytes in &files {
        let body = reader.get_blob(&Digest::of(bytes)).bytes().unwrap();
        assert!(body.as_ref() == bytes.as_slice());
    }
}

#[test]
fn kubeconfig_token_is_used_as_the_upload_token() {
    let token = "kube-user-token-4f1c2e";
    let server = FerryServer::builder().token(token).start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), b"a").unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: dev\n\
             contexts:\n- name: dev\n  context: {{cluster: c, user: alice, namespace: spark}}\n\
             clusters:\n- name: c\n  cluster: {{server: 'https://127.0.0.1:1'}}\n\
             users:\n- name: alice\n  user: {{token: {token}}}\n"
        ),
    )
    .unwrap();
    let run = |config: &Path| {
        Command::new(bin("ferry"))
            .args([
                "--server",
                &server.url,
                "--kube-token",
                "stage",
                "--output",
                "json",
                "a.txt",
            ])
            .current_dir(dir.path())
            .env("XDG_CONFIG_HOME", dir.path().join("no-config"))
            .env("KUBECONFIG", config)
            .output()
            .unwrap()
    };
    json(&run(&kubeconfig));

    let missing = run(&dir.path().join("absent"));
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("--kube-token"),
        "{}",
        stderr(&missing)
    );
}

/// Files for a spark-submit: names with spaces and commas.
struct SparkProject {
    dir: tempfile::TempDir,
}

impl SparkProject {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let deps = dir.path().join("my deps");
        std::fs::create_dir_all(&deps).unwrap();
        std::fs::write(deps.join("a b.jar"), pseudo_random_bytes(41, 50_000)).unwrap();
        std::fs::write(deps.join("lib x.jar"), pseudo_random_bytes(42, 60_000)).unwrap();
        std::fs::write(deps.join("conf.json"), b"{\"k\": 1}\n").unwrap();
        // A real archive (ferry-init unpacks `archives`) holding one file.
        let inside = dir.path().join("env-src");
        std::fs::create_dir_all(&inside).unwrap();
        std::fs::write(inside.join("inside.bin"), pseudo_random_bytes(43, 1000)).unwrap();
        let tar = Command::new("tar")
            .arg("czf")
            .arg(deps.join("env.tar.gz"))
            .arg("-C")
            .arg(&inside)
            .arg("inside.bin")
            .status()
            .unwrap();
        assert!(tar.success(), "tar czf");
        std::fs::write(deps.join("job,v2.jar"), pseudo_random_bytes(44, 80_000)).unwrap();
        std::fs::write(
            dir.path().join("spark.conf"),
            format!(
                "spark.archives {}/env.tar.gz#env\nspark.executor.instances 2\n",
                deps.display()
            ),
        )
        .unwrap();
        Self { dir }
    }

    fn path(&self, rel: &str) -> String {
        self.dir.path().join(rel).display().to_string()
    }

    /// spark-submit's arguments (after the program name).
    fn args(&self) -> Vec<String> {
        let deps = self.path("my deps");
        vec![
            "--master".into(),
            "k8s://https://127.0.0.1:6443".into(),
            "--deploy-mode".into(),
            "cluster".into(),
            "--name".into(),
            "etl".into(),
            "--class".into(),
            "com.example.Main".into(),
            "--jars".into(),
            format!(
                "{deps}/a b.jar,file://{}/lib%20x.jar,s3a://bucket/remote.jar,local:///opt/spark/jars/in-image.jar",
                deps.replace(' ', "%20")
            ),
            "--files".into(),
            format!("{deps}/conf.json#app.conf,http://127.0.0.1:9/data.csv"),
            "--conf".into(),
            "spark.executor.memory=2g".into(),
            "--properties-file".into(),
            self.path("spark.conf"),
            format!("{deps}/job,v2.jar"),
            "--input".into(),
            "arg with space".into(),
        ]
    }
}

/// What the rewritten spark-submit must be (after the program name), given
/// the submission label and template folder it chose.
fn expected_command(project: &SparkProject, submission: &str, templates: &Path) -> Vec<String> {
    let t = templates.display();
    let mut expected: Vec<String> = [
        "--master",
        "k8s://https://127.0.0.1:6443",
        "--deploy-mode",
        "cluster",
        "--name",
        "etl",
        "--class",
        "com.example.Main",
        "--jars",
        "local:///var/ferry/jars/a%20b.jar,local:///var/ferry/jars/lib%20x.jar,local:///var/ferry/jars/remote.jar,local:///opt/spark/jars/in-image.jar",
        "--files",
        "local:///var/ferry/files/conf.json#app.conf,local:///var/ferry/files/data.csv",
        "--conf",
        "spark.executor.memory=2g",
        "--properties-file",
    ]
    .map(String::from)
    .to_vec();
    expected.push(project.path("spark.conf"));
    // ferry-init unpacks the properties file's archive, so Spark is not
    // given it: the file's list is overridden empty.
    expected.extend(["--conf".into(), "spark.archives=".into()]);
    for role in ["driver", "executor"] {
        expected.extend([
            "--conf".into(),
            format!("spark.kubernetes.{role}.podTemplateFile={t}/{role}-pod-template.yaml"),
            "--conf".into(),
            format!("spark.kubernetes.{role}.podTemplateContainerName=spark-kubernetes-{role}"),
            "--conf".into(),
            format!("spark.kubernetes.{role}.label.ferry.dev/submission={submission}"),
        ]);
    }
    expected.extend([
        "--conf".into(),
        "spark.kubernetes.namespace=spark-jobs".into(),
        "--conf".into(),
        "spark.kubernetes.jars.avoidDownloadSchemes=local".into(),
        "local:///var/ferry/app/job%2Cv2.jar".into(),
        "--input".into(),
        "arg with space".into(),
    ]);
    expected
}

fn submission_label(command: &[String]) -> String {
    command
        .iter()
        .find_map(|a| a.strip_prefix("spark.kubernetes.driver.label.ferry.dev/submission="))
        .expect("submission label in the command")
        .to_owned()
}

fn read_pod(path: &Path) -> Pod {
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).expect("template is a Pod")
}

#[test]
fn submit_dry_run_rewrites_every_dependency_and_emits_parseable_objects() {
    let server = FerryServer::start();
    let project = SparkProject::new();
    let templates = project.dir.path().join("templates");
    let mut args: Vec<String> = [
        "submit",
        "--dry-run",
        "--output",
        "json",
        "--namespace",
        "spark-jobs",
        "--init-image",
        "registry.example/ferry-init:test",
        "--pod-server",
        "http://ferry.ferry-system.svc:7070",
        "--template-dir",
    ]
    .map(String::from)
    .to_vec();
    args.push(templates.display().to_string());
    args.push("--".into());
    args.push("spark-submit".into());
    args.extend(project.args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = json(&ferry(&server, project.dir.path(), &args));

    let command: Vec<String> = serde_json::from_value(out["command"].clone()).unwrap();
    assert_eq!(command[0], "spark-submit");
    let submission = submission_label(&command);
    assert_eq!(
        command[1..],
        expected_command(&project, &submission, &templates)[..]
    );

    // The Secret holds a token that reads exactly this bundle.
    let secret: Secret = serde_json::from_value(out["secret"].clone()).expect("a Secret");
    assert_eq!(secret.metadata.namespace.as_deref(), Some("spark-jobs"));
    let bundle = out["bundle"].as_str().unwrap();
    let token = secret
        .string_data
        .as_ref()
        .and_then(|d| d.get("token").cloned())
        .or_else(|| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get("token"))
                .map(|b| String::from_utf8(b.0.clone()).unwrap())
        })
        .expect("token key");
    let reader = ApiClient::new(&server.url, Some(&token));
    let manifest: Value = reader
        .request(reqwest::Method::GET, &format!("/v1/bundles/{bundle}"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let mut paths: Vec<&str> = manifest["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "app/job,v2.jar",
            "archives/env.tar.gz",
            "files/conf.json",
            "jars/a b.jar",
            "jars/lib x.jar"
        ]
    );
    assert_eq!(manifest["owner"]["namespace"], "spark-jobs");
    assert_eq!(
        manifest["owner"]["selector"],
        format!("ferry.dev/submission={submission}")
    );

    // Both templates are Pods with ferry-init first, fetching the bundle and
    // the remote dependencies, and the Secret mounted.
    for role in ["driver", "executor"] {
        let pod = read_pod(&templates.join(format!("{role}-pod-template.yaml")));
        let spec = pod.spec.expect("spec");
        let init = &spec.init_containers.as_ref().expect("init containers")[0];
        assert_eq!(init.name, "ferry-init");
        assert_eq!(
            init.image.as_deref(),
            Some("registry.example/ferry-init:test")
        );
        let init_args = init.args.as_ref().unwrap();
        assert!(
            init_args
                .windows(2)
                .any(|w| w[0] == "--server" && w[1] == "http://ferry.ferry-system.svc:7070")
        );
        // The fetch plan comes last: the bundle by group, then each remote
        // dependency into its group's directory.
        assert_eq!(init_args[init_args.len() - 2], "--plan-json");
        let plan = FetchPlan::from_json(init_args.last().unwrap()).expect("a fetch plan");
        assert_eq!(plan.items[0].uri.to_string(), format!("ferry://{bundle}"));
        assert_eq!(plan.items[0].groups["jars"], "/var/ferry/jars");
        assert_eq!(plan.items[0].groups["app"], "/var/ferry/app");
        let remote: Vec<(String, &str)> = plan.items[1..]
            .iter()
            .map(|i| (i.uri.to_string(), i.dest.as_str()))
            .collect();
        assert_eq!(
            remote,
            [
                ("s3a://bucket/remote.jar".to_owned(), "/var/ferry/jars"),
                ("http://127.0.0.1:9/data.csv".to_owned(), "/var/ferry/files"),
                // The archive, from the bundle, to be unpacked.
                (
                    format!("ferry://{bundle}/archives/env.tar.gz"),
                    "/var/ferry/archives"
                ),
            ]
        );
        assert!(plan.items.last().unwrap().unpack, "the archive is unpacked");
        // ferry-init is not root: it reads the root-owned token via the fsGroup.
        assert_eq!(
            spec.security_context.as_ref().and_then(|s| s.fs_group),
            Some(185)
        );
        let volumes = spec.volumes.as_ref().unwrap();
        let token_volume = volumes.iter().find_map(|v| v.secret.as_ref()).unwrap();
        assert_eq!(token_volume.default_mode, Some(0o440));
        assert!(
            volumes
                .iter()
                .any(|v| v.secret.as_ref().and_then(|s| s.secret_name.as_deref())
                    == secret.metadata.name.as_deref())
        );
        let main = &spec.containers[0];
        assert_eq!(main.name, format!("spark-kubernetes-{role}"));
        assert!(
            main.volume_mounts
                .as_ref()
                .unwrap()
                .iter()
                .any(|m| m.mount_path == "/var/ferry")
        );
    }
}

#[test]
fn submit_merges_the_users_own_pod_template() {
    let server = FerryServer::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("job.jar"), b"jar").unwrap();
    let user_template = dir.path().join("driver.yaml");
    std::fs::write(
        &user_template,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  labels: {team: data}\nspec:\n  \
         securityContext: {fsGroup: 2000}\n  nodeSelector: {pool: spark}\n  containers:\n  - name: main\n    \
         volumeMounts: [{name: scratch, mountPath: /scratch}]\n  \
         volumes: [{name: scratch, emptyDir: {}}]\n",
    )
    .unwrap();
    let templates = dir.path().join("t");
    let out = json(&ferry(
        &server,
        dir.path(),
        &[
            "submit",
            "--dry-run",
            "--output",
            "json",
            "--namespace",
            "ns",
            "--template-dir",
            templates.to_str().unwrap(),
            "--",
            "spark-submit",
            "--master",
            "k8s://https://127.0.0.1:6443",
            "--deploy-mode",
            "cluster",
            "--conf",
            &format!(
                "spark.kubernetes.driver.podTemplateFile={}",
                user_template.display()
            ),
            "--conf",
            "spark.kubernetes.driver.podTemplateContainerName=main",
            "job.jar",
        ],
    ));
    let command: Vec<String> = serde_json::from_value(out["command"].clone()).unwrap();
    // The user's template option is replaced by the merged one, not repeated.
    let driver_templates: Vec<&String> = command
        .iter()
        .filter(|a| a.starts_with("spark.kubernetes.driver.podTemplateFile="))
        .collect();
    assert_eq!(driver_templates.len(), 1, "{command:?}");
    assert!(driver_templates[0].ends_with("/t/driver-pod-template.yaml"));

    let pod = read_pod(&templates.join("driver-pod-template.yaml"));
    assert_eq!(pod.metadata.labels.unwrap()["team"], "data");
    let spec = pod.spec.unwrap();
    assert_eq!(spec.node_selector.unwrap()["pool"], "spark");
    assert_eq!(spec.security_context.unwrap().fs_group, Some(2000));
    assert_eq!(spec.containers.len(), 1);
    let mounts: Vec<&str> = spec.containers[0]
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert_eq!(mounts, ["/scratch", "/var/ferry"]);
    let volumes: Vec<&str> = spec
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .map(|v| v.name.as_str())
        .collect();
    assert!(
        volumes.contains(&"scratch") && volumes.len() == 3,
        "{volumes:?}"
    );
}

/// A stand-in spark-submit that records its arguments (NUL-separated) and
/// exits with status 7.
fn recording_spark_submit(dir: &Path) -> (PathBuf, PathBuf) {
    let script = dir.join("spark-submit");
    let record = dir.join("argv");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\0' \"$a\"; done > '{}'\nexit 7\n",
            record.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, record)
}

#[test]
fn submit_runs_spark_submit_with_the_rewritten_command_and_ferry_init_delivers_the_files() {
    let server = FerryServer::start();
    let project = SparkProject::new();
    let (script, record) = recording_spark_submit(project.dir.path());
    let templates = project.dir.path().join("templates");
    let secret_file = project.dir.path().join("secret.yaml");
    let mut args: Vec<String> = vec![
        "submit".into(),
        "--namespace".into(),
        "spark-jobs".into(),
        "--template-dir".into(),
        templates.display().to_string(),
        "--secret-file".into(),
        secret_file.display().to_string(),
        "--".into(),
        script.display().to_string(),
    ];
    args.extend(project.args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = ferry(&server, project.dir.path(), &args);
    // spark-submit's exit status is ferry's.
    assert_eq!(output.status.code(), Some(7), "{}", stderr(&output));

    let recorded: Vec<String> = std::fs::read(&record)
        .unwrap()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8(a.to_vec()).unwrap())
        .collect();
    let submission = submission_label(&recorded);
    assert_eq!(
        recorded,
        expected_command(&project, &submission, &templates)
    );

    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&secret_file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the Secret file is readable by others");
    let secret: Secret =
        serde_yaml::from_str(&std::fs::read_to_string(&secret_file).unwrap()).expect("a Secret");
    let token = secret.string_data.unwrap()["token"].clone();

    // Run the real ferry-init with the driver template's own arguments,
    // mapped from pod paths to this test's folders. Remote dependencies of
    // this project are unreachable on purpose, so only the bundle is fetched.
    let pod = read_pod(&templates.join("driver-pod-template.yaml"));
    let init_args = pod.spec.unwrap().init_containers.unwrap()[0]
        .args
        .clone()
        .unwrap();
    let root = project.dir.path().join("pod");
    let token_file = project.dir.path().join("pod-token");
    std::fs::write(&token_file, &token).unwrap();
    let mut mapped = Vec::new();
    for (i, arg) in init_args.iter().enumerate() {
        let previous = i.checked_sub(1).map(|p| init_args[p].as_str());
        let arg = match previous {
            Some("--server") => server.url.clone(),
            Some("--plan-json") => {
                let mut plan = FetchPlan::from_json(arg).expect("a fetch plan");
                plan.items
                    .retain(|item| item.uri.as_str().starts_with("ferry://"));
                assert_eq!(plan.items.len(), 2, "the bundle, and its archive");
                assert_eq!(
                    plan.items.iter().filter(|item| item.unpack).count(),
                    1,
                    "the archive is unpacked"
                );
                plan.to_json()
            }
            _ => arg.replace("/var/run/secrets/ferry/token", token_file.to_str().unwrap()),
        };
        mapped.push(arg.replace("/var/ferry", root.to_str().unwrap()));
    }
    let init = Command::new(bin("ferry-init"))
        .args(&mapped)
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "ferry-init {mapped:?}: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    for (landed, source) in [
        ("jars/a b.jar", "my deps/a b.jar"),
        ("jars/lib x.jar", "my deps/lib x.jar"),
        ("files/conf.json", "my deps/conf.json"),
        ("archives/env/inside.bin", "env-src/inside.bin"),
        ("app/job,v2.jar", "my deps/job,v2.jar"),
    ] {
        assert_eq!(
            std::fs::read(root.join(landed)).unwrap_or_default(),
            std::fs::read(project.dir.path().join(source)).unwrap(),
            "{landed}"
        );
    }
}

#[test]
fn submit_without_local_dependencies_or_with_a_missing_file_says_why() {
    let server = FerryServer::start();
    let dir = tempfile::tempdir().unwrap();
    let nothing = ferry(
        &server,
        dir.path(),
        &[
            "submit",
            "--dry-run",
            "--",
            "spark-submit",
            "--master",
            "k8s://https://127.0.0.1:6443",
            "--deploy-mode",
            "cluster",
            "--class",
            "X",
            "local:///opt/app.jar",
        ],
    );
    assert!(!nothing.status.success());
    assert!(
        stderr(&nothing).contains("run spark-submit directly"),
        "{}",
        stderr(&nothing)
    );

    let missing = ferry(
        &server,
        dir.path(),
        &[
            "submit",
            "--dry-run",
            "--",
            "spark-submit",
            "--master",
            "k8s://https://127.0.0.1:6443",
            "--deploy-mode",
            "cluster",
            "--jars",
            "/no/such/dep.jar",
            "local:///opt/app.jar",
        ],
    );
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("/no/such/dep.jar"),
        "{}",
        stderr(&missing)
    );
    assert_eq!(server.metric("ferry_bundles_created_total"), 0);
}
