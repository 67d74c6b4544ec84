//! Signals: facts machines report ("staging/api is green", "the error rate is 0.002"), which
//! rules read to decide without a person. A signal holds one value at a time and remembers since
//! when it has held it; one with a ttl that was not refreshed in time is unknown.

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use serde::Serialize;

use super::IdError;

/// A signal's name: 1-100 of lowercase letters, digits and `_ - . / :`, e.g. `staging/api`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(transparent)]
#[schema(pattern = r"^[a-z0-9_./:-]{1,100}$", example = "staging/api")]
pub struct SignalName(String);

impl SignalName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SignalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for SignalName {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, IdError> {
        let ok = (1..=100).contains(&s.len())
            && s.chars().all(|c| {
                c.is_ascii_lowercase()
                    || c.is_ascii_digit()
                    || matches!(c, '_' | '-' | '.' | '/' | ':')
            });
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(super::ids::id_error(
                "signal name",
                s,
                "1-100 of lowercase letters, digits and _ - . / : (e.g. staging/api)",
            ))
        }
    }
}

impl<'de> serde::Deserialize<'de> for SignalName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A signal as stored: its value, since when it has had it, and who set it last.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Signal {
    pub name: SignalName,
    pub value: serde_json::Value,
    /// When it took this value (a refresh with the same value keeps it).
    pub since: Timestamp,
    /// When it was last set, changed or not.
    pub updated_at: Timestamp,
    pub set_by: String,
    /// When it stops counting unless refreshed (`ttl` after the last set).
    pub expires_at: Option<Timestamp>,
}

impl Signal {
    /// Known at `now`: set, and not past its ttl.
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }

    /// The signal after someone sets `value` at `now`: `since` moves only when the value
    /// changes. Returns it with whether the value changed.
    pub fn set(
        previous: Option<&Signal>,
        name: SignalName,
        value: serde_json::Value,
        ttl_ms: Option<i64>,
        by: &str,
        now: Timestamp,
    ) -> (Signal, bool) {
        // An expired signal coming back, even with its old value, starts afresh.
        let kept = previous.filter(|p| p.value == value && p.is_live(now));
        let since = kept.map_or(now, |p| p.since);
        let expires_at = ttl_ms.and_then(|ms| {
            Timestamp::from_millisecond(now.as_millisecond().saturating_add(ms)).ok()
        });
        let signal = Signal {
            name,
            value,
            since,
            updated_at: now,
            set_by: by.to_owned(),
            expires_at,
        };
        (signal, kept.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn names_are_checked() {
        assert!("staging/api".parse::<SignalName>().is_ok());
        assert!("error_rate/api.v2:eu".parse::<SignalName>().is_ok());
        for bad in ["", "Staging", "a b", &"x".repeat(101)] {
            assert!(bad.parse::<SignalName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn since_moves_only_with_the_value_and_a_lapsed_ttl_starts_afresh() {
        let name: SignalName = "staging/api".parse().unwrap();
        let (first, changed) = Signal::set(
            None,
            name.clone(),
            json!("green"),
            Some(60_000),
            "ci",
            at(100),
        );
        assert!(changed);
        let (same, changed) = Signal::set(
            Some(&first),
            name.clone(),
            json!("green"),
            Some(60_000),
            "ci",
            at(130),
        );
        assert!(!changed);
        assert_eq!(same.since, at(100));
        assert_eq!(same.expires_at, Some(at(190)));
        let (red, changed) =
            Signal::set(Some(&same), name.clone(), json!("red"), None, "ci", at(140));
        assert!(changed);
        assert_eq!((red.since, red.expires_at), (at(140), None));
        assert!(!same.is_live(at(191)));
        let (back, changed) = Signal::set(
            Some(&same),
            name,
            json!("green"),
            Some(60_000),
            "ci",
            at(200),
        );
        assert!(
            changed && back.since == at(200),
            "past its ttl it is new again"
        );
    }
}
