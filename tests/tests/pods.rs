//! Real images in pods run as a kubelet would, and Spark in cluster mode end
//! to end.
//!
//! - The images are the ones `deploy/images/build.sh` builds here with
//!   buildah (`tests/run.sh` does, before the tests); they are checked
//!   against their Dockerfiles and then run with podman.
//! - The Kubernetes API server is **kmock, a fake** (`ferry_tests::kube_mock`:
//!   an in-memory object store taught server-side apply, WebSocket watches
//!   and label selectors so Spark's fabric8 client works against it). Pods
//!   are run by the **kubelet stand-in** (`ferry_tests::kubelet`), not a
//!   kubelet: volumes, init containers, users, read-only roots, termination
//!   messages and pod status as a kubelet does them, every pod on the host
//!   network.
//! - The Spark image is not available here: Spark's containers run with
//!   pyspark's distribution from the host's file system
//!   (`ferry_tests::spark_image`), with the pods' own arguments, env and
//!   mounts. ferry's own containers run from the built images.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ferry_tests::api::{ApiClient, read_status, start_partial_put};
use ferry_tests::cluster::Cluster;
use ferry_tests::dockerfile::parse_dockerfile;
use ferry_tests::kube_mock::KubeMock;
use ferry_tests::kubelet::{Kubelet, PodOutcome, probe_passes};
use ferry_tests::podman::{Podman, ferry_image};
use ferry_tests::relay::CountingRelay;
use ferry_tests::spark_image::{self, SparkHome};
use ferry_tests::{Child, free_port, require_tool, wait_until, workspace_root};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize as _;
use serde_json::{Value, json};

const NAMESPACE: &str = "spark";

// ---------------------------------------------------------------------------
// Shared pieces

/// Starts `ferry submit -- spark-submit --deploy-mode cluster ...` for the
/// job in `job` (`extra` spark-submit options) and returns it running, with
/// the driver pod Spark created in the API.
fn submit_spark(
    cluster: &Cluster,
    spark: &SparkHome,
    job: &Path,
    extra: &[String],
) -> (Child, Pod) {
    let path = |name: &str| job.join(name).display().to_string();
    let mut args = spark.cluster_mode_args(&cluster.kube, NAMESPACE, "ferry-pods");
    args.extend(extra.iter().cloned());
    args.extend([
        "--jars".into(),
        path("dep.jar"),
        "--py-files".into(),
        path("scoring.py"),
        "--files".into(),
        path("data 1.csv"),
        path("job.py"),
        // Where ferry-init puts the --files entry in every pod.
        "/var/ferry/files/data 1.csv".into(),
    ]);
    let options = [
        "--namespace",
        NAMESPACE,
        "--pod-server",
        &cluster.server.url,
    ];
    let command = cluster.ferry_submit(&options, &args, Some(spark));
    let submit = Child::spawn("ferry submit", command, cluster.path("submit.log"));
    let driver = cluster
        .wait_for_pods(NAMESPACE, "spark-role=driver", 1, Duration::from_secs(120))
        .remove(0);
    (submit, driver)
}

/// A PySpark job: reads the staged `--files` entry where ferry-init put it,
/// scores each row with the staged `--py-files` module on the executors
/// (or the local master) and prints the result, where tasks ran and the
/// driver JVM's class path (client mode checks the user's jar is on it).
const JOB: &str = r#"
import sys
from pyspark.sql import SparkSession
import scoring

spark = SparkSession.builder.getOrCreate()
sc = spark.sparkContext
print("DRIVER CLASSPATH: %s" % sc._jvm.java.lang.System.getProperty("java.class.path"), flush=True)
with open(sys.argv[1]) as f:
    lines = [l for l in f.read().splitlines() if l]
def where(rows):
    import socket, os
    yield (os.environ.get("SPARK_EXECUTOR_POD_NAME", "driver"), sum(1 for _ in rows))
rdd = sc.parallelize(lines, 4)
total = rdd.map(scoring.score).sum()
placed = sorted(rdd.mapPartitions(where).collect())
print("RESULT: %d rows, score %d" % (len(lines), total), flush=True)
print("PLACED: %s" % placed, flush=True)
spark.stop()
"#;

const SCORING: &str = "def score(line):\n    return int(line.split(',')[1]) * 2\n";

/// The job's files in `dir`: the job, its module, a data file (its name has
/// a space) and a jar of `jar_size` bytes (a real zip, so a class loader
/// may open it). Returns the jar's path.
fn write_job(dir: &Path, jar_size: usize) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("job.py"), JOB).unwrap();
    std::fs::write(dir.join("scoring.py"), SCORING).unwrap();
    let rows: Vec<String> = (1..=50).map(|i| format!("row{i},{i}")).collect();
    std::fs::write(dir.join("data 1.csv"), rows.join("\n") + "\n").unwrap();
    let jar = dir.join("dep.jar");
    write_jar(&jar, jar_size);
    jar
}

/// A stored (uncompressed) zip holding one pseudo-random entry.
fn write_jar(path: &Path, size: usize) {
    let data = ferry_tests::pseudo_random_bytes(17, size);
    let name = b"ferry/payload.bin";
    let crc = crc32(&data);
    let size32 = u32::try_from(size).expect("jar under 4 GiB");
    let mut zip = Vec::with_capacity(size + 200);
    let header = |zip: &mut Vec<u8>, central: bool| {
        zip.extend_from_slice(if central {
            b"PK\x01\x02"
        } else {
            b"PK\x03\x04"
        });
        if central {
            zip.extend_from_slice(&20u16.to_le_bytes()); // made by
        }
        zip.extend_from_slice(&20u16.to_le_bytes()); // needed
        zip.extend_from_slice(&0u16.to_le_bytes()); // flags
        zip.extend_from_slice(&0u16.to_le_bytes()); // stored
        zip.extend_from_slice(&0u32.to_le_bytes()); // time, date
        zip.extend_from_slice(&crc.to_le_bytes());
        zip.extend_from_slice(&size32.to_le_bytes());
        zip.extend_from_slice(&size32.to_le_bytes());
        zip.extend_from_slice(&u16::try_from(name.len()).unwrap().to_le_bytes());
        zip.extend_from_slice(&0u16.to_le_bytes()); // extra
        if central {
            zip.extend_from_slice(&[0u8; 12]); // comment, disk, attrs
            zip.extend_from_slice(&0u32.to_le_bytes()); // local header offset
        }
        zip.extend_from_slice(name);
    };
    header(&mut zip, false);
    zip.extend_from_slice(&data);
    let central_at = u32::try_from(zip.len()).unwrap();
    header(&mut zip, true);
    let central_len = u32::try_from(zip.len()).unwrap() - central_at;
    zip.extend_from_slice(b"PK\x05\x06");
    zip.extend_from_slice(&[0u8; 4]);
    zip.extend_from_slice(&1u16.to_le_bytes());
    zip.extend_from_slice(&1u16.to_le_bytes());
    zip.extend_from_slice(&central_len.to_le_bytes());
    zip.extend_from_slice(&central_at.to_le_bytes());
    zip.extend_from_slice(&0u16.to_le_bytes());
    std::fs::write(path, zip).unwrap();
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The job's result is right (its `RESULT:` line in the driver's `log`),
/// two executors ran, each ran tasks (its pod name is in the `PLACED:`
/// line), its ferry-init delivered, and it loaded `dep.jar` from its own
/// `/var/ferry/jars`, never from the driver (`spark://.../jars/`).
fn assert_job_ran_on_executors(log: &str, executors: &[PodOutcome], described: &str) {
    let score: i64 = (1..=50).map(|i| i * 2).sum();
    assert!(
        log.contains(&format!("RESULT: 50 rows, score {score}")),
        "{log}\n{described}"
    );
    assert_eq!(executors.len(), 2, "two executor pods ran:\n{described}");
    let placed = log
        .lines()
        .find_map(|l| l.strip_prefix("PLACED: "))
        .unwrap_or_default();
    for executor in executors {
        assert!(
            placed.contains(&executor.name),
            "no task ran on {} ({placed}):\n{described}",
            executor.name
        );
        let init = executor.init("ferry-init");
        assert!(
            init.succeeded() && init.log.contains("items in place"),
            "{described}"
        );
        let main = &executor.containers[0].log;
        assert!(
            main.contains("file:/var/ferry/jars/dep.jar"),
            "{}: {main}",
            executor.name
        );
        assert!(
            !main
                .lines()
                .any(|l| l.contains("spark://") && l.contains("/jars/")),
            "{}: fetched a jar from the driver: {main}",
            executor.name
        );
    }
}

/// Waits for a spawned command; its exit status and output.
fn wait_child(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    child.wait_timeout(limit).unwrap_or_else(|| {
        panic!(
            "{} still running after {limit:?}:\n{}",
            child.name,
            child.log_text()
        )
    })
}

fn assert_pod_ok(outcome: &PodOutcome) {
    assert!(outcome.succeeded(), "{}", outcome.describe());
}

/// Asserts that container `name` (init or main) of `outcome` logged `needle`.
fn assert_logged(outcome: &PodOutcome, name: &str, needle: &str) {
    let log = outcome
        .init
        .iter()
        .chain(&outcome.containers)
        .find(|c| c.name == name)
        .map_or("", |c| c.log.as_str());
    assert!(
        log.contains(needle),
        "{name} did not log {needle:?}:\n{}",
        outcome.describe()
    );
}

// ---------------------------------------------------------------------------
// Images

/// The built images have the layout their Dockerfiles describe: the same
/// user, entrypoint, working dir, env, ports and labels in the config, every
/// file the Dockerfile copies at its place with its owner, and in place of
/// the distroless base exactly what the binaries need: passwd/group with
/// uid 65532, the CA bundle, /tmp, and every shared library the binary
/// loads. An OCI archive for skopeo holds the same config.
#[test]
fn built_images_have_the_layout_their_dockerfiles_describe() {
    let names = ["ferry-server", "ferry-init", "ferry"];
    let Some(podman) = Podman::with_ferry_images(&names) else {
        return;
    };
    for name in names {
        let image = ferry_image(name);
        let dockerfile = workspace_root().join(format!("deploy/docker/{name}.Dockerfile"));
        let stages = parse_dockerfile(&std::fs::read_to_string(&dockerfile).unwrap());
        let expected = stages.last().unwrap().layout();
        let inspect = podman.inspect_image(&image);
        let config = &inspect["Config"];
        assert_eq!(config["User"], expected.user.as_str(), "{name}: USER");
        assert_eq!(
            config["Entrypoint"],
            json!(expected.entrypoint),
            "{name}: ENTRYPOINT"
        );
        assert_eq!(
            config["WorkingDir"]
                .as_str()
                .filter(|d| !d.is_empty() && *d != "/"),
            expected.working_dir.as_deref(),
            "{name}: WORKDIR"
        );
        let env: BTreeMap<String, String> = config["Env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e.as_str()?.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .filter(|(k, _)| k != "PATH")
            .collect();
        assert_eq!(env, expected.env, "{name}: ENV");
        let mut exposed: Vec<String> = config["ExposedPorts"]
            .as_object()
            .map(|ports| ports.keys().cloned().collect())
            .unwrap_or_default();
        exposed.sort();
        assert_eq!(exposed, expected.exposed, "{name}: EXPOSE");
        let labels: BTreeMap<String, String> =
            serde_json::from_value(config["Labels"].clone()).unwrap_or_default();
        assert_eq!(labels, expected.labels, "{name}: LABEL");
        assert_eq!(
            expected.labels["org.opencontainers.image.version"],
            env!("CARGO_PKG_VERSION"),
            "{name}: the Dockerfile's VERSION default follows the workspace"
        );

        let root = podman.mount_image(&image);
        let files = tree(&root);
        let entrypoint = &expected.entrypoint[0];
        // The loader and libraries the image's own binary names (whichever
        // build build.sh was given), and nothing else.
        let libraries = libraries_of(&root.join(entrypoint.trim_start_matches('/')));
        podman.unmount_image(&image);
        let mut base: BTreeSet<String> = [
            "/etc",
            "/etc/passwd",
            "/etc/group",
            "/etc/nsswitch.conf",
            "/etc/ssl",
            "/etc/ssl/certs",
            "/etc/ssl/certs/ca-certificates.crt",
            "/tmp",
            "/home",
            "/home/nonroot",
            "/var",
            "/var/lib",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        for (dest, chown) in &expected.copied {
            let (uid, gid, _) = files
                .get(dest)
                .unwrap_or_else(|| panic!("{name}: {dest} is not in the image"));
            let want = chown.as_deref().unwrap_or("0:0");
            assert_eq!(format!("{uid}:{gid}"), want, "{name}: owner of {dest}");
            for ancestor in Path::new(dest).ancestors().skip(1) {
                base.insert(ancestor.display().to_string());
            }
            base.insert(dest.clone());
        }
        assert_eq!(
            files[entrypoint].2 & 0o111,
            0o111,
            "{name}: {entrypoint} is executable"
        );
        for lib in &libraries {
            assert!(
                files.contains_key(lib),
                "{name}: {lib} (from ldd) is missing"
            );
            for ancestor in Path::new(lib).ancestors() {
                base.insert(ancestor.display().to_string());
            }
        }
        base.remove("/");
        let present: BTreeSet<String> = files.keys().cloned().collect();
        assert_eq!(present, base, "{name}: the image's files");
        assert_eq!(files["/tmp"].2 & 0o7777, 0o1777, "{name}: /tmp");
        assert_eq!(files["/home/nonroot"].0, 65532, "{name}: nonroot's home");
    }
    for name in names {
        let root = podman.mount_image(&ferry_image(name));
        let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
        let group = std::fs::read_to_string(root.join("etc/group")).unwrap();
        let certs =
            std::fs::read_to_string(root.join("etc/ssl/certs/ca-certificates.crt")).unwrap();
        podman.unmount_image(&ferry_image(name));
        assert!(
            passwd
                .lines()
                .any(|l| l.starts_with("nonroot:x:65532:65532:")),
            "{passwd}"
        );
        assert!(group.lines().any(|l| l == "nonroot:x:65532:"), "{group}");
        assert!(
            certs.matches("BEGIN CERTIFICATE").count() > 50,
            "{name}: a CA bundle"
        );
    }

    // The OCI archive an operator pushes with skopeo carries the same image.
    let Some(buildah) = require_tool("buildah", "FERRY_TEST_BUILDAH", &["buildah"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new("bash")
        .arg(workspace_root().join("deploy/images/build.sh"))
        // The build the suite's images came from (tests/run.sh builds them
        // from the debug binaries).
        .arg("--binaries")
        .arg(ferry_tests::target_dir().join("debug"))
        .arg("--oci-dir")
        .arg(dir.path())
        .args(storage_args())
        .arg("ferry-init")
        .env("PATH", path_with(&buildah))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "build.sh --oci-dir: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let archive = dir
        .path()
        .join(format!("ferry-init-{}.tar", env!("CARGO_PKG_VERSION")));
    let listing = Command::new("tar")
        .arg("-tf")
        .arg(&archive)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.contains("index.json") && listing.contains("oci-layout"),
        "{listing}"
    );
    let index = Command::new("tar")
        .arg("-xOf")
        .arg(&archive)
        .arg("index.json")
        .output()
        .unwrap();
    let index: Value = serde_json::from_slice(&index.stdout).expect("index.json");
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        ferry_image("ferry-init").as_str()
    );
}

/// `--root`/`--runroot` of the tests' container storage, for build.sh.
fn storage_args() -> Vec<String> {
    let dir = ferry_tests::podman::storage_dir();
    vec![
        "--root".into(),
        dir.join("storage").display().to_string(),
        "--runroot".into(),
        dir.join("run").display().to_string(),
    ]
}

fn path_with(tool: &Path) -> String {
    let dir = tool.parent().expect("tool folder").display().to_string();
    format!("{dir}:{}", std::env::var("PATH").unwrap_or_default())
}

/// Every entry below `root` as an absolute image path → (uid, gid, mode).
fn tree(root: &Path) -> BTreeMap<String, (u32, u32, u32)> {
    let mut found = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).unwrap().flatten() {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path.clone());
            }
            let inside = format!("/{}", path.strip_prefix(root).unwrap().display());
            found.insert(inside, (meta.uid(), meta.gid(), meta.mode()));
        }
    }
    found
}

/// The shared libraries `ldd` says a binary loads.
fn libraries_of(binary: &Path) -> Vec<String> {
    let output = Command::new("ldd").arg(binary).output().expect("run ldd");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                [_, "=>", path, ..] if path.starts_with('/') => Some((*path).to_owned()),
                [path, ..] if path.starts_with('/') => Some((*path).to_owned()),
                _ => None,
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Spark in cluster mode

/// `ferry submit -- spark-submit --deploy-mode cluster` against the fake
/// API server: ferry stages the job and creates the token Secret through
/// the API, Spark 4 creates the driver pod (and applies its ConfigMaps and
/// Service), and the stand-in kubelet runs that very pod: ferry-init from
/// the built image with the pod's own arguments and the Secret's token,
/// then Spark's driver command with the pod's mounts (pyspark's
/// distribution playing the Spark image, master `local[1]` since this test
/// wants no executor pods). The job's output is checked, spark-submit sees
/// the pod succeed through its watch, and the executor pod template Spark
/// stored in a ConfigMap fetches the same files with its ferry-init.
#[test]
fn spark_cluster_mode_driver_pod_runs_with_ferry_init_from_the_image() {
    let Some(cluster) = Cluster::start(&["ferry-init"]) else {
        return;
    };
    let Some(spark) = SparkHome::find() else {
        return;
    };
    let job = cluster.path("my job");
    write_job(&job, 64 << 10);
    let stand_in = spark_image::stand_in(&spark, cluster.work.path(), "--master local[1]");
    let kubelet = cluster
        .kubelet
        .clone()
        .with_image(spark_image::IMAGE, stand_in.clone());

    let (mut submit, driver) = submit_spark(&cluster, &spark, &job, &[]);
    let outcome = kubelet.run_pod(&driver, Duration::from_secs(240));
    assert_pod_ok(&outcome);
    let init = outcome.init("ferry-init");
    assert!(init.log.contains("4 of 4 items in place"), "{}", init.log);
    let log = &outcome.container("spark-kubernetes-driver").log;
    let score: i64 = (1..=50).map(|i| i * 2).sum();
    assert!(
        log.contains(&format!("RESULT: 50 rows, score {score}")),
        "{log}"
    );
    assert!(log.contains("PLACED: [('driver', "), "{log}");

    // spark-submit watched the pod (over WebSocket) until it succeeded.
    let status = wait_child(&mut submit, Duration::from_secs(60));
    assert!(status.success(), "ferry submit: {}", submit.log_text());
    assert!(
        submit.log_text().contains("finished"),
        "spark-submit saw the application finish: {}",
        submit.log_text()
    );

    // The executor template Spark stored: its ferry-init fetches the same.
    let maps = cluster.kube.client().list(NAMESPACE, "configmaps", None);
    let template = maps
        .iter()
        .find_map(|m| m["data"]["podspec-configmap-key"].as_str())
        .unwrap_or_else(|| panic!("no executor pod template ConfigMap: {maps:?}"));
    let mut pod: Pod = serde_yaml::from_str(template).expect("the template is a Pod");
    let spec = pod.spec.as_mut().unwrap();
    let main = spec
        .containers
        .iter_mut()
        .find(|c| c.name == "spark-kubernetes-executor")
        .expect("executor container");
    main.image = Some(spark_image::IMAGE.into());
    main.command = Some(vec![
        "sha256sum".into(),
        "/var/ferry/jars/dep.jar".into(),
        "/var/ferry/files/data 1.csv".into(),
        "/var/ferry/pyfiles/scoring.py".into(),
    ]);
    pod.metadata.name = Some("executor-from-template".into());
    let pod = cluster.store_pod(NAMESPACE, &pod);
    let outcome = kubelet.run_pod(&pod, Duration::from_secs(60));
    assert_pod_ok(&outcome);
    let sums = &outcome.container("spark-kubernetes-executor").log;
    for name in ["dep.jar", "data 1.csv", "scoring.py"] {
        let digest = ferry_core::Digest::of(&std::fs::read(job.join(name)).unwrap());
        assert!(
            sums.contains(&digest.hex()),
            "{name} ({digest}) not delivered: {sums}"
        );
    }
    let status = cluster
        .kube
        .client()
        .get(&KubeMock::path(NAMESPACE, "pods", "executor-from-template"))
        .unwrap();
    assert_eq!(
        status["status"]["phase"], "Succeeded",
        "the stand-in reports status"
    );
}

/// Executor pods too: the driver runs with Spark's Kubernetes scheduler
/// against the same fake API server (`spark.kubernetes.driver.master`), so
/// it creates executor pods; the stand-in runs each (ferry-init from the
/// image with the executor pod's own arguments, then the executor command
/// the Spark image's entrypoint builds from the pod's env) and reports their
/// status. Tasks run on those executors, and each executor uses the jar its
/// own ferry-init delivered (`ferry submit` sets
/// `spark.kubernetes.jars.avoidDownloadSchemes=local`): its log says it
/// took `file:/var/ferry/jars/dep.jar`, never `spark://.../jars/` from the
/// driver, and the bytes the driver served through its Service (a counting
/// relay standing where the Service's proxy would) stay far below the
/// jar's size. (Spark 4 still serves `--files` and `--py-files` from the
/// driver: it copies them into its working directory and offers no switch;
/// they are small here.)
#[test]
fn spark_executor_pods_use_the_jars_their_own_ferry_init_delivered() {
    let Some(cluster) = Cluster::start(&["ferry-init"]) else {
        return;
    };
    let Some(spark) = SparkHome::find() else {
        return;
    };
    const JAR: usize = 8 << 20;
    let job = cluster.path("job");
    write_job(&job, JAR);
    let stand_in = spark_image::stand_in(&spark, cluster.work.path(), "");
    let kubelet = cluster
        .kubelet
        .clone()
        .with_image(spark_image::IMAGE, stand_in);
    let (driver_port, block_port) = (free_port(), free_port());
    let extra: Vec<String> = [
        format!("spark.kubernetes.driver.master={}", cluster.kube.url),
        "spark.executor.instances=2".into(),
        "spark.executor.cores=1".into(),
        "spark.executor.memory=512m".into(),
        "spark.kubernetes.executor.request.cores=0.1".into(),
        format!("spark.driver.port={driver_port}"),
        format!("spark.driver.blockManager.port={block_port}"),
        "spark.kubernetes.allocation.batch.delay=200ms".into(),
        // Spark 4.1+ sends executors to the driver pod's IP; through the
        // Service instead, they pass the relay that counts what the driver
        // serves.
        "spark.kubernetes.executor.useDriverPodIP=false".into(),
    ]
    .into_iter()
    .flat_map(|conf| ["--conf".to_owned(), conf])
    .collect();
    let (mut submit, driver) = submit_spark(&cluster, &spark, &job, &extra);

    // The driver's Service leads executors to a relay in front of the
    // driver (127.0.0.2 is loopback too), which counts what it serves.
    // (Spark applies the Service right after creating the pod.)
    let mut service = None;
    let applied = wait_until(Duration::from_secs(30), || {
        service = cluster
            .kube
            .client()
            .list(NAMESPACE, "services", None)
            .iter()
            .find_map(|s| {
                s["metadata"]["name"]
                    .as_str()
                    .filter(|n| n.ends_with("-driver-svc"))
                    .map(str::to_owned)
            });
        service.is_some()
    });
    assert!(applied, "Spark applied no driver Service");
    let service = service.unwrap();
    kubelet.route_service(&service, "127.0.0.2");
    let relays: Vec<CountingRelay> = [driver_port, block_port]
        .into_iter()
        .map(|port| {
            CountingRelay::start(([127, 0, 0, 2], port).into(), ([127, 0, 0, 1], port).into())
        })
        .collect();

    let executors = kubelet.serve(NAMESPACE, "spark-role=executor");
    let outcome = kubelet.run_pod(&driver, Duration::from_secs(240));
    let executor_outcomes = executors.stop(Duration::from_secs(60));
    let described: String = executor_outcomes.iter().map(PodOutcome::describe).collect();
    assert_pod_ok(&outcome);
    let log = &outcome.container("spark-kubernetes-driver").log;
    assert_job_ran_on_executors(log, &executor_outcomes, &described);
    let served: u64 = relays.iter().map(CountingRelay::served).sum();
    eprintln!("the driver served {served} bytes to 2 executors; dep.jar is {JAR} bytes");

    assert!(
        served < (JAR / 4) as u64,
        "the driver served {served} bytes to executors (the jar is {JAR})"
    );
    let connections: Vec<u64> = relays
        .iter()
        .map(|r| r.connections.load(std::sync::atomic::Ordering::SeqCst))
        .collect();
    assert!(
        connections[0] >= 2,
        "executors reached the driver through its Service's relay: {connections:?} connections, {served} bytes served\n{described}"
    );
    let status = wait_child(&mut submit, Duration::from_secs(60));
    assert!(status.success(), "ferry submit: {}", submit.log_text());
}

/// Client mode (notebooks, `spark-shell`): a real `spark-submit
/// --deploy-mode client` runs the driver here, on the test's machine, with
/// the user's own paths; ferry stages the local jar and gives the executor
/// pods their own ferry-init, so each executor loads `dep.jar` from
/// `/var/ferry/jars` and the driver serves no jar (a counting relay stands
/// where executors reach the driver). The API server is kmock (a fake), the
/// executor pods run through the kubelet stand-in with the Spark image
/// played by the host's pyspark.
#[test]
fn client_mode_executors_load_the_jar_from_ferry_and_the_driver_keeps_its_paths() {
    let Some(cluster) = Cluster::start(&["ferry-init"]) else {
        return;
    };
    let Some(spark) = SparkHome::find() else {
        return;
    };
    const JAR: usize = 8 << 20;
    let job = cluster.path("job");
    let jar = write_job(&job, JAR);
    let stand_in = spark_image::stand_in(&spark, cluster.work.path(), "");
    let python = stand_in
        .env
        .iter()
        .find(|(k, _)| k == "PYSPARK_PYTHON")
        .map(|(_, v)| v.clone())
        .unwrap();
    let kubelet = cluster
        .kubelet
        .clone()
        .with_image(spark_image::IMAGE, stand_in);
    let (driver_port, block_port) = (free_port(), free_port());
    // Executors reach the driver at 127.0.0.2 (loopback too), where relays
    // count what the driver serves them.
    let relays: Vec<CountingRelay> = [driver_port, block_port]
        .into_iter()
        .map(|port| {
            CountingRelay::start(([127, 0, 0, 2], port).into(), ([127, 0, 0, 1], port).into())
        })
        .collect();
    let path = |name: &str| job.join(name).display().to_string();
    let conf = |setting: String| ["--conf".to_owned(), setting];
    let mut args = vec![
        spark.spark_submit.display().to_string(),
        "--master".into(),
        format!("k8s://{}", cluster.kube.url),
        "--deploy-mode".into(),
        "client".into(),
        "--name".into(),
        "ferry-client-mode".into(),
    ];
    for setting in [
        format!("spark.kubernetes.container.image={}", spark_image::IMAGE),
        format!("spark.kubernetes.namespace={NAMESPACE}"),
        "spark.ui.enabled=false".into(),
        "spark.driver.host=127.0.0.2".into(),
        "spark.driver.bindAddress=127.0.0.1".into(),
        format!("spark.driver.port={driver_port}"),
        format!("spark.driver.blockManager.port={block_port}"),
        "spark.executor.instances=2".into(),
        "spark.executor.cores=1".into(),
        "spark.executor.memory=512m".into(),
        "spark.kubernetes.executor.request.cores=0.1".into(),
        "spark.kubernetes.allocation.batch.delay=200ms".into(),
        // Spark 4.1+ sends executors to the bind address; through
        // spark.driver.host instead, they pass the counting relays.
        "spark.kubernetes.executor.useDriverPodIP=false".into(),
    ] {
        args.extend(conf(setting));
    }
    args.extend([
        "--jars".into(),
        path("dep.jar"),
        "--py-files".into(),
        path("scoring.py"),
        path("job.py"),
        path("data 1.csv"),
    ]);
    let options = [
        "--namespace",
        NAMESPACE,
        "--pod-server",
        &cluster.server.url,
        "--template-dir",
    ];
    let templates = cluster.path("templates");
    let mut command = cluster.ferry_submit(
        &[&options[..], &[templates.to_str().unwrap()]].concat(),
        &args,
        Some(&spark),
    );
    command
        .env("PYSPARK_PYTHON", &python)
        .env("PYSPARK_DRIVER_PYTHON", &python)
        .env("PYTHONPATH", &spark.site_packages)
        .env("SPARK_LOCAL_DIRS", cluster.path("driver-local"));
    let executors = kubelet.serve(NAMESPACE, "spark-role=executor");
    let mut submit = Child::spawn("ferry submit", command, cluster.path("submit.log"));
    let status = wait_child(&mut submit, Duration::from_secs(300));
    let executor_outcomes = executors.stop(Duration::from_secs(60));
    let described: String = executor_outcomes.iter().map(PodOutcome::describe).collect();
    let log = submit.log_text();
    assert!(
        status.success(),
        "ferry submit (client mode): {log}\n{described}"
    );
    assert!(
        log.contains("ferry: client mode: ") && log.contains("1 local jars to the executor pods"),
        "{log}"
    );
    // No driver pod: the driver ran here, with the jar at its own path.
    assert!(
        cluster
            .kube
            .client()
            .list(NAMESPACE, "pods", Some("spark-role=driver"))
            .is_empty()
    );
    assert!(!templates.join("driver-pod-template.yaml").exists());
    let class_path = log
        .lines()
        .find_map(|l| l.strip_prefix("DRIVER CLASSPATH: "))
        .unwrap_or_default();
    assert!(
        class_path.split(':').any(|entry| Path::new(entry) == jar),
        "the driver's class path has {}: {class_path}\n{log}",
        jar.display()
    );
    assert_job_ran_on_executors(&log, &executor_outcomes, &described);
    let served: u64 = relays.iter().map(CountingRelay::served).sum();
    eprintln!("the driver served {served} bytes to 2 executors; dep.jar is {JAR} bytes");
    assert!(
        served < (JAR / 4) as u64,
        "the driver served {served} bytes to executors (the jar is {JAR})"
    );
}

// ---------------------------------------------------------------------------
// The ferry-server Deployment

/// The Deployment kustomize renders (local-disk overlay), run by the
/// stand-in from the built image: it runs as uid 65532 with a read-only
/// root file system and dropped capabilities, its probes answer, it takes
/// the upload token from the Secret's file (created through the API as the
/// README says), it writes blobs to its volume as 65532, and SIGTERM lets an
/// upload in flight finish before it exits 0.
///
/// Two changes to the rendered pod, both because of this machine rather
/// than the manifests: every pod shares the host's network here, so the
/// listen port (and the container port the probes name) is a free one, not
/// 7070; and in-cluster API access needs HTTPS with the cluster's CA, which
/// kmock (HTTP only) cannot offer, so a kubeconfig for the fake API server
/// is mounted from a Secret and named in `KUBECONFIG`.
#[test]
fn ferry_server_deployment_runs_from_its_image_and_drains_on_sigterm() {
    let Some(kubectl) = require_tool(
        "kubectl (with kustomize)",
        "FERRY_TEST_KUBECTL",
        &["kubectl"],
    ) else {
        return;
    };
    let Some(podman) = Podman::with_ferry_images(&["ferry-server"]) else {
        return;
    };
    let Some(kube) = KubeMock::start() else {
        return;
    };
    let kubelet = Kubelet::new(kube.client(), podman.clone());
    let output = Command::new(&kubectl)
        .arg("kustomize")
        .arg(workspace_root().join("deploy/kubernetes/overlays/local-disk"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let deployment: Deployment = serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde_yaml::Value::deserialize(doc).unwrap())
        .find(|v| v["kind"] == "Deployment")
        .map(|v| serde_yaml::from_value(v).unwrap())
        .expect("a Deployment");
    let template = deployment.spec.unwrap().template;
    let namespace = deployment.metadata.namespace.clone().unwrap();
    let mut spec = template.spec.unwrap();

    let port = free_port();
    let container = &mut spec.containers[0];
    for arg in container.args.iter_mut().flatten() {
        if arg.starts_with("--listen=") {
            *arg = format!("--listen=0.0.0.0:{port}");
        }
    }
    for p in container.ports.iter_mut().flatten() {
        p.container_port = i32::from(port);
    }
    container
        .env
        .get_or_insert_with(Vec::new)
        .push(k8s_openapi::api::core::v1::EnvVar {
            name: "KUBECONFIG".into(),
            value: Some("/etc/ferry/kube/config".into()),
            ..Default::default()
        });
    container.volume_mounts.get_or_insert_with(Vec::new).push(
        k8s_openapi::api::core::v1::VolumeMount {
            name: "kubeconfig".into(),
            mount_path: "/etc/ferry/kube".into(),
            read_only: Some(true),
            ..Default::default()
        },
    );
    spec.volumes
        .get_or_insert_with(Vec::new)
        .push(k8s_openapi::api::core::v1::Volume {
            name: "kubeconfig".into(),
            secret: Some(k8s_openapi::api::core::v1::SecretVolumeSource {
                secret_name: Some("kmock-kubeconfig".into()),
                default_mode: Some(0o440),
                ..Default::default()
            }),
            ..Default::default()
        });
    let token = "pods-test-upload-token-0123456789abcdef";
    let kubeconfig = std::fs::read_to_string(&kube.kubeconfig).unwrap();
    for (name, key, value) in [
        ("ferry-upload-token", "token", token.to_owned()),
        ("kmock-kubeconfig", "config", kubeconfig),
    ] {
        kube.client().create(
            &namespace,
            "secrets",
            &json!({"apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": name, "namespace": namespace},
                    "stringData": {key: value}}),
        );
    }
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "ferry-server-0", "namespace": namespace,
                     "labels": template.metadata.and_then(|m| m.labels)},
        "spec": spec,
    });
    let stored: Pod =
        serde_json::from_value(kube.client().create(&namespace, "pods", &pod)).unwrap();
    let container = stored.spec.as_ref().unwrap().containers[0].clone();

    let running = kubelet.start_pod(&stored);
    assert!(
        running.wait_ready(Duration::from_secs(60)),
        "the readiness probe never passed"
    );
    let liveness = container.liveness_probe.clone().expect("a liveness probe");
    assert!(probe_passes(&liveness, &container), "liveness probe");
    let api_pod = kube
        .client()
        .get(&KubeMock::path(&namespace, "pods", "ferry-server-0"))
        .unwrap();
    let ready = api_pod["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    assert!(ready, "the API shows the pod Ready: {api_pod}");
    let inspect = podman.run(&["container", "inspect", &running.containers()[0]]);
    let inspect: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(inspect[0]["HostConfig"]["ReadonlyRootfs"], true);
    assert_eq!(inspect[0]["Config"]["User"], "65532:65532");

    // The token from the Secret's file is the upload credential.
    let base = format!("http://127.0.0.1:{port}");
    let api = ApiClient::new(&base, Some(token));
    let staged = api.stage(&[("jars/x.jar", b"in the pod")], json!({}));
    assert!(staged["id"].is_string(), "{staged}");
    let wrong = api
        .as_token(Some("wrong"))
        .request(reqwest::Method::GET, "/v1/bundles")
        .send()
        .unwrap();
    assert_eq!(wrong.status(), 401);
    // Blobs land on the claim's volume, written by uid 65532.
    let claim = kubelet_claim_dir(&kubelet, &stored);
    let blob = walk_files(&claim)
        .into_iter()
        .find(|p| p.to_string_lossy().contains("/blobs/"))
        .unwrap_or_else(|| panic!("no blob under {}", claim.display()));
    assert_eq!(
        std::fs::metadata(&blob).unwrap().uid(),
        65532,
        "{}",
        blob.display()
    );

    // SIGTERM with an upload in flight: it finishes, then the server exits 0.
    let data = ferry_tests::pseudo_random_bytes(21, 300_000);
    let digest = ferry_core::Digest::of(&data);
    let mut stream = start_partial_put(port, token, &digest, data.len(), &data[..100_000]);
    std::thread::sleep(Duration::from_millis(200));
    running.terminate();
    assert!(
        wait_until(Duration::from_secs(10), || std::net::TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_err()),
        "the listener stays open after SIGTERM"
    );
    use std::io::Write as _;
    stream.write_all(&data[100_000..]).unwrap();
    let status = read_status(&mut stream, Duration::from_secs(10));
    assert!(status.contains("201"), "in-flight upload got {status:?}");
    drop(stream);
    let outcome = running.wait(Duration::from_secs(40));
    let server = outcome.container("ferry-server");
    assert_eq!(server.exit_code, Some(0), "{}", outcome.describe());
    assert!(outcome.was_ready);
    assert!(
        server.log.contains("pod watch is receiving events"),
        "the pod watch did not reach the API server: {}",
        server.log
    );
}

fn kubelet_claim_dir(kubelet: &Kubelet, pod: &Pod) -> PathBuf {
    let claim = pod
        .spec
        .as_ref()
        .unwrap()
        .volumes
        .iter()
        .flatten()
        .find_map(|v| v.persistent_volume_claim.as_ref())
        .expect("a claim")
        .claim_name
        .clone();
    kubelet.claim_path(&claim)
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    ferry_tests::init::files_below(dir)
        .into_iter()
        .map(|p| dir.join(p))
        .collect()
}

// ---------------------------------------------------------------------------
// ferry-init's pod-facing behaviour: termination message, node cache

/// The driver template `ferry submit --dry-run` writes (with `submit`'s
/// extra options), as a pod in the fake API with the bundle's Secret
/// applied as `kubectl apply` would: its main container replaced by one
/// that lists what landed.
fn template_pod(cluster: &Cluster, name: &str, submit: &[&str]) -> (Pod, Value) {
    let deps = cluster.path(&format!("deps-{name}"));
    std::fs::create_dir_all(&deps).unwrap();
    // The same bytes in every bundle: one blob, one cache entry per node.
    std::fs::write(deps.join("lib.jar"), b"lib jar bytes").unwrap();
    let templates = cluster.path(&format!("templates-{name}"));
    let mut options = vec![
        "--dry-run",
        "--output",
        "json",
        "--namespace",
        NAMESPACE,
        "--pod-server",
        &cluster.server.url,
        "--template-dir",
    ];
    let templates_arg = templates.display().to_string();
    options.push(&templates_arg);
    options.extend_from_slice(submit);
    let jar = deps.join("lib.jar").display().to_string();
    let spark_submit = [
        "spark-submit".to_owned(),
        "--master".into(),
        format!("k8s://{}", cluster.kube.url),
        "--deploy-mode".into(),
        "cluster".into(),
        "--jars".into(),
        jar,
        "local:///opt/app.jar".into(),
    ];
    let output = cluster
        .ferry_submit(&options, &spark_submit, None)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "ferry submit: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let dry: Value = serde_json::from_slice(&output.stdout).unwrap();
    let secret = dry["secret"].clone();
    if cluster
        .kube
        .client()
        .get(&KubeMock::path(
            NAMESPACE,
            "secrets",
            secret["metadata"]["name"].as_str().unwrap(),
        ))
        .is_none()
    {
        cluster.kube.client().create(NAMESPACE, "secrets", &secret);
    }
    let text = std::fs::read_to_string(dry["driver_template"].as_str().unwrap()).unwrap();
    let mut pod: Pod = serde_yaml::from_str(&text).unwrap();
    pod.metadata.name = Some(name.into());
    let main = &mut pod.spec.as_mut().unwrap().containers[0];
    main.image = Some(spark_image::IMAGE.into());
    main.command = Some(vec!["ls".into(), "-ln".into(), "/var/ferry/jars".into()]);
    let stored =
        cluster
            .kube
            .client()
            .create(NAMESPACE, "pods", &serde_json::to_value(&pod).unwrap());
    (serde_json::from_value(stored).unwrap(), secret)
}

/// A cluster for ferry-init in pods whose main container only lists what
/// landed: the host's `ls` standing in for the Spark image.
fn lister_cluster() -> Option<(Cluster, Kubelet)> {
    let cluster = Cluster::start(&["ferry-init"])?;
    let kubelet = cluster.lister_kubelet();
    Some((cluster, kubelet))
}

/// A ferry-init that fails names every failed item in its termination
/// message (what `kubectl describe pod` shows), the pod fails at that init
/// container with its exit code, and the main container never runs; the
/// generated templates ask for `FallbackToLogsOnError`.
#[test]
fn a_failed_fetch_is_the_pods_termination_message() {
    let Some((cluster, kubelet)) = lister_cluster() else {
        return;
    };
    let (pod, secret) = template_pod(&cluster, "bad-token", &[]);
    let init = &pod.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[0];
    assert_eq!(
        init.termination_message_policy.as_deref(),
        Some("FallbackToLogsOnError")
    );
    // A token that is not the bundle's: every item is refused.
    let name = secret["metadata"]["name"].as_str().unwrap();
    cluster.kube.client().merge_patch(
        &KubeMock::path(NAMESPACE, "secrets", name),
        &json!({"data": {"token": "d3Jvbmctd3Jvbmctd3Jvbmc="}}),
    );
    let outcome = kubelet.run_pod(&pod, Duration::from_secs(60));
    assert!(!outcome.succeeded());
    assert!(
        outcome.containers.is_empty(),
        "the main container ran:\n{}",
        outcome.describe()
    );
    let failed = outcome.init("ferry-init");
    assert_eq!(failed.exit_code, Some(1), "{}", outcome.describe());
    let message = &failed.message;
    assert!(
        message.starts_with("ferry-init: 0 of 1 items in place"),
        "{message}"
    );
    assert!(message.contains("FAILED ferry://"), "{message}");
    assert!(message.len() <= 4096);
    let stored = cluster
        .kube
        .client()
        .get(&KubeMock::path(NAMESPACE, "pods", "bad-token"))
        .unwrap();
    let status = &stored["status"]["initContainerStatuses"][0]["state"]["terminated"];
    assert_eq!(status["exitCode"], 1, "{stored}");
    assert_eq!(status["message"].as_str(), Some(message.as_str()));
    assert_eq!(stored["status"]["phase"], "Failed");
}

/// The node cache as a kubelet makes it: a `DirectoryOrCreate` hostPath
/// owned by root, mode 0755. The templates' setup step (ferry-init
/// `--prepare-cache-for`, as root with CAP_CHOWN/FOWNER) hands it to uid
/// 65532, so ferry-init fills it and the next pod on the node links from
/// it. Without the step, ferry-init refuses the cache with an error that
/// names the fix.
#[test]
fn the_node_cache_hostpath_works_as_the_kubelet_creates_it() {
    let Some((cluster, kubelet)) = lister_cluster() else {
        return;
    };
    let cache = kubelet.host_path("/var/cache/ferry");

    // Without the setup step, on a fresh node: a clear refusal.
    let (mut pod, _) = template_pod(&cluster, "no-setup", &["--node-cache", "/var/cache/ferry"]);
    let inits: Vec<String> = pod
        .spec
        .as_ref()
        .unwrap()
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(inits, ["ferry-cache-setup", "ferry-init"]);
    pod.spec
        .as_mut()
        .unwrap()
        .init_containers
        .as_mut()
        .unwrap()
        .remove(0);
    let outcome = kubelet.run_pod(&pod, Duration::from_secs(60));
    assert!(!outcome.succeeded());
    let meta = std::fs::metadata(&cache).expect("the kubelet made the hostPath");
    assert_eq!(
        (meta.uid(), meta.mode() & 0o7777),
        (0, 0o755),
        "as a kubelet makes it"
    );
    let message = &outcome.init("ferry-init").message;
    assert!(
        message.contains("is not writable by uid 65532"),
        "{message}"
    );
    assert!(
        message.contains("--prepare-cache-for 65532:65532"),
        "{message}"
    );

    // With it: the first pod fetches into the cache, the second links.
    let with_cache = |name: &str| {
        let (pod, _) = template_pod(&cluster, name, &["--node-cache", "/var/cache/ferry"]);
        let outcome = kubelet.run_pod(&pod, Duration::from_secs(60));
        assert_pod_ok(&outcome);
        outcome
    };
    let first = with_cache("cache-first");
    assert_logged(&first, "ferry-cache-setup", "belongs to 65532:65532");
    assert_logged(&first, "ferry-init", "1 fetched");
    let meta = std::fs::metadata(&cache).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (65532, 65532, 0o700)
    );
    let cached = walk_files(&cache.join("sha256"));
    assert_eq!(cached.len(), 1, "{cached:?}");
    let second = with_cache("cache-second");
    assert_logged(&second, "ferry-cache-setup", "already belongs");
    assert_logged(&second, "ferry-init", "1 from cache");
    assert_logged(&second, "spark-kubernetes-driver", "lib.jar");
}

/// ferry-init in its image with no CA bundle at all (the file hidden by an
/// empty one) still fetches plain `http://` and `ferry://` items: roots
/// matter only for `https` (where the bundled Mozilla roots stand in; the
/// images ship a CA bundle, so this is the image someone slimmed down).
#[test]
fn ferry_init_without_a_ca_bundle_still_fetches_plain_http() {
    let Some((cluster, kubelet)) = lister_cluster() else {
        return;
    };
    let (mut pod, _) = template_pod(&cluster, "no-ca", &[]);
    let spec = pod.spec.as_mut().unwrap();
    spec.volumes
        .get_or_insert_with(Vec::new)
        .push(k8s_openapi::api::core::v1::Volume {
            name: "no-ca".into(),
            empty_dir: Some(Default::default()),
            ..Default::default()
        });
    let init = &mut spec.init_containers.as_mut().unwrap()[0];
    init.volume_mounts
        .get_or_insert_with(Vec::new)
        .push(k8s_openapi::api::core::v1::VolumeMount {
            name: "no-ca".into(),
            mount_path: "/etc/ssl/certs".into(),
            ..Default::default()
        });
    let outcome = kubelet.run_pod(&pod, Duration::from_secs(60));
    assert_pod_ok(&outcome);
}
