//! The one place that knows how keys are spelled, and how to read them back.
//!
//! | key | content |
//! |---|---|
//! | `blobs/sha256/<2 hex>/<64 hex>` | blob bytes, visible only once verified |
//! | `uploads/<uuid>` | an upload in flight (or abandoned by a crash); renamed into `blobs/` when its digest checks out |
//! | `bundles/<id>.json` | a bundle record: manifest plus the hash of its read token |
//! | `names/<name>.json` | `{"id": ...}`: which bundle a name points to |
//! | `tokens/<sha256 of token>.json` | `{"id": ...}`: which bundle a read token opens |
//! | `sessions/<uuid>.json` | an upload session's record: committed offset, hash midstate, parts |
//! | `sessions/<uuid>.part` | the session's bytes: a multipart upload on a bucket, one file on local disk; renamed into `blobs/` at commit |
//! | `quarantine/<64 hex>` | a blob `fsck --quarantine` found damaged |
//!
//! Both backends use these keys as they are: the local one as paths under
//! its data directory, the `object_store` one as object names.

use ferry_core::{BundleId, BundleName, Digest};
use object_store::path::Path;

/// A group of keys that is listed as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    Blobs,
    Uploads,
    Bundles,
    Names,
    Tokens,
    Quarantine,
    Sessions,
}

impl Prefix {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Blobs => "blobs",
            Self::Uploads => "uploads",
            Self::Bundles => "bundles",
            Self::Names => "names",
            Self::Tokens => "tokens",
            Self::Quarantine => "quarantine",
            Self::Sessions => "sessions",
        }
    }

    pub fn path(self) -> Path {
        Path::from(self.as_str())
    }
}

const BLOBS: &str = "blobs/sha256/";

/// Blob `digest`'s key as text: `blobs/sha256/<2 hex>/<64 hex>`. Built on
/// every blob read, so without going through [`Path`].
pub fn blob_key(digest: &Digest) -> String {
    let mut key = String::with_capacity(BLOBS.len() + 3 + 64);
    key.push_str(BLOBS);
    push_hex(&mut key, &digest.as_bytes()[..1]);
    key.push('/');
    push_hex(&mut key, digest.as_bytes());
    key
}

pub fn blob(digest: &Digest) -> Path {
    Path::from(blob_key(digest))
}

/// The digest a blob key names; `None` for anything else under `blobs/`
/// (a stray object, or a blob filed under the wrong shard).
pub fn digest_of_blob(key: &Path) -> Option<Digest> {
    let mut parts = key.parts();
    let (Some(blobs), Some(algorithm), Some(shard), Some(hex), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let digest = Digest::from_hex(hex.as_ref()).ok()?;
    (blobs.as_ref() == Prefix::Blobs.as_str()
        && algorithm.as_ref() == "sha256"
        && hex.as_ref().starts_with(shard.as_ref())
        && shard.as_ref().len() == 2)
        .then_some(digest)
}

/// A fresh upload's key: `uploads/<uuid>`, the same on every backend.
pub fn new_upload() -> Path {
    Path::from(format!("uploads/{}", uuid::Uuid::new_v4()))
}

/// The id of an upload key (`uploads/<id>`), whatever the id looks like:
/// anything directly under `uploads/` is an upload, including names an
/// earlier version or a crashed staging write left.
pub fn upload_id(key: &Path) -> Option<&str> {
    let mut parts = key.as_ref().splitn(2, '/');
    match (parts.next(), parts.next()) {
        (Some(prefix), Some(id))
            if prefix == Prefix::Uploads.as_str() && !id.is_empty() && !id.contains('/') =>
        {
            Some(id)
        }
        _ => None,
    }
}

/// A fresh upload session's id.
pub fn new_session_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Whether `id` could be a session id (a uuid): checked before it goes
/// into a key.
pub fn is_session_id(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok_and(|u| u.hyphenated().to_string() == id)
}

/// The record of upload session `id`.
pub fn session(id: &str) -> Path {
    Path::from(format!("sessions/{id}.json"))
}

/// Where upload session `id` keeps its bytes until commit.
pub fn session_part(id: &str) -> Path {
    Path::from(format!("sessions/{id}.part"))
}

/// The session id of a session record key.
pub fn session_of_record(key: &Path) -> Option<&str> {
    key.as_ref()
        .strip_prefix("sessions/")?
        .strip_suffix(".json")
        .filter(|id| is_session_id(id))
}

pub fn bundle(id: &BundleId) -> Path {
    Path::from(format!("bundles/{id}.json"))
}

pub fn name(name: &BundleName) -> Path {
    Path::from(format!("names/{name}.json"))
}

/// The token index entry of the token whose sha256 is `token_sha256` (hex).
pub fn token(token_sha256: &str) -> Path {
    Path::from(format!("tokens/{token_sha256}.json"))
}

/// Where `fsck --quarantine` moves damaged blob `digest`.
pub fn quarantine(digest: &Digest) -> Path {
    Path::from_iter([Prefix::Quarantine.as_str(), &digest.hex()])
}

/// An object that need not exist: readiness probes ask for it.
pub fn probe() -> Path {
    Path::from("readyz-probe")
}

/// Appends `bytes` in lowercase hex (on every blob read, so without the
/// per-character iterator `Digest::hex` goes through).
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_key_is_the_sharded_hex_path_and_parses_back() {
        let digest = Digest::of(b"key");
        let hex = digest.hex();
        assert_eq!(
            blob_key(&digest),
            format!("blobs/sha256/{}/{hex}", &hex[..2])
        );
        assert_eq!(digest_of_blob(&blob(&digest)), Some(digest));
    }

    #[test]
    fn strangers_under_blobs_are_not_blobs() {
        let hex = Digest::of(b"x").hex();
        for key in [
            format!("blobs/sha256/zz/{hex}"),
            format!("blobs/sha256/{hex}"),
            format!("blobs/sha256/{}/{hex}/more", &hex[..2]),
            format!("blobs/md5/{}/{hex}", &hex[..2]),
            "blobs/sha256/ab/notes.txt".to_owned(),
            format!("uploads/{hex}"),
        ] {
            assert_eq!(digest_of_blob(&Path::from(key.as_str())), None, "{key}");
        }
    }

    #[test]
    fn upload_keys_name_their_id_and_nothing_else_is_an_upload() {
        let key = new_upload();
        let id = upload_id(&key).unwrap();
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
        // What an earlier version or a crashed staging write left.
        let legacy = Path::parse("uploads/5f0c-stale#1").unwrap();
        assert_eq!(upload_id(&legacy), Some("5f0c-stale#1"));
        assert_eq!(upload_id(&Path::from("uploads/a/b")), None);
        assert_eq!(upload_id(&Path::from("uploadsx/a")), None);
        assert_eq!(upload_id(&Path::from("bundles/a.json")), None);
    }

    #[test]
    fn session_keys_round_trip_and_only_uuids_are_session_ids() {
        let id = new_session_id();
        assert!(is_session_id(&id));
        assert_eq!(session_of_record(&session(&id)), Some(id.as_str()));
        assert_eq!(session_of_record(&session_part(&id)), None);
        for bad in ["../x", "", "A0B1", &id.to_uppercase()] {
            assert!(!is_session_id(bad), "{bad}");
        }
    }

    #[test]
    fn records_and_quarantine_have_their_own_prefixes() {
        let digest = Digest::of(b"q");
        assert_eq!(
            quarantine(&digest).as_ref(),
            format!("quarantine/{}", digest.hex())
        );
        assert_eq!(token("ab12").as_ref(), "tokens/ab12.json");
        let name = BundleName::parse("spark-app").unwrap();
        assert_eq!(self::name(&name).as_ref(), "names/spark-app.json");
    }
}
