//! Bundle records and the name and token indexes that lead to them, as
//! small JSON objects.

use chrono::Utc;
use ferry_core::api::Manifest;
use ferry_core::{BundleId, BundleName, BundleRef};
use futures::stream::{StreamExt, TryStreamExt};
use object_store::path::Path;
use serde::{Deserialize, Serialize};

use super::backend::WriteMode;
use super::layout::{self, Prefix};
use super::{Store, StoreError};

/// What the store keeps of a bundle: its manifest and the sha256 of its read
/// token (the token itself is never stored).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundleRecord {
    pub manifest: Manifest,
    pub token_sha256: String,
}

impl BundleRecord {
    /// Whether the bundle's TTL has passed (it is then treated as gone).
    pub fn is_expired(&self, now: chrono::DateTime<Utc>) -> bool {
        self.manifest.expires_at.is_some_and(|at| at <= now)
    }
}

/// Index entry: which bundle a name or token leads to.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Pointer {
    pub(crate) id: BundleId,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("bundle name {0} is taken")]
    NameTaken(BundleName),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Store {
    /// Reads and parses one JSON object; unparseable bytes are `Corrupt`.
    pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &Path,
    ) -> Result<T, StoreError> {
        let object = self.backend.read_object(key).await?;
        serde_json::from_slice(&object.bytes).map_err(|e| StoreError::Corrupt {
            path: key.to_string(),
            reason: e.to_string(),
        })
    }

    async fn write_json<T: Serialize>(
        &self,
        key: &Path,
        value: &T,
        mode: WriteMode,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Corrupt {
            path: key.to_string(),
            reason: e.to_string(),
        })?;
        self.backend
            .write_object(key, bytes.into(), mode)
            .await
            .map(|_| ())
    }

    /// Stores a new bundle: name index (refused if the name is held by a live
    /// bundle), token index, then the record itself, so the bundle is visible
    /// only once everything leading to it exists.
    pub async fn create_bundle(&self, record: &BundleRecord) -> Result<(), CreateError> {
        let id = &record.manifest.id;
        if let Some(name) = &record.manifest.name {
            let pointer = Pointer { id: id.clone() };
            let key = layout::name(name);
            match self.write_json(&key, &pointer, WriteMode::Create).await {
                Ok(()) => {}
                Err(StoreError::AlreadyExists { .. }) => {
                    // A name whose bundle is gone or expired may be taken
                    // over: the one object that is ever rewritten.
                    match self.get_bundle(&BundleRef::Name(name.clone())).await {
                        Err(StoreError::NotFound) => {
                            self.write_json(&key, &pointer, WriteMode::Overwrite)
                                .await?;
                        }
                        Ok(_) => return Err(CreateError::NameTaken(name.clone())),
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        let pointer = Pointer { id: id.clone() };
        self.write_json(
            &layout::token(&record.token_sha256),
            &pointer,
            WriteMode::Overwrite,
        )
        .await?;
        self.write_json(&layout::bundle(id), record, WriteMode::Overwrite)
            .await?;
        Ok(())
    }

    /// The live (not expired) bundle `bundle` refers to.
    pub async fn get_bundle(&self, bundle: &BundleRef) -> Result<BundleRecord, StoreError> {
        let id = match bundle {
            BundleRef::Id(id) => id.clone(),
            BundleRef::Name(name) => self.read_json::<Pointer>(&layout::name(name)).await?.id,
        };
        let record: BundleRecord = self.read_json(&layout::bundle(&id)).await?;
        if record.is_expired(Utc::now()) {
            return Err(StoreError::NotFound);
        }
        // A name index left behind by a deleted bundle may point elsewhere.
        if let BundleRef::Name(name) = bundle
            && record.manifest.name.as_ref() != Some(name)
        {
            return Err(StoreError::NotFound);
        }
        Ok(record)
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
    /// reader), then the indexes that led to it.
    pub async fn delete_bundle(&self, record: &BundleRecord) -> Result<(), StoreError> {
        let id = &record.manifest.id;
        self.backend.delete_object(&layout::bundle(id)).await?;
        let _ = self
            .backend
            .delete_object(&layout::token(&record.token_sha256))
            .await;
        if let Some(name) = &record.manifest.name
            && let Ok(pointer) = self.read_json::<Pointer>(&layout::name(name)).await
            && &pointer.id == id
        {
            let _ = self.backend.delete_object(&layout::name(name)).await;
        }
        Ok(())
    }
}
