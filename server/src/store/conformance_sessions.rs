//! The upload-session cases of the storage conformance suite: the part
//! methods of every [`Backend`], driven through the store's session logic
//! the way the API drives them. Run with the rest of
//! [`super::conformance`].

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use ferry_core::Digest;
use futures::StreamExt as _;

use super::{Backend, ChunkLimits, Prefix, PutOutcome, SessionError, Store, StoreError};

const LIMITS: ChunkLimits = ChunkLimits {
    max_chunk: 16 << 20,
    max_blob: 64 << 20,
    idle_timeout: Duration::from_secs(30),
    ttl: Duration::from_secs(3600),
};

fn bytes_of(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(17).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

/// Chunks the backend takes: its minimum part size (at least 64 KiB, so
/// the local backend's cases cross part boundaries too).
fn chunk_size(store: &Store) -> usize {
    store.min_chunk().max(64 << 10) as usize
}

async fn append(store: &Store, id: &str, offset: u64, bytes: &[u8]) -> Result<u64, SessionError> {
    let body = futures::stream::iter(
        bytes
            .chunks(256 << 10)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    )
    .boxed();
    store
        .append_chunk(id, (offset, bytes.len() as u64), body, LIMITS)
        .await
        .map(|status| status.offset)
}

/// Sends `bytes` to session `id` in chunks of `chunk`.
async fn send_all(store: &Store, id: &str, bytes: &[u8], chunk: usize) {
    let mut offset = 0u64;
    for piece in bytes.chunks(chunk) {
        offset = append(store, id, offset, piece).await.expect("chunk");
    }
    assert_eq!(offset, bytes.len() as u64);
}

async fn assert_no_sessions(backend: &dyn Backend, after: &str) {
    let left = backend.list(Prefix::Sessions).await.expect("list sessions");
    assert!(
        left.is_empty(),
        "{}: {after} left {left:?}",
        backend.description()
    );
}

async fn read_all(backend: &dyn Backend, digest: &Digest) -> Vec<u8> {
    let blob = backend
        .open_blob(digest)
        .await
        .expect("open committed blob");
    let mut stream = blob.read(None).await.expect("read").into_stream();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.expect("bytes"));
    }
    out
}

pub(super) async fn a_session_in_chunks_commits_to_its_blob(backend: Arc<dyn Backend>) {
    let store = Store::new(backend.clone());
    let chunk = chunk_size(&store);
    // Two whole chunks and a short last one.
    let bytes = bytes_of(1, 2 * chunk + 1234);
    let session = store.open_session(LIMITS.ttl).await.expect("open");
    assert_eq!(session.offset, 0);
    send_all(&store, &session.id, &bytes, chunk).await;
    let status = store.session_status(&session.id).await.expect("status");
    assert_eq!(status.offset, bytes.len() as u64);
    let digest = Digest::of(&bytes);
    let outcome = store
        .commit_session(&session.id, digest, LIMITS.idle_timeout)
        .await
        .expect("commit");
    assert_eq!(outcome, PutOutcome::Created(bytes.len() as u64));
    assert!(read_all(&*backend, &digest).await == bytes, "blob bytes");
    assert!(matches!(
        store.session_status(&session.id).await,
        Err(SessionError::NotFound)
    ));
    assert_no_sessions(&*backend, "a commit").await;
}

pub(super) async fn chunks_out_of_order_or_past_a_gap_are_refused(backend: Arc<dyn Backend>) {
    let store = Store::new(backend);
    let chunk = chunk_size(&store);
    let bytes = bytes_of(2, 2 * chunk);
    let session = store.open_session(LIMITS.ttl).await.expect("open");
    // The second chunk first: a gap.
    let gap = append(&store, &session.id, chunk as u64, &bytes[chunk..]).await;
    assert!(
        matches!(gap, Err(SessionError::WrongOffset { stated, committed: 0 }) if stated == chunk as u64),
        "{gap:?}"
    );
    append(&store, &session.id, 0, &bytes[..chunk])
        .await
        .expect("first chunk");
    // The first chunk again: out of order.
    let again = append(&store, &session.id, 0, &bytes[..chunk]).await;
    assert!(
        matches!(again, Err(SessionError::WrongOffset { committed, .. }) if committed == chunk as u64),
        "{again:?}"
    );
    append(&store, &session.id, chunk as u64, &bytes[chunk..])
        .await
        .expect("second chunk");
    let digest = Digest::of(&bytes);
    store
        .commit_session(&session.id, digest, LIMITS.idle_timeout)
        .await
        .expect("commit after refusals");
    assert_eq!(
        store.blob_size(&digest).await.expect("stat"),
        bytes.len() as u64
    );
}

pub(super) async fn a_session_with_the_wrong_digest_keeps_nothing(backend: Arc<dyn Backend>) {
    let store = Store::new(backend.clone());
    let chunk = chunk_size(&store);
    let bytes = bytes_of(3, chunk + 10);
    let session = store.open_session(LIMITS.ttl).await.expect("open");
    send_all(&store, &session.id, &bytes, chunk).await;
    let wrong = Digest::of(b"something else");
    let refused = store
        .commit_session(&session.id, wrong, LIMITS.idle_timeout)
        .await;
    assert!(
        matches!(refused, Err(SessionError::Store(StoreError::DigestMismatch { expected, actual }))
            if expected == wrong && actual == Digest::of(&bytes)),
        "{refused:?}"
    );
    for digest in [wrong, Digest::of(&bytes)] {
        assert!(matches!(
            store.blob_size(&digest).await,
            Err(StoreError::NotFound)
        ));
    }
    assert_no_sessions(&*backend, "a wrong digest").await;
}

pub(super) async fn a_session_for_a_stored_blob_commits_as_already_present(
    backend: Arc<dyn Backend>,
) {
    let store = Store::new(backend.clone());
    let bytes = bytes_of(4, 1000);
    let session = store.open_session(LIMITS.ttl).await.expect("open");
    send_all(&store, &session.id, &bytes, 1000).await;
    let other = store.open_session(LIMITS.ttl).await.expect("open");
    send_all(&store, &other.id, &bytes, 1000).await;
    let digest = Digest::of(&bytes);
    let first = store.commit_session(&session.id, digest, LIMITS.idle_timeout);
    assert_eq!(first.await.expect("first"), PutOutcome::Created(1000));
    let second = store.commit_session(&other.id, digest, LIMITS.idle_timeout);
    assert_eq!(
        second.await.expect("second"),
        PutOutcome::AlreadyPresent(1000)
    );
    assert!(read_all(&*backend, &digest).await == bytes);
    assert_no_sessions(&*backend, "two commits").await;
}

pub(super) async fn an_empty_session_commits_the_empty_blob(backend: Arc<dyn Backend>) {
    let store = Store::new(backend.clone());
    let session = store.open_session(LIMITS.ttl).await.expect("open");
    let digest = Digest::of(b"");
    let outcome = store
        .commit_session(&session.id, digest, LIMITS.idle_timeout)
        .await
        .expect("commit");
    assert_eq!(outcome, PutOutcome::Created(0));
    assert_eq!(store.blob_size(&digest).await.expect("stat"), 0);
    assert_no_sessions(&*backend, "an empty commit").await;
}

pub(super) async fn aborted_and_expired_sessions_are_gone(backend: Arc<dyn Backend>) {
    let store = Store::new(backend.clone());
    let aborted = store.open_session(LIMITS.ttl).await.expect("open");
    send_all(&store, &aborted.id, &bytes_of(5, 100), 100).await;
    store.abort_session(&aborted.id).await.expect("abort");
    assert!(matches!(
        store.session_status(&aborted.id).await,
        Err(SessionError::NotFound)
    ));
    let abandoned = store.open_session(LIMITS.ttl).await.expect("open");
    send_all(&store, &abandoned.id, &bytes_of(6, 100), 100).await;
    // Before its expiry GC keeps it; after, it is swept.
    assert_eq!(store.sweep_sessions(Utc::now()).await.expect("sweep"), 0);
    assert_eq!(
        store
            .session_status(&abandoned.id)
            .await
            .expect("kept")
            .offset,
        100
    );
    let later = Utc::now() + chrono::Duration::hours(2);
    assert_eq!(store.sweep_sessions(later).await.expect("sweep"), 1);
    assert!(matches!(
        store.session_status(&abandoned.id).await,
        Err(SessionError::NotFound)
    ));
    assert_no_sessions(&*backend, "abort and sweep").await;
}

pub(super) async fn a_chunk_over_the_maximum_is_refused_and_changes_nothing(
    backend: Arc<dyn Backend>,
) {
    let store = Store::new(backend);
    let session = store.open_session(LIMITS.ttl).await.expect("open");
    let small = ChunkLimits {
        max_chunk: 1000,
        ..LIMITS
    };
    let body = futures::stream::iter([Ok(Bytes::from(bytes_of(7, 1001)))]).boxed();
    let refused = store
        .append_chunk(&session.id, (0, 1001), body, small)
        .await;
    assert!(
        matches!(refused, Err(SessionError::ChunkTooLarge { max: 1000 })),
        "{refused:?}"
    );
    // The refusal released the session at once.
    assert_eq!(
        append(&store, &session.id, 0, b"next").await.expect("next"),
        4
    );
}
