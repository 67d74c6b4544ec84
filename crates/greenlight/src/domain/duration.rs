use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A duration as people write it in config and requests: `90` (seconds), `"90s"`, `"30m"`,
/// `"1h30m"`, `"2d"`. Parsed once at the edge; zero and negative durations are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DurationSpec(Duration);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid duration {input:?}: {why} (use seconds or a form like \"90s\", \"30m\", \"1h30m\", \"2d\")"
)]
pub struct ParseDurationError {
    input: String,
    why: &'static str,
}

impl DurationSpec {
    /// Longest duration accepted anywhere (a year): keeps timestamps far from overflow.
    pub const MAX: Duration = Duration::from_secs(366 * 24 * 3600);

    pub fn from_secs(secs: u64) -> Result<Self, ParseDurationError> {
        Self::new(Duration::from_secs(secs), &secs.to_string())
    }

    fn new(d: Duration, input: &str) -> Result<Self, ParseDurationError> {
        let err = |why| ParseDurationError {
            input: input.to_owned(),
            why,
        };
        if d.is_zero() {
            return Err(err("must be greater than zero"));
        }
        if d > Self::MAX {
            return Err(err("must be at most 366 days"));
        }
        Ok(Self(d))
    }

    pub fn as_duration(self) -> Duration {
        self.0
    }

    pub fn as_millis(self) -> i64 {
        i64::try_from(self.0.as_millis()).unwrap_or(i64::MAX)
    }
}

impl FromStr for DurationSpec {
    type Err = ParseDurationError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let s = input.trim();
        let err = |why| ParseDurationError {
            input: input.to_owned(),
            why,
        };
        if s.is_empty() {
            return Err(err("empty"));
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            let secs: u64 = s.parse().map_err(|_| err("number too large"))?;
            return Self::new(Duration::from_secs(secs), input);
        }
        let mut total: u64 = 0;
        let mut digits = String::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            if c.is_whitespace() {
                continue;
            }
            let mut unit = c.to_string();
            if c == 'm' && chars.peek() == Some(&'s') {
                chars.next();
                unit.push('s');
            }
            if digits.is_empty() {
                return Err(err("a unit needs a number before it"));
            }
            let n: u64 = digits.parse().map_err(|_| err("number too large"))?;
            digits.clear();
            let ms_per_unit: u64 = match unit.as_str() {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                "w" => 7 * 86_400_000,
                _ => return Err(err("unknown unit")),
            };
            total = n
                .checked_mul(ms_per_unit)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| err("number too large"))?;
        }
        if !digits.is_empty() {
            return Err(err("a number needs a unit after it"));
        }
        Self::new(Duration::from_millis(total), input)
    }
}

impl fmt::Display for DurationSpec {
    /// Compact, round-trippable form: `1h30m`, `45s`, `2d`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX);
        for (unit, size) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
            ("ms", 1),
        ] {
            if ms >= size {
                write!(f, "{}{unit}", ms / size)?;
                ms %= size;
            }
        }
        Ok(())
    }
}

impl<'de> serde::Deserialize<'de> for DurationSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) => Self::from_secs(s),
            Raw::Text(t) => t.parse(),
        }
        .map_err(serde::de::Error::custom)
    }
}

/// In the OpenAPI document: whole seconds, or the text form (`"30m"`).
impl utoipa::PartialSchema for DurationSpec {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1))
                    .description(Some("seconds")),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .examples(["30m"])
                    .description(Some("a duration such as 90s, 30m, 1h30m, 2d")),
            )
            .into()
    }
}

impl utoipa::ToSchema for DurationSpec {}

impl serde::Serialize for DurationSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_people_write() {
        let secs = |s: &str| s.parse::<DurationSpec>().map(|d| d.as_duration().as_secs());
        assert_eq!(secs("90"), Ok(90));
        assert_eq!(secs("90s"), Ok(90));
        assert_eq!(secs("30m"), Ok(1800));
        assert_eq!(secs("1h30m"), Ok(5400));
        assert_eq!(secs("1h 30m"), Ok(5400));
        assert_eq!(secs("2d"), Ok(172_800));
        assert_eq!(
            "1500ms".parse::<DurationSpec>().map(|d| d.as_millis()),
            Ok(1500)
        );
    }

    #[test]
    fn refuses_nonsense() {
        for bad in [
            "",
            "0",
            "0s",
            "m",
            "10x",
            "-5m",
            "1.5h",
            "367d",
            "5m3",
            "99999999999999999999",
        ] {
            assert!(bad.parse::<DurationSpec>().is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn displays_compactly_and_round_trips() {
        for s in ["1h30m", "45s", "2d", "1d1h1m1s", "250ms"] {
            let d: DurationSpec = s.parse().unwrap();
            assert_eq!(d.to_string(), s);
        }
    }
}
