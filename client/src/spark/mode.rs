//! Which masters and deploy modes `ferry submit` delivers for, decided
//! before anything is staged.
//!
//! ferry puts dependencies into Kubernetes pods. With any other master
//! (`local[*]`, `yarn`, `spark://`, `mesos://`, none) there are no pods, and
//! rewriting paths to `local:///var/ferry/...` would break a command that
//! works: `ferry submit` runs spark-submit unchanged, with a one-line
//! notice, so wrapping a working command never breaks it. In client mode
//! the driver runs here, where those paths do not exist: it keeps the
//! user's paths, and ferry delivers the local jars to the executor pods
//! only.

use std::collections::BTreeMap;

/// What `ferry submit` does with a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// `k8s://` master, cluster deploy mode: ferry delivers.
    Deliver,
    /// `k8s://` master, client deploy mode (Spark's default): ferry
    /// delivers the local jars to the executor pods; the driver, here,
    /// keeps every path as given.
    Executors,
    /// Run spark-submit as given; the notice says why.
    Unchanged { notice: String },
}

/// Decides from the command's Spark settings (`spark.master`,
/// `spark.submit.deployMode`, as [`super::submission::spark_conf`] gives them).
pub fn mode(conf: &BTreeMap<String, String>) -> Mode {
    let master = conf.get("spark.master").map(|m| m.trim());
    let deploy_mode = conf
        .get("spark.submit.deployMode")
        .map(|m| m.trim().to_ascii_lowercase());
    match master {
        Some(m) if m.to_ascii_lowercase().starts_with("k8s://") => {
            match deploy_mode.as_deref() {
                Some("cluster") => Mode::Deliver,
                _ => Mode::Executors,
            }
        }
        Some(m) => Mode::Unchanged {
            notice: format!(
                "ferry: master {m} is not Kubernetes (k8s://): running spark-submit unchanged, ferry delivers only to Kubernetes pods"
            ),
        },
        None => Mode::Unchanged {
            notice: "ferry: no master given (Spark runs locally): running spark-submit unchanged, ferry delivers only to Kubernetes pods (--master k8s://...)".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(pairs: &[(&str, &str)]) -> Mode {
        mode(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn only_kubernetes_masters_are_delivered_to_and_client_mode_to_executors_only() {
        let cluster = [
            ("spark.master", "k8s://https://k:6443"),
            ("spark.submit.deployMode", "cluster"),
        ];
        assert_eq!(decide(&cluster), Mode::Deliver);
        assert_eq!(
            decide(&[("spark.master", "k8s://https://k:6443")]),
            Mode::Executors
        );
        assert_eq!(
            decide(&[
                ("spark.master", "k8s://https://k:6443"),
                ("spark.submit.deployMode", "Client"),
            ]),
            Mode::Executors
        );
        for unchanged in [
            vec![
                ("spark.master", "local[*]"),
                ("spark.submit.deployMode", "cluster"),
            ],
            vec![("spark.master", "yarn")],
            vec![("spark.master", "spark://h:7077")],
            vec![],
        ] {
            let Mode::Unchanged { notice } = decide(&unchanged) else {
                panic!("{unchanged:?} is not delivered");
            };
            assert!(
                notice.starts_with("ferry: ") && !notice.contains('\n'),
                "{notice}"
            );
            assert!(notice.contains("unchanged"), "{notice}");
        }
    }
}
