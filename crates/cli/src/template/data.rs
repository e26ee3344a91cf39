//! The data a template sees. Inspect objects are Docker-shaped JSON; in a
//! template their durations are Go durations and their times Go times, as in
//! Docker's typed structs, and `json` turns them back into JSON numbers and
//! RFC 3339 strings.

use std::collections::{BTreeMap, HashMap};

use gtmpl::Value;
use serde_json::Value as Json;

/// Docker's duration fields (nanoseconds in JSON, `time.Duration` in Go).
const DURATION_KEYS: [&str; 7] = [
    "Delay",
    "Window",
    "Monitor",
    "StopGracePeriod",
    "Interval",
    "Timeout",
    "StartPeriod",
];

/// Docker's time fields (RFC 3339 in JSON, `time.Time` in Go).
const TIME_KEYS: [&str; 6] = [
    "CreatedAt",
    "UpdatedAt",
    "Timestamp",
    "StartedAt",
    "CompletedAt",
    "LastExecution",
];

/// User maps whose keys are not Docker's field names.
const USER_MAPS: [&str; 1] = ["Labels"];

/// Template data for an inspect object.
pub fn from_json(v: &Json) -> Value {
    convert(v, None)
}

fn convert(v: &Json, key: Option<&str>) -> Value {
    match v {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => {
            if let (Some(k), Some(ns)) = (key, n.as_u64()) {
                if DURATION_KEYS.contains(&k) {
                    return Value::String(go_duration_ns(ns));
                }
            }
            if let Some(u) = n.as_u64() {
                Value::from(u)
            } else if let Some(i) = n.as_i64() {
                Value::from(i)
            } else {
                Value::from(n.as_f64().unwrap_or(0.0))
            }
        }
        Json::String(s) => match key {
            Some(k) if TIME_KEYS.contains(&k) => Value::String(go_time(s)),
            _ => Value::String(s.clone()),
        },
        Json::Array(items) => Value::Array(items.iter().map(|i| convert(i, None)).collect()),
        Json::Object(m) => {
            let user_map = key.is_some_and(|k| USER_MAPS.contains(&k));
            let fields: HashMap<String, Value> = m
                .iter()
                .map(|(k, v)| {
                    let key = if user_map { None } else { Some(k.as_str()) };
                    (k.clone(), convert(v, key))
                })
                .collect();
            Value::Object(fields)
        }
    }
}

/// Template data back to JSON, for `{{json .X}}`: maps in key order (as Go's
/// encoder writes them), Go durations and times back to Docker's JSON.
pub fn to_json(v: &Value) -> Json {
    back(v, None)
}

fn back(v: &Value, key: Option<&str>) -> Json {
    match v {
        Value::NoValue | Value::Nil | Value::Function(_) => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::String(s) => {
            if let Some(k) = key {
                if DURATION_KEYS.contains(&k) {
                    if let Some(ns) = parse_go_duration_ns(s) {
                        return Json::from(ns);
                    }
                }
                if TIME_KEYS.contains(&k) {
                    return Json::String(rfc3339_of_go_time(s));
                }
            }
            Json::String(s.clone())
        }
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Json::from(u)
            } else if let Some(i) = n.as_i64() {
                Json::from(i)
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(Json::Null, Json::Number)
            }
        }
        Value::Array(items) => Json::Array(items.iter().map(|i| back(i, None)).collect()),
        Value::Object(m) | Value::Map(m) => {
            let user_map = key.is_some_and(|k| USER_MAPS.contains(&k));
            let sorted: BTreeMap<&String, &Value> = m.iter().collect();
            Json::Object(
                sorted
                    .into_iter()
                    .map(|(k, v)| {
                        let key = if user_map { None } else { Some(k.as_str()) };
                        (k.clone(), back(v, key))
                    })
                    .collect(),
            )
        }
    }
}

/// Go's `time.Duration.String()`: `0s`, `1.5µs`, `500ms`, `5s`, `1m30s`, `1h0m0s`.
pub fn go_duration_ns(ns: u64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let fraction = |whole: u64, frac: u64, digits: usize, unit: &str| {
        if frac == 0 {
            format!("{whole}{unit}")
        } else {
            let f = format!("{frac:0digits$}");
            format!("{whole}.{}{unit}", f.trim_end_matches('0'))
        }
    };
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return fraction(ns / 1_000, ns % 1_000, 3, "µs");
    }
    if ns < 1_000_000_000 {
        return fraction(ns / 1_000_000, ns % 1_000_000, 6, "ms");
    }
    let (h, rest) = (ns / 3_600_000_000_000, ns % 3_600_000_000_000);
    let (m, rest) = (rest / 60_000_000_000, rest % 60_000_000_000);
    let secs = fraction(rest / 1_000_000_000, rest % 1_000_000_000, 9, "s");
    match (h, m) {
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
    }
}

/// The nanoseconds of a Go duration string (`1h2m3.5s`, `500ms`); `None` if
/// it is not one.
pub fn parse_go_duration_ns(s: &str) -> Option<u64> {
    if s == "0" || s == "0s" {
        return Some(0);
    }
    let mut rest = s;
    let mut total: u128 = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let (num, after) = rest.split_at(num_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
        if whole.is_empty() && frac.is_empty() || whole.len() > 20 || frac.len() > 18 {
            return None;
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().ok()?
        };
        let frac_value: u128 = if frac.is_empty() {
            0
        } else {
            frac.parse().ok()?
        };
        let frac_ns = frac_value * scale / 10u128.pow(frac.len() as u32);
        total = total.checked_add(whole.checked_mul(scale)?.checked_add(frac_ns)?)?;
        rest = after;
    }
    u64::try_from(total).ok()
}

/// Go's `time.Time.String()` in UTC of an RFC 3339 UTC instant:
/// `2026-12-07T16:52:55.123Z` → `2026-12-07 16:52:55.123 +0000 UTC`.
pub fn go_time(rfc3339: &str) -> String {
    match rfc3339.strip_suffix('Z') {
        Some(body) if body.len() > 10 && body.as_bytes()[10] == b'T' => {
            format!("{} {} +0000 UTC", &body[..10], &body[11..])
        }
        _ => rfc3339.to_string(),
    }
}

/// The inverse of [`go_time`].
fn rfc3339_of_go_time(s: &str) -> String {
    match s.strip_suffix(" +0000 UTC") {
        Some(body) => format!("{}Z", body.replacen(' ', "T", 1)),
        None => s.to_string(),
    }
}
