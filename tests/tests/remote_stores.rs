//! `ferry submit` carries what Spark would use to reach remote
//! dependencies into ferry-init, and nothing secret into any manifest.
//!
//! Against real servers on loopback: two moto S3 servers (two endpoints in
//! one job), a ferry-server, kmock (a **fake** Kubernetes API server, see
//! `ferry_tests::kube_mock`) and the kubelet stand-in running the driver
//! pod's ferry-init from our image through podman. The pod's main container
//! is the host's `ls` playing the Spark image (a stand-in, see
//! `ferry_tests::kubelet`), listing what landed. Neither this test's
//! environment nor the pod's has AWS credentials: ferry-init reaches each
//! bucket with only what the pod spec carries, and every credential chain's
//! metadata address points at a closed loopback port.

use std::time::Duration;

use ferry_tests::azurite::{self, Azurite};
use ferry_tests::cluster::Cluster;
use ferry_tests::gcs::FakeGcs;
use ferry_tests::java::java_jar;
use ferry_tests::moto::Moto;
use ferry_tests::spark_image::{self, SparkHome};
use ferry_tests::{Child, require_tool};
use k8s_openapi::api::core::v1::{EnvVar, Pod};
use serde_json::{Value, json};

const NAMESPACE: &str = "spark";
const SECRET_A: &str = "inline-secret-for-bucket-a-4f1c";
const KEY_A: &str = "AKIDINLINEBUCKETA";
const SECRET_B: &str = "referenced-secret-for-bucket-b-9e2d";

/// A PySpark job calling, through the driver's JVM, a class that exists
/// only in the jar `--jars` names.
const PROBE_JOB: &str = r#"
from pyspark.sql import SparkSession
spark = SparkSession.builder.getOrCreate()
print("PROBE: %s" % spark.sparkContext._jvm.com.ex.probe.Probe.hello(), flush=True)
spark.stop()
"#;

/// A spark-submit that records its arguments and succeeds.
fn recording_spark_submit(dir: &std::path::Path) -> (String, std::path::PathBuf) {
    let record = dir.join("spark-submit.args");
    let script = dir.join("spark-submit");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > '{}'\n",
            record.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script.display().to_string(), record)
}

#[test]
fn s3a_settings_and_secret_refs_reach_ferry_init_in_the_pod_and_no_secret_is_written() {
    let (Some(a), Some(b)) = (Moto::start(), Moto::start()) else {
        return;
    };
    let Some(cluster) = Cluster::start(&["ferry-init"]) else {
        return;
    };
    a.create_bucket("jars-a");
    b.create_bucket("jars-b");
    let jar_a = cluster.path("a.jar");
    let jar_b = cluster.path("b.jar");
    std::fs::write(&jar_a, b"jar a from endpoint a").unwrap();
    std::fs::write(&jar_b, b"jar b from endpoint b").unwrap();
    a.put_object("jars-a", "lib/a.jar", &jar_a);
    b.put_object("jars-b", "b.jar", &jar_b);
    // Bucket b's keys live in the user's own Secret, as Spark users pass them.
    cluster.kube.client().create(
        NAMESPACE,
        "secrets",
        &json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "aws-b", "namespace": NAMESPACE},
            "stringData": {"key": "AKIDREFERENCEDB", "secret": SECRET_B},
        }),
    );
    std::fs::write(cluster.path("app.jar"), b"app").unwrap();
    let (script, record) = recording_spark_submit(cluster.work.path());
    let conf = |s: String| ["--conf".to_owned(), s];
    let mut spark_submit = vec![
        script,
        "--master".into(),
        format!("k8s://{}", cluster.kube.url),
        "--deploy-mode".into(),
        "cluster".into(),
        "--jars".into(),
        "s3a://jars-a/lib/a.jar,s3a://jars-b/b.jar,s3a://vault/c.jar".into(),
    ];
    for setting in [
        format!("spark.hadoop.fs.s3a.bucket.jars-a.endpoint={}", a.endpoint),
        format!("spark.hadoop.fs.s3a.bucket.jars-b.endpoint={}", b.endpoint),
        "spark.hadoop.fs.s3a.path.style.access=true".into(),
        format!("spark.hadoop.fs.s3a.bucket.jars-a.access.key={KEY_A}"),
        format!("spark.hadoop.fs.s3a.bucket.jars-a.secret.key={SECRET_A}"),
        "spark.kubernetes.driver.secretKeyRef.AWS_ACCESS_KEY_ID=aws-b:key".into(),
        "spark.kubernetes.driver.secretKeyRef.AWS_SECRET_ACCESS_KEY=aws-b:secret".into(),
        "spark.hadoop.fs.s3a.bucket.vault.aws.credentials.provider=org.apache.hadoop.fs.s3a.auth.AssumedRoleCredentialProvider".into(),
    ] {
        spark_submit.extend(conf(setting));
    }
    spark_submit.push("app.jar".into());
    let templates = cluster.path("templates");
    let submit =
        |extra: &[&str]| submit_writing_templates(&cluster, &spark_submit, &templates, extra);

    // The dry run shows the carried key redacted, in the Secret and the command.
    let dry = submit(&["--dry-run", "--output", "json"]);
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    let dry_out = String::from_utf8_lossy(&dry.stdout).into_owned();
    let dry_json: Value = serde_json::from_str(&dry_out).unwrap();
    assert_eq!(
        dry_json["secret"]["stringData"]["spark.hadoop.fs.s3a.bucket.jars-a.secret.key"],
        "<redacted>"
    );

    let run = submit(&[]);
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(run.status.success(), "ferry submit: {stderr}");
    let notices: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("ferry: leaving "))
        .collect();
    assert_eq!(notices.len(), 1, "{stderr}");
    assert!(
        notices[0].starts_with("ferry: leaving s3a://vault/c.jar to Spark: ")
            && notices[0].contains("AssumedRoleCredentialProvider"),
        "{stderr}"
    );
    let command = std::fs::read_to_string(&record).unwrap();
    assert!(
        command.contains(
            "local:///var/ferry/jars/a.jar,local:///var/ferry/jars/b.jar,s3a://vault/c.jar"
        ),
        "the uncarriable jar stays Spark's: {command}"
    );

    let driver_yaml = std::fs::read_to_string(templates.join("driver-pod-template.yaml")).unwrap();
    let executor_yaml =
        std::fs::read_to_string(templates.join("executor-pod-template.yaml")).unwrap();
    for (what, text) in [
        ("the dry run", dry_out.as_str()),
        ("the dry run's log", &String::from_utf8_lossy(&dry.stderr)),
        ("ferry's log", stderr.as_str()),
        ("the driver template", driver_yaml.as_str()),
        ("the executor template", executor_yaml.as_str()),
    ] {
        for secret in [SECRET_A, SECRET_B, KEY_A] {
            assert!(!text.contains(secret), "{what} shows {secret}:\n{text}");
        }
    }

    // The driver pod as Spark would make it from the template.
    let mut pod: Pod = serde_yaml::from_str(&driver_yaml).unwrap();
    pod.metadata.name = Some("driver".into());
    let outcome = run_listing_jars(&cluster, pod);
    assert!(outcome.succeeded(), "{}", outcome.describe());
    let listed = &outcome.containers[0].log;
    let names: Vec<&str> = listed.split_whitespace().collect();
    assert!(
        names.contains(&"a.jar") && names.contains(&"b.jar") && !names.contains(&"c.jar"),
        "{}",
        outcome.describe()
    );
    let log = outcome.describe();
    for secret in [SECRET_A, SECRET_B, KEY_A] {
        assert!(
            !log.contains(secret),
            "the pod's logs show {secret}:\n{log}"
        );
    }
}

/// Azure and GCS the way Spark users reach them: an `abfss://` jar with
/// the account key as an inline `spark.hadoop.fs.azure.account.key.*`
/// conf (Azurite, reached through the emulator variables given as
/// `spark.kubernetes.driverEnv.*`), and a `gs://` jar with
/// `google.cloud.auth.service.account.json.keyfile` naming a key file in
/// a Secret mounted with `spark.kubernetes.driver.secrets.*`
/// (fake-gcs-server; the key file is object_store's format pointing at the
/// emulator with OAuth off, since no token service runs here). The driver
/// pod from the template fetches both with nothing else; the account key
/// is in no template, log or dry run.
#[test]
fn azure_key_and_gcs_key_file_settings_reach_ferry_init_in_the_pod() {
    let Some(azurite) = Azurite::start() else {
        return;
    };
    let Some(gcs) = FakeGcs::start(&[("gdeps", "lib/g.jar", b"jar g from fake-gcs")]) else {
        return;
    };
    let Some(cluster) = Cluster::start(&["ferry-init"]) else {
        return;
    };
    azurite.create_container("adeps");
    let jar = cluster.path("az.jar");
    std::fs::write(&jar, b"jar az from azurite").unwrap();
    azurite.put_blob("adeps", "lib/az.jar", &jar);
    cluster.kube.client().create(
        NAMESPACE,
        "secrets",
        &json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "gcp-key", "namespace": NAMESPACE},
            "stringData": {"key.json": std::fs::read_to_string(&gcs.service_account).unwrap()},
        }),
    );
    std::fs::write(cluster.path("app.jar"), b"app").unwrap();
    let (script, _record) = recording_spark_submit(cluster.work.path());
    let host = format!("{}.dfs.core.windows.net", azurite::ACCOUNT);
    let mut spark_submit = vec![
        script,
        "--master".into(),
        format!("k8s://{}", cluster.kube.url),
        "--deploy-mode".into(),
        "cluster".into(),
        "--jars".into(),
        format!("abfss://adeps@{host}/lib/az.jar,gs://gdeps/lib/g.jar"),
    ];
    for setting in [
        format!("spark.hadoop.fs.azure.account.key.{host}={}", azurite::KEY),
        "spark.kubernetes.driverEnv.AZURE_STORAGE_USE_EMULATOR=true".into(),
        format!(
            "spark.kubernetes.driverEnv.AZURITE_BLOB_STORAGE_URL={}",
            azurite.endpoint
        ),
        "spark.kubernetes.driver.secrets.gcp-key=/mnt/gcp".into(),
        "spark.hadoop.google.cloud.auth.service.account.json.keyfile=/mnt/gcp/key.json".into(),
    ] {
        spark_submit.extend(["--conf".to_owned(), setting]);
    }
    spark_submit.push("app.jar".into());
    let templates = cluster.path("templates");
    let submit =
        |extra: &[&str]| submit_writing_templates(&cluster, &spark_submit, &templates, extra);
    let dry = submit(&["--dry-run", "--output", "json"]);
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    let run = submit(&[]);
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(run.status.success(), "ferry submit: {stderr}");
    assert!(!stderr.contains("ferry: leaving "), "{stderr}");

    let driver_yaml = std::fs::read_to_string(templates.join("driver-pod-template.yaml")).unwrap();
    for (what, text) in [
        (
            "the dry run",
            String::from_utf8_lossy(&dry.stdout).into_owned(),
        ),
        (
            "the dry run's log",
            String::from_utf8_lossy(&dry.stderr).into_owned(),
        ),
        ("ferry's log", stderr.clone()),
        ("the driver template", driver_yaml.clone()),
    ] {
        assert!(
            !text.contains(azurite::KEY),
            "{what} shows the account key:\n{text}"
        );
    }
    let mut pod: Pod = serde_yaml::from_str(&driver_yaml).unwrap();
    pod.metadata.name = Some("driver".into());
    let outcome = run_listing_jars(&cluster, pod);
    assert!(outcome.succeeded(), "{}", outcome.describe());
    let names: Vec<&str> = outcome.containers[0].log.split_whitespace().collect();
    assert!(
        names.contains(&"az.jar") && names.contains(&"g.jar"),
        "{}",
        outcome.describe()
    );
    assert!(
        !outcome.describe().contains(azurite::KEY),
        "{}",
        outcome.describe()
    );
}

/// `ferry apply` carries the same from a SparkApplication: its
/// `spec.hadoopConf` (as `spark.hadoop.*`) and `spec.sparkConf` reach the
/// driver's ferry-init, the inline key through the token Secret applied
/// with the object; a dependency whose credentials ferry cannot carry stays
/// in the object for Spark, with a notice. The driver pod is built from
/// the applied object's template, as the operator would build it.
#[test]
fn a_spark_applications_hadoop_conf_reaches_ferry_init_in_the_driver_pod() {
    let Some(a) = Moto::start() else {
        return;
    };
    let Some(cluster) = Cluster::start(&["ferry-init"]) else {
        return;
    };
    a.create_bucket("jars-a");
    let jar_a = cluster.path("a.jar");
    std::fs::write(&jar_a, b"jar a, reached with hadoopConf").unwrap();
    a.put_object("jars-a", "lib/a.jar", &jar_a);
    std::fs::write(cluster.path("app.jar"), b"app").unwrap();
    let secret_setting = "spark.hadoop.fs.s3a.bucket.jars-a.secret.key";
    std::fs::write(
        cluster.path("app.yaml"),
        format!(
            "apiVersion: sparkoperator.k8s.io/v1beta2
kind: SparkApplication
metadata: {{name: carried, namespace: {NAMESPACE}}}
spec:
  type: Scala
  mainApplicationFile: app.jar
  deps:
    jars: ['s3a://jars-a/lib/a.jar', 's3a://vault/c.jar']
  hadoopConf:
    fs.s3a.bucket.jars-a.endpoint: {endpoint}
    fs.s3a.path.style.access: 'true'
    fs.s3a.bucket.jars-a.access.key: {KEY_A}
    fs.s3a.bucket.jars-a.secret.key: {SECRET_A}
  sparkConf:
    spark.hadoop.fs.s3a.bucket.vault.aws.credentials.provider: org.apache.hadoop.fs.s3a.auth.AssumedRoleCredentialProvider
",
            endpoint = a.endpoint
        ),
    )
    .unwrap();
    let apply = |extra: &[&str]| {
        let mut command = ferry_tests::cluster::ferry_in(
            &cluster.server,
            &cluster.upload_token,
            cluster.work.path(),
            &cluster.kube,
        );
        command
            .args([
                "apply",
                "-f",
                "app.yaml",
                "--pod-server",
                &cluster.server.url,
            ])
            .args(extra);
        command.output().unwrap()
    };

    let dry = apply(&["--dry-run"]);
    let dry_err = String::from_utf8_lossy(&dry.stderr).into_owned();
    assert!(dry.status.success(), "{dry_err}");
    let dry_out = String::from_utf8_lossy(&dry.stdout).into_owned();
    let documents: Vec<Value> = serde_yaml::Deserializer::from_str(&dry_out)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|d: &Value| !d.is_null())
        .collect();
    assert_eq!(
        documents[1]["stringData"][secret_setting], "<redacted>",
        "{dry_out}"
    );

    let run = apply(&[]);
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(run.status.success(), "ferry apply: {stderr}");
    assert!(
        stderr.contains("ferry: leaving s3a://vault/c.jar to Spark: "),
        "{stderr}"
    );
    for (what, text) in [
        ("the dry run", dry_out.as_str()),
        ("the dry run's log", dry_err.as_str()),
        ("ferry's log", stderr.as_str()),
    ] {
        assert!(!text.contains(SECRET_A), "{what} shows the key:\n{text}");
    }
    let app = cluster
        .kube
        .client()
        .get(&format!(
            "/apis/sparkoperator.k8s.io/v1beta2/namespaces/{NAMESPACE}/sparkapplications/carried"
        ))
        .expect("applied");
    let jars: Vec<&str> = app["spec"]["deps"]["jars"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j.as_str().unwrap())
        .collect();
    assert_eq!(jars, ["local:///var/ferry/jars/a.jar", "s3a://vault/c.jar"]);
    let template = &app["spec"]["driver"]["template"]["spec"];
    assert!(
        !template.to_string().contains(SECRET_A),
        "the applied template shows the key: {template}"
    );

    // The driver pod as the operator would make it from the template.
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "carried-driver", "namespace": NAMESPACE},
        "spec": template,
    }))
    .unwrap();
    let outcome = run_listing_jars(&cluster, pod);
    assert!(outcome.succeeded(), "{}", outcome.describe());
    let names: Vec<&str> = outcome.containers[0].log.split_whitespace().collect();
    assert_eq!(names, ["a.jar"], "{}", outcome.describe());
    assert!(!outcome.describe().contains(SECRET_A));
}

/// `ferry submit` (with `extra` options) of `spark_submit` in
/// `NAMESPACE`, writing its pod templates into `templates`.
fn submit_writing_templates(
    cluster: &Cluster,
    spark_submit: &[String],
    templates: &std::path::Path,
    extra: &[&str],
) -> std::process::Output {
    let templates = templates.display().to_string();
    let mut options = vec![
        "--namespace",
        NAMESPACE,
        "--pod-server",
        &cluster.server.url,
        "--template-dir",
        &templates,
    ];
    options.extend_from_slice(extra);
    cluster
        .ferry_submit(&options, spark_submit, None)
        .output()
        .unwrap()
}

/// Runs the driver `pod` (from a template) with the kubelet stand-in, its
/// main container listing `/var/ferry/jars`, every cloud metadata address
/// of its ferry-init on a closed loopback port.
fn run_listing_jars(cluster: &Cluster, mut pod: Pod) -> ferry_tests::kubelet::PodOutcome {
    let spec = pod.spec.as_mut().unwrap();
    let main = &mut spec.containers[0];
    main.image = Some(spark_image::IMAGE.into());
    main.command = Some(vec!["ls".into(), "/var/ferry/jars".into()]);
    let init = spec
        .init_containers
        .iter_mut()
        .flatten()
        .find(|c| c.name == "ferry-init")
        .unwrap();
    // Not a credential: every metadata service on a closed loopback port.
    init.env.get_or_insert_with(Vec::new).extend(
        ferry_tests::metadata_on_loopback()
            .into_iter()
            .map(|(name, value)| EnvVar {
                name,
                value: Some(value),
                ..Default::default()
            }),
    );
    let pod = cluster.store_pod(NAMESPACE, &pod);
    cluster
        .lister_kubelet()
        .run_pod(&pod, Duration::from_secs(120))
}

/// Spark itself, end to end, with a jar that exists only in a bucket
/// (moto) reachable only through the endpoint and keys the user gave
/// Spark: `ferry submit -- spark-submit --deploy-mode cluster --jars
/// s3a://...` against kmock (a fake API server); the driver pod Spark
/// created is run by the kubelet stand-in (ferry-init from our image, then
/// the driver's command with pyspark's distribution playing the Spark
/// image, master `local[1]`), and the job calls a class from that jar.
#[test]
fn spark_calls_a_class_from_an_s3a_jar_that_ferry_init_delivered() {
    let Some(moto) = Moto::start() else {
        return;
    };
    let Some(cluster) = Cluster::start(&["ferry-init"]) else {
        return;
    };
    let Some(spark) = SparkHome::find() else {
        return;
    };
    if require_tool("javac", "FERRY_TEST_JAVAC", &["javac"]).is_none() {
        return;
    }
    moto.create_bucket("libs");
    let jar = cluster.path("probe.jar");
    java_jar(
        cluster.work.path(),
        &jar,
        "probe",
        "Probe",
        "hello",
        "\"hello from the s3a jar\"",
    );
    moto.put_object("libs", "spark/probe.jar", &jar);
    std::fs::remove_file(&jar).unwrap();
    let job = cluster.path("probe_job.py");
    std::fs::write(&job, PROBE_JOB).unwrap();

    let mut args = spark.cluster_mode_args(&cluster.kube, NAMESPACE, "s3a-probe");
    for setting in [
        format!("spark.hadoop.fs.s3a.endpoint={}", moto.endpoint),
        "spark.hadoop.fs.s3a.path.style.access=true".into(),
        format!("spark.hadoop.fs.s3a.access.key={KEY_A}"),
        format!("spark.hadoop.fs.s3a.secret.key={SECRET_A}"),
    ] {
        args.extend(["--conf".to_owned(), setting]);
    }
    args.extend([
        "--jars".into(),
        "s3a://libs/spark/probe.jar".into(),
        job.display().to_string(),
    ]);
    let options = [
        "--namespace",
        NAMESPACE,
        "--pod-server",
        &cluster.server.url,
    ];
    let command = cluster.ferry_submit(&options, &args, Some(&spark));
    let mut submit = Child::spawn("ferry submit", command, cluster.path("submit.log"));
    let driver = cluster
        .wait_for_pods(NAMESPACE, "spark-role=driver", 1, Duration::from_secs(120))
        .remove(0);
    let spec = serde_json::to_string(&driver).unwrap();
    assert!(
        !spec.contains(SECRET_A),
        "the inline secret key is in the pod spec"
    );

    let stand_in = spark_image::stand_in(&spark, cluster.work.path(), "--master local[1]");
    let kubelet = cluster
        .kubelet
        .clone()
        .with_image(spark_image::IMAGE, stand_in);
    let outcome = kubelet.run_pod(&driver, Duration::from_secs(240));
    assert!(outcome.succeeded(), "{}", outcome.describe());
    let init = &outcome.init("ferry-init").log;
    assert!(init.contains("s3a://libs/spark/probe.jar"), "{init}");
    let log = &outcome.container("spark-kubernetes-driver").log;
    assert!(log.contains("PROBE: hello from the s3a jar"), "{log}");
    let status = submit
        .wait_timeout(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("ferry submit still running:\n{}", submit.log_text()));
    assert!(status.success(), "ferry submit: {}", submit.log_text());
}
