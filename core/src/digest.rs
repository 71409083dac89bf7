//! Content digests: `sha256:<64 lowercase hex>`, the only name a blob has.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Digest as _;

/// The textual prefix of every digest ferry prints or accepts.
pub const SHA256_PREFIX: &str = "sha256:";

/// A sha256 content digest.
///
/// Its only text form is `sha256:` followed by 64 lowercase hex digits;
/// anything else (upper case, other algorithms, wrong length) is refused so
/// that one blob never has two names.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

/// Why a string is not a digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("digest must start with \"sha256:\", got {0:?}")]
    MissingPrefix(String),
    #[error("digest must have 64 hex digits after \"sha256:\", got {0}")]
    WrongLength(usize),
    #[error("digest must be lowercase hex (0-9, a-f)")]
    NotLowercaseHex,
}

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(sha2::Sha256::digest(bytes).into())
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64 lowercase hex digits, without the `sha256:` prefix.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses the bare 64-hex form (as in `#sha256=<hex>` pins).
    pub fn from_hex(hex_digits: &str) -> Result<Self, DigestError> {
        if hex_digits.len() != 64 {
            return Err(DigestError::WrongLength(hex_digits.len()));
        }
        if !hex_digits
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(DigestError::NotLowercaseHex);
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_digits, &mut out).map_err(|_| DigestError::NotLowercaseHex)?;
        Ok(Self(out))
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex_digits = s
            .strip_prefix(SHA256_PREFIX)
            .ok_or_else(|| DigestError::MissingPrefix(s.chars().take(80).collect()))?;
        Self::from_hex(hex_digits)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SHA256_PREFIX}{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Incremental sha256 that also counts the bytes it has seen.
#[derive(Clone, Default)]
pub struct Sha256Hasher {
    inner: sha2::Sha256,
    len: u64,
}

impl Sha256Hasher {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.inner.update(bytes);
        self.len += bytes.len() as u64;
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(self) -> Digest {
        Digest(self.inner.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn digest_of_empty_input_matches_the_known_value() {
        assert_eq!(Digest::of(b"").to_string(), EMPTY);
        assert_eq!(EMPTY.parse::<Digest>().unwrap(), Digest::of(b""));
    }

    #[test]
    fn uppercase_hex_is_refused() {
        let upper = EMPTY.to_uppercase().replace("SHA256:", "sha256:");
        assert_eq!(upper.parse::<Digest>(), Err(DigestError::NotLowercaseHex));
    }

    #[test]
    fn other_algorithms_and_bare_hex_are_refused() {
        assert!(matches!(
            "sha512:00".parse::<Digest>(),
            Err(DigestError::MissingPrefix(_))
        ));
        assert!(matches!(
            EMPTY[7..].parse::<Digest>(),
            Err(DigestError::MissingPrefix(_))
        ));
        assert_eq!(
            "sha256:abc".parse::<Digest>(),
            Err(DigestError::WrongLength(3))
        );
    }

    #[test]
    fn hasher_matches_one_shot_digest_across_chunkings() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for chunk in [1, 7, 4096, 10_000] {
            let mut h = Sha256Hasher::new();
            data.chunks(chunk).for_each(|c| h.update(c));
            assert_eq!(h.len(), data.len() as u64);
            assert_eq!(h.finish(), Digest::of(&data));
        }
    }

    #[test]
    fn serde_round_trip_uses_the_text_form() {
        let d = Digest::of(b"x");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{d}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        assert!(serde_json::from_str::<Digest>("\"sha256:zz\"").is_err());
    }

    proptest! {
        #[test]
        fn any_digest_round_trips_through_text(bytes in proptest::array::uniform32(any::<u8>())) {
            let d = Digest::from_bytes(bytes);
            prop_assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        }

        #[test]
        fn parsing_arbitrary_text_never_panics(s in ".{0,100}") {
            let _ = s.parse::<Digest>();
        }

        #[test]
        fn only_exact_form_is_accepted(s in "sha256:[0-9a-fA-F]{60,68}") {
            let ok = s.len() == 71 && s[7..].bytes().all(|b| !b.is_ascii_uppercase());
            prop_assert_eq!(s.parse::<Digest>().is_ok(), ok);
        }
    }
}
