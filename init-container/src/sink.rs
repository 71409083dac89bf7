//! The receiving end of a download, pipelined: the async task that reads
//! the network hands each chunk to a writer thread, which writes it to the
//! temp file and passes the same bytes (a reference, not a copy) on to a
//! hasher thread. Receiving, writing and hashing a large file so run at
//! once instead of one after another, and no chunk is copied on its way.
//! Both queues are short, so memory stays bounded and a slow disk slows the
//! download down instead of piling chunks up.
//!
//! The writer also starts the disk writes of each finished 8 MiB as it goes
//! (`posix_fadvise(DONTNEED)` on freshly written pages starts their
//! writeback without waiting), so the fsync before the rename finds little
//! left to do instead of writing a whole large file at the end.

use std::io::{Seek, SeekFrom, Write};

use bytes::Bytes;
use ferry_core::Sha256Hasher;
use tokio::sync::{mpsc, oneshot};

use crate::error::FetchError;

/// Chunks waiting for each thread (a network chunk is at most a few
/// hundred KiB).
const QUEUE: usize = 8;
/// Written bytes handed to the disk at a time.
const WRITEBACK_STEP: u64 = 8 << 20;

enum Message {
    Data(Bytes),
    /// Empty the file and start hashing again.
    Restart,
    /// Answered once everything sent before it is written and hashed.
    Checkpoint(oneshot::Sender<Checkpoint>),
}

/// What the hasher thread answers a checkpoint with.
struct Checkpoint {
    /// The first write error since the last checkpoint, if any.
    written: std::io::Result<()>,
    hasher: Sha256Hasher,
}

/// Messages from the writer to the hasher: a checkpoint carries the
/// writer's result along.
enum Hashed {
    Data(Bytes),
    Restart,
    Checkpoint(oneshot::Sender<Checkpoint>, std::io::Result<()>),
}

/// A temp file being filled, with the running hash of its bytes.
pub struct Sink {
    kind: Kind,
}

enum Kind {
    /// Large or unknown size: writer and hasher threads.
    Piped { to_writer: mpsc::Sender<Message> },
    /// Known to be small: chunks are gathered and written and hashed in
    /// one blocking task at each checkpoint (two threads per small jar
    /// would cost more than they save).
    Gathered(Box<Gathered>),
}

struct Gathered {
    /// Taken while a blocking task works on them.
    state: Option<(std::fs::File, Sha256Hasher)>,
    pending: Vec<Bytes>,
    pending_len: usize,
    failed: Option<std::io::Error>,
}

/// Files of at most this size (when known) are gathered, not piped; also
/// the most a gathered sink holds before writing.
const SMALL: u64 = 1 << 20;

impl Sink {
    /// Appends to `file` (positioned at its end), continuing `hasher`,
    /// which holds the hash of what the file already has; `size` is the
    /// whole file's expected size, if known.
    pub fn new(
        file: std::fs::File,
        hasher: Sha256Hasher,
        size: Option<u64>,
    ) -> Result<Self, FetchError> {
        if size.is_some_and(|size| size <= SMALL) {
            return Ok(Self {
                kind: Kind::Gathered(Box::new(Gathered {
                    state: Some((file, hasher)),
                    pending: Vec::new(),
                    pending_len: 0,
                    failed: None,
                })),
            });
        }
        let (to_writer, from_async) = mpsc::channel(QUEUE);
        let (to_hasher, from_writer) = mpsc::channel(QUEUE);
        let spawn = |name: &str| std::thread::Builder::new().name(name.into());
        spawn("ferry-hash")
            .spawn(move || hash(from_writer, hasher))
            .map_err(|e| FetchError::io("starting a hashing thread", e))?;
        spawn("ferry-write")
            .spawn(move || write(file, from_async, to_hasher))
            .map_err(|e| FetchError::io("starting a writing thread", e))?;
        Ok(Self {
            kind: Kind::Piped { to_writer },
        })
    }

    async fn send(to_writer: &mpsc::Sender<Message>, message: Message) -> Result<(), FetchError> {
        to_writer
            .send(message)
            .await
            .map_err(|_| FetchError::Invalid("the writing thread stopped".into()))
    }

    /// Queues `bytes` to be written and hashed.
    pub async fn push(&mut self, bytes: Bytes) -> Result<(), FetchError> {
        match &mut self.kind {
            Kind::Piped { to_writer } => Self::send(to_writer, Message::Data(bytes)).await,
            Kind::Gathered(gathered) => {
                gathered.pending_len += bytes.len();
                gathered.pending.push(bytes);
                if gathered.pending_len as u64 >= SMALL {
                    gathered.flush(false).await?;
                }
                Ok(())
            }
        }
    }

    /// Empties the file and the hash (once what is queued is done).
    pub async fn restart(&mut self) -> Result<(), FetchError> {
        match &mut self.kind {
            Kind::Piped { to_writer } => Self::send(to_writer, Message::Restart).await,
            Kind::Gathered(gathered) => gathered.flush(true).await,
        }
    }

    /// Waits until everything queued is written and hashed; returns the
    /// hash so far, or the first write error since the last call.
    pub async fn checkpoint(&mut self) -> Result<Sha256Hasher, FetchError> {
        let checkpoint = match &mut self.kind {
            Kind::Piped { to_writer } => {
                let (reply, answer) = oneshot::channel();
                Self::send(to_writer, Message::Checkpoint(reply)).await?;
                answer
                    .await
                    .map_err(|_| FetchError::Invalid("the hashing thread stopped".into()))?
            }
            Kind::Gathered(gathered) => {
                gathered.flush(false).await?;
                Checkpoint {
                    written: gathered.failed.take().map_or(Ok(()), Err),
                    hasher: gathered.hasher()?.clone(),
                }
            }
        };
        checkpoint
            .written
            .map_err(|e| FetchError::io("writing a temp file", e))?;
        Ok(checkpoint.hasher)
    }
}

impl Gathered {
    fn hasher(&self) -> Result<&Sha256Hasher, FetchError> {
        self.state
            .as_ref()
            .map(|(_, hasher)| hasher)
            .ok_or_else(|| FetchError::Invalid("a write task failed".into()))
    }

    /// Writes and hashes what is pending, then empties the file if `restart`.
    async fn flush(&mut self, restart: bool) -> Result<(), FetchError> {
        if self.pending.is_empty() && !restart {
            return Ok(());
        }
        let (mut file, mut hasher) = self
            .state
            .take()
            .ok_or_else(|| FetchError::Invalid("a write task failed".into()))?;
        let pending = std::mem::take(&mut self.pending);
        self.pending_len = 0;
        let skip_writes = self.failed.is_some();
        let (file, hasher, result) = tokio::task::spawn_blocking(move || {
            let mut result = Ok(());
            for bytes in &pending {
                if !skip_writes && result.is_ok() {
                    result = file.write_all(bytes);
                }
                hasher.update(bytes);
            }
            if restart {
                if result.is_ok() {
                    result = file.set_len(0).and_then(|()| file.rewind());
                }
                hasher = Sha256Hasher::new();
            }
            (file, hasher, result)
        })
        .await
        .map_err(|e| FetchError::Invalid(format!("file task failed: {e}")))?;
        self.state = Some((file, hasher));
        if let Err(e) = result
            && self.failed.is_none()
        {
            self.failed = Some(e);
        }
        Ok(())
    }
}

fn write(
    mut file: std::fs::File,
    mut from_async: mpsc::Receiver<Message>,
    to_hasher: mpsc::Sender<Hashed>,
) {
    let mut failed: Option<std::io::Error> = None;
    let mut writeback = Writeback::at(file.stream_position().unwrap_or(0));
    while let Some(message) = from_async.blocking_recv() {
        let forward = match message {
            Message::Data(bytes) => {
                if failed.is_none() {
                    match file.write_all(&bytes) {
                        Ok(()) => writeback.wrote(&file, bytes.len() as u64),
                        Err(e) => failed = Some(e),
                    }
                }
                Hashed::Data(bytes)
            }
            Message::Restart => {
                if failed.is_none()
                    && let Err(e) = file.set_len(0).and_then(|()| file.seek(SeekFrom::Start(0)))
                {
                    failed = Some(e);
                }
                writeback = Writeback::at(0);
                Hashed::Restart
            }
            Message::Checkpoint(reply) => {
                Hashed::Checkpoint(reply, failed.take().map_or(Ok(()), Err))
            }
        };
        if to_hasher.blocking_send(forward).is_err() {
            return;
        }
    }
}

/// Where the file's written bytes stand against the disk.
struct Writeback {
    /// Bytes up to here have had their writeback started.
    started: u64,
    written: u64,
}

impl Writeback {
    fn at(offset: u64) -> Self {
        Self {
            started: offset,
            written: offset,
        }
    }

    /// Counts `n` more bytes written; starts the disk writes of every full
    /// step. Advice only: an error changes nothing but the final fsync's
    /// share of the work.
    fn wrote(&mut self, file: &std::fs::File, n: u64) {
        self.written += n;
        let pending = self.written - self.started;
        if pending >= WRITEBACK_STEP {
            let _ = rustix::fs::fadvise(
                file,
                self.started,
                std::num::NonZeroU64::new(pending),
                rustix::fs::Advice::DontNeed,
            );
            self.started = self.written;
        }
    }
}

fn hash(mut from_writer: mpsc::Receiver<Hashed>, mut hasher: Sha256Hasher) {
    while let Some(message) = from_writer.blocking_recv() {
        match message {
            Hashed::Data(bytes) => hasher.update(&bytes),
            Hashed::Restart => hasher = Sha256Hasher::new(),
            Hashed::Checkpoint(reply, written) => {
                let _ = reply.send(Checkpoint {
                    written,
                    hasher: hasher.clone(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use ferry_core::Digest;

    use super::*;

    /// Both kinds: piped (size unknown) and gathered (small).
    const SIZES: [Option<u64>; 2] = [None, Some(7)];

    #[tokio::test]
    async fn writes_and_hashes_in_order_and_restarts() {
        for size in SIZES {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f");
            let mut file = std::fs::File::create(&path).unwrap();
            file.write_all(b"ab").unwrap();
            let mut resumed = Sha256Hasher::new();
            resumed.update(b"ab");
            let mut sink = Sink::new(file, resumed, size).unwrap();
            for chunk in [&b"cd"[..], b"ef", b"g"] {
                sink.push(Bytes::copy_from_slice(chunk)).await.unwrap();
            }
            let hasher = sink.checkpoint().await.unwrap();
            assert_eq!(hasher.len(), 7);
            assert_eq!(hasher.finish(), Digest::of(b"abcdefg"), "{size:?}");
            assert_eq!(std::fs::read(&path).unwrap(), b"abcdefg");

            sink.push(Bytes::from_static(b"lost")).await.unwrap();
            sink.restart().await.unwrap();
            sink.push(Bytes::from_static(b"xy")).await.unwrap();
            let hasher = sink.checkpoint().await.unwrap();
            assert_eq!(hasher.finish(), Digest::of(b"xy"), "{size:?}");
            assert_eq!(std::fs::read(&path).unwrap(), b"xy");
        }
    }

    #[tokio::test]
    async fn a_write_error_surfaces_at_the_checkpoint() {
        for size in SIZES {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f");
            std::fs::write(&path, b"").unwrap();
            // Opened read-only: every write fails.
            let file = std::fs::File::open(&path).unwrap();
            let mut sink = Sink::new(file, Sha256Hasher::new(), size).unwrap();
            sink.push(Bytes::from_static(b"data")).await.unwrap();
            let error = sink.checkpoint().await.err().expect("a write error");
            assert!(error.to_string().contains("writing a temp file"), "{error}");
        }
    }

    #[test]
    fn writeback_starts_once_per_step() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(dir.path().join("f")).unwrap();
        let mut writeback = Writeback::at(5);
        writeback.wrote(&file, WRITEBACK_STEP - 1);
        assert_eq!(writeback.started, 5);
        writeback.wrote(&file, 1);
        assert_eq!(writeback.started, WRITEBACK_STEP + 5);
    }
}
