//! The URIs `ferry-init` fetches, parsed once into a typed source.
//!
//! | form | kind |
//! |---|---|
//! | `ferry://<bundle>[/<path>]` | staged on ferry-server |
//! | `http://`, `https://` | any web server |
//! | `s3://`, `s3a://` | S3 and compatible stores |
//! | `gs://` | Google Cloud Storage |
//! | `abfs[s]://<container>@<account>.dfs.core.windows.net/<path>`, `wasb[s]://<container>@<account>.blob.core.windows.net/<path>`, `az://<container>/<path>` | Azure Blob / ADLS Gen2 |
//! | `hdfs://<namenode>/<path>`, `webhdfs://<host:port>/<path>` | HDFS |
//! | `file:///<path>` | a mounted path, copied |
//! | `local:///<path>` | already in the image, not copied |
//!
//! Any of them may end in `#sha256=<64 hex>` to pin the content.
//!
//! The other direction, a path made into a URI ([`encode_path`],
//! [`local_uri`]), is here too, with the one set of characters that must be
//! escaped, so what `ferry submit` writes is what this parser (and Spark)
//! reads back.

use std::fmt;
use std::str::FromStr;

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use url::Url;

use crate::bundle::{BundleRef, BundleRefError};
use crate::{Digest, EntryPath, PathError};

/// Characters escaped when a path goes into a URI: what `java.net.URI`
/// (Spark's parser) refuses in a path — controls, space, `"`, `#`, `%`,
/// `<`, `>`, `?`, `[`, `\`, `]`, `^`, `` ` ``, `{`, `|`, `}` — and `,`, which
/// splits Spark's lists (`spark.jars=a,b`). Non-ASCII is always escaped
/// (UTF-8 bytes).
pub const PATH_ESCAPES: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}')
    .add(b',');

/// Percent-encodes `path` with [`PATH_ESCAPES`]; `/` stays a separator.
pub fn encode_path(path: &str) -> String {
    utf8_percent_encode(path, PATH_ESCAPES).to_string()
}

/// `local://<path>` for an absolute path inside a pod: a file Spark opens
/// where it is, which [`SourceUri::parse`] reads back as
/// [`SourceKind::Local`] of the same path.
pub fn local_uri(path: &str) -> String {
    format!("local://{}", encode_path(path))
}

/// Why a URI cannot be fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    #[error(
        "unsupported URI scheme {0:?} (ferry, http, https, s3, s3a, gs, abfs, abfss, wasb, wasbs, az, hdfs, webhdfs, file, local)"
    )]
    UnsupportedScheme(String),
    #[error(
        "URI has no scheme; write file:///path for a mounted file or local:///path for one in the image"
    )]
    NoScheme,
    #[error("malformed URI: {0}")]
    Malformed(String),
    #[error("bad bundle in ferry:// URI: {0}")]
    Bundle(#[from] BundleRefError),
    #[error("bad path in URI: {0}")]
    Path(#[from] PathError),
    #[error("bad #sha256= pin: {0}")]
    Pin(String),
    #[error("URI {0:?} names a bucket or container but no object")]
    NoObject(String),
}

/// Where the bytes of one source come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// A staged bundle, or one entry (or folder of entries) of it.
    Ferry {
        bundle: BundleRef,
        path: Option<EntryPath>,
    },
    Http(Url),
    S3 {
        bucket: String,
        key: String,
    },
    Gcs {
        bucket: String,
        key: String,
    },
    Azure {
        /// From the host (`<account>.blob.core.windows.net`); `None` for
        /// `az://`, where the account comes from the environment.
        account: Option<String>,
        container: String,
        key: String,
    },
    Hdfs {
        /// `namenode[:port]`, or a nameservice id.
        authority: String,
        path: String,
    },
    WebHdfs {
        authority: String,
        path: String,
        tls: bool,
    },
    /// A file on a volume mounted into the init container.
    File(String),
    /// A file already in the image.
    Local(String),
}

/// A parsed source URI with its optional content pin.
#[derive(Clone, PartialEq, Eq)]
pub struct SourceUri {
    /// The URI as written, without the `#sha256=` fragment.
    text: String,
    kind: SourceKind,
    pin: Option<Digest>,
}

impl SourceUri {
    pub fn parse(input: &str) -> Result<Self, UriError> {
        let (text, pin) = split_pin(input.trim())?;
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(if text.contains(':') && !text.starts_with('/') {
                UriError::UnsupportedScheme(text.split(':').next().unwrap_or_default().into())
            } else {
                UriError::NoScheme
            });
        };
        let scheme_lower = scheme.to_ascii_lowercase();
        let kind = match scheme_lower.as_str() {
            "ferry" => parse_ferry(rest)?,
            "http" | "https" => {
                let url = Url::parse(text).map_err(|e| UriError::Malformed(e.to_string()))?;
                if url.host_str().is_none_or(str::is_empty) {
                    return Err(UriError::Malformed(format!("{text}: no host")));
                }
                SourceKind::Http(url)
            }
            "s3" | "s3a" => {
                let (bucket, key) = bucket_and_key(text, rest)?;
                SourceKind::S3 { bucket, key }
            }
            "gs" => {
                let (bucket, key) = bucket_and_key(text, rest)?;
                SourceKind::Gcs { bucket, key }
            }
            "az" => {
                let (container, key) = bucket_and_key(text, rest)?;
                SourceKind::Azure {
                    account: None,
                    container,
                    key,
                }
            }
            "abfs" | "abfss" | "wasb" | "wasbs" => {
                let (authority, key) = bucket_and_key(text, rest)?;
                let (container, host) = authority.split_once('@').ok_or_else(|| {
                    UriError::Malformed(format!(
                        "{text}: expected {scheme}://<container>@<account>.<host>/<path>"
                    ))
                })?;
                let account = host.split('.').next().unwrap_or_default();
                if container.is_empty() || account.is_empty() {
                    return Err(UriError::Malformed(format!(
                        "{text}: empty container or account"
                    )));
                }
                SourceKind::Azure {
                    account: Some(account.to_owned()),
                    container: container.to_owned(),
                    key,
                }
            }
            "hdfs" => {
                let (authority, path) = authority_and_path(text, rest)?;
                SourceKind::Hdfs { authority, path }
            }
            "webhdfs" | "swebhdfs" => {
                let (authority, path) = authority_and_path(text, rest)?;
                SourceKind::WebHdfs {
                    authority,
                    path,
                    tls: scheme_lower == "swebhdfs",
                }
            }
            "file" => SourceKind::File(local_path(text, rest)?),
            "local" => SourceKind::Local(local_path(text, rest)?),
            _ => return Err(UriError::UnsupportedScheme(scheme.to_owned())),
        };
        Ok(Self {
            text: text.to_owned(),
            kind,
            pin,
        })
    }

    /// `ferry://<bundle>`: the whole bundle.
    pub fn bundle(bundle: &BundleRef) -> Self {
        Self {
            text: format!("ferry://{bundle}"),
            kind: SourceKind::Ferry {
                bundle: bundle.clone(),
                path: None,
            },
            pin: None,
        }
    }

    /// One entry of a bundle, `ferry://<bundle>/<entry>` (escaped as the
    /// parser unescapes it).
    pub fn bundle_entry(bundle: &BundleRef, entry: &EntryPath) -> Self {
        Self {
            text: format!(
                "ferry://{bundle}/{}",
                utf8_percent_encode(entry.as_str(), PATH_ESCAPES)
            ),
            kind: SourceKind::Ferry {
                bundle: bundle.clone(),
                path: Some(entry.clone()),
            },
            pin: None,
        }
    }

    pub fn kind(&self) -> &SourceKind {
        &self.kind
    }

    /// The content pin from `#sha256=<hex>`, if any.
    pub fn pin(&self) -> Option<Digest> {
        self.pin
    }

    /// The URI without its pin, as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether this names a whole bundle or a folder of one (many files).
    pub fn is_many(&self) -> bool {
        matches!(self.kind, SourceKind::Ferry { .. }) && self.text.ends_with('/')
            || matches!(self.kind, SourceKind::Ferry { path: None, .. })
    }

    /// The file name the item lands under unless told otherwise: the last
    /// segment of its path, percent-decoded and checked as an entry path.
    pub fn file_name(&self) -> Result<EntryPath, UriError> {
        let last = match &self.kind {
            SourceKind::Ferry { path: Some(p), .. } => p.file_name().to_owned(),
            SourceKind::Ferry { bundle, path: None } => bundle.as_str().to_owned(),
            SourceKind::Http(url) => {
                let seg = url
                    .path_segments()
                    .and_then(|mut s| s.next_back())
                    .unwrap_or_default();
                percent_decode_str(seg).decode_utf8_lossy().into_owned()
            }
            SourceKind::S3 { key, .. }
            | SourceKind::Gcs { key, .. }
            | SourceKind::Azure { key, .. } => {
                key.rsplit('/').next().unwrap_or_default().to_owned()
            }
            SourceKind::Hdfs { path, .. }
            | SourceKind::WebHdfs { path, .. }
            | SourceKind::File(path)
            | SourceKind::Local(path) => path.rsplit('/').next().unwrap_or_default().to_owned(),
        };
        if last.is_empty() {
            return Err(UriError::NoObject(self.text.clone()));
        }
        Ok(EntryPath::parse(&last)?)
    }
}

fn split_pin(input: &str) -> Result<(&str, Option<Digest>), UriError> {
    match input.split_once('#') {
        None => Ok((input, None)),
        Some((text, fragment)) => {
            let hex = fragment.strip_prefix("sha256=").ok_or_else(|| {
                UriError::Pin(format!("fragment {fragment:?} is not sha256=<hex>"))
            })?;
            let digest = Digest::from_hex(hex).map_err(|e| UriError::Pin(e.to_string()))?;
            Ok((text, Some(digest)))
        }
    }
}

fn parse_ferry(rest: &str) -> Result<SourceKind, UriError> {
    let (bundle, path) = match rest.split_once('/') {
        None => (rest, None),
        Some((bundle, "")) => (bundle, None),
        Some((bundle, path)) => {
            let decoded = percent_decode_str(path.trim_end_matches('/'))
                .decode_utf8()
                .map_err(|_| UriError::Malformed("path is not UTF-8".into()))?;
            (bundle, Some(EntryPath::parse(&decoded)?))
        }
    };
    Ok(SourceKind::Ferry {
        bundle: BundleRef::parse(bundle)?,
        path,
    })
}

fn bucket_and_key(text: &str, rest: &str) -> Result<(String, String), UriError> {
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(UriError::Malformed(format!("{text}: no bucket")));
    }
    let key = percent_decode_str(key)
        .decode_utf8()
        .map_err(|_| UriError::Malformed(format!("{text}: key is not UTF-8")))?;
    if key.is_empty() || key.ends_with('/') {
        return Err(UriError::NoObject(text.to_owned()));
    }
    Ok((bucket.to_owned(), key.into_owned()))
}

fn authority_and_path(text: &str, rest: &str) -> Result<(String, String), UriError> {
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.is_empty() {
        return Err(UriError::Malformed(format!("{text}: no namenode")));
    }
    if path.is_empty() {
        return Err(UriError::NoObject(text.to_owned()));
    }
    let path = percent_decode_str(path)
        .decode_utf8()
        .map_err(|_| UriError::Malformed(format!("{text}: path is not UTF-8")))?;
    Ok((authority.to_owned(), format!("/{path}")))
}

fn local_path(text: &str, rest: &str) -> Result<String, UriError> {
    // file:///abs/path has an empty authority; file://host/path is refused.
    let path = rest
        .strip_prefix('/')
        .map(|p| format!("/{p}"))
        .ok_or_else(|| {
            UriError::Malformed(format!("{text}: expected an absolute path (three slashes)"))
        })?;
    let decoded = percent_decode_str(&path)
        .decode_utf8()
        .map_err(|_| UriError::Malformed(format!("{text}: path is not UTF-8")))?;
    if decoded.contains('\0') {
        return Err(UriError::Malformed(format!("{text}: NUL in path")));
    }
    Ok(decoded.into_owned())
}

impl FromStr for SourceUri {
    type Err = UriError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for SourceUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)?;
        if let Some(pin) = self.pin {
            write!(f, "#sha256={}", pin.hex())?;
        }
        Ok(())
    }
}

impl fmt::Debug for SourceUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SourceUri({self})")
    }
}

impl Serialize for SourceUri {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SourceUri {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&text).map_err(|e| serde::de::Error::custom(format!("{text}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(s: &str) -> SourceKind {
        SourceUri::parse(s).unwrap().kind().clone()
    }

    #[test]
    fn every_scheme_parses_to_its_kind() {
        assert!(matches!(
            kind("ferry://team-libs/jars/a.jar"),
            SourceKind::Ferry { path: Some(_), .. }
        ));
        assert!(matches!(
            kind("ferry://team-libs"),
            SourceKind::Ferry { path: None, .. }
        ));
        assert!(matches!(kind("https://h/x.jar"), SourceKind::Http(_)));
        assert_eq!(
            kind("s3a://b/dir/x.jar"),
            SourceKind::S3 {
                bucket: "b".into(),
                key: "dir/x.jar".into()
            }
        );
        assert_eq!(
            kind("gs://b/x"),
            SourceKind::Gcs {
                bucket: "b".into(),
                key: "x".into()
            }
        );
        assert_eq!(
            kind("abfss://c@acct.dfs.core.windows.net/d/x.jar"),
            SourceKind::Azure {
                account: Some("acct".into()),
                container: "c".into(),
                key: "d/x.jar".into()
            }
        );
        assert_eq!(
            kind("az://c/x"),
            SourceKind::Azure {
                account: None,
                container: "c".into(),
                key: "x".into()
            }
        );
        assert_eq!(
            kind("hdfs://nn:8020/user/x.jar"),
            SourceKind::Hdfs {
                authority: "nn:8020".into(),
                path: "/user/x.jar".into()
            }
        );
        assert!(matches!(
            kind("webhdfs://nn:9870/x"),
            SourceKind::WebHdfs { tls: false, .. }
        ));
        assert_eq!(
            kind("file:///mnt/a%20b.jar"),
            SourceKind::File("/mnt/a b.jar".into())
        );
        assert_eq!(
            kind("local:///opt/x.jar"),
            SourceKind::Local("/opt/x.jar".into())
        );
    }

    #[test]
    fn pins_are_parsed_and_printed_back() {
        let d = Digest::of(b"x");
        let text = format!("https://h/x.jar#sha256={}", d.hex());
        let uri = SourceUri::parse(&text).unwrap();
        assert_eq!(uri.pin(), Some(d));
        assert_eq!(uri.as_str(), "https://h/x.jar");
        assert_eq!(uri.to_string(), text);
        assert!(matches!(
            SourceUri::parse("https://h/x#md5=00"),
            Err(UriError::Pin(_))
        ));
        assert!(matches!(
            SourceUri::parse("https://h/x#sha256=00"),
            Err(UriError::Pin(_))
        ));
    }

    #[test]
    fn bad_uris_are_refused_with_a_reason() {
        assert!(matches!(
            SourceUri::parse("/tmp/x.jar"),
            Err(UriError::NoScheme)
        ));
        assert!(matches!(
            SourceUri::parse("ftp://h/x"),
            Err(UriError::UnsupportedScheme(_))
        ));
        assert!(matches!(
            SourceUri::parse("s3://b/"),
            Err(UriError::NoObject(_))
        ));
        assert!(matches!(
            SourceUri::parse("ferry://b/../x"),
            Err(UriError::Path(_))
        ));
        assert!(matches!(
            SourceUri::parse("ferry://b/a/%2e%2e/x"),
            Err(UriError::Path(_))
        ));
        assert!(matches!(
            SourceUri::parse("ferry://-bad/x"),
            Err(UriError::Bundle(_))
        ));
        assert!(matches!(
            SourceUri::parse("file://host/x"),
            Err(UriError::Malformed(_))
        ));
        assert!(matches!(
            SourceUri::parse("abfs://acct/x"),
            Err(UriError::Malformed(_))
        ));
    }

    #[test]
    fn encoded_paths_carry_awkward_names_through_spark_lists() {
        assert_eq!(encode_path("a,b 100%.jar"), "a%2Cb%20100%25.jar");
        assert_eq!(
            encode_path("/var/ferry/jars/x#1?.jar"),
            "/var/ferry/jars/x%231%3F.jar"
        );
        assert_eq!(encode_path("é[1].jar"), "%C3%A9%5B1%5D.jar");
        assert_eq!(
            local_uri("/var/ferry/app/job,v2.jar"),
            "local:///var/ferry/app/job%2Cv2.jar"
        );
    }

    #[test]
    fn a_bundle_uri_names_the_whole_bundle() {
        let bundle = BundleRef::parse("team-libs").unwrap();
        let uri = SourceUri::bundle(&bundle);
        assert_eq!(uri, SourceUri::parse("ferry://team-libs").unwrap());
        assert!(uri.is_many());
    }

    proptest::proptest! {
        #[test]
        fn local_uris_parse_back_to_their_path(path in "/[^\\x00]{0,40}") {
            let uri = SourceUri::parse(&local_uri(&path)).unwrap();
            proptest::prop_assert_eq!(uri.kind(), &SourceKind::Local(path.clone()));
            proptest::prop_assert!(!local_uri(&path).contains(','));
        }
    }

    #[test]
    fn file_name_is_the_decoded_last_segment() {
        let name = |s: &str| {
            SourceUri::parse(s)
                .unwrap()
                .file_name()
                .unwrap()
                .to_string()
        };
        assert_eq!(name("https://h/a/b%20c.jar?x=1"), "b c.jar");
        assert_eq!(name("s3://b/k/x.jar"), "x.jar");
        assert_eq!(name("ferry://lib/jars/a.jar"), "a.jar");
        assert!(SourceUri::parse("https://h/").unwrap().file_name().is_err());
        assert!(
            SourceUri::parse("https://h/%2e%2e")
                .unwrap()
                .file_name()
                .is_err()
        );
    }
}
