//! What a task is given: `-e/--env` entries, `-l/--label` maps and the
//! words of `--args`.

use std::collections::HashMap;

use super::invalid;

/// `-l/--label KEY[=VALUE]` values as a map.
pub fn parse_labels(values: &[String]) -> anyhow::Result<HashMap<String, String>> {
    values
        .iter()
        .map(|v| {
            let (k, val) = v.split_once('=').unwrap_or((v.as_str(), ""));
            if k.trim().is_empty() {
                return Err(invalid(v, "-l, --label", "the key must not be empty"));
            }
            Ok((k.to_string(), val.to_string()))
        })
        .collect()
}

/// `-e/--env KEY=VALUE`; a bare `KEY` takes the value from this environment
/// when set, as Docker does.
pub fn parse_env(values: &[String]) -> anyhow::Result<Vec<String>> {
    parse_env_flag(values, "-e, --env")
}

/// [`parse_env`] for another flag (`--env-add`), named in errors.
pub fn parse_env_flag(values: &[String], flag: &str) -> anyhow::Result<Vec<String>> {
    values
        .iter()
        .map(|v| {
            let key = env_key(v);
            if key.is_empty() || key.contains(char::is_whitespace) {
                return Err(invalid(v, flag, "expected KEY=VALUE"));
            }
            if v.contains('=') {
                Ok(v.clone())
            } else {
                Ok(match std::env::var(v) {
                    Ok(val) => format!("{v}={val}"),
                    Err(_) => v.clone(),
                })
            }
        })
        .collect()
}

/// The `KEY` of a `KEY=VALUE` environment entry (the whole entry when bare).
pub fn env_key(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(k, _)| k)
}

/// `service update --args "..."`: splits as a POSIX shell would, without
/// expansions: whitespace separates words, single quotes keep everything,
/// double quotes keep all but `\"` and `\\`, a backslash outside quotes escapes.
pub fn split_args(value: &str, flag: &str) -> anyhow::Result<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(invalid(value, flag, "unterminated single quote")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(invalid(value, flag, "unterminated double quote")),
                        },
                        Some(c) => word.push(c),
                        None => return Err(invalid(value, flag, "unterminated double quote")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => word.push(c),
                    None => return Err(invalid(value, flag, "trailing backslash")),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}
