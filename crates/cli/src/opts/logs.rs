//! `service logs` values: `--tail` and `--since`.

use std::time::UNIX_EPOCH;

use super::invalid;

/// `service logs --tail N|all`: -1 means all.
pub fn parse_tail(value: &str) -> anyhow::Result<i64> {
    if value.eq_ignore_ascii_case("all") {
        return Ok(-1);
    }
    let n: i64 = value
        .parse()
        .map_err(|_| invalid(value, "-n, --tail", "must be a number or \"all\""))?;
    Ok(if n < 0 { -1 } else { n })
}

/// `service logs --since`: a duration back from `now_ns` (`10s`, `5m`), an
/// RFC 3339 timestamp or Unix seconds (`1700000000.123456789`); returns
/// Unix nanoseconds.
pub fn parse_since(value: &str, now_ns: i64) -> anyhow::Result<i64> {
    if let Ok(d) = humantime::parse_duration(value) {
        // Further back than i64 reaches is the beginning of time.
        return Ok(i64::try_from(d.as_nanos())
            .ok()
            .and_then(|back| now_ns.checked_sub(back))
            .unwrap_or(i64::MIN)
            .max(0));
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(value) {
        let since_epoch = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        return Ok(i64::try_from(since_epoch.as_nanos()).unwrap_or(i64::MAX));
    }
    if let Some(ns) = unix_seconds_ns(value) {
        return Ok(ns);
    }
    Err(invalid(
        value,
        "--since",
        "expected a duration (10s, 5m), an RFC 3339 timestamp or Unix seconds",
    ))
}

/// `SECONDS[.FRACTION]` (at most nine fraction digits) as Unix nanoseconds,
/// exactly; `None` when malformed or beyond what i64 nanoseconds reach.
fn unix_seconds_ns(value: &str) -> Option<i64> {
    let (secs, frac) = value.split_once('.').unwrap_or((value, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if secs.is_empty() || !all_digits(secs) || !all_digits(frac) || frac.len() > 9 {
        return None;
    }
    let secs: i64 = secs.parse().ok()?;
    let nanos: i64 = format!("{frac:0<9}").parse().ok()?;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}
