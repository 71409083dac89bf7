//! spark-submit's package options: read into a [`PackageRequest`], and
//! taken off the command once ferry has resolved them, the resolved jars
//! added to the jar list so they are staged and rewritten like any local
//! jar.
//!
//! Spark's precedence: an option (`--packages`) wins over `--conf
//! spark.jars.packages`, which wins over the properties file; `--jars`
//! wins over `spark.jars`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{SparkOption, SparkSubmit, is_conf};
use crate::packages::{CoordinateError, PackageRequest};

/// The options and the Spark settings they stand for.
const PACKAGE_OPTIONS: [(Option<&str>, &str); 5] = [
    (Some("--packages"), "spark.jars.packages"),
    (Some("--exclude-packages"), "spark.jars.excludes"),
    (Some("--repositories"), "spark.jars.repositories"),
    (None, "spark.jars.ivySettings"),
    (None, "spark.jars.ivy"),
];

/// The lists Spark reads packages from; emptied (never unset: a properties
/// file cannot be edited from the command line) once resolved.
const PACKAGE_LISTS: &[&str] = &[
    "spark.jars.packages",
    "spark.jars.excludes",
    "spark.jars.repositories",
];

fn value<'a>(
    submit: &'a SparkSubmit,
    properties: &'a BTreeMap<String, String>,
    option: Option<&str>,
    key: &str,
) -> Option<&'a str> {
    option
        .and_then(|o| submit.value(o))
        .or_else(|| submit.conf(key))
        .or_else(|| properties.get(key).map(String::as_str))
}

/// What the command asks Ivy for.
pub fn request(
    submit: &SparkSubmit,
    properties: &BTreeMap<String, String>,
) -> Result<PackageRequest, CoordinateError> {
    let [packages, excludes, repositories, ivy_settings, ivy_dir] =
        PACKAGE_OPTIONS.map(|(option, key)| value(submit, properties, option, key));
    PackageRequest::parse(packages, excludes, repositories, ivy_settings, ivy_dir)
}

/// The command without package options, `jars` appended to its jar list.
/// A package list from the properties file is overridden empty, so neither
/// spark-submit here nor the driver pod's resolves anything.
pub fn replace_packages(
    submit: &SparkSubmit,
    properties: &BTreeMap<String, String>,
    jars: &[PathBuf],
) -> SparkSubmit {
    let mut out = submit.clone();
    out.options.retain(|option| match option {
        SparkOption::Value { name, value, .. } => {
            let option = PACKAGE_OPTIONS
                .iter()
                .any(|(o, _)| *o == Some(name.as_str()));
            let setting = is_conf(name)
                && value
                    .split_once('=')
                    .is_some_and(|(key, _)| PACKAGE_OPTIONS.iter().any(|(_, k)| *k == key));
            !option && !setting
        }
        SparkOption::Flag(_) => true,
    });
    for key in PACKAGE_LISTS {
        if properties.get(*key).is_some_and(|v| !v.trim().is_empty()) {
            out.options.push(SparkOption::Value {
                name: "--conf".into(),
                value: format!("{key}="),
                joined: false,
            });
        }
    }
    if jars.is_empty() {
        return out;
    }
    let added = jars
        .iter()
        .map(|j| j.display().to_string())
        .collect::<Vec<_>>()
        .join(",");
    let append = |list: &str| match list.trim() {
        "" => added.clone(),
        list => format!("{list},{added}"),
    };
    let last_jars = out
        .options
        .iter()
        .rposition(|o| matches!(o, SparkOption::Value { name, .. } if name == "--jars"));
    let last_conf = out.options.iter().rposition(|o| {
        matches!(o, SparkOption::Value { name, value, .. }
            if is_conf(name) && value.split_once('=').is_some_and(|(k, _)| k == "spark.jars"))
    });
    match (last_jars, last_conf) {
        (Some(index), _) => {
            if let SparkOption::Value { value, .. } = &mut out.options[index] {
                *value = append(value);
            }
        }
        (None, Some(index)) => {
            if let SparkOption::Value { value, .. } = &mut out.options[index] {
                let list = value.split_once('=').map(|(_, l)| l).unwrap_or_default();
                *value = format!("spark.jars={}", append(list));
            }
        }
        (None, None) => out.options.push(SparkOption::Value {
            name: "--conf".into(),
            value: format!(
                "spark.jars={}",
                append(
                    properties
                        .get("spark.jars")
                        .map(String::as_str)
                        .unwrap_or("")
                )
            ),
            joined: false,
        }),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn the_request_follows_sparks_precedence() {
        let submit = SparkSubmit::parse(&argv(&[
            "spark-submit",
            "--conf",
            "spark.jars.packages=com.conf:x:1",
            "--packages",
            "com.flag:x:1,com.flag:y:2",
            "--conf",
            "spark.jars.ivy=/tmp/ivy",
            "app.jar",
        ]))
        .unwrap();
        let properties = BTreeMap::from([
            ("spark.jars.excludes".to_owned(), "com.props:z".to_owned()),
            ("spark.jars.ivy".to_owned(), "/props/ivy".to_owned()),
        ]);
        let request = request(&submit, &properties).unwrap();
        let packages: Vec<String> = request.packages.iter().map(|p| p.to_string()).collect();
        assert_eq!(packages, ["com.flag:x:1", "com.flag:y:2"]);
        assert_eq!(request.excludes[0].to_string(), "com.props:z");
        assert_eq!(request.ivy_dir, Some(PathBuf::from("/tmp/ivy")));
    }

    #[test]
    fn package_options_are_removed_and_jars_joined_to_the_jar_list() {
        let submit = SparkSubmit::parse(&argv(&[
            "spark-submit",
            "--packages=com.a:x:1",
            "--repositories",
            "http://127.0.0.1:1/m2",
            "--conf",
            "spark.jars.ivySettings=/etc/ivy.xml",
            "--jars",
            "mine.jar",
            "--verbose",
            "app.jar",
            "--packages",
        ]))
        .unwrap();
        let properties =
            BTreeMap::from([("spark.jars.packages".to_owned(), "com.b:y:2".to_owned())]);
        let jars = [PathBuf::from("/c/a.jar"), PathBuf::from("/c/b.jar")];
        assert_eq!(
            replace_packages(&submit, &properties, &jars).to_argv(),
            argv(&[
                "spark-submit",
                "--jars",
                "mine.jar,/c/a.jar,/c/b.jar",
                "--verbose",
                "--conf",
                "spark.jars.packages=",
                "app.jar",
                "--packages",
            ])
        );
        // No --jars: a --conf spark.jars gets them, else a new one carrying
        // the properties file's list.
        let submit = SparkSubmit::parse(&argv(&[
            "spark-submit",
            "--conf",
            "spark.jars=one.jar",
            "app.jar",
        ]))
        .unwrap();
        assert_eq!(
            replace_packages(&submit, &BTreeMap::new(), &jars[..1]).to_argv(),
            argv(&[
                "spark-submit",
                "--conf",
                "spark.jars=one.jar,/c/a.jar",
                "app.jar"
            ])
        );
        let submit = SparkSubmit::parse(&argv(&["spark-submit", "app.jar"])).unwrap();
        let properties = BTreeMap::from([("spark.jars".to_owned(), "p.jar".to_owned())]);
        assert_eq!(
            replace_packages(&submit, &properties, &jars[..1]).to_argv(),
            argv(&[
                "spark-submit",
                "--conf",
                "spark.jars=p.jar,/c/a.jar",
                "app.jar"
            ])
        );
    }
}
