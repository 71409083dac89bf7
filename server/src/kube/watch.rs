//! Owner tracking, the wiring: a `kube::runtime` watcher over Pods feeding a
//! reflector store (one per watched namespace, or one cluster-wide), and the
//! loop that turns the store and the bundle list into removals through
//! [`super::owner::bundles_to_remove`].
//!
//! Pods arrive by watch, never by polling the API server. The loop looks at
//! the store every `--owner-check-interval`; it decides nothing until every
//! store has finished its first full list, and nothing while a watch is
//! failing, since a stale or partial view could make a live pod look gone.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ::kube::Api;
use ::kube::runtime::reflector::{self, Store};
use ::kube::runtime::{WatchStreamExt, watcher};
use chrono::Utc;
use ferry_core::Selector;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;

use super::OwnerConfig;
use super::owner::{Absences, OwnedBundle, PodView, bundles_to_remove};
use crate::api::AppState;

/// The pods the server can see, kept current by watches.
#[derive(Clone)]
pub struct PodWatch {
    stores: Vec<Store<Pod>>,
    healthy: Vec<Arc<AtomicBool>>,
    /// `None`: cluster-wide.
    pub namespaces: Option<BTreeSet<String>>,
}

impl PodWatch {
    /// Starts one watch per namespace (or one cluster-wide); each runs until
    /// the runtime shuts down, retrying with backoff.
    pub fn start(client: ::kube::Client, namespaces: Option<BTreeSet<String>>) -> Self {
        let apis: Vec<(String, Api<Pod>)> = match &namespaces {
            None => vec![("*".to_owned(), Api::all(client))],
            Some(list) => list
                .iter()
                .map(|ns| (ns.clone(), Api::namespaced(client.clone(), ns)))
                .collect(),
        };
        let mut stores = Vec::new();
        let mut healthy = Vec::new();
        for (namespace, api) in apis {
            let (reader, writer) = reflector::store::<Pod>();
            let ok = Arc::new(AtomicBool::new(false));
            let flag = ok.clone();
            let stream = watcher(api, watcher::Config::default())
                .default_backoff()
                // Only namespace, labels and phase matter: drop the rest so a
                // cluster-wide store stays small.
                .modify(slim_pod)
                .reflect(writer);
            tokio::spawn(async move {
                futures::pin_mut!(stream);
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(_) => {
                            if !flag.swap(true, Ordering::Relaxed) {
                                tracing::info!(%namespace, "pod watch is receiving events");
                            }
                        }
                        Err(error) => {
                            if flag.swap(false, Ordering::Relaxed) {
                                tracing::warn!(%namespace, %error, "pod watch failed; owner tracking paused until it recovers");
                            } else {
                                tracing::debug!(%namespace, %error, "pod watch still failing");
                            }
                        }
                    }
                }
            });
            stores.push(reader);
            healthy.push(ok);
        }
        Self {
            stores,
            healthy,
            namespaces,
        }
    }

    /// Waits until every store has completed its first list.
    pub async fn wait_until_ready(&self) {
        for store in &self.stores {
            let _ = store.wait_until_ready().await;
        }
    }

    /// Whether every watch has listed once and is not failing now.
    pub fn is_current(&self) -> bool {
        self.healthy.iter().all(|h| h.load(Ordering::Relaxed))
    }

    /// Every pod in every store.
    pub fn pods(&self) -> Vec<PodView> {
        self.stores
            .iter()
            .flat_map(|s| s.state())
            .map(|pod| pod_view(&pod))
            .collect()
    }
}

fn slim_pod(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    pod.metadata.annotations = None;
    pod.metadata.owner_references = None;
    pod.spec = None;
    if let Some(status) = &mut pod.status {
        *status = k8s_openapi::api::core::v1::PodStatus {
            phase: status.phase.take(),
            ..Default::default()
        };
    }
}

/// What owner tracking needs of a pod.
pub fn pod_view(pod: &Pod) -> PodView {
    PodView {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        phase: pod.status.as_ref().and_then(|s| s.phase.clone()),
    }
}

/// Checks owned bundles against the pods every `config.check_interval` and
/// removes those whose owner pods are gone, until `shutdown` resolves.
pub async fn run_owner_loop(
    state: Arc<AppState>,
    pods: PodWatch,
    config: OwnerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    tokio::select! {
        () = &mut shutdown => return,
        () = pods.wait_until_ready() => {}
    }
    tracing::info!(
        namespaces = ?pods.namespaces,
        grace = %humantime::format_duration(config.rules.grace),
        min_age = %humantime::format_duration(config.rules.min_age),
        "owner tracking started"
    );
    let mut absences = Absences::new();
    let mut ticker = tokio::time::interval(config.check_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = ticker.tick() => {}
        }
        if !pods.is_current() {
            tracing::debug!("pod watch is not current; no owner decisions this round");
            continue;
        }
        if let Err(error) = check_once(&state, &pods, config, &mut absences).await {
            tracing::warn!(%error, "owner check failed; retrying next interval");
        }
    }
}

async fn check_once(
    state: &AppState,
    pods: &PodWatch,
    config: OwnerConfig,
    absences: &mut Absences,
) -> Result<(), crate::store::StoreError> {
    let now = Utc::now();
    let records = state.store.list_bundles().await?;
    let owned: Vec<OwnedBundle> = records
        .iter()
        .filter(|r| !r.is_expired(now))
        .filter_map(|r| {
            let owner = r.manifest.owner.as_ref()?;
            match Selector::parse(&owner.selector) {
                Ok(selector) => Some(OwnedBundle {
                    id: r.manifest.id.clone(),
                    namespace: owner.namespace.clone(),
                    selector,
                    created_at: r.manifest.created_at,
                }),
                Err(error) => {
                    tracing::warn!(id = %r.manifest.id, %error, "owner selector unusable; bundle left to its TTL");
                    None
                }
            }
        })
        .collect();
    let removals = bundles_to_remove(
        &owned,
        &pods.pods(),
        pods.namespaces.as_ref(),
        now,
        config.rules,
        absences,
    );
    for removal in removals {
        let Some(record) = records.iter().find(|r| r.manifest.id == removal.id) else {
            continue;
        };
        state.store.delete_bundle(record).await?;
        state.auth.forget_bundle(&removal.id);
        state.metrics.count_bundle_deleted("owner_gone");
        tracing::info!(
            id = %removal.id,
            unheld_since = %removal.unheld_since,
            owner = ?record.manifest.owner,
            "bundle deleted: no pod of its owner is left"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slimming_keeps_what_owner_tracking_reads() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "driver", "namespace": "jobs",
                "labels": {"spark-app-selector": "a1"},
                "annotations": {"big": "x"},
            },
            "spec": {"containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1"},
        }))
        .unwrap();
        let mut slim = pod.clone();
        slim_pod(&mut slim);
        assert!(slim.spec.is_none());
        assert!(slim.metadata.annotations.is_none());
        assert_eq!(pod_view(&slim), pod_view(&pod));
        assert_eq!(pod_view(&slim).phase.as_deref(), Some("Running"));
        assert_eq!(pod_view(&slim).namespace, "jobs");
    }
}
