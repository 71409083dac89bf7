//! Running ferry-init from tests, and looking at what it left behind.

use std::path::Path;
use std::process::{Command, Output};

use crate::bin;

/// Runs ferry-init with `args` and an empty environment (no stray cloud
/// credentials or `FERRY_*` settings from the caller's shell).
pub fn run(args: &[&str]) -> Output {
    Command::new(bin("ferry-init"))
        .args(args)
        .env_clear()
        .output()
        .expect("run ferry-init")
}

/// A command's stderr as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A temp path as the `&str` a command line takes.
pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// Every entry below `dir` (folders, files, links, temp files), relative,
/// sorted; empty when `dir` does not exist.
pub fn entries_below(dir: &Path) -> Vec<String> {
    walk(dir, true)
}

/// Every entry below `dir` that is not a folder, relative, sorted.
pub fn files_below(dir: &Path) -> Vec<String> {
    walk(dir, false)
}

fn walk(dir: &Path, with_folders: bool) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&at) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let is_folder = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
            if is_folder {
                stack.push(path.clone());
            }
            if with_folders || !is_folder {
                let relative = path.strip_prefix(dir).expect("below dir");
                found.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    found.sort();
    found
}
