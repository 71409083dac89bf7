//! A lease kept in the store: of the replicas sharing a bucket, at most one
//! holds it at a time (the one that runs the GC sweep), and a holder that
//! dies (`kill -9`) loses it after `--gc-lease-ttl`, without any replica
//! trusting another's clock.
//!
//! The lease is one object, `leases/<name>.json`: `{"holder", "beat",
//! "succeeded"}`. Every write is conditional (create-if-absent, or
//! compare-and-swap on the version read) and bumps `beat`, so every write
//! is a new version (S3's ETag is a hash of the bytes; equal bytes would
//! be an equal version). A holder rewrites it every third of the TTL while
//! it holds it and releases it (`"holder": null`) when its run ends.
//!
//! A replica takes the lease when:
//! - there is none (create-if-absent: one creator wins);
//! - it is released and has not changed since this replica last looked
//!   (one GC interval ago): nobody else ran meanwhile. The replica that
//!   just released it is the first to see it unchanged, so one replica
//!   keeps the job while it lives;
//! - it is held by another and this replica has seen the very same
//!   version for at least the TTL: the holder stopped renewing. Time is
//!   measured on this replica's own monotonic clock, from when it first
//!   saw that version, so clock skew between replicas does not matter.
//!
//! A holder that cannot renew for two thirds of the TTL counts the lease
//! as lost ([`Held::is_lost`]) and stops, before anyone may take over.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use object_store::path::Path;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::store::{Store, StoreError, Version, WriteMode, layout};

/// The lease object's content.
#[derive(Debug, Serialize, Deserialize)]
struct LeaseState {
    holder: Option<String>,
    /// One more on every write (see the module doc).
    beat: u64,
    /// Whether the run the last holder released it after succeeded.
    #[serde(default)]
    succeeded: bool,
}

/// One named lease, as one replica sees it.
#[derive(Debug)]
pub struct Lease {
    store: Store,
    key: Path,
    /// This replica's name in the lease: its host name and a random part.
    holder: String,
    ttl: Duration,
    /// The version seen at the last look, and when it was first seen.
    seen: Mutex<Option<(Version, Instant)>>,
}

/// What [`Lease::try_acquire`] found.
pub enum Attempt {
    Held(Held),
    /// Another replica has it, or had it too recently.
    Elsewhere {
        /// Since this replica last looked, another replica completed a
        /// run and released the lease after it.
        others_succeeded: bool,
    },
}

impl Lease {
    /// The lease `name` in `store`, with `ttl` after which a holder that
    /// stopped renewing loses it.
    pub fn new(store: Store, name: &str, ttl: Duration) -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "ferry-server".into());
        let random = uuid::Uuid::new_v4().simple().to_string();
        Self {
            store,
            key: layout::lease(name),
            holder: format!("{host}-{}", &random[..12]),
            ttl,
            seen: Mutex::new(None),
        }
    }

    /// This replica's name in the lease.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    fn state(&self, holder: Option<&str>, beat: u64, succeeded: bool) -> LeaseState {
        LeaseState {
            holder: holder.map(str::to_owned),
            beat,
            succeeded,
        }
    }

    async fn write(&self, state: &LeaseState, mode: WriteMode) -> Result<Version, StoreError> {
        let bytes = serde_json::to_vec(state).map_err(|e| StoreError::Corrupt {
            path: self.key.to_string(),
            reason: e.to_string(),
        })?;
        self.store
            .write_small_object(&self.key, bytes.into(), mode)
            .await
    }

    /// Remembers `version` as seen now, unless it was seen before; returns
    /// since when it has been seen (`None`: it is new to this replica).
    fn look(&self, version: &Version) -> Option<Instant> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        match &*seen {
            Some((at_version, since)) if at_version == version => Some(*since),
            _ => {
                *seen = Some((version.clone(), Instant::now()));
                None
            }
        }
    }

    /// Takes the lease if it is free for this replica (see the module doc).
    pub async fn try_acquire(self: &Arc<Self>) -> Result<Attempt, StoreError> {
        let object = match self.store.read_small_object(&self.key).await {
            Ok(object) => object,
            Err(StoreError::NotFound) => {
                let first = self.state(Some(&self.holder), 0, false);
                return match self.write(&first, WriteMode::Create).await {
                    Ok(version) => Ok(Attempt::Held(self.held(version, 0))),
                    Err(StoreError::AlreadyExists { .. }) => Ok(Attempt::Elsewhere {
                        others_succeeded: false,
                    }),
                    Err(e) => Err(e),
                };
            }
            Err(e) => return Err(e),
        };
        let had_looked = self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        let unchanged_since = self.look(&object.version);
        // Unreadable: whoever wrote it is not a replica that can hold it.
        let state: LeaseState = serde_json::from_slice(&object.bytes).unwrap_or(LeaseState {
            holder: None,
            beat: 0,
            succeeded: false,
        });
        let free = match state.holder.as_deref() {
            None => unchanged_since.is_some(),
            // Ours: a release that did not get through.
            Some(holder) if holder == self.holder => true,
            Some(_) => unchanged_since.is_some_and(|since| since.elapsed() >= self.ttl),
        };
        if !free {
            return Ok(Attempt::Elsewhere {
                others_succeeded: had_looked
                    && unchanged_since.is_none()
                    && state.holder.is_none()
                    && state.succeeded,
            });
        }
        let beat = state.beat + 1;
        let mine = self.state(Some(&self.holder), beat, false);
        match self.write(&mine, WriteMode::Update(object.version)).await {
            Ok(version) => {
                if let Some(previous) = state.holder.filter(|h| *h != self.holder) {
                    tracing::warn!(lease = %self.key, %previous, ttl = ?self.ttl, "took over a lease its holder stopped renewing");
                }
                Ok(Attempt::Held(self.held(version, beat)))
            }
            Err(StoreError::VersionMismatch { .. }) => Ok(Attempt::Elsewhere {
                others_succeeded: false,
            }),
            Err(e) => Err(e),
        }
    }

    fn held(self: &Arc<Self>, version: Version, beat: u64) -> Held {
        let shared = Arc::new(HeldState {
            written: Mutex::new((version, beat, Instant::now())),
            lost: AtomicBool::new(false),
        });
        let renewer = tokio::spawn(renew(self.clone(), shared.clone()));
        Held {
            lease: self.clone(),
            shared,
            renewer,
        }
    }
}

/// What the holder and its renewer share.
#[derive(Debug)]
struct HeldState {
    /// The version last written, its beat, and when it was written.
    written: Mutex<(Version, u64, Instant)>,
    lost: AtomicBool,
}

/// The lease, held by this replica until [`Held::release`].
pub struct Held {
    lease: Arc<Lease>,
    shared: Arc<HeldState>,
    renewer: tokio::task::JoinHandle<()>,
}

impl Held {
    /// Whether the lease may have passed to another replica: a renewal
    /// found another version, or none got through for two thirds of the TTL.
    pub fn is_lost(&self) -> bool {
        let since = self
            .shared
            .written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .2;
        self.shared.lost.load(Ordering::Relaxed) || since.elapsed() * 3 >= self.lease.ttl * 2
    }

    /// Gives the lease up, saying whether the run under it succeeded.
    pub async fn release(mut self, succeeded: bool) {
        self.renewer.abort();
        // Wait for it, so no renewal races the release.
        let _ = (&mut self.renewer).await;
        if self.shared.lost.load(Ordering::Relaxed) {
            return;
        }
        let (version, beat, _) = self
            .shared
            .written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let released = self.lease.state(None, beat + 1, succeeded);
        match self
            .lease
            .write(&released, WriteMode::Update(version))
            .await
        {
            // Seen by this replica now, so its next look finds it unchanged.
            Ok(version) => {
                let _ = self.lease.look(&version);
            }
            Err(error) => {
                tracing::warn!(lease = %self.lease.key, %error, "could not release the lease; another replica takes it over after its TTL");
            }
        }
    }
}

impl Drop for Held {
    /// A run that is dropped (shutdown) stops renewing; others take over
    /// after the TTL.
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

/// Rewrites the lease every third of its TTL until aborted or lost.
async fn renew(lease: Arc<Lease>, shared: Arc<HeldState>) {
    let period = lease.ttl / 3;
    loop {
        tokio::time::sleep(period).await;
        let (version, beat, _) = shared
            .written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let next = lease.state(Some(&lease.holder), beat + 1, false);
        match lease.write(&next, WriteMode::Update(version)).await {
            Ok(version) => {
                *shared.written.lock().unwrap_or_else(|e| e.into_inner()) =
                    (version, beat + 1, Instant::now());
            }
            Err(StoreError::VersionMismatch { .. } | StoreError::NotFound) => {
                tracing::warn!(lease = %lease.key, "lost the lease: another replica holds it");
                shared.lost.store(true, Ordering::Relaxed);
                return;
            }
            // Tried again next period; `is_lost` stops the holder in time.
            Err(error) => tracing::warn!(lease = %lease.key, %error, "could not renew the lease"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use object_store::memory::InMemory;

    use super::*;
    use crate::store::ObjectStoreBackend;

    fn store() -> Store {
        Store::new(Arc::new(ObjectStoreBackend::new(
            Arc::new(InMemory::new()),
            "memory",
        )))
    }

    fn held(attempt: Attempt) -> Option<Held> {
        match attempt {
            Attempt::Held(held) => Some(held),
            Attempt::Elsewhere { .. } => None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_replica_holds_at_a_time_and_keeps_the_job_while_it_lives() {
        let store = store();
        let ttl = Duration::from_secs(30);
        let a = Arc::new(Lease::new(store.clone(), "gc", ttl));
        let b = Arc::new(Lease::new(store.clone(), "gc", ttl));
        let held_a = held(a.try_acquire().await.unwrap()).expect("the first takes it");
        assert!(held(b.try_acquire().await.unwrap()).is_none());
        // Held for longer than the TTL: renewals keep it.
        tokio::time::sleep(ttl * 2).await;
        assert!(!held_a.is_lost());
        assert!(held(b.try_acquire().await.unwrap()).is_none());
        held_a.release(true).await;
        // b saw a new version since its last look: a's run; b waits. a
        // finds its own release unchanged and runs again.
        match b.try_acquire().await.unwrap() {
            Attempt::Elsewhere { others_succeeded } => assert!(others_succeeded),
            Attempt::Held(_) => panic!("b took a lease released a moment ago"),
        }
        let again = held(a.try_acquire().await.unwrap()).expect("a runs again");
        again.release(true).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_holder_that_stops_renewing_loses_the_lease_after_the_ttl() {
        let store = store();
        let ttl = Duration::from_secs(30);
        let a = Arc::new(Lease::new(store.clone(), "gc", ttl));
        let b = Arc::new(Lease::new(store.clone(), "gc", ttl));
        let held_a = held(a.try_acquire().await.unwrap()).expect("a takes it");
        // What kill -9 leaves: the lease held, nobody renewing it.
        held_a.renewer.abort();
        assert!(held(b.try_acquire().await.unwrap()).is_none());
        tokio::time::sleep(ttl / 2).await;
        assert!(held(b.try_acquire().await.unwrap()).is_none(), "too early");
        tokio::time::sleep(ttl / 2).await;
        assert!(held_a.is_lost(), "a stops before b may take over");
        let held_b = held(b.try_acquire().await.unwrap()).expect("b takes over after the TTL");
        assert!(!held_b.is_lost());
        held_b.release(true).await;
    }
}
