//! A small tmpfs, so a test can fill a disk for real (needs root or
//! CAP_SYS_ADMIN, which CI has).

use std::path::Path;
use std::process::Command;

use crate::in_ci;

/// A mounted tmpfs; unmounted (lazily) when dropped.
pub struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `megabytes`, or says plainly why it cannot: under
    /// `CI=true` that is a failure, elsewhere the caller skips.
    pub fn mount(megabytes: u32) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}M"), "tmpfs"])
            .arg(dir.path())
            .status();
        if !status.is_ok_and(|s| s.success()) {
            let msg = "cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN); the disk-full case was not exercised";
            assert!(!in_ci(), "CI=true and the disk-full test cannot run: {msg}");
            eprintln!("NOT RUN: {msg}");
            return None;
        }
        Some(Self { dir })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
