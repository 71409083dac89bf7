//! `ferry apply` for Kubeflow spark-operator SparkApplications, against a
//! real ferry-server and kmock on loopback. kmock is a FAKE Kubernetes API
//! server (see `ferry_tests::kube_mock`) with the SparkApplication resource
//! registered as if the operator's CRD were installed; no operator runs, so
//! these tests read back what was applied, run ferry-init with the
//! arguments the driver's init container was given, and run the driver's
//! pod template through the kubelet stand-in (`ferry_tests::kubelet`).

use std::path::Path;
use std::process::{Command, Output, Stdio};

use base64::Engine as _;
use ferry_core::Digest;
use ferry_core::plan::FetchPlan;
use ferry_tests::api::ApiClient;
use ferry_tests::cluster::{Cluster, ferry_in};
use ferry_tests::kube_mock::KubeMock;
use ferry_tests::kubelet::StandInImage;
use ferry_tests::nginx::Nginx;
use ferry_tests::spark_image;
use ferry_tests::{FerryServer, init, write_pseudo_random_file};
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;
use std::time::Duration;

const NAMESPACE: &str = "spark-jobs";

/// A fake API server, a ferry-server, nginx for remote dependencies, and
/// a project folder.
struct Setup {
    kube: KubeMock,
    server: FerryServer,
    nginx: Nginx,
    project: tempfile::TempDir,
}

impl Setup {
    fn start() -> Option<Self> {
        let kube = KubeMock::start()?;
        let project = tempfile::tempdir().expect("project dir");
        let served = project.path().join("served");
        std::fs::create_dir(&served).expect("served dir");
        let nginx = Nginx::start(&served)?;
        Some(Self {
            kube,
            server: FerryServer::start(),
            nginx,
            project,
        })
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.project.path().join(name)
    }

    /// `ferry ... apply ARGS` in the project folder with the fake's
    /// kubeconfig and nothing of the caller's shell.
    fn apply(&self, args: &[&str]) -> Command {
        let token = self.path("upload-token");
        std::fs::write(&token, &self.server.token).expect("write the upload token");
        let mut command = ferry_in(&self.server, &token, self.project.path(), &self.kube);
        command.arg("apply").args(args);
        command
    }

    fn app(&self, name: &str) -> Option<Value> {
        self.kube.client().get(&format!(
            "/apis/sparkoperator.k8s.io/v1beta2/namespaces/{NAMESPACE}/sparkapplications/{name}"
        ))
    }

    fn bundles(&self) -> Vec<Value> {
        let api = ApiClient::new(&self.server.url, Some(&self.server.token));
        let list: Value = api
            .request(reqwest::Method::GET, "/v1/bundles")
            .send()
            .expect("list bundles")
            .json()
            .expect("bundle list is JSON");
        list["bundles"].as_array().cloned().unwrap_or_default()
    }
}

fn succeeded(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "ferry apply failed: {stderr}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("{value} is not a list"))
        .iter()
        .map(|v| v.as_str().expect("a string"))
        .collect()
}

fn names(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("{value} is not a list"))
        .iter()
        .map(|v| v["name"].as_str().expect("a name"))
        .collect()
}

/// The object the operator would receive, naming local files, remote URIs
/// on nginx and a `local://` jar already in the image.
fn application(dir: &Path, remote: &str) -> String {
    let path = |n: &str| dir.join(n).display().to_string();
    format!(
        r#"apiVersion: sparkoperator.k8s.io/v1beta2
kind: SparkApplication
metadata:
  name: etl
  namespace: {NAMESPACE}
  labels: {{team: data}}
spec:
  type: Scala
  mode: cluster
  image: spark:4.0.0
  mainClass: com.example.Etl
  mainApplicationFile: {app}
  futureOperatorField: {{keep: [1, 2]}}
  deps:
    jars: [{lib}, '{remote}', 'local:///opt/spark/jars/in-image.jar']
    files: ['file://{conf}#app.conf']
    pyFiles: [{helpers}]
    archives: ['{env}#env']
  sparkConf:
    spark.eventLog.enabled: "false"
  driver:
    cores: 1
    serviceAccount: spark
  executor:
    instances: 2
"#,
        app = path("app.jar"),
        lib = path("lib.jar"),
        remote = remote,
        conf = path("conf.txt"),
        helpers = path("helpers.py"),
        env = path("env.tar.gz"),
    )
}

/// Writes the project's local files and the remote jar; returns each
/// one's bytes by file name.
fn write_dependencies(dir: &Path) -> Vec<(&'static str, Vec<u8>)> {
    let mut files = Vec::new();
    for (seed, name) in [
        (1, "app.jar"),
        (2, "lib.jar"),
        (3, "conf.txt"),
        (4, "helpers.py"),
    ] {
        let path = dir.join(name);
        write_pseudo_random_file(&path, seed, 10_000 + seed * 777);
        files.push((name, std::fs::read(&path).expect("read back")));
    }
    // A real archive (ferry-init unpacks `archives`): one file inside,
    // whose bytes are what must arrive.
    let inside = dir.join("env-src");
    std::fs::create_dir_all(&inside).unwrap();
    write_pseudo_random_file(&inside.join(ARCHIVED), 5, 10_000 + 5 * 777);
    let tar = Command::new("tar")
        .arg("czf")
        .arg(dir.join("env.tar.gz"))
        .arg("-C")
        .arg(&inside)
        .arg(ARCHIVED)
        .status()
        .expect("run tar");
    assert!(tar.success(), "tar czf");
    files.push((
        "env.tar.gz",
        std::fs::read(inside.join(ARCHIVED)).expect("read back"),
    ));
    let remote = dir.join("served/remote.jar");
    write_pseudo_random_file(&remote, 6, 4_321);
    files.push(("remote.jar", std::fs::read(&remote).expect("read back")));
    files
}

/// The one file inside `env.tar.gz`.
const ARCHIVED: &str = "payload.bin";

/// Where `write_dependencies`' file `name` lands under the deps dir: its
/// group's folder, or, for the archive, inside the folder it is unpacked
/// into (its `#env` alias).
fn delivered(name: &str) -> String {
    match group_of(name) {
        "archives" => format!("archives/env/{ARCHIVED}"),
        group => format!("{group}/{name}"),
    }
}

/// Which group `write_dependencies`' file `name` is in, by its list in
/// `application`.
fn group_of(name: &str) -> &'static str {
    match name {
        "app.jar" => "app",
        "lib.jar" | "remote.jar" => "jars",
        "conf.txt" => "files",
        "helpers.py" => "pyfiles",
        _ => "archives",
    }
}

#[test]
fn an_applied_application_is_rewritten_owns_its_secret_and_ferry_init_delivers_it() {
    let Some(setup) = Setup::start() else { return };
    let files = write_dependencies(setup.project.path());
    // Dependencies land under a folder of this machine, so the ferry-init
    // run below writes where the pod's volume would be.
    let pod_dir = tempfile::tempdir().expect("pod dir");
    let deps_dir = pod_dir.path().join("deps").display().to_string();
    std::fs::write(
        setup.path("app.yaml"),
        application(setup.project.path(), &setup.nginx.at("/remote.jar")),
    )
    .unwrap();
    let out = succeeded(
        &setup
            .apply(&["-f", "app.yaml", "--deps-dir", &deps_dir])
            .output()
            .expect("run ferry"),
    );
    assert!(
        out.contains("sparkapplication.sparkoperator.k8s.io/etl applied"),
        "{out}"
    );

    let app = setup.app("etl").expect("the application was created");
    let spec = &app["spec"];
    let landed = |group: &str, name: &str| format!("local://{deps_dir}/{group}/{name}");
    assert_eq!(spec["mainApplicationFile"], landed("app", "app.jar"));
    assert_eq!(
        strings(&spec["deps"]["jars"]),
        [
            landed("jars", "lib.jar").as_str(),
            landed("jars", "remote.jar").as_str(),
            "local:///opt/spark/jars/in-image.jar"
        ]
    );
    assert_eq!(
        strings(&spec["deps"]["files"]),
        [format!("{}#app.conf", landed("files", "conf.txt"))]
    );
    assert_eq!(
        strings(&spec["deps"]["pyFiles"]),
        [landed("pyfiles", "helpers.py")]
    );
    // ferry-init unpacks the archive, so Spark is not given it.
    assert!(
        spec["deps"]["archives"]
            .as_array()
            .is_none_or(|a| a.is_empty()),
        "{}",
        spec["deps"]
    );
    // What ferry does not edit is kept as written.
    assert_eq!(spec["futureOperatorField"]["keep"][1], 2);
    assert_eq!(spec["driver"]["serviceAccount"], "spark");
    assert_eq!(spec["executor"]["instances"], 2);
    assert_eq!(spec["sparkConf"]["spark.eventLog.enabled"], "false");
    assert_eq!(
        spec["sparkConf"]["spark.kubernetes.jars.avoidDownloadSchemes"],
        "local"
    );
    assert_eq!(app["metadata"]["labels"]["team"], "data");

    // One bundle, owned by the pods the labels mark.
    let bundles = setup.bundles();
    assert_eq!(bundles.len(), 1, "{bundles:?}");
    let bundle = &bundles[0];
    assert_eq!(bundle["files"], 5, "the five local files");
    assert_eq!(bundle["labels"]["spark-app-name"], "etl");
    assert_eq!(bundle["owner"]["namespace"], NAMESPACE);
    let selector = bundle["owner"]["selector"].as_str().unwrap();
    let (key, value) = selector.split_once('=').unwrap();
    let bundle_id = bundle["id"].as_str().unwrap();

    // The default injection: each role's pod template.
    let secret_name = format!("ferry-{}", bundle_id.to_ascii_lowercase());
    for role in ["driver", "executor"] {
        let pod = &spec[role];
        assert_eq!(pod["labels"][key], value, "{role} pods own the bundle");
        assert!(pod.get("initContainers").is_none(), "{role}: template mode");
        let template = &pod["template"]["spec"];
        assert_eq!(names(&template["initContainers"]), ["ferry-init"]);
        assert_eq!(
            template["containers"][0]["name"],
            format!("spark-kubernetes-{role}")
        );
        assert_eq!(
            template["containers"][0]["volumeMounts"][0]["mountPath"],
            deps_dir.as_str()
        );
        assert_eq!(names(&template["volumes"]), ["ferry-deps", "ferry-token"]);
        assert_eq!(template["volumes"][1]["secret"]["secretName"], secret_name);
        assert_eq!(template["securityContext"]["fsGroup"], 185);
    }

    // The Secret holds the bundle's token and goes with the application.
    let secret = setup
        .kube
        .client()
        .get(&KubeMock::path(NAMESPACE, "secrets", &secret_name))
        .expect("the token Secret was created");
    let owner = &secret["metadata"]["ownerReferences"][0];
    assert_eq!(owner["apiVersion"], "sparkoperator.k8s.io/v1beta2");
    assert_eq!(owner["kind"], "SparkApplication");
    assert_eq!(owner["name"], "etl");
    assert_eq!(owner["uid"], app["metadata"]["uid"]);
    let token = base64::engine::general_purpose::STANDARD
        .decode(secret["data"]["token"].as_str().expect("token key"))
        .expect("base64");

    // ferry-init with the driver's arguments, the token where the Secret
    // volume would put it, delivers every file byte for byte.
    let init_container = &spec["driver"]["template"]["spec"]["initContainers"][0];
    let token_file = pod_dir.path().join("token");
    std::fs::write(&token_file, &token).unwrap();
    let mut args: Vec<String> = init_container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    let at = args.iter().position(|a| a == "--token-file").unwrap();
    args[at + 1] = init::path_str(&token_file).to_owned();
    let plan = FetchPlan::from_json(args.last().unwrap()).expect("the plan parses");
    assert_eq!(
        plan.items.len(),
        3,
        "the bundle, its archive to unpack, then the remote jar"
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = init::run(&args);
    assert!(run.status.success(), "ferry-init: {}", init::stderr(&run));
    for (name, bytes) in &files {
        let delivered = Path::new(&deps_dir).join(delivered(name));
        assert_eq!(
            &std::fs::read(&delivered).unwrap_or_else(|e| panic!("{}: {e}", delivered.display())),
            bytes,
            "{name}"
        );
    }
}

#[test]
fn init_containers_mode_keeps_the_users_init_containers_and_volumes() {
    let Some(setup) = Setup::start() else { return };
    std::fs::write(setup.path("app.py"), "print('hi')\n").unwrap();
    let text = format!(
        r#"apiVersion: sparkoperator.k8s.io/v1beta2
kind: SparkApplication
metadata: {{name: py, namespace: {NAMESPACE}}}
spec:
  type: Python
  mainApplicationFile: ./app.py
  volumes:
  - {{name: data, emptyDir: {{}}}}
  driver:
    initContainers:
    - {{name: setup, image: busybox, args: ["true"]}}
    volumeMounts:
    - {{name: data, mountPath: /data}}
    podSecurityContext: {{fsGroup: 1000}}
  executor:
    volumeMounts:
    - {{name: data, mountPath: /data}}
"#
    );
    std::fs::write(setup.path("py.yaml"), &text).unwrap();
    succeeded(
        &setup
            .apply(&["-f", "py.yaml", "--inject", "init-containers"])
            .output()
            .expect("run ferry"),
    );
    let app = setup.app("py").expect("applied");
    let spec = &app["spec"];
    assert_eq!(spec["mainApplicationFile"], "local:///var/ferry/app/app.py");
    assert_eq!(
        names(&spec["volumes"]),
        ["data", "ferry-deps", "ferry-token"]
    );
    let driver = &spec["driver"];
    assert_eq!(names(&driver["initContainers"]), ["ferry-init", "setup"]);
    assert_eq!(driver["initContainers"][1]["image"], "busybox");
    let mounts: Vec<&str> = driver["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    assert_eq!(mounts, ["/data", "/var/ferry"]);
    assert_eq!(
        driver["podSecurityContext"]["fsGroup"], 1000,
        "the user's own"
    );
    let executor = &spec["executor"];
    assert_eq!(names(&executor["initContainers"]), ["ferry-init"]);
    assert_eq!(names(&executor["volumeMounts"]), ["data", "ferry-deps"]);
    assert!(driver.get("template").is_none() && executor.get("template").is_none());
    let plan = FetchPlan::from_json(
        driver["initContainers"][0]["args"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(plan.items.len(), 1, "the bundle");
    let uid = app["metadata"]["uid"].clone();

    // Applying again updates the same object (server-side apply), with a
    // fresh bundle and Secret, and still one ferry-init.
    succeeded(
        &setup
            .apply(&["-f", "py.yaml", "--inject", "init-containers"])
            .output()
            .expect("run ferry"),
    );
    let again = setup.app("py").expect("still there");
    assert_eq!(again["metadata"]["uid"], uid);
    assert_eq!(
        names(&again["spec"]["driver"]["initContainers"]),
        ["ferry-init", "setup"]
    );
    assert_eq!(setup.bundles().len(), 2);
}

#[test]
fn an_application_whose_dependencies_are_all_remote_gets_no_bundle() {
    let Some(setup) = Setup::start() else { return };
    let text = format!(
        "apiVersion: sparkoperator.k8s.io/v1beta2\nkind: SparkApplication\nmetadata: {{name: remote}}\nspec:\n  mainApplicationFile: {}\n  deps:\n    jars: ['local:///opt/x.jar']\n",
        setup.nginx.at("/app.jar")
    );
    let mut child = setup
        .apply(&["-f", "-", "--namespace", NAMESPACE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ferry");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    succeeded(&child.wait_with_output().unwrap());
    assert!(setup.bundles().is_empty(), "nothing local, nothing staged");
    assert!(
        setup
            .kube
            .client()
            .list(NAMESPACE, "secrets", None)
            .is_empty(),
        "no token, no Secret"
    );
    let app = setup
        .app("remote")
        .expect("applied in the flag's namespace");
    let spec = &app["spec"];
    assert_eq!(
        spec["mainApplicationFile"],
        "local:///var/ferry/app/app.jar"
    );
    let template = &spec["driver"]["template"]["spec"];
    let args = strings(&template["initContainers"][0]["args"]);
    assert!(!args.contains(&"--token-file"), "{args:?}");
    assert_eq!(names(&template["volumes"]), ["ferry-deps"]);
    let plan = FetchPlan::from_json(args.last().unwrap()).unwrap();
    assert_eq!(plan.items.len(), 1);
    assert_eq!(plan.items[0].uri.as_str(), setup.nginx.at("/app.jar"));
}

#[test]
fn a_dry_run_prints_every_rewritten_object_and_applies_nothing() {
    let Some(setup) = Setup::start() else { return };
    std::fs::write(setup.path("a.jar"), "a").unwrap();
    let local = "apiVersion: sparkoperator.k8s.io/v1beta2\nkind: SparkApplication\nmetadata: {name: one}\nspec:\n  mainApplicationFile: a.jar\n";
    let remote = format!(
        "apiVersion: sparkoperator.k8s.io/v1beta2\nkind: SparkApplication\nmetadata: {{name: two}}\nspec:\n  mainApplicationFile: {}\n",
        setup.nginx.at("/b.jar")
    );
    std::fs::write(setup.path("apps.yaml"), format!("{local}---\n{remote}")).unwrap();
    let out = succeeded(
        &setup
            .apply(&["-f", "apps.yaml", "--dry-run", "--namespace", NAMESPACE])
            .output()
            .expect("run ferry"),
    );
    let documents: Vec<Value> = serde_yaml::Deserializer::from_str(&out)
        .map(|d| serde::Deserialize::deserialize(d).expect("YAML"))
        .filter(|d: &Value| !d.is_null())
        .collect();
    let kinds: Vec<(&str, &str)> = documents
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap(),
                d["metadata"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    let bundles = setup.bundles();
    assert_eq!(
        bundles.len(),
        1,
        "the dry run stages, as ferry submit's does"
    );
    let secret_name = format!(
        "ferry-{}",
        bundles[0]["id"].as_str().unwrap().to_ascii_lowercase()
    );
    assert_eq!(
        kinds,
        [
            ("SparkApplication", "one"),
            ("Secret", secret_name.as_str()),
            ("SparkApplication", "two")
        ]
    );
    assert_eq!(
        documents[0]["spec"]["mainApplicationFile"],
        "local:///var/ferry/app/a.jar"
    );
    assert_eq!(documents[0]["metadata"]["namespace"], NAMESPACE);
    assert_eq!(documents[1]["metadata"]["namespace"], NAMESPACE);
    assert_eq!(
        documents[2]["spec"]["mainApplicationFile"],
        "local:///var/ferry/app/b.jar"
    );
    assert_eq!(
        names(&documents[0]["spec"]["driver"]["template"]["spec"]["initContainers"]),
        ["ferry-init"]
    );
    assert!(setup.app("one").is_none() && setup.app("two").is_none());
    assert!(
        setup
            .kube
            .client()
            .list(NAMESPACE, "secrets", None)
            .is_empty()
    );
}

/// The driver pod the operator would start from the applied object (its
/// template, its labels), run by the kubelet stand-in with ferry-init from
/// its image: the init container reads the token from the Secret ferry
/// applied and every file arrives intact (the main container, the host's
/// `sha256sum` standing in for the Spark image, hashes each one).
#[test]
fn the_applied_driver_template_runs_as_a_pod_and_every_file_arrives_intact() {
    let Some(cluster) = Cluster::start(&["ferry-init"]) else {
        return;
    };
    let hasher = StandInImage {
        entrypoint: vec!["sha256sum".into()],
        user: Some("185:185".into()),
        ..Default::default()
    };
    let kubelet = cluster
        .kubelet
        .clone()
        .with_image(spark_image::IMAGE, hasher);
    std::fs::create_dir(cluster.path("served")).unwrap();
    let Some(nginx) = Nginx::start(&cluster.path("served")) else {
        return;
    };
    let files = write_dependencies(cluster.work.path());
    std::fs::write(
        cluster.path("app.yaml"),
        application(cluster.work.path(), &nginx.at("/remote.jar")),
    )
    .unwrap();
    let mut apply = ferry_in(
        &cluster.server,
        &cluster.upload_token,
        cluster.work.path(),
        &cluster.kube,
    );
    apply.args([
        "apply",
        "-f",
        "app.yaml",
        "--pod-server",
        &cluster.server.url,
    ]);
    succeeded(&apply.output().expect("run ferry"));

    let app = cluster
        .kube
        .client()
        .get(&format!(
            "/apis/sparkoperator.k8s.io/v1beta2/namespaces/{NAMESPACE}/sparkapplications/etl"
        ))
        .expect("applied");
    let driver = &app["spec"]["driver"];
    let mut pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "etl-driver", "namespace": NAMESPACE, "labels": driver["labels"]},
        "spec": driver["template"]["spec"],
    }))
    .expect("the template is a pod spec");
    let delivered: Vec<String> = files
        .iter()
        .map(|(name, _)| format!("/var/ferry/{}", delivered(name)))
        .collect();
    let main = &mut pod.spec.as_mut().unwrap().containers[0];
    main.image = Some(spark_image::IMAGE.into());
    main.command = Some(
        std::iter::once("sha256sum".to_owned())
            .chain(delivered.iter().cloned())
            .collect(),
    );
    let stored: Pod = serde_json::from_value(cluster.kube.client().create(
        NAMESPACE,
        "pods",
        &serde_json::to_value(&pod).unwrap(),
    ))
    .unwrap();
    let outcome = kubelet.run_pod(&stored, Duration::from_secs(120));
    assert!(outcome.succeeded(), "{}", outcome.describe());
    let log = &outcome.container("spark-kubernetes-driver").log;
    for ((name, bytes), path) in files.iter().zip(&delivered) {
        let line = format!("{}  {path}", Digest::of(bytes).hex());
        assert!(log.contains(&line), "{name}: no {line:?} in\n{log}");
    }
}
