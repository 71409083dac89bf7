//! Hashing what is already on disk or arriving as a stream: a file, any
//! reader, or a stream of chunks, into a [`Sha256Hasher`] (its `len()` is
//! the size read, `finish()` the digest).
//!
//! Reads are 1 MiB, so sha2's CPU extensions, not syscalls, set the pace;
//! an interrupted read (`EINTR`) is retried rather than reported. These are
//! blocking calls (the stream version aside): run them off the async
//! runtime (`spawn_blocking`), or on threads of their own.

use std::io::{ErrorKind, Read};
use std::path::Path;

use bytes::Bytes;
use ferry_core::Sha256Hasher;
use futures::{Stream, StreamExt};

/// Bytes read at a time.
pub const READ_BUFFER: usize = 1 << 20;

/// Hashes the file at `path`.
pub fn hash_file(path: &Path) -> std::io::Result<Sha256Hasher> {
    hash_reader(std::fs::File::open(path)?)
}

/// Hashes everything `reader` yields.
pub fn hash_reader(reader: impl Read) -> std::io::Result<Sha256Hasher> {
    hash_reader_with_progress(reader, &mut |_| {})
}

/// Hashes everything `reader` yields, telling `on_bytes` how much each read
/// brought (for a progress bar).
pub fn hash_reader_with_progress(
    mut reader: impl Read,
    on_bytes: &mut dyn FnMut(u64),
) -> std::io::Result<Sha256Hasher> {
    let mut hasher = Sha256Hasher::new();
    let mut buffer = vec![0u8; READ_BUFFER];
    loop {
        let n = match reader.read(&mut buffer) {
            Ok(0) => return Ok(hasher),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buffer[..n]);
        on_bytes(n as u64);
    }
}

/// Hashes every chunk of `stream`, stopping at its first error.
pub async fn hash_stream<S, E>(mut stream: S) -> Result<Sha256Hasher, E>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    let mut hasher = Sha256Hasher::new();
    while let Some(chunk) = stream.next().await {
        hasher.update(&chunk?);
    }
    Ok(hasher)
}

#[cfg(test)]
mod tests {
    use ferry_core::Digest;

    use super::*;

    /// A reader that hands out at most `step` bytes a call (cycling
    /// through 1..=step) and is interrupted before every third read.
    struct Stingy<'a> {
        data: &'a [u8],
        step: usize,
        calls: usize,
    }

    impl Read for Stingy<'_> {
        fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
            self.calls += 1;
            if self.calls.is_multiple_of(3) {
                return Err(std::io::Error::from(ErrorKind::Interrupted));
            }
            let n = (self.calls % self.step + 1)
                .min(self.data.len())
                .min(buffer.len());
            buffer[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn short_and_interrupted_reads_hash_like_one_read() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        for step in [1, 7, 4096] {
            let mut seen = 0;
            let reader = Stingy {
                data: &data[..],
                step,
                calls: 0,
            };
            let hasher = hash_reader_with_progress(reader, &mut |n| seen += n).unwrap();
            assert_eq!(hasher.len(), data.len() as u64);
            assert_eq!(hasher.finish(), Digest::of(&data), "step {step}");
            assert_eq!(seen, data.len() as u64);
        }
    }

    #[test]
    fn a_read_error_is_returned_not_hashed_over() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("bad sector"))
            }
        }
        let error = hash_reader(Broken).err().expect("an error");
        assert_eq!(error.to_string(), "bad sector");
    }

    #[test]
    fn a_file_hashes_to_its_digest_larger_than_one_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data = vec![7u8; READ_BUFFER * 2 + 3];
        std::fs::write(&path, &data).unwrap();
        let hasher = hash_file(&path).unwrap();
        assert_eq!(hasher.len(), data.len() as u64);
        assert_eq!(hasher.finish(), Digest::of(&data));
        assert!(hash_file(&dir.path().join("absent")).is_err());
    }

    #[tokio::test]
    async fn a_stream_hashes_like_its_concatenation_and_stops_at_an_error() {
        let chunks = [&b"ab"[..], b"", b"cde"].map(|c| Ok::<_, String>(Bytes::copy_from_slice(c)));
        let hasher = hash_stream(futures::stream::iter(chunks)).await.unwrap();
        assert_eq!(hasher.finish(), Digest::of(b"abcde"));
        let failing = futures::stream::iter([Ok(Bytes::from_static(b"a")), Err("reset")]);
        assert_eq!(hash_stream(failing).await.err(), Some("reset"));
    }
}
