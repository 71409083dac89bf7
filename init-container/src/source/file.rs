//! `file://` (a path on a volume mounted into the init container, copied)
//! and the existence check for `local://` (already in the image).

use std::io::SeekFrom;
use std::path::PathBuf;

use async_trait::async_trait;
use futures::TryStreamExt;
use tokio::io::AsyncSeekExt;
use tokio_util::io::ReaderStream;

use super::{Opened, Source};
use crate::error::FetchError;

/// Read buffer for mounted files: large reads keep network volumes fast.
const READ_BUFFER: usize = 256 * 1024;

/// A file on a mounted volume.
pub struct FileSource {
    path: PathBuf,
}

impl FileSource {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }
}

fn open_error(path: &std::path::Path, error: std::io::Error) -> FetchError {
    match error.kind() {
        std::io::ErrorKind::NotFound => FetchError::NotFound(path.display().to_string()),
        std::io::ErrorKind::PermissionDenied => {
            FetchError::Denied(format!("{}: {error}", path.display()))
        }
        _ => FetchError::io(format!("opening {}", path.display()), error),
    }
}

#[async_trait]
impl Source for FileSource {
    async fn open(&self, offset: u64) -> Result<Opened, FetchError> {
        let mut file = tokio::fs::File::open(&self.path)
            .await
            .map_err(|e| open_error(&self.path, e))?;
        let meta = file
            .metadata()
            .await
            .map_err(|e| open_error(&self.path, e))?;
        if !meta.is_file() {
            return Err(FetchError::Invalid(format!(
                "{} is not a regular file",
                self.path.display()
            )));
        }
        if offset > 0 {
            file.seek(SeekFrom::Start(offset))
                .await
                .map_err(|e| FetchError::io(format!("seeking {}", self.path.display()), e))?;
        }
        let path = self.path.display().to_string();
        let body = ReaderStream::with_capacity(file, READ_BUFFER)
            .map_err(move |e| FetchError::io(format!("reading {path}"), e));
        Ok(Opened {
            body: Box::pin(body),
            start: offset,
            size: Some(meta.len()),
        })
    }

    fn describe(&self) -> String {
        format!("file://{}", self.path.display())
    }
}

/// Checks a `local://` path: it must be a regular file (following
/// symlinks: images often link jars into place). Returns its size.
pub fn check_local(path: &std::path::Path) -> Result<u64, FetchError> {
    let meta = std::fs::metadata(path).map_err(|e| open_error(path, e))?;
    if !meta.is_file() {
        return Err(FetchError::Invalid(format!(
            "local://{} is not a regular file",
            path.display()
        )));
    }
    Ok(meta.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_source_meets_the_source_contract() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.path().join("a.bin"), &data).unwrap();
        let present = FileSource::new(dir.path().join("a.bin"));
        let missing = FileSource::new(dir.path().join("nope.bin"));
        crate::source::contract_tests::check(&present, &missing, &data).await;
    }

    #[test]
    fn local_check_wants_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), b"abc").unwrap();
        assert_eq!(check_local(&dir.path().join("a")).unwrap(), 3);
        assert!(matches!(
            check_local(&dir.path().join("b")),
            Err(FetchError::NotFound(_))
        ));
        assert!(matches!(
            check_local(dir.path()),
            Err(FetchError::Invalid(_))
        ));
    }
}
