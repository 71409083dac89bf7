//! Fetch sources: one trait, one file per URI scheme.
//!
//! A source opens a byte stream of one object from an offset, so that a
//! retry continues where the last attempt stopped instead of starting again.
//! The same contract tests (`contract_tests` below, and the end-to-end tests
//! in `tests/tests/init_sources.rs`) run against every implementation.

pub mod ferry;
pub mod file;
pub mod hdfs;
pub mod http;
pub mod object_store;
pub mod webhdfs;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::error::FetchError;

/// An open byte stream of one object.
pub struct Opened {
    /// The bytes, starting at `start`.
    pub body: BoxStream<'static, Result<Bytes, FetchError>>,
    /// Where `body` starts: the offset asked for, or 0 when the source
    /// ignored it (an HTTP server without `Range` support).
    pub start: u64,
    /// The object's total size, when the source says.
    pub size: Option<u64>,
}

/// One object that can be read from any offset.
#[async_trait]
pub trait Source: Send + Sync {
    /// Opens the object from byte `offset` (0 for the whole object).
    async fn open(&self, offset: u64) -> Result<Opened, FetchError>;

    /// A short human name for logs ("https://host/x.jar").
    fn describe(&self) -> String;
}

#[cfg(test)]
pub(crate) mod contract_tests {
    //! The source contract, written once: whole reads, reads from an
    //! offset, and a clear `NotFound` for a missing object.
    use futures::TryStreamExt;

    use super::*;

    pub async fn read_all(source: &dyn Source, offset: u64) -> (Vec<u8>, Opened) {
        let mut opened = source.open(offset).await.expect("open");
        let body = std::mem::replace(&mut opened.body, Box::pin(futures::stream::empty()));
        let chunks: Vec<Bytes> = body.try_collect().await.expect("read");
        (chunks.concat(), opened)
    }

    /// `present` holds `expected`; `missing` does not exist.
    pub async fn check(present: &dyn Source, missing: &dyn Source, expected: &[u8]) {
        let (whole, opened) = read_all(present, 0).await;
        assert_eq!(whole, expected, "whole object from {}", present.describe());
        assert_eq!(opened.start, 0);
        if let Some(size) = opened.size {
            assert_eq!(size, expected.len() as u64);
        }
        let offset = expected.len() as u64 / 3;
        let (tail, opened) = read_all(present, offset).await;
        let start = usize::try_from(opened.start).expect("offset fits");
        assert_eq!(tail, &expected[start..], "read from offset {offset}");
        match missing.open(0).await {
            Err(FetchError::NotFound(message)) => assert!(!message.is_empty()),
            Err(other) => panic!("missing object gave {other:?}, not NotFound"),
            Ok(_) => panic!("missing object {} opened", missing.describe()),
        }
    }
}
