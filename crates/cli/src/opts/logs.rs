//! `service logs` values: `--tail` and `--since`.

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

/// `service logs --since`: a duration back from `now_ms` (`10s`, `5m`), an
/// RFC 3339 timestamp or Unix seconds; returns Unix ms.
pub fn parse_since(value: &str, now_ms: i64) -> anyhow::Result<i64> {
    if let Ok(d) = humantime::parse_duration(value) {
        // Further back than i64 reaches is the beginning of time.
        return Ok(i64::try_from(d.as_millis())
            .ok()
            .and_then(|back| now_ms.checked_sub(back))
            .unwrap_or(i64::MIN)
            .max(0));
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(value) {
        return Ok(crate::format::unix_ms(t));
    }
    if let Ok(secs) = value.parse::<f64>() {
        if secs >= 0.0 {
            return Ok((secs * 1000.0) as i64);
        }
    }
    Err(invalid(
        value,
        "--since",
        "expected a duration (10s, 5m), an RFC 3339 timestamp or Unix seconds",
    ))
}
