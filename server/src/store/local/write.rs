//! Uploads to a local data directory, without `object_store` in the way:
//! all the low-level writing, fsync and atomic publishing of the local
//! backend is here, and only here.
//!
//! The body is received on the connection's task and handed through a short
//! queue to a blocking thread that writes it; a large body is hashed on a
//! second thread, so receiving, hashing and writing overlap. Durability is
//! kept: the file is fsynced before it is renamed into `blobs/`, and that
//! directory after. To keep the final fsync short, another thread asks the
//! kernel to write the file out (`fdatasync`) every [`FLUSH_EVERY`] bytes
//! while the upload is still arriving.

use std::fs::File;
use std::io::Write as _;
use std::path::Path;
use std::sync::mpsc as std_mpsc;

use bytes::Bytes;
use ferry_core::{Digest, Sha256Hasher};
use tokio::sync::mpsc;

use super::super::backend::{BodyLimits, PutOutcome, UploadBody};
use super::super::{StoreError, body, layout};

/// Chunks queued between the connection and the writer thread. hyper hands
/// over at most a few hundred KiB per chunk, so this bounds an upload's
/// buffered memory to a few MiB.
const QUEUE: usize = 8;
/// Written bytes between two background flushes.
const FLUSH_EVERY: u64 = 32 << 20;

/// Uploads larger than this are hashed on a second thread.
const HASH_THREAD_AFTER: u64 = 4 << 20;

enum Hashing<'scope> {
    Inline(Sha256Hasher),
    Thread(
        std_mpsc::SyncSender<Bytes>,
        std::thread::ScopedJoinHandle<'scope, Sha256Hasher>,
    ),
}

enum Message {
    Chunk(Bytes),
    /// The body ended; the writer answers with the digest and size.
    End,
}

/// Receives `body` into `root/uploads/<uuid>`, and publishes it as blob
/// `expected` if it hashes to that.
pub(super) async fn put(
    root: &Path,
    expected: Digest,
    body: UploadBody<'_>,
    limits: BodyLimits,
) -> Result<PutOutcome, StoreError> {
    put_upload(root, expected, body, limits)
        .await
        .map_err(|e| match e {
            // A file or directory of ours vanished mid-write: not the "no
            // such blob" a client could act on.
            StoreError::NotFound => {
                StoreError::Backend("upload file vanished while written".into())
            }
            other => other,
        })
}

async fn put_upload(
    root: &Path,
    expected: Digest,
    mut body: UploadBody<'_>,
    limits: BodyLimits,
) -> Result<PutOutcome, StoreError> {
    let upload = root.join(layout::new_upload().as_ref());
    let target = root.join(layout::blob_key(&expected));
    let (sender, receiver) = mpsc::channel(QUEUE);
    let writer = {
        let upload = upload.clone();
        tokio::task::spawn_blocking(move || write_upload(&upload, receiver))
    };
    let received = receive(sender, &mut body, limits).await;
    // The writer ends when the queue closes; on any error it removes the file.
    let written = writer.await;
    let written = written.map_err(|e| {
        remove_quietly(&upload);
        StoreError::from_join("upload writer", e)
    })?;
    let (actual, size, file) = match (received, written) {
        (Err(e), _) => {
            remove_quietly(&upload);
            return Err(e);
        }
        (Ok(()), Err(e)) => return Err(e),
        (Ok(()), Ok(done)) => done,
    };
    if actual != expected {
        drop(file);
        remove_quietly(&upload);
        return Err(StoreError::DigestMismatch { expected, actual });
    }
    tokio::task::spawn_blocking(move || publish(file, &upload, &target, size))
        .await
        .map_err(|e| StoreError::from_join("upload publish", e))?
}

/// Forwards body chunks to the writer; an error, the limit or a stall ends it.
async fn receive(
    sender: mpsc::Sender<Message>,
    body: &mut UploadBody<'_>,
    limits: BodyLimits,
) -> Result<(), StoreError> {
    let mut received = 0u64;
    while let Some(chunk) = body::next_chunk(body, &mut received, limits).await? {
        if sender.send(Message::Chunk(chunk)).await.is_err() {
            // The writer stopped on an error, which it reports itself.
            return Ok(());
        }
    }
    let _ = sender.send(Message::End).await;
    Ok(())
}

/// The writer thread: hashes and writes every chunk; returns the digest, the
/// size and the (not yet synced) file once [`Message::End`] arrives. If the
/// queue closes without it, or anything fails, the file is removed.
fn write_upload(
    path: &Path,
    mut receiver: mpsc::Receiver<Message>,
) -> Result<(Digest, u64, File), StoreError> {
    let file = match create_upload_file(path) {
        Ok(file) => file,
        Err(e) => {
            receiver.close();
            return Err(StoreError::from_io(e));
        }
    };
    let result = std::thread::scope(|scope| {
        let mut writer = Writer::new(scope, &file);
        let outcome = loop {
            match receiver.blocking_recv() {
                Some(Message::Chunk(chunk)) => {
                    if let Err(e) = writer.write(chunk) {
                        break Err(e);
                    }
                }
                Some(Message::End) => break Ok(()),
                None => break Err(StoreError::Body("upload abandoned".into())),
            }
        };
        let hasher = writer.finish()?;
        outcome.map(|()| hasher)
    });
    match result {
        Ok(hasher) => {
            let size = hasher.len();
            Ok((hasher.finish(), size, file))
        }
        Err(e) => {
            receiver.close();
            drop(file);
            remove_quietly(path);
            Err(e)
        }
    }
}

/// One upload on the writer thread: the file, where its bytes are hashed,
/// and the background flusher once there is one.
struct Writer<'scope, 'env> {
    scope: &'scope std::thread::Scope<'scope, 'env>,
    file: &'env File,
    hashing: Hashing<'scope>,
    flusher: Option<std_mpsc::SyncSender<()>>,
    written: u64,
    unflushed: u64,
}

impl<'scope, 'env> Writer<'scope, 'env> {
    fn new(scope: &'scope std::thread::Scope<'scope, 'env>, file: &'env File) -> Self {
        Self {
            scope,
            file,
            hashing: Hashing::Inline(Sha256Hasher::new()),
            flusher: None,
            written: 0,
            unflushed: 0,
        }
    }

    /// Hashes and writes one chunk; asks for a background flush every
    /// [`FLUSH_EVERY`] bytes.
    fn write(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        self.written += chunk.len() as u64;
        if self.written > HASH_THREAD_AFTER
            && let Hashing::Inline(hasher) = &mut self.hashing
        {
            // A large upload: hash on a thread of its own, so hashing and
            // writing overlap.
            let mut hasher = std::mem::take(hasher);
            let (chunks, queued) = std_mpsc::sync_channel::<Bytes>(QUEUE);
            let thread = self.scope.spawn(move || {
                while let Ok(chunk) = queued.recv() {
                    hasher.update(&chunk);
                }
                hasher
            });
            self.hashing = Hashing::Thread(chunks, thread);
        }
        match &mut self.hashing {
            Hashing::Inline(hasher) => hasher.update(&chunk),
            Hashing::Thread(chunks, _) => chunks
                .send(chunk.clone())
                .map_err(|_| StoreError::Internal("upload hasher stopped".into()))?,
        }
        self.file.write_all(&chunk).map_err(StoreError::from_io)?;
        self.unflushed += chunk.len() as u64;
        if self.unflushed >= FLUSH_EVERY {
            self.unflushed = 0;
            let (scope, file) = (self.scope, self.file);
            let wake = self.flusher.get_or_insert_with(|| {
                let (wake, wakes) = std_mpsc::sync_channel::<()>(1);
                scope.spawn(move || {
                    // Errors surface at the final fsync.
                    while wakes.recv().is_ok() {
                        let _ = file.sync_data();
                    }
                });
                wake
            });
            // A flush still running covers these bytes soon enough.
            let _ = wake.try_send(());
        }
        Ok(())
    }

    /// Stops the flusher and the hashing thread; the hash of all written.
    fn finish(self) -> Result<Sha256Hasher, StoreError> {
        drop(self.flusher);
        match self.hashing {
            Hashing::Inline(hasher) => Ok(hasher),
            Hashing::Thread(chunks, thread) => {
                drop(chunks);
                thread
                    .join()
                    .map_err(|_| StoreError::Internal("upload hasher panicked".into()))
            }
        }
    }
}

fn create_upload_file(path: &Path) -> std::io::Result<File> {
    let open = || File::options().write(true).create_new(true).open(path);
    match open() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            open()
        }
        other => other,
    }
}

/// Makes the upload durable and renames it to `target`, unless that blob is
/// already stored (then the upload is dropped).
fn publish(file: File, upload: &Path, target: &Path, size: u64) -> Result<PutOutcome, StoreError> {
    if target.exists() {
        drop(file);
        remove_quietly(upload);
        return Ok(PutOutcome::AlreadyPresent(size));
    }
    let durable = file.sync_all();
    drop(file);
    if let Err(e) = durable {
        remove_quietly(upload);
        return Err(StoreError::from_io(e));
    }
    // Same digest means same bytes, so a concurrent upload of the same blob
    // that renames first is harmless: either rename leaves the blob whole.
    let renamed = rename_creating_dir(upload, target);
    if let Err(e) = renamed {
        remove_quietly(upload);
        return Err(StoreError::from_io(e));
    }
    // The blob's directory entry must survive a crash. The `uploads/` side
    // need not: an entry left there by a crash is an abandoned upload, which
    // GC removes (and on ext4 and XFS the rename is one journal transaction).
    if let Some(dir) = target.parent() {
        sync_dir(dir).map_err(StoreError::from_io)?;
    }
    Ok(PutOutcome::Created(size))
}

fn rename_creating_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::rename(from, to) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && from.exists() => {
            let dir = to.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(dir)?;
            // The new directories' own entries must be durable too
            // (`blobs/sha256/<2 hex>`, and at first `blobs/sha256`, `blobs`).
            for parent in dir.ancestors().skip(1).take(3) {
                sync_dir(parent)?;
            }
            std::fs::rename(from, to)
        }
        other => other,
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn remove_quietly(path: &Path) {
    let _ = std::fs::remove_file(path);
}
