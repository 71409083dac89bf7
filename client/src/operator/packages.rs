//! A SparkApplication's Maven packages: read into a [`PackageRequest`] as
//! the operator would hand them to spark-submit, and, once ferry has
//! resolved them, replaced by the jars they resolve to (appended to
//! `spec.deps.jars`, so they are staged and rewritten like any local jar).
//!
//! The operator passes `spec.deps.packages`, `excludePackages` and
//! `repositories` as `--packages`, `--exclude-packages` and
//! `--repositories`, which win over the same lists in `spec.sparkConf`;
//! Ivy's settings file and directory come only from `spec.sparkConf`.

use std::path::PathBuf;

use super::app::{Deps, SparkApplication};
use crate::packages::{CoordinateError, PackageRequest};

/// Reads one list of `spec.deps`.
type DepsList = fn(&Deps) -> &Option<Vec<String>>;

/// `spec.deps` field, or else the `spec.sparkConf` key, for each list.
const LISTS: [(DepsList, &str); 3] = [
    (|d| &d.packages, "spark.jars.packages"),
    (|d| &d.exclude_packages, "spark.jars.excludes"),
    (|d| &d.repositories, "spark.jars.repositories"),
];

/// What the application asks Ivy for.
pub fn request(app: &SparkApplication) -> Result<PackageRequest, CoordinateError> {
    let conf = |key: &str| {
        app.spec
            .spark_conf
            .as_ref()
            .and_then(|c| c.get(key))
            .cloned()
    };
    let [packages, excludes, repositories] = LISTS.map(|(field, key)| {
        app.spec
            .deps
            .as_ref()
            .and_then(|deps| field(deps).as_ref())
            .map(|list| list.join(","))
            .or_else(|| conf(key))
    });
    PackageRequest::parse(
        packages.as_deref(),
        excludes.as_deref(),
        repositories.as_deref(),
        conf("spark.jars.ivySettings").as_deref(),
        conf("spark.jars.ivy").as_deref(),
    )
}

/// `app` with its package lists gone (the `spec.sparkConf` ones emptied,
/// so neither the operator's spark-submit nor the driver resolves
/// anything) and `jars` appended to `spec.deps.jars`.
pub fn replace_packages(app: &mut SparkApplication, jars: &[PathBuf]) {
    if let Some(deps) = app.spec.deps.as_mut() {
        deps.packages = None;
        deps.exclude_packages = None;
        deps.repositories = None;
    }
    if let Some(conf) = app.spec.spark_conf.as_mut() {
        for (_, key) in LISTS {
            if let Some(value) = conf.get_mut(key) {
                value.clear();
            }
        }
    }
    if jars.is_empty() {
        return;
    }
    let deps = app.spec.deps.get_or_insert_with(Default::default);
    deps.jars
        .get_or_insert_with(Vec::new)
        .extend(jars.iter().map(|jar| jar.display().to_string()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::app::parse_documents;

    fn app(spec: &str) -> SparkApplication {
        parse_documents(&format!(
            "apiVersion: sparkoperator.k8s.io/v1beta2\nkind: SparkApplication\nmetadata:\n  name: etl\nspec:\n{spec}"
        ))
        .unwrap()
        .remove(0)
    }

    #[test]
    fn deps_lists_win_over_spark_conf_and_ivy_settings_come_from_spark_conf() {
        let app = app(
            "  deps:\n    packages: ['com.a:x:1', 'com.a:y:2']\n    repositories: ['https://repo.example/m2']\n  sparkConf:\n    spark.jars.packages: com.conf:z:3\n    spark.jars.excludes: com.b:w\n    spark.jars.ivySettings: /etc/ivy.xml\n",
        );
        let request = request(&app).unwrap();
        let packages: Vec<String> = request.packages.iter().map(|p| p.to_string()).collect();
        assert_eq!(packages, ["com.a:x:1", "com.a:y:2"]);
        assert_eq!(request.excludes.len(), 1, "from sparkConf: {request:?}");
        assert_eq!(request.repositories, ["https://repo.example/m2"]);
        assert_eq!(request.ivy_settings, Some(PathBuf::from("/etc/ivy.xml")));
    }

    #[test]
    fn a_bad_coordinate_is_an_error_and_no_packages_is_an_empty_request() {
        assert!(request(&app("  deps:\n    packages: ['not-a-coordinate']\n")).is_err());
        assert!(
            request(&app("  mainApplicationFile: local:///a.jar\n"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn resolved_jars_replace_every_package_list() {
        let mut app = app(
            "  deps:\n    jars: [/opt/mine.jar]\n    packages: ['com.a:x:1']\n    excludePackages: ['com.b:w']\n  sparkConf:\n    spark.jars.packages: com.conf:z:3\n    spark.executor.cores: '2'\n",
        );
        replace_packages(&mut app, &[PathBuf::from("/cache/x.jar")]);
        let deps = app.spec.deps.as_ref().unwrap();
        assert_eq!(
            deps.jars.as_deref().unwrap(),
            ["/opt/mine.jar", "/cache/x.jar"]
        );
        assert_eq!((&deps.packages, &deps.exclude_packages), (&None, &None));
        let conf = app.spec.spark_conf.as_ref().unwrap();
        assert_eq!(conf["spark.jars.packages"], "");
        assert_eq!(conf["spark.executor.cores"], "2");
        assert!(request(&app).unwrap().is_empty());
    }
}
