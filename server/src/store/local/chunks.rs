//! Streaming a local blob out in fixed-size chunks.
//!
//! Each chunk is one read into a fresh buffer that becomes the body chunk
//! (one copy, no second buffer). Reads run on the connection's
//! task while they are fast, as nginx reads files in its event loop: for
//! data in the page cache a 64 KiB read costs less than a hop to tokio's
//! blocking pool and back. A read slower than [`SLOW_READ`] means the disk
//! itself is being waited for, and the rest of that download reads on the
//! blocking pool instead. hyper's write buffer limit (see `serve`) bounds how
//! many chunks a connection holds.

use std::fs::File;
use std::future::Future as _;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::task::JoinHandle;

/// A read that took longer than this was not served from memory.
const SLOW_READ: Duration = Duration::from_millis(2);

/// The bytes `start..start + len` of a file, `chunk` bytes at a time.
pub(super) struct Chunks {
    file: Arc<File>,
    position: u64,
    end: u64,
    chunk: usize,
    /// The read in flight on the blocking pool, once reads went there.
    pending: Option<JoinHandle<std::io::Result<Bytes>>>,
    on_pool: bool,
}

impl Chunks {
    /// Positions `file` at `start` (a seek, no I/O).
    pub(super) fn new(file: File, start: u64, len: u64, chunk: usize) -> std::io::Result<Self> {
        (&file).seek(SeekFrom::Start(start))?;
        Ok(Self {
            file: Arc::new(file),
            position: start,
            end: start + len,
            chunk,
            pending: None,
            on_pool: false,
        })
    }

    fn advance(&mut self, result: &std::io::Result<Bytes>) {
        match result {
            Ok(bytes) => self.position += bytes.len() as u64,
            // An error ends the stream (the connection is cut short).
            Err(_) => self.position = self.end,
        }
    }
}

/// Reads the next `len` bytes from the file's own offset, which only this
/// stream moves, one read after the other. `read_to_end` fills the buffer
/// without zeroing it first.
fn read_chunk(file: &File, len: usize) -> std::io::Result<Bytes> {
    let mut buf = Vec::with_capacity(len);
    file.take(len as u64).read_to_end(&mut buf)?;
    if buf.len() < len {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Bytes::from(buf))
}

impl futures::Stream for Chunks {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(pending) = &mut this.pending {
            let result = ready!(Pin::new(pending).poll(cx))
                .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            this.pending = None;
            this.advance(&result);
            return Poll::Ready(Some(result));
        }
        if this.position >= this.end {
            return Poll::Ready(None);
        }
        let len = (this.end - this.position).min(this.chunk as u64) as usize;
        if this.on_pool {
            let file = this.file.clone();
            this.pending = Some(tokio::task::spawn_blocking(move || read_chunk(&file, len)));
            return self.poll_next(cx);
        }
        let started = Instant::now();
        let result = read_chunk(&this.file, len);
        this.on_pool = started.elapsed() > SLOW_READ;
        this.advance(&result);
        Poll::Ready(Some(result))
    }
}
