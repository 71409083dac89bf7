//! Uploads to a local data directory, without `object_store` in the way.
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
use std::time::Duration;

use bytes::Bytes;
use ferry_core::{Digest, Sha256Hasher};
use futures::StreamExt;
use tokio::sync::mpsc;

use super::{PutOutcome, StoreError};

/// Chunks queued between the connection and the writer thread. hyper hands
/// over at most a few hundred KiB per chunk, so this bounds an upload's
/// buffered memory to a few MiB.
const QUEUE: usize = 8;
/// How much of a refused body is read before answering, and for how long.
const LINGER_BYTES: u64 = 1 << 20;
const LINGER_TIME: Duration = Duration::from_millis(500);
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

/// Receives `body` into `root/uploads/<uuid>#1`, and publishes it as blob
/// `expected` if it hashes to that.
pub(super) async fn put_local<S, E>(
    root: &Path,
    expected: Digest,
    mut body: S,
    limit: u64,
    idle_timeout: Duration,
) -> Result<PutOutcome, StoreError>
where
    S: futures::Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    // `#` keeps in-flight uploads out of the object_store listing, as the
    // object_store local backend's own staging files are (GC walks the
    // directory and removes abandoned ones).
    let upload = root
        .join("uploads")
        .join(format!("{}#1", uuid::Uuid::new_v4()));
    let target = root.join(super::blobs::blob_key(&expected));
    let (sender, receiver) = mpsc::channel(QUEUE);
    let writer = {
        let upload = upload.clone();
        tokio::task::spawn_blocking(move || write_upload(&upload, receiver))
    };
    let received = receive(sender, &mut body, limit, idle_timeout).await;
    // The writer ends when the queue closes; on any error it removes the file.
    let written = writer
        .await
        .map_err(|e| StoreError::Body(format!("upload writer failed: {e}")))?;
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
        .map_err(|e| StoreError::Body(format!("upload publish failed: {e}")))?
}

/// Forwards body chunks to the writer; an error, the limit or a stall ends it.
async fn receive<S, E>(
    sender: mpsc::Sender<Message>,
    body: &mut S,
    limit: u64,
    idle_timeout: Duration,
) -> Result<(), StoreError>
where
    S: futures::Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut received = 0u64;
    while let Some(chunk) = next_chunk(body, &mut received, limit, idle_timeout).await? {
        if sender.send(Message::Chunk(chunk)).await.is_err() {
            // The writer stopped on an error, which it reports itself.
            return Ok(());
        }
    }
    let _ = sender.send(Message::End).await;
    Ok(())
}

/// The next chunk of an upload body, `None` at its end, with `received`
/// counting the bytes so far. A body silent for `idle_timeout` is `Stalled`;
/// one past `limit` bytes is `TooLarge`, after a little more of it was read.
pub(super) async fn next_chunk<S, E>(
    body: &mut S,
    received: &mut u64,
    limit: u64,
    idle_timeout: Duration,
) -> Result<Option<Bytes>, StoreError>
where
    S: futures::Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let next = tokio::time::timeout(idle_timeout, body.next())
        .await
        .map_err(|_| StoreError::Stalled(idle_timeout))?;
    let Some(chunk) = next else { return Ok(None) };
    let chunk = chunk.map_err(|e| StoreError::Body(e.to_string()))?;
    *received += chunk.len() as u64;
    if *received > limit {
        linger(body).await;
        return Err(StoreError::TooLarge { limit });
    }
    Ok(Some(chunk))
}

/// Reads and drops a little more of a refused body, so a client still
/// sending a small one reads the answer instead of a connection reset (the
/// kernel resets a connection closed with unread input).
async fn linger<S, E>(body: &mut S)
where
    S: futures::Stream<Item = Result<Bytes, E>> + Unpin,
{
    let mut left = LINGER_BYTES;
    let _ = tokio::time::timeout(LINGER_TIME, async {
        while let Some(Ok(chunk)) = body.next().await {
            left = left.saturating_sub(chunk.len() as u64);
            if left == 0 {
                break;
            }
        }
    })
    .await;
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
            return Err(io_error(e));
        }
    };
    let result = std::thread::scope(|scope| {
        let mut hashing = Hashing::Inline(Sha256Hasher::new());
        let mut flusher: Option<std_mpsc::SyncSender<()>> = None;
        let mut written = 0u64;
        let mut unflushed = 0u64;
        let outcome = loop {
            match receiver.blocking_recv() {
                Some(Message::Chunk(chunk)) => {
                    written += chunk.len() as u64;
                    if written > HASH_THREAD_AFTER
                        && let Hashing::Inline(hasher) = hashing
                    {
                        // A large upload: hash on a thread of its own, so
                        // hashing and writing overlap.
                        let (chunks, queued) = std_mpsc::sync_channel::<Bytes>(QUEUE);
                        let thread = scope.spawn(move || {
                            let mut hasher = hasher;
                            while let Ok(chunk) = queued.recv() {
                                hasher.update(&chunk);
                            }
                            hasher
                        });
                        hashing = Hashing::Thread(chunks, thread);
                    }
                    match &mut hashing {
                        Hashing::Inline(hasher) => hasher.update(&chunk),
                        Hashing::Thread(chunks, _) => {
                            if chunks.send(chunk.clone()).is_err() {
                                break Err(StoreError::Body("upload hasher stopped".into()));
                            }
                        }
                    }
                    if let Err(e) = (&file).write_all(&chunk) {
                        break Err(io_error(e));
                    }
                    unflushed += chunk.len() as u64;
                    if unflushed >= FLUSH_EVERY {
                        unflushed = 0;
                        let wake = flusher.get_or_insert_with(|| {
                            let (wake, wakes) = std_mpsc::sync_channel::<()>(1);
                            let file = &file;
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
                }
                Some(Message::End) => break Ok(()),
                None => break Err(StoreError::Body("upload abandoned".into())),
            }
        };
        drop(flusher);
        let hasher = match hashing {
            Hashing::Inline(hasher) => hasher,
            Hashing::Thread(chunks, thread) => {
                drop(chunks);
                thread
                    .join()
                    .map_err(|_| StoreError::Body("upload hasher panicked".into()))?
            }
        };
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
        return Err(io_error(e));
    }
    // Same digest means same bytes, so a concurrent upload of the same blob
    // that renames first is harmless: either rename leaves the blob whole.
    let renamed = rename_creating_dir(upload, target);
    if let Err(e) = renamed {
        remove_quietly(upload);
        return Err(io_error(e));
    }
    // The blob's directory entry must survive a crash. The `uploads/` side
    // need not: an entry left there by a crash is an abandoned upload, which
    // GC removes (and on ext4 and XFS the rename is one journal transaction).
    if let Some(dir) = target.parent() {
        sync_dir(dir).map_err(io_error)?;
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

/// An I/O error as the store reports it (a full disk becomes [`StoreError::Full`]).
fn io_error(e: std::io::Error) -> StoreError {
    StoreError::from_backend(object_store::Error::Generic {
        store: "LocalFileSystem",
        source: Box::new(e),
    })
}
