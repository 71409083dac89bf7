//! Equality-based Kubernetes label selectors: `k=v[,k=v...]` (`k==v` also
//! accepted), the only form a bundle owner may use.
//!
//! The server checks an owner's selector with [`Selector::parse`] when a
//! bundle is created and matches pods with [`Selector::matches`]; the client
//! builds the selector it sends with [`Selector::new`] and prints it with
//! `Display`. One type and one set of rules, so what the client sends is
//! exactly what the server accepts and later matches.
//!
//! Keys and values follow Kubernetes' label syntax:
//! - key: an optional prefix (a DNS subdomain: dot-separated lowercase
//!   alphanumeric labels with `-` inside, at most 253 characters) and `/`,
//!   then a name of 1-63 characters, alphanumeric at both ends with `-`, `_`
//!   and `.` allowed inside;
//! - value: empty, or 1-63 characters with the same rule as a name.
//!
//! Set-based forms (`k in (a,b)`, `!k`, `k`) and `!=` are refused: an owner
//! selector must name the pods it holds, not everything but some.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest label name, and longest label value.
const MAX_NAME: usize = 63;
/// Longest DNS subdomain prefix of a key.
const MAX_PREFIX: usize = 253;

/// Why a text is not an equality-based label selector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("label selector is empty; give at least one key=value")]
    Empty,
    #[error("label selector term {0:?} is not key=value (only equality terms are accepted)")]
    NotEquality(String),
    #[error("label selector key {key:?} is invalid: {reason}")]
    Key { key: String, reason: &'static str },
    #[error(
        "label selector value {value:?} (of key {key:?}) is invalid: at most 63 characters of A-Z a-z 0-9 - _ ., alphanumeric at both ends"
    )]
    Value { key: String, value: String },
    #[error(
        "label selector gives key {key:?} two values ({first:?} and {second:?}); no pod matches that"
    )]
    Conflict {
        key: String,
        first: String,
        second: String,
    },
}

/// A non-empty set of `key=value` terms, all of which a pod's labels must
/// have.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selector(BTreeMap<String, String>);

impl Selector {
    /// A selector of these terms, each checked.
    pub fn new(terms: BTreeMap<String, String>) -> Result<Self, SelectorError> {
        if terms.is_empty() {
            return Err(SelectorError::Empty);
        }
        for (key, value) in &terms {
            check_term(key, value)?;
        }
        Ok(Self(terms))
    }

    /// A selector of one term.
    pub fn single(key: &str, value: &str) -> Result<Self, SelectorError> {
        Self::new(BTreeMap::from([(key.to_owned(), value.to_owned())]))
    }

    /// Parses `k=v[,k=v...]`; whitespace around keys and values is ignored,
    /// as Kubernetes does.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        if text.trim().is_empty() {
            return Err(SelectorError::Empty);
        }
        let mut terms = BTreeMap::new();
        for term in text.split(',') {
            let (key, value) = term
                .split_once('=')
                .map(|(k, v)| (k.trim(), v.strip_prefix('=').unwrap_or(v).trim()))
                .ok_or_else(|| SelectorError::NotEquality(term.trim().to_owned()))?;
            check_term(key, value)?;
            if let Some(first) = terms.insert(key.to_owned(), value.to_owned())
                && first != value
            {
                return Err(SelectorError::Conflict {
                    key: key.to_owned(),
                    first,
                    second: value.to_owned(),
                });
            }
        }
        Ok(Self(terms))
    }

    /// Whether `labels` has every term. Never true of an empty selector,
    /// which cannot be built: a bundle is never held by every pod of a
    /// namespace by accident.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.0.is_empty() && self.0.iter().all(|(k, v)| labels.get(k) == Some(v))
    }

    /// The terms, by key: the labels a pod must carry to match.
    pub fn terms(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

fn check_term(key: &str, value: &str) -> Result<(), SelectorError> {
    check_key(key).map_err(|reason| SelectorError::Key {
        key: key.to_owned(),
        reason,
    })?;
    if !value.is_empty() && !is_name(value) {
        return Err(SelectorError::Value {
            key: key.to_owned(),
            value: value.to_owned(),
        });
    }
    Ok(())
}

fn check_key(key: &str) -> Result<(), &'static str> {
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            if !is_dns_subdomain(prefix) {
                return Err(
                    "the prefix before '/' must be a DNS subdomain (lowercase a-z 0-9 - ., at most 253 characters)",
                );
            }
            name
        }
        None => key,
    };
    if is_name(name) {
        Ok(())
    } else {
        Err("the name must be 1-63 characters of A-Z a-z 0-9 - _ ., alphanumeric at both ends")
    }
}

/// A label name or non-empty value: 1-63 characters, alphanumeric at both
/// ends, `-`, `_` and `.` inside.
fn is_name(text: &str) -> bool {
    let bytes = text.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            bytes.len() <= MAX_NAME
                && first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// RFC 1123 subdomain, as Kubernetes checks a label key's prefix.
fn is_dns_subdomain(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= MAX_PREFIX
        && text.split('.').all(|label| {
            let bytes = label.as_bytes();
            match (bytes.first(), bytes.last()) {
                (Some(first), Some(last)) => {
                    bytes.len() <= MAX_NAME
                        && (first.is_ascii_lowercase() || first.is_ascii_digit())
                        && (last.is_ascii_lowercase() || last.is_ascii_digit())
                        && bytes
                            .iter()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
                }
                _ => false,
            }
        })
}

impl FromStr for Selector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The canonical form: terms sorted by key, `k=v` joined by `,`, no spaces.
impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (key, value)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{key}={value}")?;
        }
        Ok(())
    }
}

impl Serialize for Selector {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn every_term_must_match_and_spacing_and_double_equals_are_accepted() {
        let s = Selector::parse(" app = spark, spark-app-selector==x1").unwrap();
        assert_eq!(s.to_string(), "app=spark,spark-app-selector=x1");
        assert!(s.matches(&labels(&[
            ("app", "spark"),
            ("spark-app-selector", "x1"),
            ("extra", "y")
        ])));
        assert!(!s.matches(&labels(&[("app", "spark")])));
        assert!(!s.matches(&labels(&[("app", "spark"), ("spark-app-selector", "x2")])));
        let empty_value = Selector::parse("ferry.dev/submission=").unwrap();
        assert!(empty_value.matches(&labels(&[("ferry.dev/submission", "")])));
        assert!(!empty_value.matches(&labels(&[])));
    }

    #[test]
    fn non_equality_and_malformed_selectors_are_refused_with_a_reason() {
        assert_eq!(Selector::parse(""), Err(SelectorError::Empty));
        assert_eq!(Selector::parse("  "), Err(SelectorError::Empty));
        for not_equality in ["app", "!app", "app in (a,b)", "a=b,"] {
            assert!(
                matches!(
                    Selector::parse(not_equality),
                    Err(SelectorError::NotEquality(_))
                ),
                "{not_equality}"
            );
        }
        for bad_key in [
            "app!=x",
            "=x",
            "-app=x",
            "app-=x",
            "a b=x",
            "Ferry.dev/x=y",
            "ferry..dev/x=y",
            "/x=y",
            "ferry.dev/=y",
            "a/b/c=y",
        ] {
            assert!(
                matches!(Selector::parse(bad_key), Err(SelectorError::Key { .. })),
                "{bad_key}"
            );
        }
        let long_name = format!("{}=x", "a".repeat(64));
        assert!(matches!(
            Selector::parse(&long_name),
            Err(SelectorError::Key { .. })
        ));
        for bad_value in ["app=a b", "app=-a", "app=a.", "app=é"] {
            assert!(
                matches!(Selector::parse(bad_value), Err(SelectorError::Value { .. })),
                "{bad_value}"
            );
        }
        assert!(matches!(
            Selector::parse(&format!("app={}", "v".repeat(64))),
            Err(SelectorError::Value { .. })
        ));
        assert!(matches!(
            Selector::parse("app=a,app=b"),
            Err(SelectorError::Conflict { .. })
        ));
        assert_eq!(
            Selector::parse("app=a,app=a").unwrap(),
            Selector::single("app", "a").unwrap()
        );
    }

    #[test]
    fn built_selectors_are_checked_like_parsed_ones() {
        assert!(Selector::single("ferry.dev/submission", "s-0123abcd").is_ok());
        assert!(matches!(
            Selector::single("ferry.dev/submission", "a,b=c"),
            Err(SelectorError::Value { .. })
        ));
        assert_eq!(Selector::new(BTreeMap::new()), Err(SelectorError::Empty));
    }

    #[test]
    fn serde_uses_the_canonical_text() {
        let s = Selector::parse("b=2, a=1").unwrap();
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"a=1,b=2\"");
        let back: Selector = serde_json::from_str("\"a==1,b=2\"").unwrap();
        assert_eq!(back, s);
        assert!(serde_json::from_str::<Selector>("\"a!=1\"").is_err());
    }

    fn name() -> impl Strategy<Value = String> {
        "[A-Za-z0-9]([A-Za-z0-9._-]{0,20}[A-Za-z0-9])?"
    }

    fn key() -> impl Strategy<Value = String> {
        (
            proptest::option::of("[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\\.[a-z0-9]{1,8}){0,3}"),
            name(),
        )
            .prop_map(|(prefix, name)| match prefix {
                Some(prefix) => format!("{prefix}/{name}"),
                None => name,
            })
    }

    fn selector() -> impl Strategy<Value = Selector> {
        proptest::collection::btree_map(key(), prop_oneof![Just(String::new()), name()], 1..6)
            .prop_map(|terms| Selector::new(terms).expect("generated terms are valid"))
    }

    proptest! {
        #[test]
        fn display_parses_back_to_the_same_selector(s in selector()) {
            prop_assert_eq!(Selector::parse(&s.to_string()).unwrap(), s);
        }

        #[test]
        fn a_selector_matches_its_own_terms(s in selector()) {
            prop_assert!(s.matches(s.terms()));
        }

        #[test]
        fn any_accepted_text_prints_canonically(text in "[a-z=,. /!-]{0,30}") {
            if let Ok(s) = Selector::parse(&text) {
                let canonical = s.to_string();
                prop_assert_eq!(Selector::parse(&canonical).unwrap(), s.clone());
                prop_assert_eq!(Selector::parse(&canonical).unwrap().to_string(), canonical);
            }
        }
    }
}
