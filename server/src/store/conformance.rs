//! The contract every [`Backend`] keeps, written once and run against each
//! of them (the way `object_store` tests all its stores with one suite):
//! the local backend and `object_store`'s in-memory store from this crate's
//! unit tests, S3 (moto) and Azure (Azurite) from
//! `tests/tests/store_conformance.rs`.
//!
//! Test code, compiled only for tests and with the `conformance` feature:
//! its failures are panics that name the case and the backend.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use ferry_core::Digest;
use ferry_core::range::ByteRange;
use futures::future::BoxFuture;
use futures::{FutureExt as _, StreamExt as _};
use object_store::path::Path;

use super::conformance_sessions::*;
use super::{
    Backend, BodyLimits, Prefix, PutOutcome, Store, StoreError, UploadBody, Version, WriteMode,
    layout,
};

type Case = fn(Arc<dyn Backend>) -> BoxFuture<'static, ()>;

macro_rules! cases {
    ($($case:ident),* $(,)?) => {
        &[$((stringify!($case), |backend| $case(backend).boxed())),*]
    };
}

/// Every case, by name.
pub const CASES: &[(&str, Case)] = cases![
    put_then_stat_and_read_whole_and_ranges,
    a_blob_of_several_parts_round_trips,
    a_batch_stores_each_blob_once_and_says_which_were_there,
    a_missing_blob_is_not_found,
    wrong_digest_stores_nothing_and_leaves_no_upload,
    over_limit_body_is_too_large_and_keeps_nothing,
    stalled_body_is_stalled_and_keeps_nothing,
    broken_body_is_the_clients_fault_and_keeps_nothing,
    put_of_a_stored_blob_is_already_present,
    concurrent_puts_of_one_blob_all_succeed,
    listings_show_blobs_and_an_abandoned_upload_with_its_age,
    objects_under_blobs_that_are_not_blobs_are_strays,
    a_record_is_created_once_then_overwritten,
    a_missing_record_is_not_found_and_deletes_are_idempotent,
    an_update_swaps_only_the_version_it_read,
    each_prefix_lists_only_its_own_keys,
    quarantine_moves_a_blob_where_no_reader_looks,
    fsck_counts_an_abandoned_upload_and_gc_sweeps_it,
    a_healthy_store_answers_the_probe,
    // Upload sessions: `conformance_sessions.rs`.
    a_session_in_chunks_commits_to_its_blob,
    chunks_out_of_order_or_past_a_gap_are_refused,
    a_session_with_the_wrong_digest_keeps_nothing,
    a_session_for_a_stored_blob_commits_as_already_present,
    an_empty_session_commits_the_empty_blob,
    aborted_and_expired_sessions_are_gone,
    a_chunk_over_the_maximum_is_refused_and_changes_nothing,
];

/// Runs every case, each on a fresh, empty backend from `fresh`.
pub async fn run<F, Fut>(mut fresh: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Arc<dyn Backend>>,
{
    for (name, case) in CASES {
        let backend = fresh().await;
        eprintln!("conformance on {}: {name}", backend.description());
        case(backend).await;
    }
}

const LIMITS: BodyLimits = BodyLimits {
    max_bytes: 64 << 20,
    idle_timeout: Duration::from_secs(30),
    expected_len: None,
};

/// `bytes` as an upload body, in chunks of `chunk` bytes.
fn body_of(bytes: &[u8], chunk: usize) -> UploadBody<'static> {
    let chunks: Vec<Result<Bytes, std::io::Error>> = bytes
        .chunks(chunk.max(1))
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures::stream::iter(chunks).boxed()
}

/// Deterministic bytes that differ from one `seed` to the next.
fn bytes_of(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

async fn put(backend: &dyn Backend, bytes: &[u8]) -> Result<PutOutcome, StoreError> {
    backend
        .put_blob(Digest::of(bytes), body_of(bytes, 16 * 1024), LIMITS)
        .await
}

async fn read(backend: &dyn Backend, digest: &Digest, range: Option<ByteRange>) -> Vec<u8> {
    let blob = backend.open_blob(digest).await.expect("open a stored blob");
    let mut stream = blob.read(range).await.expect("read a blob").into_stream();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.expect("blob bytes"));
    }
    out
}

async fn assert_no_uploads(backend: &dyn Backend, after: &str) {
    let uploads = backend.list(Prefix::Uploads).await.expect("list uploads");
    assert!(
        uploads.is_empty(),
        "{}: {after} left uploads {uploads:?}",
        backend.description()
    );
}

async fn assert_no_blob(backend: &dyn Backend, digest: &Digest, after: &str) {
    assert!(
        matches!(backend.blob_size(digest).await, Err(StoreError::NotFound)),
        "{}: {after} left blob {digest}",
        backend.description()
    );
}

async fn assert_reads_back(backend: &dyn Backend, bytes: &[u8]) {
    let digest = Digest::of(bytes);
    let len = bytes.len() as u64;
    assert_eq!(backend.blob_size(&digest).await.expect("stat"), len);
    assert_eq!(backend.open_blob(&digest).await.expect("open").size, len);
    assert!(read(backend, &digest, None).await == bytes, "whole blob");
    let last = len - 1;
    let mut ranges = vec![(0, 0), (last, last), (0, last), (len / 3, 2 * len / 3)];
    if len > 200_000 {
        // Across read-buffer boundaries, and longer than one buffer.
        ranges.extend([(65_535, 65_537), (1_000, 199_999)]);
    }
    for (start, end) in ranges {
        let got = read(backend, &digest, Some(ByteRange { start, end })).await;
        assert!(
            got == bytes[start as usize..=end as usize],
            "{}: range {start}-{end} of {len} bytes",
            backend.description()
        );
    }
}

async fn put_then_stat_and_read_whole_and_ranges(backend: Arc<dyn Backend>) {
    for (seed, len) in [(1, 3), (2, 10_000), (3, 300_000)] {
        let bytes = bytes_of(seed, len);
        let outcome = put(&*backend, &bytes).await.expect("put");
        assert_eq!(outcome, PutOutcome::Created(len as u64));
        // Twice: the second read may come from a cache.
        assert_reads_back(&*backend, &bytes).await;
        assert_reads_back(&*backend, &bytes).await;
    }
    assert_no_uploads(&*backend, "three puts").await;
}

async fn a_blob_of_several_parts_round_trips(backend: Arc<dyn Backend>) {
    // Larger than one multipart part of the object_store backend.
    let bytes = bytes_of(4, (9 << 20) + 123);
    let outcome = backend
        .put_blob(Digest::of(&bytes), body_of(&bytes, 256 * 1024), LIMITS)
        .await
        .expect("put");
    assert_eq!(outcome, PutOutcome::Created(bytes.len() as u64));
    assert_reads_back(&*backend, &bytes).await;
    assert_no_uploads(&*backend, "a multi-part put").await;
}

async fn a_batch_stores_each_blob_once_and_says_which_were_there(backend: Arc<dyn Backend>) {
    let there = bytes_of(30, 40_000);
    put(&*backend, &there).await.expect("put");
    let new: Vec<Vec<u8>> = (31..35).map(|s| bytes_of(s, 30_000 + s as usize)).collect();
    let mut batch: Vec<(Digest, Bytes)> = new
        .iter()
        .map(|b| (Digest::of(b), Bytes::from(b.clone())))
        .collect();
    batch.push((Digest::of(&there), Bytes::from(there.clone())));
    batch.push((Digest::of(&new[2]), Bytes::from(new[2].clone())));
    let outcomes = backend
        .put_blobs(batch, LIMITS.idle_timeout)
        .await
        .expect("batch");
    let created: Vec<bool> = outcomes
        .iter()
        .map(|o| matches!(o, PutOutcome::Created(_)))
        .collect();
    assert_eq!(created, [true, true, true, true, false, false]);
    assert_eq!(outcomes[0], PutOutcome::Created(30_031));
    for bytes in new.iter().chain([&there]) {
        assert_reads_back(&*backend, bytes).await;
    }
    assert_no_uploads(&*backend, "a batch").await;
}

async fn a_missing_blob_is_not_found(backend: Arc<dyn Backend>) {
    let digest = Digest::of(b"never stored");
    assert!(matches!(
        backend.blob_size(&digest).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        backend.open_blob(&digest).await,
        Err(StoreError::NotFound)
    ));
    backend
        .delete_blob(&digest)
        .await
        .expect("deleting a missing blob succeeds");
}

async fn wrong_digest_stores_nothing_and_leaves_no_upload(backend: Arc<dyn Backend>) {
    for len in [100, 300_000] {
        let bytes = bytes_of(5, len);
        let claimed = Digest::of(b"something else");
        let result = backend
            .put_blob(claimed, body_of(&bytes, 16 * 1024), LIMITS)
            .await;
        match result {
            Err(StoreError::DigestMismatch { expected, actual }) => {
                assert_eq!(expected, claimed);
                assert_eq!(actual, Digest::of(&bytes));
            }
            other => panic!(
                "{}: expected DigestMismatch, got {other:?}",
                backend.description()
            ),
        }
        assert_no_blob(&*backend, &claimed, "a mismatch").await;
        assert_no_blob(&*backend, &Digest::of(&bytes), "a mismatch").await;
    }
    assert_no_uploads(&*backend, "a mismatch").await;
    let listing = backend.list(Prefix::Blobs).await.expect("list blobs");
    assert!(listing.is_empty(), "{listing:?}");
}

async fn over_limit_body_is_too_large_and_keeps_nothing(backend: Arc<dyn Backend>) {
    let bytes = bytes_of(6, 1_800);
    let limits = BodyLimits {
        max_bytes: 1_000,
        ..LIMITS
    };
    let result = backend
        .put_blob(Digest::of(&bytes), body_of(&bytes, 600), limits)
        .await;
    assert!(
        matches!(result, Err(StoreError::TooLarge { limit: 1_000 })),
        "{}: {result:?}",
        backend.description()
    );
    assert_no_blob(&*backend, &Digest::of(&bytes), "an oversized body").await;
    assert_no_uploads(&*backend, "an oversized body").await;
    // Exactly at the limit is fine.
    let at_limit = &bytes[..1_000];
    let outcome = backend
        .put_blob(Digest::of(at_limit), body_of(at_limit, 600), limits)
        .await
        .expect("a body at the limit");
    assert_eq!(outcome, PutOutcome::Created(1_000));
}

async fn stalled_body_is_stalled_and_keeps_nothing(backend: Arc<dyn Backend>) {
    let first = Bytes::from(bytes_of(7, 5_000));
    let digest = Digest::of(b"the rest never comes");
    let body = futures::stream::once(async move { Ok(first) })
        .chain(futures::stream::pending())
        .boxed();
    let idle_timeout = Duration::from_millis(200);
    let limits = BodyLimits {
        idle_timeout,
        ..LIMITS
    };
    let result = backend.put_blob(digest, body, limits).await;
    assert!(
        matches!(result, Err(StoreError::Stalled(after)) if after == idle_timeout),
        "{}: {result:?}",
        backend.description()
    );
    assert_no_blob(&*backend, &digest, "a stalled body").await;
    assert_no_uploads(&*backend, "a stalled body").await;
}

async fn broken_body_is_the_clients_fault_and_keeps_nothing(backend: Arc<dyn Backend>) {
    let digest = Digest::of(b"cut short");
    let body = futures::stream::iter([
        Ok(Bytes::from(bytes_of(8, 5_000))),
        Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
    ])
    .boxed();
    let result = backend.put_blob(digest, body, LIMITS).await;
    assert!(
        matches!(result, Err(StoreError::Body(_))),
        "{}: {result:?}",
        backend.description()
    );
    assert_no_blob(&*backend, &digest, "a broken body").await;
    assert_no_uploads(&*backend, "a broken body").await;
}

async fn put_of_a_stored_blob_is_already_present(backend: Arc<dyn Backend>) {
    let bytes = bytes_of(9, 70_000);
    assert_eq!(
        put(&*backend, &bytes).await.expect("first put"),
        PutOutcome::Created(70_000)
    );
    assert_eq!(
        put(&*backend, &bytes).await.expect("second put"),
        PutOutcome::AlreadyPresent(70_000)
    );
    assert_reads_back(&*backend, &bytes).await;
    assert_no_uploads(&*backend, "a repeated put").await;
}

async fn concurrent_puts_of_one_blob_all_succeed(backend: Arc<dyn Backend>) {
    let bytes = bytes_of(10, 200_000);
    let puts = (0..4).map(|_| put(&*backend, &bytes));
    let outcomes = futures::future::join_all(puts).await;
    let mut created = 0;
    for outcome in outcomes {
        match outcome {
            Ok(PutOutcome::Created(200_000)) => created += 1,
            Ok(PutOutcome::AlreadyPresent(200_000)) => {}
            other => panic!("{}: concurrent put: {other:?}", backend.description()),
        }
    }
    assert!(created >= 1, "no put created the blob");
    assert_reads_back(&*backend, &bytes).await;
    assert_no_uploads(&*backend, "concurrent puts").await;
}

/// What a crash between writing an upload and publishing it leaves behind.
async fn plant_abandoned_upload(backend: &dyn Backend) -> Path {
    let key = layout::new_upload();
    backend
        .write_object(&key, Bytes::from_static(b"partial"), WriteMode::Create)
        .await
        .expect("plant an upload");
    key
}

async fn listings_show_blobs_and_an_abandoned_upload_with_its_age(backend: Arc<dyn Backend>) {
    // Clocks of the test and an emulator on the same machine; the slack is
    // for the resolution of the stored timestamps.
    let slack = chrono::Duration::seconds(5);
    let before = Utc::now() - slack;
    let (a, b) = (bytes_of(11, 10), bytes_of(12, 20_000));
    put(&*backend, &a).await.expect("put a");
    put(&*backend, &b).await.expect("put b");
    let upload = plant_abandoned_upload(&*backend).await;
    let after = Utc::now() + slack;

    let mut blobs = backend.list(Prefix::Blobs).await.expect("list blobs");
    blobs.sort_by_key(|o| o.size);
    let listed: Vec<(Path, u64)> = blobs.iter().map(|o| (o.key.clone(), o.size)).collect();
    assert_eq!(
        listed,
        vec![
            (layout::blob(&Digest::of(&a)), 10),
            (layout::blob(&Digest::of(&b)), 20_000)
        ]
    );
    let uploads = backend.list(Prefix::Uploads).await.expect("list uploads");
    assert_eq!(uploads.len(), 1, "{uploads:?}");
    assert_eq!(uploads[0].key, upload);
    for object in blobs.iter().chain(&uploads) {
        assert!(
            before <= object.last_modified && object.last_modified <= after,
            "{}: {} last modified {} outside {before}..{after}",
            backend.description(),
            object.key,
            object.last_modified
        );
    }
    backend.delete_object(&upload).await.expect("delete upload");
    assert_no_uploads(&*backend, "deleting the upload").await;
}

async fn objects_under_blobs_that_are_not_blobs_are_strays(backend: Arc<dyn Backend>) {
    let bytes = bytes_of(13, 100);
    put(&*backend, &bytes).await.expect("put");
    let stray = Path::from("blobs/sha256/ab/notes.txt");
    backend
        .write_object(&stray, Bytes::from_static(b"hi"), WriteMode::Create)
        .await
        .expect("write a stray");
    let listing = Store::new(backend.clone())
        .list_blobs()
        .await
        .expect("list blobs");
    assert_eq!(listing.blobs.len(), 1);
    assert_eq!(listing.blobs[0].digest, Digest::of(&bytes));
    assert_eq!(listing.strays.len(), 1);
    assert_eq!(listing.strays[0].key, stray);
}

fn record_key() -> Path {
    layout::token(&Digest::of(uuid::Uuid::new_v4().as_bytes()).hex())
}

async fn read_bytes(backend: &dyn Backend, key: &Path) -> Bytes {
    backend.read_object(key).await.expect("read record").bytes
}

async fn a_record_is_created_once_then_overwritten(backend: Arc<dyn Backend>) {
    let key = record_key();
    let written = backend
        .write_object(&key, Bytes::from_static(b"{\"v\":1}"), WriteMode::Create)
        .await
        .expect("create");
    let again = backend
        .write_object(&key, Bytes::from_static(b"{\"v\":2}"), WriteMode::Create)
        .await;
    assert!(
        matches!(&again, Err(StoreError::AlreadyExists { key: k }) if *k == key.to_string()),
        "{}: second create: {again:?}",
        backend.description()
    );
    let read = backend.read_object(&key).await.expect("read");
    assert_eq!(read.bytes.as_ref(), b"{\"v\":1}");
    assert_eq!(read.version, written, "the version read is the one written");
    backend
        .write_object(&key, Bytes::from_static(b"{\"v\":3}"), WriteMode::Overwrite)
        .await
        .expect("overwrite");
    assert_eq!(read_bytes(&*backend, &key).await.as_ref(), b"{\"v\":3}");
}

async fn a_missing_record_is_not_found_and_deletes_are_idempotent(backend: Arc<dyn Backend>) {
    let key = record_key();
    assert!(matches!(
        backend.read_object(&key).await,
        Err(StoreError::NotFound)
    ));
    backend.delete_object(&key).await.expect("delete missing");
    backend
        .write_object(&key, Bytes::from_static(b"{}"), WriteMode::Create)
        .await
        .expect("create");
    backend.delete_object(&key).await.expect("delete");
    assert!(matches!(
        backend.read_object(&key).await,
        Err(StoreError::NotFound)
    ));
    backend.delete_object(&key).await.expect("delete again");
    // Deleted, a key may be created anew.
    backend
        .write_object(&key, Bytes::from_static(b"{}"), WriteMode::Create)
        .await
        .expect("create after delete");
}

async fn an_update_swaps_only_the_version_it_read(backend: Arc<dyn Backend>) {
    let key = record_key();
    let first = backend
        .write_object(&key, Bytes::from_static(b"{\"n\":1}"), WriteMode::Create)
        .await
        .expect("create");
    let read = backend.read_object(&key).await.expect("read");
    assert_eq!(read.version, first);
    let second = backend
        .write_object(
            &key,
            Bytes::from_static(b"{\"n\":2}"),
            WriteMode::Update(read.version.clone()),
        )
        .await
        .expect("update at the version read");
    assert_ne!(second, first, "an update makes a new version");
    assert_update_refused(&*backend, &key, first, "at a stale version").await;
    assert_eq!(read_bytes(&*backend, &key).await.as_ref(), b"{\"n\":2}");
    backend.delete_object(&key).await.expect("delete");
    assert_update_refused(&*backend, &key, second, "of a deleted object").await;
}

async fn assert_update_refused(backend: &dyn Backend, key: &Path, version: Version, what: &str) {
    let result = backend
        .write_object(
            key,
            Bytes::from_static(b"{\"lost\":true}"),
            WriteMode::Update(version),
        )
        .await;
    assert!(
        matches!(result, Err(StoreError::VersionMismatch { .. })),
        "{}: update {what}: {result:?}",
        backend.description()
    );
}

async fn each_prefix_lists_only_its_own_keys(backend: Arc<dyn Backend>) {
    let id = ferry_core::BundleId::generate(1, [7; 10]);
    let name = ferry_core::BundleName::parse("conformance").expect("name");
    let keys = [
        (Prefix::Bundles, layout::bundle(&id)),
        (Prefix::Names, layout::name(&name)),
        (Prefix::Tokens, record_key()),
    ];
    for (_, key) in &keys {
        backend
            .write_object(key, Bytes::from_static(b"{}"), WriteMode::Create)
            .await
            .expect("write record");
    }
    for (prefix, key) in &keys {
        let listed: Vec<Path> = backend
            .list(*prefix)
            .await
            .expect("list")
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(listed, vec![key.clone()], "{prefix:?}");
    }
    for prefix in [Prefix::Blobs, Prefix::Uploads, Prefix::Quarantine] {
        let listed = backend.list(prefix).await.expect("list");
        assert!(listed.is_empty(), "{prefix:?}: {listed:?}");
    }
}

async fn quarantine_moves_a_blob_where_no_reader_looks(backend: Arc<dyn Backend>) {
    let bytes = bytes_of(14, 1_000);
    let digest = Digest::of(&bytes);
    put(&*backend, &bytes).await.expect("put");
    // Read once, so a cache has it too.
    assert_reads_back(&*backend, &bytes).await;
    let store = Store::new(backend.clone());
    store.quarantine_blob(&digest).await.expect("quarantine");
    assert_no_blob(&*backend, &digest, "quarantine").await;
    assert!(matches!(
        backend.open_blob(&digest).await,
        Err(StoreError::NotFound)
    ));
    let moved: Vec<Path> = backend
        .list(Prefix::Quarantine)
        .await
        .expect("list quarantine")
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(moved, vec![layout::quarantine(&digest)]);
    // A re-upload repairs it.
    assert_eq!(
        put(&*backend, &bytes).await.expect("re-upload"),
        PutOutcome::Created(1_000)
    );
}

async fn fsck_counts_an_abandoned_upload_and_gc_sweeps_it(backend: Arc<dyn Backend>) {
    plant_abandoned_upload(&*backend).await;
    let state = crate::api::AppState {
        store: Store::new(backend.clone()),
        auth: crate::auth::Authenticator::new(crate::auth::UploadAuth::Disabled),
        metrics: Arc::default(),
        limits: crate::api::Limits::default(),
        redirect: None,
    };
    let report = crate::fsck::fsck(&state.store, false, 2)
        .await
        .expect("fsck");
    assert_eq!(report.uploads_in_flight, 1, "{report:?}");
    assert!(report.is_clean(), "{report:?}");
    // Within the grace period GC keeps it; past it, GC deletes it.
    let kept = crate::gc::collect(&state, Duration::from_secs(3600))
        .await
        .expect("gc");
    assert_eq!(kept.uploads_deleted, 0);
    let swept = crate::gc::collect(&state, Duration::ZERO)
        .await
        .expect("gc");
    assert_eq!(swept.uploads_deleted, 1);
    let report = crate::fsck::fsck(&state.store, false, 2)
        .await
        .expect("fsck");
    assert_eq!(report.uploads_in_flight, 0, "{report:?}");
}

async fn a_healthy_store_answers_the_probe(backend: Arc<dyn Backend>) {
    backend.probe().await.expect("probe");
}
