//! spark-submit's command line: parsed into options, a primary resource and
//! application arguments; the dependencies in it found; and rewritten so
//! every dependency is a `local://` path inside the pod's ferry volume.
//!
//! Pure functions only: everything here is tested without running Spark.

pub mod properties;

use std::collections::BTreeMap;

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

/// Where a dependency lands in the pod, and so which group of the bundle
/// it is staged under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Jar,
    File,
    PyFile,
    Archive,
    /// The application jar or script.
    Primary,
}

impl Kind {
    /// The bundle folder and pod directory name.
    pub fn group(self) -> &'static str {
        match self {
            Self::Jar => "jars",
            Self::File => "files",
            Self::PyFile => "pyfiles",
            Self::Archive => "archives",
            Self::Primary => "app",
        }
    }

    pub const ALL: [Kind; 5] = [
        Self::Jar,
        Self::File,
        Self::PyFile,
        Self::Archive,
        Self::Primary,
    ];
}

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
                if (name == "--conf" || name == "-c") && !value.contains('=') {
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
            SparkOption::Value { name, value, .. } if name == "--conf" || name == "-c" => value
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

/// A dependency as written, with the `#alias` Spark allows on archives and files.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dependency {
    pub kind: Kind,
    /// The URI or path, without `#alias`.
    pub location: String,
    pub alias: Option<String>,
}

/// Where a dependency comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A local file to stage (plain path or `file://`).
    Local(std::path::PathBuf),
    /// A URI ferry-init fetches itself (s3a://, https://, gs://, ...).
    Remote(String),
    /// Left alone: `local://` (already in the image) or a scheme ferry does
    /// not fetch.
    Untouched,
}

/// Schemes ferry-init fetches.
const REMOTE_SCHEMES: &[&str] = &[
    "http", "https", "s3", "s3a", "gs", "abfs", "abfss", "wasb", "wasbs", "az", "hdfs", "webhdfs",
    "swebhdfs", "ferry",
];

impl Dependency {
    fn parse(kind: Kind, text: &str) -> Self {
        let (location, alias) = match text.rsplit_once('#') {
            Some((l, a)) if !a.starts_with("sha256=") => (l.to_owned(), Some(a.to_owned())),
            _ => (text.to_owned(), None),
        };
        Self {
            kind,
            location,
            alias,
        }
    }

    pub fn origin(&self) -> Origin {
        match self.location.split_once("://") {
            None if self.location.contains(':')
                && !self.location.starts_with('/')
                && !self.location.starts_with('.') =>
            {
                // e.g. "maven:..." or a Windows-looking path: not ours.
                Origin::Untouched
            }
            None => Origin::Local(self.location.clone().into()),
            Some(("file", path)) => {
                Origin::Local(percent_decode(path.strip_prefix("localhost").unwrap_or(path)).into())
            }
            Some((scheme, _)) if REMOTE_SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()) => {
                Origin::Remote(self.location.clone())
            }
            Some(_) => Origin::Untouched,
        }
    }

    /// The file name it lands under in the pod.
    pub fn file_name(&self) -> String {
        let without_query = self.location.split(['?']).next().unwrap_or_default();
        let last = without_query.rsplit('/').next().unwrap_or_default();
        percent_decode(last)
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
            } else if (name == "--conf" || name == "-c")
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

/// Percent-encodes what a Spark URI list cannot carry raw.
pub fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for ch in path.chars() {
        match ch {
            ' ' => out.push_str("%20"),
            ',' => out.push_str("%2C"),
            '%' => out.push_str("%25"),
            '#' => out.push_str("%23"),
            '?' => out.push_str("%3F"),
            c => out.push(c),
        }
    }
    out
}

/// Decodes `%XX` escapes; a `%` that starts none is kept as it is.
fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// Rewrites the command: every dependency `replace` maps gets its new text;
/// properties-file lists are overridden by added `--conf`s; `extra_confs`
/// go before the primary resource.
pub fn rewrite(
    submit: &SparkSubmit,
    properties: &BTreeMap<String, String>,
    replace: &dyn Fn(&Dependency) -> Option<String>,
    extra_confs: &[(String, String)],
) -> SparkSubmit {
    let rewrite_list = |kind: Kind, list: &str| -> String {
        split_list(list)
            .map(|d| {
                let dep = Dependency::parse(kind, d);
                let new = replace(&dep).unwrap_or_else(|| dep.location.clone());
                match &dep.alias {
                    Some(alias) => format!("{new}#{alias}"),
                    None => new,
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut out = submit.clone();
    for option in &mut out.options {
        if let SparkOption::Value { name, value, .. } = option {
            if let Some(kind) = option_kind(name) {
                *value = rewrite_list(kind, value);
            } else if (name == "--conf" || name == "-c")
                && let Some((key, list)) = value.clone().split_once('=')
                && let Some(kind) = property_kind(key)
            {
                *value = format!("{key}={}", rewrite_list(kind, list));
            }
        }
    }
    for (key, list) in properties {
        if let Some(kind) = property_kind(key)
            && submit.conf(key).is_none()
        {
            out.options.push(SparkOption::Value {
                name: "--conf".into(),
                value: format!("{key}={}", rewrite_list(kind, list)),
                joined: false,
            });
        }
    }
    // A setting the user already passed is replaced where it stands, so the
    // command never carries two values for one key.
    for (key, value) in extra_confs {
        let setting = format!("{key}={value}");
        let sets_key = |o: &SparkOption| match o {
            SparkOption::Value { name, value, .. } => {
                (name == "--conf" || name == "-c")
                    && value.split_once('=').is_some_and(|(k, _)| k == key)
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
    // The primary resource is one path, never a list: a comma in it is part
    // of the name.
    if let Some(primary) = &submit.primary {
        let dep = Dependency::parse(Kind::Primary, primary);
        if let Some(new) = replace(&dep) {
            out.primary = Some(match &dep.alias {
                Some(alias) => format!("{new}#{alias}"),
                None => new,
            });
        }
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
        assert_eq!(deps[1].origin(), Origin::Local("./lib/a b.jar".into()));
        assert_eq!(
            deps[2].origin(),
            Origin::Remote("s3a://bucket/x.jar".into())
        );
        assert_eq!(deps[3].origin(), Origin::Untouched);
        assert_eq!(
            deps[4].origin(),
            Origin::Local("/etc/conf dir/app.conf".into())
        );
        assert_eq!(deps[4].file_name(), "app.conf");
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
            Origin::Local(_) | Origin::Remote(_) => Some(format!(
                "local:///var/ferry/{}/{}",
                d.kind.group(),
                encode_path(&d.file_name())
            )),
            Origin::Untouched => None,
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

    #[test]
    fn percent_before_a_multibyte_character_is_kept_literally() {
        assert_eq!(percent_decode("%aé%41"), "%aéA");
        assert_eq!(percent_decode("100%"), "100%");
    }

    #[test]
    fn commas_and_percent_signs_survive_encoding() {
        assert_eq!(encode_path("a,b 100%.jar"), "a%2Cb%20100%25.jar");
        assert_eq!(percent_decode("a%2Cb%20100%25.jar"), "a,b 100%.jar");
        assert_eq!(percent_decode("bad%zz%"), "bad%zz%");
    }
}
