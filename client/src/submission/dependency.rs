//! One dependency of a Spark application as its front end lists it (a jar,
//! a file, a Python file, an archive or the application itself), and where
//! its bytes come from.
//!
//! Classification goes through core's [`SourceUri`], the parser ferry-init
//! uses, so a URI ferry-init could not fetch is refused here, at submit
//! time, rather than in the pod.

use std::path::PathBuf;

use ferry_core::{SourceUri, UriError};

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

/// A dependency as written, with the `#alias` Spark allows on archives and files.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dependency {
    pub kind: Kind,
    /// The URI or path, without `#alias` (a `#sha256=` pin stays).
    pub location: String,
    pub alias: Option<String>,
}

/// Where a dependency comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A local file to stage (plain path or `file://`).
    Local(PathBuf),
    /// A URI ferry-init fetches itself (s3a://, https://, gs://, ferry://, ...).
    Remote(SourceUri),
    /// Left to Spark: `local://` (already in the image) or a scheme
    /// ferry-init does not fetch.
    Untouched,
}

impl Dependency {
    /// One element of a Spark list: `location[#alias]`.
    pub fn parse(kind: Kind, text: &str) -> Self {
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

    /// Sorts the dependency: stage it, have ferry-init fetch it, or leave it
    /// to Spark. An error means ferry-init would fetch this scheme but the
    /// URI is malformed (no object, bad pin, bad bundle, ...).
    pub fn origin(&self) -> Result<Origin, UriError> {
        let Some((scheme, rest)) = self.location.split_once("://") else {
            let looks_like_a_uri = self.location.contains(':')
                && !self.location.starts_with('/')
                && !self.location.starts_with('.');
            // e.g. "maven:..." or a Windows-looking path: not ours.
            return Ok(if looks_like_a_uri {
                Origin::Untouched
            } else {
                Origin::Local(self.location.clone().into())
            });
        };
        match scheme.to_ascii_lowercase().as_str() {
            // Java writes file://localhost/p for file:///p; both are this machine.
            "file" => {
                let rest = rest.strip_prefix("localhost").unwrap_or(rest);
                match SourceUri::parse(&format!("file://{rest}"))?.kind() {
                    ferry_core::uri::SourceKind::File(path) => Ok(Origin::Local(path.into())),
                    _ => Ok(Origin::Untouched),
                }
            }
            "local" => Ok(Origin::Untouched),
            _ => match SourceUri::parse(&self.location) {
                Ok(uri) => Ok(Origin::Remote(uri)),
                Err(UriError::UnsupportedScheme(_)) => Ok(Origin::Untouched),
                Err(error) => Err(error),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(kind: Kind, text: &str) -> Result<Origin, UriError> {
        Dependency::parse(kind, text).origin()
    }

    #[test]
    fn local_paths_and_file_uris_are_staged() {
        assert_eq!(
            origin(Kind::Jar, "./lib/a b.jar").unwrap(),
            Origin::Local("./lib/a b.jar".into())
        );
        assert_eq!(
            origin(Kind::File, "file:///etc/conf%20dir/app.conf").unwrap(),
            Origin::Local("/etc/conf dir/app.conf".into())
        );
        assert_eq!(
            origin(Kind::File, "file://localhost/etc/x").unwrap(),
            Origin::Local("/etc/x".into())
        );
        assert!(matches!(
            origin(Kind::File, "file://otherhost/etc/x"),
            Err(UriError::Malformed(_))
        ));
    }

    #[test]
    fn a_percent_that_starts_no_escape_is_kept_literally() {
        assert_eq!(
            origin(Kind::File, "file:///d/%a\u{e9}%41").unwrap(),
            Origin::Local("/d/%a\u{e9}A".into())
        );
        assert_eq!(
            origin(Kind::File, "file:///d/100%").unwrap(),
            Origin::Local("/d/100%".into())
        );
    }

    #[test]
    fn fetchable_uris_are_parsed_with_cores_parser() {
        let Origin::Remote(uri) = origin(Kind::Jar, "s3a://bucket/x.jar").unwrap() else {
            panic!("s3a is fetched by ferry-init");
        };
        assert_eq!(uri.as_str(), "s3a://bucket/x.jar");
        let pinned = format!(
            "https://h/x.jar#sha256={}",
            ferry_core::Digest::of(b"x").hex()
        );
        let dep = Dependency::parse(Kind::Jar, &pinned);
        assert_eq!(dep.alias, None, "a pin is not an alias");
        assert!(matches!(dep.origin().unwrap(), Origin::Remote(u) if u.pin().is_some()));
        for unfetchable in [
            "s3a://bucket/",
            "gs://b",
            "ferry://-bad/x.jar",
            "https://h/x.jar#sha256=00",
        ] {
            assert!(
                origin(Kind::Jar, unfetchable).is_err(),
                "{unfetchable} is caught at submit time"
            );
        }
    }

    #[test]
    fn local_and_unknown_schemes_are_left_to_spark() {
        for untouched in [
            "local:///opt/y.jar",
            "local://odd",
            "maven:org:x:1",
            "ftp://h/x.jar",
        ] {
            assert_eq!(
                origin(Kind::Jar, untouched).unwrap(),
                Origin::Untouched,
                "{untouched}"
            );
        }
    }

    #[test]
    fn aliases_are_split_off_but_pins_are_not() {
        let dep = Dependency::parse(Kind::Archive, "env.tar.gz#environment");
        assert_eq!(dep.location, "env.tar.gz");
        assert_eq!(dep.alias.as_deref(), Some("environment"));
    }
}
