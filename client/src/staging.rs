//! Staging: hash local files, upload what the server lacks, create the
//! bundle. `ferry stage` and `ferry submit` both stage through [`stage`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use ferry_core::api::{CreateBundleRequest, Entry, ErrorCode, Owner};
use ferry_core::{BundleId, BundleName, Digest, Ttl};
use futures::StreamExt as _;
use serde::Serialize;

use crate::api::{ApiClient, ApiError};
use crate::files::LocalFile;
use crate::progress::bytes_bar;

/// Why staging failed.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("nothing to stage: no files found")]
    Nothing,
    #[error("hashing thread failed")]
    HashThread(#[source] tokio::task::JoinError),
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("asking {server} which blobs it lacks")]
    Missing {
        server: String,
        #[source]
        source: ApiError,
    },
    #[error("uploading {}", path.display())]
    Upload {
        path: PathBuf,
        #[source]
        source: ApiError,
    },
    #[error(
        "bundle name {0} is taken; remove it first with `ferry bundles rm {0}` or choose another name"
    )]
    NameTaken(String),
    #[error("creating the bundle")]
    Create(#[source] ApiError),
}

/// Uploads at once.
const UPLOAD_CONCURRENCY: usize = 8;

/// What to stage and how the bundle is made.
#[derive(Debug, Clone, Default)]
pub struct StageRequest {
    pub files: Vec<LocalFile>,
    pub name: Option<BundleName>,
    pub ttl: Option<Ttl>,
    pub labels: BTreeMap<String, String>,
    pub owner: Option<Owner>,
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Count {
    pub files: u64,
    pub bytes: u64,
}

/// The `--output json` object (schema in the README).
#[derive(Debug, Clone, Serialize)]
pub struct StageOutcome {
    pub id: BundleId,
    pub name: Option<String>,
    pub token: String,
    pub expires_at: Option<String>,
    pub entries: Vec<Entry>,
    pub uploaded: Count,
    pub skipped: Count,
}

/// Stages `request.files` as one bundle: hash, upload what the server
/// lacks, create the bundle.
pub async fn stage(client: &ApiClient, request: StageRequest) -> Result<StageOutcome, StageError> {
    if request.files.is_empty() {
        return Err(StageError::Nothing);
    }
    let entries = hash(&request.files, request.quiet).await?;
    let (uploaded, skipped) =
        upload_missing(client, &request.files, &entries, request.quiet).await?;
    let created = match client
        .create_bundle(&CreateBundleRequest {
            name: request.name.clone(),
            entries: entries.clone(),
            labels: request.labels,
            owner: request.owner,
            ttl_seconds: request.ttl,
        })
        .await
    {
        Ok(created) => created,
        Err(ApiError::Server {
            code: ErrorCode::NameTaken,
            ..
        }) => {
            let name = request.name.as_ref().map(BundleName::as_str);
            return Err(StageError::NameTaken(name.unwrap_or_default().to_owned()));
        }
        Err(e) => return Err(StageError::Create(e)),
    };
    Ok(StageOutcome {
        id: created.id,
        name: created.name.map(|n| n.to_string()),
        token: created.token,
        expires_at: created
            .expires_at
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        entries,
        uploaded,
        skipped,
    })
}

/// The bundle entry of each file, in order, hashed off the async runtime.
async fn hash(files: &[LocalFile], quiet: bool) -> Result<Vec<Entry>, StageError> {
    let sources: Vec<PathBuf> = files.iter().map(|f| f.source.clone()).collect();
    let total: u64 = sources
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    let bar = bytes_bar(total, "hashing", quiet);
    let hashes = {
        let bar = bar.clone();
        tokio::task::spawn_blocking(move || crate::hash::hash_all(&sources, &|n| bar.inc(n)))
            .await
            .map_err(StageError::HashThread)?
            .map_err(|(path, source)| StageError::Read { path, source })?
    };
    bar.finish_and_clear();
    Ok(files
        .iter()
        .zip(hashes)
        .map(|(file, (digest, size))| Entry {
            path: file.path.clone(),
            digest,
            size,
            mode: file.executable.then_some(0o755),
        })
        .collect())
}

/// Uploads the blobs the server lacks, one per distinct digest from the
/// first file that has it; returns what was uploaded and what was skipped.
async fn upload_missing(
    client: &ApiClient,
    files: &[LocalFile],
    entries: &[Entry],
    quiet: bool,
) -> Result<(Count, Count), StageError> {
    let mut by_digest: HashMap<Digest, (PathBuf, u64)> = HashMap::new();
    for (file, entry) in files.iter().zip(entries) {
        by_digest
            .entry(entry.digest)
            .or_insert((file.source.clone(), entry.size));
    }
    let unique: Vec<Digest> = by_digest.keys().copied().collect();
    let missing: HashSet<Digest> = client
        .missing(&unique)
        .await
        .map_err(|source| StageError::Missing {
            server: client.server().to_owned(),
            source,
        })?
        .into_iter()
        .collect();
    let upload_total: u64 = missing.iter().map(|d| by_digest[d].1).sum();
    let mut uploaded = Count::default();
    let mut skipped = Count::default();
    for (digest, (_, size)) in &by_digest {
        let count = if missing.contains(digest) {
            &mut uploaded
        } else {
            &mut skipped
        };
        count.files += 1;
        count.bytes += size;
    }

    let bar = bytes_bar(upload_total, "uploading", quiet);
    let jobs = missing.iter().map(|digest| {
        let (path, size) = by_digest[digest].clone();
        let bar = bar.clone();
        let client = client.clone();
        let digest = *digest;
        async move {
            let on_bytes = Arc::new(move |n| bar.inc(n));
            client
                .upload(&path, &digest, size, move |n| on_bytes(n))
                .await
                .map_err(|source| StageError::Upload { path, source })
        }
    });
    let mut results = futures::stream::iter(jobs).buffer_unordered(UPLOAD_CONCURRENCY);
    while let Some(result) = results.next().await {
        result?;
    }
    bar.finish_and_clear();
    Ok((uploaded, skipped))
}
