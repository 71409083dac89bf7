//! Bundle records and the name and token indexes that lead to them.

use chrono::Utc;
use ferry_core::api::Manifest;
use ferry_core::{BundleId, BundleName, BundleRef};
use futures::stream::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

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

fn bundle_path(id: &BundleId) -> Path {
    Path::from(format!("bundles/{id}.json"))
}

fn name_path(name: &BundleName) -> Path {
    Path::from(format!("names/{name}.json"))
}

fn token_path(token_sha256: &str) -> Path {
    Path::from(format!("tokens/{token_sha256}.json"))
}

impl Store {
    /// Reads and parses one JSON object; unparseable bytes are `Corrupt`.
    pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &Path,
    ) -> Result<T, StoreError> {
        let bytes = self
            .inner
            .get(path)
            .await
            .map_err(StoreError::from_backend)?
            .bytes()
            .await
            .map_err(StoreError::from_backend)?;
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            path: path.to_string(),
            reason: e.to_string(),
        })
    }

    async fn write_json<T: Serialize>(
        &self,
        path: &Path,
        value: &T,
        mode: PutMode,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Corrupt {
            path: path.to_string(),
            reason: e.to_string(),
        })?;
        let payload = PutPayload::from(bytes);
        let result = self
            .inner
            .put_opts(path, payload.clone(), PutOptions::from(mode.clone()))
            .await;
        match result {
            Ok(_) => Ok(()),
            // Some S3-compatible stores lack conditional PUT: check, then write.
            Err(object_store::Error::NotImplemented { .. }) if mode == PutMode::Create => {
                match self.inner.head(path).await {
                    Ok(_) => Err(StoreError::Backend(object_store::Error::AlreadyExists {
                        path: path.to_string(),
                        source: "exists".into(),
                    })),
                    Err(object_store::Error::NotFound { .. }) => self
                        .inner
                        .put(path, payload)
                        .await
                        .map(|_| ())
                        .map_err(StoreError::from_backend),
                    Err(e) => Err(StoreError::from_backend(e)),
                }
            }
            Err(e) => Err(StoreError::from_backend(e)),
        }
    }

    /// Stores a new bundle: name index (refused if the name is held by a live
    /// bundle), token index, then the record itself, so the bundle is visible
    /// only once everything leading to it exists.
    pub async fn create_bundle(&self, record: &BundleRecord) -> Result<(), CreateError> {
        let id = &record.manifest.id;
        if let Some(name) = &record.manifest.name {
            let pointer = Pointer { id: id.clone() };
            match self
                .write_json(&name_path(name), &pointer, PutMode::Create)
                .await
            {
                Ok(()) => {}
                Err(StoreError::Backend(object_store::Error::AlreadyExists { .. })) => {
                    // A name whose bundle is gone or expired may be taken over.
                    match self.get_bundle(&BundleRef::Name(name.clone())).await {
                        Err(StoreError::NotFound) => {
                            self.write_json(&name_path(name), &pointer, PutMode::Overwrite)
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
            &token_path(&record.token_sha256),
            &pointer,
            PutMode::Overwrite,
        )
        .await?;
        self.write_json(&bundle_path(id), record, PutMode::Overwrite)
            .await?;
        Ok(())
    }

    /// The live (not expired) bundle `bundle` refers to.
    pub async fn get_bundle(&self, bundle: &BundleRef) -> Result<BundleRecord, StoreError> {
        let id = match bundle {
            BundleRef::Id(id) => id.clone(),
            BundleRef::Name(name) => self.read_json::<Pointer>(&name_path(name)).await?.id,
        };
        let record: BundleRecord = self.read_json(&bundle_path(&id)).await?;
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
            .read_json::<Pointer>(&token_path(token_sha256))
            .await?
            .id)
    }

    /// Every stored bundle record, expired ones included (the caller filters).
    pub async fn list_bundles(&self) -> Result<Vec<BundleRecord>, StoreError> {
        let metas: Vec<_> = self
            .inner
            .list(Some(&Path::from("bundles")))
            .try_collect()
            .await
            .map_err(StoreError::from_backend)?;
        futures::stream::iter(metas)
            .map(|meta| async move {
                match self.read_json::<BundleRecord>(&meta.location).await {
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
        match self.inner.delete(&bundle_path(id)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(StoreError::from_backend(e)),
        }
        let _ = self.inner.delete(&token_path(&record.token_sha256)).await;
        if let Some(name) = &record.manifest.name
            && let Ok(pointer) = self.read_json::<Pointer>(&name_path(name)).await
            && &pointer.id == id
        {
            let _ = self.inner.delete(&name_path(name)).await;
        }
        Ok(())
    }
}
