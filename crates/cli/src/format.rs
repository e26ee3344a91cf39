//! Docker's output conventions: tab-aligned tables, human durations, port
//! columns, Go-style RFC 3339 timestamps and natural name ordering.

use std::cmp::Ordering;
use std::time::{Duration, UNIX_EPOCH};

use shoal_api::pb::PortConfig;

#[cfg(test)]
mod tests;

/// A table printed like Docker's `tabwriter.NewWriter(out, 10, 1, 3, ' ', 0)`:
/// every column but the last is padded to its widest cell plus 3 spaces, and
/// to at least 10 characters; the last column is not padded.
#[derive(Debug, Default)]
pub struct Table {
    /// Header first, then one entry per row; all rows have the header's arity.
    rows: Vec<Vec<String>>,
}

// === impl Table ===

impl Table {
    /// A table with these upper-case column titles.
    pub fn new(header: &[&str]) -> Table {
        Table {
            rows: vec![header.iter().map(|h| h.to_string()).collect()],
        }
    }

    /// Appends a row; missing cells are blank.
    pub fn row(&mut self, mut cells: Vec<String>) {
        cells.resize(self.rows[0].len(), String::new());
        self.rows.push(cells);
    }

    /// The rendered table, one `\n`-terminated line per row. A tab or line
    /// break inside a cell is written as a space, so it cannot split a row.
    pub fn render(&self) -> String {
        let mut text = String::new();
        for row in &self.rows {
            for (c, cell) in row.iter().enumerate() {
                if c > 0 {
                    text.push('\t');
                }
                text.extend(cell.chars().map(|ch| match ch {
                    '\t' | '\n' | '\r' => ' ',
                    ch => ch,
                }));
            }
            text.push('\n');
        }
        align_columns(&text)
    }
}

/// Aligns tab-separated `text` into Docker's table columns (Go's
/// `tabwriter.NewWriter(out, 10, 1, 3, ' ', 0)`): a column is as wide as its
/// widest cell plus 3, and at least 10; the text after a line's last tab is
/// not padded.
pub fn align_columns(text: &str) -> String {
    use std::io::Write;
    // Go's width is max(cell + padding, minwidth); the crate's is
    // max(cell, minwidth) + padding, so its minwidth is 10 - 3.
    let mut tw = tabwriter::TabWriter::new(Vec::with_capacity(text.len() * 2))
        .minwidth(7)
        .padding(3);
    // Writing into memory cannot fail.
    tw.write_all(text.as_bytes()).expect("write into memory");
    let bytes = tw.into_inner().expect("flush into memory");
    String::from_utf8(bytes).expect("tabwriter passes UTF-8 through")
}

/// Docker's `units.HumanDuration`: "Less than a second", "About a minute", "3 hours", ...
pub fn human_duration(d: Duration) -> String {
    let seconds = d.as_secs();
    if seconds < 1 {
        return "Less than a second".into();
    }
    if seconds == 1 {
        return "1 second".into();
    }
    if seconds < 60 {
        return format!("{seconds} seconds");
    }
    let minutes = seconds / 60;
    if minutes == 1 {
        return "About a minute".into();
    }
    if minutes < 60 {
        return format!("{minutes} minutes");
    }
    let hours = (d.as_secs_f64() / 3600.0).round() as u64;
    if hours == 1 {
        return "About an hour".into();
    }
    if hours < 48 {
        return format!("{hours} hours");
    }
    if hours < 24 * 7 * 2 {
        return format!("{} days", hours / 24);
    }
    if hours < 24 * 30 * 2 {
        return format!("{} weeks", hours / 24 / 7);
    }
    if hours < 24 * 365 * 2 {
        return format!("{} months", hours / 24 / 30);
    }
    format!("{} years", d.as_secs() / 3600 / 24 / 365)
}

/// Go's `time.Duration.String()` of a millisecond count: `0s`, `500ms`,
/// `5s`, `1.5s`, `1m30s`, `1h0m0s`.
pub fn go_duration_ms(ms: u64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1_000 {
        return format!("{ms}ms");
    }
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let secs = match rest % 1_000 {
        0 => format!("{}s", rest / 1_000),
        frac => {
            let f = format!("{frac:03}");
            format!("{}.{}s", rest / 1_000, f.trim_end_matches('0'))
        }
    };
    match (h, m) {
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
    }
}

/// How long ago a Unix-ms instant was, clamped at zero for clock skew.
pub fn age(now_ms: i64, then_ms: i64) -> Duration {
    Duration::from_millis(now_ms.saturating_sub(then_ms).max(0) as u64)
}

/// One published port as Docker writes it: `*:8080->80/tcp`.
pub fn port(p: &PortConfig) -> String {
    format!("*:{}->{}/{}", p.published_port, p.target_port, protocol(p))
}

fn protocol(p: &PortConfig) -> &str {
    if p.protocol.is_empty() {
        "tcp"
    } else {
        &p.protocol
    }
}

/// The PORTS column of `service ls`: ingress ports sorted by protocol and
/// published port, consecutive ones merged into ranges, joined with ", ".
pub fn service_ports(ports: &[PortConfig]) -> String {
    let mut ports: Vec<&PortConfig> = ports
        .iter()
        .filter(|p| p.publish_mode.is_empty() || p.publish_mode == "ingress")
        .collect();
    ports.sort_by(|a, b| {
        protocol(a)
            .cmp(protocol(b))
            .then(a.published_port.cmp(&b.published_port))
    });
    #[derive(Default)]
    struct Range<'a> {
        p_start: u32,
        p_end: u32,
        t_start: u32,
        t_end: u32,
        proto: &'a str,
    }
    let show = |r: &Range| {
        let span = |a: u32, b: u32| {
            if b > a {
                format!("{a}-{b}")
            } else {
                a.to_string()
            }
        };
        format!(
            "*:{}->{}/{}",
            span(r.p_start, r.p_end),
            span(r.t_start, r.t_end),
            r.proto
        )
    };
    // Go's unsigned subtraction: "not exactly 0 or 1 ahead" starts a new range.
    let gap = |next: u32, end: u32| !matches!(i64::from(next) - i64::from(end), 0 | 1);
    let mut out = Vec::new();
    let mut r = Range::default();
    for p in ports {
        let is_range = r.t_end != r.t_start;
        let overlaps = p.target_port <= r.t_end;
        if protocol(p) != r.proto
            || gap(p.published_port, r.p_end)
            || gap(p.target_port, r.t_end)
            || (is_range && overlaps)
        {
            if r.p_start > 0 {
                out.push(show(&r));
            }
            r = Range {
                p_start: p.published_port,
                p_end: p.published_port,
                t_start: p.target_port,
                t_end: p.target_port,
                proto: protocol(p),
            };
            continue;
        }
        r.p_end = p.published_port;
        r.t_end = p.target_port;
    }
    if r.p_start > 0 {
        out.push(show(&r));
    }
    out.join(", ")
}

/// The last instant RFC 3339 can write (9999-12-31T23:59:59.999Z).
const RFC3339_LAST_MS: i64 = 253_402_300_799_999;

/// A Unix-ms instant in Go's RFC3339Nano form (UTC, trailing zeros of the
/// fraction dropped); 0 is Go's zero time, and an instant past the year 9999
/// (a corrupt timestamp) is shown as the last one RFC 3339 can write.
pub fn rfc3339(ms: i64) -> String {
    if ms <= 0 {
        return "0001-01-01T00:00:00Z".into();
    }
    let t = UNIX_EPOCH + Duration::from_millis(ms.min(RFC3339_LAST_MS) as u64);
    trim_fraction(&humantime::format_rfc3339_millis(t).to_string())
}

/// Drops trailing zeros (and a bare dot) from the fraction of `...ss.fffZ`.
fn trim_fraction(s: &str) -> String {
    match (s.rfind('.'), s.strip_suffix('Z')) {
        (Some(dot), Some(body)) => {
            let frac = body[dot + 1..].trim_end_matches('0');
            if frac.is_empty() {
                format!("{}Z", &body[..dot])
            } else {
                format!("{}.{frac}Z", &body[..dot])
            }
        }
        _ => s.to_string(),
    }
}

/// Natural order ("web.2" before "web.10"), as Docker's `sortorder.NaturalLess`.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a, b);
    loop {
        match (a.chars().next(), b.chars().next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let da = a.len() - a.trim_start_matches(|c: char| c.is_ascii_digit()).len();
                let db = b.len() - b.trim_start_matches(|c: char| c.is_ascii_digit()).len();
                let (na, nb) = (&a[..da], &b[..db]);
                let (za, zb) = (na.trim_start_matches('0'), nb.trim_start_matches('0'));
                let ord = za
                    .len()
                    .cmp(&zb.len())
                    .then(za.cmp(zb))
                    .then(na.len().cmp(&nb.len()));
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[da..];
                b = &b[db..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(&y);
                }
                a = &a[x.len_utf8()..];
                b = &b[y.len_utf8()..];
            }
        }
    }
}

/// Upper-cases the first letter: "running" → "Running".
pub fn title(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Cuts `s` to `max` characters, the last one an ellipsis.
pub fn ellipsis(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}
