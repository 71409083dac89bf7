//! Hash-while-write, pipelined: the async task that receives a body hands
//! each chunk to a writer thread, which writes it to the file and passes the
//! same bytes (a reference, not a copy) on to a hasher thread. Receiving,
//! writing and hashing a large file so run at once instead of one after
//! another, and no chunk is copied on its way. Both queues are short, so
//! memory stays bounded and a slow disk slows the sender down instead of
//! piling chunks up. The writer starts each step's disk writes as it goes
//! ([`Writeback`]), so the fsync before publishing is short.
//!
//! A [`Sink::checkpoint`] waits until everything queued is written and
//! hashed and returns the hash so far (or the first write error): a
//! download retried from the last byte written calls it between attempts.
//! [`Sink::restart`] empties the file and the hash; [`Sink::finish`] hands
//! the file back with its hash, for the caller to verify and publish
//! ([`crate::durable`]).
//!
//! A file known to be small is not piped: its chunks are gathered and
//! written and hashed in one blocking task at each checkpoint (two threads
//! per small jar would cost more than they save).

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};

use bytes::Bytes;
use ferry_core::Sha256Hasher;
use tokio::sync::{mpsc, oneshot};

use crate::writeback::Writeback;

/// Chunks waiting for each thread (a network chunk is at most a few
/// hundred KiB).
const QUEUE: usize = 8;
/// Files of at most this size (when known) are gathered, not piped; also
/// the most a gathered sink holds before writing.
pub const SMALL: u64 = 1 << 20;

/// Why a sink could not take or keep its bytes.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Writing, truncating or seeking the file failed.
    #[error("writing the file: {source}")]
    Write {
        #[source]
        source: std::io::Error,
    },
    /// A worker thread could not be started.
    #[error("starting the {thread} thread: {source}")]
    Spawn {
        thread: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A worker thread or task ended before answering (it panicked).
    #[error("the {part} stopped")]
    Stopped { part: &'static str },
}

enum Message {
    Data(Bytes),
    /// Empty the file and start hashing again.
    Restart,
    /// Answered once everything sent before it is written and hashed.
    Checkpoint(oneshot::Sender<Checkpoint>),
    /// As a checkpoint, handing the file back; the threads end.
    Finish(oneshot::Sender<Finished>),
}

/// What the hasher thread answers a checkpoint with.
struct Checkpoint {
    /// The first write error since the last checkpoint, if any.
    written: std::io::Result<()>,
    hasher: Sha256Hasher,
}

struct Finished {
    written: std::io::Result<()>,
    hasher: Sha256Hasher,
    file: File,
}

/// Messages from the writer to the hasher: checkpoints carry the writer's
/// result (and at the end its file) along.
enum Hashed {
    Data(Bytes),
    Restart,
    Checkpoint(oneshot::Sender<Checkpoint>, std::io::Result<()>),
    Finish(oneshot::Sender<Finished>, std::io::Result<()>, File),
}

/// A file being filled, with the running hash of its bytes.
pub struct Sink {
    kind: Kind,
}

enum Kind {
    /// Large or unknown size: writer and hasher threads.
    Piped { to_writer: mpsc::Sender<Message> },
    /// Known to be small: gathered, written at checkpoints.
    Gathered(Box<Gathered>),
}

struct Gathered {
    /// Taken while a blocking task works on them.
    state: Option<(File, Sha256Hasher)>,
    pending: Vec<Bytes>,
    pending_len: usize,
    failed: Option<std::io::Error>,
}

const WRITING: &str = "writing";
const HASHING: &str = "hashing";

impl Sink {
    /// Appends to `file` (positioned where writing continues, usually its
    /// end), continuing `hasher`, which holds the hash of what the file
    /// already has; `size` is the whole file's expected size, if known.
    pub fn new(file: File, hasher: Sha256Hasher, size: Option<u64>) -> Result<Self, SinkError> {
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
        let spawn = |name: &str| std::thread::Builder::new().name(format!("ferry-{name}"));
        spawn("hash")
            .spawn(move || hash(from_writer, hasher))
            .map_err(|source| SinkError::Spawn {
                thread: HASHING,
                source,
            })?;
        spawn("write")
            .spawn(move || write(file, from_async, to_hasher))
            .map_err(|source| SinkError::Spawn {
                thread: WRITING,
                source,
            })?;
        Ok(Self {
            kind: Kind::Piped { to_writer },
        })
    }

    async fn send(to_writer: &mpsc::Sender<Message>, message: Message) -> Result<(), SinkError> {
        to_writer
            .send(message)
            .await
            .map_err(|_| SinkError::Stopped {
                part: "writing thread",
            })
    }

    /// Queues `bytes` to be written and hashed. A write error shows at the
    /// next checkpoint.
    pub async fn push(&mut self, bytes: Bytes) -> Result<(), SinkError> {
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
    pub async fn restart(&mut self) -> Result<(), SinkError> {
        match &mut self.kind {
            Kind::Piped { to_writer } => Self::send(to_writer, Message::Restart).await,
            Kind::Gathered(gathered) => gathered.flush(true).await,
        }
    }

    /// Waits until everything queued is written and hashed; returns the
    /// hash so far, or the first write error since the last call.
    pub async fn checkpoint(&mut self) -> Result<Sha256Hasher, SinkError> {
        let checkpoint = match &mut self.kind {
            Kind::Piped { to_writer } => {
                let (reply, answer) = oneshot::channel();
                Self::send(to_writer, Message::Checkpoint(reply)).await?;
                answer.await.map_err(|_| SinkError::Stopped {
                    part: "hashing thread",
                })?
            }
            Kind::Gathered(gathered) => {
                gathered.flush(false).await?;
                Checkpoint {
                    written: gathered.failed.take().map_or(Ok(()), Err),
                    hasher: gathered.state()?.1.clone(),
                }
            }
        };
        checkpoint
            .written
            .map_err(|source| SinkError::Write { source })?;
        Ok(checkpoint.hasher)
    }

    /// Waits until everything queued is written and hashed, ends the
    /// threads, and returns the file (not yet synced) with the hash of its
    /// bytes, or the first write error since the last checkpoint.
    pub async fn finish(self) -> Result<(File, Sha256Hasher), SinkError> {
        let finished = match self.kind {
            Kind::Piped { to_writer } => {
                let (reply, answer) = oneshot::channel();
                Self::send(&to_writer, Message::Finish(reply)).await?;
                answer.await.map_err(|_| SinkError::Stopped {
                    part: "hashing thread",
                })?
            }
            Kind::Gathered(mut gathered) => {
                gathered.flush(false).await?;
                let written = gathered.failed.take().map_or(Ok(()), Err);
                let (file, hasher) = gathered
                    .state
                    .take()
                    .ok_or(SinkError::Stopped { part: "write task" })?;
                Finished {
                    written,
                    hasher,
                    file,
                }
            }
        };
        finished
            .written
            .map_err(|source| SinkError::Write { source })?;
        Ok((finished.file, finished.hasher))
    }
}

impl Gathered {
    fn state(&self) -> Result<&(File, Sha256Hasher), SinkError> {
        self.state
            .as_ref()
            .ok_or(SinkError::Stopped { part: "write task" })
    }

    /// Writes and hashes what is pending, then empties the file if `restart`.
    async fn flush(&mut self, restart: bool) -> Result<(), SinkError> {
        if self.pending.is_empty() && !restart {
            return Ok(());
        }
        let (mut file, mut hasher) = self
            .state
            .take()
            .ok_or(SinkError::Stopped { part: "write task" })?;
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
        .map_err(|_| SinkError::Stopped { part: "write task" })?;
        self.state = Some((file, hasher));
        if let Err(e) = result
            && self.failed.is_none()
        {
            self.failed = Some(e);
        }
        Ok(())
    }
}

/// The writer thread: writes every chunk (until the first error, which the
/// next checkpoint reports), then forwards it to the hasher.
fn write(mut file: File, mut from_async: mpsc::Receiver<Message>, to_hasher: mpsc::Sender<Hashed>) {
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
            Message::Finish(reply) => {
                let written = failed.take().map_or(Ok(()), Err);
                let _ = to_hasher.blocking_send(Hashed::Finish(reply, written, file));
                return;
            }
        };
        if to_hasher.blocking_send(forward).is_err() {
            return;
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
            Hashed::Finish(reply, written, file) => {
                let _ = reply.send(Finished {
                    written,
                    hasher,
                    file,
                });
                return;
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
            let mut file = File::create(&path).unwrap();
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
    async fn finish_hands_back_the_file_with_everything_written() {
        for size in SIZES {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f");
            let file = File::create(&path).unwrap();
            let mut sink = Sink::new(file, Sha256Hasher::new(), size).unwrap();
            sink.push(Bytes::from_static(b"abc")).await.unwrap();
            sink.checkpoint().await.unwrap();
            sink.push(Bytes::from_static(b"defg")).await.unwrap();
            let (mut file, hasher) = sink.finish().await.unwrap();
            assert_eq!(hasher.finish(), Digest::of(b"abcdefg"), "{size:?}");
            assert_eq!(file.stream_position().unwrap(), 7);
            assert_eq!(std::fs::read(&path).unwrap(), b"abcdefg");
        }
    }

    #[tokio::test]
    async fn a_write_error_surfaces_at_the_checkpoint_and_at_finish() {
        for size in SIZES {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f");
            std::fs::write(&path, b"").unwrap();
            // Opened read-only: every write fails.
            let mut sink =
                Sink::new(File::open(&path).unwrap(), Sha256Hasher::new(), size).unwrap();
            sink.push(Bytes::from_static(b"data")).await.unwrap();
            let error = sink.checkpoint().await.err().expect("a write error");
            assert!(matches!(error, SinkError::Write { .. }), "{error}");

            let mut sink =
                Sink::new(File::open(&path).unwrap(), Sha256Hasher::new(), size).unwrap();
            sink.push(Bytes::from_static(b"data")).await.unwrap();
            let error = sink.finish().await.err().expect("a write error");
            assert!(matches!(error, SinkError::Write { .. }), "{error}");
        }
    }

    #[tokio::test]
    async fn a_large_file_passes_through_the_threads_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut sink = Sink::new(
            File::create(&path).unwrap(),
            Sha256Hasher::new(),
            Some(3 * SMALL),
        )
        .unwrap();
        let chunk: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 253) as u8).collect();
        let chunk = Bytes::from(chunk);
        let mut expected = Vec::new();
        for _ in 0..48 {
            sink.push(chunk.clone()).await.unwrap();
            expected.extend_from_slice(&chunk);
        }
        let (_, hasher) = sink.finish().await.unwrap();
        assert_eq!(hasher.len(), 3 * SMALL);
        assert_eq!(hasher.finish(), Digest::of(&expected));
        assert_eq!(std::fs::read(&path).unwrap(), expected);
    }
}
