//! What ferry-init says when items fail, and its node cache's trust model,
//! against real servers on loopback: nginx (404, a `deny all` 403, a wrong
//! pin), ferry-server (a token for another bundle, a blob corrupted in its
//! data directory), one run mixing them; and a cache entry written through
//! a pod's hard link, which must be caught and fetched again.
//!
//! Build first: `cargo build -p ferry-server -p ferry-init --bins`, and
//! `source target/emulators/env.sh` for nginx.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ferry_core::Digest;
use ferry_tests::api::ApiClient;
use ferry_tests::init::{self, entries_below, path_str, stderr};
use ferry_tests::nginx::Nginx;
use ferry_tests::pseudo_random_bytes;
use ferry_tests::server::FerryServer;
use serde_json::{Value, json};

/// A ferry-server with one staged bundle (`jars/app.jar` = `data`), and a
/// second bundle whose token is not this one's.
struct Staged {
    server: FerryServer,
    id: String,
    token: String,
    other_token: String,
}

fn staged(data: &[u8]) -> Staged {
    let server = FerryServer::start();
    let api = ApiClient::new(&server.url, Some(&server.token));
    let bundle = api.stage(&[("jars/app.jar", data)], json!({}));
    let other = api.stage(&[("other.txt", b"other")], json!({}));
    Staged {
        id: bundle["id"].as_str().unwrap().to_owned(),
        token: bundle["token"].as_str().unwrap().to_owned(),
        other_token: other["token"].as_str().unwrap().to_owned(),
        server,
    }
}

/// The failed-item lines of a text report.
fn failed_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.starts_with("ferry-init: FAILED "))
        .collect()
}

#[test]
fn each_failure_gets_one_line_naming_its_uri_and_the_summary_counts_them() {
    let root = tempfile::tempdir().unwrap();
    let good = pseudo_random_bytes(11, 300 << 10);
    std::fs::write(root.path().join("good.jar"), &good).unwrap();
    std::fs::create_dir(root.path().join("private")).unwrap();
    std::fs::write(root.path().join("private/secret.jar"), b"secret").unwrap();
    let Some(nginx) = Nginx::builder(root.path())
        .location("location /private/ { deny all; }")
        .start()
    else {
        return;
    };
    let staged = staged(b"the app jar");
    let work = tempfile::tempdir().unwrap();
    let wrong_token = work.path().join("token");
    std::fs::write(&wrong_token, &staged.other_token).unwrap();

    let good_digest = Digest::of(&good);
    let wrong_pin = Digest::of(b"something else");
    let ok_uri = format!("{}#sha256={}", nginx.at("/good.jar"), good_digest.hex());
    let missing = nginx.at("/missing.jar");
    let forbidden = nginx.at("/private/secret.jar");
    let mismatched = format!("{}#sha256={}", nginx.at("/good.jar"), wrong_pin.hex());
    let other_bundle = format!("ferry://{}/jars/app.jar", staged.id);
    let run = |dest: &Path, format: &str| {
        init::run(&[
            "--server",
            &staged.server.url,
            "--token-file",
            path_str(&wrong_token),
            "--retry-delay",
            "10ms",
            "--log-format",
            format,
            "--into",
            path_str(dest),
            &ok_uri,
            &missing,
            &forbidden,
            &other_bundle,
        ])
    };

    // Text: exit 1, one line per failed item with its reason, a summary.
    let dest = work.path().join("text");
    let output = run(&dest, "text");
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    let failed = failed_lines(&text);
    assert_eq!(failed.len(), 3, "{text}");
    for (uri, reason) in [
        (missing.as_str(), "not found"),
        (forbidden.as_str(), "HTTP 403"),
        (other_bundle.as_str(), "access denied"),
    ] {
        let lines: Vec<_> = failed.iter().filter(|l| l.contains(uri)).collect();
        assert_eq!(lines.len(), 1, "{uri} not named once:\n{text}");
        assert!(lines[0].contains(reason), "{uri}: no {reason:?}:\n{text}");
    }
    assert!(
        !text.contains("retrying"),
        "a permanent failure was retried:\n{text}"
    );
    let summary = text.lines().last().unwrap();
    assert!(
        summary.starts_with("ferry-init: 1 of 4 items in place (1 fetched")
            && summary.contains("3 failed")
            && summary.contains("300.0 KiB received"),
        "{summary}"
    );
    assert_eq!(entries_below(&dest), vec!["good.jar".to_string()]);
    assert!(std::fs::read(dest.join("good.jar")).unwrap() == good);

    // JSON: every line parses; the same failures and counts.
    let dest = work.path().join("json");
    let output = run(&dest, "json");
    assert_eq!(output.status.code(), Some(1));
    let lines: Vec<Value> = stderr(&output)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let failures: Vec<&Value> = lines
        .iter()
        .filter(|v| v["event"] == "item_failed")
        .collect();
    assert_eq!(failures.len(), 3, "{lines:?}");
    for uri in [&missing, &forbidden, &other_bundle] {
        assert!(
            failures
                .iter()
                .any(|v| v["uri"] == uri.as_str() && v["error"].as_str().is_some()),
            "{uri} missing from {failures:?}"
        );
    }
    let summary = lines.iter().find(|v| v["event"] == "summary").unwrap();
    assert_eq!(
        (summary["ok"].as_u64(), summary["failed"].as_u64()),
        (Some(1), Some(3))
    );
    assert_eq!(summary["received"].as_u64(), Some(good.len() as u64));
    assert!(summary["seconds"].as_f64().is_some());

    // A wrong pin: named with both digests; nothing left, not even a temp file.
    let dest = work.path().join("pin");
    let output = init::run(&["--into", path_str(&dest), &mismatched]);
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    let failed = failed_lines(&text);
    assert_eq!(failed.len(), 1, "{text}");
    for needle in [
        nginx.at("/good.jar"),
        wrong_pin.to_string(),
        good_digest.to_string(),
    ] {
        assert!(failed[0].contains(&needle), "no {needle} in {}", failed[0]);
    }
    assert!(
        entries_below(&dest).is_empty(),
        "{:?}",
        entries_below(&dest)
    );

    // A bad command line is exit 2, before any network.
    let output = init::run(&[&ok_uri]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("--into"));
}

/// The blob file of `digest` in a local ferry-server data directory.
fn blob_file(data: &str, digest: &Digest) -> PathBuf {
    let hex = digest.hex();
    Path::new(data).join(format!("blobs/sha256/{}/{hex}", &hex[..2]))
}

#[test]
fn a_blob_corrupted_on_the_server_is_refused_naming_both_digests() {
    let data = pseudo_random_bytes(12, 1 << 20);
    let staged = staged(&data);
    let digest = Digest::of(&data);
    let file = blob_file(&staged.server.data, &digest);
    assert!(file.is_file(), "blob layout changed: {}", file.display());
    // Same length, other bytes: only the digest can tell.
    let mut bad = data.clone();
    bad[4096] ^= 0xff;
    let mut perms = std::fs::metadata(&file).unwrap().permissions();
    perms.set_mode(0o644);
    std::fs::set_permissions(&file, perms).unwrap();
    std::fs::write(&file, &bad).unwrap();

    let work = tempfile::tempdir().unwrap();
    let token_file = work.path().join("token");
    std::fs::write(&token_file, &staged.token).unwrap();
    let uri = format!("ferry://{}/jars/app.jar", staged.id);
    let dest = work.path().join("dest");
    let cache = work.path().join("cache");
    let output = init::run(&[
        "--server",
        &staged.server.url,
        "--token-file",
        path_str(&token_file),
        "--cache-dir",
        path_str(&cache),
        "--into",
        path_str(&dest),
        &uri,
    ]);
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    let failed = failed_lines(&text);
    assert_eq!(failed.len(), 1, "{text}");
    for needle in [
        uri.clone(),
        "digest mismatch".into(),
        digest.to_string(),
        Digest::of(&bad).to_string(),
    ] {
        assert!(failed[0].contains(&needle), "no {needle} in {}", failed[0]);
    }
    assert!(
        entries_below(&dest).is_empty(),
        "{:?}",
        entries_below(&dest)
    );
    // Nothing entered the cache, not even a temp file.
    let cached: Vec<String> = entries_below(&cache)
        .into_iter()
        .filter(|p| p.starts_with("sha256/") && p.matches('/').count() == 2)
        .collect();
    assert!(cached.is_empty(), "{cached:?}");
}

#[test]
fn a_cache_entry_written_through_a_pods_link_is_caught_and_fetched_again() {
    let root = tempfile::tempdir().unwrap();
    let data = pseudo_random_bytes(13, 2 << 20);
    std::fs::write(root.path().join("lib.jar"), &data).unwrap();
    let Some(nginx) = Nginx::start(root.path()) else {
        return;
    };
    let digest = Digest::of(&data);
    let uri = format!("{}#sha256={}", nginx.at("/lib.jar"), digest.hex());
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let fetch_into = |name: &str| {
        let dest = work.path().join(name);
        let output = init::run(&[
            "--cache-dir",
            path_str(&cache),
            "--into",
            path_str(&dest),
            &uri,
        ]);
        assert!(output.status.success(), "{}", stderr(&output));
        (dest.join("lib.jar"), stderr(&output))
    };
    let gets = || {
        nginx
            .access_log()
            .lines()
            .filter(|l| l.contains("GET /lib.jar "))
            .count()
    };

    let (first, text) = fetch_into("pod1");
    assert!(text.contains("(1 fetched"), "{text}");
    let entry = cache.join(format!("sha256/{}/{}", &digest.hex()[..2], digest.hex()));
    let meta = std::fs::metadata(&entry).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o444, "cache entries are read-only");
    assert_eq!(
        std::fs::metadata(&first).unwrap().ino(),
        meta.ino(),
        "the destination is a hard link to the cache entry"
    );
    assert_eq!(gets(), 1);

    // A warm, sealed hit: no request at all.
    let (second, text) = fetch_into("pod2");
    assert!(text.contains("1 from cache"), "{text}");
    assert!(std::fs::read(&second).unwrap() == data);
    assert_eq!(gets(), 1, "a cache hit went to the network");

    // A pod running as root writes into its jar (the same inode): same
    // size, other bytes. The next pod must not get those bytes.
    // It even puts the mode back, so only the seal can tell.
    let set_mode = |mode| {
        let mut perms = std::fs::metadata(&first).unwrap().permissions();
        perms.set_mode(mode);
        std::fs::set_permissions(&first, perms).unwrap();
    };
    set_mode(0o644);
    let mut bad = data.clone();
    bad[..8].copy_from_slice(b"poisoned");
    std::fs::write(&first, &bad).unwrap();
    set_mode(0o444);
    let (third, text) = fetch_into("pod3");
    assert!(text.contains("(1 fetched"), "{text}");
    assert!(
        std::fs::read(&third).unwrap() == data,
        "a poisoned cache entry was served"
    );
    assert_eq!(gets(), 2, "the damaged entry was not fetched again");
    assert!(std::fs::read(&entry).unwrap() == data);
    assert_eq!(std::fs::metadata(&entry).unwrap().mode() & 0o777, 0o444);
}

#[test]
fn a_large_entry_lands_intact_through_the_pipelined_writer() {
    // Several writeback steps (8 MiB) and many network chunks, an odd size.
    let data = pseudo_random_bytes(14, (40 << 20) + 3);
    let staged = staged(&data);
    let work = tempfile::tempdir().unwrap();
    let token = work.path().join("token");
    std::fs::write(&token, &staged.token).unwrap();
    let uri = format!("ferry://{}/jars/app.jar", staged.id);
    let cache = work.path().join("cache");
    for (name, with_cache) in [("plain", false), ("cached", true)] {
        let dest = work.path().join(name);
        let mut args = vec![
            "--server",
            &staged.server.url,
            "--token-file",
            path_str(&token),
            "--into",
            path_str(&dest),
        ];
        if with_cache {
            args.extend(["--cache-dir", path_str(&cache)]);
        }
        args.push(&uri);
        let output = init::run(&args);
        assert!(output.status.success(), "{name}: {}", stderr(&output));
        assert!(
            std::fs::read(dest.join("app.jar")).unwrap() == data,
            "{name}: content differs"
        );
        assert_eq!(entries_below(&dest), vec!["app.jar".to_string()]);
    }
}
