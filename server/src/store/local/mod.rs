//! The [`Backend`] on a local data directory, the default.
//!
//! Keys are paths under the directory. Blobs take fast paths of their own:
//! a blob is stat'ed and opened in place on the connection's task (a few
//! microseconds, less than a hop to tokio's blocking pool and back, the way
//! nginx serves static files without thread pools), small ones are kept in
//! memory ([`small`]), large ones stream out in chunks ([`chunks`]), and
//! uploads are written by a thread of their own ([`write`]). Small objects,
//! listings and renames go through `object_store`'s `LocalFileSystem`
//! (with fsync), except the upload listing, which reads `uploads/` itself
//! so it also sees names that listing hides (`<uuid>#<n>`, left by earlier
//! versions).

mod chunks;
mod parts;
mod small;
mod write;

use std::hash::{Hash as _, Hasher as _};
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use ferry_core::Digest;
use ferry_core::range::ByteRange;
use futures::StreamExt as _;
use object_store::local::LocalFileSystem;
use object_store::path::Path;

use self::small::{FileId, SmallBlobs};
use super::StoreError;
use super::backend::{
    Backend, BodyLimits, Content, Object, ObjectInfo, OpenBlob, PartData, PutOutcome, ReadBlob,
    UploadBody, Version, WriteMode,
};
use super::layout::{self, Prefix};
use super::object::ObjectStoreBackend;

/// Read size for streaming blobs out. An open download holds one or two of
/// these (hyper queues at most 128 KiB per connection), so this bounds
/// memory under fan-out: 200 downloads hold about 25 MiB.
const READ_BUFFER: usize = 64 * 1024;
/// Reads up to this size are served from one buffer read at once.
const SMALL_READ: u64 = 64 * 1024;
/// Locks that keep a compare-and-swap apart from other writes of its key.
const WRITE_LOCKS: usize = 64;

/// Storage in a local directory.
#[derive(Debug)]
pub struct LocalBackend {
    root: PathBuf,
    /// `LocalFileSystem` under `root`, for small objects, listings, renames.
    objects: ObjectStoreBackend,
    /// The same directory without fsync, for upload session records: like
    /// the parts they describe (see [`parts`]) they need only survive a
    /// killed process, and a sync per chunk cost more than the chunk.
    unsynced: ObjectStoreBackend,
    /// Small blobs read recently.
    small: Arc<SmallBlobs>,
    /// A compare-and-swap reads the version and then writes; overwrites and
    /// deletes of the same key wait for it (by hash of the key), so none
    /// slips in between. Creates need none: a create and an update of one
    /// key cannot both succeed.
    write_locks: Vec<tokio::sync::Mutex<()>>,
    /// Parts files whose bytes this process wrote or checked: the page
    /// cache holds what it wrote, so it need not re-hash them (see
    /// [`parts`]).
    parts_known: Arc<parts::Known>,
}

impl LocalBackend {
    /// Serves the existing directory `root` (absolute and canonical).
    pub fn new(root: PathBuf) -> Result<Self, object_store::Error> {
        let fs = LocalFileSystem::new_with_prefix(&root)?
            .with_fsync(true)
            // No automatic cleanup of empty directories: removing a
            // directory while another write creates its file there races
            // and fails that write.
            .with_automatic_cleanup(false);
        let description = root.display().to_string();
        let unsynced = LocalFileSystem::new_with_prefix(&root)?
            .with_fsync(false)
            .with_automatic_cleanup(false);
        Ok(Self {
            root,
            objects: ObjectStoreBackend::new(Arc::new(fs), description.clone()),
            unsynced: ObjectStoreBackend::new(Arc::new(unsynced), description),
            small: Arc::default(),
            write_locks: (0..WRITE_LOCKS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            parts_known: Arc::default(),
        })
    }

    /// The file of `key`.
    fn file(&self, key: &Path) -> PathBuf {
        self.root.join(key.as_ref())
    }

    fn write_lock(&self, key: &Path) -> &tokio::sync::Mutex<()> {
        let mut hasher = std::hash::DefaultHasher::new();
        key.hash(&mut hasher);
        &self.write_locks[hasher.finish() as usize % WRITE_LOCKS]
    }

    /// Removes the file of `key`, if there is one.
    async fn remove(&self, key: &Path) -> Result<(), StoreError> {
        let file = self.file(key);
        let removed = tokio::task::spawn_blocking(move || std::fs::remove_file(file))
            .await
            .map_err(|e| StoreError::from_join("file removal", e))?;
        match removed {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::from_io(e)),
        }
    }

    /// Every file directly under `uploads/`, whatever its name.
    async fn list_uploads(&self) -> Result<Vec<ObjectInfo>, StoreError> {
        let dir = self.file(&Prefix::Uploads.path());
        tokio::task::spawn_blocking(move || read_upload_dir(&dir))
            .await
            .map_err(|e| StoreError::from_join("upload listing", e))?
    }
}

fn read_upload_dir(dir: &std::path::Path) -> Result<Vec<ObjectInfo>, StoreError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::from_io(e)),
    };
    let mut uploads = Vec::new();
    for entry in entries {
        let entry = entry.map_err(StoreError::from_io)?;
        // Gone since the directory was read, or not a file: not an upload.
        let Ok(meta) = entry.metadata() else { continue };
        let Ok(modified) = meta.modified() else {
            continue;
        };
        let key = entry
            .file_name()
            .to_str()
            .and_then(|name| Path::parse(format!("{}/{name}", Prefix::Uploads.as_str())).ok());
        match key {
            Some(key) if meta.is_file() => uploads.push(ObjectInfo {
                key,
                size: meta.len(),
                last_modified: DateTime::<Utc>::from(modified),
            }),
            _ => tracing::debug!(path = %entry.path().display(), "not an upload; left alone"),
        }
    }
    Ok(uploads)
}

#[async_trait]
impl Backend for LocalBackend {
    fn description(&self) -> &str {
        self.objects.description()
    }

    async fn put_blob(
        &self,
        expected: Digest,
        body: UploadBody<'_>,
        limits: BodyLimits,
    ) -> Result<PutOutcome, StoreError> {
        write::put(&self.root, expected, body, limits).await
    }

    async fn put_blobs(
        &self,
        blobs: Vec<(Digest, Bytes)>,
        _idle_timeout: std::time::Duration,
    ) -> Result<Vec<PutOutcome>, StoreError> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || write::put_batch(&root, &blobs))
            .await
            .map_err(|e| StoreError::from_join("batch upload", e))?
    }

    async fn blob_size(&self, digest: &Digest) -> Result<u64, StoreError> {
        // In place: see the module doc.
        std::fs::metadata(self.root.join(layout::blob_key(digest)))
            .map(|meta| meta.len())
            .map_err(StoreError::from_io)
    }

    async fn open_blob(&self, digest: &Digest) -> Result<OpenBlob, StoreError> {
        // In place: see the module doc.
        let path = self.root.join(layout::blob_key(digest));
        let meta = std::fs::metadata(&path).map_err(StoreError::from_io)?;
        let (size, id) = (meta.len(), FileId::of(&meta));
        if size <= SMALL_READ
            && let Some(bytes) = self.small.get(digest, id)
        {
            return Ok(OpenBlob::in_memory(bytes));
        }
        let file = std::fs::File::open(&path).map_err(StoreError::from_io)?;
        let reader = FileReader {
            file,
            id,
            digest: *digest,
            small: self.small.clone(),
        };
        Ok(OpenBlob::new(size, Box::new(reader)))
    }

    async fn delete_blob(&self, digest: &Digest) -> Result<(), StoreError> {
        self.small.forget(digest);
        self.remove(&layout::blob(digest)).await
    }

    async fn list(&self, prefix: Prefix) -> Result<Vec<ObjectInfo>, StoreError> {
        match prefix {
            Prefix::Uploads => self.list_uploads().await,
            _ => self.objects.list(prefix).await,
        }
    }

    async fn read_object(&self, key: &Path) -> Result<Object, StoreError> {
        self.objects.read_object(key).await
    }

    async fn write_object(
        &self,
        key: &Path,
        bytes: Bytes,
        mode: WriteMode,
    ) -> Result<Version, StoreError> {
        let expected = match mode {
            WriteMode::Create => return self.objects.write_object(key, bytes, mode).await,
            WriteMode::Overwrite => None,
            WriteMode::Update(version) => Some(version),
        };
        let _locked = self.write_lock(key).lock().await;
        if let Some(expected) = expected {
            let current = match self.objects.read_object(key).await {
                Ok(object) => Some(object.version),
                Err(StoreError::NotFound) => None,
                Err(e) => return Err(e),
            };
            if current.as_ref() != Some(&expected) {
                return Err(StoreError::VersionMismatch {
                    key: key.to_string(),
                });
            }
        }
        let writer = if layout::session_of_record(key).is_some() {
            &self.unsynced
        } else {
            &self.objects
        };
        writer.write_object(key, bytes, WriteMode::Overwrite).await
    }

    async fn delete_object(&self, key: &Path) -> Result<(), StoreError> {
        let _locked = self.write_lock(key).lock().await;
        self.remove(key).await
    }

    async fn rename(&self, from: &Path, to: &Path) -> Result<(), StoreError> {
        if let Some(digest) = layout::digest_of_blob(from) {
            self.small.forget(&digest);
        }
        self.objects.rename(from, to).await
    }

    async fn probe(&self) -> Result<(), StoreError> {
        self.objects.probe().await
    }

    fn min_part_size(&self) -> u64 {
        1
    }

    async fn create_parts(&self, key: &Path) -> Result<String, StoreError> {
        parts::create(self.file(key), &self.parts_known).await
    }

    async fn put_part(&self, key: &Path, _id: &str, part: PartData) -> Result<String, StoreError> {
        parts::put(self.file(key), part, &self.parts_known).await
    }

    async fn parts_intact(
        &self,
        key: &Path,
        _id: &str,
        hash: &ferry_core::Midstate,
    ) -> Result<bool, StoreError> {
        parts::intact(self.file(key), hash, self.parts_known.clone()).await
    }

    async fn complete_parts(
        &self,
        key: &Path,
        _id: &str,
        parts: Vec<String>,
    ) -> Result<(), StoreError> {
        parts::complete(self.file(key), &parts).await
    }

    async fn abort_parts(&self, key: &Path, _id: &str) -> Result<(), StoreError> {
        parts::abort(self.file(key), &self.parts_known).await
    }

    async fn publish_upload(
        &self,
        key: &Path,
        digest: &Digest,
        size: u64,
    ) -> Result<PutOutcome, StoreError> {
        self.small.forget(digest);
        let target = self.root.join(layout::blob_key(digest));
        parts::publish(self.file(key), target, size, &self.parts_known).await
    }

    async fn head_object(&self, key: &Path) -> Result<ObjectInfo, StoreError> {
        self.objects.head_object(key).await
    }

    fn can_sign(&self) -> bool {
        false
    }

    async fn signed_blob_url(
        &self,
        _digest: &Digest,
        _expires_in: std::time::Duration,
    ) -> Result<url::Url, StoreError> {
        Err(StoreError::Unsupported(
            "local disk cannot sign URLs; its blobs are served by the server".into(),
        ))
    }
}

/// An opened local blob file.
struct FileReader {
    file: std::fs::File,
    id: FileId,
    digest: Digest,
    small: Arc<SmallBlobs>,
}

#[async_trait]
impl ReadBlob for FileReader {
    async fn read(
        self: Box<Self>,
        size: u64,
        range: Option<ByteRange>,
    ) -> Result<Content, StoreError> {
        let (start, len) = match range {
            Some(r) => (r.start, r.len()),
            None => (0, size),
        };
        if size <= SMALL_READ {
            // Read whole and remembered, whatever part was asked for.
            let mut buf = vec![0u8; size as usize];
            std::os::unix::fs::FileExt::read_exact_at(&self.file, &mut buf, 0)
                .map_err(StoreError::from_io)?;
            let bytes = Bytes::from(buf);
            self.small.insert(self.digest, self.id, bytes.clone());
            return Ok(Content::Whole(
                bytes.slice(start as usize..(start + len) as usize),
            ));
        }
        if len <= SMALL_READ {
            // One positioned read into one buffer: no stream, no file state,
            // and hyper can send it with the headers in one write.
            let mut buf = vec![0u8; len as usize];
            std::os::unix::fs::FileExt::read_exact_at(&self.file, &mut buf, start)
                .map_err(StoreError::from_io)?;
            return Ok(Content::Whole(Bytes::from(buf)));
        }
        let stream = chunks::Chunks::new(self.file, start, len, READ_BUFFER)
            .map_err(StoreError::from_io)?
            .boxed();
        Ok(Content::Stream(stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend() -> (tempfile::TempDir, LocalBackend) {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().canonicalize().expect("canonical temp dir");
        (dir, LocalBackend::new(root).expect("local backend"))
    }

    async fn put(backend: &LocalBackend, bytes: &'static [u8]) {
        let body = futures::stream::iter([Ok(Bytes::from_static(bytes))]).boxed();
        let limits = BodyLimits {
            max_bytes: 1 << 20,
            idle_timeout: std::time::Duration::from_secs(5),
            expected_len: None,
        };
        backend
            .put_blob(Digest::of(bytes), body, limits)
            .await
            .expect("put");
    }

    async fn read_whole(backend: &LocalBackend, digest: &Digest) -> Bytes {
        match backend
            .open_blob(digest)
            .await
            .expect("open")
            .read(None)
            .await
        {
            Ok(super::super::BlobBody {
                content: Content::Whole(bytes),
                ..
            }) => bytes,
            _ => panic!("a small blob is read whole"),
        }
    }

    #[tokio::test]
    async fn uploads_left_by_earlier_versions_are_listed_and_deleted() {
        let (dir, backend) = backend();
        let uploads = dir.path().join("uploads");
        std::fs::create_dir_all(uploads.join("not-a-file")).unwrap();
        // `object_store`'s local listing hides `#<n>` names; ours must not.
        std::fs::write(uploads.join("5f0c6a3e-stale#1"), b"partial").unwrap();
        let listed = backend.list(Prefix::Uploads).await.unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].key.as_ref(), "uploads/5f0c6a3e-stale#1");
        assert_eq!(listed[0].size, 7);
        backend.delete_object(&listed[0].key).await.unwrap();
        assert!(!uploads.join("5f0c6a3e-stale#1").exists());
        assert!(backend.list(Prefix::Uploads).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_blob_file_replaced_behind_the_servers_back_is_read_afresh() {
        let (dir, backend) = backend();
        put(&backend, b"first").await;
        let digest = Digest::of(b"first");
        // Read twice: the second read comes from memory.
        assert_eq!(read_whole(&backend, &digest).await.as_ref(), b"first");
        assert_eq!(read_whole(&backend, &digest).await.as_ref(), b"first");
        let path = dir.path().join(layout::blob_key(&digest));
        let other = dir.path().join("other");
        std::fs::write(&other, b"again").unwrap();
        std::fs::rename(&other, &path).unwrap();
        assert_eq!(read_whole(&backend, &digest).await.as_ref(), b"again");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn of_concurrent_updates_at_one_version_exactly_one_wins() {
        let (_dir, backend) = backend();
        let backend = Arc::new(backend);
        // What a name takeover between replicas will do.
        let key = layout::name(&ferry_core::BundleName::parse("taken-over").unwrap());
        let version = backend
            .write_object(&key, Bytes::from_static(b"0"), WriteMode::Create)
            .await
            .unwrap();
        let updates = (0..8u8).map(|i| {
            let (backend, key, version) = (backend.clone(), key.clone(), version.clone());
            tokio::spawn(async move {
                backend
                    .write_object(
                        &key,
                        Bytes::from(vec![b'1' + i]),
                        WriteMode::Update(version),
                    )
                    .await
            })
        });
        let mut won = 0;
        for update in futures::future::join_all(updates).await {
            match update.unwrap() {
                Ok(_) => won += 1,
                Err(StoreError::VersionMismatch { .. }) => {}
                Err(e) => panic!("update failed: {e}"),
            }
        }
        assert_eq!(won, 1);
    }

    #[tokio::test]
    async fn fsck_counts_an_upload_in_flight() {
        let (_dir, backend) = backend();
        let store = super::super::Store::new(Arc::new(backend));
        let (chunks, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let body = tokio_stream_of(receiver);
        let bytes = Bytes::from_static(b"arriving slowly");
        let upload = {
            let store = store.clone();
            let digest = Digest::of(&bytes);
            tokio::spawn(async move {
                let limits = BodyLimits {
                    max_bytes: 1 << 20,
                    idle_timeout: std::time::Duration::from_secs(30),
                    expected_len: None,
                };
                store.put_blob(digest, body, limits).await
            })
        };
        chunks.send(Ok(bytes.slice(..5))).await.unwrap();
        let mut in_flight = 0;
        for _ in 0..500 {
            in_flight = crate::fsck::fsck(&store, false, 1)
                .await
                .unwrap()
                .uploads_in_flight;
            if in_flight > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(in_flight, 1, "the upload being written is counted");
        chunks.send(Ok(bytes.slice(5..))).await.unwrap();
        drop(chunks);
        assert_eq!(
            upload.await.unwrap().unwrap(),
            PutOutcome::Created(bytes.len() as u64)
        );
        let report = crate::fsck::fsck(&store, false, 1).await.unwrap();
        assert_eq!(report.uploads_in_flight, 0);
        assert_eq!(report.blobs_checked, 1);
    }

    fn tokio_stream_of(
        mut receiver: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
    ) -> UploadBody<'static> {
        futures::stream::poll_fn(move |cx| receiver.poll_recv(cx)).boxed()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_large_upload_hashed_and_flushed_on_threads_round_trips() {
        // Past the size that moves hashing to a thread of its own and past
        // the first background flush.
        let (dir, backend) = backend();
        let piece: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
        let mut hasher = ferry_core::Sha256Hasher::new();
        for _ in 0..40 {
            hasher.update(&piece);
        }
        let digest = hasher.finish();
        let piece = Bytes::from(piece);
        let body = futures::stream::iter((0..40).map(move |_| Ok(piece.clone()))).boxed();
        let limits = BodyLimits {
            max_bytes: 64 << 20,
            idle_timeout: std::time::Duration::from_secs(30),
            expected_len: None,
        };
        let outcome = backend.put_blob(digest, body, limits).await.unwrap();
        assert_eq!(outcome, PutOutcome::Created(40 << 20));
        let stored = std::fs::read(dir.path().join(layout::blob_key(&digest))).unwrap();
        assert_eq!(Digest::of(&stored), digest);
        assert!(backend.list(Prefix::Uploads).await.unwrap().is_empty());
    }
}
