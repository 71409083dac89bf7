//! ferry-init against every source it supports, each a real server on
//! loopback: one contract (fetch, rerun skips, missing object, wrong pin)
//! run against ferry-server, nginx (HTTP, HTTPS with a custom CA, a
//! redirect), moto (S3), fake-gcs-server (GCS), Azurite (Azure), a small
//! WebHDFS server written here, and mounted files; plus `local://`, the
//! `hdfs://` client up to the wire (no HDFS namenode can run here), and a
//! run with no system CA store, as in a minimal container image.
//!
//! Build first: `cargo build -p ferry-server -p ferry-init --bins`, and
//! `source target/emulators/env.sh` for the emulators.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ferry_core::{Digest, SourceUri};
use ferry_tests::api::ApiClient;
use ferry_tests::azurite::Azurite;
use ferry_tests::gcs::FakeGcs;
use ferry_tests::moto::Moto;
use ferry_tests::nginx::Nginx;
use ferry_tests::{FerryServer, bin, pseudo_random_bytes, tls};
use serde_json::json;

/// A finished ferry-init run.
struct Run {
    ok: bool,
    stderr: String,
}

/// Runs ferry-init with only `env` in its environment (no stray cloud
/// credentials from the caller's shell).
fn ferry_init(args: &[&str], env: &[(String, String)]) -> Run {
    let output = Command::new(bin("ferry-init"))
        .args(args)
        .args(["--timeout", "120s", "--retry-delay", "50ms"])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run ferry-init");
    Run {
        ok: output.status.success(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

fn test_data(seed: u64) -> Vec<u8> {
    // A little over 3 MiB, not a multiple of any buffer size.
    pseudo_random_bytes(seed, 3 * 1024 * 1024 + 17)
}

/// The source contract: `uri` holds `data`, `missing_uri` does not exist.
fn contract(
    name: &str,
    uri: &str,
    missing_uri: &str,
    env: &[(String, String)],
    extra: &[&str],
    data: &[u8],
) {
    let digest = Digest::of(data);
    let file_name = SourceUri::parse(uri)
        .expect("uri")
        .file_name()
        .expect("file name")
        .to_string();
    let dir = tempfile::tempdir().expect("temp dir");

    // A pinned fetch lands the exact bytes.
    let dest = dir.path().join("pinned");
    let pinned = format!("{uri}#sha256={}", digest.hex());
    let mut args = vec![pinned.as_str(), "--into", path_str(&dest)];
    args.extend_from_slice(extra);
    let run = ferry_init(&args, env);
    assert!(run.ok, "{name}: pinned fetch failed:\n{}", run.stderr);
    assert!(
        std::fs::read(dest.join(&file_name)).expect("fetched file") == data,
        "{name}: content differs"
    );
    assert!(run.stderr.contains("(1 fetched"), "{name}: {}", run.stderr);

    // A rerun finds the complete file and fetches nothing.
    let run = ferry_init(&args, env);
    assert!(run.ok, "{name}: rerun failed:\n{}", run.stderr);
    assert!(
        run.stderr.contains("1 already present"),
        "{name}: {}",
        run.stderr
    );

    // Without a pin it is fetched too (and checked against nothing).
    let dest = dir.path().join("unpinned");
    let mut args = vec![uri, "--into", path_str(&dest)];
    args.extend_from_slice(extra);
    let run = ferry_init(&args, env);
    assert!(run.ok, "{name}: unpinned fetch failed:\n{}", run.stderr);
    assert!(std::fs::read(dest.join(&file_name)).expect("fetched file") == data);

    // A missing object fails, naming the URI, without retries.
    let dest = dir.path().join("missing");
    let mut args = vec![missing_uri, "--into", path_str(&dest)];
    args.extend_from_slice(extra);
    let run = ferry_init(&args, env);
    assert!(!run.ok, "{name}: missing object succeeded");
    assert!(
        run.stderr.contains(&format!("FAILED {missing_uri}")) && run.stderr.contains("not found"),
        "{name}: {}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("retrying"),
        "{name}: retried a 404:\n{}",
        run.stderr
    );

    // A wrong pin fails naming the URI and both digests; nothing is left.
    let wrong = Digest::of(b"not the content");
    let dest = dir.path().join("wrong");
    let pinned = format!("{uri}#sha256={}", wrong.hex());
    let mut args = vec![pinned.as_str(), "--into", path_str(&dest)];
    args.extend_from_slice(extra);
    let run = ferry_init(&args, env);
    assert!(!run.ok, "{name}: wrong pin accepted");
    for needle in [
        uri.to_owned(),
        wrong.to_string(),
        digest.to_string(),
        "digest mismatch".into(),
    ] {
        assert!(
            run.stderr.contains(&needle),
            "{name}: no {needle:?} in:\n{}",
            run.stderr
        );
    }
    let left: Vec<_> = std::fs::read_dir(&dest)
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "{name}: left {left:?} after a digest mismatch"
    );
}

#[test]
fn mounted_files_meet_the_source_contract() {
    let dir = tempfile::tempdir().unwrap();
    let data = test_data(1);
    std::fs::write(dir.path().join("a b.bin"), &data).unwrap();
    let uri = format!("file://{}/a%20b.bin", dir.path().display());
    let missing = format!("file://{}/nope.bin", dir.path().display());
    contract("file", &uri, &missing, &[], &[], &data);
}

#[test]
fn local_uris_are_checked_not_copied() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in-image.jar"), b"jar").unwrap();
    let into = dir.path().join("into");
    let pin = Digest::of(b"jar").hex();
    let present = format!("local://{}/in-image.jar#sha256={pin}", dir.path().display());
    let run = ferry_init(&[&present, "--into", path_str(&into)], &[]);
    assert!(run.ok, "{}", run.stderr);
    assert!(run.stderr.contains("1 checked"), "{}", run.stderr);
    assert!(!into.join("in-image.jar").exists());
    let absent = format!("local://{}/absent.jar", dir.path().display());
    let run = ferry_init(&[&absent, "--into", path_str(&into)], &[]);
    assert!(
        !run.ok && run.stderr.contains(&format!("FAILED {absent}")),
        "{}",
        run.stderr
    );
}

#[test]
fn ferry_server_bundle_entries_meet_the_source_contract() {
    let server = FerryServer::start();
    let data = test_data(2);
    let api = ApiClient::new(&server.url, Some(&server.token));
    let staged = api.stage(&[("jars/a.bin", &data)], json!({}));
    let id = staged["id"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, staged["token"].as_str().unwrap()).unwrap();
    let extra = [
        "--server",
        server.url.as_str(),
        "--token-file",
        path_str(&token),
    ];
    contract(
        "ferry",
        &format!("ferry://{id}/jars/a.bin"),
        &format!("ferry://{id}/jars/nope.bin"),
        &[],
        &extra,
        &data,
    );
}

#[test]
fn nginx_over_http_meets_the_source_contract() {
    let root = tempfile::tempdir().unwrap();
    let data = test_data(3);
    std::fs::write(root.path().join("a.bin"), &data).unwrap();
    let Some(nginx) = Nginx::start(root.path()) else {
        return;
    };
    contract(
        "http",
        &nginx.at("/a.bin"),
        &nginx.at("/nope.bin"),
        &[],
        &[],
        &data,
    );
}

#[test]
fn nginx_redirects_are_followed() {
    let root = tempfile::tempdir().unwrap();
    let data = test_data(4);
    std::fs::write(root.path().join("a.bin"), &data).unwrap();
    let Some(nginx) = Nginx::builder(root.path())
        .location("location = /moved/a.bin { return 302 /a.bin; }")
        .location("location = /moved/nope.bin { return 301 /nope.bin; }")
        .start()
    else {
        return;
    };
    contract(
        "redirect",
        &nginx.at("/moved/a.bin"),
        &nginx.at("/moved/nope.bin"),
        &[],
        &[],
        &data,
    );
    assert!(
        nginx.access_log().contains("302 \"GET /moved/a.bin"),
        "{}",
        nginx.access_log()
    );
}

#[test]
fn nginx_over_https_with_a_custom_ca_meets_the_source_contract() {
    let root = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let cert = tls::self_signed(certs.path());
    let data = test_data(5);
    std::fs::write(root.path().join("a.bin"), &data).unwrap();
    let Some(nginx) = Nginx::builder(root.path())
        .tls(&cert.cert, &cert.key)
        .start()
    else {
        return;
    };
    let ca = ["--ca-file", path_str(&cert.cert)];
    contract(
        "https",
        &nginx.at("/a.bin"),
        &nginx.at("/nope.bin"),
        &[],
        &ca,
        &data,
    );
    // Without the CA the certificate is refused, and the error says so.
    let dest = root.path().join("no-ca");
    let run = ferry_init(
        &[
            &nginx.at("/a.bin"),
            "--into",
            path_str(&dest),
            "--retries",
            "0",
        ],
        &[],
    );
    assert!(!run.ok);
    assert!(
        run.stderr.to_lowercase().contains("certificate"),
        "{}",
        run.stderr
    );
}

/// `SSL_CERT_FILE` and `SSL_CERT_DIR` pointing at nothing: the CA store of
/// a minimal container image, which has none.
fn no_system_ca_store(dir: &Path) -> Vec<(String, String)> {
    let empty = dir.join("no-ca-store");
    std::fs::create_dir_all(&empty).expect("empty CA dir");
    std::fs::write(empty.join("ca-certificates.crt"), "").expect("empty CA file");
    vec![
        (
            "SSL_CERT_FILE".into(),
            path_str(&empty.join("ca-certificates.crt")).into(),
        ),
        ("SSL_CERT_DIR".into(), path_str(&empty).into()),
    ]
}

#[test]
fn without_a_system_ca_store_plain_items_fetch_and_https_uses_bundled_roots() {
    let root = tempfile::tempdir().unwrap();
    let data = test_data(6);
    std::fs::write(root.path().join("a.bin"), &data).unwrap();
    let Some(nginx) = Nginx::start(root.path()) else {
        return;
    };
    let server = FerryServer::start();
    let api = ApiClient::new(&server.url, Some(&server.token));
    let staged = api.stage(&[("jars/b.bin", &data)], json!({}));
    let token = root.path().join("token");
    std::fs::write(&token, staged["token"].as_str().unwrap()).unwrap();
    let env = no_system_ca_store(root.path());

    // http:// and ferry:// need no roots at all.
    let dest = root.path().join("plain");
    let ferry_uri = format!("ferry://{}/jars/b.bin", staged["id"].as_str().unwrap());
    let run = ferry_init(
        &[
            &nginx.at("/a.bin"),
            &ferry_uri,
            "--into",
            path_str(&dest),
            "--server",
            &server.url,
            "--token-file",
            path_str(&token),
        ],
        &env,
    );
    assert!(run.ok, "{}", run.stderr);
    assert!(!run.stderr.contains("No CA certificates"), "{}", run.stderr);
    assert!(
        run.stderr.contains("bundled Mozilla roots"),
        "{}",
        run.stderr
    );
    assert!(std::fs::read(dest.join("a.bin")).unwrap() == data);
    assert!(std::fs::read(dest.join("b.bin")).unwrap() == data);

    // https:// verifies against the bundled roots, which do not hold a
    // self-signed certificate; with --ca-file it is trusted on top of them.
    let certs = tempfile::tempdir().unwrap();
    let cert = tls::self_signed(certs.path());
    let Some(tls_nginx) = Nginx::builder(root.path())
        .tls(&cert.cert, &cert.key)
        .start()
    else {
        return;
    };
    let dest = root.path().join("tls");
    let uri = tls_nginx.at("/a.bin");
    let mut args = vec![uri.as_str(), "--into", path_str(&dest), "--retries", "0"];
    let run = ferry_init(&args, &env);
    assert!(!run.ok, "a self-signed certificate was trusted");
    assert!(
        run.stderr.to_lowercase().contains("certificate") && !run.stderr.contains("No CA"),
        "{}",
        run.stderr
    );
    args.extend(["--ca-file", path_str(&cert.cert)]);
    let run = ferry_init(&args, &env);
    assert!(run.ok, "{}", run.stderr);
    assert!(std::fs::read(dest.join("a.bin")).unwrap() == data);
}

/// The object store clients (S3 here) build their own HTTP client, which
/// without a system CA store failed to build at all, even for an
/// `http://` endpoint: ferry-init fetching from a bucket and a
/// ferry-server keeping its data in one both work with no store.
#[test]
fn without_a_system_ca_store_bucket_reads_and_a_bucket_backed_server_work() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("deps");
    moto.create_bucket("staging");
    let dir = tempfile::tempdir().unwrap();
    let data = test_data(9);
    std::fs::write(dir.path().join("a.bin"), &data).unwrap();
    moto.put_object("deps", "libs/a.bin", &dir.path().join("a.bin"));
    let no_ca = no_system_ca_store(dir.path());
    let mut env = moto.env();
    env.extend(no_ca.iter().cloned());
    env.push(("AWS_METADATA_ENDPOINT".into(), "http://127.0.0.1:9".into()));

    let dest = dir.path().join("fetched");
    let run = ferry_init(&["s3://deps/libs/a.bin", "--into", path_str(&dest)], &env);
    assert!(run.ok, "{}", run.stderr);
    assert!(!run.stderr.contains("No CA certificates"), "{}", run.stderr);
    assert!(std::fs::read(dest.join("a.bin")).unwrap() == data);

    let mut builder = FerryServer::builder()
        .data("s3://staging")
        .token("no-ca-upload-token-0123456789");
    for (key, value) in &env {
        builder = builder.env(key.clone(), value.clone());
    }
    let server = builder.start();
    let api = ApiClient::new(&server.url, Some(&server.token));
    let put = api.put_blob(&data);
    assert!(put.status().is_success(), "PUT: {}", put.status());
    let got = api.get_blob(&Digest::of(&data));
    assert!(got.status().is_success(), "GET: {}", got.status());
    assert!(got.bytes().unwrap() == data, "the blob read back differs");
    assert!(
        server.log().contains("bundled Mozilla roots"),
        "{}",
        server.log()
    );
}

fn python_put_s3(moto: &Moto, bucket: &str, key: &str, path: &Path) {
    moto.put_object(bucket, key, path);
}

#[test]
fn s3_and_s3a_through_moto_meet_the_source_contract() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("deps");
    let dir = tempfile::tempdir().unwrap();
    let data = test_data(6);
    std::fs::write(dir.path().join("a.bin"), &data).unwrap();
    python_put_s3(&moto, "deps", "libs/a.bin", &dir.path().join("a.bin"));
    contract(
        "s3",
        "s3://deps/libs/a.bin",
        "s3://deps/libs/nope.bin",
        &moto.env(),
        &[],
        &data,
    );
    contract(
        "s3a",
        "s3a://deps/libs/a.bin",
        "s3a://deps/libs/nope.bin",
        &moto.env(),
        &[],
        &data,
    );
}

#[test]
fn gcs_through_fake_gcs_server_meets_the_source_contract() {
    let data = test_data(7);
    let Some(gcs) = FakeGcs::start(&[("deps", "libs/a.bin", &data)]) else {
        return;
    };
    contract(
        "gs",
        "gs://deps/libs/a.bin",
        "gs://deps/libs/nope.bin",
        &gcs.env(),
        &[],
        &data,
    );
}

#[test]
fn azure_through_azurite_meets_the_source_contract() {
    let Some(azurite) = Azurite::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = test_data(8);
    std::fs::write(dir.path().join("a.bin"), &data).unwrap();
    azurite.create_container("deps");
    azurite.put_blob("deps", "libs/a.bin", &dir.path().join("a.bin"));
    let env = azurite.env();
    contract(
        "az",
        "az://deps/libs/a.bin",
        "az://deps/libs/nope.bin",
        &env,
        &[],
        &data,
    );
    contract(
        "abfss",
        "abfss://deps@devstoreaccount1.dfs.core.windows.net/libs/a.bin",
        "abfss://deps@devstoreaccount1.dfs.core.windows.net/libs/nope.bin",
        &env,
        &[],
        &data,
    );
    contract(
        "wasbs",
        "wasbs://deps@devstoreaccount1.blob.core.windows.net/libs/a.bin",
        "wasbs://deps@devstoreaccount1.blob.core.windows.net/libs/nope.bin",
        &env,
        &[],
        &data,
    );
}

/// A minimal WebHDFS namenode + datanode written for this test (no real
/// HDFS can be installed here): `GET /webhdfs/v1/<path>?op=OPEN&offset=N`
/// answers `307` to `/datanode/<path>?offset=N`, which streams the file from
/// byte N, as Hadoop does; a missing file gets WebHDFS's JSON 404.
struct WebHdfs {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WebHdfs {
    fn start(root: PathBuf) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    let root = root.clone();
                    std::thread::spawn(move || serve_webhdfs(stream, &root, port));
                }
            }
        });
        Self {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for WebHdfs {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve_webhdfs(mut stream: TcpStream, root: &Path, port: u16) {
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(10)));
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).map_or(true, |n| n == 0) || header.trim().is_empty() {
            break;
        }
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let offset: u64 = query
        .split('&')
        .find_map(|p| p.strip_prefix("offset="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let decoded = path.replace("%20", " ");
    let response = if let Some(file) = decoded.strip_prefix("/webhdfs/v1/") {
        if query.contains("op=OPEN") && root.join(file).is_file() {
            format!(
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{port}/datanode/{}?offset={offset}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                path.trim_start_matches("/webhdfs/v1/")
            )
        } else {
            let body = format!(
                r#"{{"RemoteException":{{"exception":"FileNotFoundException","javaClassName":"java.io.FileNotFoundException","message":"File /{file} does not exist."}}}}"#
            );
            format!(
                "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        }
    } else if let Some(file) = decoded.strip_prefix("/datanode/") {
        let Ok(mut data) = std::fs::File::open(root.join(file)) else {
            return;
        };
        let len = data.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = data.seek(SeekFrom::Start(offset));
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            len.saturating_sub(offset)
        );
        if stream.write_all(head.as_bytes()).is_err() {
            return;
        }
        let mut buffer = vec![0u8; 64 * 1024];
        while let Ok(n) = data.read(&mut buffer) {
            if n == 0 || stream.write_all(&buffer[..n]).is_err() {
                break;
            }
        }
        return;
    } else {
        "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
    };
    let _ = stream.write_all(response.as_bytes());
}

#[test]
fn webhdfs_two_step_redirect_protocol_meets_the_source_contract() {
    let root = tempfile::tempdir().unwrap();
    let data = test_data(9);
    std::fs::create_dir_all(root.path().join("user/spark")).unwrap();
    std::fs::write(root.path().join("user/spark/a.bin"), &data).unwrap();
    let server = WebHdfs::start(root.path().to_path_buf());
    let base = format!("webhdfs://127.0.0.1:{}", server.port);
    contract(
        "webhdfs",
        &format!("{base}/user/spark/a.bin"),
        &format!("{base}/user/spark/nope.bin"),
        &[],
        &[],
        &data,
    );
}

#[test]
fn hdfs_without_a_reachable_namenode_fails_naming_the_uri() {
    // No HDFS namenode can run here: this checks the native client is wired
    // in and that an unreachable namenode is a clear, per-item failure.
    let port = ferry_tests::free_port();
    let uri = format!("hdfs://127.0.0.1:{port}/user/spark/a.jar");
    let dest = tempfile::tempdir().unwrap();
    let run = ferry_init(
        &[
            &uri,
            "--into",
            path_str(dest.path()),
            "--retries",
            "0",
            "--item-timeout",
            "20s",
        ],
        &[("HADOOP_USER_NAME".into(), "spark".into())],
    );
    assert!(!run.ok);
    assert!(
        run.stderr.contains(&format!("FAILED {uri}")),
        "{}",
        run.stderr
    );
    assert!(!dest.path().join("a.jar").exists());
}
