//! Running the Ivy of the user's Spark distribution, configured as Spark's
//! `MavenUtils` configures it, and reading what it resolved.
//!
//! spark-submit builds its Ivy settings in code (`buildIvySettings`,
//! `createRepoResolvers`, `processRemoteRepoArg`, `addExclusionRules`,
//! `addDependenciesToIvy`); here the same settings are written as an Ivy
//! settings file and a module descriptor and given to Ivy's command line
//! (`org.apache.ivy.Main` from `$SPARK_HOME/jars/ivy-*.jar`, with the
//! `oro` jar its glob matcher needs), run with the `java` spark-submit
//! uses (`$JAVA_HOME/bin/java`, else `java` on `PATH`):
//!
//! - the chain `spark-list`: `local-m2-cache` (`~/.m2/repository`),
//!   `local-ivy-cache` (`<ivy dir>/local`), `central` and `spark-packages`
//!   (both `$DEFAULT_ARTIFACT_REPOSITORY` when set, as in Spark); with
//!   `--repositories`, the chain `user-list` = `spark-list` then `repo-1`,
//!   `repo-2`, ...; with `spark.jars.ivySettings`, the user's file instead
//!   of `spark-list`;
//! - Ivy's user directory `spark.jars.ivy`, default `~/.ivy2.5.2`, and its
//!   cache `<ivy dir>/cache`; no source or javadoc lookups;
//! - one `default` configuration mapped to `default(runtime)` of each
//!   package; `*:scala-library` and Spark's own modules excluded, then
//!   every `--exclude-packages` entry;
//! - jars only (`ext` = `jar`), named `<org>_<module>-<rev>[-<classifier>].jar`.
//!
//! What resolved is read from Ivy's XML resolve report (its resolution
//! cache is a private temporary folder per run), which names for every
//! artifact its cached file, the resolver and the URL it came from.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use ferry_core::EntryPath;

use super::PackageRequest;
use super::lock::{LockedArtifact, without_credentials};

/// Spark's own modules, excluded from every resolution
/// (`MavenUtils.IVY_DEFAULT_EXCLUDES`) as `org.apache.spark:spark-<m>*`.
const SPARK_MODULES: &[&str] = &[
    "catalyst_",
    "core_",
    "graphx_",
    "kvstore_",
    "launcher_",
    "mllib_",
    "mllib-local_",
    "network-common_",
    "network-shuffle_",
    "repl_",
    "sketch_",
    "sql_",
    "streaming_",
    "tags_",
    "unsafe_",
];

const CENTRAL: &str = "https://repo1.maven.org/maven2/";
const SPARK_PACKAGES: &str = "https://repos.spark-packages.org/";

/// Where Spark and Java are; read from the environment at the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IvyEnvironment {
    /// `$SPARK_HOME`, else the distribution the spark-submit program lives in.
    pub spark_home: Option<PathBuf>,
    /// `$JAVA_HOME/bin/java`, else `java`.
    pub java: PathBuf,
    /// The user's home, for `~/.m2` and `~/.ivy2.5.2`.
    pub home: Option<PathBuf>,
    /// `$DEFAULT_ARTIFACT_REPOSITORY`: replaces Maven Central and
    /// spark-packages in the default chain, as it does in Spark.
    pub default_repository: Option<String>,
}

impl IvyEnvironment {
    /// From the process environment and the spark-submit program the user
    /// runs (`.../bin/spark-submit` names its distribution).
    pub fn from_env(spark_submit: &str) -> Self {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let spark_home = var("SPARK_HOME").map(PathBuf::from).or_else(|| {
            let program = which(spark_submit)?;
            let program = std::fs::canonicalize(program).ok()?;
            let home = program.parent()?.parent()?;
            home.join("jars").is_dir().then(|| home.to_owned())
        });
        Self {
            spark_home,
            java: var("JAVA_HOME")
                .map(|home| PathBuf::from(home).join("bin").join("java"))
                .unwrap_or_else(|| PathBuf::from("java")),
            home: std::env::home_dir(),
            default_repository: var("DEFAULT_ARTIFACT_REPOSITORY")
                .map(|v| v.to_string_lossy().into_owned()),
        }
    }
}

/// `program` as `PATH` finds it, or itself when it has a `/`.
fn which(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// One artifact Ivy resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub group: String,
    pub module: String,
    pub version: String,
    /// The artifact's name (the module's, nearly always).
    pub name: String,
    pub kind: String,
    pub ext: String,
    pub classifier: Option<String>,
    /// Spark's name for it on the class path.
    pub file_name: EntryPath,
    /// The resolver it came from.
    pub repository: String,
    /// Where Ivy downloaded it from.
    pub url: String,
    /// The file in Ivy's cache.
    pub path: PathBuf,
}

/// One resolver Ivy tried for a module it did not find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tried {
    pub resolver: String,
    /// The first location it looked at (the POM or ivy.xml).
    pub location: String,
}

/// A module no repository had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// `group:artifact:version`.
    pub coordinate: String,
    pub tried: Vec<Tried>,
}

#[derive(Debug, thiserror::Error)]
pub enum IvyError {
    #[error(
        "--packages needs Spark's Ivy, but no Spark distribution was found: set SPARK_HOME to the Spark you submit with (its jars/ folder holds ivy-*.jar)"
    )]
    NoSparkHome,
    #[error(
        "--packages needs Spark's Ivy, but {} holds no ivy-*.jar: set SPARK_HOME to a Spark distribution (Spark 2 and later ship Ivy in jars/)",
        .0.display()
    )]
    NoIvyJar(PathBuf),
    #[error(
        "--packages runs Spark's Ivy with {}, which could not be started: install a Java runtime or set JAVA_HOME (spark-submit needs one too)",
        java.display()
    )]
    NoJava {
        java: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", not_found_text(.missing, .unreachable))]
    NotFound {
        missing: Vec<Missing>,
        /// Ivy's "Server access error" lines: repositories that did not answer.
        unreachable: Vec<String>,
    },
    #[error("Ivy failed resolving the packages (exit status {status}):\n{output}")]
    Failed { status: String, output: String },
    #[error("reading Ivy's resolve report {}", path.display())]
    Report {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Ivy's resolve report {} is not what Ivy 2.5 writes: {detail}", path.display())]
    BadReport { path: PathBuf, detail: String },
    #[error("Ivy did not retrieve the locked artifact {0}")]
    NotRetrieved(String),
    #[error("preparing Ivy's settings in a temporary folder")]
    Temporary(#[source] std::io::Error),
    #[error("reading the Ivy settings file {}", path.display())]
    Settings {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn not_found_text(missing: &[Missing], unreachable: &[String]) -> String {
    let mut text = String::new();
    for module in missing {
        let _ = write!(
            text,
            "package {} was not found in any repository; tried:",
            module.coordinate
        );
        for tried in &module.tried {
            let _ = write!(text, "\n  {}: {}", tried.resolver, tried.location);
        }
        text.push('\n');
    }
    if !unreachable.is_empty() {
        text.push_str("repositories that could not be reached:");
        for line in unreachable {
            let _ = write!(text, "\n  {line}");
        }
        text.push('\n');
    }
    text.push_str(
        "(a repository that needs credentials is configured in an Ivy settings file: spark.jars.ivySettings; see the README's --packages section)",
    );
    text
}

/// Resolves `request` with Spark's Ivy; with `pinned`, fetches exactly
/// those artifacts (locked versions, no transitive resolution) instead.
pub fn resolve(
    environment: &IvyEnvironment,
    request: &PackageRequest,
    pinned: Option<&[&LockedArtifact]>,
) -> Result<Vec<Artifact>, IvyError> {
    let classpath = ivy_classpath(environment)?;
    let work = tempfile::Builder::new()
        .prefix("ferry-ivy-")
        .tempdir()
        .map_err(IvyError::Temporary)?;
    let ivy_dir = request
        .ivy_dir
        .clone()
        .or_else(|| environment.home.as_ref().map(|h| h.join(".ivy2.5.2")))
        .unwrap_or_else(|| work.path().join("ivy"));
    let resolution = work.path().join("resolution");
    let settings = settings_xml(environment, request, &ivy_dir, &resolution)?;
    // A fresh module name per run, as Spark's, so reports never mix.
    let module = format!(
        "spark-submit-parent-{}",
        work.path()
            .file_name()
            .map(|n| n
                .to_string_lossy()
                .replace(|c: char| !c.is_ascii_alphanumeric(), ""))
            .unwrap_or_default()
    );
    let descriptor = match pinned {
        None => module_xml(&module, request),
        Some(artifacts) => pinned_xml(&module, artifacts),
    };
    let settings_path = work.path().join("ivysettings.xml");
    let descriptor_path = work.path().join("ivy.xml");
    std::fs::write(&settings_path, settings)
        .and_then(|()| std::fs::write(&descriptor_path, descriptor))
        .map_err(IvyError::Temporary)?;
    tracing::debug!(java = %environment.java.display(), classpath = %classpath, "running Ivy");
    let output = Command::new(&environment.java)
        .arg("-cp")
        .arg(&classpath)
        .arg("org.apache.ivy.Main")
        .arg("-settings")
        .arg(&settings_path)
        .arg("-ivy")
        .arg(&descriptor_path)
        .args(["-confs", "default"])
        .output()
        .map_err(|source| IvyError::NoJava {
            java: environment.java.clone(),
            source,
        })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() {
        let missing = missing_modules(&text);
        if !missing.is_empty() {
            return Err(IvyError::NotFound {
                missing,
                unreachable: unreachable(&text),
            });
        }
        return Err(IvyError::Failed {
            status: output.status.to_string(),
            output: text.trim_end().to_owned(),
        });
    }
    let report = resolution.join(format!("org.apache.spark-{module}-default.xml"));
    let xml = std::fs::read_to_string(&report).map_err(|source| IvyError::Report {
        path: report.clone(),
        source,
    })?;
    parse_report(&xml).map_err(|detail| IvyError::BadReport {
        path: report,
        detail,
    })
}

/// `ivy-*.jar` and the `oro-*.jar` beside it, as a class path.
fn ivy_classpath(environment: &IvyEnvironment) -> Result<String, IvyError> {
    let home = environment
        .spark_home
        .as_ref()
        .ok_or(IvyError::NoSparkHome)?;
    let jars = home.join("jars");
    let mut names: Vec<String> = std::fs::read_dir(&jars)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let find = |prefix: &str| {
        names
            .iter()
            .rev()
            .find(|n| n.starts_with(prefix) && n.ends_with(".jar"))
            .map(|n| jars.join(n))
    };
    let ivy = find("ivy-").ok_or_else(|| IvyError::NoIvyJar(jars.clone()))?;
    let mut classpath = ivy.display().to_string();
    if let Some(oro) = find("oro-") {
        classpath.push(':');
        classpath.push_str(&oro.display().to_string());
    }
    Ok(classpath)
}

/// Text for an XML attribute value.
fn attr(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn file_uri(path: &Path) -> String {
    let text = path.display().to_string();
    let text = text.trim_end_matches('/');
    format!("file:{text}/")
}

fn ibiblio(name: &str, root: &str) -> String {
    format!(
        "      <ibiblio name=\"{}\" m2compatible=\"true\" usepoms=\"true\" root=\"{}\"/>\n",
        attr(name),
        attr(root)
    )
}

/// The Ivy settings Spark's `buildIvySettings` (or `loadIvySettings`)
/// makes for `request`.
fn settings_xml(
    environment: &IvyEnvironment,
    request: &PackageRequest,
    ivy_dir: &Path,
    resolution: &Path,
) -> Result<String, IvyError> {
    let mut xml = String::from("<ivysettings>\n");
    xml.push_str(
        "  <property name=\"ivy.maven.lookup.sources\" value=\"false\" override=\"true\"/>\n",
    );
    xml.push_str(
        "  <property name=\"ivy.maven.lookup.javadoc\" value=\"false\" override=\"true\"/>\n",
    );
    let base = match &request.ivy_settings {
        Some(user) => {
            let text = std::fs::read_to_string(user).map_err(|source| IvyError::Settings {
                path: user.clone(),
                source,
            })?;
            let _ = writeln!(
                xml,
                "  <include file=\"{}\"/>",
                attr(&user.display().to_string())
            );
            default_resolver(&text)
        }
        None => Some("spark-list".to_owned()),
    };
    let default = if request.repositories.is_empty() {
        base.clone()
    } else {
        Some("user-list".to_owned())
    };
    if let Some(default) = &default {
        let _ = writeln!(xml, "  <settings defaultResolver=\"{}\"/>", attr(default));
    }
    let _ = writeln!(
        xml,
        "  <caches defaultCacheDir=\"{}\" resolutionCacheDir=\"{}\"/>",
        attr(&ivy_dir.join("cache").display().to_string()),
        attr(&resolution.display().to_string())
    );
    xml.push_str("  <resolvers>\n");
    if request.ivy_settings.is_none() {
        let m2 = environment
            .home
            .as_ref()
            .map(|h| h.join(".m2").join("repository"))
            .unwrap_or_else(|| PathBuf::from("/nonexistent/.m2/repository"));
        let local = ivy_dir.join("local").display().to_string();
        xml.push_str("    <chain name=\"spark-list\">\n");
        xml.push_str(&ibiblio("local-m2-cache", &file_uri(&m2)));
        let _ = write!(
            xml,
            "      <filesystem name=\"local-ivy-cache\" local=\"true\">\n        <ivy pattern=\"{0}/[organisation]/[module]/[revision]/ivys/ivy.xml\"/>\n        <artifact pattern=\"{0}/[organisation]/[module]/[revision]/[type]s/[artifact](-[classifier]).[ext]\"/>\n      </filesystem>\n",
            attr(&local)
        );
        let default_repository = environment.default_repository.as_deref();
        xml.push_str(&ibiblio("central", default_repository.unwrap_or(CENTRAL)));
        xml.push_str(&ibiblio(
            "spark-packages",
            default_repository.unwrap_or(SPARK_PACKAGES),
        ));
        xml.push_str("    </chain>\n");
    }
    if !request.repositories.is_empty() {
        xml.push_str("    <chain name=\"user-list\">\n");
        if let Some(base) = &base {
            let _ = writeln!(xml, "      <resolver ref=\"{}\"/>", attr(base));
        }
        for (index, repository) in request.repositories.iter().enumerate() {
            xml.push_str(&ibiblio(&format!("repo-{}", index + 1), repository));
        }
        xml.push_str("    </chain>\n");
    }
    xml.push_str("  </resolvers>\n</ivysettings>\n");
    Ok(xml)
}

/// `<settings defaultResolver="...">` of a user's settings file.
fn default_resolver(text: &str) -> Option<String> {
    let document = roxmltree::Document::parse(text).ok()?;
    document
        .descendants()
        .find(|n| n.has_tag_name("settings") && n.attribute("defaultResolver").is_some())
        .and_then(|n| n.attribute("defaultResolver"))
        .map(str::to_owned)
}

fn module_head(module: &str) -> String {
    format!(
        "<ivy-module version=\"2.0\" xmlns:m=\"http://ant.apache.org/ivy/maven\">\n  <info organisation=\"org.apache.spark\" module=\"{}\" revision=\"1.0\"/>\n  <configurations><conf name=\"default\"/></configurations>\n  <dependencies>\n",
        attr(module)
    )
}

/// Spark's module descriptor: every package `default->default(runtime)`,
/// Scala and Spark excluded, then the user's exclusions.
fn module_xml(module: &str, request: &PackageRequest) -> String {
    let mut xml = module_head(module);
    for package in &request.packages {
        let _ = writeln!(
            xml,
            "    <dependency org=\"{}\" name=\"{}\" rev=\"{}\" conf=\"default->default(runtime)\"/>",
            attr(&package.group),
            attr(&package.artifact),
            attr(&package.version)
        );
    }
    let mut exclude = |org: &str, module: &str| {
        let _ = writeln!(
            xml,
            "    <exclude org=\"{}\" module=\"{}\" artifact=\"*\" type=\"*\" ext=\"*\" matcher=\"glob\" conf=\"default\"/>",
            attr(org),
            attr(module)
        );
    };
    exclude("*", "scala-library");
    for spark in SPARK_MODULES {
        exclude("org.apache.spark", &format!("spark-{spark}*"));
    }
    for excluded in &request.excludes {
        exclude(&excluded.group, &excluded.artifact);
    }
    xml.push_str("  </dependencies>\n</ivy-module>\n");
    xml
}

/// Exactly the locked artifacts, each module at its locked version and
/// nothing transitive.
fn pinned_xml(module: &str, artifacts: &[&LockedArtifact]) -> String {
    let mut xml = module_head(module);
    let mut modules: Vec<(&str, &str, &str)> = artifacts
        .iter()
        .map(|a| (a.group.as_str(), a.module.as_str(), a.version.as_str()))
        .collect();
    modules.sort();
    modules.dedup();
    for (group, name, version) in modules {
        let _ = writeln!(
            xml,
            "    <dependency org=\"{}\" name=\"{}\" rev=\"{}\" transitive=\"false\" conf=\"default->default(runtime)\">",
            attr(group),
            attr(name),
            attr(version)
        );
        for artifact in artifacts.iter().filter(|a| {
            (a.group.as_str(), a.module.as_str(), a.version.as_str()) == (group, name, version)
        }) {
            let classifier = artifact
                .classifier
                .as_deref()
                .map(|c| format!(" m:classifier=\"{}\"", attr(c)))
                .unwrap_or_default();
            let _ = writeln!(
                xml,
                "      <artifact name=\"{}\" type=\"{}\" ext=\"{}\"{classifier}/>",
                attr(&artifact.artifact),
                attr(&artifact.kind),
                attr(&artifact.ext)
            );
        }
        xml.push_str("    </dependency>\n");
    }
    xml.push_str("  </dependencies>\n</ivy-module>\n");
    xml
}

/// The jars of Ivy's resolve report, in class path order.
fn parse_report(xml: &str) -> Result<Vec<Artifact>, String> {
    let document = roxmltree::Document::parse(xml).map_err(|e| e.to_string())?;
    let mut found: Vec<(u64, Artifact)> = Vec::new();
    for module in document.descendants().filter(|n| n.has_tag_name("module")) {
        let group = module
            .attribute("organisation")
            .ok_or("a module without organisation")?;
        let name = module.attribute("name").ok_or("a module without name")?;
        for revision in module.children().filter(|n| n.has_tag_name("revision")) {
            if revision.attribute("evicted").is_some() {
                continue;
            }
            let version = revision
                .attribute("name")
                .ok_or("a revision without name")?;
            let position = revision
                .attribute("position")
                .and_then(|p| p.parse().ok())
                .unwrap_or(u64::MAX);
            let resolver = revision
                .attribute("artresolver")
                .or_else(|| revision.attribute("resolver"))
                .unwrap_or_default();
            for artifact in revision
                .descendants()
                .filter(|n| n.has_tag_name("artifact"))
            {
                let ext = artifact.attribute("ext").unwrap_or_default();
                if ext != "jar" {
                    continue;
                }
                // Ivy writes extra attributes qualified and numbered by
                // namespace: `extra-1.m.classifier="linux"`.
                let classifier = artifact
                    .attributes()
                    .find(|a| a.name().starts_with("extra-") && a.name().ends_with("classifier"))
                    .map(|a| a.value().to_owned());
                let location = artifact.attribute("location").ok_or_else(|| {
                    format!("artifact of {group}#{name};{version} has no location")
                })?;
                let url = artifact
                    .children()
                    .find(|n| n.has_tag_name("origin-location"))
                    .and_then(|n| n.attribute("location"))
                    .unwrap_or(location);
                let file_name = format!(
                    "{group}_{name}-{version}{}.jar",
                    classifier
                        .as_deref()
                        .map(|c| format!("-{c}"))
                        .unwrap_or_default()
                );
                let file_name = EntryPath::parse(&file_name)
                    .map_err(|e| format!("jar name {file_name:?}: {e}"))?;
                found.push((
                    position,
                    Artifact {
                        group: group.to_owned(),
                        module: name.to_owned(),
                        version: version.to_owned(),
                        name: artifact.attribute("name").unwrap_or(name).to_owned(),
                        kind: artifact.attribute("type").unwrap_or("jar").to_owned(),
                        ext: ext.to_owned(),
                        classifier,
                        file_name,
                        repository: resolver.to_owned(),
                        url: without_credentials(url),
                        path: PathBuf::from(location),
                    },
                ));
            }
        }
    }
    found.sort_by_key(|(position, _)| *position);
    Ok(found.into_iter().map(|(_, a)| a).collect())
}

/// The modules Ivy's problem summary says it did not find, with every
/// resolver it tried and the first place each looked.
fn missing_modules(output: &str) -> Vec<Missing> {
    let mut missing: Vec<Missing> = Vec::new();
    let mut expect_location = false;
    for line in output.lines().map(str::trim) {
        if let Some(module) = line.strip_prefix("module not found: ") {
            missing.push(Missing {
                coordinate: maven_coordinate(module),
                tried: Vec::new(),
            });
            expect_location = false;
        } else if let Some(resolver) = line
            .strip_prefix("==== ")
            .and_then(|l| l.strip_suffix(": tried"))
            && let Some(module) = missing.last_mut()
        {
            module.tried.push(Tried {
                resolver: resolver.to_owned(),
                location: String::new(),
            });
            expect_location = true;
        } else if expect_location && !line.is_empty() && !line.starts_with("--") {
            if let Some(tried) = missing.last_mut().and_then(|m| m.tried.last_mut()) {
                tried.location = without_credentials(line);
            }
            expect_location = false;
        } else if line.starts_with("::::") {
            expect_location = false;
        }
    }
    missing
}

/// `group#module;version` as `group:module:version`.
fn maven_coordinate(ivy: &str) -> String {
    let ivy = ivy.trim();
    match ivy
        .split_once('#')
        .and_then(|(g, rest)| Some((g, rest.split_once(';')?)))
    {
        Some((group, (module, version))) => format!("{group}:{module}:{version}"),
        None => ivy.to_owned(),
    }
}

/// Ivy's "Server access error at url ..." lines, each once.
fn unreachable(output: &str) -> Vec<String> {
    let mut lines: Vec<String> = output
        .lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix("Server access error at url "))
        .map(without_credentials)
        .collect();
    lines.dedup();
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spark_settings_chain_and_exclusions() {
        let request = PackageRequest::parse(
            Some("com.a:x:1"),
            Some("com.b:y"),
            Some("http://127.0.0.1:1/m2/"),
            None,
            None,
        )
        .unwrap();
        let environment = IvyEnvironment {
            spark_home: None,
            java: "java".into(),
            home: Some("/home/u".into()),
            default_repository: Some("http://127.0.0.1:2/central/".into()),
        };
        let xml = settings_xml(
            &environment,
            &request,
            Path::new("/home/u/.ivy2.5.2"),
            Path::new("/t/r"),
        )
        .unwrap();
        let names: Vec<&str> = xml
            .lines()
            .filter_map(|l| l.split("name=\"").nth(1))
            .filter_map(|l| l.split('"').next())
            .collect();
        assert_eq!(
            names,
            [
                "ivy.maven.lookup.sources",
                "ivy.maven.lookup.javadoc",
                "spark-list",
                "local-m2-cache",
                "local-ivy-cache",
                "central",
                "spark-packages",
                "user-list",
                "repo-1"
            ]
        );
        assert!(xml.contains("defaultResolver=\"user-list\""), "{xml}");
        assert!(
            xml.contains("root=\"file:/home/u/.m2/repository/\""),
            "{xml}"
        );
        assert!(
            xml.contains("defaultCacheDir=\"/home/u/.ivy2.5.2/cache\""),
            "{xml}"
        );
        assert!(!xml.contains("repo1.maven.org"), "{xml}");
        let module = module_xml("m", &request);
        assert!(
            module
                .contains("org=\"com.a\" name=\"x\" rev=\"1\" conf=\"default->default(runtime)\"")
        );
        assert!(module.contains("org=\"*\" module=\"scala-library\""));
        assert!(module.contains("module=\"spark-core_*\""));
        assert!(module.contains("org=\"com.b\" module=\"y\""));
        roxmltree::Document::parse(&xml).unwrap();
        roxmltree::Document::parse(&module).unwrap();
    }

    #[test]
    fn ivy_problem_summaries_become_actionable_errors() {
        let output = "\
:: problems summary ::
:::: WARNINGS
\t\tmodule not found: com.ex#nope;3.0

\t==== central: tried

\t  file:/tmp/repo/com/ex/nope/3.0/nope-3.0.pom

\t  -- artifact com.ex#nope;3.0!nope.jar:

\t  file:/tmp/repo/com/ex/nope/3.0/nope-3.0.jar

\t==== repo-1: tried

\t  http://u:pw@127.0.0.1:9/m2/com/ex/nope/3.0/nope-3.0.pom

\t\t::::::::::::::::::::::::::::::::::::::::::::::
\t\t:: com.ex#nope;3.0: not found
:::: ERRORS
\tServer access error at url http://127.0.0.1:9/m2/com/ex/nope/3.0/nope-3.0.pom (java.net.ConnectException: Connection refused)
";
        let missing = missing_modules(output);
        assert_eq!(
            missing,
            [Missing {
                coordinate: "com.ex:nope:3.0".into(),
                tried: vec![
                    Tried {
                        resolver: "central".into(),
                        location: "file:/tmp/repo/com/ex/nope/3.0/nope-3.0.pom".into()
                    },
                    Tried {
                        resolver: "repo-1".into(),
                        location: "http://127.0.0.1:9/m2/com/ex/nope/3.0/nope-3.0.pom".into()
                    },
                ]
            }]
        );
        let text = IvyError::NotFound {
            missing,
            unreachable: unreachable(output),
        }
        .to_string();
        assert!(text.starts_with("package com.ex:nope:3.0 was not found in any repository; tried:\n  central: file:/tmp/repo"), "{text}");
        assert!(text.contains("could not be reached:\n  http://127.0.0.1:9/m2/com/ex/nope/3.0/nope-3.0.pom (java.net.ConnectException"), "{text}");
    }

    #[test]
    fn the_report_gives_jars_in_order_with_their_origin() {
        let xml = r#"<ivy-report version="1.0"><dependencies>
<module organisation="com.ex" name="natives">
  <revision name="1.0" resolver="repo-1" artresolver="repo-1" position="1">
    <artifacts>
      <artifact name="natives" type="jar" ext="jar" extra-1.m.classifier="linux" location="/c/natives-1.0-linux.jar">
        <origin-location is-local="false" location="http://h/m2/natives-1.0-linux.jar"/>
      </artifact>
      <artifact name="natives" type="pom" ext="pom" location="/c/natives.pom"/>
    </artifacts>
  </revision>
</module>
<module organisation="com.ex" name="lib">
  <revision name="0.9" evicted="latest-revision" position="2"><artifacts><artifact name="lib" type="jar" ext="jar" location="/c/old.jar"/></artifacts></revision>
  <revision name="1.0" resolver="central" position="0"><artifacts>
    <artifact name="lib" type="jar" ext="jar" location="/c/lib-1.0.jar"><origin-location location="file:/r/lib-1.0.jar"/></artifact>
  </artifacts></revision>
</module>
</dependencies></ivy-report>"#;
        let jars = parse_report(xml).unwrap();
        let shown: Vec<(&str, &str, &str)> = jars
            .iter()
            .map(|a| (a.file_name.as_str(), a.repository.as_str(), a.url.as_str()))
            .collect();
        assert_eq!(
            shown,
            [
                ("com.ex_lib-1.0.jar", "central", "file:/r/lib-1.0.jar"),
                (
                    "com.ex_natives-1.0-linux.jar",
                    "repo-1",
                    "http://h/m2/natives-1.0-linux.jar"
                ),
            ]
        );
        assert_eq!(jars[1].classifier.as_deref(), Some("linux"));
        assert_eq!(jars[0].path, PathBuf::from("/c/lib-1.0.jar"));
    }
}
