//! Service-account upload credentials end to end: a real
//! `ferry-server --kubernetes-auth` sends TokenReviews through kube-rs to
//! kmock, a **fake** Kubernetes API server (PyPI `kmock`, see `kube_mock`),
//! which answers from a fixed table of tokens. This shows the exchange
//! wiring (JWT-shaped bearer → TokenReview → allow list → upload rights),
//! including `ferry --kube-token`; it does not show a real API server's
//! token validation.

use std::process::Command;

use ferry_tests::api::ApiClient;
use ferry_tests::kube_mock::{
    CI_PUBLISHER_TOKEN, HUMAN_TOKEN, KubeMock, SPARK_SUBMITTER_TOKEN, UNKNOWN_TOKEN,
};
use ferry_tests::{FerryServer, bin};
use serde_json::{Value, json};

fn upload_status(server: &FerryServer, token: &str, bytes: &[u8]) -> u16 {
    ApiClient::new(&server.url, Some(token))
        .put_blob(bytes)
        .status()
        .as_u16()
}

fn error_message(server: &FerryServer, token: &str) -> (u16, String) {
    let response = ApiClient::new(&server.url, Some(token))
        .request(reqwest::Method::GET, "/v1/bundles")
        .send()
        .expect("GET /v1/bundles");
    let status = response.status().as_u16();
    let body: Value = response.json().unwrap_or_default();
    (
        status,
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[test]
fn allowed_service_accounts_upload_and_everyone_else_is_refused_with_a_reason() {
    let Some(kube) = KubeMock::start() else {
        return;
    };
    let server = FerryServer::builder()
        .env("KUBECONFIG", kube.kubeconfig.display().to_string())
        .args([
            "--kubernetes-auth",
            "--auth-namespaces",
            "spark",
            "--auth-service-accounts",
            "ci:publisher",
        ])
        .start();

    // A namespace on the list, and an account on the list.
    assert_eq!(
        upload_status(&server, SPARK_SUBMITTER_TOKEN, b"from spark"),
        201
    );
    assert_eq!(upload_status(&server, CI_PUBLISHER_TOKEN, b"from ci"), 201);
    let staged = ApiClient::new(&server.url, Some(SPARK_SUBMITTER_TOKEN)).stage(
        &[("jars/a.jar", b"from spark")],
        json!({"name": "sa-staged"}),
    );
    assert!(staged["token"].is_string());

    // Authenticated but not a service account; not authenticated at all.
    let (status, message) = error_message(&server, HUMAN_TOKEN);
    assert_eq!(status, 401);
    assert!(message.contains("not a service account"), "{message}");
    let (status, message) = error_message(&server, UNKNOWN_TOKEN);
    assert_eq!(status, 401);
    assert!(message.contains("did not accept"), "{message}");
    assert_eq!(upload_status(&server, UNKNOWN_TOKEN, b"nope"), 401);

    // The upload token still works alongside.
    assert_eq!(
        upload_status(&server, &server.token, b"with the upload token"),
        201
    );
}

#[test]
fn a_service_account_outside_the_allow_list_is_refused_naming_the_flags() {
    let Some(kube) = KubeMock::start() else {
        return;
    };
    let server = FerryServer::builder()
        .env("KUBECONFIG", kube.kubeconfig.display().to_string())
        .args(["--kubernetes-auth", "--auth-namespaces", "other"])
        .start();
    let (status, message) = error_message(&server, SPARK_SUBMITTER_TOKEN);
    assert_eq!(status, 401);
    assert!(
        message.contains("spark/submitter") && message.contains("--auth-namespaces"),
        "{message}"
    );
}

/// `ferry --kube-token stage`: the client sends its kubeconfig user's token
/// and the server accepts it through TokenReview.
#[test]
fn ferry_kube_token_stages_with_the_kubeconfig_users_token() {
    let Some(kube) = KubeMock::start() else {
        return;
    };
    let server = FerryServer::builder()
        .env("KUBECONFIG", kube.kubeconfig.display().to_string())
        .args(["--kubernetes-auth", "--auth-namespaces", "spark"])
        .start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lib.jar"), b"library bytes").unwrap();
    let stage = |kubeconfig: &std::path::Path| {
        Command::new(bin("ferry"))
            .args(["--server", &server.url, "--kube-token", "--quiet"])
            .args(["stage", "--output", "json", "lib.jar"])
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path().join("no-config"))
            .env("KUBECONFIG", kubeconfig)
            .output()
            .expect("run ferry")
    };

    let output = stage(&kube.kubeconfig_with_token(SPARK_SUBMITTER_TOKEN));
    assert!(
        output.status.success(),
        "ferry --kube-token stage: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let staged: Value = serde_json::from_slice(&output.stdout).expect("stage JSON");
    let id = staged["id"].as_str().expect("bundle id");
    let manifest = ApiClient::new(&server.url, Some(&server.token))
        .request(reqwest::Method::GET, &format!("/v1/bundles/{id}"))
        .send()
        .unwrap();
    assert_eq!(manifest.status(), 200);

    let refused = stage(&kube.kubeconfig_with_token(UNKNOWN_TOKEN));
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("did not accept"), "{stderr}");
}
