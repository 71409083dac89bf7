//! ferry-init's archive items (`"unpack": true`), through the real binary:
//! evil archives refused naming the entry with nothing written outside the
//! target (the whole temp root is checked), a wrong digest pin unpacking
//! nothing, and a `kill -9` in the middle of extraction followed by a rerun
//! that leaves the whole, right tree.
//!
//! The archives are written by Python's `tarfile` (a real archiver, and
//! one that writes whatever names it is given).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_core::Digest;
use ferry_tests::init::{entries_below, path_str, run, stderr};
use ferry_tests::{bin, require_tool};

/// Writes a tar (gzip when `out` ends in .gz) from a list of
/// `[name, type, data-or-target, mode]`.
const MAKE_TAR: &str = r#"
import io, json, sys, tarfile
out, spec = sys.argv[1], json.loads(sys.argv[2])
with tarfile.open(out, "w:gz" if out.endswith(".gz") else "w", format=tarfile.GNU_FORMAT) as tar:
    for name, kind, data, mode in spec:
        info = tarfile.TarInfo(name)
        info.mode = mode
        info.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE,
                     "hard": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE}[kind]
        body = None
        if kind == "file":
            body = data.encode()
            info.size = len(body)
        elif kind in ("sym", "hard"):
            info.linkname = data
        tar.addfile(info, io.BytesIO(body) if body is not None else None)
"#;

/// Writes a tar.gz of `count` files in nested folders, with symlinks.
const MAKE_BIG: &str = r#"
import io, sys, tarfile
out, count = sys.argv[1], int(sys.argv[2])
with tarfile.open(out, "w:gz", compresslevel=1) as tar:
    for i in range(count):
        body = (("file %d " % i) * (1 + i % 50)).encode()
        info = tarfile.TarInfo("lib/d%03d/f%05d.py" % (i % 300, i))
        info.size, info.mode = len(body), 0o644
        tar.addfile(info, io.BytesIO(body))
        if i % 100 == 0:
            link = tarfile.TarInfo("bin/l%05d" % i)
            link.type, link.linkname = tarfile.SYMTYPE, "../lib/d%03d/f%05d.py" % (i % 300, i)
            tar.addfile(link)
"#;

fn python() -> Option<PathBuf> {
    require_tool("python3", "FERRY_TEST_PYTHON", &["python3"])
}

fn make_tar(python: &Path, out: &Path, spec: serde_json::Value) {
    let status = Command::new(python)
        .args(["-c", MAKE_TAR])
        .arg(out)
        .arg(spec.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

fn plan(uri: &str, dest: &Path) -> String {
    serde_json::json!({
        "version": 1,
        "items": [{"uri": uri, "dest": path_str(dest), "name": "env", "unpack": true}],
    })
    .to_string()
}

fn file_uri(path: &Path) -> String {
    format!("file://{}", path_str(path))
}

#[test]
fn evil_archives_are_refused_naming_the_entry_and_write_nothing_outside() {
    let Some(python) = python() else { return };
    let root = tempfile::tempdir().unwrap();
    let outside = root.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let o = path_str(&outside).to_owned();
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        (
            "dotdot.tar",
            serde_json::json!([["../x", "file", "x", 420]]),
            "entry \"../x\" refused",
        ),
        (
            "abs.tar",
            serde_json::json!([[format!("{o}/x"), "file", "x", 420]]),
            "name is absolute",
        ),
        (
            "through-link.tar",
            serde_json::json!([["lib", "sym", &o, 511], ["lib/x", "file", "pwned", 420]]),
            "entry \"lib/x\" refused",
        ),
        (
            "chain.tar",
            serde_json::json!([
                ["a", "sym", &o, 511],
                ["b", "sym", "a", 511],
                ["b/x", "file", "p", 420]
            ]),
            "extraction never follows links",
        ),
        (
            "hardlink.tar",
            serde_json::json!([["h", "hard", format!("{o}/victim"), 420]]),
            "entry \"h\" refused: hard link to",
        ),
        (
            "device.tar",
            serde_json::json!([["null", "chr", "", 438]]),
            "it is a device node",
        ),
        (
            "fifo.tar",
            serde_json::json!([["pipe", "fifo", "", 438]]),
            "it is a FIFO",
        ),
    ];
    for (name, spec, expected) in cases {
        let archive = root.path().join(name);
        make_tar(&python, &archive, spec);
        let dest = root.path().join("dest");
        let output = run(&["--plan-json", &plan(&file_uri(&archive), &dest)]);
        let text = stderr(&output);
        assert!(!output.status.success(), "{name} was unpacked: {text}");
        assert!(text.contains(expected), "{name}: {text}");
        assert_eq!(entries_below(&outside), Vec::<String>::new(), "{name}");
        assert_eq!(
            entries_below(&dest),
            Vec::<String>::new(),
            "{name} left {:?}",
            entries_below(&dest)
        );
        let mut top: Vec<String> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".tar"))
            .collect();
        top.sort();
        assert_eq!(top, ["dest", "outside"], "{name}");
    }
}

#[test]
fn a_wrong_digest_pin_unpacks_nothing_and_a_right_one_is_kept_on_rerun() {
    let Some(python) = python() else { return };
    let root = tempfile::tempdir().unwrap();
    let archive = root.path().join("env.tar.gz");
    make_tar(
        &python,
        &archive,
        serde_json::json!([
            ["bin/python", "file", "#!", 493],
            ["lib/a.py", "file", "A=1", 420]
        ]),
    );
    let dest = root.path().join("dest");
    let wrong = format!(
        "{}#sha256={}",
        file_uri(&archive),
        Digest::of(b"other").hex()
    );
    let output = run(&["--plan-json", &plan(&wrong, &dest)]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("digest mismatch"),
        "{}",
        stderr(&output)
    );
    assert_eq!(entries_below(&dest), Vec::<String>::new());

    let digest = Digest::of(&std::fs::read(&archive).unwrap());
    let right = format!("{}#sha256={}", file_uri(&archive), digest.hex());
    for run_number in 0..2 {
        let output = run(&["--plan-json", &plan(&right, &dest)]);
        let text = stderr(&output);
        assert!(output.status.success(), "{text}");
        let expected = if run_number == 0 {
            "(1 fetched, 0 from cache, 0 already present"
        } else {
            "(0 fetched, 0 from cache, 1 already present"
        };
        assert!(text.contains(expected), "run {run_number}: {text}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dest.join("env/bin/python"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    let visible: Vec<String> = entries_below(&dest)
        .into_iter()
        .filter(|e| !e.starts_with(".ferry-unpacked-"))
        .collect();
    assert_eq!(
        visible,
        [
            "env",
            "env/bin",
            "env/bin/python",
            "env/lib",
            "env/lib/a.py"
        ]
    );
}

#[test]
fn killed_mid_extraction_a_rerun_leaves_the_whole_tree() {
    let Some(python) = python() else { return };
    let root = tempfile::tempdir().unwrap();
    let archive = root.path().join("big.tar.gz");
    let status = Command::new(&python)
        .args(["-c", MAKE_BIG])
        .arg(&archive)
        .arg("30000")
        .status()
        .unwrap();
    assert!(status.success());
    let dest = root.path().join("dest");
    let plan = plan(&file_uri(&archive), &dest);
    let mut child = Command::new(bin("ferry-init"))
        .args(["--plan-json", &plan])
        .env_clear()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until extraction is under way (a temp tree with entries), then
    // kill -9.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut killed_mid_way = false;
    loop {
        let temp = std::fs::read_dir(&dest).ok().and_then(|entries| {
            entries.flatten().find(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(".ferry-unpack-")
            })
        });
        if let Some(temp) = temp
            && entries_below(&temp.path().join("lib")).len() > 200
        {
            child.kill().unwrap();
            killed_mid_way = child.wait().unwrap().code().is_none();
            break;
        }
        if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        killed_mid_way,
        "ferry-init finished before it could be killed"
    );
    assert!(
        !dest.join("env").exists(),
        "no half tree under the final name"
    );

    let output = run(&["--plan-json", &plan]);
    assert!(output.status.success(), "{}", stderr(&output));
    let files: Vec<String> = entries_below(&dest.join("env"))
        .into_iter()
        .filter(|e| e.ends_with(".py") || e.starts_with("bin/"))
        .collect();
    assert_eq!(files.len(), 30000 + 300, "files and links");
    assert_eq!(
        std::fs::read_to_string(dest.join("env/lib/d007/f29707.py")).unwrap(),
        "file 29707 ".repeat(1 + 29707 % 50)
    );
    assert_eq!(
        std::fs::read_link(dest.join("env/bin/l29700")).unwrap(),
        Path::new("../lib/d000/f29700.py")
    );
    let leftovers: Vec<String> = std::fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "env")
        .collect();
    assert_eq!(
        leftovers,
        Vec::<String>::new(),
        "no temp tree or archive left"
    );
}

#[test]
fn four_init_containers_on_one_node_cache_unpack_once() {
    let Some(python) = python() else { return };
    let root = tempfile::tempdir().unwrap();
    let archive = root.path().join("env.tar.gz");
    make_tar(
        &python,
        &archive,
        serde_json::json!([
            ["bin/python3.11", "file", "#!elf", 493],
            ["bin/python", "sym", "python3.11", 511],
            ["lib/a.py", "file", "A=1", 420]
        ]),
    );
    let digest = Digest::of(&std::fs::read(&archive).unwrap());
    let uri = format!("{}#sha256={}", file_uri(&archive), digest.hex());
    let cache = root.path().join("cache");
    let children: Vec<(PathBuf, std::process::Child)> = (0..4)
        .map(|pod| {
            let dest = root.path().join(format!("pod{pod}"));
            let child = Command::new(bin("ferry-init"))
                .args([
                    "--cache-dir",
                    path_str(&cache),
                    "--plan-json",
                    &plan(&uri, &dest),
                ])
                .env_clear()
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (dest, child)
        })
        .collect();
    let mut built = 0;
    let mut inodes = Vec::new();
    for (dest, child) in children {
        let output = child.wait_with_output().unwrap();
        let text = stderr(&output);
        assert!(output.status.success(), "{text}");
        built += text.matches("unpacked into the node cache").count();
        use std::os::unix::fs::MetadataExt;
        inodes.push(std::fs::metadata(dest.join("env/lib/a.py")).unwrap().ino());
        assert_eq!(
            std::fs::read_link(dest.join("env/bin/python")).unwrap(),
            Path::new("python3.11")
        );
        assert_eq!(
            std::fs::read(dest.join("env/bin/python3.11")).unwrap(),
            b"#!elf"
        );
    }
    assert_eq!(built, 1, "the tree is unpacked once for the node");
    assert!(
        inodes.windows(2).all(|w| w[0] == w[1]),
        "every pod links the one cached tree: {inodes:?}"
    );

    // A file written through a pod's hard link breaks the seal: the next
    // pod gets a tree unpacked again, with the archive's bytes.
    let cached_file = root.path().join("pod0/env/lib/a.py");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cached_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&cached_file, "tampered").unwrap();
    let dest = root.path().join("pod4");
    let output = run(&[
        "--cache-dir",
        path_str(&cache),
        "--plan-json",
        &plan(&uri, &dest),
    ]);
    let text = stderr(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("unpacked into the node cache"), "{text}");
    assert_eq!(
        std::fs::read_to_string(dest.join("env/lib/a.py")).unwrap(),
        "A=1"
    );
}
