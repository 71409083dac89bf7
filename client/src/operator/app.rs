//! The Kubeflow spark-operator's `SparkApplication`
//! (`sparkoperator.k8s.io/v1beta2`), as far as ferry reads or edits it:
//! the application file, `spec.deps`, `spec.sparkConf`, `spec.volumes`
//! and the driver's and executor's pod settings are typed; every other
//! field, at every level, is kept as JSON, so what the user wrote goes
//! back to the API server unchanged.
//!
//! Field names follow the operator's `api/v1beta2/sparkapplication_types.go`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, PodSecurityContext, PodTemplateSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub const GROUP: &str = "sparkoperator.k8s.io";
pub const VERSION: &str = "v1beta2";
pub const API_VERSION: &str = "sparkoperator.k8s.io/v1beta2";
pub const KIND: &str = "SparkApplication";
pub const PLURAL: &str = "sparkapplications";

/// Fields of `metadata` the API server sets; an applied object must not
/// carry them (server-side apply refuses `managedFields` it did not write,
/// and a stale `resourceVersion` would make the apply conditional).
const SERVER_SET_METADATA: [&str; 6] = [
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "managedFields",
    "selfLink",
];

/// One SparkApplication object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SparkApplication {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: AppSpec,
    /// `status` and anything else at the top level.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `spec`: what ferry edits, the rest kept as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main_application_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deps: Option<Deps>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spark_conf: Option<BTreeMap<String, String>>,
    /// Hadoop settings; the operator passes each as `spark.hadoop.<key>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hadoop_conf: Option<BTreeMap<String, String>>,
    /// The pods' volumes, shared by driver and executors (the operator
    /// mounts them through each role's `volumeMounts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<Volume>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<SparkPodSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<SparkPodSpec>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `spec.deps`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deps {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jars: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub py_files: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archives: Option<Vec<String>>,
    /// Maven coordinates, resolved by `ferry apply` as by `ferry submit
    /// --packages` and replaced by the jars they resolve to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packages: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_packages: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repositories: Option<Vec<String>>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `spec.driver` / `spec.executor` (the operator's `SparkPodSpec` and the
/// role's own fields).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SparkPodSpec {
    /// A Spark pod template (operator 2.1 and later, Spark 3 and later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<PodTemplateSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_containers: Option<Vec<Container>>,
    /// Mounts of `spec.volumes` on the Spark container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mounts: Option<Vec<VolumeMount>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security_context: Option<PodSecurityContext>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// Why a document cannot be read as a SparkApplication.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("document {index} is not YAML")]
    Yaml {
        index: usize,
        #[source]
        source: serde_yaml::Error,
    },
    #[error(
        "document {index} is a {kind} ({api_version}); ferry apply takes {API_VERSION} SparkApplications only (apply other objects with kubectl)"
    )]
    NotSparkApplication {
        index: usize,
        api_version: String,
        kind: String,
    },
    #[error("document {index} is not a valid SparkApplication")]
    Invalid {
        index: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("document {index}: a SparkApplication needs metadata.name")]
    NoName { index: usize },
}

impl SparkApplication {
    /// The object's name (checked present by [`parse_documents`]).
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }

    /// The object as the user would apply it: without `status` and the
    /// metadata the API server sets.
    pub fn without_server_fields(mut self) -> Self {
        self.other.remove("status");
        let mut meta = match serde_json::to_value(&self.metadata) {
            Ok(Value::Object(meta)) => meta,
            _ => return self,
        };
        for field in SERVER_SET_METADATA {
            meta.remove(field);
        }
        if let Ok(meta) = serde_json::from_value(Value::Object(meta)) {
            self.metadata = meta;
        }
        self
    }
}

/// Every SparkApplication in a YAML stream (`---`-separated documents;
/// empty documents are skipped). Any other kind is refused, so nothing is
/// staged for a file ferry would apply only in part.
pub fn parse_documents(text: &str) -> Result<Vec<SparkApplication>, AppError> {
    let mut apps = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let index = index + 1;
        let value =
            Value::deserialize(document).map_err(|source| AppError::Yaml { index, source })?;
        if value.is_null() {
            continue;
        }
        let field = |name: &str| value.get(name).and_then(Value::as_str).unwrap_or_default();
        if field("apiVersion") != API_VERSION || field("kind") != KIND {
            return Err(AppError::NotSparkApplication {
                index,
                api_version: field("apiVersion").to_owned(),
                kind: field("kind").to_owned(),
            });
        }
        let app: SparkApplication = serde_json::from_value(with_template_containers(value))
            .map_err(|source| AppError::Invalid { index, source })?;
        if app.metadata.name.as_deref().is_none_or(str::is_empty) {
            return Err(AppError::NoName { index });
        }
        apps.push(app);
    }
    Ok(apps)
}

/// A pod template in a SparkApplication may leave out `spec.containers`
/// (Spark adds its own container), which the Kubernetes types require.
fn with_template_containers(mut value: Value) -> Value {
    for role in ["driver", "executor"] {
        if let Some(Value::Object(spec)) = value.pointer_mut(&format!("/spec/{role}/template/spec"))
        {
            spec.entry("containers")
                .or_insert_with(|| Value::Array(Vec::new()));
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = r#"
apiVersion: sparkoperator.k8s.io/v1beta2
kind: SparkApplication
metadata:
  name: etl
  namespace: jobs
  resourceVersion: "42"
  uid: 0000-1111
  labels: {team: data}
spec:
  type: Scala
  mode: cluster
  mainApplicationFile: ./app.jar
  futureOperatorField: {nested: [1, 2]}
  deps:
    jars: [./a.jar, s3a://b/x.jar]
    excludePackages: [org:y]
  driver:
    cores: 1
    template:
      spec:
        securityContext: {runAsUser: 185}
  executor:
    instances: 2
    initContainers:
    - {name: setup, image: busybox}
status:
  applicationState: {state: COMPLETED}
"#;

    #[test]
    fn unknown_fields_survive_a_round_trip() {
        let apps = parse_documents(APP).unwrap();
        assert_eq!(apps.len(), 1);
        let app = &apps[0];
        assert_eq!(app.name(), "etl");
        assert_eq!(app.spec.main_application_file.as_deref(), Some("./app.jar"));
        assert_eq!(app.spec.other["futureOperatorField"]["nested"][1], 2);
        assert_eq!(app.spec.other["type"], "Scala");
        let deps = app.spec.deps.as_ref().unwrap();
        assert_eq!(
            deps.exclude_packages.as_deref(),
            Some(&["org:y".to_owned()][..])
        );
        assert_eq!(app.spec.driver.as_ref().unwrap().other["cores"], 1);
        let back = serde_json::to_value(app).unwrap();
        assert_eq!(back["spec"]["futureOperatorField"]["nested"][0], 1);
        assert_eq!(back["spec"]["executor"]["instances"], 2);
        assert_eq!(
            back["spec"]["executor"]["initContainers"][0]["name"],
            "setup"
        );
        assert_eq!(
            back["spec"]["driver"]["template"]["spec"]["securityContext"]["runAsUser"],
            185
        );
        assert_eq!(back["metadata"]["labels"]["team"], "data");
        assert!(back["spec"].get("volumes").is_none(), "absent stays absent");
        // Parsing what was written gives the same object.
        let again: SparkApplication = serde_json::from_value(back).unwrap();
        assert_eq!(&again, app);
    }

    #[test]
    fn server_fields_are_dropped_before_applying() {
        let app = parse_documents(APP)
            .unwrap()
            .remove(0)
            .without_server_fields();
        assert!(!app.other.contains_key("status"));
        assert_eq!(app.metadata.resource_version, None);
        assert_eq!(app.metadata.uid, None);
        assert_eq!(app.metadata.namespace.as_deref(), Some("jobs"));
        assert_eq!(app.metadata.labels.unwrap()["team"], "data");
    }

    #[test]
    fn a_stream_holds_several_applications_and_nothing_else() {
        let two = format!("{APP}\n---\n{}", APP.replace("name: etl", "name: etl-2"));
        let names: Vec<String> = parse_documents(&format!("---\n{two}\n---\n"))
            .unwrap()
            .iter()
            .map(|a| a.name().to_owned())
            .collect();
        assert_eq!(names, ["etl", "etl-2"]);
        let with_config_map = format!("{APP}\n---\napiVersion: v1\nkind: ConfigMap\n");
        assert!(matches!(
            parse_documents(&with_config_map),
            Err(AppError::NotSparkApplication { index: 2, .. })
        ));
        let nameless =
            "apiVersion: sparkoperator.k8s.io/v1beta2\nkind: SparkApplication\nspec: {}\n";
        assert!(matches!(
            parse_documents(nameless),
            Err(AppError::NoName { index: 1 })
        ));
        assert!(matches!(
            parse_documents("a: [b"),
            Err(AppError::Yaml { index: 1, .. })
        ));
    }
}
