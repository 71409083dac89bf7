//! `ferry submit --packages`: resolved once, on the submitting machine,
//! with the real Ivy of pyspark's Spark distribution, against Maven
//! repositories the test builds with `javac`/`jar` and hand-written POMs
//! and serves with nginx; staged as plain jars; locked.
//!
//! The repositories exercise what Ivy (not ferry) must get right and what
//! ferry must carry through: a dependency version from a parent POM's
//! property, a BOM imported in `dependencyManagement`, a transitive compile
//! dependency, `test`, `provided` and optional dependencies and an
//! `<exclusions>` entry that must not arrive, a classifier artifact, and a
//! second repository (`--repositories`) holding one artifact the first
//! lacks. The first repository stands in for Maven Central
//! (`DEFAULT_ARTIFACT_REPOSITORY`, which Spark honours too), `HOME` is a
//! temporary folder (no `~/.m2` or Ivy cache of the machine is used), so
//! nothing leaves 127.0.0.1.
//!
//! The first tests replace Kubernetes as `spark.rs` does: the init
//! container's work is done by running ferry-init with the template's
//! arguments, then `spark-submit --master local[1]` runs the rewritten
//! command. The last one submits in cluster mode to kmock (a fake API
//! server) and runs the driver pod with the kubelet stand-in and our
//! ferry-init image (`FERRY_TEST_CONTAINERS`, built by `tests/run.sh`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use ferry_core::Digest;
use ferry_tests::api::ApiClient;
use ferry_tests::cluster::Cluster;
use ferry_tests::java::java_jar;
use ferry_tests::nginx::Nginx;
use ferry_tests::spark_image::{self, SparkHome, UNREACHABLE_K8S_MASTER};
use ferry_tests::{Child, FerryServer, bin, free_port, require_tool};
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

/// The jars `com.ex:app-lib:1.0` must resolve to, by Spark's names.
const EXPECTED: &[&str] = &[
    "com.ex_app-lib-1.0.jar",
    "com.ex_util-2.1.jar",
    "com.ex_deep-1.0.jar",
    "com.ex_managed-3.0.jar",
    "com.ex_natives-1.0-linux.jar",
    "com.ex_second-1.0.jar",
];

const JOB: &str = r#"
import sys
from pyspark.sql import SparkSession

spark = SparkSession.builder.getOrCreate()
jvm = spark.sparkContext._jvm
# Code from the transitive dependency, and from the classifier jar.
answer = jvm.com.ex.deep.Deep.answer()
platform = jvm.com.ex.natives.Natives.platform()
count = spark.sparkContext.parallelize(range(10), 2).count()
with open(sys.argv[1], "w") as out:
    out.write("%d %s %d\n" % (answer, platform, count))
spark.stop()
"#;

fn pom(group: &str, artifact: &str, version: &str, body: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?>\n<project xmlns=\"http://maven.apache.org/POM/4.0.0\">\n  <modelVersion>4.0.0</modelVersion>\n  <groupId>{group}</groupId>\n  <artifactId>{artifact}</artifactId>\n  <version>{version}</version>\n{body}\n</project>\n"
    )
}

fn dep(artifact: &str, version: Option<&str>, extra: &str) -> String {
    let version = version
        .map(|v| format!("<version>{v}</version>"))
        .unwrap_or_default();
    format!(
        "    <dependency><groupId>com.ex</groupId><artifactId>{artifact}</artifactId>{version}{extra}</dependency>\n"
    )
}

/// A Maven-layout module: its POM and, unless `jar` is `None`, a jar with
/// one class (`package`, `class`, `answer()` returning `value`).
struct Module<'a> {
    repo: &'a Path,
    artifact: &'a str,
    version: &'a str,
}

impl Module<'_> {
    fn dir(&self) -> PathBuf {
        self.repo
            .join("com/ex")
            .join(self.artifact)
            .join(self.version)
    }

    fn pom(&self, body: &str) -> &Self {
        std::fs::create_dir_all(self.dir()).unwrap();
        std::fs::write(
            self.dir()
                .join(format!("{}-{}.pom", self.artifact, self.version)),
            pom("com.ex", self.artifact, self.version, body),
        )
        .unwrap();
        self
    }

    fn jar_path(&self, classifier: Option<&str>) -> PathBuf {
        let suffix = classifier.map(|c| format!("-{c}")).unwrap_or_default();
        self.dir()
            .join(format!("{}-{}{suffix}.jar", self.artifact, self.version))
    }

    fn jar(&self, work: &Path, classifier: Option<&str>, class: &str, method: &str, value: &str) {
        java_jar(
            work,
            &self.jar_path(classifier),
            &self.artifact.replace('-', ""),
            class,
            method,
            value,
        );
    }
}

/// The two repositories under `root/a` and `root/b`.
fn build_repositories(root: &Path, work: &Path) {
    let a = root.join("a");
    let b = root.join("b");
    let module = |repo, artifact, version| Module {
        repo,
        artifact,
        version,
    };
    module(&a, "parent", "1.0").pom(
        "  <packaging>pom</packaging>\n  <properties><util.version>2.1</util.version></properties>",
    );
    module(&a, "bom", "1.0").pom(&format!(
        "  <packaging>pom</packaging>\n  <dependencyManagement><dependencies>\n{}  </dependencies></dependencyManagement>",
        dep("managed", Some("3.0"), "")
    ));
    let lib = module(&a, "app-lib", "1.0");
    lib.pom(&format!(
        "  <parent><groupId>com.ex</groupId><artifactId>parent</artifactId><version>1.0</version></parent>\n  <dependencyManagement><dependencies>\n{}  </dependencies></dependencyManagement>\n  <dependencies>\n{}{}{}{}{}{}{}  </dependencies>",
        dep("bom", Some("1.0"), "<type>pom</type><scope>import</scope>"),
        dep(
            "util",
            Some("${util.version}"),
            "<exclusions><exclusion><groupId>com.ex</groupId><artifactId>excluded</artifactId></exclusion></exclusions>"
        ),
        dep("managed", None, ""),
        dep("testonly", Some("1.0"), "<scope>test</scope>"),
        dep("provided", Some("1.0"), "<scope>provided</scope>"),
        dep("optional", Some("1.0"), "<optional>true</optional>"),
        dep("natives", Some("1.0"), "<classifier>linux</classifier>"),
        dep("second", Some("1.0"), ""),
    ));
    lib.jar(work, None, "Lib", "answer", "1");
    let util = module(&a, "util", "2.1");
    util.pom(&format!(
        "  <dependencies>\n{}{}  </dependencies>",
        dep("deep", Some("1.0"), ""),
        dep("excluded", Some("1.0"), "")
    ));
    util.jar(work, None, "Util", "answer", "2");
    // A util 1.0 too: only the parent's property picks 2.1.
    let old = module(&a, "util", "1.0");
    old.pom("");
    old.jar(work, None, "Util", "answer", "-1");
    let deep = module(&a, "deep", "1.0");
    deep.pom("");
    deep.jar(work, None, "Deep", "answer", "42");
    for (artifact, version) in [
        ("managed", "3.0"),
        ("testonly", "1.0"),
        ("provided", "1.0"),
        ("optional", "1.0"),
        ("excluded", "1.0"),
    ] {
        let m = module(&a, artifact, version);
        m.pom("");
        m.jar(work, None, "M", "answer", "0");
    }
    let natives = module(&a, "natives", "1.0");
    natives.pom("");
    natives.jar(work, Some("linux"), "Natives", "platform", "\"linux\"");
    let second = module(&b, "second", "1.0");
    second.pom("");
    second.jar(work, None, "Second", "answer", "7");
}

struct Fixture {
    spark: SparkHome,
    python: PathBuf,
    server: FerryServer,
    nginx: Nginx,
    work: tempfile::TempDir,
    token: PathBuf,
}

impl Fixture {
    fn start() -> Option<Self> {
        let spark = SparkHome::find()?;
        let python = require_tool("python with pyspark", "FERRY_TEST_PYTHON", &["python3"])?;
        require_tool("javac", "FERRY_TEST_JAVAC", &["javac"])?;
        require_tool("jar", "FERRY_TEST_JAR", &["jar"])?;
        let work = tempfile::tempdir().unwrap();
        let root = work.path().join("repos");
        build_repositories(&root, work.path());
        let nginx = Nginx::start(&root)?;
        let server = FerryServer::start();
        let token = work.path().join("upload-token");
        std::fs::write(&token, &server.token).unwrap();
        std::fs::create_dir_all(work.path().join("home")).unwrap();
        Some(Self {
            spark,
            python,
            server,
            nginx,
            work,
            token,
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    /// `ferry submit --dry-run --output json [ferry_args] -- spark-submit
    /// --master k8s://... --deploy-mode cluster [spark_args] job.py
    /// result.txt` (ferry delivers only for a cluster-mode `k8s://`
    /// submission; [`run_spark`] runs the command on `local[1]`).
    fn submit(&self, ferry_args: &[&str], spark_args: &[&str]) -> Output {
        let job = self.path("job.py");
        std::fs::write(&job, JOB).unwrap();
        let mut command = Command::new(bin("ferry"));
        command
            .args(["--server", &self.server.url, "--token-file"])
            .arg(&self.token)
            .args(["submit", "--dry-run", "--output", "json", "--deps-dir"])
            .arg(self.path("pod"))
            .arg("--template-dir")
            .arg(self.path("templates"))
            .args(ferry_args)
            .arg("--")
            .arg(&self.spark.spark_submit)
            .args([
                "--master",
                UNREACHABLE_K8S_MASTER,
                "--deploy-mode",
                "cluster",
            ])
            .args(["--conf", "spark.ui.enabled=false"])
            .args(spark_args)
            .arg(&job)
            .arg(self.path("result.txt"))
            .env("HOME", self.path("home"))
            .env("XDG_CACHE_HOME", self.path("cache"))
            .env("XDG_CONFIG_HOME", self.path("no-config"))
            .env("KUBECONFIG", self.path("no-kubeconfig"))
            .env("SPARK_HOME", &self.spark.spark_home)
            .env("JAVA_HOME", &self.spark.java_home)
            .env("DEFAULT_ARTIFACT_REPOSITORY", self.nginx.at("/a/"))
            .env("AWS_METADATA_ENDPOINT", "http://127.0.0.1:9");
        command.output().unwrap()
    }

    fn bundles(&self) -> usize {
        let api = ApiClient::new(&self.server.url, Some(&self.server.token));
        let list: Value = api
            .request(reqwest::Method::GET, "/v1/bundles")
            .send()
            .unwrap()
            .json()
            .unwrap();
        list["bundles"].as_array().map_or(0, Vec::len)
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn dry_run(output: &Output) -> Value {
    assert!(output.status.success(), "ferry submit: {}", stderr(output));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn command(dry: &Value) -> Vec<String> {
    serde_json::from_value(dry["command"].clone()).unwrap()
}

/// The file names on the `spark.jars` of a rewritten command.
fn class_path_jars(command: &[String]) -> BTreeSet<String> {
    command
        .iter()
        .filter_map(|a| a.strip_prefix("spark.jars="))
        .flat_map(|list| list.split(','))
        .map(|j| j.rsplit('/').next().unwrap_or_default().to_owned())
        .collect()
}

fn expected() -> BTreeSet<String> {
    EXPECTED.iter().map(|s| s.to_string()).collect()
}

/// Does the init container's work with the template's own arguments.
fn run_init(fixture: &Fixture, dry: &Value) {
    let secret: k8s_openapi::api::core::v1::Secret =
        serde_json::from_value(dry["secret"].clone()).unwrap();
    let pod: Pod = serde_yaml::from_str(
        &std::fs::read_to_string(fixture.path("templates/driver-pod-template.yaml")).unwrap(),
    )
    .unwrap();
    let init = pod.spec.unwrap().init_containers.unwrap();
    let init = init
        .iter()
        .find(|c| {
            c.args
                .as_ref()
                .is_some_and(|a| a.iter().any(|a| a == "--plan-json"))
        })
        .expect("ferry-init in the template");
    run_init_with(
        fixture,
        init.args.as_deref().unwrap(),
        &secret.string_data.unwrap()["token"],
    );
}

/// Runs ferry-init here with a pod's init container arguments, the token
/// Secret's file played by a file holding `token`.
fn run_init_with(fixture: &Fixture, args: &[String], token: &str) {
    let pod_token = fixture.path("pod-token");
    std::fs::write(&pod_token, token).unwrap();
    let args: Vec<String> = args
        .iter()
        .map(|a| {
            a.replace(
                "/var/run/secrets/ferry/token",
                &pod_token.display().to_string(),
            )
        })
        .collect();
    let output = Command::new(bin("ferry-init"))
        .args(&args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "ferry-init {args:?}: {}",
        stderr(&output)
    );
}

/// Runs a rewritten command on the local master.
fn run_spark(fixture: &Fixture, command: &[String]) -> String {
    std::fs::create_dir_all(fixture.path("spark-home")).unwrap();
    let command = spark_image::on_local_master(command);
    let mut spark = Command::new(&command[0]);
    spark
        .args(&command[1..])
        .current_dir(fixture.work.path())
        .env("HOME", fixture.path("spark-home"))
        .env("SPARK_HOME", &fixture.spark.spark_home)
        .env("JAVA_HOME", &fixture.spark.java_home)
        .env("SPARK_LOCAL_IP", "127.0.0.1")
        .env("SPARK_LOCAL_DIRS", fixture.path("spark-local"))
        .env("PYSPARK_PYTHON", &fixture.python)
        .env("PYSPARK_DRIVER_PYTHON", &fixture.python);
    let mut child = Child::spawn("spark-submit", spark, fixture.path("spark.log"));
    let status = child.wait_timeout(Duration::from_secs(240));
    let spark_log = child.log_text();
    assert!(
        status.is_some_and(|s| s.success()),
        "spark-submit {command:?} ({status:?}, killed after 240 s if None):\n{spark_log}"
    );
    std::fs::read_to_string(fixture.path("result.txt"))
        .unwrap_or_else(|e| panic!("no result ({e}):\n{spark_log}"))
}

#[test]
fn packages_are_resolved_staged_run_and_locked() {
    let Some(mut fixture) = Fixture::start() else {
        return;
    };
    let second = fixture.nginx.at("/b/");
    let lock = fixture.path("ferry.lock");
    let lock_arg = lock.display().to_string();
    let packages = [
        "--packages",
        "com.ex:app-lib:1.0",
        "--repositories",
        &second,
    ];

    // 1. Resolved with Spark's Ivy; the lock is written.
    let dry = dry_run(&fixture.submit(&["--lock", &lock_arg], &packages));
    let first_command = command(&dry);
    assert!(
        !first_command.iter().any(|a| a == "--packages"
            || a == "--repositories"
            || a.starts_with("spark.jars.packages")),
        "{first_command:?}"
    );
    assert_eq!(
        class_path_jars(&first_command),
        expected(),
        "{first_command:?}"
    );
    let locked: Value = serde_json::from_str(&std::fs::read_to_string(&lock).unwrap()).unwrap();
    assert_eq!(locked["version"], 1);
    assert_eq!(locked["request"]["packages"][0], "com.ex:app-lib:1.0");
    let artifacts = locked["artifacts"].as_array().unwrap();
    let files: BTreeSet<String> = artifacts
        .iter()
        .map(|a| a["file"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(files, expected());
    let by_file = |name: &str| {
        artifacts
            .iter()
            .find(|a| a["file"] == name)
            .unwrap_or_else(|| panic!("{name} in the lock"))
    };
    assert_eq!(by_file("com.ex_second-1.0.jar")["repository"], "repo-1");
    assert!(
        by_file("com.ex_second-1.0.jar")["url"]
            .as_str()
            .unwrap()
            .starts_with(&second)
    );
    let natives = by_file("com.ex_natives-1.0-linux.jar");
    assert_eq!(natives["classifier"], "linux");
    assert_eq!(natives["repository"], "central");
    let deep_jar = fixture
        .work
        .path()
        .join("repos/a/com/ex/deep/1.0/deep-1.0.jar");
    let deep_digest = Digest::of(&std::fs::read(&deep_jar).unwrap());
    assert_eq!(
        by_file("com.ex_deep-1.0.jar")["digest"],
        deep_digest.to_string()
    );
    assert_eq!(
        by_file("com.ex_deep-1.0.jar")["size"],
        std::fs::metadata(&deep_jar).unwrap().len()
    );

    // 2. The pod's part: ferry-init fetches exactly those jars, and Spark
    // runs code from the transitive dependency and the classifier jar.
    run_init(&fixture, &dry);
    let fetched: BTreeSet<String> = std::fs::read_dir(fixture.path("pod/jars"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(fetched, expected());
    assert_eq!(run_spark(&fixture, &first_command), "42 linux 10\n");

    // 3. With the lock and no repository at all, the same jars.
    fixture.nginx.kill();
    let again = fixture.submit(&["--lock", &lock_arg, "--locked"], &packages);
    let again_command = command(&dry_run(&again));
    assert!(
        stderr(&again).contains("from the lock"),
        "{}",
        stderr(&again)
    );
    assert_eq!(class_path_jars(&again_command), expected());

    // 4. A changed request under --locked fails and says what changed.
    let changed = fixture.submit(
        &["--lock", &lock_arg, "--locked"],
        &[
            "--packages",
            "com.ex:app-lib:1.0,com.ex:deep:1.0",
            "--repositories",
            &second,
        ],
    );
    assert!(!changed.status.success());
    let text = stderr(&changed);
    assert!(
        text.contains("no longer match") && text.contains("packages added: com.ex:deep:1.0"),
        "{text}"
    );

    // 5. A jar re-published with other bytes after locking is caught when
    // it has to be fetched again (no local copy left).
    fixture.nginx.restart();
    java_jar(
        fixture.work.path(),
        &deep_jar,
        "deep",
        "Deep",
        "answer",
        "43",
    );
    let altered = Digest::of(&std::fs::read(&deep_jar).unwrap());
    std::fs::remove_dir_all(fixture.path("cache")).unwrap();
    std::fs::remove_dir_all(fixture.path("home/.ivy2.5.2")).unwrap();
    let bundles = fixture.bundles();
    let caught = fixture.submit(&["--lock", &lock_arg], &packages);
    assert!(!caught.status.success());
    let text = stderr(&caught);
    assert!(
        text.contains(&deep_digest.to_string()) && text.contains(&altered.to_string()),
        "both digests named: {text}"
    );
    assert!(text.contains("com.ex:deep:1.0"), "{text}");
    assert_eq!(fixture.bundles(), bundles, "nothing staged");
}

/// `ferry apply` resolves a SparkApplication's `spec.deps.packages` the
/// way `ferry submit --packages` does (same Ivy, same lock, same cache):
/// the object comes back naming the resolved jars where ferry-init puts
/// them and no package list for the operator's spark-submit to resolve
/// again, and ferry-init, run with the driver template's arguments,
/// delivers each jar byte-identical to what the repository served.
#[test]
fn a_spark_applications_packages_are_resolved_once_and_delivered_as_jars() {
    let Some(fixture) = Fixture::start() else {
        return;
    };
    let second = fixture.nginx.at("/b/");
    std::fs::write(fixture.path("job.py"), JOB).unwrap();
    std::fs::write(
        fixture.path("app.yaml"),
        format!(
            "apiVersion: sparkoperator.k8s.io/v1beta2\nkind: SparkApplication\nmetadata: {{name: with-packages}}\nspec:\n  type: Python\n  mainApplicationFile: {}\n  deps:\n    packages: ['com.ex:app-lib:1.0']\n    repositories: ['{second}']\n  sparkConf:\n    spark.jars.packages: com.ex:ignored:9.9\n",
            fixture.path("job.py").display()
        ),
    )
    .unwrap();
    let lock = fixture.path("apply.lock");
    let output = Command::new(bin("ferry"))
        .args(["--server", &fixture.server.url, "--token-file"])
        .arg(&fixture.token)
        .args(["apply", "--dry-run", "--namespace", "jobs", "-f"])
        .arg(fixture.path("app.yaml"))
        .arg("--deps-dir")
        .arg(fixture.path("pod"))
        .arg("--lock")
        .arg(&lock)
        .env("HOME", fixture.path("home"))
        .env("XDG_CACHE_HOME", fixture.path("cache"))
        .env("XDG_CONFIG_HOME", fixture.path("no-config"))
        .env("KUBECONFIG", fixture.path("no-kubeconfig"))
        .env("SPARK_HOME", &fixture.spark.spark_home)
        .env("JAVA_HOME", &fixture.spark.java_home)
        .env("DEFAULT_ARTIFACT_REPOSITORY", fixture.nginx.at("/a/"))
        .env("AWS_METADATA_ENDPOINT", "http://127.0.0.1:9")
        .output()
        .unwrap();
    assert!(output.status.success(), "ferry apply: {}", stderr(&output));
    assert!(
        stderr(&output).contains("SparkApplication with-packages: 1 packages: 6 jars"),
        "{}",
        stderr(&output)
    );
    let documents: Vec<Value> =
        serde_yaml::Deserializer::from_str(&String::from_utf8_lossy(&output.stdout))
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .filter(|d: &Value| !d.is_null())
            .collect();
    let (app, secret) = (&documents[0], &documents[1]);
    let deps = &app["spec"]["deps"];
    assert!(
        deps.get("packages").is_none() && deps.get("repositories").is_none(),
        "{deps}"
    );
    assert_eq!(app["spec"]["sparkConf"]["spark.jars.packages"], "");
    let jars: Vec<&str> = deps["jars"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j.as_str().unwrap())
        .collect();
    let pod_jars = format!("local://{}/jars/", fixture.path("pod").display());
    assert!(jars.iter().all(|j| j.starts_with(&pod_jars)), "{jars:?}");
    let names: BTreeSet<String> = jars
        .iter()
        .map(|j| j.rsplit('/').next().unwrap().to_owned())
        .collect();
    assert_eq!(names, expected());
    let locked: Value = serde_json::from_str(&std::fs::read_to_string(&lock).unwrap()).unwrap();
    assert_eq!(locked["request"]["packages"][0], "com.ex:app-lib:1.0");

    // The pod's part, with the driver template's own arguments.
    let init = app["spec"]["driver"]["template"]["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "ferry-init")
        .expect("ferry-init in the driver template");
    let args: Vec<String> = serde_json::from_value(init["args"].clone()).unwrap();
    run_init_with(
        &fixture,
        &args,
        secret["stringData"]["token"].as_str().unwrap(),
    );
    let served = fixture.nginx.at("/");
    for artifact in locked["artifacts"].as_array().unwrap() {
        let url = artifact["url"].as_str().unwrap();
        let in_repo = fixture
            .work
            .path()
            .join("repos")
            .join(url.strip_prefix(&served).unwrap());
        let file = artifact["file"].as_str().unwrap();
        assert!(
            std::fs::read(fixture.path("pod/jars").join(file)).unwrap()
                == std::fs::read(&in_repo).unwrap(),
            "{file} delivered as served from {url}"
        );
    }
}

#[test]
fn resolution_errors_name_what_to_fix_and_stage_nothing() {
    let Some(fixture) = Fixture::start() else {
        return;
    };
    // A package no repository has: every repository of the chain is named.
    let missing = fixture.submit(&[], &["--packages", "com.ex:nope:9.9"]);
    assert!(!missing.status.success());
    let text = stderr(&missing);
    for expected in [
        "package com.ex:nope:9.9 was not found in any repository",
        "local-m2-cache: file:",
        "local-ivy-cache: ",
        &format!(
            "central: {}",
            fixture.nginx.at("/a/com/ex/nope/9.9/nope-9.9.pom")
        ),
        "spark-packages: ",
        "spark.jars.ivySettings",
    ] {
        assert!(text.contains(expected), "{expected:?} in:\n{text}");
    }

    // A repository that does not answer is named as unreachable.
    let dead = format!("http://127.0.0.1:{}/m2/", free_port());
    let unreachable = fixture.submit(
        &[],
        &["--packages", "com.ex:second:1.0", "--repositories", &dead],
    );
    assert!(!unreachable.status.success());
    let text = stderr(&unreachable);
    assert!(
        text.contains("package com.ex:second:1.0 was not found"),
        "{text}"
    );
    assert!(
        text.contains(&format!("repo-1: {dead}com/ex/second/1.0/second-1.0.pom")),
        "{text}"
    );
    assert!(
        text.contains("could not be reached") && text.contains("Connection refused"),
        "{text}"
    );

    // No Ivy in SPARK_HOME, no Java: said so, with the fix.
    let empty = fixture.path("not-spark");
    std::fs::create_dir_all(empty.join("jars")).unwrap();
    let without = |spark_home: &Path, java_home: &Path| {
        Command::new(bin("ferry"))
            .args(["--server", &fixture.server.url, "--token-file"])
            .arg(&fixture.token)
            .args(["submit", "--dry-run", "--", "spark-submit"])
            .args([
                "--master",
                UNREACHABLE_K8S_MASTER,
                "--deploy-mode",
                "cluster",
            ])
            .args(["--packages", "com.ex:deep:1.0", "app.py"])
            .env("HOME", fixture.path("home"))
            .env("DEFAULT_ARTIFACT_REPOSITORY", fixture.nginx.at("/a/"))
            .env("SPARK_HOME", spark_home)
            .env("JAVA_HOME", java_home)
            .output()
            .unwrap()
    };
    let no_ivy = without(&empty, &fixture.spark.java_home);
    let text = stderr(&no_ivy);
    assert!(
        text.contains("holds no ivy-*.jar") && text.contains("set SPARK_HOME"),
        "{text}"
    );
    let no_java = without(&fixture.spark.spark_home, &fixture.path("no-java"));
    let text = stderr(&no_java);
    assert!(
        text.contains("could not be started: install a Java runtime or set JAVA_HOME"),
        "{text}"
    );
    assert_eq!(fixture.bundles(), 0, "nothing staged");
}

/// The driver pod's job in cluster mode: prints what the packages' code says.
const POD_JOB: &str = r#"
from pyspark.sql import SparkSession

spark = SparkSession.builder.getOrCreate()
jvm = spark.sparkContext._jvm
print("ANSWER: %d %s" % (jvm.com.ex.deep.Deep.answer(), jvm.com.ex.natives.Natives.platform()), flush=True)
spark.stop()
"#;

/// Kubernetes mode: `ferry submit --deploy-mode cluster --packages` against
/// kmock (a FAKE Kubernetes API server, see `tests/src/kube_mock.rs`); the
/// driver pod Spark creates is run by the kubelet stand-in with ferry-init
/// from our image, and its spark-submit (no `--packages` left, nothing to
/// resolve) runs code from the transitive dependency and the classifier jar.
#[test]
fn packages_reach_a_cluster_mode_driver_pod_without_ivy_in_the_pod() {
    const NAMESPACE: &str = "spark";
    let Some(cluster) = Cluster::start(&["ferry-init"]) else {
        return;
    };
    let Some(spark) = SparkHome::find() else {
        return;
    };
    if require_tool("javac", "FERRY_TEST_JAVAC", &["javac"]).is_none() {
        return;
    }
    let root = cluster.path("repos");
    build_repositories(&root, cluster.work.path());
    let Some(nginx) = Nginx::start(&root) else {
        return;
    };
    let job = cluster.path("job.py");
    std::fs::write(&job, POD_JOB).unwrap();
    let stand_in = spark_image::stand_in(&spark, cluster.work.path(), "--master local[1]");
    let kubelet = cluster
        .kubelet
        .clone()
        .with_image(spark_image::IMAGE, stand_in);
    let mut args = spark.cluster_mode_args(&cluster.kube, NAMESPACE, "ferry-packages");
    args.extend([
        "--packages".into(),
        "com.ex:app-lib:1.0".into(),
        "--repositories".into(),
        nginx.at("/b/"),
        job.display().to_string(),
    ]);
    let options = [
        "--namespace",
        NAMESPACE,
        "--pod-server",
        &cluster.server.url,
    ];
    let mut command = cluster.ferry_submit(&options, &args, Some(&spark));
    command
        .env("DEFAULT_ARTIFACT_REPOSITORY", nginx.at("/a/"))
        .env("XDG_CACHE_HOME", cluster.path("cache"));
    let mut submit = Child::spawn("ferry submit", command, cluster.path("submit.log"));
    let driver = cluster
        .wait_for_pods(NAMESPACE, "spark-role=driver", 1, Duration::from_secs(180))
        .remove(0);
    let text = serde_json::to_string(&driver).unwrap();
    assert!(!text.contains("spark.jars.packages=com"), "{text}");
    let outcome = kubelet.run_pod(&driver, Duration::from_secs(240));
    let log = &outcome.container("spark-kubernetes-driver").log;
    assert!(
        log.contains("ANSWER: 42 linux"),
        "{}\ndriver log:\n{log}",
        outcome.describe()
    );
    assert!(outcome.succeeded(), "{}", outcome.describe());
    assert!(
        !log.contains(":: resolving dependencies ::"),
        "the pod ran Ivy:\n{log}"
    );
    assert_eq!(
        outcome.init("ferry-init").exit_code,
        Some(0),
        "ferry-init: {}",
        outcome.init("ferry-init").log
    );
    let status = submit.wait_timeout(Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| s.success()),
        "ferry submit: {}",
        submit.log_text()
    );
}
