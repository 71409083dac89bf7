//! Owner tracking, the decision alone: given the bundles that have an owner
//! and the pods the watcher sees, which bundles may go now.
//!
//! No I/O and no clock of its own (the caller passes `now`), so every rule
//! is tested over plain lists:
//! - a bundle is *held* while a pod in its owner namespace matches its
//!   selector and has not finished (phase `Succeeded` or `Failed`): a Spark
//!   driver that completed keeps its pod object around, but needs nothing;
//! - a bundle that is not held is removed once it has been continuously
//!   unheld for the grace period (a pod being rescheduled or a job retried
//!   briefly has no pod) **and** it is at least the minimum age (the
//!   submitter creates the bundle before the driver pod exists);
//! - bundles whose owner namespace is not watched are never removed here
//!   (their TTL still applies).
//!
//! "Continuously unheld" is state the caller keeps in [`Absences`]; it starts
//! empty when the server starts, so a restart only ever delays a removal.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ferry_core::{BundleId, Selector};

/// A bundle as owner tracking sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedBundle {
    pub id: BundleId,
    pub namespace: String,
    pub selector: Selector,
    pub created_at: DateTime<Utc>,
}

/// A pod as owner tracking sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    /// `status.phase`; absent on a pod the scheduler has not seen yet.
    pub phase: Option<String>,
}

impl PodView {
    /// Whether the pod may still need its bundle: it has not finished.
    pub fn is_running_or_pending(&self) -> bool {
        !matches!(self.phase.as_deref(), Some("Succeeded" | "Failed"))
    }
}

/// The timing rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnerRules {
    /// How long a bundle must have no matching pod before it is removed.
    pub grace: Duration,
    /// A bundle younger than this is never removed.
    pub min_age: Duration,
}

/// When each unheld bundle was first seen unheld (the caller keeps it
/// between decisions).
pub type Absences = HashMap<BundleId, DateTime<Utc>>;

/// Why a bundle is removed, for the log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    pub id: BundleId,
    /// Since when no pod has held it.
    pub unheld_since: DateTime<Utc>,
}

/// Decides which owned bundles to remove at `now`, updating `absences`.
///
/// `watched` is the set of namespaces the pod list covers; `None` means
/// cluster-wide. Bundles outside it are neither held nor removed.
pub fn bundles_to_remove(
    bundles: &[OwnedBundle],
    pods: &[PodView],
    watched: Option<&BTreeSet<String>>,
    now: DateTime<Utc>,
    rules: OwnerRules,
    absences: &mut Absences,
) -> Vec<Removal> {
    let mut by_namespace: HashMap<&str, Vec<&PodView>> = HashMap::new();
    for pod in pods.iter().filter(|p| p.is_running_or_pending()) {
        by_namespace.entry(&pod.namespace).or_default().push(pod);
    }
    let grace = to_chrono(rules.grace);
    let min_age = to_chrono(rules.min_age);
    let mut removals = Vec::new();
    let mut seen = BTreeSet::new();
    for bundle in bundles {
        seen.insert(&bundle.id);
        if watched.is_some_and(|w| !w.contains(&bundle.namespace)) {
            absences.remove(&bundle.id);
            continue;
        }
        let held = by_namespace
            .get(bundle.namespace.as_str())
            .is_some_and(|pods| pods.iter().any(|p| bundle.selector.matches(&p.labels)));
        if held {
            absences.remove(&bundle.id);
            continue;
        }
        let since = *absences.entry(bundle.id.clone()).or_insert(now);
        let old_enough = now.signed_duration_since(bundle.created_at) >= min_age;
        let unheld_long_enough = now.signed_duration_since(since) >= grace;
        if old_enough && unheld_long_enough {
            removals.push(Removal {
                id: bundle.id.clone(),
                unheld_since: since,
            });
        }
    }
    // Forget bundles that are gone (deleted, expired or removed now).
    absences.retain(|id, _| seen.contains(id));
    for removal in &removals {
        absences.remove(&removal.id);
    }
    removals
}

fn to_chrono(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(300);
    const MIN_AGE: Duration = Duration::from_secs(600);
    const RULES: OwnerRules = OwnerRules {
        grace: GRACE,
        min_age: MIN_AGE,
    };

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn bundle(n: u8, namespace: &str, selector: &str, created: i64) -> OwnedBundle {
        OwnedBundle {
            id: BundleId::generate(at(created).timestamp_millis() as u64, [n; 10]),
            namespace: namespace.into(),
            selector: Selector::parse(selector).unwrap(),
            created_at: at(created),
        }
    }

    fn pod(namespace: &str, labels: &[(&str, &str)], phase: Option<&str>) -> PodView {
        PodView {
            namespace: namespace.into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            phase: phase.map(Into::into),
        }
    }

    fn ids(removals: &[Removal]) -> Vec<BundleId> {
        removals.iter().map(|r| r.id.clone()).collect()
    }

    #[test]
    fn a_bundle_with_a_running_pod_is_kept() {
        let b = bundle(1, "jobs", "app=a", 0);
        let pods = [pod("jobs", &[("app", "a")], Some("Running"))];
        let mut absences = Absences::new();
        for t in [0, 1_000, 100_000] {
            assert!(
                bundles_to_remove(
                    std::slice::from_ref(&b),
                    &pods,
                    None,
                    at(t),
                    RULES,
                    &mut absences
                )
                .is_empty()
            );
        }
        assert!(absences.is_empty());
    }

    #[test]
    fn a_bundle_younger_than_min_age_is_kept_although_no_pod_exists_yet() {
        let b = bundle(1, "jobs", "app=a", 0);
        let mut absences = Absences::new();
        // Unheld from t=0; grace passes at 300 but min age only at 600.
        assert!(
            bundles_to_remove(
                std::slice::from_ref(&b),
                &[],
                None,
                at(0),
                RULES,
                &mut absences
            )
            .is_empty()
        );
        assert!(
            bundles_to_remove(
                std::slice::from_ref(&b),
                &[],
                None,
                at(400),
                RULES,
                &mut absences
            )
            .is_empty()
        );
        assert_eq!(
            ids(&bundles_to_remove(
                std::slice::from_ref(&b),
                &[],
                None,
                at(600),
                RULES,
                &mut absences
            )),
            vec![b.id.clone()]
        );
        assert!(absences.is_empty(), "a removed bundle is forgotten");
    }

    #[test]
    fn removal_waits_for_the_grace_period_after_the_last_pod_goes() {
        let b = bundle(1, "jobs", "app=a", 0);
        let running = [pod("jobs", &[("app", "a")], Some("Running"))];
        let mut absences = Absences::new();
        assert!(
            bundles_to_remove(
                std::slice::from_ref(&b),
                &running,
                None,
                at(1_000),
                RULES,
                &mut absences
            )
            .is_empty()
        );
        // The pod is gone at 1_100: not removed until 1_100 + grace.
        assert!(
            bundles_to_remove(
                std::slice::from_ref(&b),
                &[],
                None,
                at(1_100),
                RULES,
                &mut absences
            )
            .is_empty()
        );
        assert!(
            bundles_to_remove(
                std::slice::from_ref(&b),
                &[],
                None,
                at(1_399),
                RULES,
                &mut absences
            )
            .is_empty()
        );
        assert_eq!(
            ids(&bundles_to_remove(
                std::slice::from_ref(&b),
                &[],
                None,
                at(1_400),
                RULES,
                &mut absences
            )),
            vec![b.id]
        );
    }

    #[test]
    fn a_pod_returning_within_grace_resets_the_clock() {
        let b = bundle(1, "jobs", "app=a", 0);
        let running = [pod("jobs", &[("app", "a")], Some("Pending"))];
        let mut absences = Absences::new();
        assert!(
            bundles_to_remove(
                std::slice::from_ref(&b),
                &[],
                None,
                at(1_000),
                RULES,
                &mut absences
            )
            .is_empty()
        );
        assert!(
            bundles_to_remove(
                std::slice::from_ref(&b),
                &running,
                None,
                at(1_200),
                RULES,
                &mut absences
            )
            .is_empty()
        );
        // Gone again at 1_250: a fresh grace period from there.
        assert!(
            bundles_to_remove(
                std::slice::from_ref(&b),
                &[],
                None,
                at(1_250),
                RULES,
                &mut absences
            )
            .is_empty()
        );
        assert!(
            bundles_to_remove(
                std::slice::from_ref(&b),
                &[],
                None,
                at(1_500),
                RULES,
                &mut absences
            )
            .is_empty()
        );
        assert_eq!(
            bundles_to_remove(&[b], &[], None, at(1_550), RULES, &mut absences).len(),
            1
        );
    }

    #[test]
    fn finished_pods_and_pods_elsewhere_do_not_hold_a_bundle() {
        let b = bundle(1, "jobs", "app=a", 0);
        let pods = [
            pod("jobs", &[("app", "a")], Some("Succeeded")),
            pod("jobs", &[("app", "a")], Some("Failed")),
            pod("other", &[("app", "a")], Some("Running")),
            pod("jobs", &[("app", "b")], Some("Running")),
        ];
        let mut absences = Absences::new();
        assert!(
            bundles_to_remove(
                std::slice::from_ref(&b),
                &pods,
                None,
                at(1_000),
                RULES,
                &mut absences
            )
            .is_empty()
        );
        assert_eq!(
            bundles_to_remove(&[b], &pods, None, at(1_300), RULES, &mut absences).len(),
            1
        );
    }

    #[test]
    fn a_pod_without_a_phase_yet_holds_its_bundle() {
        let b = bundle(1, "jobs", "app=a", 0);
        let pods = [pod("jobs", &[("app", "a")], None)];
        let mut absences = Absences::new();
        assert!(
            bundles_to_remove(
                std::slice::from_ref(&b),
                &pods,
                None,
                at(0),
                RULES,
                &mut absences
            )
            .is_empty()
        );
        assert!(bundles_to_remove(&[b], &pods, None, at(10_000), RULES, &mut absences).is_empty());
    }

    #[test]
    fn bundles_in_unwatched_namespaces_are_never_removed() {
        let b = bundle(1, "elsewhere", "app=a", 0);
        let watched: BTreeSet<String> = ["jobs".to_owned()].into();
        let mut absences = Absences::new();
        for t in [0, 10_000, 100_000] {
            assert!(
                bundles_to_remove(
                    std::slice::from_ref(&b),
                    &[],
                    Some(&watched),
                    at(t),
                    RULES,
                    &mut absences
                )
                .is_empty()
            );
        }
    }

    #[test]
    fn only_the_unheld_bundle_of_several_goes_and_gone_bundles_are_forgotten() {
        let held = bundle(1, "jobs", "app=a", 0);
        let unheld = bundle(2, "jobs", "app=b", 0);
        let pods = [pod("jobs", &[("app", "a")], Some("Running"))];
        let mut absences = Absences::new();
        let both = [held.clone(), unheld.clone()];
        assert!(bundles_to_remove(&both, &pods, None, at(700), RULES, &mut absences).is_empty());
        assert_eq!(absences.len(), 1);
        assert_eq!(
            ids(&bundles_to_remove(
                &both,
                &pods,
                None,
                at(1_000),
                RULES,
                &mut absences
            )),
            vec![unheld.id.clone()]
        );
        // A bundle deleted by other means (TTL, request) drops out of the state.
        let third = bundle(3, "jobs", "app=c", 0);
        assert!(
            bundles_to_remove(
                std::slice::from_ref(&third),
                &pods,
                None,
                at(1_000),
                RULES,
                &mut absences
            )
            .is_empty()
        );
        assert!(
            bundles_to_remove(&[held], &pods, None, at(1_001), RULES, &mut absences).is_empty()
        );
        assert!(absences.is_empty());
    }
}
