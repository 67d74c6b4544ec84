//! What `greenlight check` (and every start) reports: each problem of a config file in one
//! pass, with its file, line and column, sorted by line. serde stops at the first error, so the
//! reader here takes the offending key out (or fills a missing one in) and reads again until
//! the file reads, collecting every error on the way.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One thing wrong with the configuration, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `greenlight.toml:12:5`, `greenlight.toml`, or the environment variable it is about.
    pub place: String,
    /// 1-based; 0 for problems that are not in the file (they come first).
    pub line: usize,
    pub column: usize,
    pub message: String,
    /// The line of the file, with a caret under the spot.
    pub excerpt: Option<String>,
}

impl Problem {
    /// A problem outside any file (an environment variable, a missing setting).
    pub fn general(place: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            place: place.into(),
            line: 0,
            column: 0,
            message: message.into(),
            excerpt: None,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: error: {}", self.place, self.message)?;
        if let Some(excerpt) = &self.excerpt {
            write!(f, "\n{excerpt}")?;
        }
        Ok(())
    }
}

/// Sorts problems the way a reader fixes them: what is outside the file, then top to bottom.
pub fn sort(problems: &mut Vec<Problem>) {
    problems.sort_by(|a, b| (a.line, a.column, &a.message).cmp(&(b.line, b.column, &b.message)));
    problems.dedup();
}

/// A config file's text, for placing problems in it.
pub struct Source<'a> {
    pub shown: String,
    pub text: &'a str,
}

impl Source<'_> {
    /// A problem at byte `offset` of the file (or of the file as a whole).
    pub fn at(&self, offset: Option<usize>, message: impl Into<String>) -> Problem {
        let Some(offset) = offset else {
            return Problem::general(self.shown.clone(), message);
        };
        let (line, column) = line_col(self.text, offset);
        let source_line = self.text.lines().nth(line - 1).unwrap_or_default();
        Problem {
            place: format!("{}:{line}:{column}", self.shown),
            line,
            column,
            message: message.into(),
            excerpt: Some(format!(
                "{line:>5} | {source_line}\n      | {}^",
                " ".repeat(column - 1)
            )),
        }
    }

    pub fn toml(&self, e: &toml::de::Error) -> Problem {
        self.at(e.span().map(|s| s.start), e.message().trim_end())
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Values that stand in for a missing required key, so that the rest of its table is still
/// checked. Each is valid for its key, so it causes no error of its own.
pub const MISSING_NAME: &str = "missing-name";

fn placeholder(field: &str) -> Option<&'static str> {
    Some(match field {
        "name" => MISSING_NAME,
        "channel" => "#missing",
        "url" => "https://missing.invalid/",
        "when" => "false",
        "decision" => "approve",
        _ => return None,
    })
}

/// Deserializes `value` as `T`, reporting every error rather than the first: after each error
/// the offending key is removed (or a missing required key filled in) and the rest read again.
/// Returns `T` once it reads, with every error met on the way; `None` if it never does.
pub fn lenient<T: DeserializeOwned>(
    mut value: Spanned<DeValue<'_>>,
) -> (Option<T>, Vec<toml::de::Error>) {
    let mut errors: Vec<toml::de::Error> = Vec::new();
    for _ in 0..256 {
        match T::deserialize(toml::de::ValueDeserializer::from(value.clone())) {
            Ok(v) => return (Some(v), errors),
            Err(e) => {
                let repaired = e
                    .span()
                    .is_some_and(|span| repair(&mut value, span, e.message()));
                if !errors
                    .iter()
                    .any(|seen| seen.message() == e.message() && seen.span() == e.span())
                {
                    errors.push(e);
                }
                if !repaired {
                    break;
                }
            }
        }
    }
    (None, errors)
}

fn covers(span: &Range<usize>, at: usize) -> bool {
    span.contains(&at) || span.start == at
}

/// Takes out (or fills in) what the error at `span` is about; false when it cannot.
fn repair(value: &mut Spanned<DeValue<'_>>, span: Range<usize>, message: &str) -> bool {
    let DeValue::Table(table) = value.get_mut() else {
        return false;
    };
    match message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
    {
        Some(field) => fill_missing(table, span.start, field),
        None => remove_at(table, span.start),
    }
}

/// The key (at any depth) whose key or value holds `at`, removed. Nested tables are searched
/// first (their spans cover only their headers), so only the innermost offending key goes.
fn remove_at(table: &mut DeTable<'_>, at: usize) -> bool {
    for (_, v) in table.iter_mut() {
        let removed = match v.get_mut() {
            DeValue::Table(inner) => remove_at(inner, at),
            DeValue::Array(items) => items.iter_mut().any(|item| match item.get_mut() {
                DeValue::Table(inner) => remove_at(inner, at),
                _ => false,
            }),
            _ => false,
        };
        if removed {
            return true;
        }
    }
    let Some(key) = table
        .iter()
        .find(|(k, v)| covers(&k.span(), at) || covers(&v.span(), at))
        .map(|(k, _)| k.get_ref().to_string())
    else {
        return false;
    };
    // A required key keeps a valid stand-in, so that it is not reported missing as well.
    if let (Some(stand_in), Some(v)) = (placeholder(&key), table.get_mut(key.as_str()))
        && v.get_ref().as_str() != Some(stand_in)
    {
        *v.get_mut() = DeValue::String(Cow::Borrowed(stand_in));
        return true;
    }
    table.remove(key.as_str());
    true
}

/// Puts a stand-in for the missing `field` into the innermost table around `at`, or removes
/// that table from its array when the field has no stand-in.
fn fill_missing<'i>(table: &mut DeTable<'i>, at: usize, field: &str) -> bool {
    for (_, v) in table.iter_mut() {
        let span = v.span();
        match v.get_mut() {
            DeValue::Table(inner) if covers(&span, at) => return fill_missing(inner, at, field),
            DeValue::Array(items) => {
                let Some(i) = items
                    .iter()
                    .position(|item| item.get_ref().is_table() && covers(&item.span(), at))
                else {
                    continue;
                };
                if let Some(DeValue::Table(inner)) = items.get_mut(i).map(|item| item.get_mut())
                    && (has_deeper(inner, at) || placeholder(field).is_some())
                {
                    return fill_missing(inner, at, field);
                }
                let kept: toml::de::DeArray<'i> =
                    std::mem::replace(items, toml::de::DeArray::new())
                        .into_iter()
                        .enumerate()
                        .filter(|(j, _)| *j != i)
                        .map(|(_, item)| item)
                        .collect();
                *items = kept;
                return true;
            }
            _ => {}
        }
    }
    match placeholder(field) {
        Some(stand_in) if table.get(field).is_none() => {
            let span = at..at;
            table.insert(
                Spanned::new(span.clone(), Cow::Owned(field.to_owned())),
                Spanned::new(span, DeValue::String(Cow::Borrowed(stand_in))),
            );
            true
        }
        _ => false,
    }
}

/// Whether a nested table inside `table` holds `at`.
fn has_deeper(table: &DeTable<'_>, at: usize) -> bool {
    table.values().any(|v| match v.get_ref() {
        DeValue::Table(_) => covers(&v.span(), at),
        DeValue::Array(items) => items
            .iter()
            .any(|i| i.get_ref().is_table() && covers(&i.span(), at)),
        _ => false,
    })
}

/// Where each key of a table starts, to place problems about a value the file gave.
pub fn key_offsets(value: Option<&Spanned<DeValue<'_>>>) -> KeyOffsets {
    let mut keys = Vec::new();
    let start = value.map(|v| v.span().start);
    if let Some(DeValue::Table(t)) = value.map(|v| v.get_ref()) {
        for (k, _) in t.iter() {
            keys.push((k.get_ref().to_string(), k.span().start));
        }
    }
    KeyOffsets { start, keys }
}

/// The places of a table's keys (see `key_offsets`).
#[derive(Debug, Clone, Default)]
pub struct KeyOffsets {
    pub start: Option<usize>,
    keys: Vec<(String, usize)>,
}

impl KeyOffsets {
    /// Where `key` is written, or else where its table starts.
    pub fn of(&self, key: &str) -> Option<usize> {
        self.keys
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, at)| *at)
            .or(self.start)
    }
}

/// The `i`th element of the array under `key` in a table value.
pub fn element<'a, 'i>(
    table: Option<&'a Spanned<DeValue<'i>>>,
    key: &str,
    i: usize,
) -> Option<&'a Spanned<DeValue<'i>>> {
    table?
        .get_ref()
        .as_table()?
        .get(key)?
        .get_ref()
        .as_array()?
        .get(i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        name: String,
        size: Option<u32>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        title: Option<String>,
        #[serde(default)]
        inner: Vec<Inner>,
    }

    fn read(text: &str) -> (Option<Outer>, Vec<String>) {
        let root = DeTable::parse(text).unwrap();
        let span = root.span();
        let value = Spanned::new(span, DeValue::Table(root.into_inner()));
        let (v, errors) = lenient::<Outer>(value);
        let src = Source {
            shown: "f.toml".into(),
            text,
        };
        (
            v,
            errors
                .iter()
                .map(|e| {
                    let p = src.toml(e);
                    format!("{}: {}", p.place, p.message)
                })
                .collect(),
        )
    }

    #[test]
    fn every_error_is_reported_and_the_rest_still_reads() {
        let (v, errors) = read(
            "title = \"t\"\ncolour = 1\n[[inner]]\nname = \"a\"\nsize = \"big\"\nshape = 2\n[[inner]]\nsize = 3\n",
        );
        assert_eq!(errors.len(), 4, "{errors:#?}");
        assert!(errors[0].starts_with("f.toml:2:1: unknown field `colour`"));
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("f.toml:5:8: invalid type"))
        );
        assert!(errors.iter().any(|e| e.contains("unknown field `shape`")));
        assert!(errors.iter().any(|e| e.contains("missing field `name`")));
        let v = v.expect("reads once repaired");
        assert_eq!(v.inner.len(), 2, "the nameless table got a stand-in name");
        assert_eq!(v.inner[1].name, MISSING_NAME);
    }

    #[test]
    fn places_count_characters_not_bytes() {
        assert_eq!(line_col("a\nxé=y", 5), (2, 3));
        assert_eq!(line_col("a\nxé=y", 4), (2, 2), "inside a character");
        assert_eq!(line_col("", 10), (1, 1));
    }
}
