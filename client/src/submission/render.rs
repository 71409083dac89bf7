//! From a submission and its staged bundle to what every pod of it gets:
//! the Secret holding the bundle token, and the ferry-init container with
//! the fetch plan, merged into a pod template. Pure: reading the user's
//! templates and creating the Secret are the caller's.

use ferry_core::{BundleId, BundleRef};
use k8s_openapi::api::core::v1::{Pod, Secret};

use super::Submission;
use super::remote::{RemoteAccess, Side};
use crate::k8s::{self, InitSpec};

/// How the pods run ferry-init and reach the server.
#[derive(Debug, Clone)]
pub struct PodOptions {
    /// ferry-init image.
    pub image: String,
    /// Server URL as pods reach it.
    pub server: String,
    /// hostPath of a node-local cache shared by ferry-init containers.
    pub node_cache: Option<String>,
    /// `--work-dir`: the main container's working directory, where
    /// archives are mounted (see [`InitSpec::work_dir`]).
    pub work_dir: Option<String>,
}

/// The Secret and the init container of one staged submission.
#[derive(Debug, Clone)]
pub struct PodDelivery {
    pub secret: Secret,
    pub init: InitSpec,
    remote: RemoteAccess,
}

impl PodDelivery {
    /// `bundle` (with read `token`) holds the submission's staged files.
    pub fn new(
        submission: &Submission,
        bundle: &BundleId,
        token: &str,
        options: &PodOptions,
    ) -> Self {
        let secret_name = format!("ferry-{}", bundle.as_str().to_ascii_lowercase());
        let mut secret = k8s::secret(&secret_name, &submission.namespace, bundle.as_str(), token);
        // Store keys given inline as settings travel in the same Secret.
        if let Some(data) = secret.string_data.as_mut() {
            for (key, value) in submission.remote.secret_data() {
                data.insert(key.to_owned(), value.to_owned());
            }
        }
        let mut plan = submission
            .deliveries
            .fetch_plan(&BundleRef::Id(bundle.clone()));
        submission.remote.annotate(&mut plan);
        let init = init_spec(submission, options, Some(secret_name), plan);
        Self {
            secret,
            init,
            remote: submission.remote.clone(),
        }
    }

    /// The init container of a submission with nothing staged: ferry-init
    /// fetches the remote URIs, with no bundle, token or Secret.
    pub fn remote_only(submission: &Submission, options: &PodOptions) -> InitSpec {
        let mut plan = submission.deliveries.remote_fetch_plan();
        submission.remote.annotate(&mut plan);
        init_spec(submission, options, None, plan)
    }

    /// `base` (the user's template, or none) with ferry added; the
    /// dependency volume goes on the container named `container`.
    pub fn template(&self, base: Option<Pod>, container: &str) -> Pod {
        k8s::merge_template(base, &self.init, container)
    }

    /// [`Self::template`] for one side (driver or executor pods), with the
    /// store references that side's ferry-init needs (see
    /// [`super::remote`]).
    pub fn template_for(&self, base: Option<Pod>, container: &str, side: Side) -> Pod {
        let mut pod = self.template(base, container);
        self.remote
            .add_to_pod(&mut pod, side, self.init.secret_name.as_deref(), container);
        pod
    }
}

fn init_spec(
    submission: &Submission,
    options: &PodOptions,
    secret_name: Option<String>,
    plan: ferry_core::plan::FetchPlan,
) -> InitSpec {
    InitSpec {
        image: options.image.clone(),
        server: options.server.clone(),
        secret_name,
        node_cache: options.node_cache.clone(),
        work_dir: options.work_dir.clone(),
        deps_dir: submission.deliveries.deps_dir().to_string(),
        plan,
        archive_dirs: submission
            .deliveries
            .archives()
            .iter()
            .map(|archive| archive.alias.to_string())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::submission::{Deliveries, Dependency, Kind, SubmissionId};

    #[test]
    fn the_init_container_carries_the_plan_for_the_staged_bundle() {
        let dir = tempfile::tempdir().unwrap();
        let jar = dir.path().join("a.jar");
        std::fs::write(&jar, "jar").unwrap();
        let deps = [
            Dependency::parse(Kind::Jar, &jar.display().to_string()),
            Dependency::parse(Kind::File, "https://h/data.csv"),
        ];
        let deliveries = Deliveries::plan(&deps, &"/var/ferry".parse().unwrap()).unwrap();
        let submission =
            Submission::new(SubmissionId::generate(), "jobs".into(), None, deliveries).unwrap();
        let bundle = BundleId::parse("id-0000000000000000000000000b").unwrap();
        let delivery = PodDelivery::new(
            &submission,
            &bundle,
            "read-token",
            &PodOptions {
                image: "ferry-init:test".into(),
                server: "http://ferry:7070".into(),
                node_cache: None,
                work_dir: None,
            },
        );
        assert_eq!(
            delivery.secret.metadata.name.as_deref(),
            Some("ferry-id-0000000000000000000000000b")
        );
        assert_eq!(delivery.secret.metadata.namespace.as_deref(), Some("jobs"));
        assert_eq!(
            delivery.secret.string_data.as_ref().unwrap()["token"],
            "read-token"
        );
        assert_eq!(
            delivery.init.plan,
            submission
                .deliveries
                .fetch_plan(&BundleRef::Id(bundle.clone()))
        );
        let pod = delivery.template(None, "spark-kubernetes-driver");
        let init = &pod.spec.unwrap().init_containers.unwrap()[0];
        let plan = k8s::plan_of(init).expect("the template carries a plan");
        assert_eq!(plan, delivery.init.plan);
        assert_eq!(plan.items[1].uri.as_str(), "https://h/data.csv");
    }
}
