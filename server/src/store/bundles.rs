//! Bundle records and the name and token indexes that lead to them, as
//! small JSON objects, written so that several replicas on one store may
//! create, take over and delete at once.
//!
//! A **name** is held by a claim, `names/<name>.json`: the id of the bundle
//! holding it and when that bundle expires. A new name is claimed with a
//! create-if-absent write; a claim whose bundle expired or was released is
//! taken over with a compare-and-swap on the version read. So of any number
//! of contenders, on any number of replicas, exactly one wins and the rest
//! are told the name is taken. The claim alone says whether the name is
//! held: a contender never reads a bundle record, which the winner writes
//! only after its claim (and which a contender would otherwise find missing
//! and take for a freed name). Deleting a bundle releases its claim with
//! another compare-and-swap (`"id": null`), never by deleting the claim: a
//! delete is unconditional and could remove the claim of a bundle that took
//! the name over in between.
//!
//! A bundle is **created** claim first, then token index, then record; then
//! its blobs are checked once more against a garbage-collection sweep
//! running at the same moment (the sweep's half is in `crate::gc`).

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use ferry_core::api::Manifest;
use ferry_core::{BundleId, BundleName, BundleRef, Digest};
use futures::stream::{StreamExt, TryStreamExt};
use object_store::path::Path;
use serde::{Deserialize, Serialize};

use super::backend::{Version, WriteMode};
use super::layout::{self, Prefix};
use super::{Store, StoreError};

/// Tries at claiming a name before giving up: each failed try means
/// another writer changed the claim meanwhile, and a second look almost
/// always finds it held.
const CLAIM_ATTEMPTS: usize = 4;

/// A claim whose bundle record does not exist is released by a `DELETE`
/// of the name only once it is this old: a younger one may belong to a
/// creation that has not written its record yet. Far above any creation's
/// duration and above the clock skew object stores accept (S3 refuses
/// requests signed more than 15 minutes off).
const ORPHAN_CLAIM_AGE: chrono::Duration = chrono::Duration::minutes(30);

/// What the store keeps of a bundle: its manifest and the sha256 of its read
/// token (the token itself is never stored).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundleRecord {
    pub manifest: Manifest,
    pub token_sha256: String,
}

impl BundleRecord {
    /// Whether the bundle's TTL has passed (it is then treated as gone).
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.manifest.expires_at.is_some_and(|at| at <= now)
    }

    /// The distinct blobs the bundle lists.
    pub fn digests(&self) -> Vec<Digest> {
        let distinct: HashSet<Digest> = self.manifest.entries.iter().map(|e| e.digest).collect();
        distinct.into_iter().collect()
    }
}

/// Token index entry: which bundle a token leads to.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Pointer {
    pub(crate) id: BundleId,
}

/// Name index entry: which bundle holds a name, and until when.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct NameClaim {
    /// `None` once the bundle was deleted: the name is free.
    pub(crate) id: Option<BundleId>,
    /// The holder's expiry; the name is free from then on.
    #[serde(default)]
    pub(crate) expires_at: Option<DateTime<Utc>>,
    /// 1: the claim says by itself whether the name is held. 0 (absent): an
    /// index written before claims carried the expiry (`{"id": ...}`),
    /// judged by its bundle record.
    #[serde(default)]
    pub(crate) v: u8,
}

impl NameClaim {
    fn held_by(record: &BundleRecord) -> Self {
        Self {
            id: Some(record.manifest.id.clone()),
            expires_at: record.manifest.expires_at,
            v: 1,
        }
    }

    fn released() -> Self {
        Self {
            id: None,
            expires_at: None,
            v: 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("bundle name {0} is taken")]
    NameTaken(BundleName),
    /// Blobs a garbage-collection sweep removed (or was removing) while the
    /// bundle was being created; nothing of the bundle was kept.
    #[error("{} blob(s) went while the bundle was created", .0.len())]
    MissingBlobs(Vec<Digest>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn to_json<T: Serialize>(key: &Path, value: &T) -> Result<bytes::Bytes, StoreError> {
    serde_json::to_vec(value)
        .map(bytes::Bytes::from)
        .map_err(|e| StoreError::Corrupt {
            path: key.to_string(),
            reason: e.to_string(),
        })
}

fn from_json<T: serde::de::DeserializeOwned>(key: &Path, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        path: key.to_string(),
        reason: e.to_string(),
    })
}

impl Store {
    /// Reads and parses one JSON object; unparseable bytes are `Corrupt`.
    pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &Path,
    ) -> Result<T, StoreError> {
        let object = self.backend.read_object(key).await?;
        from_json(key, &object.bytes)
    }

    async fn write_json<T: Serialize>(
        &self,
        key: &Path,
        value: &T,
        mode: WriteMode,
    ) -> Result<Version, StoreError> {
        self.backend
            .write_object(key, to_json(key, value)?, mode)
            .await
    }

    /// Stores a new bundle: its name claim (refused if a live bundle holds
    /// the name), token index and record, so the bundle is visible only once
    /// everything leading to it exists. Then checks that no blob it lists
    /// went, or is going, to a GC sweep meanwhile; if one did, the bundle is
    /// removed again and the answer is [`CreateError::MissingBlobs`].
    pub async fn create_bundle(&self, record: &BundleRecord) -> Result<(), CreateError> {
        if let Some(name) = &record.manifest.name {
            self.claim_name(name, record).await?;
        }
        let pointer = Pointer {
            id: record.manifest.id.clone(),
        };
        let written = async {
            self.write_json(
                &layout::token(&record.token_sha256),
                &pointer,
                WriteMode::Overwrite,
            )
            .await?;
            self.write_json(
                &layout::bundle(&record.manifest.id),
                record,
                WriteMode::Overwrite,
            )
            .await?;
            self.blobs_gone(record).await
        }
        .await;
        match written {
            Ok(gone) if gone.is_empty() => Ok(()),
            Ok(gone) => {
                self.delete_bundle(record).await?;
                Err(CreateError::MissingBlobs(gone))
            }
            Err(error) => {
                // Leave no half-made bundle holding its name.
                if let Err(cleanup) = self.delete_bundle(record).await {
                    tracing::warn!(id = %record.manifest.id, %cleanup, "could not remove a bundle whose creation failed");
                }
                Err(error.into())
            }
        }
    }

    /// Claims `name` for `record`: creates the claim, or takes over one whose
    /// bundle is gone, by compare-and-swap.
    async fn claim_name(
        &self,
        name: &BundleName,
        record: &BundleRecord,
    ) -> Result<(), CreateError> {
        let key = layout::name(name);
        let ours = to_json(&key, &NameClaim::held_by(record))?;
        for _ in 0..CLAIM_ATTEMPTS {
            match self
                .backend
                .write_object(&key, ours.clone(), WriteMode::Create)
                .await
            {
                Ok(_) => return Ok(()),
                Err(StoreError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            let current = match self.backend.read_object(&key).await {
                Ok(current) => current,
                // Removed meanwhile: create it again.
                Err(StoreError::NotFound) => continue,
                Err(e) => return Err(e.into()),
            };
            let claim: NameClaim = from_json(&key, &current.bytes)?;
            if claim.id.as_ref() == Some(&record.manifest.id) {
                // Our own create, answered late and tried again.
                return Ok(());
            }
            if self.is_held(name, &claim, Utc::now()).await? {
                return Err(CreateError::NameTaken(name.clone()));
            }
            match self
                .backend
                .write_object(&key, ours.clone(), WriteMode::Update(current.version))
                .await
            {
                Ok(_) => {
                    tracing::info!(%name, previous = ?claim.id, id = %record.manifest.id, "name taken over");
                    return Ok(());
                }
                // Another contender changed the claim first: look again.
                Err(StoreError::VersionMismatch { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(CreateError::NameTaken(name.clone()))
    }

    /// Whether `claim` holds `name` at `now`.
    async fn is_held(
        &self,
        name: &BundleName,
        claim: &NameClaim,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let Some(id) = &claim.id else {
            return Ok(false);
        };
        if claim.v >= 1 {
            return Ok(claim.expires_at.is_none_or(|at| at > now));
        }
        match self.read_json::<BundleRecord>(&layout::bundle(id)).await {
            Ok(record) => {
                Ok(!record.is_expired(now) && record.manifest.name.as_ref() == Some(name))
            }
            Err(StoreError::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The blobs of `record` that a GC sweep has marked to delete, or that
    /// are gone: what [`Store::create_bundle`] checks after writing. Why
    /// this is enough is in `crate::gc`.
    async fn blobs_gone(&self, record: &BundleRecord) -> Result<Vec<Digest>, StoreError> {
        let condemned = self.condemned().await?;
        let (mut gone, rest): (Vec<Digest>, Vec<Digest>) = record
            .digests()
            .into_iter()
            .partition(|digest| condemned.contains(digest));
        gone.extend(self.missing(&rest).await?);
        Ok(gone)
    }

    /// The live (not expired) bundle `bundle` refers to.
    pub async fn get_bundle(&self, bundle: &BundleRef) -> Result<BundleRecord, StoreError> {
        let id = match bundle {
            BundleRef::Id(id) => id.clone(),
            BundleRef::Name(name) => self
                .read_json::<NameClaim>(&layout::name(name))
                .await?
                .id
                .ok_or(StoreError::NotFound)?,
        };
        let record: BundleRecord = self.read_json(&layout::bundle(&id)).await?;
        if record.is_expired(Utc::now()) {
            return Err(StoreError::NotFound);
        }
        // A claim left behind by a deleted bundle may point elsewhere.
        if let BundleRef::Name(name) = bundle
            && record.manifest.name.as_ref() != Some(name)
        {
            return Err(StoreError::NotFound);
        }
        Ok(record)
    }

    /// Whether bundle `id`'s record still exists (a `HEAD`, not a read):
    /// how a replica that did not delete a bundle learns that it is gone.
    pub async fn bundle_exists(&self, id: &BundleId) -> Result<bool, StoreError> {
        match self.backend.head_object(&layout::bundle(id)).await {
            Ok(_) => Ok(true),
            Err(StoreError::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The id of the bundle whose token hashes to `token_sha256`.
    pub async fn bundle_for_token(&self, token_sha256: &str) -> Result<BundleId, StoreError> {
        Ok(self
            .read_json::<Pointer>(&layout::token(token_sha256))
            .await?
            .id)
    }

    /// Every stored bundle record, expired ones included (the caller filters).
    pub async fn list_bundles(&self) -> Result<Vec<BundleRecord>, StoreError> {
        let keys = self.list_keys(Prefix::Bundles).await?;
        self.read_bundles(keys).await
    }

    /// The records at `keys`, skipping those deleted since they were listed.
    pub async fn read_bundles(&self, keys: Vec<Path>) -> Result<Vec<BundleRecord>, StoreError> {
        futures::stream::iter(keys)
            .map(|key| async move {
                match self.read_json::<BundleRecord>(&key).await {
                    Ok(record) => Ok(Some(record)),
                    // Deleted between list and read.
                    Err(StoreError::NotFound) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .buffered(16)
            .try_filter_map(|r| async move { Ok(r) })
            .try_collect()
            .await
    }

    /// Removes a bundle: the record first (so it is gone at once for every
    /// reader), then the token index, then releases its name.
    pub async fn delete_bundle(&self, record: &BundleRecord) -> Result<(), StoreError> {
        let id = &record.manifest.id;
        self.backend.delete_object(&layout::bundle(id)).await?;
        if let Err(error) = self
            .backend
            .delete_object(&layout::token(&record.token_sha256))
            .await
        {
            // Harmless: the index leads to no record (fsck counts it).
            tracing::warn!(%id, %error, "token index of a deleted bundle left behind");
        }
        if let Some(name) = &record.manifest.name
            && let Err(error) = self.release_name(name, id).await
        {
            tracing::warn!(%id, %name, %error, "name of a deleted bundle not released; a DELETE of the name releases it later");
        }
        Ok(())
    }

    /// Releases `name` if bundle `id` still holds it (a compare-and-swap:
    /// a bundle that took it over meanwhile keeps it).
    async fn release_name(&self, name: &BundleName, id: &BundleId) -> Result<(), StoreError> {
        let key = layout::name(name);
        let released = to_json(&key, &NameClaim::released())?;
        for _ in 0..CLAIM_ATTEMPTS {
            let current = match self.backend.read_object(&key).await {
                Ok(current) => current,
                Err(StoreError::NotFound) => return Ok(()),
                Err(e) => return Err(e),
            };
            let claim: NameClaim = from_json(&key, &current.bytes)?;
            if claim.id.as_ref() != Some(id) {
                return Ok(());
            }
            match self
                .backend
                .write_object(&key, released.clone(), WriteMode::Update(current.version))
                .await
            {
                Ok(_) => return Ok(()),
                Err(StoreError::VersionMismatch { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Releases a claim on `name` whose bundle record does not exist, once
    /// the claim is old enough that no creation can still be writing that
    /// record (a crash between claim and record leaves one). Returns whether
    /// it released one.
    pub async fn release_orphan_name(&self, name: &BundleName) -> Result<bool, StoreError> {
        let key = layout::name(name);
        let current = match self.backend.read_object(&key).await {
            Ok(current) => current,
            Err(StoreError::NotFound) => return Ok(false),
            Err(e) => return Err(e),
        };
        let claim: NameClaim = from_json(&key, &current.bytes)?;
        let Some(id) = claim.id else {
            return Ok(false);
        };
        if self.bundle_exists(&id).await? {
            return Ok(false);
        }
        let age = Utc::now() - self.backend.head_object(&key).await?.last_modified;
        if age < ORPHAN_CLAIM_AGE {
            return Ok(false);
        }
        let released = to_json(&key, &NameClaim::released())?;
        match self
            .backend
            .write_object(&key, released, WriteMode::Update(current.version))
            .await
        {
            Ok(_) => {
                tracing::info!(%name, %id, "released a name whose bundle was never written");
                Ok(true)
            }
            Err(StoreError::VersionMismatch { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
