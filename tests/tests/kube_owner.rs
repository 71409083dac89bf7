//! Owner tracking end to end: a real `ferry-server --kubernetes` whose
//! kube-rs pod watch talks to kmock, a **fake** Kubernetes API server (PyPI
//! `kmock`: list and watch over an in-memory store; see `kube_mock`). No real
//! kube-apiserver can be installed from the registries this project reaches,
//! so this shows the wiring (kubeconfig, list, watch events, namespaced
//! stores, the owner loop, deletion) and not a real cluster's behaviour.

use std::time::Duration;

use ferry_tests::FerryServer;
use ferry_tests::api::ApiClient;
use ferry_tests::kube_mock::KubeMock;
use serde_json::json;

const LABEL: &str = "ferry.dev/submission";

fn bundle_exists(api: &ApiClient, id: &str) -> bool {
    let status = api
        .request(reqwest::Method::GET, &format!("/v1/bundles/{id}"))
        .send()
        .expect("GET bundle")
        .status();
    assert!(status == 200 || status == 404, "GET bundle {id}: {status}");
    status == 200
}

fn owned_bundle(api: &ApiClient, namespace: &str, submission: &str) -> String {
    let staged = api.stage(
        &[(
            "jars/app.jar",
            format!("jar of {namespace}/{submission}").as_bytes(),
        )],
        json!({"owner": {"namespace": namespace, "selector": format!("{LABEL}={submission}")}}),
    );
    staged["id"].as_str().expect("bundle id").to_owned()
}

#[test]
fn bundles_go_when_their_pods_go_and_stay_while_one_runs() {
    let Some(kube) = KubeMock::start() else {
        return;
    };
    kube.create_pod("jobs", "driver-a", &[(LABEL, "a")], "Running");
    kube.create_pod("jobs", "driver-b", &[(LABEL, "b")], "Running");
    kube.create_pod("jobs", "driver-c", &[(LABEL, "c")], "Running");
    // Same label, other namespace: must not hold bundle "jobs/b".
    kube.create_pod("spark", "driver-b", &[(LABEL, "b")], "Running");
    assert_eq!(kube.pod_names("jobs").len(), 3, "kmock stores pods");

    let server = FerryServer::builder()
        .env("KUBECONFIG", kube.kubeconfig.display().to_string())
        .args([
            "--kubernetes",
            "--watch-namespaces",
            "jobs,spark",
            "--owner-grace",
            "1s",
            "--owner-min-age",
            "1s",
            "--owner-check-interval",
            "200ms",
        ])
        .start();
    let api = ApiClient::new(&server.url, Some(&server.token));
    let a = owned_bundle(&api, "jobs", "a");
    let b = owned_bundle(&api, "jobs", "b");
    let c = owned_bundle(&api, "jobs", "c");
    // Owned in a namespace the server does not watch: left to its TTL.
    let elsewhere = owned_bundle(&api, "elsewhere", "x");
    let unowned = api.stage(&[("files/x.conf", b"x")], json!({}))["id"]
        .as_str()
        .unwrap()
        .to_owned();

    assert!(
        ferry_tests::wait_until(Duration::from_secs(15), || server
            .log()
            .contains("owner tracking started")),
        "the owner loop never started (pod watch not ready): {}",
        server.log()
    );

    // Pod b goes away; pod c finishes (a completed driver keeps its object).
    kube.delete_pod("jobs", "driver-b");
    kube.set_phase("jobs", "driver-c", "Succeeded");
    assert!(
        ferry_tests::wait_until(Duration::from_secs(15), || !bundle_exists(&api, &b)
            && !bundle_exists(&api, &c)),
        "bundles whose pods are gone or finished were kept: b={} c={}\n{}",
        bundle_exists(&api, &b),
        bundle_exists(&api, &c),
        server.log()
    );
    // b and c were past grace and min-age; so was a, which a running pod holds.
    assert!(
        bundle_exists(&api, &a),
        "a bundle with a running pod was deleted"
    );
    assert!(
        bundle_exists(&api, &elsewhere),
        "an unwatched namespace's bundle was deleted"
    );
    assert!(
        bundle_exists(&api, &unowned),
        "a bundle without owner was deleted"
    );
    assert_eq!(
        server.metric("ferry_bundles_deleted_total{reason=\"owner_gone\"}"),
        2
    );

    // The last pod goes: its bundle follows.
    kube.delete_pod("jobs", "driver-a");
    assert!(
        ferry_tests::wait_until(Duration::from_secs(15), || !bundle_exists(&api, &a)),
        "bundle a outlived its last pod: {}",
        server.log()
    );
    assert!(bundle_exists(&api, &elsewhere));
    assert!(bundle_exists(&api, &unowned));
}

#[test]
fn kubernetes_without_any_cluster_config_fails_at_start_naming_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new(ferry_tests::bin("ferry-server"));
    command
        .args(["--listen", "127.0.0.1:0", "--kubernetes", "--data"])
        .arg(dir.path().join("data"))
        .env("KUBECONFIG", dir.path().join("no-kubeconfig"))
        .env("HOME", dir.path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT");
    let mut child = ferry_tests::Child::spawn("ferry-server", command, dir.path().join("log"));
    let status = child
        .wait_timeout(Duration::from_secs(15))
        .expect("ferry-server kept running without any Kubernetes config");
    assert!(!status.success());
    let log = child.log_text();
    assert!(
        log.contains("cannot reach a Kubernetes API server"),
        "{log}"
    );
}

/// The API server goes away and comes back with pods gone. The fresh kmock
/// answers the watch's resume with 410 Gone, as a real API server does for a
/// version it no longer keeps; the watch re-lists, sees pod a gone, and only
/// then is bundle a removed (never while the watch was down).
#[test]
fn after_an_api_server_outage_the_watch_relists_and_catches_up() {
    let Some(mut kube) = KubeMock::start() else {
        return;
    };
    kube.create_pod("jobs", "driver-a", &[(LABEL, "a")], "Running");
    let server = FerryServer::builder()
        .env("KUBECONFIG", kube.kubeconfig.display().to_string())
        .args([
            "--kubernetes",
            "--owner-grace",
            "1s",
            "--owner-min-age",
            "1s",
            "--owner-check-interval",
            "200ms",
        ])
        .start();
    let api = ApiClient::new(&server.url, Some(&server.token));
    let a = owned_bundle(&api, "jobs", "a");
    assert!(
        ferry_tests::wait_until(Duration::from_secs(15), || server
            .log()
            .contains("owner tracking started")),
        "{}",
        server.log()
    );

    kube.stop();
    assert!(
        ferry_tests::wait_until(Duration::from_secs(15), || server
            .log()
            .contains("pod watch failed")),
        "the server did not notice the API server going away: {}",
        server.log()
    );
    // Its last view still has pod a, so a stays while the API is down.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        bundle_exists(&api, &a),
        "deleted while the pod watch was down"
    );

    // Back, but without pod a: the re-list shows it gone.
    kube.start_empty();
    kube.create_pod("jobs", "driver-b", &[(LABEL, "b")], "Running");
    let b = owned_bundle(&api, "jobs", "b");
    assert!(
        ferry_tests::wait_until(Duration::from_secs(20), || !bundle_exists(&api, &a)),
        "bundle a was kept after the re-list showed its pod gone: {}",
        server.log()
    );
    assert!(bundle_exists(&api, &b), "bundle b has a running pod");
}
