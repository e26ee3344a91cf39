//! Where tasks may run and what they may use: `--constraint`,
//! `--placement-pref`, and the CPU and memory reservations and limits.

use super::invalid;

/// Constraint keys accepted by `--constraint` (labels take a `.KEY` suffix).
const CONSTRAINT_KEYS: &str = "node.id, node.hostname, node.role, node.platform.os, \
                               node.platform.arch, node.labels.KEY or engine.labels.KEY";

/// `--constraint KEY==VALUE` / `KEY!=VALUE` (also `--constraint-add`).
pub fn parse_constraint(value: &str, flag: &str) -> anyhow::Result<String> {
    let Some((key, val)) = value.split_once("==").or_else(|| value.split_once("!=")) else {
        return Err(invalid(
            value,
            flag,
            "constraint has no operator (use == or !=)",
        ));
    };
    let key = key.trim();
    let known = matches!(
        key,
        "node.id" | "node.hostname" | "node.role" | "node.platform.os" | "node.platform.arch"
    ) || key
        .strip_prefix("node.labels.")
        .or_else(|| key.strip_prefix("engine.labels."))
        .is_some_and(|k| !k.is_empty());
    if !known {
        return Err(invalid(
            value,
            flag,
            format!("unknown constraint key {key:?} (use {CONSTRAINT_KEYS})"),
        ));
    }
    if val.trim().is_empty() {
        return Err(invalid(
            value,
            flag,
            "constraint has no value after the operator",
        ));
    }
    Ok(value.to_string())
}

/// `--placement-pref spread=node.labels.KEY` (also `--placement-pref-add`).
pub fn parse_placement_pref(value: &str, flag: &str) -> anyhow::Result<String> {
    let Some((strategy, descriptor)) = value.split_once('=') else {
        return Err(invalid(value, flag, "expected spread=node.labels.KEY"));
    };
    if strategy != "spread" {
        return Err(invalid(
            value,
            flag,
            format!("unsupported strategy {strategy:?}: spread is the only one"),
        ));
    }
    if descriptor
        .strip_prefix("node.labels.")
        .is_none_or(str::is_empty)
    {
        return Err(invalid(
            value,
            flag,
            "spread takes a node label: spread=node.labels.KEY",
        ));
    }
    Ok(value.to_string())
}

/// `--reserve-cpu 0.5` / `--limit-cpu`: CPUs as nano CPUs (Docker's NanoCPUs).
pub fn parse_cpus(value: &str, flag: &str) -> anyhow::Result<i64> {
    let bad = || invalid(value, flag, "expected a number of CPUs such as 0.5 or 2");
    let v = value.trim();
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.chars().all(|c| c.is_ascii_digit())
        || !frac.chars().all(|c| c.is_ascii_digit())
    {
        return Err(bad());
    }
    if frac.len() > 9 && frac[9..].chars().any(|c| c != '0') {
        return Err(invalid(
            value,
            flag,
            "value is too precise (at most 9 decimals)",
        ));
    }
    let int: i64 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| bad())?
    };
    let frac: i64 = format!("{:0<9}", &frac[..frac.len().min(9)])
        .parse()
        .map_err(|_| bad())?;
    int.checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(frac))
        .ok_or_else(bad)
}

/// `--reserve-memory 64MiB` / `--limit-memory`: Docker's RAM sizes, binary
/// units (`b`, `k`, `m`, `g`, `t`, `p`, optionally followed by `i` and/or `b`).
pub fn parse_ram(value: &str, flag: &str) -> anyhow::Result<i64> {
    let bad = || invalid(value, flag, "expected a size such as 64MiB, 128M or 1G");
    let v = value.trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let num: f64 = num.parse().map_err(|_| bad())?;
    let unit = unit.trim_start().to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return Err(bad()),
    };
    let bytes = num * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes >= i64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as i64)
}
