//! `-f/--filter KEY=VALUE` of `service ls` and `node ls`, parsed as Docker's
//! CLI parses them and matched as Docker's daemon matches them: `id` and
//! `name` are prefixes, `label` is a key or `key=value`; values of one key
//! are alternatives, different keys must all match.

use std::collections::HashMap;

use anyhow::bail;

use crate::opts;

#[cfg(test)]
mod tests;

/// The most `-f` values one command takes.
const MAX_FILTERS: usize = 64;
/// The longest `-f` value, in bytes.
const MAX_FILTER_LEN: usize = 1024;

/// Parsed `-f/--filter` values, in the order given.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Lower-cased key, trimmed value.
    pairs: Vec<(String, String)>,
}

// === impl ListFilter ===

impl ListFilter {
    /// Parses every `-f` value; `accepted` are the keys the command knows.
    /// A value without `=` is a flag error (Docker's exit 125); an unknown key
    /// is the daemon's `invalid filter 'KEY'` (exit 1).
    pub fn parse(values: &[String], accepted: &[&str]) -> anyhow::Result<ListFilter> {
        if values.len() > MAX_FILTERS {
            bail!(
                "too many -f/--filter values ({}); give at most {MAX_FILTERS}",
                values.len()
            );
        }
        let mut pairs = Vec::with_capacity(values.len());
        for value in values {
            if value.len() > MAX_FILTER_LEN {
                return Err(opts::invalid(
                    &value.chars().take(32).collect::<String>(),
                    "-f, --filter",
                    format!("a filter is at most {MAX_FILTER_LEN} bytes"),
                ));
            }
            if value.is_empty() {
                continue;
            }
            let Some((key, val)) = value.split_once('=') else {
                return Err(opts::invalid(
                    value,
                    "-f, --filter",
                    "bad format of filter (expected name=value)",
                ));
            };
            let key = key.trim().to_lowercase();
            if !accepted.contains(&key.as_str()) {
                bail!(
                    "Error response from daemon: invalid filter '{}' (this command filters on {})",
                    key.escape_debug(),
                    accepted.join(", ")
                );
            }
            pairs.push((key, val.trim().to_string()));
        }
        Ok(ListFilter { pairs })
    }

    /// The values given for `key`.
    pub fn values<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// True if no value was given for `key`, or `candidate` satisfies one.
    pub fn any(&self, key: &str, candidate: impl Fn(&str) -> bool) -> bool {
        let mut values = self.values(key).peekable();
        values.peek().is_none() || values.any(candidate)
    }

    /// `id`/`name`-style: `candidate` starts with one of the values.
    pub fn prefix(&self, key: &str, candidate: &str) -> bool {
        self.any(key, |v| candidate.starts_with(v))
    }

    /// `label`-style: every value (`key` or `key=value`) is in `labels`, as
    /// Docker's label filters require all of them.
    pub fn labels(&self, key: &str, labels: &HashMap<String, String>) -> bool {
        self.values(key).all(|want| match want.split_once('=') {
            Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
            None => labels.contains_key(want),
        })
    }

    /// Checks every value of `key` with `parse`, with the daemon's wording
    /// for one it does not take.
    pub fn check_values<T>(
        &self,
        key: &str,
        what: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> anyhow::Result<()> {
        for v in self.values(key) {
            if !v.is_empty() && parse(v).is_none() {
                bail!(
                    "Error response from daemon: Invalid {what} filter: '{}'",
                    v.escape_debug()
                );
            }
        }
        Ok(())
    }
}
