//! Bundle lifetimes: a duration or `never`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How long a bundle lives after it is created.
///
/// On the wire (`ttl_seconds` in a bundle request) it is a whole number of
/// seconds or the string `"never"`; on command lines it is a humantime
/// duration (`90m`, `7d`) or `never`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    Never,
    After(Duration),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid TTL {0:?}: use a duration such as 30m, 12h or 7d, or \"never\"")]
pub struct TtlError(String);

impl Ttl {
    pub fn as_seconds(&self) -> Option<u64> {
        match self {
            Self::Never => None,
            Self::After(d) => Some(d.as_secs()),
        }
    }
}

impl FromStr for Ttl {
    type Err = TtlError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("never") {
            return Ok(Self::Never);
        }
        match humantime::parse_duration(s) {
            Ok(d) if d.as_secs() > 0 => Ok(Self::After(Duration::from_secs(d.as_secs()))),
            _ => Err(TtlError(s.to_owned())),
        }
    }
}

impl fmt::Display for Ttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Never => f.write_str("never"),
            Self::After(d) => write!(f, "{}", humantime::format_duration(*d)),
        }
    }
}

impl Serialize for Ttl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Never => serializer.serialize_str("never"),
            Self::After(d) => serializer.serialize_u64(d.as_secs()),
        }
    }
}

impl<'de> Deserialize<'de> for Ttl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Seconds(u64),
            Text(String),
        }
        match Wire::deserialize(deserializer)? {
            Wire::Seconds(0) => Err(serde::de::Error::custom("ttl_seconds must be positive")),
            Wire::Seconds(s) => Ok(Self::After(Duration::from_secs(s))),
            Wire::Text(t) if t == "never" => Ok(Self::Never),
            Wire::Text(t) => Err(serde::de::Error::custom(format!(
                "ttl_seconds must be a positive number or \"never\", got {t:?}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations_and_never() {
        assert_eq!("never".parse::<Ttl>().unwrap(), Ttl::Never);
        assert_eq!("2h".parse::<Ttl>().unwrap().as_seconds(), Some(7200));
        assert_eq!("7d".parse::<Ttl>().unwrap().as_seconds(), Some(604_800));
        assert!("0s".parse::<Ttl>().is_err());
        assert!("soon".parse::<Ttl>().is_err());
    }

    #[test]
    fn wire_form_is_seconds_or_never() {
        assert_eq!(serde_json::to_string(&Ttl::Never).unwrap(), "\"never\"");
        assert_eq!(
            serde_json::from_str::<Ttl>("60").unwrap().as_seconds(),
            Some(60)
        );
        assert!(serde_json::from_str::<Ttl>("0").is_err());
        assert!(serde_json::from_str::<Ttl>("\"1h\"").is_err());
    }
}
