//! The receiving end of a download, pipelined: the async task that reads
//! the network hands each chunk to a writer thread, which writes it to the
//! temp file and passes the same bytes (a reference, not a copy) on to a
//! hasher thread. Receiving, writing and hashing a large file so run at
//! once instead of one after another, and no chunk is copied on its way.
//! Both queues are short, so memory stays bounded and a slow disk slows the
//! download down instead of piling chunks up.

use std::io::{Seek, SeekFrom, Write};

use bytes::Bytes;
use ferry_core::Sha256Hasher;
use tokio::sync::{mpsc, oneshot};

use crate::error::FetchError;

/// Chunks waiting for each thread (a network chunk is at most a few
/// hundred KiB).
const QUEUE: usize = 8;

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
    to_writer: mpsc::Sender<Message>,
}

impl Sink {
    /// Appends to `file` (positioned at its end), continuing `hasher`,
    /// which holds the hash of what the file already has.
    pub fn new(file: std::fs::File, hasher: Sha256Hasher) -> Result<Self, FetchError> {
        let (to_writer, from_async) = mpsc::channel(QUEUE);
        let (to_hasher, from_writer) = mpsc::channel(QUEUE);
        let spawn = |name: &str| std::thread::Builder::new().name(name.into());
        spawn("ferry-hash")
            .spawn(move || hash(from_writer, hasher))
            .map_err(|e| FetchError::io("starting a hashing thread", e))?;
        spawn("ferry-write")
            .spawn(move || write(file, from_async, to_hasher))
            .map_err(|e| FetchError::io("starting a writing thread", e))?;
        Ok(Self { to_writer })
    }

    async fn send(&self, message: Message) -> Result<(), FetchError> {
        self.to_writer
            .send(message)
            .await
            .map_err(|_| FetchError::Invalid("the writing thread stopped".into()))
    }

    /// Queues `bytes` to be written and hashed.
    pub async fn push(&self, bytes: Bytes) -> Result<(), FetchError> {
        self.send(Message::Data(bytes)).await
    }

    /// Empties the file and the hash (once what is queued is done).
    pub async fn restart(&self) -> Result<(), FetchError> {
        self.send(Message::Restart).await
    }

    /// Waits until everything queued is written and hashed; returns the
    /// hash so far, or the first write error since the last call.
    pub async fn checkpoint(&self) -> Result<Sha256Hasher, FetchError> {
        let (reply, answer) = oneshot::channel();
        self.send(Message::Checkpoint(reply)).await?;
        let checkpoint = answer
            .await
            .map_err(|_| FetchError::Invalid("the hashing thread stopped".into()))?;
        checkpoint
            .written
            .map_err(|e| FetchError::io("writing a temp file", e))?;
        Ok(checkpoint.hasher)
    }
}

fn write(
    mut file: std::fs::File,
    mut from_async: mpsc::Receiver<Message>,
    to_hasher: mpsc::Sender<Hashed>,
) {
    let mut failed: Option<std::io::Error> = None;
    while let Some(message) = from_async.blocking_recv() {
        let forward = match message {
            Message::Data(bytes) => {
                if failed.is_none()
                    && let Err(e) = file.write_all(&bytes)
                {
                    failed = Some(e);
                }
                Hashed::Data(bytes)
            }
            Message::Restart => {
                if failed.is_none()
                    && let Err(e) = file.set_len(0).and_then(|()| file.seek(SeekFrom::Start(0)))
                {
                    failed = Some(e);
                }
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

    #[tokio::test]
    async fn writes_and_hashes_in_order_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(b"ab").unwrap();
        let mut resumed = Sha256Hasher::new();
        resumed.update(b"ab");
        let sink = Sink::new(file, resumed).unwrap();
        for chunk in [&b"cd"[..], b"ef", b"g"] {
            sink.push(Bytes::copy_from_slice(chunk)).await.unwrap();
        }
        let hasher = sink.checkpoint().await.unwrap();
        assert_eq!(hasher.len(), 7);
        assert_eq!(hasher.finish(), Digest::of(b"abcdefg"));
        assert_eq!(std::fs::read(&path).unwrap(), b"abcdefg");

        sink.restart().await.unwrap();
        sink.push(Bytes::from_static(b"xy")).await.unwrap();
        assert_eq!(sink.checkpoint().await.unwrap().finish(), Digest::of(b"xy"));
        assert_eq!(std::fs::read(&path).unwrap(), b"xy");
    }

    #[tokio::test]
    async fn a_write_error_surfaces_at_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"").unwrap();
        // Opened read-only: every write fails.
        let file = std::fs::File::open(&path).unwrap();
        let sink = Sink::new(file, Sha256Hasher::new()).unwrap();
        sink.push(Bytes::from_static(b"data")).await.unwrap();
        let error = sink.checkpoint().await.err().expect("a write error");
        assert!(error.to_string().contains("writing a temp file"), "{error}");
    }
}
