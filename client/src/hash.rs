//! Hashing local files on all cores, each with the shared file hashing
//! (`ferry_io::hash`: 1 MiB reads, sha2 with its CPU extensions).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use ferry_core::Digest;
use ferry_io::hash::hash_reader_with_progress;

/// The digest and size of one file, read once.
pub fn hash_file(path: &Path, on_bytes: &(dyn Fn(u64) + Sync)) -> std::io::Result<(Digest, u64)> {
    let file = std::fs::File::open(path)?;
    let hasher = hash_reader_with_progress(file, &mut |n| on_bytes(n))?;
    let size = hasher.len();
    Ok((hasher.finish(), size))
}

/// Hashes `paths` on a pool of threads (one per core), in input order.
pub fn hash_all(
    paths: &[PathBuf],
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<Vec<(Digest, u64)>, (PathBuf, std::io::Error)> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .min(paths.len().max(1));
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<(Digest, u64)>>> = Mutex::new(vec![None; paths.len()]);
    let failure: Mutex<Option<(PathBuf, std::io::Error)>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= paths.len() || failure.lock().map(|f| f.is_some()).unwrap_or(true) {
                        return;
                    }
                    match hash_file(&paths[index], on_bytes) {
                        Ok(result) => {
                            if let Ok(mut r) = results.lock() {
                                r[index] = Some(result);
                            }
                        }
                        Err(e) => {
                            if let Ok(mut f) = failure.lock() {
                                f.get_or_insert((paths[index].clone(), e));
                            }
                            return;
                        }
                    }
                }
            });
        }
    });
    if let Some(failure) = failure.into_inner().unwrap_or(None) {
        return Err(failure);
    }
    Ok(results
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.unwrap_or((Digest::of(b""), 0)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_hashes_match_one_shot_digests_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<PathBuf> = (0..20)
            .map(|i| {
                let p = dir.path().join(format!("f{i}"));
                std::fs::write(&p, vec![i as u8; i * 100_000]).unwrap();
                p
            })
            .collect();
        let total = std::sync::atomic::AtomicU64::new(0);
        let hashes = hash_all(&paths, &|n| {
            total.fetch_add(n, Ordering::Relaxed);
        })
        .unwrap();
        for (i, (digest, size)) in hashes.iter().enumerate() {
            assert_eq!(*digest, Digest::of(&vec![i as u8; i * 100_000]));
            assert_eq!(*size, (i * 100_000) as u64);
        }
        assert_eq!(
            total.load(Ordering::Relaxed),
            (0..20).map(|i| i * 100_000).sum::<usize>() as u64
        );
    }

    #[test]
    fn unreadable_file_is_named_in_the_error() {
        let missing = PathBuf::from("/nonexistent/ferry/file");
        let err = hash_all(std::slice::from_ref(&missing), &|_| {}).unwrap_err();
        assert_eq!(err.0, missing);
    }
}
