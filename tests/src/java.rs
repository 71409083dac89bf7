//! Java classes for tests: a jar holding one class built with the JDK's
//! `javac` and `jar` (Spark's Java 17 is a full JDK here).

use std::path::Path;
use std::process::Command;

/// Builds `jar` holding one class `com.ex.<package>.<class>` whose static
/// method `method` returns `value` (a Java expression).
pub fn java_jar(work: &Path, jar: &Path, package: &str, class: &str, method: &str, value: &str) {
    let src = work.join(format!("src-{package}-{class}"));
    let classes = work.join(format!("classes-{package}-{class}"));
    let _ = std::fs::remove_dir_all(&src);
    let _ = std::fs::remove_dir_all(&classes);
    let dir = src.join("com/ex").join(package);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&classes).unwrap();
    let file = dir.join(format!("{class}.java"));
    let kind = if value.starts_with('"') {
        "String"
    } else {
        "int"
    };
    std::fs::write(
        &file,
        format!(
            "package com.ex.{package};\npublic class {class} {{\n  public static {kind} {method}() {{ return {value}; }}\n}}\n"
        ),
    )
    .unwrap();
    run(Command::new("javac")
        .args(["--release", "17", "-d"])
        .arg(&classes)
        .arg(&file));
    std::fs::create_dir_all(jar.parent().unwrap()).unwrap();
    run(Command::new("jar")
        .arg("cf")
        .arg(jar)
        .arg("-C")
        .arg(&classes)
        .arg("."));
}

fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
