//! spark-submit's command line: parsed into options, a primary resource and
//! application arguments; the dependencies in it found; and rewritten so
//! every dependency is a `local://` path inside the pod's ferry volume.
//!
//! This is `ferry submit`'s front end of [`crate::submission`]:
//! [`submission`] turns a command line into a submission plan, [`render`]
//! into the templates and the command to run. Pure functions only:
//! everything here is tested without running Spark.

pub mod mode;
pub mod packages;
pub mod properties;
pub mod render;
pub mod submission;

use std::collections::BTreeMap;

use crate::submission::{Dependency, Kind};

/// Options of spark-submit that take a value (from Spark's
/// `SparkSubmitOptionParser`); every other `-`-option is a flag.
const VALUE_OPTIONS: &[&str] = &[
    "--master",
    "--deploy-mode",
    "--class",
    "--name",
    "--jars",
    "--packages",
    "--exclude-packages",
    "--repositories",
    "--files",
    "--py-files",
    "--archives",
    "--conf",
    "-c",
    "--properties-file",
    "--driver-memory",
    "--driver-java-options",
    "--driver-library-path",
    "--driver-class-path",
    "--driver-cores",
    "--executor-memory",
    "--executor-cores",
    "--num-executors",
    "--total-executor-cores",
    "--queue",
    "--principal",
    "--keytab",
    "--proxy-user",
    "--kill",
    "--status",
];

/// The Spark properties that list dependencies, and their kind.
pub const DEPENDENCY_PROPERTIES: &[(&str, Kind)] = &[
    ("spark.jars", Kind::Jar),
    ("spark.files", Kind::File),
    ("spark.submit.pyFiles", Kind::PyFile),
    ("spark.archives", Kind::Archive),
];

fn option_kind(option: &str) -> Option<Kind> {
    match option {
        "--jars" => Some(Kind::Jar),
        "--files" => Some(Kind::File),
        "--py-files" => Some(Kind::PyFile),
        "--archives" => Some(Kind::Archive),
        _ => None,
    }
}

fn property_kind(key: &str) -> Option<Kind> {
    DEPENDENCY_PROPERTIES
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, kind)| *kind)
}

/// One option as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SparkOption {
    /// `--name value` (or `--name=value` when `joined`).
    Value {
        name: String,
        value: String,
        joined: bool,
    },
    Flag(String),
}

/// A parsed spark-submit invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparkSubmit {
    pub program: String,
    pub options: Vec<SparkOption>,
    pub primary: Option<String>,
    pub app_args: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("no spark-submit command after `--` (ferry submit -- spark-submit ARGS...)")]
    Empty,
    #[error("{0} needs a value")]
    MissingValue(String),
    #[error("--conf {0:?} is not key=value")]
    BadConf(String),
}

impl SparkSubmit {
    pub fn parse(argv: &[String]) -> Result<Self, ParseError> {
        let (program, rest) = argv.split_first().ok_or(ParseError::Empty)?;
        let mut options = Vec::new();
        let mut iter = rest.iter();
        let mut primary = None;
        while let Some(arg) = iter.next() {
            if !arg.starts_with('-') || arg == "-" {
                primary = Some(arg.clone());
                break;
            }
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n, Some(v)),
                _ => (arg.as_str(), None),
            };
            if VALUE_OPTIONS.contains(&name) {
                let (value, joined) = match inline {
                    Some(v) => (v.to_owned(), true),
                    None => (
                        iter.next()
                            .ok_or_else(|| ParseError::MissingValue(name.to_owned()))?
                            .clone(),
                        false,
                    ),
                };
                if is_conf(name) && !value.contains('=') {
                    return Err(ParseError::BadConf(value));
                }
                options.push(SparkOption::Value {
                    name: name.to_owned(),
                    value,
                    joined,
                });
            } else {
                options.push(SparkOption::Flag(arg.clone()));
            }
        }
        Ok(Self {
            program: program.clone(),
            options,
            primary,
            app_args: iter.cloned().collect(),
        })
    }

    /// The value of the last `name` option.
    pub fn value(&self, wanted: &str) -> Option<&str> {
        self.options.iter().rev().find_map(|o| match o {
            SparkOption::Value { name, value, .. } if name == wanted => Some(value.as_str()),
            _ => None,
        })
    }

    /// The value of the last `--conf key=...`.
    pub fn conf(&self, key: &str) -> Option<&str> {
        self.options.iter().rev().find_map(|o| match o {
            SparkOption::Value { name, value, .. } if is_conf(name) => value
                .split_once('=')
                .filter(|(k, _)| *k == key)
                .map(|(_, v)| v),
            _ => None,
        })
    }

    /// The whole command line again.
    pub fn to_argv(&self) -> Vec<String> {
        let mut argv = vec![self.program.clone()];
        for option in &self.options {
            match option {
                SparkOption::Value {
                    name,
                    value,
                    joined: true,
                } => argv.push(format!("{name}={value}")),
                SparkOption::Value {
                    name,
                    value,
                    joined: false,
                } => {
                    argv.push(name.clone());
                    argv.push(value.clone());
                }
                SparkOption::Flag(flag) => argv.push(flag.clone()),
            }
        }
        argv.extend(self.primary.clone());
        argv.extend(self.app_args.iter().cloned());
        argv
    }
}

fn split_list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// Every dependency on the command line and in the properties file, in order.
pub fn dependencies(
    submit: &SparkSubmit,
    properties: &BTreeMap<String, String>,
) -> Vec<Dependency> {
    let mut deps = Vec::new();
    for (key, value) in properties {
        if let Some(kind) = property_kind(key)
            && submit.conf(key).is_none()
        {
            deps.extend(split_list(value).map(|d| Dependency::parse(kind, d)));
        }
    }
    for option in &submit.options {
        if let SparkOption::Value { name, value, .. } = option {
            if let Some(kind) = option_kind(name) {
                deps.extend(split_list(value).map(|d| Dependency::parse(kind, d)));
            } else if is_conf(name)
                && let Some((key, list)) = value.split_once('=')
                && let Some(kind) = property_kind(key)
            {
                deps.extend(split_list(list).map(|d| Dependency::parse(kind, d)));
            }
        }
    }
    if let Some(primary) = &submit.primary {
        deps.push(Dependency::parse(Kind::Primary, primary));
    }
    deps
}

/// Rewrites the command: every dependency `replace` maps gets its new text
/// (an empty text takes it out of its list, and a list left empty takes
/// its option out: how unpacked archives leave `--archives`);
/// properties-file lists are overridden by added `--conf`s; `extra_confs`
/// go before the primary resource.
pub fn rewrite(
    submit: &SparkSubmit,
    properties: &BTreeMap<String, String>,
    replace: &dyn Fn(&Dependency) -> Option<String>,
    extra_confs: &[(String, String)],
) -> SparkSubmit {
    let mut out = submit.clone();
    for option in &mut out.options {
        if let SparkOption::Value { name, value, .. } = option {
            if let Some(kind) = option_kind(name) {
                *value = rewrite_list(kind, value, replace);
            } else if is_conf(name)
                && let Some((key, list)) = value.clone().split_once('=')
                && let Some(kind) = property_kind(key)
            {
                *value = format!("{key}={}", rewrite_list(kind, list, replace));
            }
        }
    }
    for (key, list) in properties {
        if let Some(kind) = property_kind(key)
            && submit.conf(key).is_none()
        {
            out.options.push(SparkOption::Value {
                name: "--conf".into(),
                value: format!("{key}={}", rewrite_list(kind, list, replace)),
                joined: false,
            });
        }
    }
    out.options
        .retain(|option| !is_emptied_list(option, properties));
    for (key, value) in extra_confs {
        set_conf(&mut out, key, value);
    }
    // The primary resource is one path, never a list: a comma in it is part
    // of the name.
    if let Some(primary) = &submit.primary {
        let dep = Dependency::parse(Kind::Primary, primary);
        if let Some(new) = replace(&dep) {
            out.primary = Some(with_alias(new, &dep));
        }
    }
    out
}

fn is_conf(option: &str) -> bool {
    option == "--conf" || option == "-c"
}

/// One Spark list with each element `replace` maps rewritten, aliases
/// kept; an element replaced by nothing is dropped.
fn rewrite_list(kind: Kind, list: &str, replace: &dyn Fn(&Dependency) -> Option<String>) -> String {
    split_list(list)
        .filter_map(|d| {
            let dep = Dependency::parse(kind, d);
            match replace(&dep) {
                Some(new) if new.is_empty() => None,
                new => Some(with_alias(
                    new.unwrap_or_else(|| dep.location.clone()),
                    &dep,
                )),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A dependency list option (`--archives`, `--conf spark.archives=`) that
/// rewriting left empty, and that can go: a `--conf` of a key the
/// properties file also sets stays, empty, or Spark would take the file's
/// list instead.
fn is_emptied_list(option: &SparkOption, properties: &BTreeMap<String, String>) -> bool {
    match option {
        SparkOption::Value { name, value, .. } if option_kind(name).is_some() => value.is_empty(),
        SparkOption::Value { name, value, .. } if is_conf(name) => {
            value.split_once('=').is_some_and(|(key, list)| {
                property_kind(key).is_some() && list.is_empty() && !properties.contains_key(key)
            })
        }
        _ => false,
    }
}

/// `location`, with `dep`'s `#alias` if it had one.
pub(crate) fn with_alias(location: String, dep: &Dependency) -> String {
    match &dep.alias {
        Some(alias) => format!("{location}#{alias}"),
        None => location,
    }
}

/// Sets `--conf key=value`. A setting the user already passed is replaced
/// where it stands, so the command never carries two values for one key.
/// Client mode: `jars` (local paths) appended to the driver's class path,
/// in `--driver-class-path` when the command has one (it wins over the
/// setting), else in `spark.driver.extraClassPath` (after what `--conf` or
/// the properties file set).
pub fn append_driver_class_path(
    out: &mut SparkSubmit,
    properties: &BTreeMap<String, String>,
    jars: &[String],
) {
    if jars.is_empty() {
        return;
    }
    let added = jars.join(":");
    let join = |existing: Option<&str>| match existing.map(str::trim) {
        Some(existing) if !existing.is_empty() => format!("{existing}:{added}"),
        _ => added.clone(),
    };
    let option = out.options.iter_mut().rev().find_map(|o| match o {
        SparkOption::Value { name, value, .. } if name == "--driver-class-path" => Some(value),
        _ => None,
    });
    if let Some(value) = option {
        *value = join(Some(value));
        return;
    }
    const KEY: &str = "spark.driver.extraClassPath";
    let existing = out
        .conf(KEY)
        .or_else(|| properties.get(KEY).map(String::as_str))
        .map(str::to_owned);
    set_conf(out, KEY, &join(existing.as_deref()));
}

fn set_conf(out: &mut SparkSubmit, key: &str, value: &str) {
    let setting = format!("{key}={value}");
    let sets_key = |o: &SparkOption| match o {
        SparkOption::Value { name, value, .. } => {
            is_conf(name) && value.split_once('=').is_some_and(|(k, _)| k == key)
        }
        _ => false,
    };
    match out.options.iter().position(sets_key) {
        Some(first) => {
            let mut index = 0;
            out.options.retain(|o| {
                index += 1;
                index - 1 <= first || !sets_key(o)
            });
            if let SparkOption::Value { value, .. } = &mut out.options[first] {
                *value = setting;
            }
        }
        None => out.options.push(SparkOption::Value {
            name: "--conf".into(),
            value: setting,
            joined: false,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::submission::Origin;

    fn argv(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn options_primary_and_app_args_are_told_apart() {
        let submit = SparkSubmit::parse(&argv(&[
            "spark-submit",
            "--master",
            "k8s://https://k:6443",
            "--deploy-mode=cluster",
            "--verbose",
            "--conf",
            "spark.jars=a.jar",
            "--class",
            "Main",
            "./app.jar",
            "--input",
            "x",
        ]))
        .unwrap();
        assert_eq!(submit.primary.as_deref(), Some("./app.jar"));
        assert_eq!(submit.app_args, argv(&["--input", "x"]));
        assert_eq!(submit.value("--deploy-mode"), Some("cluster"));
        assert_eq!(submit.conf("spark.jars"), Some("a.jar"));
        assert_eq!(
            submit.to_argv(),
            argv(&[
                "spark-submit",
                "--master",
                "k8s://https://k:6443",
                "--deploy-mode=cluster",
                "--verbose",
                "--conf",
                "spark.jars=a.jar",
                "--class",
                "Main",
                "./app.jar",
                "--input",
                "x",
            ])
        );
    }

    #[test]
    fn bad_command_lines_are_refused() {
        assert_eq!(SparkSubmit::parse(&[]), Err(ParseError::Empty));
        assert_eq!(
            SparkSubmit::parse(&argv(&["spark-submit", "--jars"])),
            Err(ParseError::MissingValue("--jars".into()))
        );
        assert!(matches!(
            SparkSubmit::parse(&argv(&["spark-submit", "--conf", "novalue"])),
            Err(ParseError::BadConf(_))
        ));
    }

    #[test]
    fn dependencies_are_found_everywhere_and_classified() {
        let submit = SparkSubmit::parse(&argv(&[
            "spark-submit",
            "--jars",
            "./lib/a b.jar,s3a://bucket/x.jar,local:///opt/y.jar",
            "--files",
            "file:///etc/conf%20dir/app.conf,conf.yaml#cfg",
            "--py-files",
            "dep.zip",
            "--archives",
            "env.tar.gz#environment",
            "--conf",
            "spark.files=extra.txt",
            "main.py",
        ]))
        .unwrap();
        let mut props = BTreeMap::new();
        props.insert("spark.jars".to_owned(), "from-props.jar".to_owned());
        props.insert("spark.files".to_owned(), "shadowed.txt".to_owned());
        let deps = dependencies(&submit, &props);
        let shown: Vec<(Kind, &str, Option<&str>)> = deps
            .iter()
            .map(|d| (d.kind, d.location.as_str(), d.alias.as_deref()))
            .collect();
        assert_eq!(
            shown,
            vec![
                (Kind::Jar, "from-props.jar", None),
                (Kind::Jar, "./lib/a b.jar", None),
                (Kind::Jar, "s3a://bucket/x.jar", None),
                (Kind::Jar, "local:///opt/y.jar", None),
                (Kind::File, "file:///etc/conf%20dir/app.conf", None),
                (Kind::File, "conf.yaml", Some("cfg")),
                (Kind::PyFile, "dep.zip", None),
                (Kind::Archive, "env.tar.gz", Some("environment")),
                (Kind::File, "extra.txt", None),
                (Kind::Primary, "main.py", None),
            ]
        );
        let origins: Vec<Origin> = deps.iter().map(|d| d.origin().unwrap()).collect();
        assert_eq!(origins[1], Origin::Local("./lib/a b.jar".into()));
        assert_eq!(
            origins[2],
            Origin::Remote(ferry_core::SourceUri::parse("s3a://bucket/x.jar").unwrap())
        );
        assert_eq!(origins[3], Origin::Untouched);
        assert_eq!(origins[4], Origin::Local("/etc/conf dir/app.conf".into()));
    }

    #[test]
    fn rewriting_keeps_aliases_encodes_awkward_names_and_overrides_properties() {
        let submit = SparkSubmit::parse(&argv(&[
            "spark-submit",
            "--jars",
            "./lib/a b.jar,local:///opt/y.jar",
            "--archives",
            "env.tar.gz#environment",
            "--conf",
            "spark.jars=c,d.jar",
            "app.jar",
            "arg",
        ]))
        .unwrap();
        let mut props = BTreeMap::new();
        props.insert("spark.files".to_owned(), "p.txt".to_owned());
        let replace = |d: &Dependency| match d.origin() {
            Ok(Origin::Local(_) | Origin::Remote(_)) => Some(ferry_core::uri::local_uri(&format!(
                "/var/ferry/{}/{}",
                d.kind.group(),
                d.location.rsplit('/').next().unwrap_or_default()
            ))),
            _ => None,
        };
        let out = rewrite(&submit, &props, &replace, &[("spark.x".into(), "1".into())]);
        assert_eq!(
            out.to_argv(),
            argv(&[
                "spark-submit",
                "--jars",
                "local:///var/ferry/jars/a%20b.jar,local:///opt/y.jar",
                "--archives",
                "local:///var/ferry/archives/env.tar.gz#environment",
                "--conf",
                "spark.jars=local:///var/ferry/jars/c,local:///var/ferry/jars/d.jar",
                "--conf",
                "spark.files=local:///var/ferry/files/p.txt",
                "--conf",
                "spark.x=1",
                "local:///var/ferry/app/app.jar",
                "arg",
            ])
        );
    }
}
