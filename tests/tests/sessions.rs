//! Upload sessions end to end, against spawned `ferry-server`s on loopback:
//! a session begun on one replica of a bucket (moto) and finished by
//! another after the first was killed with SIGKILL; a 40 MiB file staged
//! by `ferry stage` through a real nginx reverse proxy that refuses bodies
//! over 1 MiB; a killed `ferry stage` resumed from the server's committed
//! offset; and the client's digest cache: a cache hit reads no file data
//! (counted by the kernel: `rchar` of the finished `ferry` process, read
//! from `/proc/<pid>/io` before it is reaped), a touched but identical file
//! is hashed and not uploaded again, an edited one is uploaded.
//!
//! Build first: `cargo build --workspace --bins`.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use ferry_core::Digest;
use ferry_tests::moto::Moto;
use ferry_tests::nginx::Nginx;
use ferry_tests::{FerryServer, bin, require_tool, wait_until, write_pseudo_random_file};
use serde_json::Value;

const MIB: u64 = 1 << 20;

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("HTTP client")
}

/// `ferry` against `url` with `server`'s token, its cache in `dir/cache`.
fn ferry_command(url: &str, server: &FerryServer, dir: &Path, args: &[&str]) -> Command {
    let token = dir.join("upload-token");
    std::fs::write(&token, &server.token).expect("token file");
    let mut command = Command::new(bin("ferry"));
    command
        .args(["--quiet", "--server", url, "--token-file"])
        .arg(&token)
        .args(args)
        .current_dir(dir)
        .env_remove("FERRY_SERVER")
        .env_remove("FERRY_TOKEN")
        .env_remove("FERRY_TOKEN_FILE")
        .env_remove("FERRY_NO_DIGEST_CACHE")
        .env_remove("FERRY_CHUNK_SIZE")
        .env("FERRY_CACHE_DIR", dir.join("cache"))
        .env("XDG_CONFIG_HOME", dir.join("no-config"))
        .env("KUBECONFIG", dir.join("no-kubeconfig"));
    command
}

fn stage_json(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "ferry stage failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("stage JSON")
}

/// Modification time an hour back: old enough for the digest cache.
fn age(path: &Path) {
    let file = std::fs::File::options()
        .write(true)
        .open(path)
        .expect("open");
    file.set_modified(SystemTime::now() - Duration::from_secs(3600))
        .expect("set mtime");
}

/// Runs `command` to its end and returns its output and the bytes it read
/// (`rchar`: every read(2) of files and sockets), taken by a small python
/// parent between the child's exit and its reaping (`waitid(WNOWAIT)`).
fn run_counting_reads(command: &Command) -> (Output, u64) {
    let python = require_tool("python3", "FERRY_TEST_PYTHON", &["python3"])
        .expect("python3 is needed to read /proc/<pid>/io");
    let script = r#"
import os, subprocess, sys
p = subprocess.Popen(sys.argv[1:])
os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)
io = open(f"/proc/{p.pid}/io").read()
rchar = [l.split()[1] for l in io.splitlines() if l.startswith("rchar:")][0]
sys.stderr.write(f"\nrchar={rchar}\n")
sys.exit(p.wait())
"#;
    let mut wrapped = Command::new(python);
    wrapped
        .arg("-c")
        .arg(script)
        .arg(command.get_program())
        .args(command.get_args());
    if let Some(dir) = command.get_current_dir() {
        wrapped.current_dir(dir);
    }
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    let output = wrapped.output().expect("run ferry under python");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let rchar = stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("rchar="))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rchar in: {stderr}"));
    (output, rchar)
}

#[test]
fn a_cache_hit_reads_no_file_data_and_touched_or_edited_files_are_handled() {
    let server = FerryServer::start();
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.jar");
    write_pseudo_random_file(&big, 1, 24 * MIB);
    let small = dir.path().join("small.jar");
    write_pseudo_random_file(&small, 2, 300_000);
    age(&big);
    age(&small);
    let stage = || {
        ferry_command(
            &server.url,
            &server,
            dir.path(),
            &["stage", "--output", "json", "big.jar", "small.jar"],
        )
    };
    let (first, read_first) = run_counting_reads(&stage());
    let first = stage_json(&first);
    assert_eq!(first["uploaded"]["files"], 2, "{first}");
    // The measurement sees file reads: the first run read both files.
    assert!(read_first >= 24 * MIB, "first run read {read_first} bytes");

    let (second, read_second) = run_counting_reads(&stage());
    let second = stage_json(&second);
    assert_eq!(second["uploaded"]["files"], 0, "{second}");
    assert_eq!(second["entries"], first["entries"]);
    assert!(
        read_second < MIB,
        "a cache hit read {read_second} bytes (the files are {} bytes)",
        24 * MIB + 300_000
    );

    // Touched: the same bytes under a new modification time.
    let received = server.metric("ferry_bytes_received_total");
    std::fs::File::options()
        .write(true)
        .open(&small)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(1800))
        .unwrap();
    let (touched, read_touched) = run_counting_reads(&stage());
    let touched = stage_json(&touched);
    assert_eq!(touched["uploaded"]["files"], 0, "{touched}");
    assert!(read_touched >= 300_000, "the touched file was hashed again");
    assert!(read_touched < 2 * MIB, "only the touched file was read");
    assert_eq!(server.metric("ferry_bytes_received_total"), received);

    // Edited: other bytes, uploaded.
    write_pseudo_random_file(&small, 3, 300_000);
    let edited = stage_json(&stage().output().unwrap());
    assert_eq!(edited["uploaded"]["files"], 1, "{edited}");
    assert_ne!(edited["entries"], first["entries"]);
}

#[test]
fn a_forty_mib_file_stages_through_a_proxy_that_takes_one_mib_bodies() {
    let server = FerryServer::start();
    let root = tempfile::tempdir().unwrap();
    let Some(relay) = Nginx::builder(root.path())
        .location(&format!(
            "location /v1/ {{ proxy_pass http://127.0.0.1:{}; client_max_body_size 1m; \
             proxy_request_buffering off; }}",
            server.port
        ))
        .start()
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.jar");
    let digest = write_pseudo_random_file(&file, 4, 40 * MIB);
    // And small files, whose batch (2.4 MB) the proxy refuses too: they go
    // one by one instead.
    let small = write_jars(dir.path(), 12, 100, |_| 200 << 10);
    // The proxy's limit is real: a whole-file PUT through it is refused.
    let whole = http()
        .put(format!("{}/v1/blobs/{digest}", relay.url))
        .bearer_auth(&server.token)
        .body(vec![0u8; 2 * MIB as usize])
        .send()
        .expect("PUT through the proxy");
    assert_eq!(whole.status(), 413);
    // No chunk size given: ferry finds one the proxy takes (16 MiB refused,
    // halved until a chunk passes).
    let mut command = ferry_command(
        &relay.url,
        &server,
        dir.path(),
        &["stage", "--output", "json", "app.jar", "libs"],
    );
    let staged = stage_json(&command.output().unwrap());
    assert_eq!(staged["uploaded"]["files"], 13);
    let missing = http()
        .post(server.at("/v1/blobs/missing"))
        .bearer_auth(&server.token)
        .json(&serde_json::json!({ "digests": small }))
        .send()
        .unwrap()
        .json::<serde_json::Value>()
        .unwrap();
    assert_eq!(missing["missing"], serde_json::json!([]));
    assert_eq!(stored_digest(&server, &digest), digest);
}

/// Writes `count` pseudo-random jars `dir/libs/lib<i>.jar` (seeds from
/// `seed`, sizes by `size_of(i)`); answers their digests.
fn write_jars(dir: &Path, count: u64, seed: u64, size_of: impl Fn(u64) -> u64) -> Vec<Digest> {
    std::fs::create_dir(dir.join("libs")).unwrap();
    (0..count)
        .map(|i| {
            let path = dir.join(format!("libs/lib{i}.jar"));
            write_pseudo_random_file(&path, seed + i, size_of(i))
        })
        .collect()
}

/// The digest of what the server serves as blob `digest`.
fn stored_digest(server: &FerryServer, digest: &Digest) -> Digest {
    let bytes = http()
        .get(server.at(&format!("/v1/blobs/{digest}")))
        .bearer_auth(&server.token)
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    Digest::of(&bytes)
}

/// Hundreds of small new files go up in a few batches (`POST /v1/blobs`),
/// not a `PUT` each.
#[test]
fn small_new_files_are_staged_in_batches() {
    let server = FerryServer::start();
    let dir = tempfile::tempdir().unwrap();
    let digests = write_jars(dir.path(), 300, 1000, |i| (10 + (i * 37) % 190) << 10);
    let mut command = ferry_command(
        &server.url,
        &server,
        dir.path(),
        &["stage", "--output", "json", "libs"],
    );
    let staged = stage_json(&command.output().unwrap());
    assert_eq!(staged["uploaded"]["files"], 300);
    let metrics = server.metrics();
    let count = |needle: &str| -> u64 {
        metrics
            .lines()
            .filter(|l| l.starts_with("ferry_http_requests_total{") && l.contains(needle))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let batches = count("route=\"/v1/blobs\",method=\"POST\",status=\"200\"");
    let puts = count("method=\"PUT\"");
    // 300 files of 10-200 KiB (about 31 MB): 4 MiB batches.
    assert!((8..=20).contains(&batches), "{batches} batches\n{metrics}");
    assert_eq!(puts, 0, "{metrics}");
    for digest in digests.iter().step_by(37) {
        assert_eq!(stored_digest(&server, digest), *digest);
    }
}

/// A server that takes smaller batches than ferry sends refuses them
/// (`413`, or a connection closed while the body was still going out):
/// the files go one by one and the stage succeeds.
#[test]
fn batches_the_server_refuses_as_too_large_go_one_by_one() {
    let server = FerryServer::builder()
        .arg("--max-batch-size")
        .arg("64KiB")
        .start();
    let dir = tempfile::tempdir().unwrap();
    let digests = write_jars(dir.path(), 20, 2000, |_| 100 << 10);
    let mut command = ferry_command(
        &server.url,
        &server,
        dir.path(),
        &["stage", "--output", "json", "libs"],
    );
    command.env("FERRY_RETRIES", "1");
    let staged = stage_json(&command.output().unwrap());
    assert_eq!(staged["uploaded"]["files"], 20);
    for digest in &digests {
        assert_eq!(stored_digest(&server, digest), *digest);
    }
}

#[test]
fn a_killed_ferry_stage_resumes_from_the_committed_offset() {
    let server = FerryServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("huge.jar");
    let size = 160 * MIB;
    let digest = write_pseudo_random_file(&file, 5, size);
    let stage = || {
        let mut command = ferry_command(
            &server.url,
            &server,
            dir.path(),
            &["stage", "--output", "json", "huge.jar"],
        );
        command.env("FERRY_CHUNK_SIZE", MIB.to_string());
        command
    };
    let mut first = stage().spawn().expect("spawn ferry stage");
    let started = wait_until(Duration::from_secs(60), || {
        server.metric("ferry_bytes_received_total") >= 16 * MIB
    });
    let _ = first.kill();
    let _ = first.wait();
    assert!(started, "the first run sent 16 MiB: {}", server.log());
    let before = server.metric("ferry_bytes_received_total");
    assert!(before < size, "killed before the end ({before} bytes sent)");
    let resumed = stage_json(&stage().output().unwrap());
    assert_eq!(resumed["entries"][0]["digest"], digest.to_string());
    let after = server.metric("ferry_bytes_received_total");
    // Only what was not committed is sent again (at most one chunk twice).
    assert!(
        after - before <= size - before + MIB,
        "the second run sent {} bytes of {size}",
        after - before
    );
    assert!(after - before < size, "the second run resumed");
}

#[test]
fn a_session_begun_on_a_killed_replica_is_finished_by_another() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("sessions");
    let start = || {
        let mut builder = FerryServer::builder()
            .data("s3://sessions")
            .token("sessions-upload-token-0123456789")
            .env("AWS_METADATA_ENDPOINT", "http://127.0.0.1:9");
        for (k, v) in moto.env() {
            builder = builder.env(k, v);
        }
        builder.start()
    };
    let mut first = start();
    let second = start();
    let client = http();
    let bytes = ferry_tests::pseudo_random_bytes(6, (11 * MIB) as usize);
    let digest = Digest::of(&bytes);
    let opened: Value = client
        .post(first.at("/v1/uploads"))
        .bearer_auth(&first.token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(opened["min_chunk"], 5 * MIB, "{opened}");
    let id = opened["id"].as_str().unwrap().to_owned();
    let patch = |server: &FerryServer, from: usize, to: usize| {
        client
            .patch(server.at(&format!("/v1/uploads/{id}")))
            .bearer_auth(&server.token)
            .header("content-range", format!("bytes {from}-{}/*", to - 1))
            .body(bytes[from..to].to_vec())
            .send()
            .unwrap()
    };
    let chunk = (5 * MIB) as usize;
    assert_eq!(patch(&first, 0, chunk).status(), 202);
    first.kill();
    let status: Value = client
        .get(second.at(&format!("/v1/uploads/{id}")))
        .bearer_auth(&second.token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(status["offset"], chunk, "{status}");
    assert_eq!(patch(&second, chunk, 2 * chunk).status(), 202);
    assert_eq!(patch(&second, 2 * chunk, bytes.len()).status(), 202);
    let stored = commit_and_read(&client, &second, &id, &digest);
    assert_eq!(stored.len(), bytes.len());
    assert_eq!(Digest::of(&stored), digest);
}

/// On local disk a session's parts are synced once, at commit, so a
/// restarted server re-hashes the bytes it did not write itself before
/// going on from them: intact bytes (the process was killed, the page cache
/// kept them) let the session continue where it was; bytes a crash of the
/// machine took (played here by overwriting the parts file while the
/// server is down) reset the session to nothing committed, said as such,
/// and no blob is ever published from them.
#[test]
fn a_restarted_server_checks_a_sessions_bytes_before_going_on_from_them() {
    let mut server = FerryServer::start();
    let client = http();
    let bytes = ferry_tests::pseudo_random_bytes(8, (3 * MIB) as usize);
    let digest = Digest::of(&bytes);
    let chunk = MIB as usize;
    let opened: Value = client
        .post(server.at("/v1/uploads"))
        .bearer_auth(&server.token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = opened["id"].as_str().unwrap().to_owned();
    let patch = |server: &FerryServer, from: usize, to: usize| {
        client
            .patch(server.at(&format!("/v1/uploads/{id}")))
            .bearer_auth(&server.token)
            .header("content-range", format!("bytes {from}-{}/*", to - 1))
            .body(bytes[from..to].to_vec())
            .send()
            .unwrap()
    };
    let offset = |server: &FerryServer| -> Value {
        client
            .get(server.at(&format!("/v1/uploads/{id}")))
            .bearer_auth(&server.token)
            .send()
            .unwrap()
            .json::<Value>()
            .unwrap()["offset"]
            .clone()
    };
    assert_eq!(patch(&server, 0, chunk).status(), 202);

    // Killed: the bytes are still there, and the session goes on.
    server.restart();
    assert_eq!(offset(&server), chunk);
    assert_eq!(patch(&server, chunk, 2 * chunk).status(), 202);

    // The machine "crashed": the record survived, the bytes did not.
    server.kill();
    let part = Path::new(&server.data).join(format!("sessions/{id}.part"));
    let file = std::fs::OpenOptions::new().write(true).open(&part).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[0u8; 4096], 4096).unwrap();
    drop(file);
    server.restart();
    let late = patch(&server, 2 * chunk, bytes.len());
    assert_eq!(late.status(), 416, "{}", server.log());
    assert_eq!(late.headers()["upload-offset"], "0");
    let said = late.text().unwrap();
    assert!(said.contains("lost"), "{said}");
    assert_eq!(offset(&server), 0);
    // Sent again from the start, the blob is the right one.
    assert_eq!(patch(&server, 0, bytes.len()).status(), 202);
    let stored = commit_and_read(&client, &server, &id, &digest);
    assert!(stored == bytes, "the committed blob is the one sent again");
}

/// Commits session `id` on `server` as `digest` (asserting `201`) and
/// reads the stored blob back.
fn commit_and_read(
    client: &reqwest::blocking::Client,
    server: &FerryServer,
    id: &str,
    digest: &Digest,
) -> Vec<u8> {
    let committed = client
        .put(server.at(&format!("/v1/uploads/{id}?digest={digest}")))
        .bearer_auth(&server.token)
        .send()
        .unwrap();
    assert_eq!(committed.status(), 201, "{}", server.log());
    client
        .get(server.at(&format!("/v1/blobs/{digest}")))
        .bearer_auth(&server.token)
        .send()
        .unwrap()
        .bytes()
        .unwrap()
        .to_vec()
}
