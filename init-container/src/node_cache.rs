//! The node cache's owner: a hostPath that the kubelet creates
//! (`DirectoryOrCreate`) belongs to root with mode 0755, and ferry-init runs
//! as uid 65532, so out of the box it could not write there.
//!
//! Two answers, both here: [`prepare`] (`ferry-init --prepare-cache-for
//! UID:GID`, run as root in an init container before ferry-init, which
//! `ferry submit --node-cache` adds) hands the folder to ferry-init's user;
//! and [`check_writable`] turns a cache that is still not writable into one
//! clear error naming those fixes, before anything is fetched.
//!
//! (A binary module for now: ferry-init's `lib.rs` is being reshaped; this
//! can move into the library with it.)

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;

/// Mode of the cache folders: only ferry-init's user may enter them, since
/// whoever can write the cache can plant files (see `cache.rs`).
const CACHE_DIR_MODE: u32 = 0o700;

/// Makes `dir` and everything in it belong to `owner` (`UID:GID`), folders
/// mode 0700; symlinks are changed themselves, never followed. Returns what
/// to print, or why it failed.
pub fn prepare(dir: &Path, owner: &str) -> Result<String, String> {
    let (uid, gid) = owner
        .split_once(':')
        .and_then(|(u, g)| Some((u.parse::<u32>().ok()?, g.parse::<u32>().ok()?)))
        .ok_or_else(|| {
            format!("--prepare-cache-for {owner:?}: expected UID:GID, e.g. 65532:65532")
        })?;
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let top = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if top.uid() == uid && top.gid() == gid && top.mode() & 0o7777 == CACHE_DIR_MODE {
        // Prepared before; what is inside was made by ferry-init as that
        // user (and root without CAP_DAC_READ_SEARCH could not list it).
        return Ok(format!(
            "ferry-init: cache {} already belongs to {uid}:{gid}",
            dir.display()
        ));
    }
    let mut changed = 0usize;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        let meta = std::fs::symlink_metadata(&at).map_err(|e| format!("{}: {e}", at.display()))?;
        // Listed and chmodded while still root's, then given away: root
        // needs only CAP_CHOWN for what the kubelet created.
        if meta.is_dir() {
            if meta.mode() & 0o7777 != CACHE_DIR_MODE {
                std::fs::set_permissions(&at, std::fs::Permissions::from_mode(CACHE_DIR_MODE))
                    .map_err(|e| format!("chmod {}: {e}", at.display()))?;
            }
            let entries = std::fs::read_dir(&at).map_err(|e| format!("{}: {e}", at.display()))?;
            for entry in entries {
                stack.push(entry.map_err(|e| format!("{}: {e}", at.display()))?.path());
            }
        }
        if meta.uid() != uid || meta.gid() != gid {
            std::os::unix::fs::lchown(&at, Some(uid), Some(gid))
                .map_err(|e| format!("chown {uid}:{gid} {}: {e}", at.display()))?;
            changed += 1;
        }
    }
    Ok(format!(
        "ferry-init: cache {} belongs to {uid}:{gid} (mode 0700; {changed} entries changed)",
        dir.display()
    ))
}

/// Refuses a cache folder this process cannot write, naming the fixes.
pub fn check_writable(dir: &Path) -> Result<(), String> {
    let Ok(meta) = std::fs::metadata(dir) else {
        // Missing: the cache creates it (and says so if it cannot).
        return Ok(());
    };
    let access = rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK;
    if rustix::fs::access(dir, access).is_ok() {
        return Ok(());
    }
    let (uid, gid) = own_ids();
    Err(format!(
        "--cache-dir {dir} is not writable by uid {uid} (it belongs to {owner}:{group}, mode {mode:04o}). \
         A hostPath the kubelet creates belongs to root: run `ferry-init --prepare-cache-for {uid}:{gid} \
         --cache-dir {dir}` as root in an init container before this one (`ferry submit --node-cache` adds it), \
         or create the folder on every node owned by {uid}",
        dir = dir.display(),
        owner = meta.uid(),
        group = meta.gid(),
        mode = meta.mode() & 0o7777,
    ))
}

/// This process's user and group id, as "uid", "gid" (from /proc: the crate
/// has no libc binding); "?" when unknown.
fn own_ids() -> (String, String) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let id = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|ids| ids.split_whitespace().next())
            .unwrap_or("?")
            .to_owned()
    };
    (id("Uid:"), id("Gid:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_owner_is_refused_before_anything_changes() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let error = prepare(&cache, "nonroot").unwrap_err();
        assert!(error.contains("UID:GID"), "{error}");
        assert!(!cache.exists());
    }

    #[test]
    fn preparing_as_the_owner_sets_the_mode_and_changes_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        std::fs::create_dir_all(cache.join("sha256/ab")).unwrap();
        std::fs::write(cache.join("sha256/ab/file"), b"x").unwrap();
        let meta = std::fs::metadata(dir.path()).unwrap();
        let owner = format!("{}:{}", meta.uid(), meta.gid());
        let said = prepare(&cache, &owner).unwrap();
        assert!(said.contains("0 entries changed"), "{said}");
        let again = prepare(&cache, &owner).unwrap();
        assert!(again.contains("already belongs"), "{again}");
        for folder in ["", "sha256", "sha256/ab"] {
            let mode = std::fs::metadata(cache.join(folder)).unwrap().mode() & 0o7777;
            assert_eq!(mode, CACHE_DIR_MODE, "{folder}");
        }
        assert!(check_writable(&cache).is_ok());
    }
}
