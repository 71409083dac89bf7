//! A PySpark environment shipped the way Spark's docs say
//! (`--archives pyspark_venv.tar.gz#environment` with
//! `spark.pyspark.python=./environment/bin/python`), through `ferry submit`
//! and the real ferry-init, then run by a real Spark (pyspark's
//! `spark-submit --master local[1]`, Java 17) whose UDF imports a package
//! that exists only inside the archive.
//!
//! The environment is real: a virtualenv with a package of this test's own
//! built into a wheel locally and installed with `pip --no-index` (no
//! network), packed by `venv-pack`. The pod is emulated as in `spark.rs`:
//! ferry-init runs with the driver template's own arguments (token path
//! swapped), and Spark runs in a working directory where the template's
//! `subPath` mount of `archives/<alias>` is reproduced. The same
//! environment goes a second time as a `.zip` with the executable bits
//! recorded (written by Python's zipfile) under another alias.
//!
//! Needs `FERRY_TEST_SPARK_SUBMIT`, `FERRY_TEST_PYTHON` (with pyspark),
//! `java`, and `FERRY_TEST_VENV_PACK` (a Python environment with
//! `venv-pack`, `wheel` and `setuptools`; `tests/install-deps.sh`).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ferry_tests::spark_image::{self, on_local_master};
use ferry_tests::{Child, FerryServer, bin, require_tool};
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

const JOB: &str = r#"
import sys
from pyspark.sql import SparkSession

spark = SparkSession.builder.getOrCreate()

def score(x):
    # Only the archive's environment has this package.
    import ferrypkg_only_in_archive as pkg
    import sys
    return (pkg.triple(x), sys.prefix)

rows = spark.sparkContext.parallelize(range(1, 11), 2).map(score).collect()
with open(sys.argv[1], "w") as out:
    out.write("%d %s\n" % (sum(r[0] for r in rows), rows[0][1]))
spark.stop()
"#;

const ZIP_IT: &str = r#"
import os, stat, sys, zipfile
root, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                info = zipfile.ZipInfo(rel)
                info.create_system = 3
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                z.writestr(info, os.readlink(path))
            elif stat.S_ISREG(st.st_mode):
                info = zipfile.ZipInfo(rel)
                info.create_system = 3
                info.external_attr = (stat.S_IFREG | stat.S_IMODE(st.st_mode)) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                with open(path, "rb") as f:
                    z.writestr(info, f.read())
"#;

fn run(command: &mut Command, what: &str) -> std::process::Output {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
fn a_venv_pack_archive_becomes_the_executors_python() {
    let Some(spark_submit) = require_tool(
        "pyspark's spark-submit",
        "FERRY_TEST_SPARK_SUBMIT",
        &["spark-submit"],
    ) else {
        return;
    };
    let Some(python) = require_tool("python with pyspark", "FERRY_TEST_PYTHON", &["python3"])
    else {
        return;
    };
    let Some(tools) = require_tool(
        "python with venv-pack, wheel and setuptools",
        "FERRY_TEST_VENV_PACK",
        &["venv-pack"],
    ) else {
        return;
    };
    if require_tool("java", "FERRY_TEST_JAVA", &["java"]).is_none() {
        return;
    }
    let tools_bin = tools.parent().unwrap().to_path_buf();
    let work = tempfile::tempdir().unwrap();
    let at = |p: &str| work.path().join(p);

    // The package, built into a wheel here, installed into a fresh venv
    // without the network.
    let pkg = at("src/ferrypkg_only_in_archive");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(
        pkg.join("__init__.py"),
        "def triple(x):\n    return 3 * x\n",
    )
    .unwrap();
    std::fs::write(
        at("src/setup.py"),
        "from setuptools import setup\nsetup(name='ferrypkg-only-in-archive', version='1.0', packages=['ferrypkg_only_in_archive'])\n",
    )
    .unwrap();
    run(
        Command::new(tools_bin.join("pip"))
            .args([
                "wheel",
                "--no-index",
                "--no-build-isolation",
                "--no-deps",
                "-q",
            ])
            .arg("-w")
            .arg(at("dist"))
            .arg(at("src")),
        "pip wheel",
    );
    run(
        Command::new(&python).args(["-m", "venv"]).arg(at("venv")),
        "python -m venv",
    );
    let wheel = std::fs::read_dir(at("dist"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .expect("a wheel");
    run(
        Command::new(at("venv/bin/pip"))
            .args(["install", "--no-index", "-q", "--disable-pip-version-check"])
            .arg(&wheel),
        "pip install the wheel",
    );
    let tarball = at("pyspark_venv.tar.gz");
    run(
        Command::new(tools_bin.join("venv-pack"))
            .arg("-p")
            .arg(at("venv"))
            .arg("-o")
            .arg(&tarball)
            .arg("-q"),
        "venv-pack",
    );
    // The same environment as a zip with its modes recorded.
    let unpacked_for_zip = at("for-zip");
    std::fs::create_dir(&unpacked_for_zip).unwrap();
    run(
        Command::new("tar")
            .arg("xzf")
            .arg(&tarball)
            .arg("-C")
            .arg(&unpacked_for_zip),
        "tar xzf",
    );
    let zipped = at("pyenv-1.0.zip");
    run(
        Command::new(&python)
            .args(["-c", ZIP_IT])
            .arg(&unpacked_for_zip)
            .arg(&zipped),
        "zipping the environment",
    );
    // Nothing outside the archives may provide the package.
    std::fs::remove_dir_all(at("venv")).unwrap();
    std::fs::remove_dir_all(&unpacked_for_zip).unwrap();

    let server = FerryServer::start();
    for (archive, alias) in [(&tarball, "environment"), (&zipped, "pyenv")] {
        let case = at(&format!("case-{alias}"));
        std::fs::create_dir(&case).unwrap();
        spark_with_archive(&server, &spark_submit, &python, &case, archive, alias);
    }
}

fn spark_with_archive(
    server: &FerryServer,
    spark_submit: &Path,
    python: &Path,
    case: &Path,
    archive: &Path,
    alias: &str,
) {
    let path = |p: &Path| p.display().to_string();
    let pod_dir = case.join("pod");
    let templates = case.join("templates");
    let output = case.join("result.txt");
    let job = case.join("job.py");
    std::fs::write(&job, JOB).unwrap();
    let token = case.join("upload-token");
    std::fs::write(&token, &server.token).unwrap();
    let submit = run(
        // ferry delivers only for a cluster-mode `k8s://` submission; the
        // command then runs on `local[1]` below.
        spark_image::dry_run_submit(&server.url, &token, &pod_dir, &templates, spark_submit)
            .args(["--name", "ferry-pyspark-env"])
            .args(["--archives", &format!("{}#{alias}", path(archive))])
            .args([
                "--conf",
                &format!("spark.pyspark.python=./{alias}/bin/python"),
            ])
            .arg(&job)
            .arg(&output)
            .env("XDG_CONFIG_HOME", case.join("no-config"))
            .env("KUBECONFIG", case.join("no-kubeconfig")),
        "ferry submit",
    );
    let dry: Value = serde_json::from_slice(&submit.stdout).unwrap();
    let command: Vec<String> = serde_json::from_value(dry["command"].clone()).unwrap();
    assert!(
        !command
            .iter()
            .any(|a| a == "--archives" || a.contains(".tar.gz") || a.contains(".zip")),
        "the archive is taken out of what Spark sees: {command:?}"
    );
    assert!(
        command
            .iter()
            .any(|a| a == &format!("spark.pyspark.python=./{alias}/bin/python")),
        "left as written: {command:?}"
    );
    let secret: k8s_openapi::api::core::v1::Secret =
        serde_json::from_value(dry["secret"].clone()).unwrap();
    let bundle_token = secret.string_data.unwrap()["token"].clone();

    let pod: Pod = serde_yaml::from_str(
        &std::fs::read_to_string(templates.join("driver-pod-template.yaml")).unwrap(),
    )
    .unwrap();
    let spec = pod.spec.unwrap();
    let mount = spec.containers[0]
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.sub_path.is_some())
        .expect("the unpacked archive is mounted")
        .clone();
    assert_eq!(mount.mount_path, format!("/opt/spark/work-dir/{alias}"));
    let sub_path = mount.sub_path.unwrap();
    assert_eq!(sub_path, format!("archives/{alias}"));

    let init_args = spec.init_containers.unwrap()[0].args.clone().unwrap();
    let pod_token = case.join("pod-token");
    std::fs::write(&pod_token, &bundle_token).unwrap();
    let init_args: Vec<String> = init_args
        .iter()
        .map(|a| a.replace("/var/run/secrets/ferry/token", &path(&pod_token)))
        .collect();
    run(
        Command::new(bin("ferry-init")).args(&init_args),
        "ferry-init with the template's arguments",
    );
    let unpacked = pod_dir.join(&sub_path);
    let python_in_env = unpacked.join("bin/python");
    assert!(
        std::fs::symlink_metadata(&python_in_env).is_ok(),
        "{} unpacked",
        python_in_env.display()
    );
    assert!(
        !pod_dir
            .join("archives")
            .join(archive.file_name().unwrap())
            .exists(),
        "the archive itself is not left beside its tree"
    );

    // The pod's working directory, with the template's subPath mount
    // reproduced (a bind mount needs privileges; a link stands in).
    let work_dir = case.join("work-dir");
    std::fs::create_dir(&work_dir).unwrap();
    std::os::unix::fs::symlink(&unpacked, work_dir.join(alias)).unwrap();

    let command = on_local_master(&command);
    let log = case.join("spark.log");
    let mut spark = Command::new(&command[0]);
    spark
        .args(&command[1..])
        .current_dir(&work_dir)
        .env("PYSPARK_DRIVER_PYTHON", python)
        .env_remove("PYSPARK_PYTHON")
        .env("SPARK_LOCAL_IP", "127.0.0.1")
        .env("SPARK_LOCAL_DIRS", case.join("spark-local"))
        .env("AWS_METADATA_ENDPOINT", "http://127.0.0.1:9");
    let mut child = Child::spawn("spark-submit", spark, log);
    let status = child.wait_timeout(Duration::from_secs(240));
    let spark_log = child.log_text();
    assert!(
        status.is_some_and(|s| s.success()),
        "spark-submit {command:?} ({status:?}, killed after 240 s if None):\n{spark_log}"
    );
    let result = std::fs::read_to_string(&output)
        .unwrap_or_else(|e| panic!("no result ({e}):\n{spark_log}"));
    let (sum, prefix) = result.trim_end().split_once(' ').unwrap();
    assert_eq!(sum, "165", "3 * (1 + ... + 10)");
    // The executor's Python ran from the unpacked archive.
    assert!(
        prefix.ends_with(&format!("/{alias}")),
        "executor sys.prefix {prefix}"
    );
}
