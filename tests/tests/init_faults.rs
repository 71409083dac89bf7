//! ferry-init under faults and hostile input, each against a real peer on
//! loopback: nginx killed mid-transfer and restarted (the download resumes
//! with `Range`), a server that trickles past the time limits, ferry-init
//! itself killed with SIGKILL mid-download and run again (with a node
//! cache that must not be poisoned), several init containers racing on one
//! cache, a hostile staging server whose manifest plants evil paths, and
//! symlinks planted in the destination.
//!
//! Build first: `cargo build -p ferry-server -p ferry-init --bins`, and
//! `source target/emulators/env.sh` for nginx.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ferry_core::Digest;
use ferry_tests::init::{self, files_below, path_str, stderr};
use ferry_tests::nginx::Nginx;
use ferry_tests::{bin, pseudo_random_bytes};
use serde_json::{Value, json};

/// Full-body GETs of `path` in nginx's access log.
fn full_gets(nginx: &Nginx, path: &str) -> usize {
    nginx
        .access_log()
        .lines()
        .filter(|l| l.starts_with("200 ") && l.contains(&format!("GET {path} ")))
        .count()
}

/// Size of the partial download (`.ferry-partial-*`) in `dir`, if any.
fn partial_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(".ferry-partial-")
                })
                .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn nginx_killed_mid_transfer_then_restarted_is_resumed_with_range() {
    let root = tempfile::tempdir().unwrap();
    let data = pseudo_random_bytes(1, 6 << 20);
    std::fs::write(root.path().join("big.bin"), &data).unwrap();
    // 2 MiB/s: the 6 MiB transfer takes three seconds, time to pull the plug.
    let Some(mut nginx) = Nginx::builder(root.path()).limit_rate("2m").start() else {
        return;
    };
    let dest = tempfile::tempdir().unwrap();
    let uri = format!(
        "{}#sha256={}",
        nginx.at("/big.bin"),
        Digest::of(&data).hex()
    );
    let child = Command::new(bin("ferry-init"))
        .args([uri.as_str(), "--into", path_str(dest.path())])
        .args([
            "--retries",
            "20",
            "--retry-delay",
            "100ms",
            "--item-timeout",
            "60s",
        ])
        .env_clear()
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        ferry_tests::wait_until(Duration::from_secs(15), || partial_bytes(dest.path())
            > 1 << 20),
        "the download never got going"
    );
    nginx.kill();
    std::thread::sleep(Duration::from_millis(300));
    nginx.restart();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        std::fs::read(dest.path().join("big.bin")).unwrap() == data,
        "resumed file differs"
    );
    // The restarted nginx was asked only for the rest.
    let log = nginx.access_log();
    let resumed: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("206 ") && l.contains("range=\"bytes="))
        .collect();
    assert_eq!(resumed.len(), 1, "expected one ranged request:\n{log}");
    let sent: u64 = resumed[0]
        .rsplit("bytes=")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        sent < data.len() as u64 - (1 << 20),
        "the resume re-sent {sent} bytes:\n{log}"
    );
    assert!(stderr(&output).contains("retrying"), "{}", stderr(&output));
}

/// A server that answers every request with headers for `len` bytes and
/// then one byte every 200 ms, for at most `for_at_most`.
fn trickling_server(len: usize, for_at_most: Duration) -> (u16, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    std::thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        let started = Instant::now();
        while !stop2.load(Ordering::Relaxed) && started.elapsed() < for_at_most {
            let Ok((mut conn, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            let stop3 = stop2.clone();
            std::thread::spawn(move || {
                conn.set_nonblocking(false).unwrap();
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nContent-Type: application/octet-stream\r\n\r\n"
                );
                for _ in 0..len {
                    if stop3.load(Ordering::Relaxed) || started.elapsed() > for_at_most {
                        return;
                    }
                    if conn.write_all(b"x").is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            });
        }
    });
    (port, stop)
}

#[test]
fn a_server_trickling_past_the_item_timeout_fails_the_item_cleanly() {
    let (port, stop) = trickling_server(1 << 20, Duration::from_secs(30));
    let dest = tempfile::tempdir().unwrap();
    let uri = format!("http://127.0.0.1:{port}/slow.jar");
    let started = Instant::now();
    let output = init::run(&[
        &uri,
        "--into",
        path_str(dest.path()),
        "--item-timeout",
        "2s",
        "--retry-delay",
        "50ms",
    ]);
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains(&format!("FAILED {uri}")) && message.contains("timed out"),
        "{message}"
    );
    assert!(message.contains("0 of 1 items in place"), "{message}");
    assert!(
        took < Duration::from_secs(20),
        "the 2 s item limit took {took:?}"
    );
    assert!(
        !dest.path().join("slow.jar").exists(),
        "a partial file sits under the final name"
    );

    // The run-wide limit holds too, and JSON output is one object per line.
    let output = init::run(&[
        &uri,
        "--into",
        path_str(dest.path()),
        "--timeout",
        "1s",
        "--log-format",
        "json",
    ]);
    stop.store(true, Ordering::Relaxed);
    assert!(!output.status.success());
    let lines: Vec<Value> = stderr(&output)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let summary = lines
        .iter()
        .find(|v| v["event"] == "summary")
        .expect("a summary object");
    assert_eq!(summary["failed"], 1);
    assert!(
        lines
            .iter()
            .any(|v| v["event"] == "item_failed" && v["uri"] == uri)
    );
}

#[test]
fn kill_9_mid_download_then_rerun_completes_and_the_cache_stays_clean() {
    let root = tempfile::tempdir().unwrap();
    let data = pseudo_random_bytes(2, 6 << 20);
    std::fs::write(root.path().join("dep.jar"), &data).unwrap();
    let Some(nginx) = Nginx::builder(root.path()).limit_rate("2m").start() else {
        return;
    };
    let digest = Digest::of(&data);
    let uri = format!("{}#sha256={}", nginx.at("/dep.jar"), digest.hex());
    let dest = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let args = [
        uri.as_str(),
        "--into",
        path_str(dest.path()),
        "--cache-dir",
        path_str(cache.path()),
    ];
    let cache_file = cache
        .path()
        .join(format!("sha256/{}/{}", &digest.hex()[..2], digest.hex()));

    let mut child = Command::new(bin("ferry-init"))
        .args(args)
        .env_clear()
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let cache_dir = cache_file.parent().unwrap().to_path_buf();
    assert!(
        ferry_tests::wait_until(Duration::from_secs(15), || partial_bytes(&cache_dir)
            > 1 << 20),
        "the download never got going"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    // Nothing under a final name, in the destination or the cache.
    assert!(!dest.path().join("dep.jar").exists());
    assert!(
        !cache_file.exists(),
        "a partial file was published in the cache"
    );

    let output = init::run(&args);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(std::fs::read(dest.path().join("dep.jar")).unwrap() == data);
    assert!(
        std::fs::read(&cache_file).unwrap() == data,
        "cache entry damaged"
    );
    assert_eq!(partial_bytes(&cache_dir), 0, "temp file left in the cache");
    // The rerun picked up the partial download instead of starting over.
    assert!(
        nginx.access_log().lines().any(|l| l.starts_with("206 ")),
        "no ranged request after the kill:\n{}",
        nginx.access_log()
    );

    // A second pod on the node: no network at all.
    let before = nginx.access_log().lines().count();
    let dest2 = tempfile::tempdir().unwrap();
    let output = init::run(&[
        uri.as_str(),
        "--into",
        path_str(dest2.path()),
        "--cache-dir",
        path_str(cache.path()),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("1 from cache"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        nginx.access_log().lines().count(),
        before,
        "the cache hit went to the network"
    );
    assert!(std::fs::read(dest2.path().join("dep.jar")).unwrap() == data);
}

#[test]
fn init_containers_racing_on_one_cache_download_once_and_all_succeed() {
    let root = tempfile::tempdir().unwrap();
    let data = pseudo_random_bytes(3, 4 << 20);
    std::fs::write(root.path().join("shared.jar"), &data).unwrap();
    let Some(nginx) = Nginx::builder(root.path()).limit_rate("8m").start() else {
        return;
    };
    let uri = format!(
        "{}#sha256={}",
        nginx.at("/shared.jar"),
        Digest::of(&data).hex()
    );
    let cache = tempfile::tempdir().unwrap();
    let dests: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let children: Vec<std::process::Child> = dests
        .iter()
        .map(|d| {
            Command::new(bin("ferry-init"))
                .args([
                    uri.as_str(),
                    "--into",
                    path_str(d.path()),
                    "--cache-dir",
                    path_str(cache.path()),
                ])
                .env_clear()
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
    }
    for d in &dests {
        assert!(std::fs::read(d.path().join("shared.jar")).unwrap() == data);
    }
    assert_eq!(
        full_gets(&nginx, "/shared.jar"),
        1,
        "{}",
        nginx.access_log()
    );
}

/// A hostile "staging server": answers the manifest request with `manifest`
/// and any blob request with `blob`.
fn hostile_server(manifest: Value, blob: Vec<u8>) -> (u16, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let manifest = manifest.to_string();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !stop2.load(Ordering::Relaxed) && Instant::now() < deadline {
            let Ok((mut conn, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            conn.set_nonblocking(false).unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            loop {
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                    break;
                }
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let body: &[u8] = if request_line.contains("/v1/bundles/") {
                    manifest.as_bytes()
                } else {
                    &blob
                };
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/json\r\n\r\n",
                    body.len()
                );
                if conn
                    .write_all(head.as_bytes())
                    .and_then(|()| conn.write_all(body))
                    .is_err()
                {
                    break;
                }
            }
            let _ = reader.read(&mut [0u8; 1]);
        }
    });
    (port, stop)
}

#[test]
fn evil_paths_from_a_hostile_server_are_refused_and_nothing_lands_outside() {
    let blob = b"payload".to_vec();
    let digest = Digest::of(&blob);
    let evil = [
        "../escape.jar",
        "jars/../../escape.jar",
        "/tmp/escape.jar",
        "jars\\..\\escape.jar",
        "C:/escape.jar",
        "\\\\server\\share\\escape.jar",
        "jars/\u{0}escape.jar",
        "jars//escape.jar",
        "\u{ff0e}\u{ff0e}/escape.jar",
        "jars/\u{ff0f}..\u{ff0f}escape.jar",
        "%2e%2e/escape.jar",
        // One and two dot leaders: NFKC makes them `.` and `..`.
        "\u{2025}/escape.jar",
        "jars/\u{2024}\u{2024}/escape.jar",
        "",
    ];
    let outside = tempfile::tempdir().unwrap();
    for path in evil {
        let manifest = json!({
            "id": "id-01m88v47zfsgw8ma2yxqq2mvpa",
            "entries": [{"path": path, "digest": digest, "size": blob.len()}],
            "created_at": "2026-11-25T00:00:00Z",
            "expires_at": null
        });
        let (port, stop) = hostile_server(manifest, blob.clone());
        let work = outside.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        let dest = work.join("dest");
        let token = work.join("token");
        std::fs::write(&token, "t").unwrap();
        let output = init::run(&[
            "--server",
            &format!("http://127.0.0.1:{port}"),
            "--token-file",
            path_str(&token),
            "--into",
            path_str(&dest),
            "--retries",
            "0",
            "ferry://id-01m88v47zfsgw8ma2yxqq2mvpa",
        ]);
        stop.store(true, Ordering::Relaxed);
        let message = stderr(&output);
        // `%2e%2e` is a literal name, not a traversal: it may land, inside.
        if path == "%2e%2e/escape.jar" {
            assert!(output.status.success(), "{path:?}: {message}");
            assert_eq!(files_below(&dest), ["%2e%2e/escape.jar"]);
        } else {
            assert!(!output.status.success(), "{path:?} was accepted: {message}");
            assert!(
                message.contains("FAILED ferry://id-01m88v47zfsgw8ma2yxqq2mvpa"),
                "{path:?}: {message}"
            );
            assert!(
                files_below(&dest).is_empty(),
                "{path:?} wrote {:?}",
                files_below(&dest)
            );
        }
        assert_eq!(
            files_below(outside.path()),
            files_below(&work)
                .iter()
                .map(|f| format!("work/{f}"))
                .collect::<Vec<_>>(),
            "{path:?}: something landed outside the work folder"
        );
        assert!(!outside.path().join("escape.jar").exists());
        assert!(
            !Path::new("/tmp/escape.jar").exists(),
            "{path:?} escaped to /tmp"
        );
        std::fs::remove_dir_all(&work).unwrap();
    }

    // Duplicate paths, and a file that is also a folder, are refused whole.
    for entries in [
        json!([{"path": "a.jar", "digest": digest, "size": 7}, {"path": "a.jar", "digest": digest, "size": 7}]),
        json!([{"path": "a", "digest": digest, "size": 7}, {"path": "a/b", "digest": digest, "size": 7}]),
    ] {
        let manifest = json!({
            "id": "id-01m88v47zfsgw8ma2yxqq2mvpa", "entries": entries,
            "created_at": "2026-11-25T00:00:00Z", "expires_at": null
        });
        let (port, stop) = hostile_server(manifest, blob.clone());
        let dest = outside.path().join("dup");
        let token = outside.path().join("token");
        std::fs::write(&token, "t").unwrap();
        let output = init::run(&[
            "--server",
            &format!("http://127.0.0.1:{port}"),
            "--token-file",
            path_str(&token),
            "--into",
            path_str(&dest),
            "ferry://id-01m88v47zfsgw8ma2yxqq2mvpa",
        ]);
        stop.store(true, Ordering::Relaxed);
        assert!(!output.status.success(), "{entries}: {}", stderr(&output));
        assert!(
            files_below(&dest).is_empty(),
            "{entries}: wrote {:?}",
            files_below(&dest)
        );
    }
}

#[test]
fn symlinks_planted_in_the_destination_are_never_followed() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("lib")).unwrap();
    std::fs::write(root.path().join("lib/a.jar"), b"jar a").unwrap();
    std::fs::write(root.path().join("b.jar"), b"jar b").unwrap();
    let Some(nginx) = Nginx::start(root.path()) else {
        return;
    };
    let victim = tempfile::tempdir().unwrap();
    std::fs::write(victim.path().join("b.jar"), b"precious").unwrap();
    let dest = tempfile::tempdir().unwrap();
    // A planted folder link and a planted file link.
    std::os::unix::fs::symlink(victim.path(), dest.path().join("lib")).unwrap();
    std::os::unix::fs::symlink(victim.path().join("b.jar"), dest.path().join("b.jar")).unwrap();
    let plan = dest.path().with_extension("plan.json");
    std::fs::write(
        &plan,
        json!({"version": 1, "items": [
            {"uri": nginx.at("/lib/a.jar"), "dest": path_str(dest.path()), "name": "lib/a.jar"},
            {"uri": nginx.at("/b.jar"), "dest": path_str(dest.path())}
        ]})
        .to_string(),
    )
    .unwrap();
    let output = init::run(&["--plan", path_str(&plan)]);
    let message = stderr(&output);
    // The folder link is refused; the file link is replaced, not written through.
    assert!(!output.status.success(), "{message}");
    assert!(message.contains("symlink"), "{message}");
    assert_eq!(
        std::fs::read(victim.path().join("b.jar")).unwrap(),
        b"precious"
    );
    assert_eq!(files_below(victim.path()), ["b.jar"]);
    let b = dest.path().join("b.jar");
    assert!(
        !std::fs::symlink_metadata(&b)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read(&b).unwrap(), b"jar b");
    let _ = std::fs::remove_file(plan);
}
